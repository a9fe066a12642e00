//! How the client reaches the coordinator: which URLs it accepts (plain HTTP only to loopback unless allowed), which
//! CA it trusts and which client certificate it shows (mTLS), and what a failed connection was — a TLS or
//! certificate problem, a refused connection, an unknown host or a timeout — each with its own message.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::ClientError;

/// TLS settings of a client (all optional: the default trusts the system's roots and allows plain HTTP only to
/// loopback).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TlsOptions {
    /// PEM CA certificate(s) to trust *instead of* the system roots (e.g. the coordinator's own CA).
    pub ca_cert: Option<PathBuf>,
    /// PEM client certificate chain and its key, shown when the coordinator asks (mTLS).
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// Allow `http://` to a host that is not loopback (credentials then cross the network in the clear).
    pub allow_insecure_http: bool,
}

/// Why a connection failed, as far as the client can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectFailure {
    /// The TLS handshake failed: untrusted certificate, a certificate for another host, a missing or refused
    /// client certificate, or a peer that does not speak TLS.
    Tls,
    /// Nothing listens there (connection refused).
    Refused,
    /// The host name does not resolve.
    UnknownHost,
    /// No answer in time.
    Timeout,
    /// Anything else on the way (reset, unreachable network, …).
    Other,
}

/// Loopback: `localhost` or a loopback IP address (IPv4-mapped included).
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.eq_ignore_ascii_case("localhost") || host.to_ascii_lowercase().ends_with(".localhost") {
        return true;
    }
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => v4.is_loopback(),
        Ok(IpAddr::V6(v6)) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        Err(_) => false,
    }
}

/// Checks a coordinator URL: `https://`, or `http://` to loopback (or anywhere with `allow_insecure_http`).
pub fn check_url(url: &str, allow_insecure_http: bool) -> Result<(), ClientError> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| ClientError::Config(format!("coordinator URL {url:?} is not a URL: {e}")))?;
    let host = parsed
        .host_str()
        .ok_or_else(|| ClientError::Config(format!("coordinator URL {url:?} has no host")))?;
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if allow_insecure_http || is_loopback_host(host) => Ok(()),
        "http" => Err(ClientError::Config(format!(
            "refusing plain http:// to {host}, which is not a loopback address: the bearer token or credential \
             and every protocol message would cross the network in the clear. Use https:// (with --ca-cert if \
             the coordinator's certificate is not signed by a public CA), or pass --allow-insecure-http on a \
             network you trust"
        ))),
        other => Err(ClientError::Config(format!(
            "coordinator URL {url:?}: scheme {other:?} is not supported (use https://)"
        ))),
    }
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|e| ClientError::Config(format!("{what} {}: {e}", path.display())))
}

/// A reqwest client with these TLS settings (rustls), the given connect timeout, and no redirects (a redirect could
/// carry the bearer secret elsewhere).
pub fn http_client(
    tls: &TlsOptions,
    connect_timeout: Duration,
) -> Result<reqwest::Client, ClientError> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .redirect(reqwest::redirect::Policy::none());
    if let Some(ca) = &tls.ca_cert {
        let certs =
            reqwest::Certificate::from_pem_bundle(&read(ca, "--ca-cert")?).map_err(|e| {
                ClientError::Config(format!(
                    "--ca-cert {}: not PEM certificates: {e}",
                    ca.display()
                ))
            })?;
        if certs.is_empty() {
            return Err(ClientError::Config(format!(
                "--ca-cert {}: no CERTIFICATE block in the file",
                ca.display()
            )));
        }
        builder = builder.tls_certs_only(certs);
    }
    match (&tls.client_cert, &tls.client_key) {
        (Some(cert), Some(key)) => {
            let mut pem = read(cert, "client certificate")?;
            pem.push(b'\n');
            pem.extend(read(key, "client key")?);
            let identity = reqwest::Identity::from_pem(&pem).map_err(|e| {
                ClientError::Config(format!(
                    "client certificate {} / key {}: {e}",
                    cert.display(),
                    key.display()
                ))
            })?;
            builder = builder.identity(identity);
        }
        (None, None) => {}
        _ => {
            return Err(ClientError::Config(
                "a client certificate and its key go together: give both or neither".into(),
            ));
        }
    }
    builder
        .build()
        .map_err(|e| ClientError::Config(format!("HTTP client: {e}")))
}

/// The whole chain of an error as text (`a: b: c`), for messages.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = s.source();
    }
    parts.join(": ")
}

/// What kind of connection failure `e` is, if it is one.
pub fn classify(e: &reqwest::Error) -> Option<ConnectFailure> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.downcast_ref::<rustls::Error>().is_some() {
            return Some(ConnectFailure::Tls);
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io
                .get_ref()
                .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
            {
                return Some(ConnectFailure::Tls);
            }
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => return Some(ConnectFailure::Refused),
                std::io::ErrorKind::TimedOut => return Some(ConnectFailure::Timeout),
                _ => {}
            }
        }
        cur = err.source();
    }
    if !(e.is_connect() || e.is_timeout()) {
        return None;
    }
    let text = chain(e).to_ascii_lowercase();
    if text.contains("dns error") || text.contains("failed to lookup address") {
        return Some(ConnectFailure::UnknownHost);
    }
    if e.is_timeout() {
        return Some(ConnectFailure::Timeout);
    }
    // Only certificate problems count as TLS failures by their text: a handshake cut short by a restarting
    // coordinator is an ordinary (retried) connection failure.
    if text.contains("invalid peer certificate") || text.contains("certificate required") {
        return Some(ConnectFailure::Tls);
    }
    Some(ConnectFailure::Other)
}

/// A transport error as a [`ClientError`]: connection failures get their kind and a message naming the cause.
pub(crate) fn from_reqwest(e: reqwest::Error) -> ClientError {
    let Some(kind) = classify(&e) else {
        return ClientError::Transport(e);
    };
    let url = e.url().map(|u| {
        let mut u = u.clone();
        u.set_query(None);
        u.to_string()
    });
    let host = e
        .url()
        .map(|u| {
            format!(
                "{}:{}",
                u.host_str().unwrap_or("?"),
                u.port_or_known_default().unwrap_or(0)
            )
        })
        .unwrap_or_else(|| "the coordinator".into());
    let detail = chain(&e);
    ClientError::Connect {
        kind,
        host,
        url: url.unwrap_or_default(),
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_to_loopback() {
        for ok in [
            "http://127.0.0.1:8080",
            "http://localhost:1",
            "http://[::1]:8080/",
            "https://coordinator.example:443",
            "https://10.0.0.1",
        ] {
            assert!(check_url(ok, false).is_ok(), "{ok}");
        }
        for bad in [
            "http://coordinator:8080",
            "http://10.0.0.1",
            "http://0.0.0.0:8080",
            "http://[::]:1",
        ] {
            let e = check_url(bad, false).unwrap_err().to_string();
            assert!(
                e.contains("--allow-insecure-http") && e.contains("https://"),
                "{e}"
            );
            assert!(check_url(bad, true).is_ok(), "{bad}");
        }
        assert!(
            check_url("ftp://x", true)
                .unwrap_err()
                .to_string()
                .contains("scheme")
        );
        assert!(check_url("not a url", true).is_err());
    }

    #[test]
    fn client_key_without_certificate_is_refused() {
        let opts = TlsOptions {
            client_key: Some("k.pem".into()),
            ..TlsOptions::default()
        };
        let e = http_client(&opts, Duration::from_secs(1))
            .unwrap_err()
            .to_string();
        assert!(e.contains("both or neither"), "{e}");
        let opts = TlsOptions {
            ca_cert: Some("/nonexistent/ca.pem".into()),
            ..TlsOptions::default()
        };
        let e = http_client(&opts, Duration::from_secs(1))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--ca-cert") && e.contains("/nonexistent/ca.pem"),
            "{e}"
        );
    }
}
