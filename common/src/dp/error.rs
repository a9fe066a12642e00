//! The one error type of the privacy module: every message says which input was wrong and why.

use thiserror::Error;

/// Why a privacy computation (accounting, calibration, noise seeding) could not be done.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum DpError {
    /// The Poisson sampling rate q must lie in (0, 1].
    #[error("sampling rate q must be a finite number in (0, 1], got {0}")]
    InvalidSamplingRate(f64),
    /// The noise multiplier σ (noise standard deviation / sensitivity) must be finite and positive.
    #[error("noise multiplier σ must be a finite number > 0, got {0}")]
    InvalidNoiseMultiplier(f64),
    /// δ must lie strictly between 0 and 1.
    #[error("δ must be a finite number in (0, 1), got {0}")]
    InvalidDelta(f64),
    /// ε must be finite and non-negative.
    #[error("ε must be a finite number ≥ 0, got {0}")]
    InvalidEpsilon(f64),
    /// A target ε for calibration must be finite and positive.
    #[error("target ε must be a finite number > 0, got {0}")]
    InvalidTargetEpsilon(f64),
    /// A DP-SGD run must have at least one step.
    #[error("number of steps must be at least 1, got 0")]
    ZeroSteps,
    /// A zCDP parameter ρ must be finite and positive.
    #[error("zCDP ρ must be a finite number > 0, got {0}")]
    InvalidRho(f64),
    /// A Rényi order must be finite and greater than 1.
    #[error("Rényi order α must be a finite number > 1, got {0}")]
    InvalidOrder(f64),
    /// A standard deviation for noise must be finite and non-negative.
    #[error("noise standard deviation must be a finite number ≥ 0, got {0}")]
    InvalidStdDev(f64),
    /// Calibration could not reach the target ε with any noise multiplier in the searched range.
    #[error(
        "target ε = {target_epsilon} at δ = {delta} is unreachable: even noise multiplier σ = {max_noise_multiplier} gives ε = {achieved_epsilon}"
    )]
    TargetUnreachable {
        target_epsilon: f64,
        delta: f64,
        max_noise_multiplier: f64,
        achieved_epsilon: f64,
    },
    /// An accountant name that is neither `pld` nor `rdp`.
    #[error("unknown accountant {0:?}: expected \"pld\" or \"rdp\"")]
    UnknownAccountant(String),
    /// The PLD grid interval must be finite and positive.
    #[error("PLD discretisation interval must be a finite number > 0, got {0}")]
    InvalidDiscretization(f64),
    /// No finite ε reaches the requested δ: the accountant's pessimistic tail mass already exceeds it.
    #[error(
        "δ = {delta} is below what the PLD accountant can certify (its pessimistic mass at infinite loss is {floor}); use a larger δ"
    )]
    DeltaBelowResolution { delta: f64, floor: f64 },
    /// Merging a ledger's events of one mechanism (q, σ) would add up to more steps than 64 bits hold.
    #[error(
        "the ledger's steps at sampling rate q = {sampling_rate}, noise multiplier σ = {noise_multiplier} add up to more than 2^64 − 1; no ε can be computed for it"
    )]
    StepsOverflow {
        sampling_rate: f64,
        noise_multiplier: f64,
    },
    /// A PLD self-check found NaN/∞ (or a negative mass) where a finite number was expected.
    #[error(
        "PLD self-check failed: {what} contains {value} where a finite, non-negative number was expected; the accountant cannot certify ε for this ledger — use fewer steps or more noise (or the RDP accountant), and report it as a bug"
    )]
    PldNotFinite { what: &'static str, value: f64 },
    /// A PLD self-check found a total probability mass off from what it must be.
    #[error(
        "PLD self-check failed: {what} has total mass {got}, expected {expected} ± {tolerance}; the accountant cannot certify ε for this ledger — use fewer steps, more noise or a larger δ (or the RDP accountant), and report it as a bug"
    )]
    PldMassMismatch {
        what: &'static str,
        expected: f64,
        got: f64,
        tolerance: f64,
    },
    /// A discretised PLD is not the PLD of any pair of distributions (Σ p·e^{−l} > 1).
    #[error(
        "PLD self-check failed: {what} has Σ p·e^(−loss) = {q_mass} > 1 + {tolerance}, so it is not a valid privacy curve; the accountant cannot certify ε — report it as a bug"
    )]
    PldInvalidCurve {
        what: &'static str,
        q_mass: f64,
        tolerance: f64,
    },
    /// The certified upper bound came out below the lower bound: one of them is wrong.
    #[error(
        "PLD self-check failed: the upper bound ε = {upper} is below the lower bound ε = {lower}; the accountant cannot certify ε for this ledger — report it as a bug (the RDP accountant is an independent fallback)"
    )]
    PldBoundsCrossed { upper: f64, lower: f64 },
    /// The operating system could not provide entropy to seed the noise generator.
    #[error("could not seed the noise generator from operating-system entropy: {0}")]
    Entropy(String),
}
