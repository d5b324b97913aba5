//! Workspace paths that the host would later run, and that a sandboxed command
//! therefore may not write. This list is the single source of truth: the mount
//! view of `runproof run` and `runproof apply` both read it.
//!
//! # The rule for what is on the list
//!
//! A path is protected when its contents make the *host* run code (or choose
//! which code runs) through an action that is not "run this project": making a
//! git commit or checkout, opening a shell, changing directory, opening the
//! folder in an editor, starting a coding agent there, or re-opening it in a
//! dev container. A command that could write those would outlive its sandbox.
//!
//! Deliberately **not** on the list, with the reason:
//! - build and package files (`Makefile`, `package.json`, `build.rs`, `.npmrc`,
//!   `setup.py`, `Cargo.toml`): they run when the user runs the project's own
//!   tooling, which runs project code by design; the diff shows them.
//! - `.gitattributes`, `.git/info/attributes`, `.gitmodules`: attributes only
//!   select filter/diff drivers that must be *defined* in git config (which is
//!   protected), and git ignores `update = !cmd` in `.gitmodules`.
//! - `.env`: read as data by most tools, and edited by agents all the time;
//!   a shell plugin that sources it is the user's own choice.
//! - `.github/workflows` and other CI config: it runs on the forge's machines
//!   once pushed, not on this host; the diff shows it for review.
//! - prompt files (`CLAUDE.md`, `AGENTS.md`, `.cursorrules`): they steer an agent
//!   but run nothing; `runproof scan` reports prompt injection in them.
//!
//! # How paths match
//!
//! Paths are relative to the workspace root and are compared component by
//! component (never as strings, so `.gitx/hooks` is not `.git/hooks`). A
//! protected path matches **at any depth**: any directory of the workspace can
//! be a repository of its own (`vendor/lib/.git/hooks`), a folder an editor or
//! agent is opened in (`pkg/.vscode/tasks.json`), or a directory a shell `cd`s
//! into (`sub/.envrc`). Everything below a protected path is protected too.
//!
//! Names are folded before comparing, because the workspace may live on a
//! case-insensitive or normalising filesystem (ext4 casefold, vfat, NTFS,
//! HFS+/APFS over a network mount) where an attacker writes `.GIT/Hooks` or
//! `.vscode.` and the host reads `.git/hooks` and `.vscode`: Unicode
//! lower-casing (so the Kelvin sign `K` and long s `ſ` fold too), removal of the
//! code points HFS+ ignores (zero-width joiners, direction marks, BOM), removal
//! of trailing dots and spaces (Windows), and the NTFS short name `GIT~1`.

use std::borrow::Cow;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

/// What kind of entry a protected path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProtectedKind {
    /// A directory: it and everything below it.
    Dir,
    /// A file: it, and anything below it should it be turned into a directory.
    File,
    /// A `.git` entry that is *not* a directory. A `.git` file (`gitdir: X`) or
    /// symlink points git at a repository directory the writer chose, with its
    /// own config and hooks. A `.git` directory itself is fine (its config and
    /// hooks are protected separately).
    GitLink,
}

/// One protected path: where, what kind, and why it is protected.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct ProtectedPath {
    /// Relative path, `/`-separated, lower case. It matches at any depth. A
    /// component starting with `*` matches any name ending with the rest.
    pub path: &'static str,
    /// Directory (everything below it) or single file.
    pub kind: ProtectedKind,
    /// What the host would run from it.
    pub why: &'static str,
}

const fn p(path: &'static str, kind: ProtectedKind, why: &'static str) -> ProtectedPath {
    ProtectedPath { path, kind, why }
}

use ProtectedKind::{Dir, File, GitLink};

const SHELL: &str =
    "shell start-up file: runs in every shell started with this directory as home or ZDOTDIR";

static PROTECTED: &[ProtectedPath] = &[
    // --- git: what runs on commit, checkout, fetch, merge ---
    p(
        ".git/hooks",
        Dir,
        "git hooks run on commit, checkout, merge and push",
    ),
    p(
        ".git/config",
        File,
        "git config can set core.hooksPath, core.fsmonitor, core.sshCommand, filter and diff drivers: all run commands",
    ),
    p(
        ".git/config.worktree",
        File,
        "per-worktree git config, read like .git/config when extensions.worktreeConfig is on",
    ),
    p(
        ".git/modules",
        Dir,
        "submodule repositories: each holds its own config and hooks",
    ),
    p(
        ".git/worktrees",
        Dir,
        "linked worktree admin dirs: commondir/gitdir/config.worktree redirect git",
    ),
    p(
        ".git",
        GitLink,
        "a .git file or symlink points git at a repository (config, hooks) of the writer's choosing",
    ),
    p(
        ".husky",
        Dir,
        "husky's hook directory (core.hooksPath points here): runs on commit",
    ),
    p(
        ".githooks",
        Dir,
        "conventional core.hooksPath directory: runs on commit",
    ),
    p(
        ".pre-commit-config.yaml",
        File,
        "pre-commit framework: commands run by the installed git hook on commit",
    ),
    p(
        "lefthook.yml",
        File,
        "lefthook: commands run by the installed git hook on commit",
    ),
    p(
        ".lefthook.yml",
        File,
        "lefthook: commands run by the installed git hook on commit",
    ),
    // --- shells ---
    p(".bashrc", File, SHELL),
    p(".bash_profile", File, SHELL),
    p(".bash_login", File, SHELL),
    p(".bash_logout", File, SHELL),
    p(".profile", File, SHELL),
    p(".zshrc", File, SHELL),
    p(".zshenv", File, SHELL),
    p(".zprofile", File, SHELL),
    p(".zlogin", File, SHELL),
    p(".zlogout", File, SHELL),
    p(".kshrc", File, SHELL),
    p(".mkshrc", File, SHELL),
    p(".cshrc", File, SHELL),
    p(".tcshrc", File, SHELL),
    p(".login", File, SHELL),
    p(".logout", File, SHELL),
    p(
        ".inputrc",
        File,
        "readline start-up file: key macros can type commands into every shell",
    ),
    p(".config/fish", Dir, SHELL),
    p(
        ".envrc",
        File,
        "direnv runs it as shell code on every cd into the directory",
    ),
    // --- coding agents ---
    p(
        ".claude",
        Dir,
        "Claude Code settings (hooks run shell commands), commands and agents",
    ),
    p(
        ".mcp.json",
        File,
        "MCP servers an agent starts as local processes",
    ),
    p(".codex", Dir, "Codex config: MCP servers and commands"),
    p(".gemini", Dir, "Gemini CLI settings: MCP servers and hooks"),
    p(".cursor", Dir, "Cursor rules and MCP servers"),
    p(".windsurf", Dir, "Windsurf rules and workflows"),
    p(
        ".continue",
        Dir,
        "Continue config: MCP servers and commands",
    ),
    p(".roo", Dir, "Roo Code rules and MCP servers"),
    p(".kiro", Dir, "Kiro hooks and steering"),
    p(".amazonq", Dir, "Amazon Q rules and MCP servers"),
    p(
        ".aider.conf.yml",
        File,
        "aider config: lint-cmd and test-cmd run automatically",
    ),
    // --- editors and dev containers ---
    p(
        ".vscode",
        Dir,
        "VS Code tasks (runOn: folderOpen), launch configs and settings that name executables",
    ),
    p(
        "*.code-workspace",
        File,
        "VS Code workspace file: tasks and settings like .vscode",
    ),
    p(
        ".idea",
        Dir,
        "JetBrains run configurations, startup tasks and tool paths",
    ),
    p(".zed", Dir, "Zed tasks and settings"),
    p(
        ".devcontainer",
        Dir,
        "dev container config: initializeCommand runs on the host",
    ),
    p(
        ".devcontainer.json",
        File,
        "dev container config: initializeCommand runs on the host",
    ),
];

/// Every protected path, with its kind and the reason.
pub fn protected_paths() -> &'static [ProtectedPath] {
    PROTECTED
}

/// True when writing (creating, changing, deleting, renaming) `rel`, a path
/// relative to the workspace root, must be refused whatever its type.
///
/// Conservative on odd input: a `..` component makes the answer `true`,
/// because where it lands cannot be known from the path alone. `.` and a
/// leading `/` are ignored. This does not cover [`ProtectedKind::GitLink`],
/// which depends on the entry's type: use [`protection`] when the type is known.
pub fn is_protected(rel: &Path) -> bool {
    match folded_components(rel) {
        None => true,
        Some(comps) => find(&comps, false).is_some(),
    }
}

/// The protected path that forbids writing `rel` as a directory (`is_dir`) or
/// as anything else, if any. For a path with a `..` component it returns the
/// first entry of the list (see [`is_protected`]).
pub fn protection(rel: &Path, is_dir: bool) -> Option<&'static ProtectedPath> {
    match folded_components(rel) {
        None => PROTECTED.first(),
        Some(comps) => find(&comps, !is_dir),
    }
}

/// True when one path component names a git directory (`.git` under the same
/// folding as everything else). Git itself refuses patches touching such paths.
pub fn is_git_name(name: &OsStr) -> bool {
    fold(name.as_bytes()) == ".git"
}

fn find(comps: &[String], non_dir: bool) -> Option<&'static ProtectedPath> {
    for entry in PROTECTED {
        let pat: Vec<&str> = entry.path.split('/').collect();
        for start in 0..comps.len() {
            let rest = &comps[start..];
            let hit = match entry.kind {
                // Matches only the entry itself, when it is not a directory.
                GitLink => non_dir && rest.len() == 1 && comp_matches(pat[0], &rest[0]),
                Dir | File => {
                    rest.len() >= pat.len() && pat.iter().zip(rest).all(|(p, c)| comp_matches(p, c))
                }
            };
            if hit {
                return Some(entry);
            }
        }
    }
    None
}

fn comp_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_prefix('*') {
        Some(suffix) => name.ends_with(suffix),
        None => pattern == name,
    }
}

/// Folded components, or `None` when a `..` makes the path unknowable.
fn folded_components(rel: &Path) -> Option<Vec<String>> {
    let mut out = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(name) => out.push(fold(name.as_bytes())),
            Component::ParentDir => return None,
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
        }
    }
    Some(out)
}

/// Code points that HFS+ drops when comparing names (git's `is_hfs_dotgit`
/// list), plus the BOM.
fn hfs_ignorable(c: char) -> bool {
    matches!(c as u32, 0x200c..=0x200f | 0x202a..=0x202e | 0x206a..=0x206f | 0xfeff)
}

/// Fold a name the way a case-insensitive, normalising filesystem might.
fn fold(name: &[u8]) -> String {
    let text: Cow<'_, str> = String::from_utf8_lossy(name);
    let mut s = String::with_capacity(text.len());
    for c in text.chars().filter(|c| !hfs_ignorable(*c)) {
        // Upper then lower: folds both `K` (Kelvin) and `ſ` (long s) to ASCII.
        for u in c.to_uppercase() {
            s.extend(u.to_lowercase());
        }
    }
    let trimmed = s.trim_end_matches(['.', ' ']);
    if trimmed == "git~1" {
        return ".git".to_string();
    }
    trimmed.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;
    use std::path::PathBuf;

    fn prot(s: &str) -> bool {
        is_protected(Path::new(s))
    }

    #[test]
    fn root_and_nested_hooks_and_config() {
        assert!(prot(".git/hooks"));
        assert!(prot(".git/hooks/pre-commit"));
        assert!(prot(".git/config"));
        assert!(prot("vendor/lib/.git/hooks/post-checkout"));
        assert!(prot(".git/modules/sub/hooks/pre-commit"));
        assert!(!prot(".git/HEAD"));
        assert!(!prot(".git/objects/ab/cdef"));
        assert!(!prot(".git/refs/heads/hooks"));
        assert!(!prot(".git/index"));
        assert!(!prot(".gitx/hooks/pre-commit"));
        assert!(!prot("git/hooks/pre-commit"));
        assert!(!prot("src/main.rs"));
        assert!(!prot(".git"));
    }

    #[test]
    fn shells_agents_editors() {
        for p in [
            ".bashrc",
            "home/u/.zshenv",
            ".envrc",
            ".claude/settings.json",
            ".mcp.json",
            ".vscode/tasks.json",
            "pkg/.vscode/settings.json",
            ".idea/workspace.xml",
            "proj.code-workspace",
            ".code-workspace",
            ".devcontainer/devcontainer.json",
            ".config/fish/config.fish",
            ".husky/pre-commit",
        ] {
            assert!(prot(p), "{p} should be protected");
        }
        for p in [
            ".bashrc.bak/x",
            "bashrc",
            "my.vscode",
            "code-workspace.md",
            "README.md",
        ] {
            assert!(!prot(p), "{p} should not be protected");
        }
    }

    #[test]
    fn case_and_normalisation_folding() {
        assert!(prot(".GIT/Hooks/pre-commit"));
        assert!(prot(".Git/CONFIG"));
        assert!(prot(".VSCode/tasks.json"));
        assert!(prot(".vscode./tasks.json"));
        assert!(prot(".vscode /tasks.json"));
        assert!(prot("GIT~1/hooks/x"));
        assert!(prot(".g\u{200c}it/hooks/x"), "HFS+ ignorable code point");
        assert!(prot(".git/hoo\u{212a}s/x"), "Kelvin sign folds to k");
        assert!(
            prot(".bash_profile".replace('s', "\u{17f}").as_str()),
            "long s"
        );
        assert!(prot("\u{feff}.bashrc"));
    }

    #[test]
    fn parent_components_are_conservative_and_dot_is_ignored() {
        assert!(prot("a/../b"));
        assert!(prot("./.git/config"));
        assert!(prot("/abs/.git/config"));
    }

    #[test]
    fn non_utf8_names_never_match_by_accident_but_still_work() {
        let bad = PathBuf::from(OsStr::from_bytes(b"\xff\xfe/.git/hooks/x"));
        assert!(is_protected(&bad));
        let bad = PathBuf::from(OsStr::from_bytes(b".git\xff/hooks/x"));
        assert!(!is_protected(&bad));
    }

    #[test]
    fn git_link_only_for_non_directories() {
        assert!(protection(Path::new(".git"), false).is_some());
        assert!(protection(Path::new("sub/.GIT"), false).is_some());
        assert!(protection(Path::new(".git"), true).is_none());
        assert!(protection(Path::new(".git/HEAD"), false).is_none());
        assert_eq!(
            protection(Path::new(".git/hooks"), true).map(|p| p.path),
            Some(".git/hooks")
        );
    }

    #[test]
    fn list_is_well_formed() {
        for e in protected_paths() {
            assert_eq!(
                e.path,
                e.path.to_lowercase(),
                "{} must be lower case",
                e.path
            );
            assert!(!e.path.ends_with('/') && !e.path.starts_with('/'));
            assert!(!e.why.is_empty());
        }
        assert!(is_git_name(OsStr::new(".GIT")));
        assert!(!is_git_name(OsStr::new(".github")));
    }
}
