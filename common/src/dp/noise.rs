//! The one place Confide samples privacy noise.
//!
//! A ChaCha20 CSPRNG seeded from the operating system feeds ziggurat normal samplers: single draws use
//! `rand_distr::StandardNormal` (64 random bits per draw, full f64 resolution); bulk f32 calls use a 128-layer
//! ziggurat (Marsaglia & Tsang 2000, with independent bits for layer, sign and position as Doornik 2005 advises)
//! that needs only 32 random bits per draw in its fast path — f32 output cannot hold more resolution, and the
//! ChaCha20 keystream is the dominant cost. The bulk path takes the keystream sixteen ChaCha20 blocks (256 words)
//! at a time (AVX-512 when the CPU has it, see `keystream`), runs the fast path over the whole group in one
//! branch-free loop (vectorised with AVX-512 or AVX2 when the CPU has them; same IEEE operations, so the same
//! output bit for bit), and only then finishes the few draws (≈ 2.8 %) that fell outside the rectangles, with
//! further words of the same stream. Bulk calls ([`GaussianNoise::add_to_f32`], [`GaussianNoise::fill_f32`])
//! draw a fresh 256-bit key from the master generator and give every chunk of the output its own
//! ChaCha20 stream under that key, so chunks are filled in parallel (rayon) yet the result depends only
//! on the master generator's state, not on thread scheduling or the CPU.

use chacha20::ChaCha20Rng;
use rand::rngs::SysRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};
use std::sync::{Mutex, PoisonError};

use rayon::prelude::*;
use zeroize::Zeroize;

use super::DpError;
use super::keystream::{ChaCha20Blocks, GROUP_WORDS};

/// Elements per parallel chunk; each chunk draws from its own ChaCha20 stream.
const CHUNK_LEN: usize = 1 << 14;

/// Gaussian noise from a ChaCha20 CSPRNG.
pub struct GaussianNoise {
    master: ChaCha20Rng,
}

impl std::fmt::Debug for GaussianNoise {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the generator state: it would let anyone subtract the noise.
        f.write_str("GaussianNoise { .. }")
    }
}

impl GaussianNoise {
    /// A generator seeded from the operating system's entropy source. Use this for every real release.
    pub fn from_os_entropy() -> Result<Self, DpError> {
        let master =
            ChaCha20Rng::try_from_rng(&mut SysRng).map_err(|e| DpError::Entropy(e.to_string()))?;
        Ok(Self { master })
    }

    /// A generator with a fixed seed. **For reproducible tests only**: noise from a known seed gives no privacy.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self {
            master: ChaCha20Rng::from_seed(seed),
        }
    }

    /// One draw from N(0, std_dev²).
    ///
    /// # Panics
    /// If `std_dev` is negative, NaN or infinite: releasing with wrong noise must never happen silently.
    pub fn sample(&mut self, std_dev: f64) -> f64 {
        check_std_dev(std_dev);
        let z: f64 = StandardNormal.sample(&mut self.master);
        std_dev * z
    }

    /// Adds independent N(0, std_dev²) noise to each element (computed in f64, rounded once to f32).
    /// Parallel over chunks with rayon; each chunk draws from its own ChaCha20 stream derived from the master.
    ///
    /// # Panics
    /// If `std_dev` is negative, NaN or infinite.
    pub fn add_to_f32(&mut self, out: &mut [f32], std_dev: f64) {
        check_std_dev(std_dev);
        let tables = ziggurat_tables();
        self.for_each_chunk(out, |rng, chunk| {
            ziggurat_fill::<true>(tables, rng, chunk, std_dev);
        });
    }

    /// Overwrites each element with independent N(0, std_dev²) noise. Parallel like [`Self::add_to_f32`].
    ///
    /// # Panics
    /// If `std_dev` is negative, NaN or infinite.
    pub fn fill_f32(&mut self, out: &mut [f32], std_dev: f64) {
        self.fill_f32_with(out, std_dev, |chunks, fill| {
            // A single chunk is filled on this thread (after `parallel_for` returns).
            if chunks > 1 {
                (0..chunks).into_par_iter().for_each(fill);
            }
        });
    }

    /// [`Self::fill_f32`] with the chunks spread over threads by `parallel_for`, which is handed the number of
    /// chunks and a function that fills chunk `i` (safe to call from any thread, in any order). A caller that
    /// already has a thread team busy-waiting for work (torch's OpenMP threads) can run the chunks there instead
    /// of waking rayon's threads to compete with it. The output depends only on the master generator, never on
    /// how the chunks were run, and every chunk is filled: any that `parallel_for` left out are filled here.
    ///
    /// # Panics
    /// If `std_dev` is negative, NaN or infinite.
    pub fn fill_f32_with<P>(&mut self, out: &mut [f32], std_dev: f64, parallel_for: P)
    where
        P: FnOnce(usize, &(dyn Fn(usize) + Sync)),
    {
        check_std_dev(std_dev);
        if out.is_empty() {
            return;
        }
        let tables = ziggurat_tables();
        let mut key = [0u8; 32];
        self.master.fill_bytes(&mut key);
        // A chunk's slice leaves its slot only once filled, so a chunk whose filling was interrupted (by a
        // panic on some thread) is filled again, with the same values, by the check below.
        let chunks: Vec<Mutex<Option<&mut [f32]>>> = out
            .chunks_mut(CHUNK_LEN)
            .map(|c| Mutex::new(Some(c)))
            .collect();
        let fill = |index: usize| {
            let Some(slot) = chunks.get(index) else {
                return;
            };
            let mut slot = slot.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(chunk) = slot.as_deref_mut() {
                let mut rng = ChaCha20Blocks::new(&key, index as u64);
                ziggurat_fill::<false>(tables, &mut rng, chunk, std_dev);
                *slot = None;
            }
        };
        parallel_for(chunks.len(), &fill);
        for index in 0..chunks.len() {
            fill(index);
        }
        key.zeroize();
    }

    /// Draws a fresh key from the master generator and runs `f` on every chunk with the chunk's own stream.
    fn for_each_chunk<F>(&mut self, out: &mut [f32], f: F)
    where
        F: Fn(&mut ChaCha20Blocks, &mut [f32]) + Sync,
    {
        if out.is_empty() {
            return;
        }
        let mut key = [0u8; 32];
        self.master.fill_bytes(&mut key);
        let run = |(index, chunk): (usize, &mut [f32])| {
            let mut rng = ChaCha20Blocks::new(&key, index as u64);
            f(&mut rng, chunk);
        };
        if out.len() <= CHUNK_LEN {
            run((0, out));
        } else {
            out.par_chunks_mut(CHUNK_LEN).enumerate().for_each(run);
        }
        key.zeroize();
    }
}

/// 2⁻²⁴: scale of the 24 position bits of a 32-bit draw.
const POSITION_SCALE: f64 = 1.0 / (1u32 << 24) as f64;

/// Number of ziggurat layers.
const LAYERS: usize = 128;
/// Start of the tail, R, and the common area V of every layer (Marsaglia & Tsang 2000, 128 layers).
const ZIG_R: f64 = 3.442_619_855_899;
const ZIG_V: f64 = 9.912_563_035_262_17e-3;

/// Layer edges x[0..=128]: x[0] = V/f(R) (width of the base strip, which carries the tail), x[1] = R, …,
/// x[128] = 0, and the density f(x) = exp(−x²/2) at each edge.
struct ZigguratTables {
    #[cfg(test)]
    x: [f64; LAYERS + 1],
    f: [f64; LAYERS + 1],
    /// `x[i]·2⁻²⁴`: a draw's value is `position · w[i]` for its 24-bit integer position.
    w: [f64; LAYERS],
    /// The fast-path test as an integer: `position < k[i]` exactly when `position · w[i] < x[i + 1]`.
    k: [u32; LAYERS],
    /// Linear bounds of the density over each layer's wedge (index 0 unused: the base layer has a tail).
    wedges: [Wedge; LAYERS],
}

/// Relative margin by which a point must clear a linear bound of the density before the bound decides
/// instead of `exp` (the bounds are a few f64 operations, accurate to ~1e-15).
const BOUND_MARGIN: f64 = 1e-9;

/// A layer's wedge: `x_lo ≤ x < x_hi` with heights `f_lo = f(x_hi) ≤ y ≤ f_hi = f(x_lo)`, `f(x) = exp(−x²/2)`.
/// `f` is convex for `x ≥ 1` and concave for `x ≤ 1`, so there the chord between the corners bounds it from one
/// side and the tangents at the two ends from the other. Most wedge points fall outside the thin band between
/// the two bounds and are decided without evaluating `exp`.
#[derive(Clone, Copy, Default)]
struct Wedge {
    x_lo: f64,
    x_hi: f64,
    f_lo: f64,
    f_hi: f64,
    /// `(f_hi − f_lo) / (x_hi − x_lo)`: the chord falls by this per unit of `x`.
    chord_slope: f64,
    /// `|f'(x_hi)| = x_hi·f_lo` and `|f'(x_lo)| = x_lo·f_hi`.
    tangent_slope_hi: f64,
    tangent_slope_lo: f64,
    convex: bool,
    concave: bool,
}

impl Wedge {
    fn new(x_lo: f64, x_hi: f64) -> Self {
        let (f_lo, f_hi) = (gauss_unnormalised(x_hi), gauss_unnormalised(x_lo));
        Wedge {
            x_lo,
            x_hi,
            f_lo,
            f_hi,
            chord_slope: (f_hi - f_lo) / (x_hi - x_lo),
            tangent_slope_hi: x_hi * f_lo,
            tangent_slope_lo: x_lo * f_hi,
            convex: x_lo >= 1.0,
            concave: x_hi <= 1.0,
        }
    }

    /// `Some(y < f(x))` when a bound settles it, `None` when only `exp` can.
    #[inline]
    fn decide(&self, x: f64, y: f64) -> Option<bool> {
        if !(self.convex || self.concave) {
            return None;
        }
        let chord = self.f_lo + self.chord_slope * (self.x_hi - x);
        let tangent_hi = self.f_lo + self.tangent_slope_hi * (self.x_hi - x);
        let tangent_lo = self.f_hi - self.tangent_slope_lo * (x - self.x_lo);
        if self.convex {
            // max(tangents) ≤ f ≤ chord.
            if y > chord * (1.0 + BOUND_MARGIN) {
                return Some(false);
            }
            if y < tangent_hi.max(tangent_lo) * (1.0 - BOUND_MARGIN) {
                return Some(true);
            }
        } else {
            // chord ≤ f ≤ min(tangents).
            if y < chord * (1.0 - BOUND_MARGIN) {
                return Some(true);
            }
            if y > tangent_hi.min(tangent_lo) * (1.0 + BOUND_MARGIN) {
                return Some(false);
            }
        }
        None
    }
}

fn gauss_unnormalised(x: f64) -> f64 {
    (-0.5 * x * x).exp()
}

fn ziggurat_tables() -> &'static ZigguratTables {
    static TABLES: std::sync::OnceLock<ZigguratTables> = std::sync::OnceLock::new();
    TABLES.get_or_init(|| {
        let mut x = [0.0; LAYERS + 1];
        x[0] = ZIG_V / gauss_unnormalised(ZIG_R);
        x[1] = ZIG_R;
        for i in 1..LAYERS - 1 {
            x[i + 1] = (-2.0 * (ZIG_V / x[i] + gauss_unnormalised(x[i])).ln()).sqrt();
        }
        x[LAYERS] = 0.0;
        let mut f = [0.0; LAYERS + 1];
        for (fi, xi) in f.iter_mut().zip(&x) {
            *fi = gauss_unnormalised(*xi);
        }
        f[0] = gauss_unnormalised(ZIG_R);
        let mut w = [0.0; LAYERS];
        let mut k = [0u32; LAYERS];
        for i in 0..LAYERS {
            w[i] = x[i] * POSITION_SCALE;
            // The smallest position whose value reaches the next edge (values grow with the position).
            let below = |j: u32| f64::from(j) * w[i] < x[i + 1];
            let (mut lo, mut hi) = (0u32, 1u32 << 24);
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                if below(mid) {
                    lo = mid + 1;
                } else {
                    hi = mid;
                }
            }
            k[i] = lo;
        }
        let mut wedges = [Wedge::default(); LAYERS];
        for i in 1..LAYERS {
            wedges[i] = Wedge::new(x[i + 1], x[i]);
        }
        ZigguratTables {
            #[cfg(test)]
            x,
            f,
            w,
            k,
            wedges,
        }
    })
}

/// A uniform in (0, 1) with 53 random bits.
fn open01<R: Rng>(rng: &mut R) -> f64 {
    ((rng.next_u64() >> 11) as f64 + 0.5) * (1.0 / (1u64 << 53) as f64)
}

/// One N(0, 1) draw from a 32-bit ziggurat that starts from the word `u` (7 bits choose the layer, 1 bit the
/// sign, 24 bits the position) and takes any further random bits it needs from `rng`.
fn ziggurat32_from<R: Rng>(t: &ZigguratTables, mut u: u32, rng: &mut R) -> f64 {
    loop {
        let layer = (u & 0x7f) as usize;
        // Bit 7 becomes the IEEE sign bit: no unpredictable branch.
        let sign_bit = u64::from(u & 0x80) << 56;
        let position = u >> 8;
        let x = f64::from(position) * t.w[layer];
        let sign = f64::from_bits(1.0f64.to_bits() | sign_bit);
        if position < t.k[layer] {
            return f64::from_bits(x.to_bits() | sign_bit);
        }
        if layer == 0 {
            // The tail beyond R (Marsaglia 1964).
            loop {
                let a = -open01(rng).ln() / ZIG_R;
                let b = -open01(rng).ln();
                if 2.0 * b > a * a {
                    return sign * (ZIG_R + a);
                }
            }
        }
        // Wedge: accept if a uniform height in the layer falls under the density.
        let y = t.f[layer] + open01(rng) * (t.f[layer + 1] - t.f[layer]);
        let under = match t.wedges[layer].decide(x, y) {
            Some(under) => under,
            None => y < gauss_unnormalised(x),
        };
        if under {
            return sign * x;
        }
        u = rng.next_u32();
    }
}

/// Keystream words turned into normals per refill: one group of sixteen ChaCha20 blocks.
const BLOCK_LEN: usize = GROUP_WORDS;

/// Sets `out[i]` to `std_dev·zᵢ` (or, with `ADD`, adds it to `out[i]` in f64 and rounds once), zᵢ being the
/// ziggurat draw that starts from `words[i]`. The fast path runs over the whole block first; the draws it
/// rejects are then finished one by one with further bits from `rng`.
fn ziggurat_block<const ADD: bool, R: Rng>(
    t: &ZigguratTables,
    words: &[u32],
    out: &mut [f32],
    std_dev: f64,
    rng: &mut R,
) {
    let mut rejected = [0u8; BLOCK_LEN];
    let rejected = &mut rejected[..words.len()];
    if !fast_pass::<ADD>(t, words, out, std_dev, rejected) {
        return;
    }
    // Eight flags at a time: ≈ 2.8 % are set, so most groups of eight are skipped at once.
    let mut finish = |i: usize| {
        let z = std_dev * ziggurat32_from(t, words[i], rng);
        out[i] = if ADD {
            (f64::from(out[i]) + z) as f32
        } else {
            z as f32
        };
    };
    let groups = rejected.chunks_exact(8);
    let tail = groups.remainder().len();
    for (group, flags) in groups.enumerate() {
        let mut set = u64::from_le_bytes([
            flags[0], flags[1], flags[2], flags[3], flags[4], flags[5], flags[6], flags[7],
        ]);
        while set != 0 {
            finish(group * 8 + (set.trailing_zeros() / 8) as usize);
            set &= set - 1;
        }
    }
    let tail_start = words.len() - tail;
    for (i, &flag) in rejected.iter().enumerate().skip(tail_start) {
        if flag != 0 {
            finish(i);
        }
    }
}

/// The fast path over a block, using the widest vector unit the CPU has: sets `rejected[i]` to 1 for each draw
/// the fast path rejects (whose `out[i]` is left unchanged with `ADD`, arbitrary without), and to 0 otherwise.
/// Returns whether any draw was rejected.
fn fast_pass<const ADD: bool>(
    t: &ZigguratTables,
    words: &[u32],
    out: &mut [f32],
    std_dev: f64,
    rejected: &mut [u8],
) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512vl")
            && std::is_x86_feature_detected!("avx512dq")
        {
            // SAFETY: the CPU has the features `fast_pass_avx512` is compiled for (checked just above).
            return unsafe { fast_pass_avx512::<ADD>(t, words, out, std_dev, rejected) };
        }
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked just above).
            return unsafe { fast_pass_avx2::<ADD>(t, words, out, std_dev, rejected) };
        }
    }
    fast_pass_portable::<ADD>(t, words, out, std_dev, rejected)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx512dq")]
fn fast_pass_avx512<const ADD: bool>(
    t: &ZigguratTables,
    words: &[u32],
    out: &mut [f32],
    std_dev: f64,
    rejected: &mut [u8],
) -> bool {
    fast_pass_portable::<ADD>(t, words, out, std_dev, rejected)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn fast_pass_avx2<const ADD: bool>(
    t: &ZigguratTables,
    words: &[u32],
    out: &mut [f32],
    std_dev: f64,
    rejected: &mut [u8],
) -> bool {
    fast_pass_portable::<ADD>(t, words, out, std_dev, rejected)
}

/// Branch-free so that the compiler vectorises it (table lookups become gathers).
#[inline(always)]
fn fast_pass_portable<const ADD: bool>(
    t: &ZigguratTables,
    words: &[u32],
    out: &mut [f32],
    std_dev: f64,
    rejected: &mut [u8],
) -> bool {
    let mut any = false;
    for ((o, &u), flag) in out.iter_mut().zip(words).zip(rejected.iter_mut()) {
        let layer = (u & 0x7f) as usize;
        let position = u >> 8;
        let sign_bit = u64::from(u & 0x80) << 56;
        let x = f64::from(position) * t.w[layer];
        let z = std_dev * f64::from_bits(x.to_bits() | sign_bit);
        let accepted = position < t.k[layer];
        if ADD {
            let sum = (f64::from(*o) + z) as f32;
            *o = if accepted { sum } else { *o };
        } else {
            *o = z as f32;
        }
        *flag = u8::from(!accepted);
        any |= !accepted;
    }
    any
}

/// Fills or adds to `out` block by block from `rng`'s keystream (see [`ziggurat_block`]).
fn ziggurat_fill<const ADD: bool>(
    t: &ZigguratTables,
    rng: &mut ChaCha20Blocks,
    out: &mut [f32],
    std_dev: f64,
) {
    let mut words = [0u32; BLOCK_LEN];
    for block in out.chunks_mut(BLOCK_LEN) {
        rng.next_group(&mut words);
        ziggurat_block::<ADD, _>(t, &words[..block.len()], block, std_dev, rng);
    }
    words.zeroize();
}

fn check_std_dev(std_dev: f64) {
    assert!(
        std_dev.is_finite() && std_dev >= 0.0,
        "{}",
        DpError::InvalidStdDev(std_dev)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mean_var(xs: &[f32]) -> (f64, f64) {
        let n = xs.len() as f64;
        let mean = xs.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
        let var = xs
            .iter()
            .map(|&x| (f64::from(x) - mean).powi(2))
            .sum::<f64>()
            / (n - 1.0);
        (mean, var)
    }

    #[test]
    fn fill_has_the_right_mean_and_variance() {
        let mut noise = GaussianNoise::from_seed([7; 32]);
        let n = 1 << 20;
        let mut xs = vec![0.0f32; n];
        noise.fill_f32(&mut xs, 2.5);
        let (mean, var) = mean_var(&xs);
        // Standard error of the mean: 2.5/sqrt(n) ≈ 0.0024; of the variance: 6.25*sqrt(2/n) ≈ 0.0086.
        assert!(mean.abs() < 0.0125, "mean {mean}");
        assert!((var - 6.25).abs() < 0.05, "variance {var}");
        // Fourth moment of a Gaussian is 3σ⁴: catches a sampler with the right variance but wrong shape.
        let kurt = xs.iter().map(|&x| f64::from(x).powi(4)).sum::<f64>() / n as f64 / (var * var);
        assert!((kurt - 3.0).abs() < 0.05, "kurtosis {kurt}");
    }

    #[test]
    fn add_shifts_by_noise_with_the_right_moments() {
        let mut noise = GaussianNoise::from_seed([9; 32]);
        let n = 300_000;
        let mut xs = vec![10.0f32; n];
        noise.add_to_f32(&mut xs, 0.5);
        let (mean, var) = mean_var(&xs);
        assert!((mean - 10.0).abs() < 0.005, "mean {mean}");
        assert!((var - 0.25).abs() < 0.005, "variance {var}");
    }

    #[test]
    fn single_samples_have_the_right_moments() {
        let mut noise = GaussianNoise::from_seed([3; 32]);
        let xs: Vec<f32> = (0..200_000).map(|_| noise.sample(1.0) as f32).collect();
        let (mean, var) = mean_var(&xs);
        assert!(mean.abs() < 0.012, "mean {mean}");
        assert!((var - 1.0).abs() < 0.015, "variance {var}");
    }

    #[test]
    fn chunks_use_distinct_streams_and_calls_fresh_keys() {
        let mut noise = GaussianNoise::from_seed([1; 32]);
        let mut a = vec![0.0f32; 3 * CHUNK_LEN];
        noise.fill_f32(&mut a, 1.0);
        assert_ne!(a[..CHUNK_LEN], a[CHUNK_LEN..2 * CHUNK_LEN]);
        let mut b = vec![0.0f32; 3 * CHUNK_LEN];
        noise.fill_f32(&mut b, 1.0);
        assert_ne!(a, b);
    }

    #[test]
    fn same_seed_same_noise_regardless_of_threads() {
        let mut a = vec![0.0f32; 5 * CHUNK_LEN + 17];
        let mut b = a.clone();
        GaussianNoise::from_seed([5; 32]).fill_f32(&mut a, 1.0);
        rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .expect("thread pool")
            .install(|| GaussianNoise::from_seed([5; 32]).fill_f32(&mut b, 1.0));
        assert_eq!(a, b);
    }

    #[test]
    fn fill_is_the_same_however_the_chunks_are_run() {
        let n = 4 * CHUNK_LEN + 99;
        let mut want = vec![0.0f32; n];
        GaussianNoise::from_seed([12; 32]).fill_f32(&mut want, 0.8);
        // Serially in reverse order.
        let mut got = vec![0.0f32; n];
        GaussianNoise::from_seed([12; 32]).fill_f32_with(&mut got, 0.8, |chunks, fill| {
            (0..chunks).rev().for_each(fill)
        });
        assert_eq!(got, want);
        // Some chunks run twice, some never: each is still filled exactly once, with the same values.
        let mut got = vec![f32::NAN; n];
        GaussianNoise::from_seed([12; 32]).fill_f32_with(&mut got, 0.8, |chunks, fill| {
            assert_eq!(chunks, 5);
            fill(1);
            fill(1);
            fill(3);
        });
        assert_eq!(got, want);
    }

    #[test]
    fn os_seeded_generators_differ() {
        let mut a = GaussianNoise::from_os_entropy().expect("OS entropy");
        let mut b = GaussianNoise::from_os_entropy().expect("OS entropy");
        assert_ne!(a.sample(1.0), b.sample(1.0));
    }

    #[test]
    fn ziggurat_tables_close_up() {
        let t = ziggurat_tables();
        // Every layer has area V; the last edge before the top must land near 0 for the recurrence to be right.
        for i in 1..LAYERS - 1 {
            let area = t.x[i] * (gauss_unnormalised(t.x[i + 1]) - gauss_unnormalised(t.x[i]));
            assert!((area - ZIG_V).abs() < 1e-9, "layer {i}: {area}");
        }
        let top = t.x[LAYERS - 1] * (1.0 - gauss_unnormalised(t.x[LAYERS - 1]));
        assert!((top - ZIG_V).abs() < 1e-6, "top layer area {top}");
    }

    #[test]
    fn wedge_bounds_decide_as_exp_does() {
        let t = ziggurat_tables();
        let mut rng = ChaCha20Rng::from_seed([6; 32]);
        let (mut decided, mut total) = (0u64, 0u64);
        for (layer, wedge) in t.wedges.iter().enumerate().skip(1) {
            assert_eq!(wedge.x_hi, t.x[layer]);
            assert_eq!(wedge.x_lo, t.x[layer + 1]);
            assert_eq!((wedge.f_lo, wedge.f_hi), (t.f[layer], t.f[layer + 1]));
            for _ in 0..20_000 {
                let x = wedge.x_lo + open01(&mut rng) * (wedge.x_hi - wedge.x_lo);
                let y = wedge.f_lo + open01(&mut rng) * (wedge.f_hi - wedge.f_lo);
                total += 1;
                if let Some(under) = wedge.decide(x, y) {
                    decided += 1;
                    assert_eq!(
                        under,
                        y < gauss_unnormalised(x),
                        "layer {layer}: x {x}, y {y}"
                    );
                }
            }
            // Points on the curve itself are never decided by a bound.
            let x = 0.5 * (wedge.x_lo + wedge.x_hi);
            assert_eq!(
                wedge.decide(x, gauss_unnormalised(x)),
                None,
                "layer {layer}"
            );
        }
        // Nearly every wedge point is settled without exp.
        assert!(decided as f64 > 0.9 * total as f64, "{decided} of {total}");
    }

    #[test]
    fn integer_fast_path_test_is_the_float_test() {
        // position < k[i] ⇔ position·2⁻²⁴·x[i] < x[i+1] (Marsaglia–Tsang's test), and the value is the same product.
        let t = ziggurat_tables();
        let mut rng = ChaCha20Rng::from_seed([4; 32]);
        for i in 0..LAYERS {
            let k = t.k[i];
            let mut positions = vec![0, (1 << 24) - 1];
            positions.extend(
                [k.saturating_sub(1), k, k.saturating_add(1)]
                    .into_iter()
                    .filter(|&j| j < 1 << 24),
            );
            positions.extend((0..200).map(|_| rng.next_u32() >> 8));
            for j in positions {
                let float_value = (f64::from(j) * POSITION_SCALE) * t.x[i];
                assert_eq!(f64::from(j) * t.w[i], float_value, "layer {i} position {j}");
                assert_eq!(j < k, float_value < t.x[i + 1], "layer {i} position {j}");
            }
        }
    }

    #[test]
    fn vectorised_fast_path_matches_the_portable_one_bit_for_bit() {
        let t = ziggurat_tables();
        let mut rng = ChaCha20Rng::from_seed([8; 32]);
        let words: Vec<u32> = (0..BLOCK_LEN + 13).map(|_| rng.next_u32()).collect();
        let start: Vec<f32> = (0..words.len()).map(|i| i as f32 * 0.25 - 7.0).collect();
        for std_dev in [1.0, 0.37] {
            let flags = || vec![7u8; words.len()];
            let (mut a, mut b, mut fa, mut fb) = (start.clone(), start.clone(), flags(), flags());
            let ra = fast_pass::<true>(t, &words, &mut a, std_dev, &mut fa);
            let rb = fast_pass_portable::<true>(t, &words, &mut b, std_dev, &mut fb);
            assert_eq!((ra, a, &fa), (rb, b, &fb));
            let want: Vec<u8> = words
                .iter()
                .map(|&u| u8::from((u >> 8) >= t.k[(u & 0x7f) as usize]))
                .collect();
            assert_eq!(fa, want);
            let (mut a, mut b, mut fa, mut fb) = (start.clone(), start.clone(), flags(), flags());
            let ra = fast_pass::<false>(t, &words, &mut a, std_dev, &mut fa);
            let rb = fast_pass_portable::<false>(t, &words, &mut b, std_dev, &mut fb);
            assert_eq!((ra, a, &fa), (rb, b, &fb));
        }
    }

    #[test]
    fn bulk_samples_follow_the_normal_cdf() {
        // Kolmogorov–Smirnov-style check at fixed points (incl. the tail beyond R = 3.44) on 2²⁰ draws.
        let mut noise = GaussianNoise::from_seed([11; 32]);
        let n = 1 << 20;
        let mut xs = vec![0.0f32; n];
        noise.fill_f32(&mut xs, 1.0);
        for &(z, cdf) in &[
            (-4.0, 3.167_124_183_311_986e-5),
            (-3.5, 0.000_232_629_079_035_525_02),
            (-2.0, 0.022_750_131_948_179_195),
            (-1.0, 0.158_655_253_931_457_07),
            (-0.1, 0.460_172_162_722_971),
            (0.0, 0.5),
            (0.5, 0.691_462_461_274_013_1),
            (1.5, 0.933_192_798_731_141_9),
            (3.0, 0.998_650_101_968_369_9),
        ] {
            let below = xs.iter().filter(|&&x| f64::from(x) < z).count() as f64 / n as f64;
            let tol = 5.0 * (cdf * (1.0 - cdf) / n as f64).sqrt() + 1e-6;
            assert!(
                (below - cdf).abs() < tol,
                "P[X < {z}] = {below}, want {cdf} ± {tol}"
            );
        }
    }

    #[test]
    fn zero_std_dev_adds_nothing() {
        let mut noise = GaussianNoise::from_seed([0; 32]);
        let mut xs = vec![1.5f32; 100];
        noise.add_to_f32(&mut xs, 0.0);
        assert!(xs.iter().all(|&x| x == 1.5));
    }

    #[test]
    #[should_panic(expected = "noise standard deviation")]
    fn negative_std_dev_panics() {
        GaussianNoise::from_seed([0; 32]).sample(-1.0);
    }
}
