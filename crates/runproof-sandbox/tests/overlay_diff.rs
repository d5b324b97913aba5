//! `overlay::diff` and `overlay::apply` on upper layers made by hand, one case
//! each, checked against the kernel: the kernel mounts the same layers and its
//! merged view is the expected result; real `git apply` of our diff onto a
//! copy of the workspace, and `runproof apply` onto another copy, must both
//! reproduce it exactly (content, symlink targets, executable bits).
//!
//! Runs as root (mknod of whiteouts, trusted.* xattrs, overlay mounts in a
//! private mount namespace); CI does.

mod overlay_support;

use overlay_support::*;
use runproof_sandbox::overlay::{self, DiffOptions, FileStatus};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

struct Case {
    _t: TempDir,
    lower: std::path::PathBuf,
    upper: std::path::PathBuf,
}

fn case(tag: &str) -> Case {
    let t = TempDir::new(tag);
    let lower = t.sub("lower");
    let upper = t.sub("upper");
    Case {
        _t: t,
        lower,
        upper,
    }
}

fn patch_text(c: &Case) -> String {
    String::from_utf8_lossy(&assert_diff_and_apply_match_kernel(
        &c.lower,
        &c.upper,
        Ns::Trusted,
    ))
    .into_owned()
}

fn numbered(n: usize) -> String {
    (1..=n).map(|i| format!("line {i}\n")).collect()
}

#[test]
fn add_modify_delete_text() {
    let c = case("text");
    write(&c.lower, "keep.txt", "same\n");
    write(&c.lower, "mod.txt", numbered(40));
    write(&c.lower, "gone.txt", "bye\n");
    let mut changed = numbered(40).replace("line 3\n", "line three\n");
    changed = changed.replace("line 30\n", "");
    changed.push_str("line 41\n");
    write(&c.upper, "mod.txt", changed);
    write(&c.upper, "new/deep/file.txt", "hello\nworld\n");
    whiteout(&c.upper, "gone.txt");
    let p = patch_text(&c);
    assert!(p.contains("diff --git a/mod.txt b/mod.txt"));
    assert!(p.contains("@@ -1,6 +1,6 @@"), "first hunk header:\n{p}");
    assert!(p.contains("new file mode 100644"));
    assert!(p.contains("deleted file mode 100644"));
    assert!(!p.contains("keep.txt"));
}

#[test]
fn stats_count_lines_and_files() {
    let c = case("stats");
    write(&c.lower, "a.txt", "1\n2\n3\n");
    write(&c.upper, "a.txt", "1\nX\n3\n4\n");
    write(&c.upper, "b.txt", "new\n");
    let s = overlay::summary(&c.upper, &c.lower, &Default::default()).unwrap();
    assert_eq!(s.files_changed, 2);
    assert_eq!((s.insertions, s.deletions), (3, 1));
    assert_eq!((s.added, s.modified, s.deleted), (1, 1, 0));
    assert_eq!(s.line(), "2 files changed, +3 -1");
    let j = s.to_json();
    assert_eq!(j["files_changed"], 2);
    assert_eq!(j["stats"]["files"][0]["path"], "a.txt");
}

#[test]
fn whiteout_of_a_directory_deletes_everything_below() {
    let c = case("dirdel");
    write(&c.lower, "d/a.txt", "a\n");
    write(&c.lower, "d/e/b.txt", "b\n");
    symlink(&c.lower, "d/e/link", "../a.txt");
    write(&c.lower, "d/e/f/g/bin", b"\x00\x01\x02");
    write(&c.lower, "other.txt", "o\n");
    whiteout(&c.upper, "d");
    let p = patch_text(&c);
    assert_eq!(p.matches("deleted file mode").count(), 4, "{p}");
}

#[test]
fn opaque_directory_hides_the_lower_one() {
    for ns in [Ns::Trusted, Ns::User] {
        let c = case("opaque");
        write(&c.lower, "d/a.txt", "a\n");
        write(&c.lower, "d/b.txt", "b\n");
        write(&c.lower, "d/sub/c.txt", "c\n");
        write(&c.upper, "d/b.txt", "b changed\n");
        write(&c.upper, "d/new.txt", "n\n");
        opaque(&c.upper, "d", ns);
        let p =
            String::from_utf8_lossy(&assert_diff_and_apply_match_kernel(&c.lower, &c.upper, ns))
                .into_owned();
        assert!(p.contains("deleted file mode 100644\nindex"), "{p}");
        assert!(p.contains("a/d/sub/c.txt"), "{p}");
        // A whiteout inside an opaque directory hides nothing and adds nothing
        // (the kernel lists it there but cannot look it up).
        whiteout(&c.upper, "d/ghost");
        let (again, _) = overlay::diff_to_vec(&c.upper, &c.lower, &DiffOptions::default()).unwrap();
        assert_eq!(String::from_utf8_lossy(&again), p);
    }
}

#[test]
fn xattr_whiteouts_in_both_namespaces() {
    for ns in [Ns::Trusted, Ns::User] {
        let c = case("xwh");
        write(&c.lower, "d/a.txt", "a\n");
        write(&c.lower, "d/b.txt", "b\n");
        mkdir(&c.upper, "d");
        xwhiteout(&c.upper, "d/a.txt", ns);
        let p =
            String::from_utf8_lossy(&assert_diff_and_apply_match_kernel(&c.lower, &c.upper, ns))
                .into_owned();
        assert!(
            p.contains("diff --git a/d/a.txt b/d/a.txt\ndeleted file mode"),
            "{p}"
        );
        assert!(!p.contains("b.txt"));
    }
}

#[test]
fn binary_add_modify_delete() {
    let c = case("bin");
    let big: Vec<u8> = (0..70_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    write(&c.lower, "mod.bin", &big);
    write(&c.lower, "del.bin", b"\x00\xff\x00gone");
    let mut big2 = big.clone();
    big2[1234] ^= 0xff;
    big2.extend_from_slice(b"\x00tail");
    write(&c.upper, "mod.bin", &big2);
    write(&c.upper, "add.bin", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR");
    whiteout(&c.upper, "del.bin");
    // Text becoming binary, and binary becoming text.
    write(&c.lower, "t2b", "text\n");
    write(&c.upper, "t2b", b"bin\x00ary");
    write(&c.lower, "b2t", b"bin\x00ary");
    write(&c.upper, "b2t", "text\n");
    let p = patch_text(&c);
    assert_eq!(p.matches("GIT binary patch").count(), 5, "{p}");
}

#[test]
fn symlinks_added_changed_and_retyped() {
    let c = case("symlink");
    symlink(&c.lower, "link", "target-a");
    write(&c.lower, "was-file", "f\n");
    symlink(&c.lower, "was-link", "x");
    symlink(&c.upper, "link", "target-b");
    symlink(&c.upper, "new-link", "dir/with space");
    symlink(&c.upper, "was-file", "now-a-link");
    write(&c.upper, "was-link", "now a file\n");
    let p = patch_text(&c);
    assert!(p.contains("new file mode 120000"), "{p}");
    // A link out of the workspace is shown, and flagged.
    let c2 = case("symlink-out");
    symlink(&c2.upper, "out", "/etc/shadow");
    let (patch, stats) =
        overlay::diff_to_vec(&c2.upper, &c2.lower, &DiffOptions::default()).unwrap();
    assert!(String::from_utf8_lossy(&patch).contains("+/etc/shadow"));
    assert_eq!(stats.warnings.len(), 1);
    assert!(
        stats.warnings[0].contains("apply` refuses it"),
        "{:?}",
        stats.warnings
    );
    assert!(
        p.contains("-target-a\n\\ No newline at end of file\n+target-b"),
        "{p}"
    );
}

#[test]
fn mode_changes() {
    let c = case("mode");
    write(&c.lower, "script.sh", "echo hi\n");
    write(&c.lower, "both.sh", "echo 1\n");
    write(&c.lower, "was-exec", "x\n");
    chmod(&c.lower, "was-exec", 0o755);
    write(&c.upper, "script.sh", "echo hi\n");
    chmod(&c.upper, "script.sh", 0o755);
    write(&c.upper, "both.sh", "echo 2\n");
    chmod(&c.upper, "both.sh", 0o755);
    write(&c.upper, "was-exec", "x\n");
    chmod(&c.upper, "was-exec", 0o644);
    // A copy-up with nothing changed (e.g. after `touch`) is no change.
    write(&c.lower, "touched", "t\n");
    write(&c.upper, "touched", "t\n");
    let p = patch_text(&c);
    assert!(p.contains("diff --git a/script.sh b/script.sh\nold mode 100644\nnew mode 100755\n"));
    assert!(
        p.contains("old mode 100644\nnew mode 100755\nindex "),
        "{p}"
    );
    assert!(!p.contains("touched"));
    let s = overlay::summary(&c.upper, &c.lower, &Default::default()).unwrap();
    let st = s
        .stats
        .files
        .iter()
        .find(|f| f.path == "script.sh")
        .unwrap();
    assert_eq!(st.status, FileStatus::ModeChanged);
}

#[test]
fn empty_files() {
    let c = case("empty");
    write(&c.lower, "del-empty", "");
    write(&c.lower, "to-empty", "content\n");
    write(&c.lower, "from-empty", "");
    whiteout(&c.upper, "del-empty");
    write(&c.upper, "to-empty", "");
    write(&c.upper, "from-empty", "now\n");
    write(&c.upper, "new-empty", "");
    let p = patch_text(&c);
    assert!(p.contains(
        "index 0000000000000000000000000000000000000000..e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
    ));
}

#[test]
fn file_and_directory_replace_each_other() {
    let c = case("replace");
    write(&c.lower, "f2d", "was a file\n");
    write(&c.lower, "d2f/inner.txt", "in\n");
    write(&c.lower, "d2f/deeper/x", "x\n");
    write(&c.upper, "f2d/child.txt", "now a dir\n");
    write(&c.upper, "d2f", "now a file\n");
    // A directory over a lower symlink replaces the symlink.
    symlink(&c.lower, "l2d", "somewhere");
    write(&c.upper, "l2d/file", "real dir\n");
    patch_text(&c);
}

#[test]
fn newline_at_end_and_crlf() {
    let c = case("eol");
    write(&c.lower, "add-nl", "a\nb");
    write(&c.upper, "add-nl", "a\nb\n");
    write(&c.lower, "drop-nl", "a\nb\n");
    write(&c.upper, "drop-nl", "a\nb");
    write(&c.lower, "crlf", "one\r\ntwo\r\nthree\r\n");
    write(&c.upper, "crlf", "one\r\nTWO\r\nthree\r\n");
    write(&c.upper, "new-no-nl", "x");
    write(&c.lower, "latin1", b"caf\xe9\n");
    write(&c.upper, "latin1", b"caf\xe9 cr\xe8me\n");
    let p = patch_text(&c);
    assert!(p.contains("\\ No newline at end of file"));
    assert!(p.contains("-two\r\n+TWO\r\n"));
}

#[test]
fn unusual_names_are_quoted_as_git_does() {
    let c = case("names");
    let odd: [&[u8]; 6] = [
        b"with space.txt",
        b"caf\xc3\xa9.txt",
        b"not-utf8-\xff\xfe.txt",
        b"quote\"back\\slash",
        b"tab\there",
        b"new\nline",
    ];
    for name in odd {
        write(&c.upper, OsStr::from_bytes(name), "x\n");
    }
    write(&c.lower, OsStr::from_bytes(b"old-\xe9"), "y\n");
    whiteout(&c.upper, OsStr::from_bytes(b"old-\xe9"));
    let p = patch_text(&c);
    assert!(p.contains("\"b/not-utf8-\\377\\376.txt\""), "{p}");
    assert!(p.contains("\"a/new\\nline\""), "{p}");
    assert!(p.contains("b/with space.txt"));
}

#[test]
fn special_files_are_reported_not_diffed() {
    let c = case("special");
    write(&c.lower, "a.txt", "a\n");
    fifo(&c.upper, "pipe");
    chardev(&c.upper, "null", 1, 3);
    write(&c.upper, "a.txt", "b\n");
    let (patch, stats) = overlay::diff_to_vec(&c.upper, &c.lower, &DiffOptions::default()).unwrap();
    let p = String::from_utf8_lossy(&patch);
    assert!(!p.contains("pipe") && !p.contains("null"));
    assert_eq!(stats.warnings.len(), 2, "{:?}", stats.warnings);
    assert!(stats.warnings[0].contains("cannot be expressed"));
    // The rest of the diff still applies.
    let t = TempDir::new("special-apply");
    copy_tree(&c.lower, t.path());
    git_apply(t.path(), &patch);
    assert_eq!(std::fs::read(t.path().join("a.txt")).unwrap(), b"b\n");
}

#[test]
fn git_metadata_is_left_out_of_the_diff() {
    let c = case("gitdir");
    write(&c.lower, ".git/HEAD", "ref: refs/heads/main\n");
    write(&c.upper, ".git/HEAD", "ref: refs/heads/other\n");
    write(&c.upper, "sub/.git", "gitdir: ../evil\n");
    write(&c.upper, "ok.txt", "ok\n");
    let (patch, stats) = overlay::diff_to_vec(&c.upper, &c.lower, &DiffOptions::default()).unwrap();
    let p = String::from_utf8_lossy(&patch);
    assert!(!p.contains(".git"), "{p}");
    assert_eq!(stats.excluded_git, vec![".git", "sub/.git"]);
    assert_eq!(stats.files_changed, 1);
}

#[test]
fn protected_paths_are_flagged_in_the_summary() {
    let c = case("prot-summary");
    write(&c.upper, ".vscode/tasks.json", "{}\n");
    write(&c.upper, "src/lib.rs", "\n");
    let s = overlay::summary(&c.upper, &c.lower, &Default::default()).unwrap();
    assert_eq!(s.protected, vec![".vscode/tasks.json"]);
    assert!(s.to_string().contains("protected"));
}

#[test]
fn redirect_and_metacopy_layers_are_refused_clearly() {
    let c = case("redirect");
    write(&c.lower, "a/x", "x\n");
    mkdir(&c.upper, "b");
    set_xattr(&c.upper, "b", "trusted.overlay.redirect", b"/a");
    let err = overlay::diff_to_vec(&c.upper, &c.lower, &DiffOptions::default()).unwrap_err();
    assert!(err.to_string().contains("redirect_dir"), "{err}");

    let c = case("metacopy");
    write(&c.lower, "f", "x\n");
    write(&c.upper, "f", "");
    set_xattr(&c.upper, "f", "user.overlay.metacopy", b"");
    let err = overlay::diff_to_vec(&c.upper, &c.lower, &DiffOptions::default()).unwrap_err();
    assert!(err.to_string().contains("metacopy=off"), "{err}");
}

#[test]
fn not_a_directory_is_a_clear_error() {
    let c = case("notdir");
    write(&c.lower, "file", "x");
    let err =
        overlay::diff_to_vec(&c.lower.join("file"), &c.lower, &DiffOptions::default()).unwrap_err();
    assert!(err.to_string().contains("not a directory"), "{err}");
    let err = overlay::diff_to_vec(&c.upper.join("missing"), &c.lower, &DiffOptions::default())
        .unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
}
