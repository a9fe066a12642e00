//! The reports of `confide bench secagg`: costs per client step and server stage, signature costs, one round's
//! report, and the malicious mode's overhead over repeated pairs.
use serde::Serialize;

use confide_common::secagg::ThreatModel;

use super::{GraphChoice, median};

/// Wall-clock and process CPU seconds (all threads).
#[derive(Clone, Copy, Default, Serialize)]
pub(super) struct Cost {
    pub(super) wall: f64,
    pub(super) cpu: f64,
}

impl std::ops::AddAssign for Cost {
    fn add_assign(&mut self, o: Cost) {
        self.wall += o.wall;
        self.cpu += o.cpu;
    }
}

impl Cost {
    pub(super) fn per(self, n: usize) -> Cost {
        let n = n.max(1) as f64;
        Cost {
            wall: self.wall / n,
            cpu: self.cpu / n,
        }
    }
}

/// Mean cost per client of each step (over the clients that took it) and their sum.
#[derive(Default, Serialize)]
pub(super) struct ClientCosts {
    pub(super) advertise_keys: Cost,
    pub(super) share_keys: Cost,
    pub(super) share_verification: Cost,
    pub(super) masking: Cost,
    pub(super) consistency_check: Cost,
    pub(super) unmasking: Cost,
    pub(super) total: Cost,
}

/// The server's total cost in each stage (handling every message, then closing the stage) and their sum.
#[derive(Default, Serialize)]
pub(super) struct ServerCosts {
    pub(super) advertise_keys: Cost,
    pub(super) share_keys: Cost,
    pub(super) share_verification: Cost,
    pub(super) masked_input_collection: Cost,
    pub(super) consistency_check: Cost,
    pub(super) unmasking: Cost,
    pub(super) total: Cost,
}

/// Ed25519 costs on this machine and how many operations one round needs.
#[derive(Serialize)]
pub(super) struct SignatureCosts {
    pub(super) sign_microseconds: f64,
    pub(super) verify_microseconds: f64,
    /// Per signature, verifying 100 at once as the clients do (`Roster::verify_all`: batches over the cores).
    pub(super) batch_verify_microseconds: f64,
    pub(super) signatures_per_client: usize,
    pub(super) verifications_per_client: usize,
    pub(super) verifications_by_server: usize,
}

#[derive(Serialize)]
pub(in crate::cli) struct SecaggReport {
    pub(super) threat_model: ThreatModel,
    pub(super) correct: bool,
    pub(super) participants: u32,
    pub(super) params: u32,
    pub(super) dropout: f64,
    pub(super) graph: GraphChoice,
    pub(super) degree: u32,
    pub(super) threshold: u32,
    pub(super) max_corrupt: u32,
    pub(super) bits: u32,
    pub(super) threads: usize,
    pub(super) dropped: usize,
    pub(super) survivors: usize,
    pub(super) prg_vector_seconds: f64,
    pub(super) prg_vector_cpu_seconds: f64,
    pub(super) client: ClientCosts,
    pub(super) client_mask_vectors: f64,
    /// Masking time ÷ (mask vectors × PRG / vector), wall-clock and CPU time.
    pub(super) client_mask_prg_ratio: f64,
    pub(super) client_mask_prg_cpu_ratio: f64,
    pub(super) server: ServerCosts,
    pub(super) server_unmask_vectors: usize,
    pub(super) server_unmask_prg_ratio: f64,
    pub(super) server_unmask_prg_cpu_ratio: f64,
    pub(super) server_state_bytes: usize,
    pub(super) signatures: Option<SignatureCosts>,
    pub(super) total_seconds: f64,
}

impl SecaggReport {
    pub(in crate::cli) fn correct(&self) -> bool {
        self.correct
    }
    pub(in crate::cli) fn degree(&self) -> u32 {
        self.degree
    }
    pub(in crate::cli) fn threshold(&self) -> u32 {
        self.threshold
    }
    pub(in crate::cli) fn total_seconds(&self) -> f64 {
        self.total_seconds
    }
    /// Mean wall time of one client's ShareKeys step.
    pub(in crate::cli) fn client_share_keys_seconds(&self) -> f64 {
        self.client.share_keys.wall
    }
    /// Mean wall time of one client's masking step.
    pub(in crate::cli) fn client_mask_seconds(&self) -> f64 {
        self.client.masking.wall
    }
    /// The server's wall time in the Unmasking stage.
    pub(in crate::cli) fn server_unmask_seconds(&self) -> f64 {
        self.server.unmasking.wall
    }
}

/// Malicious cost ÷ semi-honest cost − 1, per client and per server, wall-clock and CPU time.
#[derive(Serialize)]
pub(super) struct Overhead {
    pub(super) client_wall: f64,
    pub(super) client_cpu: f64,
    pub(super) server_wall: f64,
    pub(super) server_cpu: f64,
}

/// The totals of one semi-honest / malicious pair (per client and per server).
#[derive(Serialize)]
pub(super) struct PairTotals {
    pub(super) semi_honest_client: Cost,
    pub(super) malicious_client: Cost,
    pub(super) semi_honest_server: Cost,
    pub(super) malicious_server: Cost,
}

#[derive(Serialize)]
pub(super) struct ComparisonReport {
    /// The last pair's full reports.
    pub(super) semi_honest: SecaggReport,
    pub(super) malicious: SecaggReport,
    /// Every pair's totals, in the order run.
    pub(super) pairs: Vec<PairTotals>,
    /// From the median totals over all pairs.
    pub(super) malicious_overhead: Overhead,
}

impl Overhead {
    /// Malicious ÷ semi-honest − 1 of the median totals.
    pub(super) fn of_medians(pairs: &[PairTotals]) -> Overhead {
        let med = |f: &dyn Fn(&PairTotals) -> f64| median(pairs.iter().map(f).collect());
        let ratio = |m: f64, s: f64| m / s - 1.0;
        Overhead {
            client_wall: ratio(
                med(&|p| p.malicious_client.wall),
                med(&|p| p.semi_honest_client.wall),
            ),
            client_cpu: ratio(
                med(&|p| p.malicious_client.cpu),
                med(&|p| p.semi_honest_client.cpu),
            ),
            server_wall: ratio(
                med(&|p| p.malicious_server.wall),
                med(&|p| p.semi_honest_server.wall),
            ),
            server_cpu: ratio(
                med(&|p| p.malicious_server.cpu),
                med(&|p| p.semi_honest_server.cpu),
            ),
        }
    }
}
