//! Shamir secret sharing over the scalar field of Ristretto255 (integers mod the prime ℓ = 2^252 + …).
//!
//! Sharing in the group's own scalar field is what makes the shares verifiable: a share s at point x is committed to
//! as s·B, and the commitments of all holders lie on a polynomial of degree t − 1 "in the exponent" (see
//! [`super::commitments`]). A secret is a scalar; holder `x` (its participant id + 1, never 0) gets f(x) for a random
//! polynomial f of degree t − 1 with f(0) = secret. Any t shares rebuild it by Lagrange interpolation at 0; t − 1
//! shares reveal nothing about it.

use curve25519_dalek::scalar::Scalar;
use rand::CryptoRng;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::error::{Result, SecAggError};

/// Encoded length of one share: x (u32 LE) then the canonical 32-byte scalar.
pub const SHARE_LEN: usize = 4 + 32;

/// A secret scalar (self-mask secret β, mask key σ, a polynomial coefficient): zeroised on drop, never printed.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct SecretScalar(pub(crate) Scalar);

impl SecretScalar {
    /// A uniformly random scalar (64 bytes from the generator, reduced mod ℓ: bias below 2^-250).
    pub fn random<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        SecretScalar(random_scalar(rng))
    }

    /// Wraps a scalar.
    pub fn new(s: Scalar) -> Self {
        SecretScalar(s)
    }

    /// The scalar.
    pub fn expose(&self) -> &Scalar {
        &self.0
    }

    /// Canonical little-endian bytes, zeroised when dropped.
    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }
}

impl std::fmt::Debug for SecretScalar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretScalar(<redacted>)")
    }
}

/// A uniformly random scalar from a cryptographically secure generator.
pub fn random_scalar<R: CryptoRng + ?Sized>(rng: &mut R) -> Scalar {
    let mut wide = Zeroizing::new([0u8; 64]);
    rng.fill_bytes(&mut wide[..]);
    Scalar::from_bytes_mod_order_wide(&wide)
}

/// One holder's share of one secret. Zeroised on drop; `Debug` never prints the value.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct Share {
    /// The evaluation point: the holder's participant id + 1.
    pub x: u32,
    /// The polynomial's value at `x`.
    pub y: Scalar,
}

impl std::fmt::Debug for Share {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Share(x = {}, <redacted>)", self.x)
    }
}

impl Share {
    /// Little-endian encoding: x, then the canonical scalar.
    pub fn to_bytes(&self) -> [u8; SHARE_LEN] {
        let mut out = [0u8; SHARE_LEN];
        out[..4].copy_from_slice(&self.x.to_le_bytes());
        out[4..].copy_from_slice(self.y.as_bytes());
        out
    }

    /// Parses and validates an encoded share (x ≠ 0, canonical scalar).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        if bytes.len() != SHARE_LEN {
            return Err(SecAggError::Malformed(format!(
                "share has {} bytes, expected {SHARE_LEN}",
                bytes.len()
            )));
        }
        let x = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        if x == 0 {
            return Err(SecAggError::Malformed(
                "share evaluation point is zero".into(),
            ));
        }
        let mut y = Zeroizing::new([0u8; 32]);
        y.copy_from_slice(&bytes[4..]);
        let y = Option::<Scalar>::from(Scalar::from_canonical_bytes(*y)).ok_or_else(|| {
            SecAggError::Malformed("share value is not a canonical scalar".into())
        })?;
        Ok(Share { x, y })
    }
}

/// Shares are persisted in the server's snapshot as their byte encoding (checked again when read back).
impl Serialize for Share {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let bytes = Zeroizing::new(self.to_bytes());
        s.serialize_bytes(&bytes[..])
    }
}

impl<'de> Deserialize<'de> for Share {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let bytes = Zeroizing::new(super::messages::b64_array::serde_bytes_vec(d)?);
        Share::from_bytes(&bytes).map_err(serde::de::Error::custom)
    }
}

/// Splits `secret` into one share per evaluation point in `xs` (distinct, non-zero); any `threshold` rebuild it.
pub fn split<R: CryptoRng + ?Sized>(
    secret: &SecretScalar,
    threshold: usize,
    xs: &[u32],
    rng: &mut R,
) -> Result<Vec<Share>> {
    if threshold == 0 || threshold > xs.len() {
        return Err(SecAggError::InvalidParams(format!(
            "threshold {threshold} with {} holders",
            xs.len()
        )));
    }
    let mut seen = std::collections::BTreeSet::new();
    if xs.iter().any(|&x| x == 0 || !seen.insert(x)) {
        return Err(SecAggError::InvalidParams(
            "evaluation points must be distinct and non-zero".into(),
        ));
    }
    // coeffs[j] is the coefficient of x^j; coeffs[0] is the secret.
    let mut coeffs: Vec<Scalar> = Vec::with_capacity(threshold);
    coeffs.push(secret.0);
    coeffs.extend((1..threshold).map(|_| random_scalar(rng)));
    let shares = xs
        .iter()
        .map(|&x| {
            let xs = Scalar::from(x);
            // Horner's rule, highest degree first.
            let y = coeffs
                .iter()
                .rev()
                .fold(Scalar::ZERO, |acc, c| acc * xs + c);
            Share { x, y }
        })
        .collect();
    coeffs.zeroize();
    Ok(shares)
}

/// Lagrange coefficients at 0 for the points `xs`, which the caller has checked to be distinct and non-zero (one
/// batched inversion).
fn lagrange_at_zero(xs: &[u32]) -> Vec<Scalar> {
    let points: Vec<Scalar> = xs.iter().map(|&x| Scalar::from(x)).collect();
    let mut dens: Vec<Scalar> = points
        .iter()
        .enumerate()
        .map(|(i, xi)| {
            points
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .fold(*xi, |acc, (_, xj)| acc * (xj - xi))
        })
        .collect();
    // λ_i = Π_{j≠i} x_j / (x_j − x_i) = (Π_j x_j) / (x_i · Π_{j≠i} (x_j − x_i)).
    let num = points.iter().fold(Scalar::ONE, |acc, x| acc * x);
    Scalar::invert_batch_alloc(&mut dens);
    dens.into_iter().map(|inv_den| num * inv_den).collect()
}

/// Rebuilds a secret from at least `threshold` shares (the first `threshold` are used). Fewer shares, or repeated
/// evaluation points, are refused. Whether the result is the committed secret is for the caller to check.
pub fn reconstruct(shares: &[Share], threshold: usize) -> Result<SecretScalar> {
    if threshold == 0 || shares.len() < threshold {
        return Err(SecAggError::InsufficientShares {
            threshold,
            got: shares.len(),
        });
    }
    let used = &shares[..threshold];
    let mut seen = std::collections::BTreeSet::new();
    if used.iter().any(|s| s.x == 0 || !seen.insert(s.x)) {
        return Err(SecAggError::Malformed(
            "two shares with the same (or a zero) evaluation point".into(),
        ));
    }
    let xs: Vec<u32> = used.iter().map(|s| s.x).collect();
    let lambdas = lagrange_at_zero(&xs);
    let secret = used
        .iter()
        .zip(&lambdas)
        .fold(Scalar::ZERO, |acc, (s, l)| acc + s.y * l);
    Ok(SecretScalar(secret))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    #[test]
    fn encoding_round_trips_and_rejects_bad_points() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let s = SecretScalar::random(&mut rng);
        let shares = split(&s, 2, &[1, 2, 3], &mut rng).unwrap();
        assert_eq!(Share::from_bytes(&shares[0].to_bytes()).unwrap(), shares[0]);
        let mut bad = shares[0].to_bytes();
        bad[..4].copy_from_slice(&0u32.to_le_bytes());
        assert!(Share::from_bytes(&bad).is_err());
        let mut bad = shares[0].to_bytes();
        bad[4..].copy_from_slice(&[0xff; 32]); // not below ℓ
        assert!(Share::from_bytes(&bad).is_err());
        assert!(Share::from_bytes(&bad[..10]).is_err());
        let json = postcard::to_stdvec(&shares[1]).unwrap();
        assert_eq!(postcard::from_bytes::<Share>(&json).unwrap(), shares[1]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn any_t_shares_rebuild_and_t_minus_1_do_not(seed in any::<u64>(), n in 2usize..40, t_frac in 0.0f64..1.0, pick in any::<u64>()) {
            let mut rng = ChaCha20Rng::seed_from_u64(seed);
            let t = 1 + ((n - 1) as f64 * t_frac) as usize;
            let secret = SecretScalar::random(&mut rng);
            let xs: Vec<u32> = (0..n as u32).map(|i| i * 7 + 1 + (pick % 5) as u32).collect();
            let mut shares = split(&secret, t, &xs, &mut rng).unwrap();
            let mut order = ChaCha20Rng::seed_from_u64(pick);
            rand::seq::SliceRandom::shuffle(&mut shares[..], &mut order);
            prop_assert_eq!(reconstruct(&shares[..t], t).unwrap(), secret.clone());
            prop_assert_eq!(reconstruct(&shares, t).unwrap(), secret.clone());
            let refused = matches!(reconstruct(&shares[..t - 1], t), Err(SecAggError::InsufficientShares { .. }));
            prop_assert!(refused);
            if t >= 2 {
                // Interpolating t − 1 shares as if the threshold were t − 1 gives something else.
                prop_assert!(reconstruct(&shares[..t - 1], t - 1).unwrap() != secret);
            }
        }
    }

    #[test]
    fn bad_parameters_are_rejected() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let s = SecretScalar::random(&mut rng);
        assert!(split(&s, 0, &[1, 2], &mut rng).is_err());
        assert!(split(&s, 3, &[1, 2], &mut rng).is_err());
        assert!(split(&s, 2, &[1, 1], &mut rng).is_err());
        assert!(split(&s, 2, &[0, 1], &mut rng).is_err());
    }
}
