//! Server state ShareVerification (malicious rounds): every member of U2 acknowledges the shares routed to it or
//! complains with proof. A complaint reveals the holder's cipher secret, so the server decrypts the one ciphertext
//! complained about and checks it against the dealer's commitments: a valid complaint aborts the round before any
//! masked input exists and names the dealer; a false one drops the accuser and the round goes on.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::super::client::shares::decode_share_plaintext;
use super::super::crypto::{self, KeyPair};
use super::super::error::{Result, SecAggError};
use super::super::group;
use super::super::messages::{Acknowledgement, ShareVerification};
use super::super::{ParticipantId, RoundStage};
use super::r3_masked_input::MaskedInputState;
use super::record::{AbortReason, DropReason};
use super::{Next, Round, ServerState};

/// How the server judged one holder's verification message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Verdict {
    /// Every share verified.
    Accepted,
    /// At least one complaint was proven: the round cannot go on.
    ProvenComplaint,
    /// Every complaint was false (or came with a key that is not the accuser's).
    FalseComplaint,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ShareVerificationState {
    pub(crate) verdicts: BTreeMap<ParticipantId, Verdict>,
    /// Dealers that some holder proved bad.
    pub(crate) bad_dealers: BTreeSet<ParticipantId>,
    /// The signed acknowledgements, forwarded when masking opens.
    pub(crate) acknowledgements: Vec<Acknowledgement>,
}

impl ShareVerificationState {
    /// Checks the holder's signature, then records its acknowledgement or judges its complaints.
    pub(crate) fn handle(&mut self, round: &Round, msg: &ShareVerification) -> Result<()> {
        round.check(
            RoundStage::ShareVerification,
            msg.round_id,
            msg.sender,
            Some(&round.record.u2),
        )?;
        if self.verdicts.contains_key(&msg.sender) {
            return Err(SecAggError::Duplicate(msg.sender));
        }
        let dealers = round.routed_dealers(msg.sender);
        round.check_signature(msg.sender, Some(&msg.signature), || {
            msg.statement(&round.digest)
        })?;
        if msg
            .complaints
            .windows(2)
            .any(|w| w[0].dealer >= w[1].dealer)
            || msg.complaints.iter().any(|c| !dealers.contains(&c.dealer))
        {
            return Err(SecAggError::Malformed(
                "complaints must name routed dealers, sorted, once each".into(),
            ));
        }
        if msg.complaints.is_empty() != msg.revealed_cipher_key.is_none() {
            return Err(SecAggError::Malformed(
                "a cipher key is revealed exactly when complaining".into(),
            ));
        }
        let Some(key) = &msg.revealed_cipher_key else {
            self.verdicts.insert(msg.sender, Verdict::Accepted);
            self.acknowledgements.push(Acknowledgement {
                holder: msg.sender,
                signature: msg.signature,
            });
            return Ok(());
        };
        let own_key = round
            .record
            .directory
            .get(&msg.sender)
            .is_some_and(|k| KeyPair::public_of_secret(key.0) == k.cipher_public_key);
        let proven: Vec<ParticipantId> = if own_key {
            let cipher = KeyPair::from_secret_bytes(key.0);
            msg.complaints
                .iter()
                .map(|c| c.dealer)
                .filter(|&d| dealt_badly(round, d, msg.sender, &cipher))
                .collect()
        } else {
            Vec::new()
        };
        let verdict = if proven.is_empty() {
            Verdict::FalseComplaint
        } else {
            Verdict::ProvenComplaint
        };
        self.bad_dealers.extend(proven);
        self.verdicts.insert(msg.sender, verdict);
        Ok(())
    }

    /// Any proven complaint aborts (naming the dealers); otherwise the members that acknowledged go on to masking.
    pub(crate) fn close(self, round: &mut Round) -> Next {
        for (&p, v) in &self.verdicts {
            let reason = match v {
                Verdict::Accepted => continue,
                Verdict::ProvenComplaint => DropReason::Complained,
                Verdict::FalseComplaint => DropReason::FalseComplaint,
            };
            round
                .record
                .drop_participant(p, RoundStage::ShareVerification, reason);
        }
        if !self.bad_dealers.is_empty() {
            for &d in &self.bad_dealers {
                round.record.drops.insert(
                    d,
                    super::record::Dropout {
                        stage: RoundStage::ShareVerification,
                        reason: DropReason::BadDealing,
                    },
                );
            }
            return Err(AbortReason::BadDealing {
                dealers: self.bad_dealers.into_iter().collect(),
            });
        }
        let verified: Vec<ParticipantId> = self
            .verdicts
            .iter()
            .filter(|(_, v)| **v == Verdict::Accepted)
            .map(|(&p, _)| p)
            .collect();
        let owners = round.record.u2.clone();
        if let Some(reason) = round.shortfall(RoundStage::ShareVerification, &owners, &verified) {
            return Err(reason);
        }
        round.record.verified = verified;
        // Routed and judged: the ciphertexts are no longer needed, only the commitments.
        for d in round.record.dealings.values_mut() {
            d.encrypted_shares.clear();
        }
        let mut acknowledgements = self.acknowledgements;
        acknowledgements.sort_by_key(|a| a.holder);
        Ok(ServerState::MaskedInputCollection(MaskedInputState {
            acknowledgements,
            ..MaskedInputState::default()
        }))
    }
}

/// Whether the ciphertext `dealer` sent `holder` (as the server stored it) fails to open with the holder's revealed
/// key, or holds shares that do not match the dealer's commitments (per secret or combined).
fn dealt_badly(
    round: &Round,
    dealer: ParticipantId,
    holder: ParticipantId,
    cipher: &KeyPair,
) -> bool {
    let r = round.params().round_id;
    let (Some(dealing), Some(keys)) = (
        round.record.dealings.get(&dealer),
        round.record.directory.get(&dealer),
    ) else {
        return false;
    };
    let (Some(ciphertext), Some(committed), Some(gamma)) = (
        dealing.ciphertext_for(holder),
        dealing.commitments_for(holder),
        dealing.challenge(&round.digest, r, dealer),
    ) else {
        return false;
    };
    let Ok(key) =
        crypto::share_encryption_key(cipher, &keys.cipher_public_key, r, dealer, holder, dealer)
    else {
        return true; // the dealer's own signed key is non-contributory
    };
    let Ok(plaintext) = crypto::decrypt_shares(&key, r, dealer, holder, ciphertext) else {
        return true;
    };
    let Ok(shares) = decode_share_plaintext(&plaintext, dealer, holder) else {
        return true;
    };
    let (b, s) = (shares.self_mask.y, shares.mask_key.y);
    group::commit(&b) != committed.self_mask
        || group::commit(&s) != committed.mask_key
        || group::commit(&(b + gamma * s)) != committed.combined
}
