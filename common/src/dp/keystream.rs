//! ChaCha20 keystream sixteen blocks at a time, for the bulk noise sampler ([`super::noise`]).
//!
//! This is ChaCha20 exactly as `chacha20::ChaCha20Rng` computes it (the original variant: 64-bit block counter
//! in words 12–13, 64-bit stream id in words 14–15, 20 rounds), with one difference in presentation: each call
//! produces the sixteen blocks `counter .. counter + 16` *word-interleaved* (`out[16·w + b]` = word `w` of block
//! `b`), which is how sixteen blocks sit in AVX-512 registers. Every keystream word is still used exactly once;
//! only the order in which the sampler consumes them differs. The tests check every word against the crate.
//!
//! Why not the crate alone: its RNG always takes the AVX2 path (its AVX-512 code serves only the cipher API,
//! and only under a compile-time `--cfg`), ≈ 2 ns per 32-bit word here; sixteen blocks per AVX-512 call run at
//! ≈ 0.6 ns, and the keystream is most of the cost of a DP-SGD step's noise. Without AVX-512 the crate computes
//! the blocks and they are interleaved the same way, so the output never depends on the CPU.

use std::convert::Infallible;

use chacha20::ChaCha20Rng;
use rand::{Rng, SeedableRng, TryCryptoRng, TryRng};
use zeroize::Zeroize;

/// 32-bit words per call: sixteen 64-byte blocks.
pub(super) const GROUP_WORDS: usize = 256;

/// "expand 32-byte k".
const CONSTANTS: [u32; 4] = [0x6170_7865, 0x3320_646e, 0x7962_2d32, 0x6b20_6574];

/// A ChaCha20 stream (key, stream id) read sixteen blocks at a time, and also usable as an [`Rng`] for the
/// occasional extra draws of the sampler's slow path.
pub(super) struct ChaCha20Blocks {
    /// The input block: constants, key, counter of the next group's first block, stream id.
    input: [u32; 16],
    /// The last group, for [`Rng`] use; `next` words of it are used up.
    buffer: [u32; GROUP_WORDS],
    next: usize,
}

impl ChaCha20Blocks {
    pub(super) fn new(key: &[u8; 32], stream: u64) -> Self {
        let mut input = [0u32; 16];
        input[..4].copy_from_slice(&CONSTANTS);
        for (word, bytes) in input[4..12].iter_mut().zip(key.chunks_exact(4)) {
            *word = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        }
        input[14] = stream as u32;
        input[15] = (stream >> 32) as u32;
        ChaCha20Blocks {
            input,
            buffer: [0; GROUP_WORDS],
            next: GROUP_WORDS,
        }
    }

    /// The next sixteen blocks, word-interleaved.
    pub(super) fn next_group(&mut self, out: &mut [u32; GROUP_WORDS]) {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU has AVX-512F, the only feature `blocks16_avx512` is compiled for.
                unsafe { avx512::blocks16(&self.input, out) };
                self.advance();
                return;
            }
        }
        self.blocks16_portable(out);
        self.advance();
    }

    /// The same sixteen blocks from the `chacha20` crate, interleaved.
    fn blocks16_portable(&self, out: &mut [u32; GROUP_WORDS]) {
        let mut key = [0u8; 32];
        for (bytes, word) in key.chunks_exact_mut(4).zip(&self.input[4..12]) {
            bytes.copy_from_slice(&word.to_le_bytes());
        }
        let mut rng = ChaCha20Rng::from_seed(key);
        key.zeroize();
        rng.set_stream(u64::from(self.input[14]) | (u64::from(self.input[15]) << 32));
        let counter = u64::from(self.input[12]) | (u64::from(self.input[13]) << 32);
        rng.set_word_pos(u128::from(counter) * 16);
        for block in 0..16 {
            for word in 0..16 {
                out[16 * word + block] = rng.next_u32();
            }
        }
    }

    fn advance(&mut self) {
        let counter =
            (u64::from(self.input[12]) | (u64::from(self.input[13]) << 32)).wrapping_add(16);
        self.input[12] = counter as u32;
        self.input[13] = (counter >> 32) as u32;
    }
}

impl Drop for ChaCha20Blocks {
    fn drop(&mut self) {
        self.input.zeroize();
        self.buffer.zeroize();
    }
}

/// The ChaCha20 keystream: a cryptographically secure generator like the crate's.
impl TryCryptoRng for ChaCha20Blocks {}

impl TryRng for ChaCha20Blocks {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        if self.next == GROUP_WORDS {
            let mut group = [0u32; GROUP_WORDS];
            self.next_group(&mut group);
            self.buffer = group;
            group.zeroize();
            self.next = 0;
        }
        let word = self.buffer[self.next];
        self.next += 1;
        Ok(word)
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let low = self.try_next_u32()?;
        let high = self.try_next_u32()?;
        Ok(u64::from(low) | (u64::from(high) << 32))
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), Infallible> {
        for chunk in dest.chunks_mut(4) {
            let word = self.try_next_u32()?.to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
        Ok(())
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use core::arch::x86_64::*;

    use super::GROUP_WORDS;

    /// The ChaCha quarter round on sixteen lanes (one block per lane).
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn quarter_round(a: &mut __m512i, b: &mut __m512i, c: &mut __m512i, d: &mut __m512i) {
        *a = _mm512_add_epi32(*a, *b);
        *d = _mm512_rol_epi32::<16>(_mm512_xor_si512(*d, *a));
        *c = _mm512_add_epi32(*c, *d);
        *b = _mm512_rol_epi32::<12>(_mm512_xor_si512(*b, *c));
        *a = _mm512_add_epi32(*a, *b);
        *d = _mm512_rol_epi32::<8>(_mm512_xor_si512(*d, *a));
        *c = _mm512_add_epi32(*c, *d);
        *b = _mm512_rol_epi32::<7>(_mm512_xor_si512(*b, *c));
    }

    /// Blocks `counter .. counter + 16` of the stream whose first input block is `input`, word-interleaved.
    #[target_feature(enable = "avx512f")]
    pub(super) fn blocks16(input: &[u32; 16], out: &mut [u32; GROUP_WORDS]) {
        let mut start = [_mm512_setzero_si512(); 16];
        for (lane_word, &word) in start.iter_mut().zip(input) {
            *lane_word = _mm512_set1_epi32(word as i32);
        }
        // Lane b gets counter + b, carrying into the high word where the low word wraps.
        let offsets = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        let low = _mm512_add_epi32(start[12], offsets);
        let wrapped = _mm512_cmplt_epu32_mask(low, start[12]);
        start[13] = _mm512_mask_add_epi32(start[13], wrapped, start[13], _mm512_set1_epi32(1));
        start[12] = low;
        let mut x = start;
        for _ in 0..10 {
            let [
                x0,
                x1,
                x2,
                x3,
                x4,
                x5,
                x6,
                x7,
                x8,
                x9,
                x10,
                x11,
                x12,
                x13,
                x14,
                x15,
            ] = &mut x;
            quarter_round(x0, x4, x8, x12);
            quarter_round(x1, x5, x9, x13);
            quarter_round(x2, x6, x10, x14);
            quarter_round(x3, x7, x11, x15);
            quarter_round(x0, x5, x10, x15);
            quarter_round(x1, x6, x11, x12);
            quarter_round(x2, x7, x8, x13);
            quarter_round(x3, x4, x9, x14);
        }
        for (word, (mixed, initial)) in x.iter().zip(&start).enumerate() {
            let value = _mm512_add_epi32(*mixed, *initial);
            // SAFETY: `out` holds 256 words, so words 16·word .. 16·word + 16 are in bounds; the store is unaligned.
            unsafe { _mm512_storeu_si512(out.as_mut_ptr().add(16 * word).cast(), value) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The crate's keystream for blocks `counter ..`, in its own order.
    fn crate_words(key: [u8; 32], stream: u64, counter: u64, words: usize) -> Vec<u32> {
        let mut rng = ChaCha20Rng::from_seed(key);
        rng.set_stream(stream);
        rng.set_word_pos(u128::from(counter) * 16);
        (0..words).map(|_| rng.next_u32()).collect()
    }

    fn check_against_crate(key: [u8; 32], stream: u64, counter: u64) {
        let mut blocks = ChaCha20Blocks::new(&key, stream);
        blocks.input[12] = counter as u32;
        blocks.input[13] = (counter >> 32) as u32;
        let groups = 3;
        let want = crate_words(key, stream, counter, groups * GROUP_WORDS);
        let mut portable = ChaCha20Blocks::new(&key, stream);
        portable.input = blocks.input;
        for g in 0..groups {
            let mut got = [0u32; GROUP_WORDS];
            blocks.next_group(&mut got);
            let mut slow = [0u32; GROUP_WORDS];
            portable.blocks16_portable(&mut slow);
            portable.advance();
            assert_eq!(got, slow, "group {g}: vector and portable paths differ");
            for block in 0..16 {
                for word in 0..16 {
                    assert_eq!(
                        got[16 * word + block],
                        want[(g * 16 + block) * 16 + word],
                        "group {g} block {block} word {word}"
                    );
                }
            }
        }
    }

    #[test]
    fn blocks_are_the_chacha20_keystream() {
        check_against_crate([0; 32], 0, 0);
        let mut key = [0u8; 32];
        for (i, b) in key.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(37).wrapping_add(11);
        }
        check_against_crate(key, 0x0123_4567_89ab_cdef, 5);
        // The low counter word wraps inside a group: the carry must reach word 13.
        check_against_crate(key, 7, (1 << 32) - 5);
        check_against_crate([0xff; 32], u64::MAX, u64::MAX - 100);
    }

    #[test]
    fn rng_use_continues_the_stream_without_reuse() {
        let key = [3u8; 32];
        let mut blocks = ChaCha20Blocks::new(&key, 9);
        let mut first = [0u32; GROUP_WORDS];
        blocks.next_group(&mut first);
        // The next words drawn one by one come from the second group.
        let mut reference = ChaCha20Blocks::new(&key, 9);
        let mut groups = [[0u32; GROUP_WORDS]; 2];
        reference.next_group(&mut groups[0]);
        reference.next_group(&mut groups[1]);
        assert_eq!(first, groups[0]);
        for &want in &groups[1] {
            assert_eq!(blocks.next_u32(), want);
        }
    }
}
