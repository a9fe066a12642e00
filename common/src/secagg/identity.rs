//! Long-term participant identities (Ed25519) and the signed statements of the malicious-server protocol.
//!
//! Each participant holds an [`IdentityKey`]; the round's [`Roster`] (part of the round parameters) maps every index
//! to the identity public key the agent expects there (pinning or allow-listing those keys is the agent's job). Every
//! statement is signed over a domain-separated SHA-256 digest of (label, the round's parameter digest, the fields),
//! so a signature can be replayed neither into another round, nor into a round with other parameters or another
//! roster, nor as another kind of statement. One signature is verified strictly (`verify_strict`: no small-order
//! keys or `R`, no malleable encodings); many at once as Ed25519 batches ([`Roster::verify_all`], which says how
//! that differs).

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use rand::CryptoRng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::error::{Result, SecAggError};
use super::{ParticipantId, RoundId};

/// Label of the signature on a participant's advertised keys.
pub const LABEL_ADVERTISE: &[u8] = b"confide/secagg/v2/advertise-keys";
/// Label of the signature on a participant's dealing (share commitments and ciphertexts).
pub const LABEL_SHARE_KEYS: &[u8] = b"confide/secagg/v2/share-keys";
/// Label of the signature on a holder's verdict about the shares it was dealt.
pub const LABEL_SHARE_VERIFICATION: &[u8] = b"confide/secagg/v2/share-verification";
/// Label of the signature on the survivor set U3 (consistency check).
pub const LABEL_SURVIVORS: &[u8] = b"confide/secagg/v2/survivors";

/// A participant's long-term Ed25519 signing key; zeroised on drop, never printed.
#[derive(Clone)]
pub struct IdentityKey(SigningKey);

impl IdentityKey {
    /// A fresh identity from a cryptographically secure generator.
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut seed = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(&mut seed[..]);
        IdentityKey(SigningKey::from_bytes(&seed))
    }

    /// Restores an identity from its 32-byte secret seed (as persisted by the agent).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        IdentityKey(SigningKey::from_bytes(seed))
    }

    /// The 32-byte secret seed, for the agent to persist (0600); zeroised when dropped.
    pub fn to_seed(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }

    /// The public half.
    pub fn public(&self) -> IdentityPublicKey {
        IdentityPublicKey(self.0.verifying_key().to_bytes())
    }

    /// Signs a statement digest (see the `*_statement` functions).
    pub fn sign(&self, statement: &[u8; 32]) -> SignatureBytes {
        SignatureBytes(self.0.sign(statement).to_bytes())
    }
}

impl std::fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "IdentityKey({}, <redacted>)",
            self.public().fingerprint()
        )
    }
}

/// An Ed25519 public key (32 bytes; base64 in JSON).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct IdentityPublicKey(#[serde(with = "super::messages::b64_array")] pub [u8; 32]);

impl IdentityPublicKey {
    /// The key as a verifier; refuses encodings that are not points and small-order ("weak") keys.
    pub fn verifying_key(&self) -> Result<VerifyingKey> {
        let key = VerifyingKey::from_bytes(&self.0).map_err(|_| {
            SecAggError::InvalidParams("identity key is not a valid Ed25519 key".into())
        })?;
        if key.is_weak() {
            return Err(SecAggError::InvalidParams(
                "identity key has small order".into(),
            ));
        }
        Ok(key)
    }

    /// Human-comparable fingerprint: the first 16 bytes of SHA-256 of the key, hex in groups of four.
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::digest(self.0);
        digest[..16]
            .chunks(2)
            .map(|c| format!("{:02x}{:02x}", c[0], c[1]))
            .collect::<Vec<_>>()
            .join(":")
    }
}

impl std::fmt::Debug for IdentityPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IdentityPublicKey({})", self.fingerprint())
    }
}

/// An Ed25519 signature (64 bytes; base64 in JSON).
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SignatureBytes(#[serde(with = "b64_sig")] pub [u8; 64]);

impl std::fmt::Debug for SignatureBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SignatureBytes(..)")
    }
}

/// Serde helper: `[u8; 64]` as standard base64 (raw bytes in binary formats).
mod b64_sig {
    use serde::{Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(v: &[u8; 64], s: S) -> Result<S::Ok, S::Error> {
        super::super::messages::b64_vec::serialize(v, s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 64], D::Error> {
        super::super::messages::b64_vec::deserialize(d)?
            .try_into()
            .map_err(|_| D::Error::custom("expected 64 bytes"))
    }
}

/// Who may take part in a round: index i's identity public key is entry i. All entries distinct and valid.
///
/// Each key is decoded (a point decompression and a small-order check) once, on first use, not once per signature.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Roster {
    keys: Vec<IdentityPublicKey>,
    /// Entry i's verifier, `None` for an entry that is not a valid, non-weak key.
    #[serde(skip)]
    verifiers: std::sync::OnceLock<Vec<Option<VerifyingKey>>>,
}

impl PartialEq for Roster {
    fn eq(&self, other: &Self) -> bool {
        self.keys == other.keys
    }
}
impl Eq for Roster {}

impl std::fmt::Debug for Roster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(&self.keys).finish()
    }
}

/// One signature to check: who signed, the statement digest, the signature.
pub type SignedStatement<'a> = (ParticipantId, [u8; 32], &'a SignatureBytes);

/// Below this many signatures [`Roster::verify_all`] checks them one by one (a batch does not pay off).
const MIN_BATCH: usize = 8;

impl Roster {
    /// A roster; refuses invalid, weak or repeated keys (one identity may hold only one index).
    pub fn new(keys: Vec<IdentityPublicKey>) -> Result<Self> {
        let roster = Roster::unchecked(keys);
        roster.validate()?;
        Ok(roster)
    }

    /// A roster as given, not validated (tests build invalid ones; [`Roster::validate`] refuses them).
    pub(crate) fn unchecked(keys: Vec<IdentityPublicKey>) -> Self {
        Roster {
            keys,
            verifiers: std::sync::OnceLock::new(),
        }
    }

    /// Checks every entry (as [`Roster::new`] does); used again on every deserialised roster.
    pub fn validate(&self) -> Result<()> {
        let mut seen = std::collections::BTreeSet::new();
        for (i, k) in self.keys.iter().enumerate() {
            k.verifying_key()
                .map_err(|e| SecAggError::InvalidParams(format!("roster entry {i}: {e}")))?;
            if !seen.insert(*k) {
                return Err(SecAggError::DuplicateIdentity(i as ParticipantId));
            }
        }
        Ok(())
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the roster is empty (semi-honest rounds have none).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The identity expected at `index`.
    pub fn get(&self, index: ParticipantId) -> Option<&IdentityPublicKey> {
        self.keys.get(index as usize)
    }

    /// All entries, by index.
    pub fn keys(&self) -> &[IdentityPublicKey] {
        &self.keys
    }

    /// The decoded verifier of `signer`; a missing, invalid or weak entry is [`SecAggError::BadSignature`].
    fn verifier(&self, signer: ParticipantId) -> Result<&VerifyingKey> {
        self.verifiers
            .get_or_init(|| self.keys.iter().map(|k| k.verifying_key().ok()).collect())
            .get(signer as usize)
            .and_then(Option::as_ref)
            .ok_or(SecAggError::BadSignature { signer })
    }

    /// Verifies `signature` by `signer` over `statement`; a missing entry, invalid key or bad signature is
    /// [`SecAggError::BadSignature`].
    pub fn verify(
        &self,
        signer: ParticipantId,
        statement: &[u8; 32],
        signature: &SignatureBytes,
    ) -> Result<()> {
        let sig = ed25519_dalek::Signature::from_bytes(&signature.0);
        self.verifier(signer)?
            .verify_strict(statement, &sig)
            .map_err(|_| SecAggError::BadSignature { signer })
    }

    /// Verifies many signatures at once; the error names the first bad one in `items`' order, as checking them
    /// one by one with [`Roster::verify`] would.
    ///
    /// Larger sets are checked as Ed25519 batches (one multiscalar multiplication per batch, random 128-bit weights,
    /// the batches spread over the cores), and one by one only if a batch fails. Every signature [`Roster::verify`]
    /// accepts passes its batch. The batch equation is RFC 8032's cofactorless one, not `verify_strict`: it also
    /// passes, with probability at most 1/8, a signature whose own key's holder crafted it with a small-order
    /// component (and always one with a small-order `R`). Only the holder of the secret key can make such a
    /// signature, so it proves the same thing — that this identity signed this statement — and no one can sign for
    /// another identity (forging stays infeasible; a wrong signature passes a batch with probability ≤ 2⁻¹²⁸).
    pub fn verify_all(&self, items: &[SignedStatement<'_>]) -> Result<()> {
        use rayon::prelude::*;
        if items.len() >= MIN_BATCH {
            let keys = items
                .iter()
                .map(|(signer, _, _)| self.verifier(*signer).copied())
                .collect::<Result<Vec<VerifyingKey>>>()?;
            let per_batch = items
                .len()
                .div_ceil(rayon::current_num_threads())
                .max(MIN_BATCH);
            let all_pass = items
                .par_chunks(per_batch)
                .zip(keys.par_chunks(per_batch))
                .all(|(batch, keys)| {
                    let messages: Vec<&[u8]> = batch.iter().map(|(_, st, _)| &st[..]).collect();
                    let signatures: Vec<ed25519_dalek::Signature> = batch
                        .iter()
                        .map(|(_, _, sig)| ed25519_dalek::Signature::from_bytes(&sig.0))
                        .collect();
                    ed25519_dalek::verify_batch(&messages, &signatures, keys).is_ok()
                });
            if all_pass {
                return Ok(());
            }
        }
        items
            .iter()
            .try_for_each(|(signer, statement, sig)| self.verify(*signer, statement, sig))
    }
}

/// Domain-separated digest: label, then each part length-prefixed (u64 LE), so no two statements collide.
pub fn statement(label: &[u8], params_digest: &[u8; 32], parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update((label.len() as u64).to_le_bytes());
    h.update(label);
    h.update(params_digest);
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    h.finalize().into()
}

/// What a participant signs when it advertises its two public keys.
pub fn advertise_statement(
    params_digest: &[u8; 32],
    round: RoundId,
    sender: ParticipantId,
    cipher_public_key: &[u8; 32],
    mask_public_key: &[u8; 32],
) -> [u8; 32] {
    statement(
        LABEL_ADVERTISE,
        params_digest,
        &[
            &round.to_le_bytes(),
            &sender.to_le_bytes(),
            cipher_public_key,
            mask_public_key,
        ],
    )
}

/// What a holder signs about the shares routed to it: its verdict — an empty complaint list is an acknowledgement
/// that every share verified — and (a hash of) the cipher key it reveals with complaints. An honest holder signs
/// exactly one verdict per round, so an acknowledgement proves it never revealed its key. `complaints` holds
/// (dealer, reason code) pairs.
pub fn verification_statement(
    params_digest: &[u8; 32],
    round: RoundId,
    holder: ParticipantId,
    complaints: &[(ParticipantId, u8)],
    revealed_cipher_key: Option<&[u8; 32]>,
) -> [u8; 32] {
    let complaints: Vec<u8> = complaints
        .iter()
        .flat_map(|(d, r)| d.to_le_bytes().into_iter().chain([*r]))
        .collect();
    let key_digest: [u8; 32] = revealed_cipher_key.map_or([0; 32], |k| Sha256::digest(k).into());
    statement(
        LABEL_SHARE_VERIFICATION,
        params_digest,
        &[
            &round.to_le_bytes(),
            &holder.to_le_bytes(),
            &complaints,
            &key_digest,
        ],
    )
}

/// The statement of a holder's acknowledgement (a verdict without complaints).
pub fn acknowledgement_statement(
    params_digest: &[u8; 32],
    round: RoundId,
    holder: ParticipantId,
) -> [u8; 32] {
    verification_statement(params_digest, round, holder, &[], None)
}

/// What every survivor signs in the consistency check: the round and U3.
pub fn survivors_statement(
    params_digest: &[u8; 32],
    round: RoundId,
    survivors: &[ParticipantId],
) -> [u8; 32] {
    let ids: Vec<u8> = survivors.iter().flat_map(|d| d.to_le_bytes()).collect();
    statement(
        LABEL_SURVIVORS,
        params_digest,
        &[&round.to_le_bytes(), &ids],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    #[test]
    fn signatures_bind_signer_statement_and_roster() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let ids: Vec<IdentityKey> = (0..3).map(|_| IdentityKey::generate(&mut rng)).collect();
        let roster = Roster::new(ids.iter().map(|k| k.public()).collect()).unwrap();
        let st = survivors_statement(&[7; 32], 5, &[0, 1, 2]);
        let sig = ids[1].sign(&st);
        roster.verify(1, &st, &sig).unwrap();
        assert_eq!(
            roster.verify(0, &st, &sig),
            Err(SecAggError::BadSignature { signer: 0 })
        );
        assert_eq!(
            roster.verify(9, &st, &sig),
            Err(SecAggError::BadSignature { signer: 9 })
        );
        let other_round = survivors_statement(&[7; 32], 6, &[0, 1, 2]);
        assert!(roster.verify(1, &other_round, &sig).is_err());
        let other_params = survivors_statement(&[8; 32], 5, &[0, 1, 2]);
        assert!(roster.verify(1, &other_params, &sig).is_err());
        // Statements of different kinds never coincide, even over the same bytes.
        assert_ne!(
            statement(LABEL_ADVERTISE, &[0; 32], &[b"ab", b"c"]),
            statement(LABEL_ADVERTISE, &[0; 32], &[b"a", b"bc"])
        );
        // Seeds round-trip.
        let back = IdentityKey::from_seed(&ids[2].to_seed());
        assert_eq!(back.public(), ids[2].public());
        assert_eq!(ids[0].public().fingerprint().len(), 39);
    }

    #[test]
    fn verifying_many_names_the_first_bad_signature_as_one_by_one_would() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let ids: Vec<IdentityKey> = (0..40).map(|_| IdentityKey::generate(&mut rng)).collect();
        let roster = Roster::new(ids.iter().map(|k| k.public()).collect()).unwrap();
        let statements: Vec<[u8; 32]> = (0..40u32)
            .map(|i| survivors_statement(&[9; 32], u64::from(i), &[i]))
            .collect();
        let sigs: Vec<SignatureBytes> = ids
            .iter()
            .zip(&statements)
            .map(|(k, st)| k.sign(st))
            .collect();
        for len in [0usize, 1, 7, 8, 9, 40] {
            let items: Vec<SignedStatement<'_>> = (0..len)
                .map(|i| (i as ParticipantId, statements[i], &sigs[i]))
                .collect();
            roster.verify_all(&items).unwrap();
            if len == 0 {
                continue;
            }
            // A signature over another statement, a signature by another identity, a corrupted signature: each
            // is found, and when two are bad the first in order is named.
            for bad in [0, len / 2, len - 1] {
                let mut items = items.clone();
                items[bad].1 = statements[(bad + 1) % 40];
                assert_eq!(
                    roster.verify_all(&items),
                    Err(SecAggError::BadSignature {
                        signer: bad as ParticipantId
                    }),
                    "len {len} bad {bad}"
                );
                let mut items2 = items.clone();
                items2[len - 1].2 = &sigs[(len) % 40];
                let first = bad.min(len - 1) as ParticipantId;
                assert_eq!(
                    roster.verify_all(&items2),
                    Err(SecAggError::BadSignature { signer: first })
                );
            }
        }
        let mut flipped = sigs[3];
        flipped.0[5] ^= 1;
        let items: Vec<SignedStatement<'_>> = (0..20)
            .map(|i| {
                let sig = if i == 3 { &flipped } else { &sigs[i] };
                (i as ParticipantId, statements[i], sig)
            })
            .collect();
        assert_eq!(
            roster.verify_all(&items),
            Err(SecAggError::BadSignature { signer: 3 })
        );
        // A signer outside the roster.
        let items: Vec<SignedStatement<'_>> = (0..20)
            .map(|i| {
                (
                    if i == 11 { 77 } else { i as ParticipantId },
                    statements[i],
                    &sigs[i],
                )
            })
            .collect();
        assert_eq!(
            roster.verify_all(&items),
            Err(SecAggError::BadSignature { signer: 77 })
        );
    }

    #[test]
    fn rosters_refuse_repeated_and_invalid_keys() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let a = IdentityKey::generate(&mut rng).public();
        let b = IdentityKey::generate(&mut rng).public();
        assert_eq!(
            Roster::new(vec![a, b, a]),
            Err(SecAggError::DuplicateIdentity(2))
        );
        // The identity point (all zero but the sign bit convention) is small order.
        let mut weak = [0u8; 32];
        weak[0] = 1;
        assert!(Roster::new(vec![a, IdentityPublicKey(weak)]).is_err());
        let json = serde_json::to_string(&Roster::new(vec![a, b]).unwrap()).unwrap();
        let back: Roster = serde_json::from_str(&json).unwrap();
        assert_eq!(back.keys(), &[a, b]);
    }
}
