//! Server state ShareKeys: collects every dealing; in malicious rounds it checks the dealer's signature and runs the
//! low-degree test on its commitments on arrival, refusing a bad dealing before anyone sees it.

use std::collections::BTreeMap;

use curve25519_dalek::ristretto::RistrettoPoint;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::super::client::SHARE_CIPHERTEXT_LEN;
use super::super::error::{Result, SecAggError};
use super::super::group;
use super::super::messages::ShareKeys;
use super::super::{ParticipantId, RoundStage};
use super::r2_share_verification::ShareVerificationState;
use super::r3_masked_input::MaskedInputState;
use super::record::Dealing;
use super::{Next, Round, ServerState};

/// Label of the Fiat–Shamir challenge of the low-degree test.
const LABEL_DEGREE_TEST: &[u8] = b"confide/secagg/v2/degree-test";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ShareKeysState {
    pub(crate) dealings: BTreeMap<ParticipantId, Dealing>,
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
        let statement = msg.statement(&round.digest);
        round.check_signature(msg.sender, msg.signature.as_ref(), || statement)?;
        match (&msg.commitments, round.malicious()) {
            (None, false) => {}
            (Some(_), false) => {
                return Err(SecAggError::Malformed(
                    "commitments belong to malicious-server rounds".into(),
                ));
            }
            (None, true) => {
                return Err(SecAggError::Malformed("dealing without commitments".into()));
            }
            (Some(c), true) => {
                check_commitments(round, msg.sender, &holders, beta_commitment, c, statement)?
            }
        }
        self.dealings.insert(
            msg.sender,
            Dealing {
                self_mask_commitment: msg.self_mask_commitment,
                holders,
                commitments: msg.commitments.clone(),
                encrypted_shares: msg.encrypted_shares.clone(),
            },
        );
        Ok(())
    }

    /// U2 = those who dealt. Malicious rounds go on to share verification, semi-honest ones to masking.
    pub(crate) fn close(self, round: &mut Round) -> Next {
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

/// One commitment per holder for each secret, valid points, and both vectors (with β·B and the advertised mask key
/// as constant terms) on polynomials of degree < t. The test's challenge is derived from the signed statement.
fn check_commitments(
    round: &Round,
    dealer: ParticipantId,
    holders: &[ParticipantId],
    beta_commitment: RistrettoPoint,
    c: &super::super::messages::ShareCommitments,
    statement: [u8; 32],
) -> Result<()> {
    let bad = |reason: &str| SecAggError::BadDealing {
        dealer,
        reason: reason.into(),
    };
    if c.self_mask.len() != holders.len() || c.mask_key.len() != holders.len() {
        return Err(bad("not one commitment per holder"));
    }
    let decode = |v: &[[u8; 32]]| -> Option<Vec<RistrettoPoint>> {
        v.par_iter().map(group::decode_point).collect()
    };
    let (Some(self_mask), Some(mask_key)) = (decode(&c.self_mask), decode(&c.mask_key)) else {
        return Err(bad("a commitment is not a Ristretto255 point"));
    };
    let mask_public = round
        .record
        .directory
        .get(&dealer)
        .and_then(|k| group::decode_point(&k.mask_public_key))
        .ok_or_else(|| bad("no advertised mask key"))?;
    let xs: Vec<u32> = holders.iter().map(|h| h + 1).collect();
    let mut challenge = Sha256::new();
    challenge.update(LABEL_DEGREE_TEST);
    challenge.update(statement);
    let mut rng = group::challenge_rng(challenge.finalize().into());
    let polys = [
        (beta_commitment, &self_mask[..]),
        (mask_public, &mask_key[..]),
    ];
    if !group::low_degree_test(round.threshold(), &xs, &polys, &mut rng) {
        return Err(bad(
            "commitments are not on polynomials of degree t − 1 through β·B and the mask public key",
        ));
    }
    Ok(())
}
