//! Studies that run themselves: the schedule a study runs on, the requests that start and stop its run, and where
//! the run is (`POST /v1/studies/{id}/run|stop`, `StudyInfo.schedule` and `StudyInfo.run`).

use serde::{Deserialize, Serialize};

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

/// How a study's rounds are started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum StudySchedule {
    /// The operator starts each round (`POST /v1/studies/{id}/rounds`).
    #[default]
    Manual,
    /// The coordinator starts the next round itself when one ends, until the study's `rounds` have completed, the
    /// budget allows no further round, or a round aborted more than `max_retries` times in a row.
    Automatic {
        /// Seconds to wait after a round ends before starting the next.
        pause_secs: u64,
        /// How many times in a row an aborted round is started again before the run gives up.
        max_retries: u32,
    },
}

/// Default retries of an aborted round in an automatic schedule.
pub const DEFAULT_MAX_RETRIES: u32 = 2;
/// Longest pause between rounds of an automatic schedule (7 days).
pub const MAX_PAUSE_SECS: u64 = 7 * 86_400;
/// Most retries of an aborted round an automatic schedule may ask for.
pub const MAX_RETRIES: u32 = 100;

fn default_max_retries() -> u32 {
    DEFAULT_MAX_RETRIES
}

/// `POST /v1/studies/{id}/run`: the coordinator runs the study's remaining rounds back to back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RunStudyRequest {
    /// Seconds to wait after a round ends before starting the next (0..=604800, default 0).
    #[serde(default)]
    pub pause_secs: u64,
    /// How many times in a row an aborted round is started again before the run gives up (0..=100, default 2).
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
}

impl Default for RunStudyRequest {
    fn default() -> Self {
        Self {
            pause_secs: 0,
            max_retries: DEFAULT_MAX_RETRIES,
        }
    }
}

/// `POST /v1/studies/{id}/stop`: no further round is started (a running round finishes; abort it to end it now).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct StopStudyRequest {
    /// Why, kept with the run (1..=500 characters; default "stopped by the operator").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Where a study's run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// The coordinator starts the next round when one ends (`reason` says what it waits for, if anything).
    Running,
    /// The operator stopped it.
    Stopped,
    /// Every one of the study's `rounds` completed.
    Completed,
    /// The privacy budget allows no further round with enough participants.
    OutOfBudget,
    /// A round aborted more than `max_retries` times in a row, or the next round could not be started.
    Failed,
}

impl RunState {
    pub const ALL: [Self; 5] = [
        Self::Running,
        Self::Stopped,
        Self::Completed,
        Self::OutOfBudget,
        Self::Failed,
    ];

    /// The name on the wire and in the database (`studies.run_state`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Stopped => "stopped",
            Self::Completed => "completed",
            Self::OutOfBudget => "out_of_budget",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// A study's run: the coordinator starting its rounds on its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct StudyRun {
    /// Where the run is.
    pub state: RunState,
    /// When it started (Unix ms).
    pub started_at_ms: i64,
    /// When it stopped, completed or gave up.
    pub ended_at_ms: Option<i64>,
    /// Why it ended; while running, what it waits for (e.g. too few participants enrolled yet), if anything.
    pub reason: Option<String>,
    /// The study's last round number when the run started: the run's rounds are those numbered after it.
    pub after_round: i64,
}
