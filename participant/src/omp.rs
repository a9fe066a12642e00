//! Running Rust work on torch's own OpenMP thread team.
//!
//! libtorch parallelises its CPU kernels with OpenMP (the libgomp it ships). After each parallel region the
//! team's worker threads keep spinning for a while, waiting for the next one. Work that Confide runs between
//! torch operations on other threads (the DP-SGD noise draw, ≈ 1.4 ms of two cores for a 1.3 M-parameter
//! model) then shares the cores with those spinning workers: measured on 2 cores, the noise draw took ≈ 2.8 ms
//! inside a DP step against ≈ 1.4 ms alone, and the MLP's DP/plain step ratio went from 1.29–1.34 (workers told
//! to spin less, `GOMP_SPINCOUNT=10000`) to 1.45–1.6. Handing that work to the same team instead (libgomp's
//! `GOMP_parallel`, the entry point of `#pragma omp parallel`) puts it on the threads that are waiting anyway.
//!
//! The entry points are looked up in the running process (`dlsym`), where libtorch has already loaded
//! libgomp; without them (another OpenMP runtime) [`parallel_for`] reports that and callers fall back to rayon.

use std::ffi::{c_uint, c_void};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

type GompParallel = unsafe extern "C" fn(extern "C" fn(*mut c_void), *mut c_void, c_uint, c_uint);

/// libgomp's `GOMP_parallel`, if the process has it.
fn gomp_parallel() -> Option<GompParallel> {
    static ENTRY: OnceLock<Option<GompParallel>> = OnceLock::new();
    *ENTRY.get_or_init(|| {
        // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name only looks the symbol up.
        let symbol = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"GOMP_parallel".as_ptr()) };
        // SAFETY: a symbol named GOMP_parallel is libgomp's `void GOMP_parallel(void (*)(void *), void *,
        // unsigned, unsigned)` (the ABI GCC emits calls to), which is what `GompParallel` describes.
        (!symbol.is_null())
            .then(|| unsafe { std::mem::transmute::<*mut c_void, GompParallel>(symbol) })
    })
}

/// Shared by the team members of one [`parallel_for`] call.
struct Job<'a> {
    next: AtomicUsize,
    count: usize,
    body: &'a (dyn Fn(usize) + Sync),
}

extern "C" fn run_job(data: *mut c_void) {
    // SAFETY: `data` is the `&Job` that `parallel_for` passed to GOMP_parallel, which returns only after every
    // team member has returned from this function, so the reference is valid throughout.
    let job = unsafe { &*(data as *const Job<'_>) };
    // Unwinding must not cross the C frame: a panicking item is dropped here and, as the item was claimed
    // but not completed, the caller's own completeness check is what must catch it.
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        loop {
            let index = job.next.fetch_add(1, Ordering::Relaxed);
            if index >= job.count {
                break;
            }
            (job.body)(index);
        }
    }));
}

/// Runs `body(i)` for every `i < count` on torch's OpenMP team (`threads` threads, items handed out one at a
/// time so that a delayed thread gets fewer). Returns `false`, having run nothing, if libgomp is not there.
pub fn parallel_for(count: usize, threads: usize, body: &(dyn Fn(usize) + Sync)) -> bool {
    let Some(gomp_parallel) = gomp_parallel() else {
        return false;
    };
    let job = Job {
        next: AtomicUsize::new(0),
        count,
        body,
    };
    let threads = c_uint::try_from(threads.max(1)).unwrap_or(1);
    // SAFETY: `run_job` matches the callback type, `job` outlives the call (GOMP_parallel returns after the whole
    // team has finished), and `run_job` never unwinds.
    unsafe { gomp_parallel(run_job, &job as *const Job<'_> as *mut c_void, threads, 0) };
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_item_runs_once_on_the_team() {
        // A call into torch, so that the test binary links libtorch (and with it libgomp) even though no other unit
        // test of this binary calls torch: the linker drops libraries nothing refers to.
        let threads = usize::try_from(tch::get_num_threads()).unwrap_or(1).max(2);
        let counts: Vec<AtomicUsize> = (0..1000).map(|_| AtomicUsize::new(0)).collect();
        let ran = parallel_for(counts.len(), threads, &|i| {
            counts[i].fetch_add(1, Ordering::Relaxed);
        });
        // libtorch brings libgomp into every process that links it.
        assert!(ran, "GOMP_parallel not found");
        assert!(counts.iter().all(|c| c.load(Ordering::Relaxed) == 1));
    }

    #[test]
    fn a_panicking_item_does_not_unwind_into_openmp() {
        let done = AtomicUsize::new(0);
        parallel_for(10, 2, &|i| {
            if i == 3 {
                panic!("item 3");
            }
            done.fetch_add(1, Ordering::Relaxed);
        });
        // The thread that hit item 3 stops; the other items still ran (on the other thread or before).
        assert!(done.load(Ordering::Relaxed) <= 9);
    }
}
