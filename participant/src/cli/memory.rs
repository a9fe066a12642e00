//! The process allocator setting the training commands start with (the one process-global change Confide makes,
//! so it lives here, in the binary's start-up, and not in the library).
//!
//! A training step allocates and frees the same large tensors every time (activations, Gram matrices of the
//! ghost clipping, gradients, the noise vector). glibc serves blocks at or above its mmap threshold with fresh
//! `mmap` pages and hands them back with `munmap` when freed; its dynamic threshold only ever rises to the size of
//! the last freed block, so a tensor of the same size as the one just freed is mapped again. Every step then pays
//! page faults and zeroing for megabytes of memory: measured on the digits CNN, that made a DP-SGD step (whose
//! 4 MB Gram matrices sit above the threshold) 2.2–2.4× a plain step instead of ≈ 1.45× (README, DP-SGD engine).
//! Keeping freed blocks in the heap for reuse removes it. The setting affects only how freed memory is kept.

/// Set to `0` to keep glibc's defaults (e.g. to measure what the setting is worth).
pub const ENV_SWITCH: &str = "CONFIDE_KEEP_FREED_MEMORY";

/// Serves blocks up to 32 MiB (glibc's maximum for this setting) from the heap and keeps up to 512 MiB of freed
/// heap memory for reuse instead of returning it to the system, unless `CONFIDE_KEEP_FREED_MEMORY=0`. Call once, at
/// start-up, before any thread allocates. Returns whether both settings are now in force (false off glibc).
pub fn keep_freed_memory_for_reuse() -> bool {
    if std::env::var_os(ENV_SWITCH).is_some_and(|v| v == "0") {
        return false;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator parameters; both values are within glibc's accepted ranges,
        // and a rejected setting (return value 0) just leaves the default in place.
        let (mmap, trim) = unsafe {
            (
                libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20),
                libc::mallopt(libc::M_TRIM_THRESHOLD, 512 << 20),
            )
        };
        mmap == 1 && trim == 1
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    false
}

#[cfg(test)]
mod tests {
    #[test]
    fn glibc_accepts_both_settings() {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        assert!(super::keep_freed_memory_for_reuse());
        // Freed blocks below the new threshold come back from the heap, and reading them works as before.
        let block = vec![1u8; 8 << 20];
        drop(block);
        assert_eq!(
            vec![2u8; 8 << 20]
                .iter()
                .map(|&b| u64::from(b))
                .sum::<u64>(),
            2 * (8 << 20)
        );
    }
}
