//! Errors. Every variant says what failed, on what input, and what to do.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read policy file {}: {source}", file.display())]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("policy file {} is not valid: {message}", file.display())]
    Parse { file: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
}

/// Why a sandbox could not be set up. The command did not run.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// A kernel feature the policy needs is missing or refused.
    #[error("{what}: {detail}\n  hint: {hint}")]
    Unsupported {
        what: String,
        detail: String,
        hint: String,
    },
    /// A step of the set-up failed inside the new namespaces.
    #[error("sandbox set-up failed at `{step}`: {detail}{}", hint.as_ref().map(|h| format!("\n  hint: {h}")).unwrap_or_default())]
    Setup {
        step: String,
        detail: String,
        hint: Option<String>,
    },
    /// The run's gate (the pre-run scan) refused the command, which never
    /// ran; the text says why and what to do.
    #[error("{0}")]
    Refused(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

impl SandboxError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        SandboxError::Io {
            context: context.into(),
            source,
        }
    }
}
