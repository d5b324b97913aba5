//! Real servers for tests: a `nats-server -js` and a PostgreSQL, each on a
//! loopback port with its data in a temporary directory, in a process group
//! of its own that is killed (and the directory removed) on drop. Starting
//! either fails loudly, with what to install, rather than skipping.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Kills a process group on drop.
struct Group(Child);

impl Drop for Group {
    fn drop(&mut self) {
        let pid = self.0.id();
        // The group id is the child's pid (process_group(0)).
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pid}")])
            .stderr(Stdio::null())
            .status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `nats-server` with JetStream.
pub struct Nats {
    proc: Option<Group>,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl Nats {
    /// Starts `nats-server -js` on a free loopback port.
    pub fn start() -> Result<Nats, String> {
        let dir = tempfile::Builder::new()
            .prefix("rp-nats-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let mut n = Nats {
            proc: None,
            port: 0,
            dir,
        };
        n.spawn(None)?;
        Ok(n)
    }

    fn spawn(&mut self, port: Option<u16>) -> Result<(), String> {
        let port_arg = port.map_or("-1".to_string(), |p| p.to_string());
        let mut c = Command::new("nats-server");
        c.args(["-js", "-a", "127.0.0.1", "-p", &port_arg, "-sd"])
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = c.spawn().map_err(|e| {
            format!("cannot start nats-server: {e}; install it (Debian package nats-server)")
        })?;
        let err = child.stderr.take().ok_or("no stderr")?;
        let g = Group(child);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("Listening for client connections on ").nth(1)
                    && let Some(p) = rest
                        .rsplit(':')
                        .next()
                        .and_then(|p| p.trim().parse::<u16>().ok())
                    && let Some(t) = tx.take()
                {
                    let _ = t.send(Ok(p));
                }
                if line.contains("[FTL]")
                    && let Some(t) = tx.take()
                {
                    let _ = t.send(Err(line.clone()));
                }
            }
            if let Some(t) = tx.take() {
                let _ = t.send(Err("nats-server exited".to_string()));
            }
        });
        let p = rx
            .recv_timeout(Duration::from_secs(60))
            .map_err(|_| "nats-server did not start listening within 60 s".to_string())??;
        self.port = p;
        self.proc = Some(g);
        Ok(())
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL) and starts it again on the same port and
    /// store: what JetStream had stored is still there.
    pub fn restart(&mut self) -> Result<(), String> {
        self.proc = None;
        let port = self.port;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.spawn(Some(port)) {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }
}

/// A PostgreSQL server (initdb into a temporary directory, trust auth for
/// user `postgres` on 127.0.0.1). As root it runs as `nobody`, since
/// PostgreSQL refuses to run as root.
pub struct Postgres {
    _proc: Group,
    pub port: u16,
    _dir: tempfile::TempDir,
}

fn pg_bin(name: &str) -> Result<PathBuf, String> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| rd.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    versions.sort();
    versions.reverse();
    // The server binaries of the newest version first: PATH may hold only
    // the client wrappers.
    versions.append(&mut dirs);
    versions
        .into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!("cannot find PostgreSQL's `{name}`; install the Debian package postgresql")
        })
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

impl Postgres {
    pub fn start() -> Result<Postgres, String> {
        const NOBODY: u32 = 65534;
        let dir = tempfile::Builder::new()
            .prefix("rp-pg-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let root = is_root();
        let data = dir.path().join("data");
        let sock = dir.path().join("sock");
        std::fs::create_dir(&sock).map_err(|e| e.to_string())?;
        let own = |p: &Path| -> Result<(), String> {
            if root {
                std::os::unix::fs::chown(p, Some(NOBODY), Some(NOBODY))
                    .map_err(|e| format!("chown {}: {e}", p.display()))?;
            }
            Ok(())
        };
        own(dir.path())?;
        own(&sock)?;
        let as_user = |c: &mut Command| {
            if root {
                c.uid(NOBODY).gid(NOBODY);
            }
            c.env("LC_ALL", "C").current_dir(dir.path());
        };
        let mut init = Command::new(pg_bin("initdb")?);
        init.args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
            "-D",
        ])
        .arg(&data)
        .stdin(Stdio::null());
        as_user(&mut init);
        let o = init.output().map_err(|e| format!("initdb: {e}"))?;
        if !o.status.success() {
            return Err(format!(
                "initdb failed: {}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ));
        }
        let port = free_port()?;
        let mut pg = Command::new(pg_bin("postgres")?);
        pg.arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-k"])
            .arg(&sock)
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "max_connections=40",
                // Shared memory segments in the data directory, so a killed
                // test server leaves nothing in /dev/shm.
                "-c",
                "dynamic_shared_memory_type=mmap",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        as_user(&mut pg);
        let child = pg
            .spawn()
            .map_err(|e| format!("cannot start postgres: {e}"))?;
        let mut g = Group(child);
        let ready = pg_bin("pg_isready")?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ok = Command::new(&ready)
                .args([
                    "-q",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port.to_string(),
                    "-U",
                    "postgres",
                ])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                break;
            }
            if let Ok(Some(st)) = g.0.try_wait() {
                return Err(format!("postgres exited before it was ready: {st}"));
            }
            if Instant::now() > deadline {
                return Err("postgres was not ready within 60 s".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(Postgres {
            _proc: g,
            port,
            _dir: dir,
        })
    }

    /// A URL for a database on this server (`postgres` always exists).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates a database (for tests that need a fresh one each).
    pub fn create_db(&self, name: &str) -> Result<String, String> {
        let o = Command::new(pg_bin("psql")?)
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                &format!("CREATE DATABASE \"{name}\""),
            ])
            .output()
            .map_err(|e| format!("psql: {e}"))?;
        if !o.status.success() {
            return Err(String::from_utf8_lossy(&o.stderr).into_owned());
        }
        Ok(self.url(name))
    }
}

/// An HTTP response read by [`request`].
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// The body as JSON (`null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request over a fresh connection (`Connection: close`), with
/// `Host: ADDR` unless `headers` name another. Bounded by a 120 s timeout.
pub fn request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<HttpResponse, String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(120)))
        .map_err(|e| e.to_string())?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        req.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    if let Some(b) = body {
        // The server may answer (413) and close before reading it all.
        let _ = s.write_all(b);
    }
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no HTTP response head in {} bytes", raw.len()))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad status line in {head:?}"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok(HttpResponse {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    })
}

/// Polls `f` every 100 ms until it returns `Some`, failing after `limit`.
pub fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(x) = f() {
            return x;
        }
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
