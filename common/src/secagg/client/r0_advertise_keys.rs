//! Client state AdvertiseKeys: keys drawn and advertised; handles the key directory by dealing shares.

use std::collections::{BTreeMap, BTreeSet};

use curve25519_dalek::ristretto::RistrettoPoint;
use rand::CryptoRng;
use rayon::prelude::*;

use super::super::ParticipantId;
use super::super::crypto::{self, KeyPair};
use super::super::error::{Result, SecAggError};
use super::super::group::{self, MaskKeyPair, Scalar};
use super::super::messages::{
    AdvertiseKeys, EncryptedShares, KeyDirectory, ShareCommitments, ShareKeys, WIRE_VERSION,
};
use super::super::shamir::{self, SecretScalar};
use super::Context;
use super::r1_share_keys::ShareKeysState;
use super::shares::{HeldShares, encode_share_plaintext};

/// A neighbour's advertised keys, checked.
pub(crate) struct Peer {
    pub(crate) cipher_public_key: [u8; 32],
    pub(crate) mask_public_key: RistrettoPoint,
}

pub(crate) struct AdvertiseKeysState {
    cipher: KeyPair,
    mask: MaskKeyPair,
    /// The self-mask secret β (the PRG seed is derived from it).
    beta: SecretScalar,
}

impl AdvertiseKeysState {
    /// Draws both key pairs and β; the AdvertiseKeys message is signed in malicious rounds.
    pub(crate) fn start<R: CryptoRng + ?Sized>(
        ctx: &Context,
        rng: &mut R,
    ) -> (Self, AdvertiseKeys) {
        let cipher = KeyPair::generate(rng);
        let mask = MaskKeyPair::generate(rng);
        let beta = SecretScalar::random(rng);
        let mut msg = AdvertiseKeys {
            version: WIRE_VERSION,
            round_id: ctx.round(),
            sender: ctx.id,
            cipher_public_key: cipher.public_bytes(),
            mask_public_key: mask.public_bytes(),
            signature: None,
        };
        msg.signature = ctx.sign(&msg.statement(&ctx.digest));
        (AdvertiseKeysState { cipher, mask, beta }, msg)
    }

    /// Checks U1 — in malicious rounds first of all every entry's signature against the roster — then deals.
    pub(crate) fn on_key_directory<R: CryptoRng + ?Sized>(
        &self,
        ctx: &Context,
        dir: &KeyDirectory,
        rng: &mut R,
    ) -> Result<(ShareKeysState, ShareKeys)> {
        ctx.expect_round(dir.round_id)?;
        let peers = self.check_directory(ctx, dir)?;
        let t = ctx.threshold();
        if dir.participants.len() < t {
            return Err(SecAggError::TooFewSurvivors {
                survivors: dir.participants.len(),
                threshold: t,
            });
        }
        if peers.len() + 1 < t {
            return Err(SecAggError::TooFewSurvivors {
                survivors: peers.len() + 1,
                threshold: t,
            });
        }
        let (msg, own) = self.deal(ctx, &peers, rng)?;
        let next = ShareKeysState {
            cipher: self.cipher.clone(),
            mask: self.mask.clone(),
            beta: self.beta.clone(),
            peers,
            own,
        };
        Ok((next, msg))
    }

    /// Structure, own entry, distinct keys, valid mask keys and (malicious) signatures; returns the neighbours.
    fn check_directory(
        &self,
        ctx: &Context,
        dir: &KeyDirectory,
    ) -> Result<BTreeMap<ParticipantId, Peer>> {
        let n = ctx.params.participants;
        let mut seen_keys = BTreeSet::new();
        let mut prev: Option<ParticipantId> = None;
        let mut found_self = false;
        let mut signed = Vec::with_capacity(dir.participants.len());
        for k in &dir.participants {
            if k.participant >= n || prev.is_some_and(|p| p >= k.participant) {
                return Err(SecAggError::Malformed(
                    "key directory ids must be valid and strictly increasing".into(),
                ));
            }
            prev = Some(k.participant);
            if ctx.malicious() {
                let Some(sig) = &k.signature else {
                    return Err(SecAggError::MissingSignature {
                        participant: k.participant,
                    });
                };
                signed.push((k.participant, k.statement(&ctx.digest, ctx.round()), sig));
            }
            if !seen_keys.insert(k.cipher_public_key) || !seen_keys.insert(k.mask_public_key) {
                return Err(SecAggError::Malformed(
                    "key directory repeats a public key".into(),
                ));
            }
            if k.participant == ctx.id {
                if k.cipher_public_key != self.cipher.public_bytes()
                    || k.mask_public_key != self.mask.public_bytes()
                {
                    return Err(SecAggError::Malformed(
                        "key directory lists other keys for this participant".into(),
                    ));
                }
                found_self = true;
            }
        }
        if !found_self {
            return Err(SecAggError::Malformed(
                "key directory does not list this participant".into(),
            ));
        }
        ctx.params.roster.verify_all(&signed)?;
        dir.participants
            .iter()
            .filter(|k| ctx.graph.are_neighbours(ctx.id, k.participant))
            .map(|k| {
                Ok((
                    k.participant,
                    Peer {
                        cipher_public_key: k.cipher_public_key,
                        mask_public_key: group::decode_public_key(
                            &k.mask_public_key,
                            k.participant,
                        )?,
                    },
                ))
            })
            .collect()
    }

    /// Shares β and σ among the neighbours and itself (evaluation point = id + 1), encrypts each neighbour's pair,
    /// and in malicious rounds commits to every share and signs the dealing.
    fn deal<R: CryptoRng + ?Sized>(
        &self,
        ctx: &Context,
        peers: &BTreeMap<ParticipantId, Peer>,
        rng: &mut R,
    ) -> Result<(ShareKeys, HeldShares)> {
        let t = ctx.threshold();
        let mut holders: Vec<ParticipantId> = peers.keys().copied().chain([ctx.id]).collect();
        holders.sort_unstable();
        let xs: Vec<u32> = holders.iter().map(|&h| h + 1).collect();
        let self_mask_shares = shamir::split(&self.beta, t, &xs, rng)?;
        let mask_key_shares = shamir::split(self.mask.secret(), t, &xs, rng)?;
        let self_mask_commitment = group::commit(self.beta.expose());
        let commitments = ctx.malicious().then(|| {
            let ys = |shares: &[shamir::Share]| shares.iter().map(|s| s.y).collect::<Vec<Scalar>>();
            ShareCommitments::of_shares(
                &ctx.digest,
                ctx.round(),
                ctx.id,
                &self_mask_commitment,
                &ys(&self_mask_shares),
                &ys(&mask_key_shares),
            )
        });
        let mut own = None;
        let mut to_send = Vec::with_capacity(peers.len());
        for ((&holder, sm), mk) in holders.iter().zip(self_mask_shares).zip(mask_key_shares) {
            let held = HeldShares {
                self_mask: sm,
                mask_key: mk,
            };
            if holder == ctx.id {
                own = Some(held);
            } else {
                to_send.push((holder, held));
            }
        }
        let own = own.ok_or_else(|| SecAggError::Malformed("no own share dealt".into()))?;
        // One key agreement per neighbour: spread over all cores.
        let (id, round, cipher) = (ctx.id, ctx.round(), &self.cipher);
        let encrypted_shares = to_send
            .par_iter()
            .map(|(holder, held)| {
                let key = crypto::share_encryption_key(
                    cipher,
                    &peers[holder].cipher_public_key,
                    round,
                    id,
                    *holder,
                    *holder,
                )?;
                let plaintext = encode_share_plaintext(id, *holder, held);
                Ok(EncryptedShares {
                    recipient: *holder,
                    ciphertext: crypto::encrypt_shares(&key, round, id, *holder, &plaintext),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut msg = ShareKeys {
            version: WIRE_VERSION,
            round_id: round,
            sender: id,
            self_mask_commitment,
            encrypted_shares,
            commitments,
            signature: None,
        };
        msg.signature = ctx.sign(&msg.statement(&ctx.digest));
        Ok((msg, own))
    }
}
