//! Which check a file gets, decided from its path alone (before reading it,
//! so the read limit can depend on it).

/// What a file is, for the scanner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    PackageJson,
    ComposerJson,
    Pnpmfile,
    Npmrc,
    Yarnrc,
    YarnrcYml,
    PipConf,
    Requirements,
    CargoConfig,
    CargoToml,
    PyProject,
    SetupPy,
    SetupCfg,
    PytestIni,
    Pth,
    SiteCustomize,
    Conftest,
    BuildRs,
    GitModules,
    GitConfig,
    GitHook,
    VscodeTasks,
    VscodeSettings,
    Devcontainer,
    Envrc,
    PreCommit,
    BuildFile,
    Dockerfile,
    AgentSettings,
    CodexConfig,
    McpJson,
    Instructions,
    Doc,
    Other,
}

impl FileKind {
    /// Files that run on their own or configure something that does: read
    /// with the larger limit, and flagged when even that truncates them.
    pub fn is_config(self) -> bool {
        !matches!(self, FileKind::Doc | FileKind::Other | FileKind::Dockerfile)
    }
}

const GIT_HOOK_NAMES: &[&str] = &[
    "applypatch-msg",
    "pre-applypatch",
    "post-applypatch",
    "pre-commit",
    "pre-merge-commit",
    "prepare-commit-msg",
    "commit-msg",
    "post-commit",
    "pre-rebase",
    "post-checkout",
    "post-merge",
    "pre-push",
    "pre-receive",
    "update",
    "proc-receive",
    "post-receive",
    "post-update",
    "reference-transaction",
    "push-to-checkout",
    "pre-auto-gc",
    "post-rewrite",
    "sendemail-validate",
    "fsmonitor-watchman",
    "p4-changelist",
    "p4-prepare-changelist",
    "p4-post-changelist",
    "p4-pre-submit",
    "post-index-change",
];

/// Exact names (case matters: `docs/api/Agent.md` is documentation).
const INSTRUCTION_NAMES: &[&str] = &[
    "CLAUDE.md",
    "CLAUDE.local.md",
    "AGENTS.md",
    "AGENT.md",
    "agents.md",
    "GEMINI.md",
    ".cursorrules",
    ".windsurfrules",
    ".clinerules",
    ".roorules",
    "copilot-instructions.md",
    "CONVENTIONS.md",
    ".augment-guidelines",
    ".rules",
];

const INSTRUCTION_DIRS: &[&str] = &[
    ".cursor/rules/",
    ".windsurf/rules/",
    ".clinerules/",
    ".roo/",
    ".kiro/steering/",
    ".claude/commands/",
    ".claude/agents/",
    ".claude/skills/",
    ".github/instructions/",
    ".github/prompts/",
    ".github/chatmodes/",
    ".junie/",
    ".continue/rules/",
    ".amazonq/rules/",
];

const BUILD_FILES: &[&str] = &[
    "makefile",
    "gnumakefile",
    "justfile",
    ".justfile",
    "taskfile.yml",
    "taskfile.yaml",
    "rakefile",
    "build.gradle",
    "build.gradle.kts",
    "settings.gradle",
    "settings.gradle.kts",
    "cmakelists.txt",
    "meson.build",
    "gulpfile.js",
    "gruntfile.js",
    "jakefile",
    "sconstruct",
    "workspace",
    "workspace.bazel",
    "build.sbt",
    "build.zig",
    "binding.gyp",
];

/// `rel` is the `/`-separated path relative to the root; `name` its last part.
pub fn classify(rel: &str, name: &str) -> FileKind {
    let lower = name.to_ascii_lowercase();
    let rel_lower = rel.to_ascii_lowercase();
    let in_dir = |d: &str| rel_lower.starts_with(d) || rel_lower.contains(&format!("/{d}"));
    let parent_is = |d: &str| {
        let p = rel_lower.rsplit_once('/').map_or("", |(p, _)| p);
        p == d || p.ends_with(&format!("/{d}"))
    };

    // Git internals: only config and hooks are ever handed to us from .git.
    if parent_is(".git") && lower == "config" {
        return FileKind::GitConfig;
    }
    if parent_is(".git/hooks") {
        return if lower.ends_with(".sample") {
            FileKind::Other
        } else {
            FileKind::GitHook
        };
    }
    if (parent_is(".husky")
        || parent_is(".githooks")
        || parent_is(".git-hooks")
        || parent_is("githooks")
        || parent_is("git-hooks")
        || parent_is(".hooks")
        || parent_is("hooks"))
        && GIT_HOOK_NAMES.contains(&lower.as_str())
    {
        return FileKind::GitHook;
    }

    match lower.as_str() {
        "package.json" => return FileKind::PackageJson,
        "composer.json" => return FileKind::ComposerJson,
        ".pnpmfile.cjs" | ".pnpmfile.mjs" | "pnpmfile.js" => return FileKind::Pnpmfile,
        ".npmrc" => return FileKind::Npmrc,
        ".yarnrc" => return FileKind::Yarnrc,
        ".yarnrc.yml" | ".yarnrc.yaml" => return FileKind::YarnrcYml,
        "pip.conf" | "pip.ini" => return FileKind::PipConf,
        "cargo.toml" => return FileKind::CargoToml,
        "pyproject.toml" => return FileKind::PyProject,
        "setup.py" => return FileKind::SetupPy,
        "setup.cfg" => return FileKind::SetupCfg,
        "pytest.ini" | "tox.ini" => return FileKind::PytestIni,
        "sitecustomize.py" | "usercustomize.py" => return FileKind::SiteCustomize,
        "conftest.py" => return FileKind::Conftest,
        "build.rs" => return FileKind::BuildRs,
        ".gitmodules" => return FileKind::GitModules,
        ".envrc" => return FileKind::Envrc,
        ".pre-commit-config.yaml" | ".pre-commit-config.yml" => return FileKind::PreCommit,
        ".devcontainer.json" => return FileKind::Devcontainer,
        ".mcp.json" | "mcp.json" | "mcp_config.json" => return FileKind::McpJson,
        "dockerfile" | "containerfile" => return FileKind::Dockerfile,
        _ => {}
    }
    if lower.ends_with(".pth") {
        return FileKind::Pth;
    }
    if lower.starts_with("requirements") && lower.ends_with(".txt") {
        return FileKind::Requirements;
    }
    if (lower == "config" || lower == "config.toml") && parent_is(".cargo") {
        return FileKind::CargoConfig;
    }
    if parent_is(".vscode") {
        match lower.as_str() {
            "tasks.json" => return FileKind::VscodeTasks,
            "settings.json" => return FileKind::VscodeSettings,
            _ => {}
        }
    }
    if lower == "devcontainer.json"
        && (parent_is(".devcontainer") || rel_lower.contains(".devcontainer/"))
    {
        return FileKind::Devcontainer;
    }
    if (parent_is(".claude") && (lower == "settings.json" || lower == "settings.local.json"))
        || (parent_is(".gemini") && lower == "settings.json")
        || (parent_is(".cursor") && lower == "hooks.json")
        || (parent_is(".qwen") && lower == "settings.json")
    {
        return FileKind::AgentSettings;
    }
    if parent_is(".codex") && lower == "config.toml" {
        return FileKind::CodexConfig;
    }
    if INSTRUCTION_NAMES.contains(&name)
        || (INSTRUCTION_DIRS.iter().any(|d| in_dir(d))
            && (lower.ends_with(".md")
                || lower.ends_with(".mdc")
                || lower.ends_with(".txt")
                || !lower.contains('.')))
    {
        return FileKind::Instructions;
    }
    if BUILD_FILES.contains(&lower.as_str()) || lower.ends_with(".mk") || lower.ends_with(".cmake")
    {
        return FileKind::BuildFile;
    }
    if lower.starts_with("dockerfile.") || lower.ends_with(".dockerfile") {
        return FileKind::Dockerfile;
    }
    let doc_ext = [
        ".md",
        ".markdown",
        ".rst",
        ".txt",
        ".adoc",
        ".asciidoc",
        ".org",
        ".mdx",
    ];
    if doc_ext.iter().any(|e| lower.ends_with(e))
        || lower.starts_with("readme")
        || matches!(
            lower.as_str(),
            "install" | "contributing" | "building" | "hacking" | "setup"
        )
    {
        return FileKind::Doc;
    }
    FileKind::Other
}

/// Extensions never worth opening: their content is not text a tool or
/// agent would read or run as such.
pub fn is_binary_name(name: &str) -> bool {
    const EXTS: &[&str] = &[
        "png", "jpg", "jpeg", "gif", "bmp", "ico", "icns", "webp", "avif", "tif", "tiff", "psd",
        "woff", "woff2", "ttf", "otf", "eot", "zip", "gz", "tgz", "bz2", "xz", "zst", "7z", "rar",
        "jar", "war", "class", "so", "dylib", "dll", "exe", "o", "a", "lib", "obj", "pyc", "pyo",
        "whl", "node", "wasm", "pdf", "mp3", "mp4", "mov", "avi", "webm", "ogg", "wav", "flac",
        "sqlite", "sqlite3", "db", "pack", "idx", "rlib", "rmeta", "crate", "deb", "rpm", "dmg",
        "iso", "bin",
    ];
    match name.rsplit_once('.') {
        Some((_, ext)) => {
            let ext = ext.to_ascii_lowercase();
            EXTS.contains(&ext.as_str())
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(rel: &str) -> FileKind {
        classify(rel, rel.rsplit('/').next().unwrap())
    }

    #[test]
    fn kinds_by_path() {
        assert_eq!(k("package.json"), FileKind::PackageJson);
        assert_eq!(k(".pnpmfile.cjs"), FileKind::Pnpmfile);
        assert_eq!(k("composer.json"), FileKind::ComposerJson);
        assert_eq!(k("node_modules/x/package.json"), FileKind::PackageJson);
        assert_eq!(k(".cargo/config.toml"), FileKind::CargoConfig);
        assert_eq!(k("sub/.cargo/config"), FileKind::CargoConfig);
        assert_eq!(k("config"), FileKind::Other);
        assert_eq!(k(".git/config"), FileKind::GitConfig);
        assert_eq!(k(".git/hooks/pre-commit"), FileKind::GitHook);
        assert_eq!(k(".git/hooks/pre-commit.sample"), FileKind::Other);
        assert_eq!(k(".husky/pre-commit"), FileKind::GitHook);
        assert_eq!(k(".husky/README.md"), FileKind::Doc);
        assert_eq!(k(".vscode/tasks.json"), FileKind::VscodeTasks);
        assert_eq!(k(".devcontainer/devcontainer.json"), FileKind::Devcontainer);
        assert_eq!(
            k(".devcontainer/python/devcontainer.json"),
            FileKind::Devcontainer
        );
        assert_eq!(k(".claude/settings.local.json"), FileKind::AgentSettings);
        assert_eq!(k(".mcp.json"), FileKind::McpJson);
        assert_eq!(k(".cursor/mcp.json"), FileKind::McpJson);
        assert_eq!(k("CLAUDE.md"), FileKind::Instructions);
        assert_eq!(k("pkg/AGENTS.md"), FileKind::Instructions);
        assert_eq!(k(".cursor/rules/style.mdc"), FileKind::Instructions);
        assert_eq!(k(".github/copilot-instructions.md"), FileKind::Instructions);
        assert_eq!(k("docs/guide.md"), FileKind::Doc);
        assert_eq!(k("docs/api/Agent.md"), FileKind::Doc);
        assert_eq!(k("README"), FileKind::Doc);
        assert_eq!(k("Makefile"), FileKind::BuildFile);
        assert_eq!(k("lib/site.pth"), FileKind::Pth);
        assert_eq!(k("src/main.rs"), FileKind::Other);
        assert_eq!(k("requirements-dev.txt"), FileKind::Requirements);
    }

    #[test]
    fn binary_names() {
        assert!(is_binary_name("a.PNG"));
        assert!(!is_binary_name("a.js"));
        assert!(!is_binary_name("Makefile"));
    }
}
