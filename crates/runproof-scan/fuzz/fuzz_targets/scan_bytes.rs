//! Any bytes, under any of the paths that select a check, must be scanned
//! without panicking, and every finding must carry a known rule, a line
//! inside the input and bounded, escape-free evidence.
#![no_main]

use libfuzzer_sys::fuzz_target;

const PATHS: &[&str] = &[
    "package.json",
    ".pnpmfile.cjs",
    ".npmrc",
    ".yarnrc.yml",
    "pip.conf",
    "requirements.txt",
    ".cargo/config.toml",
    "Cargo.toml",
    "pyproject.toml",
    "setup.py",
    "setup.cfg",
    "x.pth",
    "sitecustomize.py",
    "conftest.py",
    "build.rs",
    ".gitmodules",
    ".git/config",
    ".git/hooks/pre-commit",
    ".vscode/tasks.json",
    ".vscode/settings.json",
    ".devcontainer/devcontainer.json",
    ".envrc",
    ".pre-commit-config.yaml",
    "Makefile",
    "GNUmakefile",
    "composer.json",
    ".claude/settings.json",
    ".codex/config.toml",
    ".mcp.json",
    "CLAUDE.md",
    "README.md",
    "Dockerfile",
    "src/main.js",
];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, content)) = data.split_first() else { return };
    let path = PATHS[sel as usize % PATHS.len()];
    let lines = content.iter().filter(|&&b| b == b'\n').count() + 1;
    for f in runproof_scan::scan_bytes(path, content) {
        let _ = runproof_scan::rule(&f.rule);
        assert!(f.line >= 1 && f.line <= lines, "line {} of {}", f.line, lines);
        assert!(f.evidence.chars().count() <= 241, "evidence too long");
        assert!(!f.evidence.contains('\u{1b}') && !f.evidence.contains('\n'));
    }
});
