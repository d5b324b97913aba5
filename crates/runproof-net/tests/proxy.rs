//! The egress proxy against real sockets, a real upstream, curl and Python.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use runproof_net::{EgressPolicy, MemoryAudit, proxy};

const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// A tiny HTTP/1.1 upstream on 127.0.0.1 that records each request head and
/// answers with a fixed body; a raw byte echo when the first line is `ECHO`.
struct Upstream {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
}

fn upstream() -> Upstream {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let h2 = heads.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            let heads = h2.clone();
            std::thread::spawn(move || {
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut buf = Vec::new();
                let mut tmp = [0u8; 4096];
                loop {
                    if buf.starts_with(b"ECHO") {
                        // Echo everything, forever.
                        s.write_all(&buf).unwrap();
                        loop {
                            match s.read(&mut tmp) {
                                Ok(0) | Err(_) => return,
                                Ok(n) => s.write_all(&tmp[..n]).unwrap(),
                            }
                        }
                    }
                    if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_string();
                        buf.drain(..end + 4);
                        heads.lock().unwrap().push(head);
                        let body = "hello from upstream";
                        let _ = write!(
                            s,
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: keep-alive\r\n\r\n{}",
                            body.len(),
                            body
                        );
                        continue;
                    }
                    match s.read(&mut tmp) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&tmp[..n]),
                    }
                }
            });
        }
    });
    Upstream { addr, heads }
}

struct Running {
    addr: SocketAddr,
    audit: Arc<MemoryAudit>,
    _rt: tokio::runtime::Runtime,
}

fn start_proxy(policy: EgressPolicy) -> Running {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let audit = Arc::new(MemoryAudit::default());
    rt.spawn(proxy::serve(l, Arc::new(policy), audit.clone()));
    Running {
        addr,
        audit,
        _rt: rt,
    }
}

fn opened(rules: &[&str]) -> EgressPolicy {
    EgressPolicy::from_rules(rules)
        .unwrap()
        .allow_private_addresses_for_tests(&[LOCAL])
}

fn read_head(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    while !out.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).unwrap() == 0 {
            break;
        }
        out.push(b[0]);
    }
    String::from_utf8_lossy(&out).to_string()
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Wait until the audit log has `n` events (they are written when a
/// connection or body ends, slightly after the client saw its answer).
fn events(p: &Running, n: usize) -> Vec<runproof_net::AuditEvent> {
    for _ in 0..200 {
        let e = p.audit.events();
        if e.len() >= n {
            return e;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("expected {n} audit events, got {:?}", p.audit.events());
}

#[test]
fn connect_tunnel_to_allowed_host_echoes_and_is_audited() {
    let up = upstream();
    let p = start_proxy(opened(&["localhost"]));
    let mut s = connect(p.addr);
    write!(
        s,
        "CONNECT localhost:{} HTTP/1.1\r\nHost: localhost:{}\r\n\r\n",
        up.addr.port(),
        up.addr.port()
    )
    .unwrap();
    let head = read_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    s.write_all(b"ECHO ping").unwrap();
    let mut got = [0u8; 9];
    s.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ECHO ping");
    drop(s);
    let ev = &events(&p, 1)[0];
    assert_eq!(ev.protocol, "connect");
    assert_eq!(ev.decision, "allowed");
    assert_eq!(ev.host.as_deref(), Some("localhost"));
    assert_eq!(ev.port, Some(up.addr.port()));
    assert_eq!(ev.resolved.as_deref(), Some(up.addr.to_string().as_str()));
    assert_eq!((ev.bytes_up, ev.bytes_down), (9, 9));
    assert_eq!(ev.method.as_deref(), Some("CONNECT"));
}

#[test]
fn default_policy_refuses_allowed_name_that_resolves_to_loopback() {
    // "localhost" is allowed by name, but it resolves to 127.0.0.1: the
    // address guard (on by default) must refuse it, as for DNS rebinding.
    let up = upstream();
    let p = start_proxy(EgressPolicy::from_rules(&["localhost", "127.0.0.1"]).unwrap());
    let mut s = connect(p.addr);
    write!(s, "CONNECT localhost:{} HTTP/1.1\r\n\r\n", up.addr.port()).unwrap();
    let head = read_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    // IP literal allowed by rule, still refused by the guard.
    let mut s = connect(p.addr);
    write!(
        s,
        "GET http://127.0.0.1:{}/x HTTP/1.1\r\nHost: x\r\n\r\n",
        up.addr.port()
    )
    .unwrap();
    let head = read_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    // SOCKS5 by name, same refusal (reply code 2: not allowed by ruleset).
    let reply = socks_connect(p.addr, b"localhost", up.addr.port());
    assert_eq!(reply[1], 0x02);
    let evs = events(&p, 3);
    for ev in &evs {
        assert_eq!(ev.decision, "denied");
        assert!(ev.reason.as_deref().unwrap().contains("loopback"), "{ev:?}");
    }
    assert!(
        up.heads.lock().unwrap().is_empty(),
        "nothing may reach the upstream"
    );
}

#[test]
fn denied_host_is_refused_and_never_resolved() {
    let p = start_proxy(opened(&["localhost", "!bad.localhost"]));
    let mut s = connect(p.addr);
    // A name that cannot resolve: a resolution attempt would say "cannot
    // resolve"; a policy refusal says "not in the allow list".
    s.write_all(b"CONNECT exfil.data.invalid:443 HTTP/1.1\r\n\r\n")
        .unwrap();
    let head = read_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    let mut s = connect(p.addr);
    s.write_all(b"CONNECT bad.localhost:443 HTTP/1.1\r\n\r\n")
        .unwrap();
    assert!(read_head(&mut s).starts_with("HTTP/1.1 403"));
    let evs = events(&p, 2);
    assert!(
        evs[0]
            .reason
            .as_deref()
            .unwrap()
            .contains("not in the allow list")
    );
    assert!(evs[0].resolved.is_none());
    assert!(evs[1].reason.as_deref().unwrap().contains("deny rule"));
}

#[test]
fn plain_http_forward_rewrites_request_and_checks_every_request_on_a_connection() {
    let up = upstream();
    let p = start_proxy(opened(&["localhost"]));
    let mut s = connect(p.addr);
    write!(
        s,
        "GET http://localhost:{}/path?q=1 HTTP/1.1\r\nHost: evil.example\r\nProxy-Authorization: Basic c2VjcmV0\r\nUser-Agent: t\r\n\r\n",
        up.addr.port()
    )
    .unwrap();
    let head = read_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut body = [0u8; 19];
    s.read_exact(&mut body).unwrap();
    assert_eq!(&body, b"hello from upstream");
    // Second request on the same client connection, to a host not allowed.
    s.write_all(b"GET http://other.invalid/ HTTP/1.1\r\nHost: other.invalid\r\n\r\n")
        .unwrap();
    let head = read_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    let heads = up.heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 1);
    let h = heads[0].to_ascii_lowercase();
    assert!(h.starts_with("get /path?q=1 http/1.1"), "{h}");
    assert!(
        h.contains(&format!("host: localhost:{}", up.addr.port())),
        "{h}"
    );
    assert!(!h.contains("proxy-authorization"), "{h}");
    let evs = events(&p, 2);
    let ok = evs.iter().find(|e| e.decision == "allowed").unwrap();
    assert_eq!(ok.protocol, "http");
    assert_eq!(ok.method.as_deref(), Some("GET"));
    assert_eq!(
        ok.url.as_deref(),
        Some(format!("http://localhost:{}/path?q=1", up.addr.port()).as_str())
    );
    assert!(ok.bytes_up > 0 && ok.bytes_down > 19, "{ok:?}");
}

fn socks_connect(proxy: SocketAddr, host: &[u8], port: u16) -> Vec<u8> {
    let mut s = connect(proxy);
    s.write_all(&[5, 1, 0]).unwrap();
    let mut g = [0u8; 2];
    s.read_exact(&mut g).unwrap();
    assert_eq!(g, [5, 0]);
    let mut req = vec![5, 1, 0, 3, host.len() as u8];
    req.extend_from_slice(host);
    req.extend_from_slice(&port.to_be_bytes());
    s.write_all(&req).unwrap();
    let mut r = [0u8; 10];
    s.read_exact(&mut r).unwrap();
    r.to_vec()
}

#[test]
fn socks5_by_name_and_ip_and_refusals() {
    let up = upstream();
    let p = start_proxy(opened(&["localhost", "127.0.0.1"]));
    // By name, then tunnel data.
    let mut s = connect(p.addr);
    let mut hello = vec![5, 1, 0, 5, 1, 0, 3, 9];
    hello.extend_from_slice(b"localhost");
    hello.extend_from_slice(&up.addr.port().to_be_bytes());
    // Greeting and request pipelined in one write.
    s.write_all(&hello).unwrap();
    let mut r = [0u8; 12];
    s.read_exact(&mut r).unwrap();
    assert_eq!(&r[..2], &[5, 0]);
    assert_eq!(r[3], 0, "success reply: {r:?}");
    s.write_all(b"ECHO socks").unwrap();
    let mut got = [0u8; 10];
    s.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ECHO socks");
    drop(s);
    // By IPv4 address.
    let mut s = connect(p.addr);
    s.write_all(&[5, 1, 0]).unwrap();
    let mut g = [0u8; 2];
    s.read_exact(&mut g).unwrap();
    let mut req = vec![5, 1, 0, 1, 127, 0, 0, 1];
    req.extend_from_slice(&up.addr.port().to_be_bytes());
    s.write_all(&req).unwrap();
    let mut r = [0u8; 10];
    s.read_exact(&mut r).unwrap();
    assert_eq!(r[1], 0);
    drop(s);
    // Not allowed by name.
    assert_eq!(socks_connect(p.addr, b"example.com", 443)[1], 0x02);
    // BIND is not served.
    let mut s = connect(p.addr);
    s.write_all(&[5, 1, 0]).unwrap();
    s.read_exact(&mut g).unwrap();
    s.write_all(&[5, 2, 0, 1, 127, 0, 0, 1, 0, 80]).unwrap();
    s.read_exact(&mut r).unwrap();
    assert_eq!(r[1], 0x07);
    // Username/password only: refused with 0xff.
    let mut s = connect(p.addr);
    s.write_all(&[5, 1, 2]).unwrap();
    s.read_exact(&mut g).unwrap();
    assert_eq!(g, [5, 0xff]);
    let evs = events(&p, 5);
    let allowed: Vec<_> = evs.iter().filter(|e| e.decision == "allowed").collect();
    assert_eq!(allowed.len(), 2);
    assert!(
        allowed
            .iter()
            .any(|e| e.bytes_up == 10 && e.bytes_down == 10)
    );
}

#[test]
fn curl_through_http_proxy_and_socks5h() {
    let up = upstream();
    let p = start_proxy(opened(&["localhost"]));
    let url = format!("http://localhost:{}/curl", up.addr.port());
    for proxy_arg in [
        format!("http://{}", p.addr),
        format!("socks5h://{}", p.addr),
    ] {
        let out = std::process::Command::new("curl")
            .args(["-sS", "--max-time", "10", "-x", &proxy_arg, &url])
            .env_remove("NO_PROXY")
            .env_remove("no_proxy")
            .output()
            .expect("curl must be installed for this test");
        assert!(
            out.status.success(),
            "{proxy_arg}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from upstream");
    }
    // Tunnel through CONNECT (curl -p) as a TLS client would.
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "-p",
            "-x",
            &format!("http://{}", p.addr),
            &url,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A denied host: curl fails, upstream sees nothing new.
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "-p",
            "-x",
            &format!("http://{}", p.addr),
            "http://denied.invalid/",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(up.heads.lock().unwrap().len(), 3);
    let evs = events(&p, 4);
    assert_eq!(evs.iter().filter(|e| e.decision == "allowed").count(), 3);
}

#[test]
fn python_client_uses_the_sandbox_env_to_reach_the_proxy() {
    let up = upstream();
    let p = start_proxy(opened(&["localhost"]));
    // NO_PROXY from sandbox_env keeps loopback direct (for the gateway); the
    // test upstream is on loopback too, so drop it here to go via the proxy.
    let env: Vec<(String, String)> = runproof_net::sandbox_env(Some(p.addr.port()), None)
        .into_iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("no_proxy"))
        .collect();
    let script = format!(
        "import urllib.request,sys\nprint(urllib.request.urlopen('http://localhost:{}/py', timeout=10).read().decode())\ntry:\n    urllib.request.urlopen('http://blocked.invalid/', timeout=10)\n    sys.exit(3)\nexcept urllib.error.HTTPError as e:\n    print(e.code)\n",
        up.addr.port()
    );
    let out = std::process::Command::new("python3")
        .args(["-c", &script])
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .envs(env)
        .output()
        .expect("python3 must be installed for this test");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello from upstream\n403\n"
    );
}

#[test]
fn garbage_and_oversized_input_do_not_break_the_proxy() {
    let up = upstream();
    let p = start_proxy(opened(&["localhost"]));
    let mut s = connect(p.addr);
    s.write_all(b"\x16\x03\x01garbage that is not http\r\n\r\n")
        .unwrap();
    let mut sink = Vec::new();
    let _ = s.read_to_end(&mut sink);
    let mut s = connect(p.addr);
    let huge = format!(
        "GET http://localhost/ HTTP/1.1\r\nX: {}\r\n\r\n",
        "a".repeat(200_000)
    );
    let _ = s.write_all(huge.as_bytes());
    let _ = s.read_to_end(&mut sink);
    let mut s = connect(p.addr);
    let _ = s.write_all(&[5, 1, 0, 5, 1, 0, 3, 0, 0, 80]);
    let _ = s.read_to_end(&mut sink);
    // Still serving.
    let mut s = connect(p.addr);
    write!(s, "CONNECT localhost:{} HTTP/1.1\r\n\r\n", up.addr.port()).unwrap();
    assert!(read_head(&mut s).starts_with("HTTP/1.1 200"));
}

#[test]
fn connections_beyond_the_limit_wait_until_one_closes() {
    let up = upstream();
    let mut policy = opened(&["localhost"]);
    policy.max_connections = 2;
    let p = start_proxy(policy);
    let tunnel = |s: &mut TcpStream| {
        write!(s, "CONNECT localhost:{} HTTP/1.1\r\n\r\n", up.addr.port()).unwrap();
        read_head(s)
    };
    let mut a = connect(p.addr);
    let mut b = connect(p.addr);
    assert!(tunnel(&mut a).starts_with("HTTP/1.1 200"));
    assert!(tunnel(&mut b).starts_with("HTTP/1.1 200"));
    // The third is accepted by the kernel backlog but not served...
    let mut c = connect(p.addr);
    c.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    write!(c, "CONNECT localhost:{} HTTP/1.1\r\n\r\n", up.addr.port()).unwrap();
    let mut byte = [0u8; 1];
    let r = c.read(&mut byte);
    assert!(r.is_err(), "served beyond the limit: {r:?} {byte:?}");
    // ...until one of the first two goes away.
    drop(a);
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert!(read_head(&mut c).starts_with("HTTP/1.1 200"));
    drop(b);
}
