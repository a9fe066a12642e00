//! Round parameters: who takes part, the threshold, the graph, the ring — and the threat model they were derived for.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::error::SecAggError;
use super::graph::{GraphKind, NeighbourGraph, SecurityRequirements, derive_graph};
use super::identity::Roster;
use super::{MAX_PARTICIPANTS, MAX_VECTOR_LEN, RoundId};

/// Which server the round must withstand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThreatModel {
    /// The server follows the protocol but may read everything it receives (and collude with participants that
    /// do the same). Four stages, no signatures.
    #[default]
    SemiHonest,
    /// The server may deviate arbitrarily (substitute keys, lie about who dropped, show different views) and
    /// collude with up to `max_corrupt` participants that deviate too. Signed messages against the round's roster,
    /// verifiable shares, a share-verification and a consistency-check stage; threshold bound
    /// [`malicious_threshold_bound`]; complete graph only.
    Malicious,
}

/// The smallest threshold a malicious-server round with `n` participants, up to `max_corrupt` of them colluding
/// with the server, may use: t = ⌊(n + n_c)/2⌋ + 1, i.e. the least t with 2t > n + n_c.
///
/// Why: every honest participant signs at most one survivor set U3 and reveals shares only for a set that t
/// members signed. Two different sets with t signatures each need 2(t − n_c) distinct honest signers, at most
/// n − n_c exist; so 2t > n + n_c leaves the server one certified U3, for which honest holders reveal exactly one
/// kind of share per participant. The other kind it could only get from the n_c colluders plus the honest holders
/// that left the round after revealing their share-decryption key in a complaint; getting t of those leaves fewer
/// than t − n_c honest signers for U3 — the same inequality. (Bonawitz et al. 2017, active-server variant.)
pub fn malicious_threshold_bound(n: u32, max_corrupt: u32) -> u32 {
    (n + max_corrupt) / 2 + 1
}

/// ⌈fraction · n⌉: how many of `n` participants a tolerated corrupt fraction means (a product within 1e-9 of an
/// integer counts as that integer, so 0.1 · 30 is 3, not 4).
pub fn corrupt_count(n: u32, fraction: f64) -> u32 {
    let x = fraction.max(0.0) * f64::from(n);
    let nearest = x.round();
    let count = if (x - nearest).abs() < 1e-9 {
        nearest
    } else {
        x.ceil()
    };
    count.min(f64::from(n)) as u32
}

/// Parameters of one round, fixed when the round starts and known to every participant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecAggParams {
    /// Round id, bound into every derived key and message.
    pub round_id: RoundId,
    /// Number of participants; their ids are `0..participants`.
    pub participants: u32,
    /// Shamir threshold t: shares needed to rebuild a secret; also the fewest survivors a stage may close with.
    pub threshold: u32,
    /// Neighbour graph.
    pub graph: GraphKind,
    /// Seed of the Harary ring order (should come from a fresh CSPRNG draw; ignored for the complete graph).
    #[serde(with = "super::messages::b64_array")]
    pub graph_seed: [u8; 32],
    /// Ring elements per input (including the weight coordinate when quantising with
    /// [`super::QuantizationParams`]).
    pub vector_len: u32,
    /// Ring Z_{2^bits}, 1 ≤ bits ≤ 32.
    pub bits: u32,
    /// The server this round withstands (absent in older plans: semi-honest).
    #[serde(default)]
    pub threat_model: ThreatModel,
    /// n_c: participants that may collude with the server, ⌈corrupt fraction · n⌉. Malicious rounds check the
    /// threshold against it ([`malicious_threshold_bound`]); informational in semi-honest rounds.
    #[serde(default)]
    pub max_corrupt: u32,
    /// Identity key of each index (malicious rounds: exactly `participants` distinct keys; semi-honest: none).
    /// (Always serialised: the server snapshot's binary encoding cannot skip fields.)
    #[serde(default)]
    pub roster: Roster,
}

impl SecAggParams {
    /// Parameters derived from security requirements (graph and threshold via [`derive_graph`]); `roster` must
    /// list every participant's identity for a malicious round and be empty for a semi-honest one.
    pub fn derive(
        round_id: RoundId,
        req: &SecurityRequirements,
        vector_len: u32,
        bits: u32,
        graph_seed: [u8; 32],
        roster: Roster,
    ) -> Result<Self, SecAggError> {
        let (graph, threshold) = derive_graph(req)?;
        let p = SecAggParams {
            round_id,
            participants: req.participants,
            threshold,
            graph,
            graph_seed,
            vector_len,
            bits,
            threat_model: req.threat_model,
            max_corrupt: corrupt_count(req.participants, req.corrupt_fraction),
            roster,
        };
        p.validate()?;
        Ok(p)
    }

    /// Size of a neighbourhood, self included: the holders of each participant's shares.
    pub fn neighbourhood_size(&self) -> u32 {
        match self.graph {
            GraphKind::Complete => self.participants,
            GraphKind::Harary { degree } => degree + 1,
        }
    }

    /// The smallest threshold these parameters allow: a strict majority of a neighbourhood (semi-honest), or
    /// [`malicious_threshold_bound`] (malicious).
    pub fn minimum_threshold(&self) -> u32 {
        match self.threat_model {
            ThreatModel::SemiHonest => self.neighbourhood_size() / 2 + 1,
            ThreatModel::Malicious => {
                malicious_threshold_bound(self.participants, self.max_corrupt)
            }
        }
    }

    /// Checks every bound. Semi-honest: the threshold is a strict majority of a neighbourhood and at most its size.
    /// Malicious: complete graph, [`malicious_threshold_bound`] ≤ t ≤ n, and a valid roster of n distinct keys.
    pub fn validate(&self) -> Result<(), SecAggError> {
        let bad = |m: String| Err(SecAggError::InvalidParams(m));
        if !(2..=MAX_PARTICIPANTS).contains(&self.participants) {
            return bad(format!("participants must be in 2..={MAX_PARTICIPANTS}"));
        }
        if !(1..=32).contains(&self.bits) {
            return bad(format!("bits must be in 1..=32, got {}", self.bits));
        }
        if !(1..=MAX_VECTOR_LEN).contains(&self.vector_len) {
            return bad(format!("vector_len must be in 1..={MAX_VECTOR_LEN}"));
        }
        NeighbourGraph::new(self.participants, self.graph, &self.graph_seed)?;
        if self.max_corrupt >= self.participants {
            return bad(format!(
                "max_corrupt {} leaves no honest participant among {}",
                self.max_corrupt, self.participants
            ));
        }
        let size = self.neighbourhood_size();
        let min = self.minimum_threshold();
        match self.threat_model {
            ThreatModel::SemiHonest => {
                if !self.roster.is_empty() {
                    return bad("a semi-honest round has no roster".into());
                }
                if self.threshold < min || self.threshold > size {
                    return bad(format!(
                        "threshold {} must be a strict majority of the neighbourhood size {size} and at most {size}",
                        self.threshold
                    ));
                }
            }
            ThreatModel::Malicious => {
                if self.graph != GraphKind::Complete {
                    return bad(
                        "a malicious-server round needs the complete graph (sparse graphs are refused: see the \
                         secagg module docs)"
                            .into(),
                    );
                }
                if self.threshold < min || self.threshold > size {
                    return bad(format!(
                        "threshold {} is outside [{min}, {size}]: against a malicious server with up to {} colluding \
                         participants of {}, t must exceed (n + n_c)/2",
                        self.threshold, self.max_corrupt, self.participants
                    ));
                }
                if self.roster.len() != self.participants as usize {
                    return bad(format!(
                        "the roster lists {} identities for {} participants",
                        self.roster.len(),
                        self.participants
                    ));
                }
                self.roster.validate()?;
            }
        }
        Ok(())
    }

    /// The neighbour graph of these parameters.
    pub fn neighbour_graph(&self) -> Result<NeighbourGraph, SecAggError> {
        NeighbourGraph::new(self.participants, self.graph, &self.graph_seed)
    }

    /// SHA-256 of a canonical encoding of every parameter (roster included). Every signature binds it, so a client
    /// shown other parameters or another roster than its peers cannot have its signatures used against them.
    pub fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"confide/secagg/v2/params");
        h.update(self.round_id.to_le_bytes());
        h.update(self.participants.to_le_bytes());
        h.update(self.threshold.to_le_bytes());
        let graph: u32 = match self.graph {
            GraphKind::Complete => 0,
            GraphKind::Harary { degree } => 1 + degree,
        };
        h.update(graph.to_le_bytes());
        h.update(self.graph_seed);
        h.update(self.vector_len.to_le_bytes());
        h.update(self.bits.to_le_bytes());
        h.update([match self.threat_model {
            ThreatModel::SemiHonest => 0u8,
            ThreatModel::Malicious => 1,
        }]);
        h.update(self.max_corrupt.to_le_bytes());
        h.update((self.roster.len() as u64).to_le_bytes());
        for k in self.roster.keys() {
            h.update(k.0);
        }
        h.finalize().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secagg::identity::IdentityKey;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    fn roster(n: u32) -> Roster {
        let mut rng = ChaCha20Rng::seed_from_u64(u64::from(n));
        Roster::new(
            (0..n)
                .map(|_| IdentityKey::generate(&mut rng).public())
                .collect(),
        )
        .unwrap()
    }

    fn malicious(n: u32, t: u32, max_corrupt: u32) -> SecAggParams {
        SecAggParams {
            round_id: 1,
            participants: n,
            threshold: t,
            graph: GraphKind::Complete,
            graph_seed: [0; 32],
            vector_len: 4,
            bits: 32,
            threat_model: ThreatModel::Malicious,
            max_corrupt,
            roster: roster(n),
        }
    }

    #[test]
    fn the_malicious_bound_is_enforced_at_its_edge() {
        for (n, nc) in [
            (3u32, 0u32),
            (3, 1),
            (4, 1),
            (5, 0),
            (5, 2),
            (10, 3),
            (100, 5),
            (101, 10),
        ] {
            let bound = malicious_threshold_bound(n, nc);
            assert!(
                2 * bound > n + nc && 2 * (bound - 1) <= n + nc,
                "n {n}, n_c {nc}"
            );
            malicious(n, bound, nc).validate().unwrap();
            let below = malicious(n, bound - 1, nc).validate().unwrap_err();
            assert!(
                below.to_string().contains("must exceed (n + n_c)/2"),
                "{below}"
            );
        }
        assert_eq!(malicious_threshold_bound(100, 5), 53);
        assert_eq!(malicious_threshold_bound(3, 1), 3);
        assert!(malicious(4, 4, 4).validate().is_err());
    }

    #[test]
    fn malicious_rounds_need_a_full_distinct_roster_and_the_complete_graph() {
        let mut p = malicious(5, 3, 0);
        p.roster = roster(4);
        assert!(p.validate().is_err());
        let mut p = malicious(5, 3, 0);
        let mut keys = p.roster.keys().to_vec();
        keys[4] = keys[1];
        p.roster = Roster::unchecked(keys);
        assert_eq!(p.validate(), Err(SecAggError::DuplicateIdentity(4)));
        let mut p = malicious(20, 11, 0);
        p.graph = GraphKind::Harary { degree: 6 };
        p.threshold = 4;
        assert!(
            p.validate()
                .unwrap_err()
                .to_string()
                .contains("complete graph")
        );
        let mut semi = malicious(5, 3, 0);
        semi.threat_model = ThreatModel::SemiHonest;
        assert!(
            semi.validate().is_err(),
            "a semi-honest round carries no roster"
        );
        semi.roster = Roster::default();
        semi.validate().unwrap();
    }

    #[test]
    fn the_digest_covers_every_parameter() {
        let p = malicious(5, 3, 1);
        let d = p.digest();
        let mut q = p.clone();
        q.max_corrupt = 0;
        assert_ne!(q.digest(), d);
        let mut q = p.clone();
        q.roster = roster(6);
        assert_ne!(q.digest(), d);
        let mut q = p.clone();
        q.round_id = 2;
        assert_ne!(q.digest(), d);
        assert_eq!(p.clone().digest(), d);
    }

    #[test]
    fn old_plans_without_the_new_fields_are_semi_honest() {
        let json = r#"{"round_id":9,"participants":3,"threshold":2,"graph":"complete",
            "graph_seed":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","vector_len":9,"bits":32}"#;
        let p: SecAggParams = serde_json::from_str(json).unwrap();
        assert_eq!(p.threat_model, ThreatModel::SemiHonest);
        assert!(p.roster.is_empty());
        p.validate().unwrap();
    }

    #[test]
    fn corrupt_counts_round_up_but_not_float_noise() {
        assert_eq!(corrupt_count(30, 0.1), 3);
        assert_eq!(corrupt_count(10, 0.05), 1);
        assert_eq!(corrupt_count(100, 0.05), 5);
        assert_eq!(corrupt_count(7, 0.0), 0);
        assert_eq!(corrupt_count(3, 0.34), 2);
    }
}
