//! What a participant sends the server, one message per stage. Every one refuses unknown fields.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::super::group::{self, Scalar};
use super::super::identity::{self, SignatureBytes};
use super::super::shamir::Share;
use super::super::{ParticipantId, RoundId};
use super::{b64_array, b64_points, b64_share, b64_vec, wire_version};

/// A participant's two public keys (stage AdvertiseKeys).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdvertiseKeys {
    #[serde(default = "wire_version")]
    pub version: u16,
    pub round_id: RoundId,
    pub sender: ParticipantId,
    /// X25519 public key for encrypting shares (c_pk).
    #[serde(with = "b64_array")]
    pub cipher_public_key: [u8; 32],
    /// Ristretto255 public key σ·B for agreeing pairwise masks (s_pk); also the committed constant term of the
    /// sender's σ-sharing.
    #[serde(with = "b64_array")]
    pub mask_public_key: [u8; 32],
    /// Malicious rounds: Ed25519 signature over [`identity::advertise_statement`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<SignatureBytes>,
}

impl AdvertiseKeys {
    /// What the sender signs: round, sender and both public keys.
    pub fn statement(&self, params_digest: &[u8; 32]) -> [u8; 32] {
        identity::advertise_statement(
            params_digest,
            self.round_id,
            self.sender,
            &self.cipher_public_key,
            &self.mask_public_key,
        )
    }
}

/// A ciphertext of shares for one recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptedShares {
    pub recipient: ParticipantId,
    #[serde(with = "b64_vec")]
    pub ciphertext: Vec<u8>,
}

/// Commitments of a dealing (malicious rounds): s·B for every holder's share of each secret, in ascending holder
/// order — the recipients of the ciphertexts and the dealer itself — and the combined commitments W_j =
/// (b_j + γ·s_j)·B. With their constant terms (β·B, the mask public key σ·B, and β·B + γ·σ·B) they must lie on
/// polynomials of degree t − 1 "in the exponent"; the server tests the combined vector when ShareKeys closes, each
/// holder checks its own three (see [`group`](super::super::group) for why that covers both secrets).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShareCommitments {
    /// Commitments to the self-mask secret's shares.
    #[serde(with = "b64_points")]
    pub self_mask: Vec<[u8; 32]>,
    /// Commitments to the mask key's shares.
    #[serde(with = "b64_points")]
    pub mask_key: Vec<[u8; 32]>,
    /// Commitments to the combined shares b_j + γ·s_j, γ drawn from [`ShareCommitments::dealing_digest`].
    #[serde(with = "b64_points")]
    pub combined: Vec<[u8; 32]>,
}

impl ShareCommitments {
    /// The commitments of a dealing whose holders (ascending) get `self_mask[j]` and `mask_key[j]`.
    pub fn of_shares(
        params_digest: &[u8; 32],
        round: RoundId,
        dealer: ParticipantId,
        self_mask_commitment: &[u8; 32],
        self_mask: &[Scalar],
        mask_key: &[Scalar],
    ) -> Self {
        let mut per_secret = group::commit_all(&[self_mask, mask_key].concat());
        let mask_key_points = per_secret.split_off(self_mask.len());
        let digest = group::dealing_digest(self_mask_commitment, &per_secret, &mask_key_points);
        let gamma = group::combination_challenge(params_digest, round, dealer, &digest);
        ShareCommitments {
            combined: group::commit_all(&group::combined_shares(&gamma, self_mask, mask_key)),
            self_mask: per_secret,
            mask_key: mask_key_points,
        }
    }

    /// The digest of the per-secret commitments (with β·B) that γ is drawn from.
    pub fn dealing_digest(&self, self_mask_commitment: &[u8; 32]) -> [u8; 32] {
        group::dealing_digest(self_mask_commitment, &self.self_mask, &self.mask_key)
    }
}

/// A participant's dealing (stage ShareKeys): encrypted shares for each neighbour in U1 and, in malicious rounds,
/// the share commitments and a signature over all of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShareKeys {
    #[serde(default = "wire_version")]
    pub version: u16,
    pub round_id: RoundId,
    pub sender: ParticipantId,
    /// β·B (compressed Ristretto255): commits to the self-mask secret β, checked after rebuilding it.
    #[serde(with = "b64_array")]
    pub self_mask_commitment: [u8; 32],
    /// One ciphertext per neighbour in U1 (excluding the sender), sorted by recipient.
    pub encrypted_shares: Vec<EncryptedShares>,
    /// Malicious rounds: the commitments to every holder's shares.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commitments: Option<ShareCommitments>,
    /// Malicious rounds: Ed25519 signature over [`ShareKeys::statement`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<SignatureBytes>,
}

impl ShareKeys {
    /// What the dealer signs: round, sender, β·B, every commitment and every ciphertext with its recipient.
    pub fn statement(&self, params_digest: &[u8; 32]) -> [u8; 32] {
        let mut commitments = Sha256::new();
        if let Some(c) = &self.commitments {
            for v in [&c.self_mask, &c.mask_key, &c.combined] {
                commitments.update((v.len() as u64).to_le_bytes());
                v.iter().for_each(|p| commitments.update(p));
            }
        }
        let mut ciphertexts = Sha256::new();
        for e in &self.encrypted_shares {
            ciphertexts.update(e.recipient.to_le_bytes());
            ciphertexts.update((e.ciphertext.len() as u64).to_le_bytes());
            ciphertexts.update(&e.ciphertext);
        }
        let (commitments, ciphertexts): ([u8; 32], [u8; 32]) =
            (commitments.finalize().into(), ciphertexts.finalize().into());
        identity::statement(
            identity::LABEL_SHARE_KEYS,
            params_digest,
            &[
                &self.round_id.to_le_bytes(),
                &self.sender.to_le_bytes(),
                &self.self_mask_commitment,
                &commitments,
                &ciphertexts,
            ],
        )
    }
}

/// Why a holder rejects the shares a dealer sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ComplaintReason {
    /// The ciphertext does not authenticate under the pair's key.
    Undecryptable,
    /// The plaintext is not a well-formed pair of shares for this holder.
    Malformed,
    /// A share does not match its commitment.
    NotOnCommitment,
}

impl ComplaintReason {
    /// The byte signed for this reason.
    pub fn code(self) -> u8 {
        match self {
            ComplaintReason::Undecryptable => 1,
            ComplaintReason::Malformed => 2,
            ComplaintReason::NotOnCommitment => 3,
        }
    }
}

/// A holder's complaint about one dealer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Complaint {
    pub dealer: ParticipantId,
    pub reason: ComplaintReason,
}

/// The X25519 secret of a complaining holder's per-round cipher key, revealed so the server can open the
/// ciphertexts it complains about (the holder leaves the round; see the secagg module docs for why this is safe).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RevealedCipherKey(#[serde(with = "b64_array")] pub [u8; 32]);

impl std::fmt::Debug for RevealedCipherKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RevealedCipherKey(..)")
    }
}

/// A holder's signed verdict on the shares routed to it (stage ShareVerification, malicious rounds): an
/// acknowledgement (no complaints) or complaints with the holder's cipher secret key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShareVerification {
    #[serde(default = "wire_version")]
    pub version: u16,
    pub round_id: RoundId,
    pub sender: ParticipantId,
    /// Sorted by dealer, at most one per dealer; empty = every share verified.
    pub complaints: Vec<Complaint>,
    /// Present exactly when there are complaints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revealed_cipher_key: Option<RevealedCipherKey>,
    /// Signature over [`ShareVerification::statement`].
    pub signature: SignatureBytes,
}

impl ShareVerification {
    /// What the holder signs: round, holder, the complaints and (a hash of) the revealed key.
    pub fn statement(&self, params_digest: &[u8; 32]) -> [u8; 32] {
        let complaints: Vec<(ParticipantId, u8)> = self
            .complaints
            .iter()
            .map(|c| (c.dealer, c.reason.code()))
            .collect();
        identity::verification_statement(
            params_digest,
            self.round_id,
            self.sender,
            &complaints,
            self.revealed_cipher_key.as_ref().map(|k| &k.0),
        )
    }
}

/// A survivor's signature over U3 (stage ConsistencyCheck, malicious rounds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsistencySignature {
    #[serde(default = "wire_version")]
    pub version: u16,
    pub round_id: RoundId,
    pub sender: ParticipantId,
    /// Signature over [`identity::survivors_statement`] of the round's U3.
    pub signature: SignatureBytes,
}

/// A revealed Shamir share of `owner`'s secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevealedShare {
    pub owner: ParticipantId,
    #[serde(with = "b64_share")]
    pub share: Share,
}

/// The shares a survivor reveals (stage Unmasking): self-mask shares of neighbours in U3 and mask-key shares of
/// neighbours in U2 ∖ U3 — never both for one neighbour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnmaskingResponse {
    #[serde(default = "wire_version")]
    pub version: u16,
    pub round_id: RoundId,
    pub sender: ParticipantId,
    pub self_mask_shares: Vec<RevealedShare>,
    pub mask_key_shares: Vec<RevealedShare>,
}

#[cfg(test)]
mod tests {
    use super::super::ControlMessage;
    use super::*;
    use crate::secagg::SecAggError;

    #[test]
    fn json_messages_use_base64_and_check_the_version() {
        let m = AdvertiseKeys {
            version: 2,
            round_id: 3,
            sender: 1,
            cipher_public_key: [1; 32],
            mask_public_key: [2; 32],
            signature: None,
        };
        let json = m.to_json();
        assert!(json.contains("\"cipher_public_key\":\"AQEB"), "{json}");
        assert!(!json.contains("signature"), "{json}");
        assert_eq!(AdvertiseKeys::from_json(&json).unwrap(), m);
        let v1 = json.replace("\"version\":2", "\"version\":1");
        assert!(matches!(
            AdvertiseKeys::from_json(&v1),
            Err(SecAggError::Malformed(_))
        ));
        assert!(AdvertiseKeys::from_json("{").is_err());
        // What a participant sends is checked field by field: an unknown field is refused, not ignored.
        let extra = json.replacen('{', "{\"colour\":\"blue\",", 1);
        let err = AdvertiseKeys::from_json(&extra).unwrap_err().to_string();
        assert!(err.contains("unknown field `colour`"), "{err}");
        let signed = AdvertiseKeys {
            signature: Some(SignatureBytes([9; 64])),
            ..m
        };
        assert_eq!(AdvertiseKeys::from_json(&signed.to_json()).unwrap(), signed);
    }

    #[test]
    fn the_dealing_statement_covers_commitments_and_ciphertexts() {
        let mut m = ShareKeys {
            version: 2,
            round_id: 1,
            sender: 0,
            self_mask_commitment: [3; 32],
            encrypted_shares: vec![EncryptedShares {
                recipient: 1,
                ciphertext: vec![1, 2, 3],
            }],
            commitments: Some(ShareCommitments {
                self_mask: vec![[4; 32], [5; 32]],
                mask_key: vec![[6; 32], [7; 32]],
                combined: vec![[8; 32], [9; 32]],
            }),
            signature: None,
        };
        let base = m.statement(&[0; 32]);
        m.encrypted_shares[0].ciphertext[1] ^= 1;
        assert_ne!(m.statement(&[0; 32]), base);
        m.encrypted_shares[0].ciphertext[1] ^= 1;
        if let Some(c) = m.commitments.as_mut() {
            c.mask_key.swap(0, 1);
        }
        assert_ne!(m.statement(&[0; 32]), base);
        let back = ShareKeys::from_json(&m.to_json()).unwrap();
        assert_eq!(back, m);
    }
}
