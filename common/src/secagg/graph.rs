//! Neighbour graphs: who shares secrets and pairwise masks with whom.
//!
//! The complete graph is the classic protocol (every pair masks). The sparse option is the SecAgg+ Harary graph
//! H(k, n): participants are placed on a ring in a pseudo-random order (from the round's graph seed) and each is
//! joined to the k/2 nearest on each side, so per-client work grows with k, not n. The degree k and the threshold
//! t are derived from n, the expected dropout rate and the tolerated corrupt fraction (see [`derive_graph`]).

use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};

use super::ParticipantId;
use super::error::{Result, SecAggError};
use super::params::{ThreatModel, corrupt_count, malicious_threshold_bound};
use crate::dp::special::log_binom;

/// The kind of neighbour graph of a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GraphKind {
    /// Every participant is a neighbour of every other (Bonawitz et al. 2017).
    Complete,
    /// Harary graph of even degree `degree` over a seeded random ordering (Bell et al. 2020).
    Harary { degree: u32 },
}

/// What the round must withstand; the graph degree and threshold follow from it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SecurityRequirements {
    /// Number of participants enrolled in the round.
    pub participants: u32,
    /// Expected fraction of participants that drop out during the round.
    pub dropout_rate: f64,
    /// Fraction of participants that may collude with the server.
    pub corrupt_fraction: f64,
    /// Use a sparse (SecAgg+) graph when it is cheaper than the complete graph (semi-honest rounds only).
    pub sparse: bool,
    /// The server the round must withstand (absent in older configurations: semi-honest).
    #[serde(default)]
    pub threat_model: ThreatModel,
}

/// log2 of the tolerated probability that some neighbourhood has ≥ t corrupt members (security).
const SECURITY_BITS: f64 = 40.0;
/// log2 of the tolerated probability that some neighbourhood keeps < t survivors (correctness).
const CORRECTNESS_BITS: f64 = 20.0;

/// P[Bin(n, p) ≥ k].
fn binomial_upper_tail(n: u32, p: f64, k: u32) -> f64 {
    if k == 0 {
        return 1.0;
    }
    if p <= 0.0 {
        return 0.0;
    }
    if p >= 1.0 {
        return if k <= n { 1.0 } else { 0.0 };
    }
    (k..=n)
        .map(|i| {
            (log_binom(f64::from(n), f64::from(i))
                + f64::from(i) * p.ln()
                + f64::from(n - i) * (1.0 - p).ln())
            .exp()
        })
        .sum()
}

/// Smallest threshold that is a strict majority of a neighbourhood of `size` (self included) and that the
/// corrupt members of a neighbourhood reach with probability at most 2^-40 over all n neighbourhoods.
fn security_threshold(size: u32, n: u32, corrupt_fraction: f64) -> u32 {
    let mut t = size / 2 + 1;
    while t <= size
        && f64::from(n) * binomial_upper_tail(size, corrupt_fraction, t) > 2f64.powf(-SECURITY_BITS)
    {
        t += 1;
    }
    t
}

/// Chooses the graph and threshold for the requirements.
///
/// Complete graph: t is the smallest strict majority of n that corrupt participants cannot reach, and the expected
/// survivors n·(1 − dropout) must reach it. Sparse: the smallest even degree k for which, in every neighbourhood of
/// k + 1, corrupt members reach t with probability ≤ 2^-40 and survivors fall below t with probability ≤ 2^-20
/// (binomial tails, union bound over the n neighbourhoods); falls back to the complete graph when k would be n − 1.
pub fn derive_graph(req: &SecurityRequirements) -> Result<(GraphKind, u32)> {
    let n = req.participants;
    let (d, g) = (req.dropout_rate, req.corrupt_fraction);
    if n < 2 {
        return Err(SecAggError::InvalidParams(
            "need at least 2 participants".into(),
        ));
    }
    if !(0.0..1.0).contains(&d) || !(0.0..0.5).contains(&g) {
        return Err(SecAggError::InvalidParams(
            "dropout rate must be in [0, 1) and corrupt fraction in [0, 0.5)".into(),
        ));
    }
    if req.threat_model == ThreatModel::Malicious {
        return derive_malicious(req);
    }
    if req.sparse {
        let mut k = 2;
        while k + 1 < n {
            let size = k + 1;
            let t = security_threshold(size, n, g);
            if t <= size {
                let fail = f64::from(n) * (1.0 - binomial_upper_tail(size, 1.0 - d, t));
                if fail <= 2f64.powf(-CORRECTNESS_BITS) {
                    return Ok((GraphKind::Harary { degree: k }, t));
                }
            }
            k += 2;
        }
    }
    let t = (n / 2 + 1).max((f64::from(n) * g).floor() as u32 + 1);
    let expected_survivors = (f64::from(n) * (1.0 - d)).floor() as u32;
    if t > expected_survivors {
        return Err(SecAggError::InvalidParams(format!(
            "threshold {t} exceeds the {expected_survivors} participants expected to survive (n = {n}, dropout {d})"
        )));
    }
    Ok((GraphKind::Complete, t))
}

/// Malicious server: the complete graph (sparse graphs are refused, see the module docs of `secagg`) and the least
/// threshold of [`malicious_threshold_bound`] for n_c = ⌈corrupt fraction · n⌉ colluders, which the expected
/// survivors must reach.
fn derive_malicious(req: &SecurityRequirements) -> Result<(GraphKind, u32)> {
    let n = req.participants;
    if req.sparse {
        return Err(SecAggError::InvalidParams(
            "sparse (SecAgg+) graphs are not offered against a malicious server: the server could choose or grind \
             the ring order and show different graphs to different clients; use the complete graph"
                .into(),
        ));
    }
    let t = malicious_threshold_bound(n, corrupt_count(n, req.corrupt_fraction));
    let expected_survivors = (f64::from(n) * (1.0 - req.dropout_rate)).floor() as u32;
    if t > n || t > expected_survivors {
        return Err(SecAggError::InvalidParams(format!(
            "threshold {t} (t > (n + n_c)/2 against a malicious server) exceeds the {expected_survivors} participants \
             expected to survive (n = {n}, dropout {}, corrupt fraction {})",
            req.dropout_rate, req.corrupt_fraction
        )));
    }
    Ok((GraphKind::Complete, t))
}

/// A concrete neighbour graph over participants `0..n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeighbourGraph {
    n: u32,
    kind: GraphKind,
    /// position[participant] on the Harary ring.
    position: Vec<u32>,
    /// participant at each ring position.
    order: Vec<u32>,
}

impl NeighbourGraph {
    /// Builds the graph; for Harary graphs the ring order is a permutation drawn from `seed`.
    pub fn new(n: u32, kind: GraphKind, seed: &[u8; 32]) -> Result<Self> {
        if n < 2 {
            return Err(SecAggError::InvalidParams(
                "need at least 2 participants".into(),
            ));
        }
        let (position, order) = match kind {
            GraphKind::Complete => (Vec::new(), Vec::new()),
            GraphKind::Harary { degree } => {
                if degree < 2 || degree % 2 != 0 || degree + 1 >= n {
                    return Err(SecAggError::InvalidParams(format!(
                        "Harary degree must be even, ≥ 2 and < n − 1 (use the complete graph otherwise); got {degree} for n = {n}"
                    )));
                }
                let mut order: Vec<u32> = (0..n).collect();
                let mut rng = ChaCha20Rng::from_seed(*seed);
                rand::seq::SliceRandom::shuffle(&mut order[..], &mut rng);
                let mut position = vec![0u32; n as usize];
                for (pos, &p) in order.iter().enumerate() {
                    position[p as usize] = pos as u32;
                }
                (position, order)
            }
        };
        Ok(NeighbourGraph {
            n,
            kind,
            position,
            order,
        })
    }

    /// Number of participants.
    pub fn participants(&self) -> u32 {
        self.n
    }

    /// The graph kind.
    pub fn kind(&self) -> GraphKind {
        self.kind
    }

    /// Number of neighbours of each participant (excluding itself).
    pub fn degree(&self) -> u32 {
        match self.kind {
            GraphKind::Complete => self.n - 1,
            GraphKind::Harary { degree } => degree,
        }
    }

    /// Whether `u` and `v` are distinct neighbours.
    pub fn are_neighbours(&self, u: ParticipantId, v: ParticipantId) -> bool {
        if u == v || u >= self.n || v >= self.n {
            return false;
        }
        match self.kind {
            GraphKind::Complete => true,
            GraphKind::Harary { degree } => {
                let (pu, pv) = (self.position[u as usize], self.position[v as usize]);
                let dist = pu.abs_diff(pv);
                dist.min(self.n - dist) <= degree / 2
            }
        }
    }

    /// The neighbours of `u` (excluding `u`), in ascending id order.
    pub fn neighbours(&self, u: ParticipantId) -> Vec<ParticipantId> {
        if u >= self.n {
            return Vec::new();
        }
        match self.kind {
            GraphKind::Complete => (0..self.n).filter(|&v| v != u).collect(),
            GraphKind::Harary { degree } => {
                let p = self.position[u as usize];
                let half = degree / 2;
                let mut out: Vec<u32> = (1..=half)
                    .flat_map(|d| [(p + d) % self.n, (p + self.n - d) % self.n])
                    .map(|q| self.order[q as usize])
                    .collect();
                out.sort_unstable();
                out
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn harary_graph_is_regular_and_symmetric() {
        let g = NeighbourGraph::new(50, GraphKind::Harary { degree: 8 }, &[7; 32]).unwrap();
        for u in 0..50 {
            let nb = g.neighbours(u);
            assert_eq!(nb.len(), 8);
            assert!(!nb.contains(&u));
            for &v in &nb {
                assert!(g.are_neighbours(u, v) && g.are_neighbours(v, u));
                assert!(g.neighbours(v).contains(&u));
            }
            assert_eq!((0..50).filter(|&v| g.are_neighbours(u, v)).count(), 8);
        }
        // A different seed gives a different graph.
        let h = NeighbourGraph::new(50, GraphKind::Harary { degree: 8 }, &[8; 32]).unwrap();
        assert!((0..50).any(|u| g.neighbours(u) != h.neighbours(u)));
    }

    #[test]
    fn invalid_graphs_are_rejected() {
        assert!(NeighbourGraph::new(10, GraphKind::Harary { degree: 3 }, &[0; 32]).is_err());
        assert!(NeighbourGraph::new(10, GraphKind::Harary { degree: 10 }, &[0; 32]).is_err());
        assert!(NeighbourGraph::new(1, GraphKind::Complete, &[0; 32]).is_err());
    }

    #[test]
    fn derived_parameters_are_sane() {
        let req = |n, sparse| SecurityRequirements {
            participants: n,
            dropout_rate: 0.1,
            corrupt_fraction: 0.05,
            sparse,
            threat_model: ThreatModel::SemiHonest,
        };
        let (kind, t) = derive_graph(&req(100, false)).unwrap();
        assert_eq!(kind, GraphKind::Complete);
        assert_eq!(t, 51);
        let (kind, t) = derive_graph(&req(1000, true)).unwrap();
        let GraphKind::Harary { degree } = kind else {
            panic!("expected a sparse graph for n = 1000")
        };
        assert!(degree < 200, "degree {degree}");
        assert!(2 * t > degree + 1 && t <= degree + 1);
        // Far too many dropouts for a majority threshold.
        let bad = SecurityRequirements {
            participants: 10,
            dropout_rate: 0.6,
            corrupt_fraction: 0.0,
            sparse: false,
            threat_model: ThreatModel::SemiHonest,
        };
        assert!(derive_graph(&bad).is_err());
        // Small n falls back to the complete graph even when sparse is asked for.
        assert_eq!(derive_graph(&req(10, true)).unwrap().0, GraphKind::Complete);
    }

    #[test]
    fn malicious_rounds_derive_the_complete_graph_at_the_bound() {
        let req = |n, sparse, dropout_rate| SecurityRequirements {
            participants: n,
            dropout_rate,
            corrupt_fraction: 0.05,
            sparse,
            threat_model: ThreatModel::Malicious,
        };
        assert_eq!(
            derive_graph(&req(100, false, 0.1)).unwrap(),
            (GraphKind::Complete, 53)
        );
        assert_eq!(
            derive_graph(&req(3, false, 0.0)).unwrap(),
            (GraphKind::Complete, 3)
        );
        let sparse = derive_graph(&req(1000, true, 0.1)).unwrap_err().to_string();
        assert!(sparse.contains("malicious server"), "{sparse}");
        // 10 participants, 1 may be corrupt: t = 6, which 50 % dropout cannot reach.
        assert!(derive_graph(&req(10, false, 0.5)).is_err());
    }

    #[test]
    fn binomial_tail_matches_exact_values() {
        assert!((binomial_upper_tail(4, 0.5, 3) - 5.0 / 16.0).abs() < 1e-12);
        assert!((binomial_upper_tail(10, 0.1, 0) - 1.0).abs() < 1e-12);
    }
}
