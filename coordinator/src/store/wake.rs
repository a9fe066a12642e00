//! Change announcements between coordinator processes that share one database, so that a long-poll or a round
//! driver in one process wakes at once when another process stores a message or closes a stage.
//!
//! Postgres: `NOTIFY` on a channel per schema, payload = the announcing process and the topics; each process
//! `LISTEN`s and ignores its own announcements. SQLite has no notifications: a watcher reads `PRAGMA
//! data_version`, which changes when another connection (another process) commits — it cannot say what changed,
//! so every local waiter re-checks.

use std::time::Duration;

use sqlx::postgres::PgListener;

use super::{Backend, Store, StoreError, StoreResult};

/// What a change concerns: one round (its driver and its operator long-polls), one participant (its task poll), or
/// the study schedulers (a round ended, a run started or stopped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WakeTopic {
    Round(i64),
    Participant(i64),
    Schedule,
}

impl WakeTopic {
    fn encode(self) -> String {
        match self {
            WakeTopic::Round(id) => format!("r{id}"),
            WakeTopic::Participant(id) => format!("p{id}"),
            WakeTopic::Schedule => "s".to_string(),
        }
    }

    fn parse(s: &str) -> Option<Self> {
        if s == "s" {
            return Some(WakeTopic::Schedule);
        }
        let (kind, id) = s.split_at_checked(1)?;
        let id = id.parse().ok()?;
        match kind {
            "r" => Some(WakeTopic::Round(id)),
            "p" => Some(WakeTopic::Participant(id)),
            _ => None,
        }
    }
}

/// What another process announced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerChange {
    /// These topics changed.
    Topics(Vec<WakeTopic>),
    /// Something changed (or notifications may have been lost): every waiter should re-check.
    Unknown,
}

/// How often the SQLite watcher reads the data version.
const SQLITE_WATCH_INTERVAL: Duration = Duration::from_millis(100);

/// Postgres payloads are limited to 8000 bytes; topics are sent in chunks well below that.
const TOPICS_PER_NOTIFICATION: usize = 400;

/// A process's view of other processes' changes ([`Store::watch_peers`]).
pub struct PeerWatch {
    inner: Watch,
    origin: String,
}

enum Watch {
    Postgres(Box<PgListener>),
    Sqlite { store: Store, version: Option<i64> },
}

impl PeerWatch {
    /// The next change another process announced (waits for it).
    pub async fn next(&mut self) -> StoreResult<PeerChange> {
        match &mut self.inner {
            Watch::Postgres(listener) => loop {
                match listener.try_recv().await? {
                    // The connection dropped and was re-established: anything sent meanwhile is lost.
                    None => return Ok(PeerChange::Unknown),
                    Some(n) => {
                        let Some((origin, topics)) = n.payload().split_once(' ') else {
                            return Ok(PeerChange::Unknown);
                        };
                        if origin == self.origin {
                            continue;
                        }
                        let topics: Option<Vec<WakeTopic>> =
                            topics.split(',').map(WakeTopic::parse).collect();
                        return Ok(topics.map_or(PeerChange::Unknown, PeerChange::Topics));
                    }
                }
            },
            Watch::Sqlite { store, version } => loop {
                tokio::time::sleep(SQLITE_WATCH_INTERVAL).await;
                let now: i64 = sqlx::query_scalar("PRAGMA data_version")
                    .fetch_one(&store.pool)
                    .await?;
                let changed = version.is_some_and(|v| v != now);
                *version = Some(now);
                if changed {
                    return Ok(PeerChange::Unknown);
                }
            },
        }
    }
}

impl Store {
    /// The notification channel of this database (one per Postgres schema).
    fn wake_channel(&self) -> String {
        format!(
            "confide_wake_{}",
            self.schema.as_deref().unwrap_or("public")
        )
    }

    /// Tells the other coordinator processes on this database that `topics` changed; `origin` is this process
    /// (its own announcements come back and are ignored). Nothing to do on SQLite (see [`PeerWatch`]).
    pub async fn announce(&self, origin: &str, topics: &[WakeTopic]) -> StoreResult<()> {
        if self.backend != Backend::Postgres || topics.is_empty() {
            return Ok(());
        }
        let channel = self.wake_channel();
        for chunk in topics.chunks(TOPICS_PER_NOTIFICATION) {
            let list: Vec<String> = chunk.iter().map(|t| t.encode()).collect();
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(&channel)
                .bind(format!("{origin} {}", list.join(",")))
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// Starts watching other processes' announcements; `origin` is this process.
    pub async fn watch_peers(&self, origin: &str) -> StoreResult<PeerWatch> {
        let inner = match self.backend {
            Backend::Postgres => {
                let url = self.url.as_deref().ok_or_else(|| {
                    StoreError::Refused("no database URL to listen on".to_string())
                })?;
                let mut listener = PgListener::connect(url).await?;
                listener.listen(&self.wake_channel()).await?;
                Watch::Postgres(Box::new(listener))
            }
            Backend::Sqlite => Watch::Sqlite {
                store: self.clone(),
                version: None,
            },
        };
        Ok(PeerWatch {
            inner,
            origin: origin.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_survive_the_payload_encoding() {
        for t in [
            WakeTopic::Round(0),
            WakeTopic::Round(i64::MAX),
            WakeTopic::Participant(42),
            WakeTopic::Schedule,
        ] {
            assert_eq!(WakeTopic::parse(&t.encode()), Some(t));
        }
        for bad in ["", "r", "x1", "r1x", "p-", "é1"] {
            assert_eq!(WakeTopic::parse(bad), None, "{bad:?}");
        }
    }
}
