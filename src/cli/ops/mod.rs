//! The operator's commands (`confide login|study|token|participants|round|model`, `confide privacy report`): the
//! coordinator API through the typed client, a table for people by default and `--json` for scripts.
//!
//! One file per noun; this module holds what they share: the connection ([`connect`], the one place a client is
//! built, so a TLS option lands in one function), the error type whose variants are the documented exit codes
//! ([`OpsError`]), and the output helpers.

pub mod model;
pub mod participants;
pub mod privacy;
pub mod profile;
pub mod round;
pub mod study;
pub mod study_run;
pub mod token;

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use comfy_table::Table;
use confide_client::{ClientError, CoordinatorClient, TlsOptions};
use serde::Serialize;

/// The exit codes of the operator commands, shown in `--help` (`after_help`).
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  a local problem (a file that cannot be read or written, a study file that does not parse)
  2  usage: bad arguments, or no coordinator URL / operator token given (flags, environment or `confide login`)
  3  the coordinator cannot be reached (not running, wrong host or port) or its answer is not the Confide API
  4  the operator token was refused (401) or is not an operator's (403)
  5  not found (404): no such study, round or model version
  6  the coordinator refused the request (400, 409, 413, 422): the message names what to change
  7  the coordinator failed (5xx): see its log
  8  `round watch`: the round ended aborted; `study run --wait`: the run failed (rounds aborted more than
     --max-retries times in a row, or the next round could not be started)";

/// Where to find the coordinator and how to authenticate: flags, then environment, then the profile file written
/// by `confide login`.
#[derive(Args, Debug, Clone, Default)]
pub struct Connection {
    /// The coordinator's base URL, e.g. http://127.0.0.1:8080 (default: the profile's).
    #[arg(long, env = "CONFIDE_COORDINATOR_URL", global = true)]
    pub coordinator_url: Option<String>,
    /// An operator token from `confide-coordinator token create` (default: the profile's). Prefer the
    /// environment variable or the profile: command-line arguments are visible to other users of the machine.
    #[arg(
        long,
        env = "CONFIDE_OPERATOR_TOKEN",
        hide_env_values = true,
        allow_hyphen_values = true,
        global = true
    )]
    pub operator_token: Option<String>,
    /// The profile file (default: $XDG_CONFIG_HOME/confide/profile.toml, i.e. ~/.config/confide/profile.toml).
    #[arg(long, env = "CONFIDE_PROFILE", global = true)]
    pub profile: Option<std::path::PathBuf>,
    /// PEM CA certificate(s) to trust for the coordinator's HTTPS instead of the system roots (e.g. the CA of the
    /// compose stack or of `confide-coordinator tls generate`).
    #[arg(long, env = "CONFIDE_CA_CERT", global = true)]
    pub ca_cert: Option<std::path::PathBuf>,
    /// Allow http:// to a coordinator that is not on loopback (the operator token then crosses the network in
    /// clear).
    #[arg(long, env = "CONFIDE_ALLOW_INSECURE_HTTP", global = true)]
    pub allow_insecure_http: bool,
}

impl Connection {
    /// How to reach the coordinator: the trusted CA and the plain-HTTP policy.
    pub fn tls(&self) -> TlsOptions {
        TlsOptions {
            ca_cert: self.ca_cert.clone(),
            allow_insecure_http: self.allow_insecure_http,
            ..TlsOptions::default()
        }
    }
}

/// What every operator command takes: the connection and the output format.
#[derive(Args, Debug, Clone, Default)]
pub struct OpsArgs {
    #[command(flatten)]
    pub conn: Connection,
    /// Print JSON (the API's types) instead of tables, for scripts.
    #[arg(long, global = true)]
    pub json: bool,
}

/// An operator command's failure; each variant is one exit code ([`EXIT_CODES_HELP`]).
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error("{0}")]
    Local(String),
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Unreachable(String),
    #[error("{0}")]
    Auth(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Coordinator(String),
    #[error("{0}")]
    RoundAborted(String),
}

impl OpsError {
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            Self::Local(_) => 1,
            Self::Usage(_) => 2,
            Self::Unreachable(_) => 3,
            Self::Auth(_) => 4,
            Self::NotFound(_) => 5,
            Self::Refused(_) => 6,
            Self::Coordinator(_) => 7,
            Self::RoundAborted(_) => 8,
        })
    }

    pub fn local(what: impl std::fmt::Display) -> Self {
        Self::Local(what.to_string())
    }
}

pub type OpsResult<T> = Result<T, OpsError>;

/// A connected client: the coordinator's URL and the operator token it uses.
pub struct Ops {
    pub client: CoordinatorClient,
    pub json: bool,
}

/// How long one request may take before the CLI gives up (a long-poll gets its wait on top).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Builds the client from flags, environment and profile (in that order). The one place a client is made, so that
/// transport options (TLS roots, client certificates) are added here.
pub fn connect(args: &OpsArgs) -> OpsResult<Ops> {
    // The profile is read only when flags and environment leave something out.
    let profile = if args.conn.coordinator_url.is_some() && args.conn.operator_token.is_some() {
        None
    } else {
        profile::load(args.conn.profile.as_deref())?
    };
    let url = args
        .conn
        .coordinator_url
        .clone()
        .or_else(|| profile.as_ref().map(|p| p.coordinator_url.clone()))
        .ok_or_else(|| {
            OpsError::Usage(
                "no coordinator URL: give --coordinator-url, set CONFIDE_COORDINATOR_URL, or run `confide login`"
                    .into(),
            )
        })?;
    let token = args
        .conn
        .operator_token
        .clone()
        .or_else(|| profile.map(|p| p.operator_token))
        .ok_or_else(|| {
            OpsError::Usage(
                "no operator token: give --operator-token, set CONFIDE_OPERATOR_TOKEN, or run `confide login` \
                 (tokens come from `confide-coordinator token create`)"
                    .into(),
            )
        })?;
    client_for(&url, &token, &args.conn.tls()).map(|client| Ops {
        client,
        json: args.json,
    })
}

/// A client for `url` with `token`, after checking that the URL can be used at all (a scheme the CLI speaks; plain
/// HTTP only to loopback unless allowed; the CA file readable).
pub fn client_for(url: &str, token: &str, tls: &TlsOptions) -> OpsResult<CoordinatorClient> {
    let parsed = url.parse::<reqwest::Url>().map_err(|e| {
        OpsError::Usage(format!(
            "--coordinator-url {url:?} is not a URL ({e}); expected e.g. https://coordinator.example:8443 or \
             http://127.0.0.1:8080"
        ))
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(OpsError::Usage(format!(
            "--coordinator-url {url:?} must start with http:// or https://"
        )));
    }
    let client = CoordinatorClient::connect(url, token, tls).map_err(|e| match e {
        ClientError::Config(message) => OpsError::Usage(message),
        other => explain(url, other, "the coordinator"),
    })?;
    Ok(client.with_timeout(REQUEST_TIMEOUT))
}

impl Ops {
    /// Turns a client error into what the operator should do about it; `what` names the object asked for (for 404s).
    pub fn explain(&self, err: ClientError, what: &str) -> OpsError {
        explain(self.client.base_url(), err, what)
    }
}

/// The messages behind the exit codes: each says what went wrong and what to do.
pub fn explain(url: &str, err: ClientError, what: &str) -> OpsError {
    match err {
        ClientError::Api { status, message } => match status {
            401 => OpsError::Auth(format!(
                "the coordinator at {url} refused the operator token ({message}): check --operator-token / \
                 CONFIDE_OPERATOR_TOKEN or run `confide login` again; tokens come from `confide-coordinator token \
                 create`"
            )),
            403 => OpsError::Auth(format!(
                "the coordinator at {url} does not accept this token for operator requests ({message}): is it a \
                 participant credential? Use an operator token from `confide-coordinator token create`"
            )),
            404 if message == "no such route" => OpsError::Unreachable(format!(
                "{url} has no such route: is --coordinator-url the coordinator's base URL (e.g. \
                 http://host:8080, without a path)?"
            )),
            404 => OpsError::NotFound(format!("{what} not found: {message}")),
            400 | 409 | 413 | 422 => OpsError::Refused(format!(
                "the coordinator refused the request ({status}): {message}"
            )),
            s if s >= 500 => OpsError::Coordinator(format!(
                "the coordinator at {url} failed ({s}: {message}); see its log, then try again"
            )),
            s => OpsError::Refused(format!("the coordinator answered {s}: {message}")),
        },
        ClientError::Transport(e) if e.is_decode() => OpsError::Unreachable(format!(
            "the answer from {url} is not the Confide coordinator API ({e}): is --coordinator-url right?"
        )),
        ClientError::Transport(e) if e.is_timeout() => OpsError::Unreachable(format!(
            "the coordinator at {url} did not answer in time ({e}): is it overloaded, or is the URL right?"
        )),
        ClientError::Transport(e) => OpsError::Unreachable(format!(
            "cannot reach the coordinator at {url}: {}. Is it running, and is --coordinator-url \
             (CONFIDE_COORDINATOR_URL) right?",
            error_chain(&e)
        )),
        e @ ClientError::Connect { .. } => {
            OpsError::Unreachable(format!("cannot reach the coordinator at {url}: {e}"))
        }
        ClientError::Config(message) => OpsError::Usage(message),
        ClientError::TooLarge { limit } => {
            OpsError::Local(format!("the download is larger than {limit} bytes"))
        }
    }
}

/// An error with its sources ("error sending request: connection refused"), without the debug noise.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        source = s.source();
    }
    out
}

/// Prints `value` as one line of JSON.
pub fn print_json<T: Serialize>(value: &T) -> OpsResult<()> {
    let text = serde_json::to_string(value).map_err(OpsError::local)?;
    println!("{text}");
    Ok(())
}

/// The CLI's table look: no borders, one rule under the header (compact, and easy to read in a terminal or log).
const TABLE_STYLE: comfy_table::TableStyle = comfy_table::TableStyle::new()
    .header_separator(comfy_table::LineStyle::none().fill('─').junction('─'));

/// A table with the CLI's look, ready for rows.
pub fn table<I: IntoIterator<Item = S>, S: Into<comfy_table::Cell>>(header: I) -> Table {
    let mut t = Table::new();
    t.load_style(TABLE_STYLE).set_header(header);
    t
}

/// A two-column table of `(field, value)` pairs (for one object).
pub fn fields(rows: Vec<(&str, String)>) -> Table {
    let mut t = Table::new();
    t.load_style(comfy_table::presets::NOTHING);
    for (k, v) in rows {
        t.add_row(vec![k.to_string(), v]);
    }
    t
}

/// A Unix time in milliseconds as `YYYY-MM-DD HH:MM:SS UTC` (no time-zone database needed).
pub fn time(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Howard Hinnant's days-to-civil algorithm (proleptic Gregorian calendar).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// A duration in milliseconds as `1h 02m`, `3m 04s` or `5.2s`.
pub fn duration(ms: i64) -> String {
    let ms = ms.max(0);
    let s = ms / 1000;
    if s >= 3600 {
        format!("{}h {:02}m", s / 3600, s % 3600 / 60)
    } else if s >= 60 {
        format!("{}m {:02}s", s / 60, s % 60)
    } else {
        format!("{:.1}s", ms as f64 / 1000.0)
    }
}

/// Runs an async operator command on a small runtime of its own.
pub fn block_on<F: std::future::Future<Output = OpsResult<()>>>(f: F) -> OpsResult<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| OpsError::local(format!("cannot start the async runtime: {e}")))?
        .block_on(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc_calendar_dates() {
        assert_eq!(time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(time(1_780_000_000_000), "2026-05-28 20:26:40 UTC");
        assert_eq!(time(951_782_400_000), "2000-02-29 00:00:00 UTC");
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(5_200), "5.2s");
        assert_eq!(duration(184_000), "3m 04s");
        assert_eq!(duration(3_720_000), "1h 02m");
    }

    #[test]
    fn bad_urls_are_usage_errors() {
        for url in ["localhost:8080", "ftp://x", "not a url"] {
            assert!(
                matches!(
                    client_for(url, "t", &TlsOptions::default()),
                    Err(OpsError::Usage(_))
                ),
                "{url}"
            );
        }
        assert!(client_for("http://127.0.0.1:1", "t", &TlsOptions::default()).is_ok());
        // Plain HTTP to a host that is not loopback is refused unless allowed.
        assert!(matches!(
            client_for("http://192.0.2.1:8080", "t", &TlsOptions::default()),
            Err(OpsError::Usage(_))
        ));
    }
}
