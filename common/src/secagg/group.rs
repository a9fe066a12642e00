//! Ristretto255 building blocks: the mask key pair (σ, σ·B) and its pairwise agreement, and the share commitments
//! that make bad dealing detectable when it happens.
//!
//! **Commitments.** A dealer commits to each holder's share s as s·B, plus the constant terms (β·B, and σ·B = its
//! advertised mask public key). Honest shares are evaluations of one polynomial of degree t − 1, so the commitments
//! are too, "in the exponent". [`low_degree_test`] checks that with one random codeword of the dual Reed–Solomon code
//! (Cascudo–David, SCRAPE 2017): a vector that is not a codeword passes with probability 1/ℓ. This is Feldman's
//! verifiability with commitments to the evaluations instead of the coefficients: a holder checks its share with one
//! point per secret instead of t ([`batch_check`] over all dealers at once), and anyone can run the degree test —
//! the server runs it once per dealing, on arrival. Both are equally binding: a share that matches its commitment
//! is the value of the committed polynomial.

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

/// Checks s_i·B = V_i for every pair at once: Σ r_i s_i · B = Σ r_i V_i with independent random weights r_i.
/// A batch with any false pair passes with probability 1/ℓ. Empty batches pass.
pub fn batch_check<R: CryptoRng + ?Sized>(items: &[(Scalar, RistrettoPoint)], rng: &mut R) -> bool {
    if items.is_empty() {
        return true;
    }
    let weights: Vec<Scalar> = items.iter().map(|_| random_scalar(rng)).collect();
    let lhs: Scalar = items.iter().zip(&weights).map(|((s, _), r)| s * r).sum();
    let rhs = RistrettoPoint::vartime_multiscalar_mul(&weights, items.iter().map(|(_, p)| p));
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
    }
}
