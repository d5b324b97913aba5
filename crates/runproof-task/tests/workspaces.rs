//! Workspaces made from a cached environment, copy-on-write and copied:
//! nothing a graded patch or its tests do reaches the cache, and both kinds
//! show the tests the same tree (deletions, renames, modes, emptied
//! directories), real git, real pytest, real sandboxes.

mod common;

use runproof_task::{EnvCache, Harness, Outcome, PatchChoice, SandboxRunner, Task, WorkspaceMode};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

fn harness(cache: &Path, mode: WorkspaceMode) -> Harness {
    Harness {
        runner: Arc::new(SandboxRunner::default()),
        workspaces: Arc::new(EnvCache::with_mode(cache, mode)),
        reruns: 0,
        keep_workspaces: false,
    }
}

/// Every entry under `dir`: type, mode, size, mtime and content hash (or
/// link target). Symlinks are not followed.
fn snapshot(dir: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, d: &Path, out: &mut BTreeMap<String, String>) {
        let mut entries: Vec<_> = std::fs::read_dir(d).unwrap().flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let what = if m.file_type().is_symlink() {
                format!("link {}", std::fs::read_link(&p).unwrap().display())
            } else if m.is_dir() {
                walk(root, &p, out);
                "dir".to_string()
            } else {
                let data = std::fs::read(&p).unwrap();
                format!("file {:x}", Sha256::digest(&data))
            };
            out.insert(
                rel,
                format!(
                    "{what} mode {:o} size {} mtime {}.{}",
                    m.mode(),
                    m.len(),
                    m.mtime(),
                    m.mtime_nsec()
                ),
            );
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

const PRISTINE_TEST: &str = r#"import os
def test_pristine():
    assert open('data/keep.txt').read() == 'keep\n'
    assert open('data/gone.txt').read() == 'gone\n'
    assert open('build/out.txt').read() == 'built\n'
    assert not os.path.exists('planted.txt')
    assert not os.path.exists(os.path.expanduser('~/planted'))
    assert open('.git/HEAD').read().strip()
"#;

/// Imported by the tests once the patch is applied: attacks everything it
/// can reach in its workspace, the environment's git directory, build
/// output, home, hard links into the cache, and the cache's own path.
const HOSTILE: &str = r#"import os, subprocess
root = os.getcwd()
for base, dirs, files in os.walk(root):
    for d in dirs:
        try:
            os.chmod(os.path.join(base, d), 0o777)
        except OSError:
            pass
    for f in files:
        p = os.path.join(base, f)
        try:
            os.chmod(p, 0o666)
            with open(p, 'r+b') as fh:
                fh.write(b'POISON')
        except OSError:
            pass
for p in ['planted.txt', '.git/hooks/post-checkout', os.path.expanduser('~/planted')]:
    try:
        os.makedirs(os.path.dirname(os.path.abspath(p)), exist_ok=True)
        open(p, 'w').write('#!/bin/sh\necho pwned\n')
    except OSError:
        pass
try:
    os.link('build/out.txt', 'build/hardlink')
    open('build/hardlink', 'w').write('POISON through a hard link')
except OSError:
    pass
for p in ['data/gone.txt', '.git/index', 'build/out.txt']:
    try:
        os.remove(p)
    except OSError:
        pass
try:
    os.rename('.git/objects', '.git/objects-moved')
except OSError:
    pass
subprocess.Popen(['sh', '-c', 'sleep 2; echo late > planted-late.txt'])
"#;

fn poisoning_is_contained(mode: WorkspaceMode) {
    let d = tempfile::tempdir().unwrap();
    let repo = d.path().join("repo-p");
    let sha = common::repo(
        &repo,
        &[
            ("m.py", "X = 1\n"),
            ("test_a.py", &format!("import m\n{PRISTINE_TEST}")),
            ("data/keep.txt", "keep\n"),
            ("data/gone.txt", "gone\n"),
            (".gitignore", "build/\n"),
        ],
    );
    let t = common::task(
        d.path(),
        json!({
            "instance_id": "poison",
            "base_commit": sha,
            "repo_path": repo,
            "setup": ["mkdir -p build && echo built > build/out.txt"],
            "test_cmd": "python3 -m pytest -rA -p no:cacheprovider test_a.py",
            "test_format": "pytest",
            "timeout": 60,
            "FAIL_TO_PASS": [],
            "PASS_TO_PASS": ["test_a.py::test_pristine"],
        }),
    );
    let cache = d.path().join("cache");
    let h = harness(&cache, mode);
    // The environment is built by the first grading; the base resolves.
    let r = h.grade(&t, "base", PatchChoice::Empty, &d.path().join("o0"));
    assert_eq!(
        r.status,
        Outcome::Resolved,
        "{:?}\n{}",
        r.detail,
        std::fs::read_to_string(d.path().join("o0/test_output.txt")).unwrap_or_default()
    );
    let want = if mode == WorkspaceMode::Copy {
        "copy"
    } else {
        "overlay"
    };
    assert_eq!(r.workspace.as_deref(), Some(want), "{:?}", r.workspace_note);
    let env = cache.join("envs").join(r.env_key.as_deref().unwrap());
    let before = snapshot(&env);
    assert!(before.contains_key("repo/build/out.txt"), "{before:?}");

    // A hostile patch: deletes and rewrites tracked files, and plants code
    // that the tests import.
    let patch = common::diff(&repo, &[("m.py", HOSTILE), ("data/keep.txt", "patched\n")]);
    let patch = format!(
        "{patch}diff --git a/data/gone.txt b/data/gone.txt\ndeleted file mode 100644\n--- a/data/gone.txt\n+++ /dev/null\n@@ -1 +0,0 @@\n-gone\n"
    );
    for i in 0..2 {
        let r = h.grade(
            &t,
            "hostile",
            PatchChoice::Model(Some(&patch)),
            &d.path().join(format!("h{i}")),
        );
        assert!(r.patch_successfully_applied, "{:?}", r.detail);
        assert_eq!(r.status, Outcome::Unresolved, "{:?}", r.detail);
    }
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let after = snapshot(&env);
    let changed: Vec<_> = before
        .iter()
        .filter(|(k, v)| after.get(*k) != Some(v))
        .map(|(k, _)| k)
        .chain(after.keys().filter(|k| !before.contains_key(*k)))
        .collect();
    assert!(changed.is_empty(), "the cache changed: {changed:?}");
    // And the next instance sees the environment as setup left it.
    let r = h.grade(&t, "base", PatchChoice::Empty, &d.path().join("o1"));
    assert_eq!(r.status, Outcome::Resolved, "{:?}", r.detail);
    assert!(!r.env_built);
}

#[test]
fn hostile_patch_and_tests_cannot_poison_the_cache_overlay() {
    poisoning_is_contained(WorkspaceMode::Overlay);
}

#[test]
fn hostile_patch_and_tests_cannot_poison_the_cache_copy() {
    poisoning_is_contained(WorkspaceMode::Copy);
}

const LAYOUT_TEST: &str = r#"import os
def test_layout():
    assert not os.path.exists('pkg'), os.listdir('.')
    assert not os.path.exists('lib/a.py')
    assert open('lib/b.py').read() == 'B = 2\n'
    assert not os.path.exists('old_name.py')
    assert open('new_name.py').read() == 'RENAMED = True\n'
    assert os.access('tool.sh', os.X_OK)
    assert open('newdir/sub/n.txt').read() == 'new\n'
    assert open('lib/c.py').read() == 'C = 30\n'
"#;

/// Deletions (one emptying its directory), a rename, a mode change, a new
/// directory and an edit: copy-on-write and copy workspaces show the tests
/// the same tree, the one `git apply` makes.
#[test]
fn overlay_and_copy_workspaces_show_the_same_tree() {
    let d = tempfile::tempdir().unwrap();
    let repo = d.path().join("repo-l");
    let sha = common::repo(
        &repo,
        &[
            ("test_layout.py", LAYOUT_TEST),
            ("pkg/only.py", "ONLY = 1\n"),
            ("lib/a.py", "A = 1\n"),
            ("lib/b.py", "B = 2\n"),
            ("lib/c.py", "C = 3\n"),
            ("old_name.py", "RENAMED = True\n"),
            ("tool.sh", "#!/bin/sh\necho tool\n"),
        ],
    );
    std::fs::remove_dir_all(repo.join("pkg")).unwrap();
    std::fs::remove_file(repo.join("lib/a.py")).unwrap();
    std::fs::rename(repo.join("old_name.py"), repo.join("new_name.py")).unwrap();
    std::fs::set_permissions(repo.join("tool.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let patch = common::diff(
        &repo,
        &[("newdir/sub/n.txt", "new\n"), ("lib/c.py", "C = 30\n")],
    );
    assert!(patch.contains("rename from old_name.py"), "{patch}");
    assert!(patch.contains("new mode 100755"), "{patch}");
    let t = common::task(
        d.path(),
        json!({
            "instance_id": "layout",
            "base_commit": sha,
            "repo_path": repo,
            "test_cmd": "python3 -m pytest -rA -p no:cacheprovider test_layout.py",
            "test_format": "pytest",
            "timeout": 60,
            "FAIL_TO_PASS": ["test_layout.py::test_layout"],
        }),
    );
    for (mode, name) in [
        (WorkspaceMode::Overlay, "overlay"),
        (WorkspaceMode::Copy, "copy"),
    ] {
        let h = harness(&d.path().join("cache"), mode);
        let base = h.grade(
            &t,
            "m",
            PatchChoice::Empty,
            &d.path().join(format!("b-{name}")),
        );
        assert_eq!(
            base.status,
            Outcome::Unresolved,
            "{name}: {:?}",
            base.detail
        );
        let r = h.grade(
            &t,
            "m",
            PatchChoice::Model(Some(&patch)),
            &d.path().join(format!("o-{name}")),
        );
        assert_eq!(r.workspace.as_deref(), Some(name));
        assert_eq!(r.status, Outcome::Resolved, "{name}: {:?}", r.detail);
        let applied =
            std::fs::read_to_string(d.path().join(format!("o-{name}/applied.diff"))).unwrap();
        assert!(applied.contains("lib/c.py"), "{applied}");
    }
}

/// A repository with one passing pytest test, and a task over it that runs
/// `test_cmd` (the test is PASS_TO_PASS).
fn passing_pytest_task(d: &Path, name: &str, test_cmd: &str) -> Task {
    let repo = d.join(format!("repo-{name}"));
    let sha = common::repo(&repo, &[("test_a.py", "def test_ok():\n    assert True\n")]);
    common::task(
        d,
        json!({
            "instance_id": name,
            "base_commit": sha,
            "repo_path": repo,
            "test_cmd": test_cmd,
            "test_format": "pytest",
            "timeout": 60,
            "FAIL_TO_PASS": [],
            "PASS_TO_PASS": ["test_a.py::test_ok"],
        }),
    )
}

/// Where an overlay cannot be mounted (here: a path overlayfs options cannot
/// carry), `auto` copies and says why; `overlay` refuses with the fix.
#[test]
fn unusable_overlay_falls_back_to_copy_and_says_why() {
    let d = tempfile::tempdir().unwrap();
    let t = passing_pytest_task(
        d.path(),
        "fallback",
        "python3 -m pytest -rA -p no:cacheprovider",
    );
    let cache = d.path().join("cache");
    let out = d.path().join("out,1");
    // The scratch tmpfs would take the workspace out of the unusable --out.
    let no_scratch = |mode| Harness {
        workspaces: Arc::new(EnvCache::with_mode(&cache, mode).without_scratch()),
        ..harness(&cache, mode)
    };
    let r = no_scratch(WorkspaceMode::Auto).grade(&t, "m", PatchChoice::Empty, &out);
    assert_eq!(r.status, Outcome::Resolved, "{:?}", r.detail);
    assert_eq!(r.workspace.as_deref(), Some("copy"));
    let note = r.workspace_note.unwrap();
    assert!(
        note.contains("copy-on-write unavailable") && note.contains("`,`"),
        "{note}"
    );
    let r = no_scratch(WorkspaceMode::Overlay).grade(&t, "m", PatchChoice::Empty, &out);
    assert_eq!(r.status, Outcome::HarnessError);
    assert!(
        r.detail.as_deref().unwrap().contains("--workspaces copy"),
        "{:?}",
        r.detail
    );
}

/// Workspaces are removed (in the background) once graded, including the
/// kernel's mode-000 overlay work directory, and nothing is left once the
/// harness is gone; `keep_workspaces` keeps them, with the instance's
/// changes in the upper layer.
#[test]
fn workspaces_are_removed_after_grading_unless_kept() {
    let d = tempfile::tempdir().unwrap();
    let repo = d.path().join("repo-k");
    let sha = common::repo(
        &repo,
        &[
            ("m.py", "X = 1\n"),
            (
                "test_a.py",
                "import m\n\ndef test_ok():\n    assert m.X == 2\n",
            ),
        ],
    );
    let patch = common::diff(&repo, &[("m.py", "X = 2\n")]);
    let t = common::task(
        d.path(),
        json!({
            "instance_id": "keep",
            "base_commit": sha,
            "repo_path": repo,
            "test_cmd": "python3 -m pytest -rA -p no:cacheprovider && touch made-by-tests",
            "test_format": "pytest",
            "timeout": 60,
            "FAIL_TO_PASS": ["test_a.py::test_ok"],
        }),
    );
    let cache = d.path().join("cache");
    let out = d.path().join("out");
    {
        let h = harness(&cache, WorkspaceMode::Auto);
        for i in 0..3 {
            let r = h.grade(&t, "m", PatchChoice::Model(Some(&patch)), &out);
            assert_eq!(r.status, Outcome::Resolved, "{i}: {:?}", r.detail);
        }
    }
    let left: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("workspace") || n.contains("runproof-work"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    let h = Harness {
        keep_workspaces: true,
        ..harness(&cache, WorkspaceMode::Auto)
    };
    let r = h.grade(&t, "m", PatchChoice::Model(Some(&patch)), &out);
    assert_eq!(r.status, Outcome::Resolved, "{:?}", r.detail);
    let upper = out.join("workspace/upper/repo");
    assert_eq!(
        std::fs::read_to_string(upper.join("m.py")).unwrap(),
        "X = 2\n"
    );
    assert!(upper.join("made-by-tests").exists());
}

/// A throwaway copy-on-write workspace lives on the scratch directory
/// (`RUNPROOF_SCRATCH` here; a private tmpfs by default) and is gone once
/// graded; a kept one stays under --out. A scratch directory others could
/// enter is never used.
#[test]
fn throwaway_workspaces_live_on_the_scratch_directory_and_are_removed() {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    let scratch = d.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    std::fs::set_permissions(&scratch, std::fs::Permissions::from_mode(0o700)).unwrap();
    // SAFETY: nextest runs each test in its own process; nothing else reads
    // the environment concurrently here.
    unsafe { std::env::set_var("RUNPROOF_SCRATCH", &scratch) };
    let t = passing_pytest_task(
        d.path(),
        "scratch",
        "python3 -m pytest -rA -p no:cacheprovider && head -c 1000000 /dev/zero > big.out",
    );
    let cache = d.path().join("cache");
    let out = d.path().join("out");
    {
        let h = harness(&cache, WorkspaceMode::Auto);
        for _ in 0..2 {
            let r = h.grade(&t, "m", PatchChoice::Empty, &out);
            assert_eq!(r.status, Outcome::Resolved, "{:?}", r.detail);
            assert_eq!(r.workspace.as_deref(), Some("overlay"));
            let dir = r.workspace_dir.unwrap();
            assert!(dir.starts_with(scratch.to_str().unwrap()), "{dir}");
        }
    }
    let left: Vec<_> = std::fs::read_dir(&scratch).unwrap().flatten().collect();
    assert!(left.is_empty(), "left on the scratch directory: {left:?}");
    assert!(!out.join("workspace").exists());
    let kept = Harness {
        keep_workspaces: true,
        ..harness(&cache, WorkspaceMode::Auto)
    }
    .grade(&t, "m", PatchChoice::Empty, &out);
    assert_eq!(
        kept.workspace_dir.as_deref(),
        Some(out.join("workspace").to_str().unwrap())
    );
    assert!(out.join("workspace/upper/repo/big.out").exists());
}

/// A scratch directory with group or other access is refused: the
/// workspace stays under --out.
#[test]
fn a_scratch_directory_others_can_enter_is_not_used() {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    let scratch = d.path().join("open");
    std::fs::create_dir(&scratch).unwrap();
    std::fs::set_permissions(&scratch, std::fs::Permissions::from_mode(0o755)).unwrap();
    // SAFETY: as above, one test per process.
    unsafe { std::env::set_var("RUNPROOF_SCRATCH", &scratch) };
    let t = passing_pytest_task(
        d.path(),
        "open",
        "python3 -m pytest -rA -p no:cacheprovider",
    );
    let out = d.path().join("out");
    let r = harness(&d.path().join("cache"), WorkspaceMode::Auto).grade(
        &t,
        "m",
        PatchChoice::Empty,
        &out,
    );
    assert_eq!(r.status, Outcome::Resolved, "{:?}", r.detail);
    assert_eq!(
        r.workspace_dir.as_deref(),
        Some(out.join("workspace").to_str().unwrap())
    );
}
