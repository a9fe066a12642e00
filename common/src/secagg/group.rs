//! Ristretto255 building blocks: the mask key pair (σ, σ·B) and its pairwise agreement, and the share commitments
//! that make bad dealing detectable when it happens.
//!
//! **Commitments.** A dealer commits to each holder's share s as s·B, plus the constant terms (β·B, and σ·B = its
//! advertised mask public key). Honest shares are evaluations of one polynomial of degree t − 1, so the commitments
//! are too, "in the exponent". [`low_degree_test`] checks that with one random codeword of the dual Reed–Solomon code
//! (Cascudo–David, SCRAPE 2017): a vector that is not a codeword passes with probability 1/ℓ. This is Feldman's
//! verifiability with commitments to the evaluations instead of the coefficients: a holder checks its share with one
//! point per secret instead of t ([`batch_check`] over all dealers at once). Both are equally binding: a share that
//! matches its commitment is the value of the committed polynomial.
//!
//! **One test for both secrets.** The server does not test the β- and σ-commitments (2·n points per dealing, each
//! a costly decompression) but one *combined* vector W_j = (b_j + γ·s_j)·B with constant β·B + γ·σ·B, where γ is a
//! Fiat–Shamir challenge over the per-secret commitments ([`combination_challenge`]), so they are fixed before γ
//! is known. Each holder checks its b_j, s_j and b_j + γ·s_j against V^β_j, V^σ_j and W_j. If the honest holders'
//! b- or σ-values were not on polynomials of degree < t through β and σ, their combination would be for at most
//! one γ (if b + γ·s and b + γ′·s are codewords, so are s and b): passing needs γ to hit that value, probability
//! 1/ℓ per dealing the dealer tries. A *dishonest* holder's V^β_j or V^σ_j may still be off its polynomial (its
//! W_j relation unchecked by anyone); the server therefore accepts a revealed share only if it matches its
//! commitment **and** W_j = V^β_j + γ·V^σ_j ([`combined_relation_holds`]). For any set of holders whose relation
//! holds the argument above applies again (at most 2^n sets, so a bad γ has probability ≤ 2^n/ℓ ≈ 2⁻¹⁵²).

use curve25519_dalek::constants::RISTRETTO_BASEPOINT_POINT;
use curve25519_dalek::ristretto::CompressedRistretto;
use curve25519_dalek::traits::{Identity, VartimeMultiscalarMul};
use rand::{CryptoRng, SeedableRng};
use rand_chacha::ChaCha20Rng;

use super::crypto::{self, LABEL_PAIRWISE_MASK, Secret32};
use super::error::{Result, SecAggError};
use super::shamir::{SecretScalar, random_scalar};
use super::{ParticipantId, RoundId};

/// The group and scalar types (re-exported so callers and tests need no direct curve25519-dalek dependency).
pub use curve25519_dalek::ristretto::RistrettoPoint;
pub use curve25519_dalek::scalar::Scalar;

/// Decodes a compressed Ristretto255 point (canonical encodings only).
pub fn decode_point(bytes: &[u8; 32]) -> Option<RistrettoPoint> {
    CompressedRistretto(*bytes).decompress()
}

/// The commitment s·B to a scalar, compressed.
pub fn commit(s: &Scalar) -> [u8; 32] {
    RistrettoPoint::mul_base(s).compress().to_bytes()
}

/// A Ristretto255 key pair for agreeing pairwise masks: secret σ, public σ·B. The secret is zeroised on drop.
#[derive(Clone)]
pub struct MaskKeyPair {
    secret: SecretScalar,
    public: [u8; 32],
}

impl MaskKeyPair {
    /// A fresh key pair.
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        Self::from_secret(SecretScalar::new(random_scalar(rng)))
    }

    /// The key pair of a secret (used when the server rebuilds a dropped client's mask key).
    pub fn from_secret(secret: SecretScalar) -> Self {
        let public = commit(secret.expose());
        MaskKeyPair { secret, public }
    }

    /// The public key σ·B, compressed.
    pub fn public_bytes(&self) -> [u8; 32] {
        self.public
    }

    /// The secret σ.
    pub fn secret(&self) -> &SecretScalar {
        &self.secret
    }
}

impl std::fmt::Debug for MaskKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MaskKeyPair")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

/// A mask public key as a point; the identity (and anything that is not a canonical encoding) is refused.
pub fn decode_public_key(bytes: &[u8; 32], owner: ParticipantId) -> Result<RistrettoPoint> {
    match decode_point(bytes) {
        Some(p) if p != RistrettoPoint::identity() => Ok(p),
        _ => Err(SecAggError::WeakKey(owner)),
    }
}

/// Seed of the pairwise mask between `own_id` and `peer`: HKDF of σ_own·pk_peer, bound to the round and the ordered
/// pair; both sides derive the same seed.
pub fn pairwise_mask_seed(
    own: &MaskKeyPair,
    own_id: ParticipantId,
    peer_public: &RistrettoPoint,
    peer: ParticipantId,
    round: RoundId,
) -> Result<Secret32> {
    let shared = peer_public * own.secret.expose();
    if shared == RistrettoPoint::identity() {
        return Err(SecAggError::WeakKey(peer));
    }
    let (lo, hi) = if own_id < peer {
        (own_id, peer)
    } else {
        (peer, own_id)
    };
    Ok(crypto::hkdf_expand(
        shared.compress().as_bytes(),
        &[
            LABEL_PAIRWISE_MASK,
            &round.to_le_bytes(),
            &lo.to_le_bytes(),
            &hi.to_le_bytes(),
        ],
    ))
}

/// The commitments s_i·B of many scalars, compressed — equal to [`commit`] of each, at a fraction of the cost.
///
/// A Ristretto encoding needs an inverse square root, which does not batch; the encoding of a *double* does
/// (`double_and_compress_batch`: one shared inversion). So each s_i is halved first: 2·((s_i/2)·B) = s_i·B.
pub fn commit_all(scalars: &[Scalar]) -> Vec<[u8; 32]> {
    use rayon::prelude::*;
    let half = Scalar::from(2u8).invert();
    let halves: Vec<RistrettoPoint> = scalars
        .par_iter()
        .map(|s| RistrettoPoint::mul_base(&(s * half)))
        .collect();
    RistrettoPoint::double_and_compress_batch(&halves)
        .into_iter()
        .map(|c| c.to_bytes())
        .collect()
}

/// Label of the challenge γ that combines a dealing's two sharings into one for the degree test.
const LABEL_COMBINATION: &[u8] = b"confide/secagg/v4/combination";

/// The digest that fixes a dealing's per-secret commitments — β·B, then every holder's V^β and V^σ — before the
/// combination challenge is drawn from it (and routed to each holder with its commitments).
pub fn dealing_digest(
    self_mask_commitment: &[u8; 32],
    self_mask: &[[u8; 32]],
    mask_key: &[[u8; 32]],
) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(self_mask_commitment);
    for v in [self_mask, mask_key] {
        h.update((v.len() as u64).to_le_bytes());
        v.iter().for_each(|p| h.update(p));
    }
    h.finalize().into()
}

/// γ for one dealing: a scalar derived (SHA-512, reduced mod ℓ) from the round's parameters, the dealer and its
/// [`dealing_digest`]. Dealer, holders and server all derive the same γ.
pub fn combination_challenge(
    params_digest: &[u8; 32],
    round: RoundId,
    dealer: ParticipantId,
    dealing_digest: &[u8; 32],
) -> Scalar {
    use sha2::{Digest, Sha512};
    let mut h = Sha512::new();
    h.update((LABEL_COMBINATION.len() as u64).to_le_bytes());
    h.update(LABEL_COMBINATION);
    h.update(params_digest);
    h.update(round.to_le_bytes());
    h.update(dealer.to_le_bytes());
    h.update(dealing_digest);
    Scalar::from_bytes_mod_order_wide(&h.finalize().into())
}

/// The combined shares b_j + γ·s_j.
pub fn combined_shares(gamma: &Scalar, self_mask: &[Scalar], mask_key: &[Scalar]) -> Vec<Scalar> {
    self_mask
        .iter()
        .zip(mask_key)
        .map(|(b, s)| b + gamma * s)
        .collect()
}

/// V^β + γ·V^σ: a combined commitment from the two per-secret ones (with β·B and σ·B, the combined constant).
pub fn combine(
    self_mask: &RistrettoPoint,
    mask_key: &RistrettoPoint,
    gamma: &Scalar,
) -> RistrettoPoint {
    RistrettoPoint::vartime_multiscalar_mul([Scalar::ONE, *gamma], [self_mask, mask_key])
}

/// Whether W_j = V^β_j + γ·V^σ_j for one holder's three commitments (all must be points).
pub fn combined_relation_holds(
    self_mask: &[u8; 32],
    mask_key: &[u8; 32],
    combined: &[u8; 32],
    gamma: &Scalar,
) -> bool {
    match (
        decode_point(self_mask),
        decode_point(mask_key),
        decode_point(combined),
    ) {
        (Some(vb), Some(vs), Some(w)) => combine(&vb, &vs, gamma) == w,
        _ => false,
    }
}

/// Checks s_i·B = V_i for every pair at once: Σ r_i s_i · B = Σ r_i V_i with independent random 128-bit weights
/// r_i (from the caller's CSPRNG, so no one can aim at them). A batch with any false pair passes with probability
/// ≤ 2⁻¹²⁸ (for fixed other weights, at most one value of r_i mod ℓ cancels it). Empty batches pass.
pub fn batch_check<R: CryptoRng + ?Sized>(items: &[(Scalar, RistrettoPoint)], rng: &mut R) -> bool {
    use rayon::prelude::*;
    if items.is_empty() {
        return true;
    }
    let weights: Vec<Scalar> = items
        .iter()
        .map(|_| {
            let mut r = [0u8; 16];
            rng.fill_bytes(&mut r);
            Scalar::from(u128::from_le_bytes(r))
        })
        .collect();
    let lhs: Scalar = items.iter().zip(&weights).map(|((s, _), r)| s * r).sum();
    // One multiscalar multiplication per core.
    let per_core = items.len().div_ceil(rayon::current_num_threads()).max(32);
    let rhs: RistrettoPoint = items
        .par_chunks(per_core)
        .zip(weights.par_chunks(per_core))
        .map(|(items, weights)| {
            RistrettoPoint::vartime_multiscalar_mul(weights, items.iter().map(|(_, p)| p))
        })
        .sum();
    RistrettoPoint::mul_base(&lhs) == rhs
}

/// Seeds a deterministic generator for Fiat–Shamir challenges: the same inputs give the same test (so a replayed
/// message meets the same verdict), and a prover cannot choose the challenge without changing what it committed.
pub fn challenge_rng(digest: [u8; 32]) -> ChaCha20Rng {
    ChaCha20Rng::from_seed(digest)
}

/// Whether the points V_0 = `constant` and V_i (at the non-zero, distinct `xs`) are evaluations at 0 and at the
/// `xs` of one polynomial of degree < `threshold` "in the exponent", for each of the `polys`. One random dual
/// codeword per polynomial (drawn from `rng`), all checked in one multiscalar multiplication.
pub fn low_degree_test<R: CryptoRng + ?Sized>(
    threshold: usize,
    xs: &[u32],
    polys: &[(RistrettoPoint, &[RistrettoPoint])],
    rng: &mut R,
) -> bool {
    batch_low_degree_test(
        threshold,
        &polys
            .iter()
            .map(|&(constant, values)| DegreeClaim {
                xs,
                constant,
                values,
            })
            .collect::<Vec<_>>(),
        rng,
    )
}

/// One vector of committed evaluations for [`batch_low_degree_test`]: V_0 = `constant` at 0 and `values` at `xs`.
#[derive(Clone, Copy)]
pub struct DegreeClaim<'a> {
    pub xs: &'a [u32],
    pub constant: RistrettoPoint,
    pub values: &'a [RistrettoPoint],
}

/// Whether every claim lies on a polynomial of degree < `threshold` "in the exponent" — all in one multiscalar
/// multiplication, so a round's 2·n dealings cost one large (Pippenger) MSM instead of n small ones.
///
/// Claims with the same evaluation points share one random dual codeword w (its O(m²) weights computed once), and
/// each claim c gets an independent random weight ρ_c: the test is Σ_c ρ_c Σ_i w_i V_{c,i} = 0. A claim that is not
/// a codeword gives Σ_i w_i V_{c,i} ≠ 0 except with probability 1/ℓ over w, and a non-zero term survives the random
/// combination except with probability 1/ℓ over ρ — so one false claim passes with probability ≤ 2/ℓ. A failed
/// batch says only that some claim is false: test them one by one to find which.
pub fn batch_low_degree_test<R: CryptoRng + ?Sized>(
    threshold: usize,
    claims: &[DegreeClaim<'_>],
    rng: &mut R,
) -> bool {
    if threshold == 0 || claims.iter().any(|c| c.values.len() != c.xs.len()) {
        return false;
    }
    let mut dual: std::collections::HashMap<&[u32], Option<Vec<Scalar>>> = Default::default();
    let mut scalars = Vec::new();
    let mut points = Vec::new();
    for c in claims {
        if c.xs.len() < threshold {
            continue; // every vector of ≤ t points (0 included) interpolates some polynomial of degree < t
        }
        let Some(w) = dual
            .entry(c.xs)
            .or_insert_with(|| dual_codeword(threshold, c.xs, rng))
        else {
            return false; // repeated or zero evaluation points
        };
        let rho = random_scalar(rng);
        for (i, wi) in w.iter().enumerate() {
            scalars.push(rho * wi);
            points.push(if i == 0 { c.constant } else { c.values[i - 1] });
        }
    }
    points.is_empty()
        || RistrettoPoint::vartime_multiscalar_mul(&scalars, &points) == RistrettoPoint::identity()
}

/// A random codeword (w_i) of the dual of the Reed–Solomon code RS[m, t] at α = (0, xs…): w_i = u_i·f(α_i) with
/// u_i = 1 / Π_{j≠i} (α_i − α_j) and f random of degree ≤ m − 1 − t. `None` if two points coincide (or one is 0).
fn dual_codeword<R: CryptoRng + ?Sized>(
    threshold: usize,
    xs: &[u32],
    rng: &mut R,
) -> Option<Vec<Scalar>> {
    let alphas: Vec<Scalar> = std::iter::once(Scalar::ZERO)
        .chain(xs.iter().map(|&x| Scalar::from(x)))
        .collect();
    let mut u: Vec<Scalar> = alphas
        .iter()
        .enumerate()
        .map(|(i, ai)| {
            alphas
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .fold(Scalar::ONE, |acc, (_, aj)| acc * (ai - aj))
        })
        .collect();
    if u.contains(&Scalar::ZERO) {
        return None;
    }
    Scalar::invert_batch_alloc(&mut u);
    let dual_degree = alphas.len() - 1 - threshold;
    let f: Vec<Scalar> = (0..=dual_degree).map(|_| random_scalar(rng)).collect();
    Some(
        alphas
            .iter()
            .zip(&u)
            .map(|(a, ui)| ui * f.iter().rev().fold(Scalar::ZERO, |acc, c| acc * a + c))
            .collect(),
    )
}

/// The generator B (for callers that build multiscalar checks).
pub fn basepoint() -> RistrettoPoint {
    RISTRETTO_BASEPOINT_POINT
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secagg::shamir;

    #[test]
    fn both_sides_derive_the_same_pairwise_seed() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let a = MaskKeyPair::generate(&mut rng);
        let b = MaskKeyPair::generate(&mut rng);
        let (pa, pb) = (
            decode_public_key(&a.public_bytes(), 3).unwrap(),
            decode_public_key(&b.public_bytes(), 9).unwrap(),
        );
        let ab = pairwise_mask_seed(&a, 3, &pb, 9, 7).unwrap();
        let ba = pairwise_mask_seed(&b, 9, &pa, 3, 7).unwrap();
        assert_eq!(ab, ba);
        assert_ne!(ab, pairwise_mask_seed(&a, 3, &pb, 9, 8).unwrap());
        assert_eq!(
            decode_public_key(&[0; 32], 4).unwrap_err(),
            SecAggError::WeakKey(4)
        );
        assert!(decode_public_key(&[0xff; 32], 4).is_err());
    }

    fn dealing(
        t: usize,
        n: u32,
        seed: u64,
    ) -> (RistrettoPoint, Vec<u32>, Vec<RistrettoPoint>, Vec<Scalar>) {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let secret = SecretScalar::random(&mut rng);
        let xs: Vec<u32> = (1..=n).collect();
        let shares = shamir::split(&secret, t, &xs, &mut rng).unwrap();
        let points = shares
            .iter()
            .map(|s| RistrettoPoint::mul_base(&s.y))
            .collect();
        let ys = shares.iter().map(|s| s.y).collect();
        (RistrettoPoint::mul_base(secret.expose()), xs, points, ys)
    }

    #[test]
    fn the_degree_test_accepts_dealings_and_refuses_anything_else() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        for (t, n) in [(2usize, 3u32), (3, 5), (6, 10), (11, 20)] {
            let (c0, xs, v, _) = dealing(t, n, u64::from(n));
            assert!(
                low_degree_test(t, &xs, &[(c0, &v)], &mut rng),
                "t {t} n {n}"
            );
            // One share off the polynomial.
            let mut bad = v.clone();
            bad[1] += basepoint();
            assert!(!low_degree_test(t, &xs, &[(c0, &v), (c0, &bad)], &mut rng));
            // A wrong constant term (e.g. another mask public key).
            assert!(!low_degree_test(
                t,
                &xs,
                &[(c0 + basepoint(), &v)],
                &mut rng
            ));
            // A polynomial of degree t (one too many) is refused.
            let (c1, _, v1, _) = dealing(t + 1, n, 99);
            assert!(!low_degree_test(t, &xs, &[(c1, &v1)], &mut rng));
        }
    }

    #[test]
    fn the_batched_degree_test_fails_if_any_one_claim_is_false() {
        let mut rng = ChaCha20Rng::seed_from_u64(4);
        let (t, n) = (6usize, 11u32);
        let dealings: Vec<_> = (0..8).map(|i| dealing(t, n, 100 + i)).collect();
        // Some dealings with fewer holders (other evaluation points) in the same batch.
        let sparse: Vec<_> = (0..3).map(|i| dealing(t, 8, 200 + i)).collect();
        let claims = |bad: Option<usize>| -> Vec<(RistrettoPoint, Vec<u32>, Vec<RistrettoPoint>)> {
            dealings
                .iter()
                .chain(&sparse)
                .enumerate()
                .map(|(i, (c0, xs, v, _))| {
                    let mut v = v.clone();
                    if bad == Some(i) {
                        let k = i % v.len();
                        v[k] += basepoint();
                    }
                    (*c0, xs.clone(), v)
                })
                .collect()
        };
        let test = |claims: &[(RistrettoPoint, Vec<u32>, Vec<RistrettoPoint>)],
                    rng: &mut ChaCha20Rng| {
            let c: Vec<DegreeClaim<'_>> = claims
                .iter()
                .map(|(c0, xs, v)| DegreeClaim {
                    xs,
                    constant: *c0,
                    values: v,
                })
                .collect();
            batch_low_degree_test(t, &c, rng)
        };
        assert!(test(&claims(None), &mut rng));
        for bad in 0..11 {
            assert!(!test(&claims(Some(bad)), &mut rng), "claim {bad} is false");
        }
        assert!(test(&[], &mut rng));
        // Repeated evaluation points are refused.
        let (c0, _, v, _) = &dealings[0];
        let xs = vec![1u32; v.len()];
        assert!(!test(&[(*c0, xs, v.clone())], &mut rng));
    }

    #[test]
    fn batch_checks_find_a_single_bad_share() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let (_, _, v, ys) = dealing(4, 9, 5);
        let mut items: Vec<(Scalar, RistrettoPoint)> = ys.into_iter().zip(v).collect();
        assert!(batch_check(&items, &mut rng));
        assert!(batch_check(&[], &mut rng));
        items[7].0 += Scalar::ONE;
        assert!(!batch_check(&items, &mut rng));
        assert_eq!(commit(&items[0].0), items[0].1.compress().to_bytes());
        // A batch larger than one core's share, with the false pair in the last chunk.
        let (_, _, v, ys) = dealing(40, 100, 6);
        let mut items: Vec<(Scalar, RistrettoPoint)> = ys.into_iter().zip(v).collect();
        assert!(batch_check(&items, &mut rng));
        items[99].1 += basepoint();
        assert!(!batch_check(&items, &mut rng));
    }

    #[test]
    fn batched_commitments_equal_one_by_one_commitments() {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let mut scalars: Vec<Scalar> = (0..50).map(|_| random_scalar(&mut rng)).collect();
        scalars.extend([Scalar::ZERO, Scalar::ONE, -Scalar::ONE]);
        let one_by_one: Vec<[u8; 32]> = scalars.iter().map(commit).collect();
        assert_eq!(commit_all(&scalars), one_by_one);
        assert!(commit_all(&[]).is_empty());
    }
}
