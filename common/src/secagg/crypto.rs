//! Symmetric and X25519 building blocks: the per-round X25519 cipher key pairs, HKDF-SHA256 key derivation with
//! domain-separation labels, ChaCha20-Poly1305 encryption of shares and the ChaCha20 mask PRG (the hot path).
//! The Ristretto255 mask keys and share commitments are in [`super::group`].
//!
//! Every derived key binds the protocol version, its purpose, the round and the (ordered) participants, so a key
//! for one purpose or round can never be reused for another.

use chacha20::ChaCha20;
use chacha20::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};
use chacha20poly1305::ChaCha20Poly1305;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use hkdf::Hkdf;
use rand::CryptoRng;
use rayon::prelude::*;
use sha2::Sha256;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::error::{Result, SecAggError};
use super::shamir::SecretScalar;
use super::{ParticipantId, RoundId};

/// Domain-separation label of the key that encrypts shares from one participant to another.
pub const LABEL_SHARE_ENCRYPTION: &[u8] = b"confide/secagg/v2/share-encryption";
/// Domain-separation label of the seed of a pairwise mask.
pub const LABEL_PAIRWISE_MASK: &[u8] = b"confide/secagg/v2/pairwise-mask";
/// Domain-separation label of the self-mask PRG seed derived from the self-mask secret β.
pub const LABEL_SELF_MASK_SEED: &[u8] = b"confide/secagg/v2/self-mask-seed";
/// HKDF salt shared by all derivations of this protocol version.
const HKDF_SALT: &[u8] = b"confide/secagg/v2";

/// Length of an X25519 key or a seed.
pub const KEY_LEN: usize = 32;

/// A 32-byte secret (mask seed, self-mask seed or symmetric key); zeroised on drop, never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct Secret32(pub(crate) [u8; KEY_LEN]);

impl Secret32 {
    /// Draws a fresh secret from a cryptographically secure generator.
    pub fn random<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut bytes = [0u8; KEY_LEN];
        rng.fill_bytes(&mut bytes);
        Secret32(bytes)
    }

    /// Wraps raw bytes (the caller's copy should be zeroised).
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Secret32(bytes)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl std::fmt::Debug for Secret32 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret32(<redacted>)")
    }
}

/// An X25519 key pair; the secret half is zeroised on drop by x25519-dalek.
#[derive(Clone)]
pub struct KeyPair {
    secret: StaticSecret,
    public: PublicKey,
}

impl KeyPair {
    /// Generates a key pair from a cryptographically secure generator.
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let secret = StaticSecret::random_from_rng(rng);
        let public = PublicKey::from(&secret);
        KeyPair { secret, public }
    }

    /// Rebuilds a key pair from secret bytes (used when the server reconstructs a dropped client's mask key).
    pub fn from_secret_bytes(bytes: [u8; KEY_LEN]) -> Self {
        let secret = StaticSecret::from(bytes);
        let public = PublicKey::from(&secret);
        KeyPair { secret, public }
    }

    /// The public key bytes.
    pub fn public_bytes(&self) -> [u8; KEY_LEN] {
        self.public.to_bytes()
    }

    /// The secret key bytes, wrapped so they are zeroised when dropped.
    pub fn secret_bytes(&self) -> Secret32 {
        Secret32(self.secret.to_bytes())
    }

    /// The public key that belongs to secret bytes (how the server checks a complaint's revealed key).
    pub fn public_of_secret(bytes: [u8; KEY_LEN]) -> [u8; KEY_LEN] {
        Self::from_secret_bytes(bytes).public_bytes()
    }

    /// Raw X25519 agreement with a peer's public key; rejects non-contributory results.
    fn agree(&self, peer: ParticipantId, their_public: &[u8; KEY_LEN]) -> Result<Secret32> {
        let shared = self.secret.diffie_hellman(&PublicKey::from(*their_public));
        if !shared.was_contributory() {
            return Err(SecAggError::WeakKey(peer));
        }
        Ok(Secret32(shared.to_bytes()))
    }
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair")
            .field("public", &self.public.as_bytes())
            .finish_non_exhaustive()
    }
}

pub(crate) fn hkdf_expand(ikm: &[u8], info: &[&[u8]]) -> Secret32 {
    let hk = Hkdf::<Sha256>::new(Some(HKDF_SALT), ikm);
    let mut out = [0u8; KEY_LEN];
    // 32 bytes is far below HKDF-SHA256's 255·32 limit, so this cannot fail.
    if hk.expand_multi_info(info, &mut out).is_err() {
        unreachable!("HKDF output of 32 bytes is always valid");
    }
    Secret32(out)
}

/// Key that encrypts the shares `sender` sends to `receiver` in `round`. Direction-specific, so each key
/// encrypts exactly one message and a fixed nonce is safe.
pub fn share_encryption_key(
    own: &KeyPair,
    peer_public: &[u8; KEY_LEN],
    round: RoundId,
    sender: ParticipantId,
    receiver: ParticipantId,
    peer: ParticipantId,
) -> Result<Secret32> {
    let shared = own.agree(peer, peer_public)?;
    Ok(hkdf_expand(
        &shared.0,
        &[
            LABEL_SHARE_ENCRYPTION,
            &round.to_le_bytes(),
            &sender.to_le_bytes(),
            &receiver.to_le_bytes(),
        ],
    ))
}

/// Seed of the self mask PRG(b_u): HKDF of the self-mask secret β, bound to the round and its owner.
pub fn self_mask_seed(beta: &SecretScalar, round: RoundId, owner: ParticipantId) -> Secret32 {
    hkdf_expand(
        &beta.to_bytes()[..],
        &[
            LABEL_SELF_MASK_SEED,
            &round.to_le_bytes(),
            &owner.to_le_bytes(),
        ],
    )
}

/// Associated data of a share ciphertext: round id, sender, receiver.
fn share_ad(round: RoundId, sender: ParticipantId, receiver: ParticipantId) -> [u8; 16] {
    let mut ad = [0u8; 16];
    ad[..8].copy_from_slice(&round.to_le_bytes());
    ad[8..12].copy_from_slice(&sender.to_le_bytes());
    ad[12..].copy_from_slice(&receiver.to_le_bytes());
    ad
}

/// Length of the Poly1305 tag appended to each ciphertext.
pub const TAG_LEN: usize = 16;

/// Encrypts a share plaintext for `receiver` (ChaCha20-Poly1305, AD = round, sender, receiver).
pub fn encrypt_shares(
    key: &Secret32,
    round: RoundId,
    sender: ParticipantId,
    receiver: ParticipantId,
    plaintext: &[u8],
) -> Vec<u8> {
    let cipher = ChaCha20Poly1305::new(&key.0.into());
    let nonce = [0u8; 12];
    let ad = share_ad(round, sender, receiver);
    match cipher.encrypt(
        &nonce.into(),
        Payload {
            msg: plaintext,
            aad: &ad,
        },
    ) {
        Ok(ct) => ct,
        // Only fails for plaintexts longer than 256 GiB.
        Err(_) => unreachable!("share plaintext is tiny"),
    }
}

/// Decrypts a share ciphertext from `sender`; the plaintext is zeroised on drop.
pub fn decrypt_shares(
    key: &Secret32,
    round: RoundId,
    sender: ParticipantId,
    receiver: ParticipantId,
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>> {
    let cipher = ChaCha20Poly1305::new(&key.0.into());
    let nonce = [0u8; 12];
    let ad = share_ad(round, sender, receiver);
    cipher
        .decrypt(
            &nonce.into(),
            Payload {
                msg: ciphertext,
                aad: &ad,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| SecAggError::BadCiphertext { sender })
}

/// Ring elements processed per inner step of the mask expansion (16 KiB of keystream, stays in L1/L2).
const BLOCK_ELEMS: usize = 4096;
/// Ring elements per parallel task.
const TASK_ELEMS: usize = 1 << 16;

fn prg_cipher(seed: &Secret32, start_elem: usize) -> ChaCha20 {
    let mut cipher = ChaCha20::new(&seed.0.into(), &[0u8; 12].into());
    cipher.seek((start_elem as u64) * 4);
    cipher
}

/// Adds `PRG(s)` for every seed in `add` and subtracts it for every seed in `sub`, element-wise with wrapping
/// arithmetic mod 2^32. The keystream of seed `s` at element `i` is the same whatever the chunking, so the
/// work is split into independent slices of the vector and spread over all cores.
pub fn apply_masks(out: &mut [u32], add: &[Secret32], sub: &[Secret32]) {
    out.par_chunks_mut(TASK_ELEMS)
        .enumerate()
        .for_each(|(task, chunk)| {
            let start = task * TASK_ELEMS;
            let mut adders: Vec<ChaCha20> = add.iter().map(|s| prg_cipher(s, start)).collect();
            let mut subbers: Vec<ChaCha20> = sub.iter().map(|s| prg_cipher(s, start)).collect();
            let mut buf = Zeroizing::new(vec![0u8; BLOCK_ELEMS * 4]);
            for block in chunk.chunks_mut(BLOCK_ELEMS) {
                let bytes = &mut buf[..block.len() * 4];
                for cipher in &mut adders {
                    cipher.write_keystream(bytes);
                    let (words, _) = bytes.as_chunks::<4>();
                    for (o, w) in block.iter_mut().zip(words) {
                        *o = o.wrapping_add(u32::from_le_bytes(*w));
                    }
                }
                for cipher in &mut subbers {
                    cipher.write_keystream(bytes);
                    let (words, _) = bytes.as_chunks::<4>();
                    for (o, w) in block.iter_mut().zip(words) {
                        *o = o.wrapping_sub(u32::from_le_bytes(*w));
                    }
                }
            }
        });
}

/// Generates the keystream of one `len`-element mask vector on one core and discards it: the PRG bound the
/// benchmark compares masking and unmasking against. Returns a checksum so the work cannot be optimised away.
pub fn prg_keystream_only(seed: &Secret32, len: usize) -> u32 {
    let mut cipher = prg_cipher(seed, 0);
    let mut buf = vec![0u8; BLOCK_ELEMS * 4];
    let mut acc = 0u32;
    let mut left = len;
    while left > 0 {
        let n = left.min(BLOCK_ELEMS);
        let bytes = &mut buf[..n * 4];
        cipher.write_keystream(bytes);
        acc = acc.wrapping_add(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]));
        left -= n;
    }
    acc
}

/// Reduces every element into Z_{2^bits} (a no-op for 32 bits).
pub fn reduce_to_ring(values: &mut [u32], bits: u32) {
    if bits < 32 {
        let mask = (1u32 << bits) - 1;
        values.par_iter_mut().for_each(|v| *v &= mask);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    #[test]
    fn low_order_key_is_rejected() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let a = KeyPair::generate(&mut rng);
        assert_eq!(
            share_encryption_key(&a, &[0u8; 32], 1, 0, 1, 1),
            Err(SecAggError::WeakKey(1))
        );
    }

    #[test]
    fn share_encryption_binds_round_sender_receiver() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let a = KeyPair::generate(&mut rng);
        let b = KeyPair::generate(&mut rng);
        let k_ab = share_encryption_key(&a, &b.public_bytes(), 5, 0, 1, 1).unwrap();
        let k_ab_at_b = share_encryption_key(&b, &a.public_bytes(), 5, 0, 1, 0).unwrap();
        let ct = encrypt_shares(&k_ab, 5, 0, 1, b"hello");
        assert_eq!(
            &decrypt_shares(&k_ab_at_b, 5, 0, 1, &ct).unwrap()[..],
            b"hello"
        );
        assert!(decrypt_shares(&k_ab_at_b, 6, 0, 1, &ct).is_err());
        assert!(decrypt_shares(&k_ab_at_b, 5, 1, 0, &ct).is_err());
        let k_ba = share_encryption_key(&b, &a.public_bytes(), 5, 1, 0, 0).unwrap();
        assert_ne!(k_ab, k_ba);
        let mut tampered = ct.clone();
        tampered[0] ^= 1;
        assert_eq!(
            decrypt_shares(&k_ab_at_b, 5, 0, 1, &tampered),
            Err(SecAggError::BadCiphertext { sender: 0 })
        );
    }

    #[test]
    fn masks_cancel_and_chunking_is_invisible() {
        let mut rng = ChaCha20Rng::seed_from_u64(4);
        let seeds: Vec<Secret32> = (0..3).map(|_| Secret32::random(&mut rng)).collect();
        let len = TASK_ELEMS * 2 + BLOCK_ELEMS + 17;
        let mut v: Vec<u32> = (0..len as u32).collect();
        apply_masks(&mut v, &seeds, &seeds[..1]);
        apply_masks(&mut v, &[], &seeds[1..]);
        assert!(v.iter().enumerate().all(|(i, &x)| x == i as u32));
        // The keystream at element i does not depend on where the vector is split.
        let mut whole = vec![0u32; len];
        apply_masks(&mut whole, &seeds[..1], &[]);
        let mut tail = vec![0u32; 100];
        let mut cipher = prg_cipher(&seeds[0], len - 100);
        let mut bytes = vec![0u8; 400];
        cipher.apply_keystream(&mut bytes);
        for (i, w) in bytes.chunks_exact(4).enumerate() {
            tail[i] = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
        }
        assert_eq!(&whole[len - 100..], &tail[..]);
    }
}
