//! The privacy ledger: the list of everything released about a dataset, from which ε is always recomputed.

use serde::{Deserialize, Serialize};

use super::DpError;
use super::pld::{EpsilonBounds, PldAccountant};
use super::rdp::RdpAccountant;

/// One privacy-relevant release, in units of a sensitivity-1 mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PrivacyEvent {
    /// `steps` steps of DP-SGD: Poisson sampling with rate q, Gaussian noise with multiplier σ (noise std / clip norm).
    SubsampledGaussian {
        /// Poisson sampling rate q, in (0, 1].
        sampling_rate: f64,
        /// Noise multiplier σ (> 0).
        noise_multiplier: f64,
        /// Number of steps (≥ 1).
        steps: u64,
    },
    /// A small release through opendp's zCDP Gaussian mechanism, ρ = (Δ/σ)²/2.
    /// RDP: ρ·α at every order. PLD: the Gaussian mechanism with noise multiplier 1/√(2ρ) — exact, since a
    /// Gaussian release with ρ-zCDP *is* that Gaussian mechanism (not merely bounded by it).
    ZcdpGaussian {
        /// ρ of the release (> 0).
        rho: f64,
    },
}

impl PrivacyEvent {
    /// Checks the parameters: q in (0, 1], σ finite and > 0, steps ≥ 1, ρ finite and > 0.
    pub fn validate(&self) -> Result<(), DpError> {
        match *self {
            PrivacyEvent::SubsampledGaussian {
                sampling_rate,
                noise_multiplier,
                steps,
            } => {
                if !(sampling_rate > 0.0 && sampling_rate <= 1.0) {
                    return Err(DpError::InvalidSamplingRate(sampling_rate));
                }
                if !(noise_multiplier.is_finite() && noise_multiplier > 0.0) {
                    return Err(DpError::InvalidNoiseMultiplier(noise_multiplier));
                }
                if steps == 0 {
                    return Err(DpError::ZeroSteps);
                }
                Ok(())
            }
            PrivacyEvent::ZcdpGaussian { rho } => {
                if rho.is_finite() && rho > 0.0 {
                    Ok(())
                } else {
                    Err(DpError::InvalidRho(rho))
                }
            }
        }
    }

    /// μ² of the equivalent Gaussian mechanism when this event is an unsampled Gaussian (q = 1 or zCDP), else None.
    pub(crate) fn gaussian_mu_squared(&self) -> Option<f64> {
        match *self {
            PrivacyEvent::SubsampledGaussian {
                sampling_rate,
                noise_multiplier,
                steps,
            } => {
                (sampling_rate == 1.0).then(|| steps as f64 / (noise_multiplier * noise_multiplier))
            }
            PrivacyEvent::ZcdpGaussian { rho } => Some(2.0 * rho),
        }
    }
}

/// Which accountant turns a ledger into (ε, δ).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum AccountantKind {
    /// Privacy-loss-distribution accountant: tight (to the discretisation) and pessimistic. The default.
    #[default]
    Pld,
    /// Rényi-DP accountant: fast, looser.
    Rdp,
}

impl AccountantKind {
    /// The lowercase name used in JSON and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            AccountantKind::Pld => "pld",
            AccountantKind::Rdp => "rdp",
        }
    }
}

impl std::fmt::Display for AccountantKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for AccountantKind {
    type Err = DpError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "pld" => Ok(AccountantKind::Pld),
            "rdp" => Ok(AccountantKind::Rdp),
            _ => Err(DpError::UnknownAccountant(s.to_owned())),
        }
    }
}

/// Everything released about one dataset. ε is recomputed from the whole list on every question.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PrivacyLedger {
    pub events: Vec<PrivacyEvent>,
}

impl PrivacyLedger {
    /// An empty ledger (ε = 0).
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends an event after validating it; an invalid event leaves the ledger unchanged.
    pub fn record(&mut self, event: PrivacyEvent) -> Result<(), DpError> {
        event.validate()?;
        self.events.push(event);
        Ok(())
    }

    /// ε at `delta` of everything in the ledger (0 when empty): the PLD's certified upper bound, or RDP's bound.
    pub fn epsilon(&self, delta: f64, kind: AccountantKind) -> Result<f64, DpError> {
        epsilon(&self.events, delta, kind)
    }

    /// The PLD accountant's certified upper and lower bounds on ε at `delta` (both 0 when empty).
    pub fn epsilon_bounds(&self, delta: f64) -> Result<EpsilonBounds, DpError> {
        PldAccountant::default().epsilon_bounds(&self.events, delta)
    }

    /// δ at `epsilon` of everything in the ledger (0 when empty).
    pub fn delta(&self, epsilon: f64, kind: AccountantKind) -> Result<f64, DpError> {
        match kind {
            AccountantKind::Pld => PldAccountant::default().delta(&self.events, epsilon),
            AccountantKind::Rdp => RdpAccountant::default().delta(&self.events, epsilon),
        }
    }

    /// ε at `delta` if `planned` were added to the ledger: what a budget check must compare with the budget.
    pub fn epsilon_with(
        &self,
        planned: &[PrivacyEvent],
        delta: f64,
        kind: AccountantKind,
    ) -> Result<f64, DpError> {
        let mut all = self.events.clone();
        all.extend_from_slice(planned);
        epsilon(&all, delta, kind)
    }
}

/// The events validated, with identical mechanisms merged, in a canonical order: the one form both accountants
/// compute from, so that ε does not depend on how a ledger is ordered or split. Subsampled Gaussians with
/// bit-identical (q, σ) become one event with the summed steps (T steps then T' steps of one mechanism are T + T'
/// steps of it; an overflow is an error); events are sorted by kind, then by the bits of (q, σ) or ρ (all positive,
/// so bit order is numeric order). zCDP releases are only sorted.
pub fn merge_events(events: &[PrivacyEvent]) -> Result<Vec<PrivacyEvent>, DpError> {
    for event in events {
        event.validate()?;
    }
    let mut sorted = events.to_vec();
    sorted.sort_by_key(canonical_key);
    let mut merged: Vec<PrivacyEvent> = Vec::with_capacity(sorted.len());
    for event in sorted {
        if let (
            Some(PrivacyEvent::SubsampledGaussian {
                sampling_rate: q0,
                noise_multiplier: s0,
                steps,
            }),
            PrivacyEvent::SubsampledGaussian {
                sampling_rate,
                noise_multiplier,
                steps: more,
            },
        ) = (merged.last_mut(), event)
            && q0.to_bits() == sampling_rate.to_bits()
            && s0.to_bits() == noise_multiplier.to_bits()
        {
            *steps = steps.checked_add(more).ok_or(DpError::StepsOverflow {
                sampling_rate,
                noise_multiplier,
            })?;
            continue;
        }
        merged.push(event);
    }
    Ok(merged)
}

/// Sort key of `merge_events`: kind, then the parameters' bits.
fn canonical_key(event: &PrivacyEvent) -> (u8, u64, u64) {
    match *event {
        PrivacyEvent::SubsampledGaussian {
            sampling_rate,
            noise_multiplier,
            ..
        } => (0, sampling_rate.to_bits(), noise_multiplier.to_bits()),
        PrivacyEvent::ZcdpGaussian { rho } => (1, rho.to_bits(), 0),
    }
}

/// ε at `delta` of a list of events with the chosen accountant's default settings: for PLD the certified upper
/// bound (see [`PrivacyLedger::epsilon_bounds`] for both bounds), for RDP its own bound.
pub fn epsilon(events: &[PrivacyEvent], delta: f64, kind: AccountantKind) -> Result<f64, DpError> {
    match kind {
        AccountantKind::Pld => PldAccountant::default().epsilon(events, delta),
        AccountantKind::Rdp => RdpAccountant::default().epsilon(events, delta),
    }
}
