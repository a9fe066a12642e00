//! `confide-coordinator`: the operator's service (HTTP API, database, round orchestration, metrics).

use std::net::SocketAddr;

use anyhow::Context;
use clap::{Parser, Subcommand};
use confide_coordinator::{Limits, Store};
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
    },
    /// Create the database (SQLite) and apply pending migrations, then exit.
    Migrate,
    /// Operator tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create an operator token; it is printed once and stored only hashed.
    Create {
        /// A unique name for the token (who or what uses it).
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
    let store = Store::connect(&cli.database_url, cli.database_schema.as_deref())
        .await
        .with_context(|| format!("opening database {}", redact(&cli.database_url)))?;
    match cli.command {
        Command::Migrate => {
            println!("database migrated");
        }
        Command::Token {
            command: TokenCommand::Create { name },
        } => {
            let token = store.create_operator_token(&name).await?;
            println!("{token}");
            eprintln!("operator token {name:?} created; it is shown only once");
        }
        Command::Serve {
            listen,
            max_json_body,
            max_model_bytes,
            lease_ttl_ms,
        } => {
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
            let state = confide_coordinator::start(store.clone(), limits).await?;
            println!("listening on http://{addr}");
            tracing::info!(%addr, backend = ?store.backend(), "coordinator listening");
            confide_coordinator::serve(listener, state, shutdown_signal()).await?;
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
