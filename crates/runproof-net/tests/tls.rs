//! The gateway reaching an HTTPS upstream: certificates are verified (an
//! unknown CA is refused), and with the CA trusted the request goes through
//! and is metered. The certificate is made by the `openssl` command.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};

use common::*;
use runproof_ledger::{Ledger, LedgerWriter};
use runproof_net::gateway::{Gateway, GatewayConfig, Upstream, load_pem_certs};
use tokio_rustls::rustls;

/// A test CA (`ca.pem`) and a server certificate for localhost and
/// 127.0.0.1 signed by it (`cert.pem`, `key.pem`).
fn make_cert(dir: &Path) {
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let steps: Vec<Vec<&str>> = vec![
        [
            &["req", "-x509"][..],
            &ec[..],
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "1",
                "-subj",
                "/CN=runproof test CA",
            ][..],
        ]
        .concat(),
        [
            &["req"][..],
            &ec[..],
            &[
                "-keyout",
                "key.pem",
                "-out",
                "leaf.csr",
                "-subj",
                "/CN=localhost",
            ][..],
        ]
        .concat(),
        vec![
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "cert.pem",
            "-days",
            "1",
            "-extfile",
            "ext.cnf",
        ],
    ];
    for args in steps {
        let out = std::process::Command::new("openssl")
            .args(&args)
            .current_dir(dir)
            .output()
            .expect("openssl must be installed for this test");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A one-request-per-connection HTTPS upstream answering chat completions.
fn tls_upstream(dir: &Path, seen_auth: Arc<Mutex<Vec<String>>>) -> std::net::SocketAddr {
    use rustls::pki_types::pem::PemObject;
    let certs: Vec<_> = rustls::pki_types::CertificateDer::pem_file_iter(dir.join("cert.pem"))
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(dir.join("key.pem")).unwrap();
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap(),
    );
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for tcp in l.incoming() {
            let Ok(tcp) = tcp else { return };
            let (config, seen_auth) = (config.clone(), seen_auth.clone());
            std::thread::spawn(move || {
                let conn = rustls::ServerConnection::new(config).unwrap();
                let mut s = rustls::StreamOwned::new(conn, tcp);
                let mut buf = Vec::new();
                let mut tmp = [0u8; 4096];
                let end = loop {
                    if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break p;
                    }
                    match s.read(&mut tmp) {
                        Ok(0) | Err(_) => return, // e.g. the client refused our certificate
                        Ok(n) => buf.extend_from_slice(&tmp[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                if let Some(line) = head.lines().find(|l| l.starts_with("authorization:")) {
                    seen_auth.lock().unwrap().push(line.to_string());
                }
                let body = r#"{"object":"chat.completion","usage":{"prompt_tokens":11,"completion_tokens":7}}"#;
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.flush();
                s.conn.send_close_notify();
                let _ = s.flush();
            });
        }
    });
    addr
}

fn start(
    base: String,
    extra: Vec<Vec<u8>>,
) -> (
    std::net::SocketAddr,
    LedgerWriter,
    std::path::PathBuf,
    tokio::runtime::Runtime,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("l.db");
    let writer = LedgerWriter::spawn(Ledger::open(&p).unwrap());
    let g = Gateway::new(GatewayConfig {
        openai: Some(Upstream {
            base_url: base,
            api_key: HOST_KEY.into(),
        }),
        prices: Arc::new(test_prices()),
        extra_root_certs: extra,
        ..GatewayConfig::new(writer.clone())
    })
    .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    rt.spawn(async move { g.serve(l).await });
    (addr, writer, p, rt, dir)
}

#[test]
fn https_upstream_is_verified_and_metered() {
    let certs = tempfile::tempdir().unwrap();
    make_cert(certs.path());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let up = tls_upstream(certs.path(), seen.clone());
    let base = format!("https://localhost:{}", up.port());

    // Unknown CA: refused, with the reason, and no request reaches the server.
    let (gw, _w, _p, _rt, _d) = start(base.clone(), Vec::new());
    let got = post(
        gw,
        "/v1/chat/completions",
        &[],
        r#"{"model":"gpt-test","messages":[]}"#,
    );
    assert_eq!(got.status, 502);
    let msg = got.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(msg.contains("UnknownIssuer"), "{msg}");
    assert!(seen.lock().unwrap().is_empty());

    // CA trusted: through, key added over TLS, usage recorded.
    let extra = load_pem_certs(&certs.path().join("ca.pem")).unwrap();
    let (gw, w, p, _rt2, _d2) = start(base, extra);
    let got = post(
        gw,
        "/v1/chat/completions",
        &[("Authorization", "Bearer inside")],
        r#"{"model":"gpt-test","messages":[]}"#,
    );
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(
        seen.lock().unwrap().as_slice(),
        &[format!(
            "authorization: bearer {}",
            HOST_KEY.to_ascii_lowercase()
        )]
    );
    w.flush().unwrap();
    let rs = Ledger::open(&p).unwrap().requests(None).unwrap();
    assert_eq!(
        (rs.len(), rs[0].usage.input, rs[0].usage.output),
        (1, 11, 7)
    );
}

#[test]
fn ca_file_errors_name_the_file() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("empty.pem");
    std::fs::write(&f, "nothing here").unwrap();
    let e = load_pem_certs(&f).unwrap_err().to_string();
    assert!(
        e.contains("empty.pem") && e.contains("no certificate"),
        "{e}"
    );
}
