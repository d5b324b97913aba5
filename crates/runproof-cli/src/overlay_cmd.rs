//! `runproof diff` and `runproof apply`: the copy-on-write workspace of a
//! `runproof run --overlay UPPER_DIR`, shown and written back.

use runproof_sandbox::overlay::{self, ApplyOptions, DiffOptions, Limits, OverlayError};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

pub const DIFF_HELP: &str = "\
Exit status: 0 the diff (or summary) was written; 2 the layer could not be read
(the message says why; nothing was written).

The diff is what `git apply` takes. `.git` directories, fifos, sockets and
devices are left out and named on stderr.";

pub const APPLY_HELP: &str = "\
Exit status: 0 every change was applied; 1 some were skipped (protected paths:
git hooks and config, shell start-up files, agent and editor config) or refused
(symlinks out of the workspace, special files, too large), each listed; 2 the
layer could not be read, and nothing was written.

Symlinks inside the workspace are never followed. setuid/setgid bits are
dropped. `.git` (commits made in the sandbox) is applied only with --include-git.";

#[derive(clap::Args)]
pub struct DiffArgs {
    /// The upper directory given to `runproof run --overlay`
    upper: PathBuf,
    /// The workspace the overlay was mounted over [default: current directory]
    #[arg(long, value_name = "DIR")]
    workspace: Option<PathBuf>,
    /// Print "N files changed, +A -D" and the files instead of the diff
    #[arg(long)]
    stat: bool,
    /// Output format: text (the diff, or the summary with --stat) or json (the summary)
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    format: String,
    /// Largest changed file to read, in bytes
    #[arg(long, value_name = "BYTES")]
    max_file_size: Option<u64>,
}

#[derive(clap::Args)]
pub struct ApplyArgs {
    /// The upper directory given to `runproof run --overlay`
    upper: PathBuf,
    /// The workspace to write into [default: current directory]
    #[arg(long, value_name = "DIR")]
    workspace: Option<PathBuf>,
    /// Also apply changes under .git (commits made in the sandbox); hooks and config stay refused
    #[arg(long)]
    include_git: bool,
    /// Output format of the report
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    format: String,
    /// Largest file to write, in bytes
    #[arg(long, value_name = "BYTES")]
    max_file_size: Option<u64>,
}

fn limits(max_file_size: Option<u64>) -> Limits {
    let mut l = Limits::default();
    if let Some(m) = max_file_size {
        l.max_file_bytes = m;
    }
    l
}

fn workspace(w: Option<PathBuf>) -> Result<PathBuf, ExitCode> {
    match w {
        Some(w) => Ok(w),
        None => std::env::current_dir().map_err(|e| {
            eprintln!("runproof: cannot read the current directory: {e}; pass --workspace DIR");
            ExitCode::from(2)
        }),
    }
}

/// Print to stdout; a closed pipe (`| head`) is not an error.
fn emit(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|_| out.flush());
}

fn fail(e: OverlayError) -> ExitCode {
    if let OverlayError::Output(io) = &e
        && io.kind() == std::io::ErrorKind::BrokenPipe
    {
        return ExitCode::SUCCESS;
    }
    eprintln!("runproof: {e}");
    ExitCode::from(2)
}

pub fn diff(a: DiffArgs) -> ExitCode {
    let ws = match workspace(a.workspace) {
        Ok(w) => w,
        Err(c) => return c,
    };
    let limits = limits(a.max_file_size);
    if a.stat || a.format == "json" {
        let s = match overlay::summary(&a.upper, &ws, &limits) {
            Ok(s) => s,
            Err(e) => return fail(e),
        };
        if a.format == "json" {
            emit(&format!("{}\n", s.to_json()));
        } else {
            emit(&s.to_string());
        }
        return ExitCode::SUCCESS;
    }
    let opts = DiffOptions {
        limits,
        ..Default::default()
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let stats = match overlay::diff(&a.upper, &ws, &mut out, &opts) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    if let Err(e) = out.flush() {
        return fail(OverlayError::Output(e));
    }
    if !stats.excluded_git.is_empty() {
        eprintln!(
            "runproof: not in the diff (git metadata): {}",
            stats.excluded_git.join(", ")
        );
    }
    for w in &stats.warnings {
        eprintln!("runproof: warning: {w}");
    }
    let protected: Vec<_> = stats.files.iter().filter(|f| f.protected).collect();
    if !protected.is_empty() {
        eprintln!(
            "runproof: {} change(s) touch protected paths; `runproof apply` will skip them:",
            protected.len()
        );
        for f in protected {
            eprintln!("  {}", f.path);
        }
    }
    ExitCode::SUCCESS
}

pub fn apply(a: ApplyArgs) -> ExitCode {
    let ws = match workspace(a.workspace) {
        Ok(w) => w,
        Err(c) => return c,
    };
    let opts = ApplyOptions {
        limits: limits(a.max_file_size),
        include_git_metadata: a.include_git,
        ..Default::default()
    };
    let report = match overlay::apply(&a.upper, &ws, &opts) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    if a.format == "json" {
        let json = serde_json::to_value(&report).unwrap_or(serde_json::Value::Null);
        emit(&format!("{json}\n"));
    } else {
        emit(&report.to_string());
    }
    if report.is_complete() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
