//! Shamir secret sharing of 32-byte secrets over the prime field GF(2^61 − 1).
//!
//! No maintained crate fits our stack (rand_core 0.10, more than 255 holders, zeroisation), so this is a small
//! implementation tested hard: a secret is cut into five 7-byte limbs, each shared with an independent random
//! polynomial of degree t − 1; holder `x` (its participant id + 1, never 0) gets the five evaluations at `x`.
//! Any t shares rebuild the secret by Lagrange interpolation at 0; t − 1 shares reveal nothing about it.

use rand::CryptoRng;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::crypto::Secret32;
use super::error::{Result, SecAggError};

/// The field modulus, the Mersenne prime 2^61 − 1.
pub const MODULUS: u64 = (1 << 61) - 1;
/// Bytes of secret per field element (7 bytes < 2^56 < p).
const LIMB_BYTES: usize = 7;
/// Field elements per 32-byte secret.
pub const LIMBS: usize = 5;
/// Encoded length of one share: x (u64 LE) then the limbs (u64 LE each).
pub const SHARE_LEN: usize = 8 * (1 + LIMBS);

/// One holder's share of one secret. Zeroised on drop; `Debug` never prints the values.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct Share {
    /// The evaluation point: the holder's participant id + 1.
    pub x: u64,
    /// The polynomials' values at `x`, one per limb.
    pub y: [u64; LIMBS],
}

impl std::fmt::Debug for Share {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Share(x = {}, <redacted>)", self.x)
    }
}

impl Share {
    /// Little-endian encoding: x, then the limbs.
    pub fn to_bytes(&self) -> [u8; SHARE_LEN] {
        let mut out = [0u8; SHARE_LEN];
        out[..8].copy_from_slice(&self.x.to_le_bytes());
        for (i, y) in self.y.iter().enumerate() {
            out[8 * (i + 1)..8 * (i + 2)].copy_from_slice(&y.to_le_bytes());
        }
        out
    }

    /// Parses and validates an encoded share (x ≠ 0, every value a field element).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        if bytes.len() != SHARE_LEN {
            return Err(SecAggError::Malformed(format!(
                "share has {} bytes, expected {SHARE_LEN}",
                bytes.len()
            )));
        }
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&bytes[8 * i..8 * (i + 1)]);
            u64::from_le_bytes(w)
        };
        let share = Share {
            x: word(0),
            y: [word(1), word(2), word(3), word(4), word(5)],
        };
        share.validate()?;
        Ok(share)
    }

    /// Checks that the share is a well-formed field point.
    pub fn validate(&self) -> Result<()> {
        if self.x == 0 || self.x >= MODULUS {
            return Err(SecAggError::Malformed(
                "share evaluation point out of range".into(),
            ));
        }
        if self.y.iter().any(|&y| y >= MODULUS) {
            return Err(SecAggError::Malformed(
                "share value is not a field element".into(),
            ));
        }
        Ok(())
    }
}

#[inline]
fn reduce(v: u128) -> u64 {
    // v < 2^122; fold twice with 2^61 ≡ 1.
    let lo = (v as u64) & MODULUS;
    let hi = (v >> 61) as u64;
    let mut r = lo + (hi & MODULUS) + (hi >> 61);
    r = (r & MODULUS) + (r >> 61);
    if r >= MODULUS { r - MODULUS } else { r }
}

#[inline]
fn mul(a: u64, b: u64) -> u64 {
    reduce(a as u128 * b as u128)
}

#[inline]
fn add(a: u64, b: u64) -> u64 {
    let s = a + b;
    if s >= MODULUS { s - MODULUS } else { s }
}

#[inline]
fn sub(a: u64, b: u64) -> u64 {
    if a >= b { a - b } else { a + MODULUS - b }
}

fn pow(mut base: u64, mut exp: u64) -> u64 {
    let mut acc = 1u64;
    while exp > 0 {
        if exp & 1 == 1 {
            acc = mul(acc, base);
        }
        base = mul(base, base);
        exp >>= 1;
    }
    acc
}

fn inv(a: u64) -> u64 {
    pow(a, MODULUS - 2)
}

fn random_element<R: CryptoRng + ?Sized>(rng: &mut R) -> u64 {
    loop {
        let v = rng.next_u64() & MODULUS;
        if v < MODULUS {
            return v;
        }
    }
}

fn limbs_of(secret: &Secret32) -> [u64; LIMBS] {
    let mut padded = [0u8; LIMBS * LIMB_BYTES];
    padded[..32].copy_from_slice(secret.as_bytes());
    let mut limbs = [0u64; LIMBS];
    for (i, limb) in limbs.iter_mut().enumerate() {
        let mut w = [0u8; 8];
        w[..LIMB_BYTES].copy_from_slice(&padded[i * LIMB_BYTES..(i + 1) * LIMB_BYTES]);
        *limb = u64::from_le_bytes(w);
        w.zeroize();
    }
    padded.zeroize();
    limbs
}

/// Splits `secret` into one share per evaluation point in `xs` (distinct, non-zero); any `threshold` rebuild it.
pub fn split<R: CryptoRng + ?Sized>(
    secret: &Secret32,
    threshold: usize,
    xs: &[u64],
    rng: &mut R,
) -> Result<Vec<Share>> {
    if threshold == 0 || threshold > xs.len() {
        return Err(SecAggError::InvalidParams(format!(
            "threshold {threshold} with {} holders",
            xs.len()
        )));
    }
    let mut seen = std::collections::BTreeSet::new();
    if xs
        .iter()
        .any(|&x| x == 0 || x >= MODULUS || !seen.insert(x))
    {
        return Err(SecAggError::InvalidParams(
            "evaluation points must be distinct and non-zero".into(),
        ));
    }
    // coeffs[limb][j], j = 0 is the secret limb.
    let mut coeffs = vec![[0u64; LIMBS]; threshold];
    coeffs[0] = limbs_of(secret);
    for c in coeffs.iter_mut().skip(1) {
        for limb in c.iter_mut() {
            *limb = random_element(rng);
        }
    }
    let shares = xs
        .iter()
        .map(|&x| {
            let mut y = [0u64; LIMBS];
            for (l, yl) in y.iter_mut().enumerate() {
                // Horner's rule, highest degree first.
                let mut acc = 0u64;
                for c in coeffs.iter().rev() {
                    acc = add(mul(acc, x), c[l]);
                }
                *yl = acc;
            }
            Share { x, y }
        })
        .collect();
    coeffs.zeroize();
    Ok(shares)
}

/// Lagrange coefficients at 0 for the points `xs`.
fn lagrange_at_zero(xs: &[u64]) -> Vec<u64> {
    xs.iter()
        .enumerate()
        .map(|(i, &xi)| {
            let mut num = 1u64;
            let mut den = 1u64;
            for (j, &xj) in xs.iter().enumerate() {
                if i != j {
                    num = mul(num, xj);
                    den = mul(den, sub(xj, xi));
                }
            }
            mul(num, inv(den))
        })
        .collect()
}

/// Rebuilds a secret from at least `threshold` shares (the first `threshold` are used). Fewer shares are refused;
/// a result that is not a valid 32-byte secret (garbage shares) is reported as `Malformed`.
pub fn reconstruct(shares: &[Share], threshold: usize) -> Result<Secret32> {
    if threshold == 0 || shares.len() < threshold {
        return Err(SecAggError::InsufficientShares {
            threshold,
            got: shares.len(),
        });
    }
    let used = &shares[..threshold];
    let mut seen = std::collections::BTreeSet::new();
    for s in used {
        s.validate()?;
        if !seen.insert(s.x) {
            return Err(SecAggError::Malformed(
                "two shares with the same evaluation point".into(),
            ));
        }
    }
    let xs: Vec<u64> = used.iter().map(|s| s.x).collect();
    let lambdas = lagrange_at_zero(&xs);
    let mut padded = [0u8; LIMBS * LIMB_BYTES];
    let mut ok = true;
    for l in 0..LIMBS {
        let mut acc = 0u64;
        for (s, &lambda) in used.iter().zip(&lambdas) {
            acc = add(acc, mul(s.y[l], lambda));
        }
        if acc >> (8 * LIMB_BYTES) != 0 {
            ok = false;
        }
        padded[l * LIMB_BYTES..(l + 1) * LIMB_BYTES]
            .copy_from_slice(&acc.to_le_bytes()[..LIMB_BYTES]);
    }
    // The padding bytes past 32 must be zero for a genuine secret.
    ok &= padded[32..].iter().all(|&b| b == 0);
    let mut bytes = [0u8; 32];
    bytes.copy_from_slice(&padded[..32]);
    padded.zeroize();
    let secret = Secret32::from_bytes(bytes);
    bytes.zeroize();
    if !ok {
        return Err(SecAggError::Malformed(
            "shares do not interpolate to a 32-byte secret".into(),
        ));
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    #[test]
    fn field_arithmetic() {
        assert_eq!(mul(MODULUS - 1, MODULUS - 1), 1);
        assert_eq!(mul(inv(12345), 12345), 1);
        assert_eq!(add(MODULUS - 1, 1), 0);
        assert_eq!(sub(0, 1), MODULUS - 1);
        assert_eq!(reduce(u128::from(MODULUS) * 3 + 5), 5);
    }

    #[test]
    fn encoding_round_trips_and_rejects_bad_points() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let s = Secret32::random(&mut rng);
        let shares = split(&s, 2, &[1, 2, 3], &mut rng).unwrap();
        assert_eq!(Share::from_bytes(&shares[0].to_bytes()).unwrap(), shares[0]);
        let mut bad = shares[0].to_bytes();
        bad[..8].copy_from_slice(&0u64.to_le_bytes());
        assert!(Share::from_bytes(&bad).is_err());
        let mut bad = shares[0].to_bytes();
        bad[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(Share::from_bytes(&bad).is_err());
        assert!(Share::from_bytes(&bad[..10]).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn any_t_shares_rebuild_and_t_minus_1_do_not(seed in any::<u64>(), n in 2usize..40, t_frac in 0.0f64..1.0, pick in any::<u64>()) {
            let mut rng = ChaCha20Rng::seed_from_u64(seed);
            let t = 1 + ((n - 1) as f64 * t_frac) as usize;
            let secret = Secret32::random(&mut rng);
            let xs: Vec<u64> = (0..n as u64).map(|i| i * 7 + 1 + (pick % 5)).collect();
            let mut shares = split(&secret, t, &xs, &mut rng).unwrap();
            // A pseudo-random subset of size t, in a pseudo-random order.
            let mut order = ChaCha20Rng::seed_from_u64(pick);
            rand::seq::SliceRandom::shuffle(&mut shares[..], &mut order);
            prop_assert_eq!(reconstruct(&shares[..t], t).unwrap(), secret.clone());
            prop_assert_eq!(reconstruct(&shares, t).unwrap(), secret.clone());
            let refused = matches!(reconstruct(&shares[..t - 1], t), Err(SecAggError::InsufficientShares { .. }));
            prop_assert!(refused);
            if t >= 2 {
                // Interpolating t − 1 shares as if the threshold were t − 1 gives something else.
                let wrong = reconstruct(&shares[..t - 1], t - 1);
                prop_assert!(wrong.map(|w| w != secret).unwrap_or(true));
            }
        }
    }

    #[test]
    fn bad_parameters_are_rejected() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let s = Secret32::random(&mut rng);
        assert!(split(&s, 0, &[1, 2], &mut rng).is_err());
        assert!(split(&s, 3, &[1, 2], &mut rng).is_err());
        assert!(split(&s, 2, &[1, 1], &mut rng).is_err());
        assert!(split(&s, 2, &[0, 1], &mut rng).is_err());
    }
}
