//! The agent's configuration: a TOML file (`--config`), every key of which is also a flag and an environment
//! variable. Precedence: flag or environment variable, then the file, then the built-in default. Relative paths
//! in the file are relative to the file's directory. The one-time enrolment token is deliberately NOT a file key
//! (a config file is copied around and checked in; the token is a secret): flag or `CONFIDE_ENROLMENT_TOKEN` only.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use serde::Deserialize;
use thiserror::Error;

use super::ledger::{Budget, LEDGER_FILE};
use confide_client::transport::{TlsOptions, check_url};

/// Largest model the agent downloads unless configured otherwise (bytes).
pub const DEFAULT_MAX_MODEL_BYTES: u64 = 256 << 20;
/// Default long-poll wait (the coordinator caps it, 60 s by default).
pub const DEFAULT_POLL_WAIT_SECS: u64 = 30;
/// Default cap of the exponential backoff after errors.
pub const DEFAULT_MAX_BACKOFF_SECS: f64 = 30.0;
/// Longest dataset id accepted.
pub const MAX_DATASET_ID_LEN: usize = 100;
/// Default minimum cohort: the fewest other sites (distinct, pinned identities) a round must have for this site to
/// take part.
pub const DEFAULT_MIN_COHORT: u32 = 3;

pub use confide_runtime::LogFormat;

/// `confide-participant run`: flags (each also an environment variable) that override the config file.
#[derive(Debug, Clone, Default, Args)]
pub struct RunArgs {
    /// TOML config file (see deploy/participants/*/participant.toml).
    #[arg(long, env = "CONFIDE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Coordinator base URL, e.g. https://coordinator:8443 (default after enrolment: the URL it enrolled with).
    /// Plain http:// only to loopback unless --allow-insecure-http.
    #[arg(long, env = "CONFIDE_COORDINATOR_URL")]
    pub coordinator_url: Option<String>,
    /// Directory for the identity, credential and privacy ledger (created 0700, files 0600).
    #[arg(long, env = "CONFIDE_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Display name given at enrolment (unique within the study).
    #[arg(long, env = "CONFIDE_PARTICIPANT_NAME")]
    pub name: Option<String>,
    /// One-time enrolment token from the operator; needed only until the agent has enrolled.
    /// Never read from the config file.
    #[arg(long, env = "CONFIDE_ENROLMENT_TOKEN", hide_env_values = true)]
    pub enrolment_token: Option<String>,
    /// CSV file of the site's records (header line; never leaves this machine).
    #[arg(long = "data", env = "CONFIDE_DATA")]
    pub data_path: Option<PathBuf>,
    /// The name of the dataset the agent serves (e.g. "hospital-a-oncology-2026"). The privacy budget belongs to
    /// it: every study that uses these records spends from one ledger, and re-enrolling never resets it. The
    /// data file's sha256 is registered with it; the same content under another id is refused.
    #[arg(long, env = "CONFIDE_DATASET_ID")]
    pub dataset_id: Option<String>,
    /// Label column (integer classes).
    #[arg(long, env = "CONFIDE_LABEL")]
    pub label: Option<String>,
    /// Feature columns, comma-separated (default: every column but the label).
    #[arg(long, env = "CONFIDE_FEATURES", value_delimiter = ',')]
    pub features: Option<Vec<String>>,
    /// Standardisation statistics JSON ({feature_names, mean, std}) fixed in advance, e.g. computed on public
    /// reference data with `confide-participant stats`. Optional: without it the agent scales its records by the
    /// study's public feature ranges (and declines rounds of a study that declares none).
    #[arg(long, env = "CONFIDE_STATS")]
    pub stats: Option<PathBuf>,
    /// Without --stats, standardise with the mean and std of this site's own records instead of the study's ranges.
    /// Those statistics are NOT
    /// covered by the DP guarantee (they stay here but shape every update sent): the agent warns at start and
    /// every round.
    #[arg(long, env = "CONFIDE_ALLOW_NON_PRIVATE_STATISTICS")]
    pub allow_non_private_statistics: bool,
    /// Local privacy budget ε for every study this agent takes part in.
    #[arg(long = "epsilon", env = "CONFIDE_BUDGET_EPSILON")]
    pub budget_epsilon: Option<f64>,
    /// δ at which the local budget ε is computed.
    #[arg(long = "delta", env = "CONFIDE_BUDGET_DELTA")]
    pub budget_delta: Option<f64>,
    /// The privacy ledger (SQLite) [default: <state dir>/ledger.sqlite]. Agents serving the same dataset in
    /// different studies must share one ledger file, so that all of them spend from one budget.
    #[arg(long, env = "CONFIDE_LEDGER")]
    pub ledger: Option<PathBuf>,
    /// Largest model (safetensors bytes) the agent downloads [default: 268435456].
    #[arg(long, env = "CONFIDE_MAX_MODEL_BYTES")]
    pub max_model_bytes: Option<u64>,
    /// Seconds each long-poll for a task waits [default: 30].
    #[arg(long, env = "CONFIDE_POLL_WAIT_SECS")]
    pub poll_wait_secs: Option<u64>,
    /// Cap of the exponential backoff (with jitter) after errors, seconds [default: 30].
    #[arg(long, env = "CONFIDE_MAX_BACKOFF_SECS")]
    pub max_backoff_secs: Option<f64>,
    /// Log format [default: text].
    #[arg(long, env = "CONFIDE_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// PEM CA certificate(s) to trust for the coordinator's HTTPS, instead of the system roots.
    #[arg(long, env = "CONFIDE_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// PEM client certificate for a coordinator that asks for one (mTLS), with --client-key.
    #[arg(long, env = "CONFIDE_CLIENT_CERT")]
    pub client_cert: Option<PathBuf>,
    /// PEM private key of --client-cert.
    #[arg(long, env = "CONFIDE_CLIENT_KEY")]
    pub client_key: Option<PathBuf>,
    /// Allow http:// to a coordinator that is not on loopback (the credential then crosses the network in clear).
    #[arg(long, env = "CONFIDE_ALLOW_INSECURE_HTTP")]
    pub allow_insecure_http: bool,
    /// The fewest other sites (distinct identity keys, pinned or accepted) a round must have for this site to take
    /// part; it declines smaller rounds [default: 3].
    #[arg(long, env = "CONFIDE_MIN_COHORT")]
    pub min_cohort: Option<u32>,
    /// Fingerprints of the only peers this site accepts (comma-separated, as `confide-participant identity` prints
    /// them, exchanged out of band); without it, peers' keys are pinned on first use.
    #[arg(long, env = "CONFIDE_ACCEPTED_PEERS", value_delimiter = ',')]
    pub accepted_peers: Option<Vec<String>>,
}

/// The config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub coordinator_url: Option<String>,
    pub state_dir: Option<PathBuf>,
    pub name: Option<String>,
    pub log_format: Option<LogFormat>,
    #[serde(default)]
    pub data: FileData,
    #[serde(default)]
    pub budget: FileBudget,
    #[serde(default)]
    pub limits: FileLimits,
    #[serde(default)]
    pub tls: FileTls,
    #[serde(default)]
    pub security: FileSecurity,
}

/// `[tls]`: how the agent reaches the coordinator over HTTPS.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTls {
    pub ca_cert: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub allow_insecure_http: Option<bool>,
}

/// `[security]`: whom this site aggregates with.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSecurity {
    pub min_cohort: Option<u32>,
    pub accepted_peers: Option<Vec<String>>,
}

/// Whom this site takes part in a round with (checked before it trains or sends anything).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityConfig {
    /// The fewest other sites a round must have.
    pub min_cohort: u32,
    /// `Some`: the only peer fingerprints accepted (allow-list); `None`: trust on first use, then pin.
    pub accepted_peers: Option<Vec<String>>,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        Self {
            min_cohort: DEFAULT_MIN_COHORT,
            accepted_peers: None,
        }
    }
}

/// A fingerprint as `IdentityPublicKey::fingerprint` prints it: 8 groups of 4 lowercase hex digits joined by ':'.
/// Accepted in any case, with or without the colons; returned in the canonical form.
pub fn canonical_fingerprint(f: &str) -> Result<String, ConfigError> {
    let hex: String = f
        .trim()
        .chars()
        .filter(|c| *c != ':')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if hex.len() != 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(ConfigError::Invalid(format!(
            "accepted peer {f:?} is not a fingerprint (32 hex digits, as `confide-participant identity` prints)"
        )));
    }
    Ok(hex
        .as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(":"))
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileData {
    pub path: Option<PathBuf>,
    pub dataset_id: Option<String>,
    pub label: Option<String>,
    pub features: Option<Vec<String>>,
    pub stats: Option<PathBuf>,
    pub allow_non_private_statistics: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileBudget {
    pub epsilon: Option<f64>,
    pub delta: Option<f64>,
    pub ledger: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileLimits {
    pub max_model_bytes: Option<u64>,
    pub poll_wait_secs: Option<u64>,
    pub max_backoff_secs: Option<f64>,
}

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("{file}: {detail}")]
    File { file: String, detail: String },
    #[error("{0}")]
    Invalid(String),
}

/// Where the data is, what it is called and how to read it.
#[derive(Debug, Clone, PartialEq)]
pub struct DataConfig {
    pub path: PathBuf,
    /// The dataset whose ledger and budget this agent spends.
    pub dataset_id: String,
    pub label: String,
    pub features: Option<Vec<String>>,
    pub stats: Option<PathBuf>,
    /// Standardise with the records' own statistics when `stats` is absent, instead of the study's public feature
    /// ranges (no DP guarantee covers them).
    pub allow_non_private_statistics: bool,
}

/// The resolved configuration of `run`.
#[derive(Clone, PartialEq)]
pub struct AgentConfig {
    /// None: use the URL stored with the identity (the agent must have enrolled).
    pub coordinator_url: Option<String>,
    pub state_dir: PathBuf,
    pub name: Option<String>,
    pub enrolment_token: Option<String>,
    pub data: DataConfig,
    pub budget: Budget,
    /// The privacy ledger file of the dataset (may be shared by several agents).
    pub ledger: PathBuf,
    pub max_model_bytes: u64,
    pub poll_wait: Duration,
    pub max_backoff: Duration,
    pub log_format: LogFormat,
    /// Trusted CA, client certificate, plain-HTTP policy.
    pub tls: TlsOptions,
    pub security: SecurityConfig,
}

impl std::fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentConfig")
            .field("coordinator_url", &self.coordinator_url)
            .field("state_dir", &self.state_dir)
            .field("name", &self.name)
            .field(
                "enrolment_token",
                &self.enrolment_token.as_ref().map(|_| "<set>"),
            )
            .field("data", &self.data)
            .field("budget", &self.budget)
            .field("ledger", &self.ledger)
            .field("max_model_bytes", &self.max_model_bytes)
            .field("poll_wait", &self.poll_wait)
            .field("max_backoff", &self.max_backoff)
            .field("tls", &self.tls)
            .field("security", &self.security)
            .finish()
    }
}

/// Parses the config file text (`file` names it in errors).
pub fn parse_file(file: &str, text: &str) -> Result<FileConfig, ConfigError> {
    let err = |detail: String| ConfigError::File {
        file: file.to_string(),
        detail,
    };
    let value: toml::Table = toml::from_str(text).map_err(|e| err(e.to_string()))?;
    for key in ["enrolment_token", "enrollment_token", "token"] {
        if value.contains_key(key) {
            return Err(err(format!(
                "'{key}' is not read from the config file (it is a secret): pass --enrolment-token or set CONFIDE_ENROLMENT_TOKEN"
            )));
        }
    }
    toml::from_str(text).map_err(|e| err(e.to_string()))
}

/// A dataset id names a budget in the ledger and in logs: 1..=100 printable characters, no surrounding spaces.
pub fn check_dataset_id(id: &str) -> Result<(), ConfigError> {
    if id.is_empty()
        || id.trim() != id
        || id.chars().count() > MAX_DATASET_ID_LEN
        || id.chars().any(char::is_control)
    {
        return Err(ConfigError::Invalid(format!(
            "dataset id must be 1..={MAX_DATASET_ID_LEN} printable characters without surrounding spaces, got {id:?}"
        )));
    }
    Ok(())
}

/// The ledger file a config file names (`[budget] ledger`, else `<state_dir>/ledger.sqlite`), paths relative to
/// the file's directory `base`; `None` without a state directory.
pub fn ledger_path(file: &FileConfig, base: Option<&Path>) -> Option<PathBuf> {
    match (&file.budget.ledger, &file.state_dir) {
        (Some(l), _) => Some(relative_to(base, l.clone())),
        (None, Some(d)) => Some(relative_to(base, d.clone()).join(LEDGER_FILE)),
        (None, None) => None,
    }
}

fn relative_to(base: Option<&Path>, p: PathBuf) -> PathBuf {
    match base {
        Some(b) if p.is_relative() => b.join(p),
        _ => p,
    }
}

impl AgentConfig {
    /// Reads `--config` (if any) and merges: flags/env over file over defaults; checks every value.
    pub fn resolve(args: &RunArgs) -> Result<Self, ConfigError> {
        let (file, base) = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
                    file: path.display().to_string(),
                    detail: e.to_string(),
                })?;
                let base = path.parent().map(Path::to_path_buf);
                (parse_file(&path.display().to_string(), &text)?, base)
            }
            None => (FileConfig::default(), None),
        };
        Self::merge(args, file, base.as_deref())
    }

    /// Merges flags over a parsed file (paths in the file relative to `base`).
    pub fn merge(
        args: &RunArgs,
        file: FileConfig,
        base: Option<&Path>,
    ) -> Result<Self, ConfigError> {
        let missing = |flag: &str, env: &str, key: &str| {
            ConfigError::Invalid(format!(
                "missing {flag} (or {env}, or '{key}' in the config file)"
            ))
        };
        let rel = |p: Option<PathBuf>| p.map(|p| relative_to(base, p));
        let state_dir = args
            .state_dir
            .clone()
            .or(rel(file.state_dir))
            .ok_or_else(|| missing("--state-dir", "CONFIDE_STATE_DIR", "state_dir"))?;
        let data = DataConfig {
            path: args
                .data_path
                .clone()
                .or(rel(file.data.path))
                .ok_or_else(|| missing("--data", "CONFIDE_DATA", "[data] path"))?,
            dataset_id: args
                .dataset_id
                .clone()
                .or(file.data.dataset_id)
                .ok_or_else(|| {
                    missing("--dataset-id", "CONFIDE_DATASET_ID", "[data] dataset_id")
                })?,
            label: args
                .label
                .clone()
                .or(file.data.label)
                .ok_or_else(|| missing("--label", "CONFIDE_LABEL", "[data] label"))?,
            features: args.features.clone().or(file.data.features),
            stats: args.stats.clone().or(rel(file.data.stats)),
            allow_non_private_statistics: args.allow_non_private_statistics
                || file.data.allow_non_private_statistics.unwrap_or(false),
        };
        check_dataset_id(&data.dataset_id)?;
        let ledger = args
            .ledger
            .clone()
            .or(rel(file.budget.ledger))
            .unwrap_or_else(|| state_dir.join(LEDGER_FILE));
        let budget = Budget {
            epsilon: args.budget_epsilon.or(file.budget.epsilon).ok_or_else(|| {
                missing("--epsilon", "CONFIDE_BUDGET_EPSILON", "[budget] epsilon")
            })?,
            delta: args
                .budget_delta
                .or(file.budget.delta)
                .ok_or_else(|| missing("--delta", "CONFIDE_BUDGET_DELTA", "[budget] delta"))?,
        };
        if !(budget.epsilon.is_finite() && budget.epsilon > 0.0) {
            return Err(ConfigError::Invalid(format!(
                "budget epsilon must be a finite number > 0, got {}",
                budget.epsilon
            )));
        }
        if !(budget.delta > 0.0 && budget.delta < 1.0) {
            return Err(ConfigError::Invalid(format!(
                "budget delta must be in (0, 1), got {}",
                budget.delta
            )));
        }
        let tls = TlsOptions {
            ca_cert: args.ca_cert.clone().or(rel(file.tls.ca_cert)),
            client_cert: args.client_cert.clone().or(rel(file.tls.client_cert)),
            client_key: args.client_key.clone().or(rel(file.tls.client_key)),
            allow_insecure_http: args.allow_insecure_http
                || file.tls.allow_insecure_http.unwrap_or(false),
        };
        if tls.client_cert.is_some() != tls.client_key.is_some() {
            return Err(ConfigError::Invalid(
                "client_cert and client_key (--client-cert, --client-key) go together: give both or neither".into(),
            ));
        }
        let coordinator_url = args.coordinator_url.clone().or(file.coordinator_url);
        if let Some(url) = &coordinator_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ConfigError::Invalid(format!(
                    "coordinator URL must start with http:// or https://, got {url:?}"
                )));
            }
            check_url(url, tls.allow_insecure_http)
                .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        }
        let name = args.name.clone().or(file.name);
        if let Some(n) = &name
            && (n.trim().is_empty() || n.len() > 100 || n.chars().any(char::is_control))
        {
            return Err(ConfigError::Invalid(
                "name must be 1..=100 printable characters".into(),
            ));
        }
        let max_model_bytes = args
            .max_model_bytes
            .or(file.limits.max_model_bytes)
            .unwrap_or(DEFAULT_MAX_MODEL_BYTES);
        if max_model_bytes == 0 {
            return Err(ConfigError::Invalid("max_model_bytes must be > 0".into()));
        }
        let poll_wait_secs = args
            .poll_wait_secs
            .or(file.limits.poll_wait_secs)
            .unwrap_or(DEFAULT_POLL_WAIT_SECS);
        if poll_wait_secs > 3600 {
            return Err(ConfigError::Invalid(
                "poll_wait_secs must be at most 3600".into(),
            ));
        }
        let max_backoff_secs = args
            .max_backoff_secs
            .or(file.limits.max_backoff_secs)
            .unwrap_or(DEFAULT_MAX_BACKOFF_SECS);
        if !(max_backoff_secs.is_finite() && (0.1..=3600.0).contains(&max_backoff_secs)) {
            return Err(ConfigError::Invalid(
                "max_backoff_secs must be in [0.1, 3600]".into(),
            ));
        }
        let min_cohort = args
            .min_cohort
            .or(file.security.min_cohort)
            .unwrap_or(DEFAULT_MIN_COHORT);
        if min_cohort < 2 {
            return Err(ConfigError::Invalid(format!(
                "min_cohort must be at least 2 (with one other site, each could read the other's update from the sum), \
                 got {min_cohort}"
            )));
        }
        let accepted_peers = match args.accepted_peers.clone().or(file.security.accepted_peers) {
            None => None,
            Some(list) => {
                let list = list
                    .iter()
                    .map(|f| canonical_fingerprint(f))
                    .collect::<Result<Vec<_>, _>>()?;
                if (list.len() as u64) < u64::from(min_cohort) {
                    return Err(ConfigError::Invalid(format!(
                        "accepted_peers lists {} peer(s), fewer than min_cohort {min_cohort}: no round could be accepted",
                        list.len()
                    )));
                }
                Some(list)
            }
        };
        Ok(Self {
            security: SecurityConfig {
                min_cohort,
                accepted_peers,
            },
            coordinator_url,
            state_dir,
            name,
            enrolment_token: args
                .enrolment_token
                .clone()
                .filter(|t| !t.trim().is_empty()),
            data,
            budget,
            ledger,
            max_model_bytes,
            poll_wait: Duration::from_secs(poll_wait_secs),
            max_backoff: Duration::from_secs_f64(max_backoff_secs),
            log_format: args.log_format.or(file.log_format).unwrap_or_default(),
            tls,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEPLOY: &str = r#"
coordinator_url = "https://coordinator:8080"
state_dir = "/var/lib/confide-participant"
name = "hospital-a"

[data]
path = "data.csv"
dataset_id = "hospital-a-records"
label = "malignant"
stats = "stats.json"

[budget]
epsilon = 1.0
delta = 1e-5
"#;

    #[test]
    fn file_then_flags() {
        let file = parse_file("p.toml", DEPLOY).unwrap();
        let c = AgentConfig::merge(&RunArgs::default(), file.clone(), Some(Path::new("/etc/c")))
            .unwrap();
        assert_eq!(
            c.coordinator_url.as_deref(),
            Some("https://coordinator:8080")
        );
        assert_eq!(
            c.data.path,
            PathBuf::from("/etc/c/data.csv"),
            "relative to the file"
        );
        assert_eq!(c.state_dir, PathBuf::from("/var/lib/confide-participant"));
        assert_eq!(
            c.budget,
            Budget {
                epsilon: 1.0,
                delta: 1e-5
            }
        );
        assert_eq!(c.poll_wait, Duration::from_secs(DEFAULT_POLL_WAIT_SECS));
        assert_eq!(c.data.dataset_id, "hospital-a-records");
        assert_eq!(c.data.stats, Some(PathBuf::from("/etc/c/stats.json")));
        assert!(!c.data.allow_non_private_statistics);
        assert_eq!(
            c.ledger,
            PathBuf::from("/var/lib/confide-participant/ledger.sqlite"),
            "the ledger defaults to the state directory"
        );
        let flags = RunArgs {
            coordinator_url: Some("http://127.0.0.1:9".into()),
            budget_epsilon: Some(0.5),
            data_path: Some("x.csv".into()),
            poll_wait_secs: Some(2),
            ..RunArgs::default()
        };
        let c = AgentConfig::merge(&flags, file, Some(Path::new("/etc/c"))).unwrap();
        assert_eq!(c.coordinator_url.as_deref(), Some("http://127.0.0.1:9"));
        assert_eq!(c.budget.epsilon, 0.5);
        assert_eq!(
            c.data.path,
            PathBuf::from("x.csv"),
            "flags are relative to the cwd"
        );
        assert_eq!(c.poll_wait, Duration::from_secs(2));
    }

    #[test]
    fn every_deploy_file_parses() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/participants");
        for entry in std::fs::read_dir(root).unwrap() {
            let path = entry.unwrap().path().join("participant.toml");
            let args = RunArgs {
                config: Some(path.clone()),
                ..RunArgs::default()
            };
            let c =
                AgentConfig::resolve(&args).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(c.name.is_some(), "{}: a name to enrol with", path.display());
        }
    }

    #[test]
    fn the_dataset_id_is_required_statistics_are_optional_and_the_ledger_can_be_shared() {
        let without = |key: &str| {
            let text: String = DEPLOY
                .lines()
                .filter(|l| !l.starts_with(key))
                .map(|l| format!("{l}\n"))
                .collect();
            parse_file("p.toml", &text).unwrap()
        };
        let e = AgentConfig::merge(&RunArgs::default(), without("dataset_id"), None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--dataset-id") && e.contains("CONFIDE_DATASET_ID"),
            "{e}"
        );
        // No statistics file: the study's public feature ranges scale the records, nothing is needed here.
        let c = AgentConfig::merge(&RunArgs::default(), without("stats"), None).unwrap();
        assert!(!c.data.allow_non_private_statistics && c.data.stats.is_none());
        let allowed = RunArgs {
            allow_non_private_statistics: true,
            ..RunArgs::default()
        };
        let c = AgentConfig::merge(&allowed, without("stats"), None).unwrap();
        assert!(c.data.allow_non_private_statistics && c.data.stats.is_none());
        let mut file = without("stats");
        file.data.allow_non_private_statistics = Some(true);
        assert!(AgentConfig::merge(&RunArgs::default(), file, None).is_ok());
        // A shared ledger, relative to the config file; the flag wins.
        let mut file = parse_file("p.toml", DEPLOY).unwrap();
        file.budget.ledger = Some("../shared/ledger.sqlite".into());
        let c = AgentConfig::merge(&RunArgs::default(), file.clone(), Some(Path::new("/etc/c")))
            .unwrap();
        assert_eq!(c.ledger, PathBuf::from("/etc/c/../shared/ledger.sqlite"));
        assert_eq!(
            ledger_path(&file, Some(Path::new("/etc/c"))),
            Some(c.ledger)
        );
        let flag = RunArgs {
            ledger: Some("/l.sqlite".into()),
            dataset_id: Some("other".into()),
            ..RunArgs::default()
        };
        let c = AgentConfig::merge(&flag, file, None).unwrap();
        assert_eq!(
            (c.ledger.to_str(), c.data.dataset_id.as_str()),
            (Some("/l.sqlite"), "other")
        );
        for bad in ["", " padded", "a\nb", &"x".repeat(101)] {
            assert!(check_dataset_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn security_settings_from_file_and_flags() {
        let c = AgentConfig::merge(
            &RunArgs::default(),
            parse_file("p.toml", DEPLOY).unwrap(),
            None,
        )
        .unwrap();
        assert_eq!(c.security, SecurityConfig::default());
        assert_eq!(c.security.min_cohort, 3);
        let f1 = "AAAA:bbbb:cccc:dddd:eeee:ffff:0000:1111";
        let text = format!(
            "{DEPLOY}\n[security]\nmin_cohort = 2\naccepted_peers = [\"{f1}\", \"{}\"]\n",
            "2222333344445555666677778888999a"
        );
        let c = AgentConfig::merge(
            &RunArgs::default(),
            parse_file("p.toml", &text).unwrap(),
            None,
        )
        .unwrap();
        assert_eq!(c.security.min_cohort, 2);
        assert_eq!(
            c.security.accepted_peers,
            Some(vec![
                "aaaa:bbbb:cccc:dddd:eeee:ffff:0000:1111".to_string(),
                "2222:3333:4444:5555:6666:7777:8888:999a".to_string()
            ])
        );
        let bad = |args: RunArgs, text: &str| {
            AgentConfig::merge(&args, parse_file("p.toml", text).unwrap(), None)
                .unwrap_err()
                .to_string()
        };
        let flags = RunArgs {
            min_cohort: Some(1),
            ..RunArgs::default()
        };
        assert!(bad(flags, DEPLOY).contains("min_cohort"));
        // Fewer accepted peers than the minimum cohort could never take part.
        let flags = RunArgs {
            min_cohort: Some(3),
            ..RunArgs::default()
        };
        assert!(bad(flags, &text).contains("fewer than min_cohort"));
        let flags = RunArgs {
            accepted_peers: Some(vec!["not-a-fingerprint".into(); 3]),
            ..RunArgs::default()
        };
        assert!(bad(flags, DEPLOY).contains("not a fingerprint"));
    }

    #[test]
    fn bad_files_and_values_are_refused() {
        let e = parse_file("p.toml", "enrolment_token = \"abc\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("CONFIDE_ENROLMENT_TOKEN"), "{e}");
        let e = parse_file("p.toml", "state_dri = \"x\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("state_dri"), "{e}");
        let file = parse_file("p.toml", DEPLOY).unwrap();
        let bad = |args: RunArgs| {
            AgentConfig::merge(&args, file.clone(), None)
                .unwrap_err()
                .to_string()
        };
        assert!(
            bad(RunArgs {
                budget_epsilon: Some(-1.0),
                ..Default::default()
            })
            .contains("epsilon")
        );
        assert!(
            bad(RunArgs {
                budget_delta: Some(1.0),
                ..Default::default()
            })
            .contains("delta")
        );
        assert!(
            bad(RunArgs {
                coordinator_url: Some("ftp://x".into()),
                ..Default::default()
            })
            .contains("http")
        );
        // Plain HTTP only to loopback, unless allowed; a client key needs its certificate.
        let e = bad(RunArgs {
            coordinator_url: Some("http://coordinator:8080".into()),
            ..Default::default()
        });
        assert!(
            e.contains("--allow-insecure-http") && e.contains("https://"),
            "{e}"
        );
        let insecure = RunArgs {
            coordinator_url: Some("http://coordinator:8080".into()),
            allow_insecure_http: true,
            ..Default::default()
        };
        assert!(AgentConfig::merge(&insecure, file.clone(), None).is_ok());
        let mut tls_file = file.clone();
        tls_file.tls.allow_insecure_http = Some(true);
        tls_file.tls.ca_cert = Some("ca.pem".into());
        let c = AgentConfig::merge(&insecure, tls_file, Some(Path::new("/etc/c"))).unwrap();
        assert_eq!(c.tls.ca_cert, Some(PathBuf::from("/etc/c/ca.pem")));
        let e = bad(RunArgs {
            client_key: Some("k.pem".into()),
            ..Default::default()
        });
        assert!(e.contains("client_cert"), "{e}");
        let e = AgentConfig::merge(&RunArgs::default(), FileConfig::default(), None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--state-dir") && e.contains("CONFIDE_STATE_DIR"),
            "{e}"
        );
    }
}
