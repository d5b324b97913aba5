//! Environments and workspaces.
//!
//! An *environment* is a repository checked out at `base_commit` with the
//! task's `setup` commands run in it. It is built once per environment key
//! (repository, base commit, setup commands) and cached; each instance then
//! gets a fresh writable *workspace* made from it.
//!
//! [`Workspaces`] is the seam for the sandbox: today [`CopyWorkspaces`] keeps
//! the environment as a directory and copies it per instance (`cp -a
//! --reflink=auto`); a copy-on-write overlay layer can implement the same trait.
//!
//! Layout of an environment directory: `repo/` (the checkout) and `home/`
//! (`$HOME` during setup, so caches that setup fills travel with it).

use crate::model::{RepoSource, truncate};
use crate::runner::{RunRequest, TestRunner, base_env};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Bump when the layout of a cached environment changes.
const ENV_FORMAT: &str = "runproof-env-v1";
const READY: &str = ".runproof-ready";

/// What defines an environment.
#[derive(Debug, Clone)]
pub struct EnvSpec<'a> {
    pub source: &'a RepoSource,
    pub base_commit: &'a str,
    pub setup: &'a [String],
    /// Timeout for each setup command (and the clone).
    pub timeout: Duration,
}

impl EnvSpec<'_> {
    /// Stable key: a hash of the format version, source, base commit and setup.
    pub fn key(&self) -> String {
        let mut h = Sha256::new();
        h.update(ENV_FORMAT);
        h.update([0]);
        match self.source {
            RepoSource::Path(p) => {
                let p = p.canonicalize().unwrap_or_else(|_| p.clone());
                h.update(b"path\0");
                h.update(p.as_os_str().as_encoded_bytes());
            }
            RepoSource::Url(u) => {
                h.update(b"url\0");
                h.update(u.as_bytes());
            }
        }
        h.update([0]);
        h.update(self.base_commit.as_bytes());
        for s in self.setup {
            h.update([0]);
            h.update(s.as_bytes());
        }
        let d = h.finalize();
        d.iter().take(10).map(|b| format!("{b:02x}")).collect()
    }
}

/// A ready environment.
#[derive(Debug, Clone)]
pub struct Env {
    pub key: String,
    /// Directory holding `repo/` and `home/`.
    pub dir: PathBuf,
    /// This call built it (false: it came from the cache).
    pub built: bool,
    pub elapsed: Duration,
}

/// A fresh workspace for one instance. Removed on drop unless kept.
#[derive(Debug)]
pub struct Workspace {
    /// Directory holding `repo/` and `home/`.
    pub dir: PathBuf,
    pub keep: bool,
}

impl Workspace {
    pub fn repo(&self) -> PathBuf {
        self.dir.join("repo")
    }
    pub fn home(&self) -> PathBuf {
        self.dir.join("home")
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Environment could not be prepared.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EnvError {
    #[error("cannot fetch the repository {src}: {msg}; check `repo_path`/`repo_url`")]
    Fetch { src: String, msg: String },
    #[error("base_commit `{commit}` is not in {src}: {msg}; check the task's `base_commit`")]
    BadCommit {
        commit: String,
        src: String,
        msg: String,
    },
    #[error("setup command `{cmd}` failed ({how}); its output is in {}", log.display())]
    Setup {
        cmd: String,
        how: String,
        log: PathBuf,
    },
    #[error("{what}: {msg}")]
    Io { what: String, msg: String },
}

/// The seam for environment layers (copy today, overlay with the sandbox).
pub trait Workspaces: Send + Sync {
    /// Returns the environment for `spec`, building it (clone, checkout,
    /// setup via `runner`) only if it is not cached yet. Concurrent callers
    /// with the same key wait for one build.
    fn environment(&self, spec: &EnvSpec<'_>, runner: &dyn TestRunner) -> Result<Env, EnvError>;
    /// Makes a fresh workspace from `env` at `dest` (which must not exist).
    fn workspace(&self, env: &Env, dest: &Path, keep: bool) -> Result<Workspace, EnvError>;
}

/// Environments as cached directories under `cache/envs/<key>`; workspaces as copies.
pub struct CopyWorkspaces {
    cache: PathBuf,
    locks: Mutex<HashMap<String, Arc<Mutex<Option<EnvError>>>>>,
}

impl CopyWorkspaces {
    pub fn new(cache: impl Into<PathBuf>) -> Self {
        CopyWorkspaces {
            cache: cache.into(),
            locks: Mutex::new(HashMap::new()),
        }
    }
    pub fn env_dir(&self, key: &str) -> PathBuf {
        self.cache.join("envs").join(key)
    }
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> EnvError {
    let what = what.into();
    move |e| EnvError::Io {
        what,
        msg: e.to_string(),
    }
}

/// git with no user or system configuration, no hooks, no prompts.
pub(crate) fn git(dir: &Path) -> Command {
    let mut c = Command::new("git");
    c.current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .args([
            "-c",
            "core.hooksPath=/dev/null",
            "-c",
            "user.name=runproof",
            "-c",
            "user.email=runproof@localhost",
            "-c",
            "advice.detachedHead=false",
        ]);
    c
}

fn out_msg(o: &std::process::Output) -> String {
    let mut s = String::from_utf8_lossy(&o.stderr).into_owned();
    s.push_str(&String::from_utf8_lossy(&o.stdout));
    truncate(s.trim(), 1000)
}

impl Workspaces for CopyWorkspaces {
    fn environment(&self, spec: &EnvSpec<'_>, runner: &dyn TestRunner) -> Result<Env, EnvError> {
        let start = Instant::now();
        let key = spec.key();
        let dir = self.env_dir(&key);
        if dir.join(READY).exists() {
            return Ok(Env {
                key,
                dir,
                built: false,
                elapsed: start.elapsed(),
            });
        }
        let lock = {
            let mut m = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            m.entry(key.clone()).or_default().clone()
        };
        let mut failed = lock.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = failed.as_ref() {
            return Err(e.clone());
        }
        if dir.join(READY).exists() {
            return Ok(Env {
                key,
                dir,
                built: false,
                elapsed: start.elapsed(),
            });
        }
        match build_env(spec, &dir, runner) {
            Ok(()) => Ok(Env {
                key,
                dir,
                built: true,
                elapsed: start.elapsed(),
            }),
            Err(e) => {
                *failed = Some(e.clone());
                Err(e)
            }
        }
    }

    fn workspace(&self, env: &Env, dest: &Path, keep: bool) -> Result<Workspace, EnvError> {
        if dest.exists() {
            std::fs::remove_dir_all(dest)
                .map_err(io(format!("cannot clear old workspace {}", dest.display())))?;
        }
        if let Some(p) = dest.parent() {
            std::fs::create_dir_all(p).map_err(io(format!("cannot create {}", p.display())))?;
        }
        let o = Command::new("cp")
            .args(["-a", "--reflink=auto"])
            .arg(&env.dir)
            .arg(dest)
            .output()
            .map_err(io("cannot run cp"))?;
        if !o.status.success() {
            return Err(EnvError::Io {
                what: format!("cannot copy environment to {}", dest.display()),
                msg: out_msg(&o),
            });
        }
        let _ = std::fs::remove_file(dest.join(READY));
        Ok(Workspace {
            dir: dest.to_path_buf(),
            keep,
        })
    }
}

fn build_env(spec: &EnvSpec<'_>, dir: &Path, runner: &dyn TestRunner) -> Result<(), EnvError> {
    let parent = dir.parent().expect("env dir has a parent");
    std::fs::create_dir_all(parent)
        .map_err(io(format!("cannot create cache {}", parent.display())))?;
    let tmp = parent.join(format!(
        ".tmp-{}-{}-{:?}",
        dir.file_name().and_then(|n| n.to_str()).unwrap_or("env"),
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(tmp.join("home"))
        .map_err(io(format!("cannot create {}", tmp.display())))?;
    let res = populate(spec, &tmp, runner);
    if let Err(e) = res {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    std::fs::write(tmp.join(READY), spec.key()).map_err(io("cannot mark environment ready"))?;
    match std::fs::rename(&tmp, dir) {
        Ok(()) => Ok(()),
        // Another process finished the same environment first: use theirs.
        Err(_) if dir.join(READY).exists() => {
            let _ = std::fs::remove_dir_all(&tmp);
            Ok(())
        }
        Err(e) => Err(io(format!(
            "cannot move environment into {}",
            dir.display()
        ))(e)),
    }
}

fn populate(spec: &EnvSpec<'_>, tmp: &Path, runner: &dyn TestRunner) -> Result<(), EnvError> {
    let repo = tmp.join("repo");
    let src_name = match spec.source {
        RepoSource::Path(p) => p.display().to_string(),
        RepoSource::Url(u) => u.clone(),
    };
    match spec.source {
        RepoSource::Path(p) => {
            if !p.join(".git").exists() && !p.join("HEAD").exists() {
                return Err(EnvError::Fetch {
                    src: src_name,
                    msg: "not a git repository (no .git); for the examples run examples/build.sh first".into(),
                });
            }
            let o = git(tmp)
                .args(["clone", "-q", "--no-checkout", "--no-hardlinks", "--"])
                .arg(p)
                .arg(&repo)
                .output()
                .map_err(io("cannot run git"))?;
            if !o.status.success() {
                return Err(EnvError::Fetch {
                    src: src_name,
                    msg: out_msg(&o),
                });
            }
        }
        RepoSource::Url(u) => {
            let mut rq = RunRequest::shell(
                tmp.to_path_buf(),
                "",
                base_env(&tmp.join("home")),
                spec.timeout,
            );
            rq.argv = vec![
                "git".into(),
                "clone".into(),
                "-q".into(),
                "--no-checkout".into(),
                "--".into(),
                u.clone(),
                repo.to_string_lossy().into_owned(),
            ];
            rq.network = true;
            let r = runner.run(&rq).map_err(|e| EnvError::Fetch {
                src: src_name.clone(),
                msg: e.to_string(),
            })?;
            if !r.success() {
                return Err(EnvError::Fetch {
                    src: src_name,
                    msg: truncate(String::from_utf8_lossy(&r.stderr).trim(), 1000),
                });
            }
        }
    }
    let o = git(&repo)
        .args(["checkout", "-q", "--detach", spec.base_commit, "--"])
        .output()
        .map_err(io("cannot run git"))?;
    if !o.status.success() {
        return Err(EnvError::BadCommit {
            commit: spec.base_commit.to_string(),
            src: src_name,
            msg: out_msg(&o),
        });
    }
    // The graded workspace must not be able to reach the source's other
    // history through a remote (the fix may be a later commit).
    let _ = git(&repo).args(["remote", "remove", "origin"]).output();
    let log_path = tmp.with_extension("setup.log");
    let mut log = Vec::new();
    for cmd in spec.setup {
        let mut rq =
            RunRequest::shell(repo.clone(), cmd, base_env(&tmp.join("home")), spec.timeout);
        rq.network = true;
        rq.writable.push(tmp.join("home"));
        let r = runner.run(&rq).map_err(|e| EnvError::Setup {
            cmd: truncate(cmd, 200),
            how: e.to_string(),
            log: log_path.clone(),
        })?;
        log.extend_from_slice(format!("$ {cmd}\n").as_bytes());
        log.extend_from_slice(&r.combined());
        log.extend_from_slice(format!("[{}]\n", r.describe()).as_bytes());
        if !r.success() {
            let final_log = tmp
                .parent()
                .unwrap_or(tmp)
                .join(format!("{}.setup-failed.log", spec.key()));
            let _ = std::fs::write(&final_log, &log);
            return Err(EnvError::Setup {
                cmd: truncate(cmd, 200),
                how: r.describe(),
                log: final_log,
            });
        }
    }
    std::fs::write(tmp.join("setup.log"), &log).map_err(io("cannot write setup log"))?;
    Ok(())
}
