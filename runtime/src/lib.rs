//! What every Confide process needs from its surroundings, in one place: the async runtime, logging, shutdown on
//! SIGTERM/SIGINT and the wall clock.
//!
//! It is its own small crate because `confide-common` is pure (no clocks, no I/O) and the three binaries and the
//! two libraries that read the clock (the coordinator's store, the agent's ledger) would otherwise each keep a copy.

use std::time::{SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;

/// Milliseconds since the Unix epoch: every time Confide stores or sends (a clock before 1970 reads as 0).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// How a process writes its log lines (on stderr).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (coloured on a terminal).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The default filter when `RUST_LOG` is unset: informative, without sqlx's per-statement lines.
pub const DEFAULT_LOG_FILTER: &str = "info,sqlx=warn";

/// Installs the global log subscriber: stderr, filtered by `RUST_LOG` (default [`DEFAULT_LOG_FILTER`]).
/// Call once, at the start of `main`.
pub fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
}

/// The multi-threaded tokio runtime of a Confide command: two workers, which is what the machines it targets have
/// and all that HTTP, SQLite and waiting need (training and summing run on blocking threads of their own).
pub fn tokio_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
}

/// Resolves on the first SIGTERM or SIGINT (Ctrl-C), logging which. If the handlers cannot be installed it says
/// so and never resolves (the process can still be killed).
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!("cannot install signal handlers; stop this process with SIGKILL");
        return std::future::pending().await;
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(signal = name, "shutting down");
}

/// A token cancelled on the first SIGTERM or SIGINT (spawns the watcher; call inside the runtime).
pub fn cancel_on_shutdown_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        cancel.cancel();
    });
    token
}

/// Atomically replaces `dir/name` with `bytes`, readable by the owner only (mode 0600), durably: written to a
/// temporary file beside it, synced, renamed, and the directory synced. For secrets on disk (an agent's identity
/// and keys, an operator's profile, a compose `.env` with enrolment tokens): a crash leaves the old file or the new
/// one, never half of one, and never a moment with wider permissions.
pub fn write_private_file(dir: &std::path::Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(name))?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_reads_milliseconds_since_1970() {
        let before = now_ms();
        // 2020-01-01 in ms; any machine running this is later.
        assert!(before > 1_577_836_800_000);
        assert!(now_ms() >= before);
    }

    #[test]
    fn a_signal_cancels_the_token() {
        let rt = tokio_runtime().unwrap();
        rt.block_on(async {
            let token = cancel_on_shutdown_signal();
            // Let the watcher install its handlers before the signal arrives.
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            assert!(!token.is_cancelled());
            std::process::Command::new("kill")
                .args(["-TERM", &std::process::id().to_string()])
                .status()
                .unwrap();
            tokio::time::timeout(std::time::Duration::from_secs(5), token.cancelled())
                .await
                .expect("SIGTERM cancelled the token");
        });
    }
}
