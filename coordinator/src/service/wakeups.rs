//! Who to wake after a change: long-polls and round drivers wait on one [`Topic`] each and are woken only by the
//! changes that concern them — a participant's poll by its own rounds' stage changes, a round's driver and the
//! operators watching it by that round — never by every change in the process. So 500 idle polls of other
//! studies, or of participants not selected, cost nothing while a round runs.
//!
//! Other coordinator processes sharing the database learn of a change through the store
//! ([`crate::store::Store::announce`]: Postgres `NOTIFY`; SQLite: its data version, which wakes every local waiter,
//! since it cannot say what changed). Waiters still re-check on a slow timer ([`SAFETY_NET`]), so a lost
//! notification costs latency, never correctness.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::Notify;

use crate::store::WakeTopic;

/// What a waiter waits for.
pub type Topic = WakeTopic;

/// The longest a waiter sleeps without a notification before it re-reads the database anyway.
pub const SAFETY_NET: Duration = Duration::from_secs(5);

/// Live waiters by topic. An entry lives as long as someone holds its [`Notify`]; dead entries are pruned as the
/// map grows.
#[derive(Default)]
pub struct Wakeups {
    topics: Mutex<HashMap<Topic, Weak<Notify>>>,
}

impl Wakeups {
    /// The notifier of `topic`. Create the `notified()` future before reading the state it guards: a change
    /// announced after that point is never missed.
    pub fn topic(&self, topic: Topic) -> Arc<Notify> {
        let Ok(mut topics) = self.topics.lock() else {
            return Arc::new(Notify::new()); // poisoned: the caller falls back to the safety net
        };
        if let Some(n) = topics.get(&topic).and_then(Weak::upgrade) {
            return n;
        }
        if topics.len() >= 64 && topics.len().is_power_of_two() {
            topics.retain(|_, n| n.strong_count() > 0);
        }
        let n = Arc::new(Notify::new());
        topics.insert(topic, Arc::downgrade(&n));
        n
    }

    /// Wakes the current waiters of each topic (in this process).
    pub fn wake(&self, topics: impl IntoIterator<Item = Topic>) {
        let Ok(map) = self.topics.lock() else {
            return;
        };
        for t in topics {
            if let Some(n) = map.get(&t).and_then(Weak::upgrade) {
                n.notify_waiters();
            }
        }
    }

    /// Wakes every waiter (a change whose topic is unknown, e.g. another process wrote to a shared SQLite file).
    pub fn wake_everyone(&self) {
        let live: Vec<Arc<Notify>> = match self.topics.lock() {
            Ok(map) => map.values().filter_map(Weak::upgrade).collect(),
            Err(_) => return,
        };
        for n in live {
            n.notify_waiters();
        }
    }

    /// Number of topics with live waiters (for tests).
    pub fn live_topics(&self) -> usize {
        self.topics
            .lock()
            .map(|m| m.values().filter(|n| n.strong_count() > 0).count())
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_change_wakes_only_its_own_topic() {
        let w = Wakeups::default();
        let (mine, other) = (
            w.topic(Topic::Participant(1)),
            w.topic(Topic::Participant(2)),
        );
        let (a, b) = (mine.notified(), other.notified());
        w.wake([Topic::Participant(1), Topic::Round(9)]);
        tokio::time::timeout(Duration::from_millis(100), a)
            .await
            .expect("woken");
        assert!(
            tokio::time::timeout(Duration::from_millis(50), b)
                .await
                .is_err(),
            "another participant's poll must sleep on"
        );
        let c = other.notified();
        w.wake_everyone();
        tokio::time::timeout(Duration::from_millis(100), c)
            .await
            .expect("woken by wake_everyone");
    }

    #[tokio::test]
    async fn one_notifier_per_live_topic_and_dead_ones_are_pruned() {
        let w = Wakeups::default();
        let held = w.topic(Topic::Round(1));
        assert!(Arc::ptr_eq(&held, &w.topic(Topic::Round(1))));
        for i in 0..200 {
            drop(w.topic(Topic::Participant(i)));
        }
        assert_eq!(w.live_topics(), 1);
        assert!(w.topics.lock().unwrap().len() < 200);
    }
}
