//! Upper layers written by the kernel itself: a real overlay is mounted over a
//! workspace (by real root with trusted.* markers, and inside a user namespace
//! with `userxattr`, as `runproof run --overlay` does), a session of ordinary
//! shell and git commands changes it, and the merged view is copied out. Our
//! diff applied by git, and `runproof apply`, must reproduce that view.

mod overlay_support;

use overlay_support::*;
use runproof_sandbox::overlay::{self, ApplyOptions, DiffOptions, OverlayError};
use std::path::Path;
use std::process::Command;

fn git(dir: &Path, args: &[&str]) {
    run(Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid"])
        .args(["-c", "init.defaultBranch=main"])
        .args(args)
        .current_dir(dir)
        .env("GIT_CEILING_DIRECTORIES", dir.parent().unwrap())
        .env("GIT_CONFIG_NOSYSTEM", "1"));
}

fn workspace(root: &Path) {
    let lines: String = (1..=20).map(|i| format!("line {i}\n")).collect();
    write(root, "README.md", &lines);
    write(
        root,
        "src/main.rs",
        "fn main() {\n    println!(\"hi\");\n}\n",
    );
    write(root, "src/old.rs", "// old\n");
    write(root, "docs/a.md", "a\n");
    write(root, "docs/b.md", "b\n");
    write(root, "docs/sub/c.md", "c\n");
    write(root, "bin/tool", "#!/bin/sh\necho tool\n");
    chmod(root, "bin/tool", 0o755);
    write(root, "data.bin", b"\x00\x01\x02\x03binary");
    symlink(root, "link", "README.md");
    write(root, "gone/x", "x\n");
    write(root, "gone/y/z", "z\n");
    write(root, "filedir", "file\n");
    write(root, "dirfile/inner", "inner\n");
    write(root, "moved/one", "1\n");
    write(root, "crlf.txt", "a\r\nb\r\n");
    git(root, &["init", "-q"]);
    git(root, &["add", "-A"]);
    git(root, &["commit", "-qm", "base"]);
}

const SESSION: &str = r#"
sed -i 's/line 5$/LINE FIVE/' README.md
echo 'fn extra() {}' >> src/main.rs
rm src/old.rs
rm -rf docs; mkdir docs; echo new > docs/a.md
chmod -x bin/tool
chmod +x src/main.rs
printf 'new\000bin' > data.bin
ln -sfn src/main.rs link
rm -rf gone
rm filedir; mkdir filedir; echo in > filedir/f
rm -rf dirfile; echo now-file > dirfile
mv src/main.rs src/app.rs
mv moved renamed
mkdir -p new/deep; printf 'no newline' > new/deep/n.txt
printf 'a\r\nB\r\n' > crlf.txt
: > empty
git -c user.name=t -c user.email=t@example.invalid add -A
git -c user.name=t -c user.email=t@example.invalid commit -qm sandboxed
mkfifo pipe
"#;

fn session_round_trip(ns: Ns) {
    let t = TempDir::new("kernel");
    let lower = t.sub("lower");
    let upper = t.sub("upper");
    let merged = t.path().join("merged");
    workspace(&lower);
    let before = snapshot(&lower);
    kernel_session(&lower, &upper, ns, "", SESSION, &merged);
    assert_eq!(
        snapshot(&lower),
        before,
        "the overlay must not touch the workspace"
    );

    let patch = assert_matches_view(&lower, &upper, &merged);
    let p = String::from_utf8_lossy(&patch);
    for needle in [
        "diff --git a/docs/b.md b/docs/b.md\ndeleted file mode",
        "diff --git a/gone/y/z b/gone/y/z\ndeleted file mode",
        "diff --git a/bin/tool b/bin/tool\nold mode 100755\nnew mode 100644",
        " 120000\n--- a/link\n+++ b/link",
        "GIT binary patch",
        "+LINE FIVE",
        "diff --git a/renamed/one b/renamed/one\nnew file mode",
    ] {
        assert!(p.contains(needle), "missing {needle:?} in:\n{p}");
    }
    assert!(!p.contains(".git/"), "git metadata leaked into the diff");

    let s = overlay::summary(&upper, &lower, &Default::default()).unwrap();
    assert_eq!(
        s.stats.warnings.len(),
        1,
        "the fifo: {:?}",
        s.stats.warnings
    );
    assert_eq!(s.stats.excluded_git, vec![".git"]);
}

#[test]
fn kernel_upper_as_real_root_trusted_xattrs() {
    session_round_trip(Ns::Trusted);
}

#[test]
fn kernel_upper_in_user_namespace_userxattr() {
    session_round_trip(Ns::User);
}

#[test]
fn commits_made_in_the_sandbox_apply_only_when_asked() {
    let t = TempDir::new("kernel-git");
    let lower = t.sub("lower");
    let upper = t.sub("upper");
    workspace(&lower);
    kernel_session(
        &lower,
        &upper,
        Ns::User,
        "",
        "echo more >> README.md; git -c user.name=t -c user.email=t@example.invalid commit -qam inside",
        &t.path().join("merged"),
    );
    let head = |dir: &Path| {
        run(Command::new("git")
            .args(["rev-parse", "HEAD"])
            .current_dir(dir)
            .env("GIT_CEILING_DIRECTORIES", dir.parent().unwrap()))
    };
    let base = head(&lower);

    let ws = t.path().join("ws");
    copy_tree(&lower, &ws);
    let r = overlay::apply(&upper, &ws, &ApplyOptions::default()).unwrap();
    assert_eq!(r.excluded_git, vec![".git"]);
    assert!(!r.is_complete());
    assert_eq!(head(&ws), base, "history untouched by default");

    let ws2 = t.path().join("ws2");
    copy_tree(&lower, &ws2);
    let opts = ApplyOptions {
        include_git_metadata: true,
        ..Default::default()
    };
    let r = overlay::apply(&upper, &ws2, &opts).unwrap();
    assert!(r.refused.is_empty(), "{r}");
    assert_ne!(
        head(&ws2),
        base,
        "the sandbox's commit is now in the workspace"
    );
    let status = run(Command::new("git")
        .args(["status", "--porcelain"])
        .current_dir(&ws2)
        .env("GIT_CEILING_DIRECTORIES", &t.0));
    assert_eq!(status, "", "worktree and index agree with the new commit");
}

#[test]
fn redirect_dir_layers_from_the_kernel_are_refused() {
    let t = TempDir::new("kernel-redirect");
    let lower = t.sub("lower");
    let upper = t.sub("upper");
    write(&lower, "olddir/f", "f\n");
    kernel_session(
        &lower,
        &upper,
        Ns::Trusted,
        ",redirect_dir=on",
        "mv olddir newdir",
        &t.path().join("merged"),
    );
    let err = overlay::diff_to_vec(&upper, &lower, &DiffOptions::default()).unwrap_err();
    assert!(
        matches!(
            err,
            OverlayError::UnsupportedLayer {
                feature: "redirect_dir",
                ..
            }
        ),
        "{err}"
    );
    let ws = t.path().join("ws");
    copy_tree(&lower, &ws);
    let before = snapshot(&ws);
    assert!(overlay::apply(&upper, &ws, &ApplyOptions::default()).is_err());
    assert_eq!(snapshot(&ws), before, "a refused layer writes nothing");
}
