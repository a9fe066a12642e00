//! How connections reach the HTTP layer: the accept loop with its limits, plain or TLS ([`tls`]).
//!
//! axum's own `serve` has no header timeout, no connection limit and no TLS, so the coordinator runs hyper's
//! HTTP/1.1 connection itself:
//! - **connection limit**: at most `max_connections` open at once; a connection beyond it is accepted and closed at
//!   once (the client sees a reset instead of waiting in the kernel's backlog);
//! - **header timeout = idle timeout**: hyper starts its header-read timer when a connection opens and again after
//!   every answered request, so a peer that sends a header slowly (slowloris) or sits idle on a keep-alive
//!   connection is closed after `header_timeout`; the TLS handshake has the same bound;
//! - **body timeout**: a request body that delivers no data for `body_timeout` fails (tower-http's
//!   `RequestBodyTimeout`, reset on every chunk; the body-size limits bound the total).
//!
//! Graceful shutdown: the listener closes, idle connections close, requests in flight finish.

pub mod tls;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Request};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;
use tower_http::timeout::RequestBodyTimeoutLayer;

pub use tls::{PeerTls, TlsFiles};

/// Limits of one listener.
#[derive(Debug, Clone)]
pub struct ConnLimits {
    /// Longest wait for a complete request header (also the longest idle time of a keep-alive connection and the
    /// TLS handshake's bound).
    pub header_timeout: Duration,
    /// Longest pause while a request body is being received.
    pub body_timeout: Duration,
    /// Most connections open at once.
    pub max_connections: usize,
}

impl Default for ConnLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_connections: 1024,
        }
    }
}

/// Why a listener configuration is refused.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error(
        "refusing to serve plain HTTP on {addr}: it is not a loopback address, so bearer tokens, credentials and \
         protocol messages would cross the network in the clear. Give --tls-cert and --tls-key (PEM), or bind \
         127.0.0.1 / ::1 behind a TLS-terminating proxy, or pass --allow-insecure-http if this network is trusted"
    )]
    PlainHttpOnNetwork { addr: SocketAddr },
    #[error("--client-ca needs TLS: give --tls-cert and --tls-key too")]
    ClientCaWithoutTls,
    #[error("--tls-cert and --tls-key go together: give both or neither")]
    HalfTls,
}

/// Plain HTTP is served only on loopback unless the operator says otherwise.
pub fn check_plain_http(
    addr: SocketAddr,
    tls: bool,
    allow_insecure: bool,
) -> Result<(), ListenError> {
    if tls || allow_insecure || is_loopback(addr.ip()) {
        Ok(())
    } else {
        Err(ListenError::PlainHttpOnNetwork { addr })
    }
}

/// Loopback, including IPv4-mapped IPv6 loopback.
pub fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves: TLS when `tls` is given, with `limits`.
pub async fn serve_app(
    listener: TcpListener,
    app: Router,
    tls: Option<(Arc<rustls::ServerConfig>, bool)>,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = app.layer(RequestBodyTimeoutLayer::new(limits.body_timeout));
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let acceptor = tls
        .as_ref()
        .map(|(config, _)| tokio_rustls::TlsAcceptor::from(config.clone()));
    let client_cert_required = tls.as_ref().is_some_and(|(_, required)| *required);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "connection limit reached; closing the new connection");
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let app = app.clone();
        let http = http.clone();
        let watcher = graceful.watcher();
        let acceptor = acceptor.clone();
        let handshake_timeout = limits.header_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            let with_peer = move |peer_tls: PeerTls| {
                hyper::service::service_fn(move |mut req: Request<Incoming>| {
                    req.extensions_mut().insert(ConnectInfo(peer));
                    req.extensions_mut().insert(peer_tls);
                    app.clone().oneshot(req.map(axum::body::Body::new))
                })
            };
            let result = match acceptor {
                None => {
                    let plain = PeerTls {
                        client_cert_required: false,
                        client_cert_verified: false,
                    };
                    let conn = http.serve_connection(TokioIo::new(tcp), with_peer(plain));
                    watcher.watch(conn).await
                }
                Some(acceptor) => {
                    let stream =
                        match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out");
                                return;
                            }
                        };
                    let verified = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .is_some_and(|c| !c.is_empty());
                    let peer_tls = PeerTls {
                        client_cert_required,
                        client_cert_verified: verified,
                    };
                    let conn = http.serve_connection(TokioIo::new(stream), with_peer(peer_tls));
                    watcher.watch(conn).await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    // Requests in flight finish (long-polls answer at once on shutdown); bounded so a stuck peer cannot hold us.
    if tokio::time::timeout(Duration::from_secs(30), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("some connections were still open 30 s after shutdown began; closing them");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_on_loopback() {
        let lo: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let lo6: SocketAddr = "[::1]:8080".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:8080".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let lan: SocketAddr = "10.1.2.3:8080".parse().unwrap();
        for ok in [lo, lo6, mapped] {
            assert!(check_plain_http(ok, false, false).is_ok(), "{ok}");
        }
        for bad in [any, lan] {
            let e = check_plain_http(bad, false, false).unwrap_err().to_string();
            assert!(
                e.contains("--tls-cert") && e.contains("--allow-insecure-http"),
                "{e}"
            );
            assert!(check_plain_http(bad, true, false).is_ok());
            assert!(check_plain_http(bad, false, true).is_ok());
        }
    }
}
