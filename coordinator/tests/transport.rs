//! Transport security and service exhaustion, over real sockets: HTTPS with client certificates (mTLS) and a
//! certificate reload, the client's distinct connection errors, slowloris connections bounded by the header
//! timeout, the connection limit, request ids that cannot forge log lines, `/metrics` access, and a model too large
//! for the coordinator refused before anything is allocated.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use confide_coordinator::client::devcert;
use confide_coordinator::client::{ClientError, ConnectFailure, CoordinatorClient, TlsOptions};
use confide_coordinator::store::Backend;
use confide_coordinator::transport::{ConnLimits, TlsFiles, tls};
use confide_coordinator::{HttpOptions, Limits, MetricsAccess, ServeOptions};
use serde_json::json;
use support::TestDb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// An in-process coordinator on a loopback port with the given options, and an operator token.
struct Server {
    addr: SocketAddr,
    token: String,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), std::io::Error>>,
}

impl Server {
    async fn start(db: &TestDb, options: ServeOptions) -> Self {
        let state = confide_coordinator::start(db.store.clone(), Limits::default())
            .await
            .expect("start coordinator");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let task = tokio::spawn(confide_coordinator::serve_with(
            listener,
            state,
            options,
            async move { stopped.cancelled().await },
        ));
        let token = db
            .store
            .create_operator_token(&format!("op-{}", addr.port()))
            .await
            .expect("operator token");
        Self {
            addr,
            token,
            stop,
            task,
        }
    }

    async fn stop(self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }
}

/// Reads until the peer closes (or errs); false if it is still open at `deadline`.
async fn closed_by(sock: &mut TcpStream, deadline: Instant) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, sock.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue, // e.g. a 408 answer before the close
            Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_neither_starve_the_service_nor_stay_open() {
    let db = TestDb::new(Backend::Sqlite).await;
    let header_timeout = Duration::from_secs(2);
    let options = ServeOptions {
        limits: ConnLimits {
            header_timeout,
            body_timeout: Duration::from_secs(2),
            max_connections: 1024,
        },
        ..ServeOptions::default()
    };
    let server = Server::start(&db, options).await;
    let test_started = Instant::now();
    // 300 slow senders (a partial header, then a byte now and then) and 50 that send nothing at all.
    let mut slow = Vec::new();
    for _ in 0..300 {
        let mut s = TcpStream::connect(server.addr).await.expect("connect");
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await
            .expect("partial header");
        slow.push(s);
    }
    let mut idle = Vec::new();
    for _ in 0..50 {
        idle.push(TcpStream::connect(server.addr).await.expect("connect"));
    }
    let opened = Instant::now();
    let client = CoordinatorClient::new(&format!("http://{}", server.addr), "");
    for _ in 0..3 {
        let t = Instant::now();
        let health = client
            .health()
            .await
            .expect("/healthz answers during the attack");
        assert_eq!(health.status, "ok");
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "/healthz took {:?} with 350 hanging connections",
            t.elapsed()
        );
        for s in &mut slow {
            let _ = s.write_all(b"a").await;
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    // Every hanging connection is closed by the header timeout (plus scheduling slack), none much later.
    let deadline = opened + header_timeout + Duration::from_secs(3);
    let mut still_open = 0;
    for s in slow.iter_mut().chain(idle.iter_mut()) {
        if !closed_by(s, deadline).await {
            still_open += 1;
        }
    }
    assert_eq!(
        still_open, 0,
        "connections still open after the header timeout"
    );
    assert!(
        opened.elapsed() >= header_timeout,
        "closed before the timeout"
    );
    client.health().await.expect("/healthz after the attack");
    assert!(test_started.elapsed() < Duration::from_secs(30));
    server.stop().await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_request_body_is_answered_408_and_closed() {
    let db = TestDb::new(Backend::Sqlite).await;
    let body_timeout = Duration::from_secs(1);
    let options = ServeOptions {
        limits: ConnLimits {
            header_timeout: Duration::from_secs(5),
            body_timeout,
            max_connections: 64,
        },
        ..ServeOptions::default()
    };
    let server = Server::start(&db, options).await;
    let mut s = TcpStream::connect(server.addr).await.expect("connect");
    let head = format!(
        "POST /v1/studies HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\n\
         Content-Length: 100000\r\n\r\n{{\"name\": \"",
        server.token
    );
    s.write_all(head.as_bytes())
        .await
        .expect("head and a few bytes");
    let t = Instant::now();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the connection was not closed within 5 s");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("--body-timeout-secs"), "{text}");
    assert!(
        t.elapsed() >= body_timeout && t.elapsed() < Duration::from_secs(4),
        "{:?}",
        t.elapsed()
    );
    server.stop().await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_are_closed_at_once() {
    let db = TestDb::new(Backend::Sqlite).await;
    let header_timeout = Duration::from_secs(2);
    let options = ServeOptions {
        limits: ConnLimits {
            header_timeout,
            body_timeout: Duration::from_secs(2),
            max_connections: 20,
        },
        ..ServeOptions::default()
    };
    let server = Server::start(&db, options).await;
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(TcpStream::connect(server.addr).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = TcpStream::connect(server.addr).await.expect("connect");
    let t = Instant::now();
    assert!(
        closed_by(&mut extra, Instant::now() + Duration::from_secs(1)).await,
        "the 21st connection was not closed"
    );
    assert!(t.elapsed() < Duration::from_secs(1));
    // Once the held connections time out, the service answers again.
    tokio::time::sleep(header_timeout + Duration::from_millis(500)).await;
    let client = CoordinatorClient::new(&format!("http://{}", server.addr), "");
    client
        .health()
        .await
        .expect("/healthz after the slots were freed");
    server.stop().await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_client_certificates_reload_and_distinct_errors() {
    let db = TestDb::new(Backend::Sqlite).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let first = dir.path().join("first");
    std::fs::create_dir_all(&first).expect("dir");
    // The certificate names 127.0.0.1 only (not "localhost").
    let certs = devcert::generate(&first, &["127.0.0.1".into()]).expect("certificates");
    let live = dir.path().join("live");
    std::fs::create_dir_all(&live).expect("dir");
    let (live_cert, live_key) = (live.join("server.pem"), live.join("server-key.pem"));
    std::fs::copy(&certs.server_cert, &live_cert).expect("copy");
    std::fs::copy(&certs.server_key, &live_key).expect("copy");
    let (config, reload) = tls::server_config(&TlsFiles {
        cert: live_cert.clone(),
        key: live_key.clone(),
        client_ca: Some(certs.ca_cert.clone()),
    })
    .expect("TLS configuration");
    let server = Server::start(
        &db,
        ServeOptions {
            tls: Some((config, true)),
            ..ServeOptions::default()
        },
    )
    .await;
    let url = format!("https://{}", server.addr);
    let trusting = |ca: &std::path::Path, client: bool| TlsOptions {
        ca_cert: Some(ca.to_path_buf()),
        client_cert: client.then(|| certs.client_cert.clone()),
        client_key: client.then(|| certs.client_key.clone()),
        allow_insecure_http: false,
    };
    let connect = |url: &str, token: &str, tls: &TlsOptions| {
        CoordinatorClient::connect(url, token, tls).expect("client")
    };

    // Trusted CA: answers.
    let op = connect(&url, &server.token, &trusting(&certs.ca_cert, false));
    assert_eq!(op.health().await.expect("healthz over https").status, "ok");
    // System roots only: a TLS failure, named as such, not retried.
    let e = connect(&url, "", &TlsOptions::default())
        .health()
        .await
        .unwrap_err();
    assert_eq!(e.connect_failure(), Some(ConnectFailure::Tls), "{e}");
    assert!(!e.is_transient());
    assert!(e.to_string().contains("--ca-cert"), "{e}");
    // A host name the certificate does not name: a TLS failure too.
    let by_name = format!("https://localhost:{}", server.addr.port());
    let e = connect(&by_name, "", &trusting(&certs.ca_cert, false))
        .health()
        .await
        .unwrap_err();
    assert_eq!(e.connect_failure(), Some(ConnectFailure::Tls), "{e}");

    // Participant routes need a client certificate of the CA; operator routes do not.
    let study = op
        .create_study(&support::typed(&support::study_request("tls")))
        .await
        .expect("operator over https without a client certificate");
    let enrolment = op
        .create_enrolment_token(
            study.id,
            &confide_common::api::CreateEnrolmentTokenRequest {
                label: "h".into(),
                expires_in_secs: None,
            },
        )
        .await
        .expect("token");
    let e = connect(&url, "", &trusting(&certs.ca_cert, false))
        .enrol(&enrolment.token, "h")
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(401), "{e}");
    assert!(e.to_string().contains("client certificate"), "{e}");
    let site = connect(&url, "", &trusting(&certs.ca_cert, true));
    let enrolled = site
        .enrol(&enrolment.token, "h")
        .await
        .expect("enrol with mTLS");
    site.with_token(&enrolled.credential)
        .poll_task(0)
        .await
        .expect("poll with mTLS");

    // A connection refused and an unknown host: each its own kind and message.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let closed_url = format!("https://{}", closed.local_addr().expect("addr"));
    drop(closed);
    let e = connect(&closed_url, "", &trusting(&certs.ca_cert, false))
        .health()
        .await
        .unwrap_err();
    assert_eq!(e.connect_failure(), Some(ConnectFailure::Refused), "{e}");
    assert!(e.to_string().contains("connection refused"), "{e}");
    let unknown = connect(
        "https://no-such-host.confide.invalid:8443",
        "",
        &trusting(&certs.ca_cert, false),
    );
    let e = tokio::time::timeout(Duration::from_secs(20), unknown.health())
        .await
        .expect("name lookup answered")
        .unwrap_err();
    assert_eq!(
        e.connect_failure(),
        Some(ConnectFailure::UnknownHost),
        "{e}"
    );
    assert!(e.to_string().contains("unknown host"), "{e}");
    // Plain http:// to a non-loopback host is refused before any connection.
    let e = CoordinatorClient::connect(
        "http://coordinator.example:8080",
        "",
        &TlsOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(e, ClientError::Config(_)), "{e}");

    // Reload: a certificate from a new CA replaces the old one for new connections, without a restart.
    let second = dir.path().join("second");
    std::fs::create_dir_all(&second).expect("dir");
    let renewed = devcert::generate(&second, &["127.0.0.1".into()]).expect("certificates");
    std::fs::copy(&renewed.server_cert, &live_cert).expect("copy");
    std::fs::copy(&renewed.server_key, &live_key).expect("copy");
    reload.reload().expect("reload");
    connect(&url, "", &trusting(&renewed.ca_cert, false))
        .health()
        .await
        .expect("the new certificate is served");
    let e = connect(&url, "", &trusting(&certs.ca_cert, false))
        .health()
        .await
        .unwrap_err();
    assert_eq!(e.connect_failure(), Some(ConnectFailure::Tls), "{e}");
    // A broken file keeps the current certificate.
    std::fs::write(&live_key, "not a key").expect("write");
    assert!(reload.reload().is_err());
    connect(&url, "", &trusting(&renewed.ca_cert, false))
        .health()
        .await
        .expect("still served after a failed reload");
    server.stop().await;
    db.cleanup().await;
}

async fn call(app: &axum::Router, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap) {
    let resp = app.clone().oneshot(req).await.expect("answer");
    (resp.status(), resp.headers().clone())
}

#[tokio::test]
async fn request_ids_are_kept_only_when_short_and_safe() {
    let db = TestDb::new(Backend::Sqlite).await;
    let state = confide_coordinator::start(db.store.clone(), Limits::default())
        .await
        .expect("start");
    let app = confide_coordinator::http::router(state);
    let with_id = |id: &[u8]| {
        Request::get("/healthz")
            .header(
                "x-request-id",
                axum::http::HeaderValue::from_bytes(id).expect("header value"),
            )
            .body(Body::empty())
            .expect("request")
    };
    let (_, h) = call(&app, with_id(b"abc-123_x.y")).await;
    assert_eq!(h["x-request-id"], "abc-123_x.y");
    // Anything that could imitate a log field or break a log line is replaced by a generated id (a UUID).
    for forged in [
        &b"abc request_id=admin"[..],
        b"x\" , \"level\":\"ERROR",
        b"id\tINFO forged",
        &[b'a'; 65][..],
        b"caf\xc3\xa9",
    ] {
        let (status, h) = call(&app, with_id(forged)).await;
        assert_eq!(status, StatusCode::OK);
        let id = h["x-request-id"].to_str().expect("ascii");
        assert_ne!(id.as_bytes(), forged);
        assert_eq!(id.len(), 36, "{id}");
        assert!(
            id.bytes().all(|c| c.is_ascii_hexdigit() || c == b'-'),
            "{id}"
        );
    }
    db.cleanup().await;
}

#[tokio::test]
async fn metrics_need_the_token_or_another_listener() {
    let db = TestDb::new(Backend::Sqlite).await;
    let state = confide_coordinator::start(db.store.clone(), Limits::default())
        .await
        .expect("start");
    let token = "a-metrics-token-of-some-length";
    let guarded = confide_coordinator::http::router_with(
        state.clone(),
        &HttpOptions {
            metrics: MetricsAccess::Bearer(token.into()),
        },
    );
    let get = |auth: Option<&str>| {
        let mut r = Request::get("/metrics");
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        r.body(Body::empty()).expect("request")
    };
    assert_eq!(call(&guarded, get(None)).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        call(&guarded, get(Some("Bearer wrong-token"))).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call(&guarded, get(Some(&format!("Bearer {token}"))))
            .await
            .0,
        StatusCode::OK
    );
    let elsewhere = confide_coordinator::http::router_with(
        state.clone(),
        &HttpOptions {
            metrics: MetricsAccess::Elsewhere,
        },
    );
    assert_eq!(call(&elsewhere, get(None)).await.0, StatusCode::NOT_FOUND);
    let separate = confide_coordinator::http::metrics_router(state, MetricsAccess::Open);
    assert_eq!(call(&separate, get(None)).await.0, StatusCode::OK);
    let health = Request::get("/healthz")
        .body(Body::empty())
        .expect("request");
    assert_eq!(call(&separate, health).await.0, StatusCode::NOT_FOUND);
    db.cleanup().await;
}

#[tokio::test]
async fn a_267m_parameter_model_is_refused_before_anything_is_allocated() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = Server::start(&db, ServeOptions::default()).await;
    let op = CoordinatorClient::new(&format!("http://{}", server.addr), &server.token);
    // 16 300 → 16 384 → 10: 267 M parameters, 1.07 GB as f32, over the default 256 MiB limit.
    let spec = json!({"kind": "mlp", "input_dim": 16_300, "hidden": [16_384], "activation": "relu", "num_classes": 10});
    let req = support::set(support::study_request("huge"), &[("/model_spec", spec)]);
    let before = db.store.state_fingerprint().await.expect("fingerprint");
    let t = Instant::now();
    let e = op.create_study(&support::typed(&req)).await.unwrap_err();
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(e.status(), Some(422), "{e}");
    let text = e.to_string();
    assert!(
        text.contains("267")
            && text.contains("model-size limit")
            && text.contains("--max-model-bytes"),
        "{text}"
    );
    assert_eq!(
        before,
        db.store.state_fingerprint().await.expect("fingerprint")
    );
    server.stop().await;
    db.cleanup().await;
}

/// Reads one line of the child's stdout (with a bound).
fn read_line(reader: &mut impl std::io::BufRead) -> String {
    let mut line = String::new();
    reader.read_line(&mut line).expect("read a line");
    line.trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_refuses_plain_http_on_the_network_serves_metrics_apart_and_reloads_on_sighup() {
    use std::process::{Command, Stdio};
    let bin = env!("CARGO_BIN_EXE_confide-coordinator");
    let dir = tempfile::tempdir().expect("tempdir");
    let db = format!("sqlite:{}", dir.path().join("c.db").display());
    // Plain HTTP on every interface: refused with what to do.
    let out = Command::new(bin)
        .args(["--database-url", &db, "serve", "--listen", "0.0.0.0:0"])
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("refusing to serve plain HTTP")
            && err.contains("--tls-cert")
            && err.contains("--allow-insecure-http"),
        "{err}"
    );
    let out = Command::new(bin)
        .args(["--database-url", &db, "serve", "--client-ca", "ca.pem"])
        .output()
        .expect("run");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--client-ca needs TLS"));

    // TLS on every interface, metrics on a separate loopback listener.
    let first = dir.path().join("first");
    std::fs::create_dir_all(&first).expect("dir");
    let certs = devcert::generate(&first, &["127.0.0.1".into()]).expect("certificates");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::copy(&certs.server_cert, &cert).expect("copy");
    std::fs::copy(&certs.server_key, &key).expect("copy");
    let mut child = Command::new(bin)
        .args(["--database-url", &db, "serve", "--listen", "0.0.0.0:0"])
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .args(["--metrics-addr", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let listening = read_line(&mut stdout);
    let metrics_line = read_line(&mut stdout);
    let port = listening
        .strip_prefix("listening on https://0.0.0.0:")
        .unwrap_or_else(|| panic!("{listening:?}"));
    let metrics_url = metrics_line
        .strip_prefix("metrics on ")
        .unwrap_or_else(|| panic!("{metrics_line:?}"))
        .to_string();
    let api = format!("https://127.0.0.1:{port}");
    let trusting = |ca: &std::path::Path| TlsOptions {
        ca_cert: Some(ca.to_path_buf()),
        ..TlsOptions::default()
    };
    let client = CoordinatorClient::connect(&api, "", &trusting(&certs.ca_cert)).expect("client");
    client.health().await.expect("healthz over https");
    let e = client.metrics().await.unwrap_err();
    assert_eq!(e.status(), Some(404), "{e}");
    assert!(e.to_string().contains("--metrics-addr"), "{e}");
    let text = reqwest::get(&metrics_url)
        .await
        .expect("metrics listener")
        .text()
        .await
        .expect("text");
    assert!(text.contains("confide_http_requests_total"), "{text}");

    // SIGHUP: the renewed certificate is served without a restart.
    let second = dir.path().join("second");
    std::fs::create_dir_all(&second).expect("dir");
    let renewed = devcert::generate(&second, &["127.0.0.1".into()]).expect("certificates");
    std::fs::copy(&renewed.server_cert, &cert).expect("copy");
    std::fs::copy(&renewed.server_key, &key).expect("copy");
    let status = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .expect("kill -HUP");
    assert!(status.success());
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let fresh =
            CoordinatorClient::connect(&api, "", &trusting(&renewed.ca_cert)).expect("client");
        match fresh.health().await {
            Ok(_) => break,
            Err(e) if Instant::now() < until => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("the renewed certificate was not served after SIGHUP: {e}"),
        }
    }
    assert!(
        child.try_wait().expect("status").is_none(),
        "still running after SIGHUP"
    );
    let _ = child.kill();
    let _ = child.wait();
}
