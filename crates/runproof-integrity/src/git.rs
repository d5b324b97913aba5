//! A small, safe runner for the git CLI.
//!
//! Every call uses an argument vector (never a shell), clears inherited `GIT_*`
//! variables that could redirect it to another repository, disables replace
//! objects and grafts (both can hide or invent ancestry), and turns off every
//! config hook that could execute code from a hostile repository's config
//! (fsmonitor, hooks). Batch commands stream: one process for many objects.

use crate::error::{Error, Result};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// How much of git's stderr goes into an error message.
const STDERR_LIMIT: usize = 2000;

/// A repository handle: a git directory and, optionally, its work tree.
#[derive(Debug, Clone)]
pub struct Repo {
    /// Absolute path of the git directory (the per-worktree one for linked worktrees).
    pub git_dir: PathBuf,
    /// Absolute path of the common git directory (objects, refs, config).
    pub common_dir: PathBuf,
    /// The work tree, if any.
    pub work_tree: Option<PathBuf>,
}

impl Repo {
    /// Open the repository that contains `path` (its top directory or its `.git`).
    pub fn open(path: &Path) -> Result<Repo> {
        let abs = std::fs::canonicalize(path).map_err(crate::error::io("opening", path))?;
        let mut cmd = base_command();
        cmd.arg("-C").arg(&abs).args([
            "rev-parse",
            "--path-format=absolute",
            "--git-dir",
            "--git-common-dir",
            "--is-bare-repository",
        ]);
        let out = cmd
            .output()
            .map_err(|source| Error::GitMissing { source })?;
        if !out.status.success() {
            return Err(Error::NotARepo {
                path: path.to_path_buf(),
            });
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let mut lines = text.lines();
        let git_dir = PathBuf::from(lines.next().unwrap_or_default());
        let common_dir = PathBuf::from(lines.next().unwrap_or_default());
        let bare = lines.next() == Some("true");
        let work_tree = if bare { None } else { Some(abs) };
        Ok(Repo {
            git_dir,
            common_dir,
            work_tree,
        })
    }

    /// A repository handle for a git directory we created ourselves.
    pub(crate) fn from_parts(git_dir: PathBuf, work_tree: Option<PathBuf>) -> Repo {
        Repo {
            common_dir: git_dir.clone(),
            git_dir,
            work_tree,
        }
    }

    /// A git command bound to this repository.
    pub fn command(&self) -> Command {
        let mut cmd = base_command();
        cmd.arg(format!("--git-dir={}", self.git_dir.display()));
        if let Some(wt) = &self.work_tree {
            cmd.arg(format!("--work-tree={}", wt.display()));
        }
        cmd
    }

    fn describe(&self) -> PathBuf {
        self.work_tree
            .clone()
            .unwrap_or_else(|| self.git_dir.clone())
    }

    fn fail(&self, args: &[&str], stderr: &[u8]) -> Error {
        let mut s = String::from_utf8_lossy(stderr).trim().to_string();
        truncate(&mut s, STDERR_LIMIT);
        Error::Git {
            args: args.join(" "),
            repo: self.describe(),
            stderr: s,
        }
    }

    /// Run git with `args`, return stdout. Fails on a non-zero exit.
    pub fn run(&self, args: &[&str]) -> Result<Vec<u8>> {
        let out = self
            .command()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|source| Error::GitMissing { source })?;
        if !out.status.success() {
            return Err(self.fail(args, &out.stderr));
        }
        Ok(out.stdout)
    }

    /// Run git, return stdout or `None` when git exits non-zero (e.g. "no such ref").
    pub fn try_run(&self, args: &[&str]) -> Result<Option<Vec<u8>>> {
        let out = self
            .command()
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .map_err(|source| Error::GitMissing { source })?;
        Ok(out.status.success().then_some(out.stdout))
    }

    /// Run git feeding `input` on stdin; return stdout.
    pub fn run_with_input(&self, args: &[&str], input: Vec<u8>) -> Result<Vec<u8>> {
        let mut child = self.spawn(args)?;
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
        let out = child
            .wait_with_output()
            .map_err(|source| Error::GitMissing { source })?;
        let _ = writer.join();
        if !out.status.success() {
            return Err(self.fail(args, &out.stderr));
        }
        Ok(out.stdout)
    }

    fn spawn(&self, args: &[&str]) -> Result<Child> {
        self.command()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| Error::GitMissing { source })
    }

    /// Stream stdout of git line by line (without the newline) into `f`.
    pub fn for_each_line(&self, args: &[&str], mut f: impl FnMut(&[u8])) -> Result<()> {
        let mut child = self
            .command()
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| Error::GitMissing { source })?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let err_reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = (&mut stderr).take(64 * 1024).read_to_end(&mut buf);
            let _ = std::io::copy(&mut stderr, &mut std::io::sink());
            buf
        });
        let mut reader = BufReader::with_capacity(1 << 16, stdout);
        let mut line = Vec::with_capacity(128);
        loop {
            line.clear();
            let n = reader
                .read_until(b'\n', &mut line)
                .map_err(crate::error::io("reading git output of", self.describe()))?;
            if n == 0 {
                break;
            }
            if line.last() == Some(&b'\n') {
                line.pop();
            }
            f(&line);
        }
        let status = child
            .wait()
            .map_err(|source| Error::GitMissing { source })?;
        let err = err_reader.join().unwrap_or_default();
        if !status.success() {
            return Err(self.fail(args, &err));
        }
        Ok(())
    }

    /// Read objects in one `git cat-file --batch` process. `names` may be object
    /// ids or `rev:path` expressions. `f` gets (name, type, content) for each
    /// object found, in order; missing objects are skipped. Objects larger than
    /// `max_size` are reported with empty content.
    pub fn cat_file_batch(
        &self,
        names: Vec<String>,
        max_size: u64,
        mut f: impl FnMut(&str, &str, &[u8]),
    ) -> Result<()> {
        if names.is_empty() {
            return Ok(());
        }
        // Large objects are skipped by asking for their size first.
        let args = ["cat-file", "--batch"];
        let mut child = self.spawn(&args)?;
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let input: Vec<u8> = names
            .iter()
            .filter(|n| !n.contains('\n'))
            .flat_map(|n| n.bytes().chain(std::iter::once(b'\n')))
            .collect();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
        let err_reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = (&mut stderr).take(64 * 1024).read_to_end(&mut buf);
            buf
        });
        let mut reader = BufReader::with_capacity(1 << 16, stdout);
        let mut header = Vec::new();
        let mut content = Vec::new();
        let mut names_iter = names.iter().filter(|n| !n.contains('\n'));
        loop {
            header.clear();
            let n = reader
                .read_until(b'\n', &mut header)
                .map_err(crate::error::io(
                    "reading git cat-file output of",
                    self.describe(),
                ))?;
            if n == 0 {
                break;
            }
            let name = names_iter.next().map(String::as_str).unwrap_or("");
            let h = String::from_utf8_lossy(&header);
            let mut parts = h.split_whitespace();
            let _oid = parts.next();
            let kind = parts.next().unwrap_or("missing").to_string();
            if kind == "missing" || kind == "ambiguous" {
                continue;
            }
            let size: u64 = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
            content.clear();
            if size > max_size {
                std::io::copy(&mut (&mut reader).take(size + 1), &mut std::io::sink()).map_err(
                    crate::error::io("reading git cat-file output of", self.describe()),
                )?;
                f(name, &kind, &[]);
                continue;
            }
            (&mut reader)
                .take(size + 1)
                .read_to_end(&mut content)
                .map_err(crate::error::io(
                    "reading git cat-file output of",
                    self.describe(),
                ))?;
            content.pop(); // the trailing newline after each object
            f(name, &kind, &content);
        }
        let _ = writer.join();
        let status = child
            .wait()
            .map_err(|source| Error::GitMissing { source })?;
        let err = err_reader.join().unwrap_or_default();
        if !status.success() {
            return Err(self.fail(&args, &err));
        }
        Ok(())
    }

    /// Types of many objects in one `git cat-file --batch-check` process:
    /// `(id, type)` for each id found, in input order.
    pub fn object_types(&self, ids: &[String]) -> Result<Vec<(String, String)>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut input = Vec::with_capacity(ids.len() * 41);
        for id in ids.iter().filter(|i| !i.contains('\n')) {
            input.extend_from_slice(id.as_bytes());
            input.push(b'\n');
        }
        let out = self.run_with_input(
            &["cat-file", "--batch-check=%(objectname) %(objecttype)"],
            input,
        )?;
        Ok(String::from_utf8_lossy(&out)
            .lines()
            .filter_map(|l| {
                let (id, ty) = l.split_once(' ')?;
                (ty != "missing" && ty != "ambiguous").then(|| (id.to_string(), ty.to_string()))
            })
            .collect())
    }

    /// Resolve `rev` to a full commit id, or `None` if it is not a commit here.
    pub fn resolve_commit(&self, rev: &str) -> Result<Option<String>> {
        if rev.starts_with('-') || rev.is_empty() || rev.len() > 256 {
            return Ok(None);
        }
        let spec = format!("{rev}^{{commit}}");
        Ok(self
            .try_run(&[
                "rev-parse",
                "--verify",
                "--quiet",
                "--end-of-options",
                &spec,
            ])?
            .map(|o| String::from_utf8_lossy(&o).trim().to_string())
            .filter(|s| !s.is_empty()))
    }

    /// The hash length in hex digits (40 for SHA-1, 64 for SHA-256).
    pub fn hex_len(&self) -> Result<usize> {
        let out = self.try_run(&["rev-parse", "--show-object-format"])?;
        Ok(
            match out
                .as_deref()
                .map(|o| String::from_utf8_lossy(o).trim().to_string())
            {
                Some(f) if f == "sha256" => 64,
                _ => 40,
            },
        )
    }
}

/// `git` with the safety options every call needs.
pub(crate) fn base_command() -> Command {
    let mut cmd = Command::new("git");
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("GIT_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_NO_REPLACE_OBJECTS", "1")
        .env("GIT_GRAFT_FILE", "/nonexistent/runproof-no-grafts")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_OPTIONAL_LOCKS", "0")
        .env("GIT_PAGER", "cat")
        .env("LC_ALL", "C")
        .args([
            "--no-pager",
            "-c",
            "core.fsmonitor=false",
            "-c",
            "core.hooksPath=/dev/null",
            "-c",
            "safe.directory=*",
            "-c",
            "protocol.allow=never",
            "-c",
            "core.logAllRefUpdates=false",
            "-c",
            "gc.auto=0",
            "-c",
            "maintenance.auto=false",
        ]);
    cmd
}

/// Cut `s` to at most `max` bytes on a character boundary, marking the cut.
pub(crate) fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
}

/// Is `s` a plausible (abbreviated) hex object id?
pub(crate) fn is_hex_id(s: &str) -> bool {
    (7..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit())
}
