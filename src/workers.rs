//! Helper threads kept for the life of the process, so that a batch split across threads does
//! not start and stop threads of its own.
//!
//! A batch is read on `prepare_threads` threads and encoded on `encode_threads`, and was
//! split with `std::thread::scope` each time: two thread starts per batch on two threads
//! (~65 µs each with its join on the 2-vCPU VM of the benchmarks, against ~11 µs to hand work
//! to a kept helper: `cargo bench --bench ingest -- overhead`; plus each new thread's cold
//! stack and allocator caches). For a 1,000-record batch (~5 ms on two threads) that was a few percent of
//! its time. The helpers here are [`rayon`] pools (rayon's scopes let the helpers borrow the
//! batch, as scoped threads do), one per thread count, made on first use and shared by every
//! ingestor in the process: the Lambda uses one thread count, so one pool.
//!
//! The calling thread always takes a share of the work; a pool for `n` threads has `n - 1`
//! helpers. Work handed to the helpers never waits for the calling thread, so callers that
//! share a pool wait for each other's work at most, never deadlock.

use std::sync::{Mutex, OnceLock};

/// The helpers for work split `threads` ways (counting the calling thread), or `None` when
/// there is nothing to help with (`threads` ≤ 1) or the threads could not be started (the
/// work then runs on the calling thread alone, which is slower, not wrong).
pub fn helpers(threads: usize) -> Option<&'static rayon::ThreadPool> {
    // A handful of thread counts at most in one process (the Lambda's, the tests').
    static POOLS: OnceLock<Mutex<Vec<(usize, &'static rayon::ThreadPool)>>> = OnceLock::new();
    if threads <= 1 {
        return None;
    }
    let mut pools = POOLS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some((_, pool)) = pools.iter().find(|(n, _)| *n == threads) {
        return Some(pool);
    }
    let built = rayon::ThreadPoolBuilder::new()
        .num_threads(threads - 1)
        .thread_name(move |i| format!("streamseal-{threads}-{i}"))
        .build();
    match built {
        Ok(pool) => {
            // Kept for the life of the process, like the threads themselves.
            let pool: &'static rayon::ThreadPool = Box::leak(Box::new(pool));
            pools.push((threads, pool));
            Some(pool)
        }
        Err(e) => {
            tracing::warn!(
                threads,
                error = %e,
                "could not start helper threads; working on one thread"
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_pool_per_thread_count_with_one_helper_fewer() {
        assert!(helpers(0).is_none());
        assert!(helpers(1).is_none());
        let two = helpers(2).expect("helpers for two threads");
        assert_eq!(two.current_num_threads(), 1);
        assert!(std::ptr::eq(two, helpers(2).expect("the same pool again")));
        let three = helpers(3).expect("helpers for three threads");
        assert_eq!(three.current_num_threads(), 2);
        assert!(!std::ptr::eq(two, three));
    }

    #[test]
    fn helpers_borrow_the_callers_data_and_run_beside_it() {
        let pool = helpers(3).expect("helpers for three threads");
        let data: Vec<u64> = (1..=3_000).collect();
        let parts: Vec<Mutex<u64>> = (0..3).map(|_| Mutex::new(0)).collect();
        let caller = std::thread::current().id();
        let helper_ran_elsewhere = Mutex::new(false);
        pool.in_place_scope(|s| {
            for (chunk, part) in data.chunks(1_000).zip(&parts).skip(1) {
                let elsewhere = &helper_ran_elsewhere;
                s.spawn(move |_| {
                    *part.lock().unwrap() = chunk.iter().sum();
                    if std::thread::current().id() != caller {
                        *elsewhere.lock().unwrap() = true;
                    }
                });
            }
            *parts[0].lock().unwrap() = data[..1_000].iter().sum();
        });
        let total: u64 = parts.iter().map(|p| *p.lock().unwrap()).sum();
        assert_eq!(total, 3_000 * 3_001 / 2);
        assert!(*helper_ran_elsewhere.lock().unwrap());
    }
}
