//! The agent's side of the wire: the HTTP client, retries with backoff, and the one outgoing message kept until the
//! coordinator has it.
//!
//! Every request that fails in transport (or with 429/5xx) is retried after an exponentially growing, jittered
//! wait; a computed message whose upload failed is re-sent unchanged, and a 409 ("already sent" or "the stage
//! moved on") counts as delivered. So a coordinator restart or a flaky network costs time, not the round.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use confide_client::ClientError;
use confide_common::api::RoundStage;

use super::{Agent, AgentError, Next, debug};

/// First retry after 125–250 ms.
const FIRST_RETRY: Duration = Duration::from_millis(125);

/// Exponential backoff with jitter (the `backon` crate): the n-th consecutive failure waits a uniform time in
/// [d, 2d) with d = min(cap/2, 125 ms · 2^n), so no wait exceeds `cap`. Cancellation is the caller's: every wait
/// is raced against the agent's shutdown token.
#[derive(Debug)]
pub(super) struct Backoff {
    builder: ExponentialBuilder,
    delays: ExponentialBackoff,
    cap: Duration,
}

impl Backoff {
    pub(super) fn new(cap: Duration) -> Self {
        // backon adds a jitter in [0, d) to the delay d, so its delay is capped at half the longest wait.
        let half = cap / 2;
        let builder = ExponentialBuilder::new()
            .with_min_delay(FIRST_RETRY.min(half))
            .with_max_delay(half)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times();
        Self {
            builder,
            delays: builder.build(),
            cap,
        }
    }

    /// How long to wait after one more consecutive failure.
    pub(super) fn next(&mut self) -> Duration {
        // Without a limit on attempts or total delay the iterator never ends; the cap is the fallback all the same.
        self.delays.next().unwrap_or(self.cap)
    }

    /// After a success: the next failure waits the shortest time again.
    pub(super) fn reset(&mut self) {
        self.delays = self.builder.build();
    }

    /// The backoff as a `backon` builder, for retrying one request (enrolment).
    pub(super) fn builder(&self) -> ExponentialBuilder {
        self.builder
    }
}

pub(super) fn http_client() -> Result<reqwest::Client, AgentError> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| AgentError::Fatal(format!("HTTP client: {e}")))
}

/// A message computed for the coordinator, kept until it is delivered (re-sent unchanged after transport errors).
pub(super) enum Outgoing {
    Message {
        round_id: i64,
        stage: RoundStage,
        body: Vec<u8>,
    },
    Decline {
        round_id: i64,
        reason: String,
    },
}

impl Outgoing {
    fn round_id(&self) -> i64 {
        match self {
            Self::Message { round_id, .. } | Self::Decline { round_id, .. } => *round_id,
        }
    }
}

pub(super) fn credential_rejected(e: &ClientError) -> AgentError {
    AgentError::Fatal(format!(
        "the coordinator rejected this agent's credential ({e}); if the study was recreated, move the state \
         directory's identity.json away and enrol again with a new token"
    ))
}

impl Agent {
    /// Transient errors are retried; a rejected credential is fatal; other refusals abandon the current step.
    pub(super) fn classify(&mut self, e: ClientError) -> Result<Next, AgentError> {
        if e.status() == Some(401) {
            return Err(credential_rejected(&e));
        }
        if e.is_transient() {
            return Ok(Next::Retry(e));
        }
        tracing::warn!(error = %e, "request refused; sitting this step out");
        Ok(Next::Pause)
    }

    /// Sends an outgoing message. `Ok(None)` when delivered (or when the coordinator already has it / no longer
    /// wants it); `Ok(Some(..))` to retry after a transient failure.
    pub(super) async fn deliver(
        &mut self,
        out: Outgoing,
    ) -> Result<Option<(Outgoing, ClientError)>, AgentError> {
        let result = match &out {
            Outgoing::Message {
                round_id,
                stage: RoundStage::MaskedInputCollection,
                body,
            } => self.client.post_masked_input(*round_id, body.clone()).await,
            Outgoing::Message {
                round_id,
                stage,
                body,
            } => {
                let json = String::from_utf8_lossy(body).into_owned();
                self.client
                    .post_control_message(*round_id, *stage, json)
                    .await
            }
            Outgoing::Decline { round_id, reason } => {
                self.client.decline_round(*round_id, reason).await
            }
        };
        match result {
            Ok(()) => {}
            Err(e) if e.status() == Some(409) => {
                // Already stored (an earlier attempt got through) or the stage moved on: nothing to re-send.
                tracing::info!(round_id = out.round_id(), detail = %e, "coordinator already has this message or moved on");
            }
            Err(e) if e.status() == Some(401) => return Err(credential_rejected(&e)),
            Err(e) if e.is_transient() => return Ok(Some((out, e))),
            Err(e) => {
                tracing::warn!(round_id = out.round_id(), error = %e, "message refused; leaving the round");
                self.abandon(out.round_id());
                return Ok(None);
            }
        }
        match &out {
            Outgoing::Message {
                round_id, stage, ..
            } => {
                if let Some(s) = self.session.as_mut().filter(|s| s.round_id == *round_id) {
                    s.answered.insert(*stage);
                    tracing::info!(round = s.round_number, stage = stage.as_str(), "sent");
                }
                if *stage == RoundStage::ShareKeys {
                    debug::crash_point(debug::AFTER_SHARE_KEYS);
                }
            }
            Outgoing::Decline { round_id, .. } => {
                tracing::info!(round_id = *round_id, "declined the round");
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_secs(2));
        let waits: Vec<Duration> = (0..8).map(|_| b.next()).collect();
        assert!(waits[0] >= Duration::from_millis(125) && waits[0] <= Duration::from_millis(250));
        assert!(waits.iter().all(|w| *w <= Duration::from_secs(2)));
        assert!(waits[7] >= Duration::from_secs(1));
        b.reset();
        assert!(b.next() <= Duration::from_millis(250));
        // A cap below the first wait is still respected.
        let mut tiny = Backoff::new(Duration::from_millis(100));
        assert!((0..5).all(|_| tiny.next() <= Duration::from_millis(100)));
    }
}
