//! Hostile trees: huge (sparse) files, many entries, deep nesting, huge
//! output. Each must end in a clear error or a bounded result, quickly, and
//! `apply` must not half-apply a layer it refuses as a whole.

mod overlay_support;

use overlay_support::*;
use runproof_sandbox::overlay::{self, ApplyOptions, DiffOptions, Limits, OverlayError};
use std::time::{Duration, Instant};

fn opts(limits: Limits) -> DiffOptions {
    DiffOptions {
        limits,
        ..Default::default()
    }
}

#[test]
fn a_huge_sparse_file_is_an_error_not_an_allocation() {
    let t = TempDir::new("huge");
    let (u, w) = (t.sub("upper"), t.sub("ws"));
    let f = std::fs::File::create(u.join("huge.bin")).unwrap();
    f.set_len(16 << 30).unwrap(); // 16 GiB of holes
    write(&u, "small.txt", "ok\n");
    let start = Instant::now();
    let err = overlay::diff_to_vec(&u, &w, &DiffOptions::default()).unwrap_err();
    assert!(matches!(err, OverlayError::FileTooLarge { .. }), "{err}");
    assert!(err.to_string().contains("huge.bin"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(5));

    // apply refuses that one file and applies the rest.
    let r = overlay::apply(&u, &w, &ApplyOptions::default()).unwrap();
    assert!(
        r.refused
            .iter()
            .any(|e| e.path == "huge.bin" && e.reason.contains("limit")),
        "{r}"
    );
    assert!(!w.join("huge.bin").exists());
    assert!(w.join("small.txt").exists());
}

#[test]
fn large_text_is_diffed_as_binary_and_still_applies() {
    let t = TempDir::new("bigtext");
    let (u, w) = (t.sub("upper"), t.sub("ws"));
    let text: String = (0..20_000).map(|i| format!("row {i}\n")).collect();
    write(&w, "big.txt", &text);
    write(&u, "big.txt", text.replace("row 777\n", "changed\n"));
    let limits = Limits {
        max_text_bytes: 10_000,
        ..Default::default()
    };
    let (patch, stats) = overlay::diff_to_vec(&u, &w, &opts(limits)).unwrap();
    assert!(stats.files[0].binary);
    let g = TempDir::new("bigtext-git");
    copy_tree(&w, g.path());
    git_apply(g.path(), &patch);
    assert_eq!(
        std::fs::read(g.path().join("big.txt")).unwrap(),
        std::fs::read(u.join("big.txt")).unwrap()
    );
}

#[test]
fn too_many_entries_is_an_error_and_apply_writes_nothing() {
    let t = TempDir::new("many");
    let (u, w) = (t.sub("upper"), t.sub("ws"));
    for i in 0..3000 {
        write(&u, format!("d{}/f{i}", i % 7), "x");
    }
    let limits = Limits {
        max_entries: 1000,
        ..Default::default()
    };
    let err = overlay::diff_to_vec(&u, &w, &opts(limits.clone())).unwrap_err();
    assert!(
        matches!(err, OverlayError::TooManyEntries { limit: 1000, .. }),
        "{err}"
    );
    let err = overlay::summary(&u, &w, &limits).unwrap_err();
    assert!(err.to_string().contains("more than 1000 entries"), "{err}");
    let aopts = ApplyOptions {
        limits,
        ..Default::default()
    };
    assert!(overlay::apply(&u, &w, &aopts).is_err());
    assert!(
        std::fs::read_dir(&w).unwrap().next().is_none(),
        "nothing applied"
    );
}

#[test]
fn deep_nesting_is_an_error() {
    let t = TempDir::new("deep");
    let (u, w) = (t.sub("upper"), t.sub("ws"));
    let deep: String = (0..40).map(|i| format!("d{i}/")).collect();
    write(&u, format!("{deep}leaf"), "x\n");
    let limits = Limits {
        max_depth: 16,
        ..Default::default()
    };
    let err = overlay::diff_to_vec(&u, &w, &opts(limits)).unwrap_err();
    assert!(
        matches!(err, OverlayError::TooDeep { limit: 16, .. }),
        "{err}"
    );
    // Within the default limit the same tree is fine.
    let (patch, _) = overlay::diff_to_vec(&u, &w, &DiffOptions::default()).unwrap();
    assert!(String::from_utf8_lossy(&patch).contains("d39/leaf"));
}

#[test]
fn output_is_capped() {
    let t = TempDir::new("cap");
    let (u, w) = (t.sub("upper"), t.sub("ws"));
    for i in 0..50 {
        write(&u, format!("f{i}.txt"), "some text\n".repeat(100));
    }
    let limits = Limits {
        max_output_bytes: 10_000,
        ..Default::default()
    };
    let mut out = Vec::new();
    let err = overlay::diff(&u, &w, &mut out, &opts(limits)).unwrap_err();
    assert!(
        matches!(err, OverlayError::OutputTooLarge { limit: 10_000 }),
        "{err}"
    );
    assert!(out.len() <= 10_000);
    assert!(err.to_string().contains("--stat"));
}

#[test]
fn many_changed_lines_finish_in_bounded_time() {
    // Two unrelated 200k-line files: the worst case for a line diff. The
    // deadline makes it settle for a coarser (still correct) diff.
    let t = TempDir::new("slow");
    let (u, w) = (t.sub("upper"), t.sub("ws"));
    let a: String = (0..200_000)
        .map(|i| format!("{}\n", i * 7 % 1009))
        .collect();
    let b: String = (0..200_000)
        .map(|i| format!("{}\n", i * 13 % 1013))
        .collect();
    write(&w, "x.txt", &a);
    write(&u, "x.txt", &b);
    let limits = Limits {
        text_diff_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let start = Instant::now();
    let (patch, _) = overlay::diff_to_vec(&u, &w, &opts(limits)).unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "{:?}",
        start.elapsed()
    );
    let g = TempDir::new("slow-git");
    copy_tree(&w, g.path());
    git_apply(g.path(), &patch);
    assert_eq!(std::fs::read(g.path().join("x.txt")).unwrap(), b.as_bytes());
}
