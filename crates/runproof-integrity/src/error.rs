//! Error type for the integrity crate. Every variant names the input that was
//! wrong and says what to do about it.

use std::path::PathBuf;

/// Everything that can go wrong while preparing, checking or auditing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{action} {path}: {source}")]
    Io {
        /// What we were doing ("reading", "creating", ...).
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// `git` could not be started at all.
    #[error("could not run git ({source}); install git 2.31 or later and make sure it is on PATH")]
    GitMissing {
        /// The underlying error.
        source: std::io::Error,
    },
    /// A git command failed.
    #[error("git {args} failed in {repo}: {stderr}")]
    Git {
        /// The arguments (without our safety options), for the message.
        args: String,
        /// The repository the command ran in.
        repo: PathBuf,
        /// The first part of git's error output.
        stderr: String,
    },
    /// The base commit does not exist in the repository.
    #[error(
        "base commit {base} is not a commit in {repo}; check the task's base_commit or fetch it into the repository first (a workspace prepared with --no-history is checked with --base HEAD)"
    )]
    BaseNotFound {
        /// The base commit as given.
        base: String,
        /// The repository searched.
        repo: PathBuf,
    },
    /// A path is not a git repository.
    #[error("{path} is not a git repository (no .git found); pass the repository's top directory")]
    NotARepo {
        /// The path given.
        path: PathBuf,
    },
    /// The output directory already has content.
    #[error(
        "output directory {path} exists and is not empty; choose a new directory (prepare never overwrites)"
    )]
    OutputNotEmpty {
        /// The output directory.
        path: PathBuf,
    },
    /// A task, trajectory or other input was malformed.
    #[error("invalid {what} in {path}: {detail}")]
    Invalid {
        /// What kind of input ("task JSON", "trajectory", ...).
        what: &'static str,
        /// Where it came from.
        path: PathBuf,
        /// What was wrong, and what to do.
        detail: String,
    },
    /// An input exceeded a safety bound.
    #[error("{what} {path} is too large ({size} bytes, limit {limit}); trim it or raise the limit")]
    TooLarge {
        /// What kind of input.
        what: &'static str,
        /// Where it came from.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The bound.
        limit: u64,
    },
}

/// Shorthand result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io(
    action: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io {
        action,
        path,
        source,
    }
}

/// Read a whole file, refusing anything larger than `limit` bytes.
pub(crate) fn read_bounded(
    path: &std::path::Path,
    what: &'static str,
    limit: u64,
) -> Result<Vec<u8>> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(io("opening", path))?;
    let size = file.metadata().map_err(io("reading", path))?.len();
    if size > limit {
        return Err(Error::TooLarge {
            what,
            path: path.to_path_buf(),
            size,
            limit,
        });
    }
    let mut buf = Vec::with_capacity(size as usize);
    file.take(limit + 1)
        .read_to_end(&mut buf)
        .map_err(io("reading", path))?;
    if buf.len() as u64 > limit {
        return Err(Error::TooLarge {
            what,
            path: path.to_path_buf(),
            size: buf.len() as u64,
            limit,
        });
    }
    Ok(buf)
}
