//! The one place Confide samples privacy noise.
//!
//! A ChaCha20 CSPRNG seeded from the operating system feeds a ziggurat normal sampler
//! (`rand_distr::StandardNormal`). Bulk calls ([`GaussianNoise::add_to_f32`], [`GaussianNoise::fill_f32`])
//! draw a fresh 256-bit key from the master generator and give every chunk of the output its own
//! ChaCha20 stream under that key, so chunks are filled in parallel (rayon) yet the result depends only
//! on the master generator's state, not on thread scheduling.

use chacha20::ChaCha20Rng;
use rand::rngs::SysRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;

use super::DpError;

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
        self.for_each_chunk(out, |rng, chunk| {
            for x in chunk {
                let z: f64 = StandardNormal.sample(rng);
                *x = (f64::from(*x) + std_dev * z) as f32;
            }
        });
    }

    /// Overwrites each element with independent N(0, std_dev²) noise. Parallel like [`Self::add_to_f32`].
    ///
    /// # Panics
    /// If `std_dev` is negative, NaN or infinite.
    pub fn fill_f32(&mut self, out: &mut [f32], std_dev: f64) {
        check_std_dev(std_dev);
        self.for_each_chunk(out, |rng, chunk| {
            for x in chunk {
                let z: f64 = StandardNormal.sample(rng);
                *x = (std_dev * z) as f32;
            }
        });
    }

    /// Draws a fresh key from the master generator and runs `f` on every chunk with the chunk's own stream.
    fn for_each_chunk<F>(&mut self, out: &mut [f32], f: F)
    where
        F: Fn(&mut ChaCha20Rng, &mut [f32]) + Sync,
    {
        if out.is_empty() {
            return;
        }
        let mut key = [0u8; 32];
        self.master.fill_bytes(&mut key);
        let run = |(index, chunk): (usize, &mut [f32])| {
            let mut rng = ChaCha20Rng::from_seed(key);
            rng.set_stream(index as u64);
            f(&mut rng, chunk);
        };
        if out.len() <= CHUNK_LEN {
            run((0, out));
        } else {
            out.par_chunks_mut(CHUNK_LEN).enumerate().for_each(run);
        }
    }
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
    fn os_seeded_generators_differ() {
        let mut a = GaussianNoise::from_os_entropy().expect("OS entropy");
        let mut b = GaussianNoise::from_os_entropy().expect("OS entropy");
        assert_ne!(a.sample(1.0), b.sample(1.0));
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
