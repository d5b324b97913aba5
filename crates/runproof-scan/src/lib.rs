//! runproof-scan owns the pre-execution scanner: it finds everything in a
//! project tree that would run code or steer an agent without an explicit step
//! by the user (lifecycle scripts, hooks, editor tasks, agent configuration,
//! instruction files, hidden Unicode, payload shapes) and reports it as text,
//! JSON or SARIF 2.1.0.
//!
//! It must never execute, import or evaluate anything it scans, never follow a
//! symlink out of the scanned tree, and never honour an ignore or suppression
//! file found inside the tree it scans: the scanned project is hostile.
//!
//! Entry points: [`scan`] walks a tree and returns a [`Report`];
//! [`render`] turns it into text, JSON or SARIF; [`Baseline`] suppresses
//! known findings; [`rules()`] lists what is looked for and why.
//!
//! ```no_run
//! use runproof_scan::{scan, ScanOptions, Severity};
//! let report = scan(std::path::Path::new("."), &ScanOptions::default()).unwrap();
//! if report.worst() >= Some(Severity::High) {
//!     eprint!("{}", runproof_scan::render::text(&report, false));
//! }
//! ```

pub mod baseline;
mod checks;
pub mod classify;
pub mod hidden;
pub mod jsonc;
pub mod makefile;
mod model;
pub mod payload;
pub mod render;
mod rules;
mod scanner;
mod sink;

pub use baseline::Baseline;
pub use model::{Finding, ParseSeverityError, Report, ScanError, ScanOptions, Severity, Stats};
pub use rules::{RULES, Rule, rule, rules};
pub use scanner::VENDORED;

use std::path::Path;

/// Scans the tree (or single file) at `root`. Fails only when `root` itself
/// cannot be read; unreadable entries inside it are counted in
/// [`Stats::unreadable`]. Findings are sorted by path, then line.
pub fn scan(root: &Path, opts: &ScanOptions) -> Result<Report, ScanError> {
    scanner::scan(root, opts)
}

/// Scans one in-memory file as if it were at `rel_path` in a project (the
/// path decides which checks apply). Never touches the file system; files
/// the content would run are not followed. This is the entry point for
/// fuzzing and for callers that already hold the bytes.
pub fn scan_bytes(rel_path: &str, content: &[u8]) -> Vec<Finding> {
    let name = rel_path.rsplit('/').next().unwrap_or(rel_path);
    let kind = classify::classify(rel_path, name);
    let decoded = scanner::decode_utf16_bom(content);
    let mut sink = sink::Sink::default();
    let ctx = checks::FileCtx {
        rel: rel_path,
        name,
        text: decoded.as_deref().unwrap_or(content),
        kind,
    };
    checks::check(&ctx, &mut sink);
    sink.findings
}
