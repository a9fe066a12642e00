//! Server state ShareKeys: collects every dealing; in malicious rounds it checks the dealer's signature and that its
//! combined commitments are points on arrival, and when the stage closes runs the low-degree test on all dealings at
//! once (one large multiscalar multiplication instead of one per dealing, over the combined vector only — half the
//! points of testing β and σ apart: see `group`). These keep the malicious mode's server cost near the semi-honest
//! one. A dealing that fails is dropped before anyone sees it — no ciphertext of it is routed — and the round goes
//! on without its dealer.

use std::collections::BTreeMap;

use curve25519_dalek::ristretto::RistrettoPoint;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::super::client::SHARE_CIPHERTEXT_LEN;
use super::super::error::{Result, SecAggError};
use super::super::group::{self, DegreeClaim};
use super::super::messages::{ShareCommitments, ShareKeys};
use super::super::{ParticipantId, RoundStage};
use super::r2_share_verification::ShareVerificationState;
use super::r3_masked_input::MaskedInputState;
use super::record::{Dealing, DropReason};
use super::{Next, Round, ServerState};

/// Label of the Fiat–Shamir challenge of the low-degree test.
const LABEL_DEGREE_TEST: &[u8] = b"confide/secagg/v4/degree-test";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ShareKeysState {
    pub(crate) dealings: BTreeMap<ParticipantId, Dealing>,
    /// Malicious rounds: each dealing's commitments as decoded on arrival, for the degree test at close. Not
    /// persisted (a snapshot mid-stage decodes them again at close).
    #[serde(skip)]
    decoded: BTreeMap<ParticipantId, Decoded>,
}

/// A dealing's combined constant term (β·B + γ·σ·B) and combined commitments, as points.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Decoded {
    /// The holders' evaluation points (holder id + 1).
    xs: Vec<u32>,
    constant: RistrettoPoint,
    combined: Vec<RistrettoPoint>,
}

impl ShareKeysState {
    /// Records a dealing: exactly one well-sized ciphertext per neighbour in U1, a valid β·B, and in malicious
    /// rounds a valid signature and commitments that pass the low-degree test (else [`SecAggError::BadDealing`]).
    pub(crate) fn handle(&mut self, round: &Round, msg: &ShareKeys) -> Result<()> {
        round.check(
            RoundStage::ShareKeys,
            msg.round_id,
            msg.sender,
            Some(&round.record.u1),
        )?;
        if self.dealings.contains_key(&msg.sender) {
            return Err(SecAggError::Duplicate(msg.sender));
        }
        let expected: Vec<ParticipantId> = round
            .record
            .u1
            .iter()
            .copied()
            .filter(|&v| round.graph.are_neighbours(msg.sender, v))
            .collect();
        let got: Vec<ParticipantId> = msg.encrypted_shares.iter().map(|e| e.recipient).collect();
        if got != expected {
            return Err(SecAggError::Malformed(format!(
                "expected one ciphertext for each of the {} neighbours in U1, sorted by recipient",
                expected.len()
            )));
        }
        if let Some(e) = msg
            .encrypted_shares
            .iter()
            .find(|e| e.ciphertext.len() != SHARE_CIPHERTEXT_LEN)
        {
            return Err(SecAggError::Malformed(format!(
                "ciphertext for {} has {} bytes, expected {SHARE_CIPHERTEXT_LEN}",
                e.recipient,
                e.ciphertext.len()
            )));
        }
        let beta_commitment = group::decode_point(&msg.self_mask_commitment).ok_or_else(|| {
            SecAggError::Malformed("self-mask commitment is not a Ristretto255 point".into())
        })?;
        let mut holders = expected;
        holders.push(msg.sender);
        holders.sort_unstable();
        round.check_signature(msg.sender, msg.signature.as_ref(), || {
            msg.statement(&round.digest)
        })?;
        let dealing_digest = msg
            .commitments
            .as_ref()
            .map(|c| c.dealing_digest(&msg.self_mask_commitment));
        match (&msg.commitments, round.malicious(), &dealing_digest) {
            (None, false, _) => {}
            (Some(_), false, _) => {
                return Err(SecAggError::Malformed(
                    "commitments belong to malicious-server rounds".into(),
                ));
            }
            (None, true, _) | (Some(_), true, None) => {
                return Err(SecAggError::Malformed("dealing without commitments".into()));
            }
            (Some(c), true, Some(digest)) => {
                let decoded =
                    decode_commitments(round, msg.sender, &holders, beta_commitment, c, digest)?;
                self.decoded.insert(msg.sender, decoded);
            }
        }
        self.dealings.insert(
            msg.sender,
            Dealing {
                self_mask_commitment: msg.self_mask_commitment,
                holders,
                commitments: msg.commitments.clone(),
                encrypted_shares: msg.encrypted_shares.clone(),
                dealing_digest,
            },
        );
        Ok(())
    }

    /// U2 = those who dealt (malicious rounds: whose commitments pass the degree test). Malicious rounds go on to
    /// share verification, semi-honest ones to masking.
    pub(crate) fn close(mut self, round: &mut Round) -> Next {
        if round.malicious() {
            for dealer in self.failed_degree_test(round) {
                self.dealings.remove(&dealer);
                round.record.drop_participant(
                    dealer,
                    RoundStage::ShareKeys,
                    DropReason::BadCommitments,
                );
            }
        }
        let u2: Vec<ParticipantId> = self.dealings.keys().copied().collect();
        if let Some(reason) = round.shortfall(RoundStage::ShareKeys, &u2, &u2) {
            return Err(reason);
        }
        round.record.u2 = u2;
        round.record.dealings = self.dealings;
        Ok(if round.malicious() {
            ServerState::ShareVerification(ShareVerificationState::default())
        } else {
            ServerState::MaskedInputCollection(MaskedInputState::default())
        })
    }
}

/// One commitment per holder for each secret and one combined, the combined ones valid points, and the dealer's
/// advertised mask key: the dealing's claim for the degree test. The per-secret commitments are not decompressed
/// here (each holder checks its own; the server only when it needs a revealed share).
fn decode_commitments(
    round: &Round,
    dealer: ParticipantId,
    holders: &[ParticipantId],
    beta_commitment: RistrettoPoint,
    c: &ShareCommitments,
    dealing_digest: &[u8; 32],
) -> Result<Decoded> {
    let bad = |reason: &str| SecAggError::BadDealing {
        dealer,
        reason: reason.into(),
    };
    if [&c.self_mask, &c.mask_key, &c.combined]
        .iter()
        .any(|v| v.len() != holders.len())
    {
        return Err(bad("not one commitment per holder"));
    }
    let Some(combined) = c
        .combined
        .par_iter()
        .map(group::decode_point)
        .collect::<Option<Vec<RistrettoPoint>>>()
    else {
        return Err(bad("a commitment is not a Ristretto255 point"));
    };
    let mask_public = round
        .record
        .directory
        .get(&dealer)
        .and_then(|k| group::decode_point(&k.mask_public_key))
        .ok_or_else(|| bad("no advertised mask key"))?;
    let gamma = group::combination_challenge(
        &round.digest,
        round.params().round_id,
        dealer,
        dealing_digest,
    );
    Ok(Decoded {
        xs: holders.iter().map(|h| h + 1).collect(),
        constant: group::combine(&beta_commitment, &mask_public, &gamma),
        combined,
    })
}

impl ShareKeysState {
    /// The dealers whose combined commitments are not on a polynomial of degree t − 1 through β·B + γ·σ·B (σ·B its
    /// mask public key). All dealings are tested in one batch; only if it fails is each tested alone. The challenge
    /// is derived from every dealing's commitments (Fiat–Shamir): the same dealings always meet the same verdict.
    fn failed_degree_test(&mut self, round: &Round) -> Vec<ParticipantId> {
        let missing: Vec<ParticipantId> = self
            .dealings
            .keys()
            .filter(|d| !self.decoded.contains_key(d))
            .copied()
            .collect();
        let mut failed = Vec::new();
        for dealer in missing {
            let decoded = self.dealings.get(&dealer).and_then(|d| {
                let beta = group::decode_point(&d.self_mask_commitment)?;
                let c = d.commitments.as_ref()?;
                let digest = d.dealing_digest()?;
                decode_commitments(round, dealer, &d.holders, beta, c, &digest).ok()
            });
            match decoded {
                Some(decoded) => {
                    self.decoded.insert(dealer, decoded);
                }
                None => failed.push(dealer),
            }
        }
        let mut challenge = Sha256::new();
        challenge.update(LABEL_DEGREE_TEST);
        challenge.update(round.digest);
        for (dealer, d) in &self.dealings {
            challenge.update(dealer.to_le_bytes());
            if let (Some(c), Some(digest)) = (&d.commitments, d.dealing_digest()) {
                challenge.update(digest);
                c.combined.iter().for_each(|p| challenge.update(p));
            }
        }
        let seed: [u8; 32] = challenge.finalize().into();
        let candidates: Vec<(ParticipantId, &Decoded)> = self
            .decoded
            .iter()
            .filter(|(d, _)| self.dealings.contains_key(d) && !failed.contains(d))
            .map(|(&d, decoded)| (d, decoded))
            .collect();
        let all: Vec<DegreeClaim<'_>> = candidates.iter().map(|&(_, d)| claim(d)).collect();
        let t = round.threshold();
        if group::batch_low_degree_test(t, &all, &mut group::challenge_rng(seed)) {
            return failed;
        }
        failed.extend(
            candidates
                .par_iter()
                .filter(|&&(_, d)| {
                    let mut rng = group::challenge_rng(seed);
                    !group::batch_low_degree_test(t, &[claim(d)], &mut rng)
                })
                .map(|&(dealer, _)| dealer)
                .collect::<Vec<_>>(),
        );
        failed
    }
}

/// A dealing's claim for the degree test: β·B + γ·σ·B, then the combined commitments.
fn claim(d: &Decoded) -> DegreeClaim<'_> {
    DegreeClaim {
        xs: &d.xs,
        constant: d.constant,
        values: &d.combined,
    }
}
