//! The rule table. Every finding names one of these rules; its severity is
//! the rule's, so the policy lives here and nowhere else.
//!
//! Policy: critical/high when something runs or steers an agent without an
//! explicit step AND shows a sign of harm (fetches and runs remote code,
//! decodes and evaluates, opens a reverse shell, reads credentials, writes
//! agent configuration, disables approvals, tells the agent to hide or skip a
//! step); medium when it runs on its own with no such sign; low/info otherwise.

use crate::model::Severity;
use Severity::*;

/// One detection rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub id: &'static str,
    pub severity: Severity,
    /// Short title.
    pub name: &'static str,
    /// What the rule looks for.
    pub looks_for: &'static str,
    /// Why it matters.
    pub why: &'static str,
}

macro_rules! rules {
    ($( $id:literal, $sev:ident, $name:literal, $looks:literal, $why:literal; )*) => {
        /// Every rule, in the order `--rules` lists them.
        pub static RULES: &[Rule] = &[ $( Rule { id: $id, severity: $sev, name: $name, looks_for: $looks, why: $why }, )* ];
    };
}

rules! {
    // ---- package managers -------------------------------------------------
    "npm-install-script", Medium, "npm lifecycle script runs on install",
        "package.json scripts preinstall, install, postinstall, prepare, preprepare, postprepare or prepublish, and pnpm's .pnpmfile.cjs.",
        "npm, yarn and pnpm run these on `install` with no further step; an agent installing dependencies runs them.";
    "npm-install-payload", Critical, "npm install script carries a payload",
        "An install-time lifecycle script (or the file it runs) that fetches and runs remote code, decodes and evaluates, opens a shell to the network, reads credentials or writes agent configuration.",
        "This is the classic npm supply-chain attack: it runs the moment anyone, or any agent, installs.";
    "npm-script-payload", High, "npm script carries a payload",
        "A package.json script such as test, start or build (or the file it runs) with a payload shape.",
        "Agents run `npm test` and `npm start` to check their work; a payload there runs with the agent's rights.";
    "composer-install-script", Medium, "Composer event script runs on install",
        "composer.json scripts for events Composer fires by itself: pre/post-install-cmd, pre/post-update-cmd, pre/post-autoload-dump, post-root-package-install, post-create-project-cmd, package and dependency-solving events.",
        "`composer install` runs them with no further step (PHP callbacks and shell commands alike); an agent installing dependencies runs them.";
    "composer-install-payload", Critical, "Composer event script carries a payload",
        "A Composer event script (or the file it runs) that fetches and runs remote code, decodes and evaluates, opens a shell to the network, reads credentials or writes agent configuration.",
        "It runs the moment anyone, or any agent, runs `composer install` or `composer update`.";
    "composer-script-payload", High, "Composer script carries a payload",
        "A composer.json custom script such as test or build (or the file it runs) with a payload shape.",
        "Agents run `composer test` to check their work; a payload there runs with the agent's rights.";
    "registry-override", Low, "package registry redirected",
        ".npmrc, .yarnrc(.yml), pip.conf or .cargo/config.toml pointing installs at a registry or index other than the default.",
        "Dependencies then come from wherever the project says; a lookalike registry serves lookalike packages.";
    "registry-token-forward", Medium, "registry credential forwarded",
        ".npmrc or .yarnrc.yml attaching an auth token from the environment to a non-default registry host.",
        "The developer's token is sent to a host chosen by the project on the next install.";
    "build-tool-wrapper", Medium, "build tool runs a project-chosen program",
        ".cargo/config.toml rustc-wrapper/runner/linker into the repository, .npmrc script-shell/node-options --require/onload-script, .yarnrc.yml yarnPath outside .yarn/releases.",
        "Every build, test or install then runs a program the project chose, before any of the user's code.";
    "build-tool-wrapper-payload", Critical, "build tool wrapper carries a payload",
        "A wrapper, runner or preloaded script configured by the project that shows a payload shape.",
        "It runs on every build without any visible step.";
    "python-setup-code", Medium, "setup.py does more than call setup()",
        "setup.py overriding install commands (cmdclass) or spawning processes, opening sockets or fetching URLs.",
        "pip runs setup.py on install and on `pip install -e .`; extra code there runs with the installer's rights.";
    "python-setup-payload", Critical, "setup.py carries a payload",
        "setup.py with a payload shape (fetch-and-run, decode-and-exec, reverse shell, credential access).",
        "The most common PyPI malware shape: it runs on install.";
    "python-inline-backend", Medium, "in-tree PEP 517 build backend",
        "pyproject.toml [build-system] backend-path pointing into the repository.",
        "pip imports and runs the project's own backend on install, before anything is built.";
    "python-inline-backend-payload", Critical, "in-tree build backend carries a payload",
        "The module named by an in-tree build backend with a payload shape.",
        "It runs on `pip install` with no further step.";
    "python-startup-hook", Medium, "Python start-up hook",
        "*.pth files with `import` lines, sitecustomize.py and usercustomize.py.",
        "Once on sys.path (a venv, site-packages, PYTHONPATH) they run at every interpreter start.";
    "python-startup-payload", Critical, "Python start-up hook carries a payload",
        "A .pth import line, sitecustomize.py or usercustomize.py with a payload shape.",
        "Every Python process, including the agent's own tools, runs it.";
    "pytest-plugin", Medium, "pytest plugin loaded automatically",
        "pytest11 entry points in pyproject.toml/setup.cfg/setup.py, and `-p` plugins in pytest addopts.",
        "Installing the package injects code into every pytest run in that environment.";
    "pytest-conftest-payload", High, "conftest.py carries a payload",
        "conftest.py with a payload shape.",
        "pytest imports every conftest.py it collects; an agent running the tests runs it.";
    "cargo-build-script", Medium, "build.rs spawns processes or uses the network",
        "build.rs using std::process::Command, sockets or HTTP clients, or reading the home directory.",
        "cargo and rust-analyzer run build scripts on build and on opening the project in an editor.";
    "cargo-build-script-payload", Critical, "build.rs carries a payload",
        "build.rs with a payload shape.",
        "It runs on `cargo build` and when an editor opens the project.";
    // ---- git --------------------------------------------------------------
    "gitmodules-command", High, "submodule URL runs a command",
        ".gitmodules url using ext:: or fd:: transports, or starting with '-' (option injection), or update = !command.",
        "Fetching submodules then runs a command chosen by the repository.";
    "git-hook", Medium, "git hooks wired in by the project",
        "Committed hook directories wired in by scripts (core.hooksPath, husky), non-sample files in .git/hooks, and .git/config commands (fsmonitor, sshCommand, pager, filters).",
        "git runs them on commit, checkout or even `git status`; an agent using git runs them.";
    "git-hook-payload", Critical, "git hook carries a payload",
        "A hook or git-config command with a payload shape.",
        "It runs on the next git operation with no visible step.";
    // ---- editors and environments ----------------------------------------
    "vscode-folder-open-task", Medium, "editor task runs on folder open",
        ".vscode/tasks.json tasks with runOptions.runOn = folderOpen.",
        "VS Code (and forks) run it when the folder is opened once automatic tasks are allowed.";
    "vscode-task-payload", Critical, "editor task carries a payload",
        "A .vscode/tasks.json task (or the file it runs) with a payload shape.",
        "Opening or building the project in the editor runs it.";
    "vscode-auto-approve", High, "editor settings disable agent approvals",
        ".vscode/settings.json auto-approving chat/agent tools or terminal commands, or allowing automatic tasks.",
        "The project turns off the confirmation that stands between an agent and the user's machine.";
    "vscode-executable-path", Medium, "editor settings run a program from the repository",
        ".vscode/settings.json interpreter, terminal, linter or language-server paths pointing into the project.",
        "The editor launches that program when the folder opens.";
    "vscode-settings-payload", Critical, "editor settings carry a payload",
        "A command or path in .vscode/settings.json with a payload shape.",
        "It runs when the editor opens the project.";
    "devcontainer-lifecycle", Medium, "devcontainer lifecycle command",
        "devcontainer.json initializeCommand (runs on the host), onCreateCommand, updateContentCommand, postCreateCommand, postStartCommand, postAttachCommand.",
        "Opening the project in a dev container runs them; initializeCommand runs on the host itself.";
    "devcontainer-payload", Critical, "devcontainer command carries a payload",
        "A devcontainer lifecycle command (or the file it runs) with a payload shape.",
        "It runs when the container is created or opened.";
    "direnv-envrc", Low, "direnv .envrc",
        "A .envrc file.",
        "direnv runs it in the shell whenever a terminal enters the directory, once allowed.";
    "direnv-payload", High, ".envrc carries a payload",
        "A .envrc with a payload shape.",
        "It runs on every `cd` into the project once allowed.";
    "pre-commit-local-hook", Low, "pre-commit local hook",
        ".pre-commit-config.yaml `repo: local` hooks with an entry command.",
        "pre-commit runs the entry on every commit once installed.";
    "pre-commit-payload", High, "pre-commit hook carries a payload",
        "A pre-commit local hook entry (or the file it runs) with a payload shape.",
        "It runs when an agent commits.";
    "make-default-target", Medium, "bare `make` runs more than a build",
        "The recipe of a Makefile's default goal (first ordinary target or .DEFAULT_GOAL) and of the targets it depends on, when a command downloads or reaches another host, installs from the network, runs as root or runs a program from a temporary, home or hidden directory. Compilers, cargo/go build, pytest and file commands are ordinary.",
        "A bare `make` is the first thing an agent runs in a C-style project; what it runs beyond building runs without the user choosing it.";
    "make-default-target-payload", Critical, "bare `make` runs a payload",
        "A recipe line of the Makefile default goal (or a target it depends on), or a script it runs, that fetches and runs remote code, decodes and evaluates, opens a shell to the network, reads credentials or writes agent configuration.",
        "Typing `make`, the most ordinary build step there is, runs the payload.";
    "build-file-payload", High, "build file carries a payload",
        "Makefile (including $(shell) at parse time), justfile, Taskfile, CMakeLists.txt, Gradle, Rakefile, binding.gyp (node-gyp runs its <!(...) commands on npm install) or other build files with a payload shape.",
        "Agents run `make` and friends to build and test; IDEs configure CMake and Gradle projects on open.";
    // ---- agents -----------------------------------------------------------
    "claude-hooks", Medium, "agent hooks defined by the project",
        ".claude/settings.json and settings.local.json hooks, .gemini/settings.json hooks.",
        "The agent runs these commands on its own events, without asking.";
    "claude-hooks-payload", Critical, "agent hook carries a payload",
        "An agent hook command (or the file it runs) with a payload shape.",
        "It runs inside the agent's session without a prompt.";
    "agent-approval-bypass", High, "project disables the agent's approvals",
        "bypassPermissions/dontAsk modes, Bash(*) allow rules, enableAllProjectMcpServers, Codex approval_policy=never or danger-full-access, Gemini autoAccept/yolo, --dangerously-skip-permissions in scripts.",
        "The project, not the user, decides that the agent may run anything without asking.";
    "mcp-server-command", Medium, "MCP server runs a local command",
        ".mcp.json, .cursor/mcp.json, .vscode/mcp.json, .gemini/settings.json or .codex/config.toml MCP servers started with a command.",
        "Agents start project MCP servers when the session opens (once approved, or automatically when all project servers are enabled).";
    "mcp-server-payload", Critical, "MCP server command carries a payload",
        "An MCP server command or argument (or the file it runs) with a payload shape.",
        "It runs when the agent starts.";
    "agent-instructions-file", Info, "agent instruction file",
        "CLAUDE.md, AGENTS.md, GEMINI.md, .cursorrules, .cursor/rules, .github/copilot-instructions.md, .windsurfrules, .clinerules and similar.",
        "The agent reads these as instructions; review them like code.";
    "agent-instructions-remote-exec", High, "agent instructions run remote code",
        "An agent instruction file containing a fetch-and-execute command (or one that decodes and runs).",
        "The agent obeys its instruction file; this tells it to run code that is not in the repository.";
    "agent-instructions-secrets", High, "agent instructions touch secrets",
        "An agent instruction file pointing the agent at credentials (~/.ssh, ~/.aws, tokens, env dumps) or telling it to send secrets somewhere.",
        "Reading or sending credentials is never part of building a project.";
    "agent-instructions-deception", High, "agent instructions hide or skip steps",
        "An agent instruction file telling the agent to ignore the user or earlier instructions, hide actions, act silently or skip approvals.",
        "That is an attacker steering the agent against its user.";
    "doc-run-remote-exec", High, "text tells the reader to run remote code",
        "A README, doc, error string or fixture with 'run this' phrasing next to a fetch-and-execute command from an unknown host.",
        "The clean-repository attack: nothing malicious is committed, the build fails on purpose and the text talks the agent into running the payload.";
    "doc-prompt-injection", High, "text tries to steer an agent",
        "Docs and text files telling the reader to ignore previous instructions, hide actions from the user or skip approvals.",
        "Agents read docs as instructions; this is prompt injection.";
    "fetch-exec-mention", Low, "fetch-and-execute command in text",
        "A fetch-and-execute command from an unknown host without 'run this' phrasing, or in a file that is not known to run.",
        "Worth a look: it becomes an attack as soon as something runs or recommends it.";
    "known-installer", Info, "well-known toolchain installer",
        "A fetch-and-execute command from a well-known installer host (rustup, nvm, Homebrew, uv, bun, deno...).",
        "Ordinary, listed so that reviewers see every remote-code step.";
    "payload-shape", Low, "payload shape in a file that is not known to run",
        "Decode-and-exec, reverse shells, DNS TXT fetch-and-run in a file no hook or script is known to run.",
        "Dormant until something imports or runs it; often test data, sometimes a payload waiting for a trigger.";
    // ---- hidden text ------------------------------------------------------
    "hidden-unicode-tags", High, "invisible Unicode tag characters",
        "Unicode tag characters (U+E0000-U+E007F) outside emoji flag sequences; the hidden ASCII is decoded and shown.",
        "Invisible to a human reviewer, read by the model: the standard way to hide instructions for an agent.";
    "variation-selector-smuggling", High, "text smuggled in variation selectors",
        "Runs of four or more Unicode variation selectors, which can encode arbitrary bytes invisibly; decoded bytes shown.",
        "Invisible to a human reviewer, decodable by a model or a loader.";
    "bidi-control", Medium, "bidirectional override or isolate",
        "Unicode bidi embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069).",
        "They make code or text display differently from what runs or what the model reads (Trojan Source).";
    "zero-width-run", Medium, "run of zero-width characters",
        "Four or more consecutive zero-width characters (ZWSP, ZWNJ, ZWJ, word joiner, invisible operators, BOM); binary-encoded text is decoded and shown.",
        "Zero-width runs carry hidden messages and split keywords so reviewers and filters miss them.";
    // ---- scanner limits ---------------------------------------------------
    "scan-truncated", Medium, "auto-run file too large to scan fully",
        "A file that runs on its own or configures something that does, larger than the scanner's read limit.",
        "Padding a hook past a scanner's limit is a known evasion; review the rest by hand.";
    "config-unparseable", Low, "configuration file does not parse",
        "A JSON/TOML configuration file the scanner could not parse; it was scanned as plain text instead.",
        "Lenient consumers (VS Code, some agents) may still read it; a broken file can hide what it configures.";
}

/// The rule with this id. Panics on an unknown id: ids are compile-time
/// constants of this crate, so an unknown one is a bug caught by the tests.
pub fn rule(id: &str) -> &'static Rule {
    RULES
        .iter()
        .find(|r| r.id == id)
        .unwrap_or_else(|| panic!("runproof-scan: unknown rule id {id}"))
}

/// Every rule, for `--rules` and SARIF.
pub fn rules() -> &'static [Rule] {
    RULES
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_are_unique_and_slugs() {
        let mut seen = HashSet::new();
        for r in RULES {
            assert!(seen.insert(r.id), "duplicate rule id {}", r.id);
            assert!(
                r.id.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                "bad id {}",
                r.id
            );
            assert!(!r.looks_for.is_empty() && !r.why.is_empty() && !r.name.is_empty());
        }
    }

    #[test]
    fn payload_rules_are_high_or_critical() {
        for r in RULES.iter().filter(|r| r.id.ends_with("-payload")) {
            assert!(r.severity >= Severity::High, "{} is {}", r.id, r.severity);
        }
    }
}
