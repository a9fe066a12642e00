//! `confide-coordinator`: the operator's service (HTTP API, database, round orchestration, metrics).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use confide_coordinator::transport::{self, ConnLimits, ListenError, TlsFiles};
use confide_coordinator::{HttpOptions, Limits, MetricsAccess, ServeOptions, Store};
use confide_runtime::{LogFormat, init_tracing, shutdown_signal};

/// Default database: an embedded SQLite file in the working directory.
const DEFAULT_DATABASE_URL: &str = "sqlite:confide-coordinator.db";

#[derive(Parser)]
#[command(
    name = "confide-coordinator",
    version,
    about = "Confide coordinator: runs studies and secure-aggregation rounds"
)]
struct Cli {
    /// Database URL: sqlite:PATH (created and migrated on start) or postgres://USER@HOST/DB.
    #[arg(long, global = true, env = "CONFIDE_DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    database_url: String,
    /// Postgres schema to use (created if missing); default: the connection's search_path.
    #[arg(long, global = true, env = "CONFIDE_DATABASE_SCHEMA")]
    database_schema: Option<String>,
    /// Log as JSON lines instead of text (filter with RUST_LOG, default info).
    #[arg(long, global = true, env = "CONFIDE_LOG_JSON")]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API and drive rounds.
    Serve {
        /// Address to listen on (port 0 picks a free port; the bound address is printed on stdout).
        #[arg(long, env = "CONFIDE_LISTEN", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Largest JSON request body in bytes.
        #[arg(long, default_value_t = 4 << 20)]
        max_json_body: usize,
        /// Largest model a study may declare or upload, in bytes of f32 parameters (initial weights travel as
        /// base64 in the create-study body, which may be 4/3 of this plus 1 MiB).
        #[arg(long, env = "CONFIDE_MAX_MODEL_BYTES", default_value_t = 256 << 20)]
        max_model_bytes: usize,
        /// Round lease lifetime in milliseconds: another process takes over a round whose driver died after this.
        #[arg(long, env = "CONFIDE_LEASE_TTL_MS", default_value_t = 6000)]
        lease_ttl_ms: u64,
        #[command(flatten)]
        transport: TransportArgs,
    },
    /// Create the database (SQLite) and apply pending migrations, then exit.
    Migrate,
    /// Drop the Postgres schema named by --database-schema with every table in it (e.g. after a benchmark).
    DropSchema,
    /// Operator tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// TLS helpers.
    Tls {
        #[command(subcommand)]
        command: TlsCommand,
    },
}

#[derive(Subcommand)]
enum TlsCommand {
    /// Write a throw-away CA, a server certificate for --host names and a client certificate (PEM) into --out, for
    /// local runs and the compose stack's first start. Not for production: bring your own PKI there.
    Generate {
        /// Folder to write ca.pem, coordinator.pem, coordinator-key.pem, client.pem, client-key.pem into.
        #[arg(long)]
        out: PathBuf,
        /// Host names or IP addresses the server certificate names (repeat the flag).
        #[arg(long = "host", required = true)]
        hosts: Vec<String>,
        /// Leave existing files alone (exit 0) instead of refusing to overwrite them.
        #[arg(long)]
        keep_existing: bool,
    },
}

/// How the API is exposed: TLS, client certificates, connection limits, metrics.
#[derive(clap::Args)]
struct TransportArgs {
    /// PEM certificate chain (leaf first) to serve HTTPS with; re-read with the key on SIGHUP.
    #[arg(long, env = "CONFIDE_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "CONFIDE_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// PEM CA certificate(s): participant routes then need a client certificate signed by one of them (mTLS).
    #[arg(long, env = "CONFIDE_CLIENT_CA")]
    client_ca: Option<PathBuf>,
    /// Serve plain HTTP on a non-loopback address (refused otherwise): only behind a TLS-terminating proxy or on
    /// a network you trust.
    #[arg(long, env = "CONFIDE_ALLOW_INSECURE_HTTP")]
    allow_insecure_http: bool,
    /// Seconds a client may take to send a request header; also how long an idle connection stays open.
    #[arg(long, env = "CONFIDE_HEADER_TIMEOUT_SECS", default_value_t = 10)]
    header_timeout_secs: u64,
    /// Seconds a request body may pause between chunks.
    #[arg(long, env = "CONFIDE_BODY_TIMEOUT_SECS", default_value_t = 30)]
    body_timeout_secs: u64,
    /// Most connections open at once (further ones are closed at once).
    #[arg(long, env = "CONFIDE_MAX_CONNECTIONS", default_value_t = 1024)]
    max_connections: usize,
    /// Bearer token that /metrics requires on the API listener (needed there unless it is a loopback address).
    #[arg(long, env = "CONFIDE_METRICS_TOKEN", hide_env_values = true)]
    metrics_token: Option<String>,
    /// A separate plain-HTTP listener serving only /metrics (loopback unless --allow-insecure-http).
    #[arg(long, env = "CONFIDE_METRICS_ADDR")]
    metrics_addr: Option<SocketAddr>,
}

impl TransportArgs {
    fn limits(&self) -> ConnLimits {
        ConnLimits {
            header_timeout: Duration::from_secs(self.header_timeout_secs.max(1)),
            body_timeout: Duration::from_secs(self.body_timeout_secs.max(1)),
            max_connections: self.max_connections.max(1),
        }
    }

    /// Checks the combination and loads the TLS material.
    fn options(&self, listen: SocketAddr) -> anyhow::Result<ServeOptions> {
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: self.client_ca.clone(),
            }),
            (None, None) if self.client_ca.is_some() => {
                return Err(ListenError::ClientCaWithoutTls.into());
            }
            (None, None) => None,
            _ => return Err(ListenError::HalfTls.into()),
        };
        transport::check_plain_http(listen, tls.is_some(), self.allow_insecure_http)?;
        if let Some(addr) = self.metrics_addr {
            transport::check_plain_http(addr, false, self.allow_insecure_http)
                .context("--metrics-addr serves plain HTTP")?;
        }
        let metrics = match &self.metrics_token {
            Some(t) if t.trim().len() < 16 => {
                anyhow::bail!("--metrics-token must be at least 16 characters")
            }
            Some(t) => MetricsAccess::Bearer(t.trim().to_string()),
            None if transport::is_loopback(listen.ip()) => MetricsAccess::Open,
            None => MetricsAccess::Elsewhere,
        };
        let tls = match tls {
            None => None,
            Some(files) => {
                let (config, cert) = transport::tls::server_config(&files)?;
                transport::tls::reload_on_sighup(cert).context("installing the SIGHUP handler")?;
                Some((config, files.client_ca.is_some()))
            }
        };
        Ok(ServeOptions {
            tls,
            limits: self.limits(),
            http: HttpOptions { metrics },
        })
    }
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create an operator token; it is printed once and stored only hashed.
    Create {
        /// A unique name for the token (who or what uses it).
        #[arg(long)]
        name: String,
    },
    /// List operator tokens (names, creation and revocation times; never the secrets).
    List,
    /// Revoke an operator token: every coordinator process sharing the database refuses it from now on (401).
    Revoke {
        /// The token's name.
        #[arg(long)]
        name: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing(if cli.log_json {
        LogFormat::Json
    } else {
        LogFormat::Text
    });
    // Needs no database.
    if let Command::Tls {
        command:
            TlsCommand::Generate {
                out,
                hosts,
                keep_existing,
            },
    } = &cli.command
    {
        let files = confide_client::devcert::DevCerts::in_dir(out);
        if files.ca_cert.exists() || files.server_cert.exists() {
            if *keep_existing {
                eprintln!("{} already holds certificates; kept", out.display());
                return Ok(());
            }
            anyhow::bail!(
                "{} already holds certificates; remove them or pass --keep-existing",
                out.display()
            );
        }
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        confide_client::devcert::generate(out, hosts)?;
        eprintln!(
            "wrote a CA and certificates for {hosts:?} into {} (throw-away: not for production)",
            out.display()
        );
        return Ok(());
    }
    let store = Store::connect(&cli.database_url, cli.database_schema.as_deref())
        .await
        .with_context(|| format!("opening database {}", redact(&cli.database_url)))?;
    match cli.command {
        Command::Migrate => {
            println!("database migrated");
        }
        Command::DropSchema => {
            let schema = cli
                .database_schema
                .as_deref()
                .context("drop-schema needs --database-schema")?;
            store.drop_schema(schema).await?;
            store.close().await;
            println!("schema {schema} dropped");
        }
        Command::Tls { .. } => {}
        Command::Token {
            command: TokenCommand::Create { name },
        } => {
            let token = store.create_operator_token(&name).await?;
            println!("{token}");
            eprintln!("operator token {name:?} created; it is shown only once");
        }
        Command::Token {
            command: TokenCommand::List,
        } => {
            for t in store.list_operator_tokens().await? {
                let revoked = t
                    .revoked_at
                    .map_or_else(|| "active".to_string(), |ms| format!("revoked at {ms} ms"));
                println!("{}\tcreated at {} ms\t{revoked}", t.name, t.created_at);
            }
        }
        Command::Token {
            command: TokenCommand::Revoke { name },
        } => {
            store.revoke_operator_token(&name).await?;
            eprintln!("operator token {name:?} revoked");
        }
        Command::Serve {
            listen,
            max_json_body,
            max_model_bytes,
            lease_ttl_ms,
            transport,
        } => {
            let options = transport.options(listen)?;
            let scheme = if options.tls.is_some() {
                "https"
            } else {
                "http"
            };
            let limits = Limits {
                json_body_bytes: max_json_body,
                model_bytes: max_model_bytes,
                lease_ttl: std::time::Duration::from_millis(lease_ttl_ms.max(100)),
                ..Limits::default()
            };
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("binding {listen}"))?;
            let addr = listener.local_addr()?;
            let metrics_listener = match transport.metrics_addr {
                Some(a) => Some(
                    tokio::net::TcpListener::bind(a)
                        .await
                        .with_context(|| format!("binding the metrics listener {a}"))?,
                ),
                None => None,
            };
            let state = confide_coordinator::start(store.clone(), limits).await?;
            println!("listening on {scheme}://{addr}");
            if let Some(m) = metrics_listener {
                println!("metrics on http://{}/metrics", m.local_addr()?);
                let access = match &options.http.metrics {
                    MetricsAccess::Bearer(t) => MetricsAccess::Bearer(t.clone()),
                    _ => MetricsAccess::Open,
                };
                tokio::spawn(confide_coordinator::serve_metrics(
                    m,
                    state.clone(),
                    access,
                    options.limits.clone(),
                ));
            }
            tracing::info!(%addr, tls = options.tls.is_some(), mtls = options.tls.as_ref().is_some_and(|t| t.1), backend = ?store.backend(), "coordinator listening");
            confide_coordinator::serve_with(listener, state, options, shutdown_signal()).await?;
            store.close().await;
        }
    }
    Ok(())
}

/// A database URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}
