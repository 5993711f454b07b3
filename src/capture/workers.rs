//! Threads kept for the life of the process, so that a batch split across threads does not
//! start and stop threads of its own (a thread start and join costs tens of microseconds,
//! handing work to a kept thread a few).
//!
//! A batch is read on `prepare_threads` threads and encoded on `encode_threads`. Each thread
//! count has one [`rayon`] pool of that many threads, made on first use and shared by every
//! ingestor in the process (the Lambda uses one thread count, so one pool). Work runs inside
//! the pool (`install`) while the calling thread waits; rayon lets it borrow the caller's
//! data, as scoped threads would.

use std::sync::{Mutex, OnceLock};

/// The pool for work split `threads` ways, or `None` when there is nothing to split
/// (`threads` ≤ 1) or the threads could not be started (the work then runs on the calling
/// thread alone, which is slower, not wrong).
pub fn pool(threads: usize) -> Option<&'static rayon::ThreadPool> {
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
        .num_threads(threads)
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
                "could not start worker threads; working on one thread"
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_pool_of_that_many_threads_per_thread_count() {
        assert!(pool(0).is_none());
        assert!(pool(1).is_none());
        let two = pool(2).expect("a pool of two threads");
        assert_eq!(two.current_num_threads(), 2);
        assert!(std::ptr::eq(two, pool(2).expect("the same pool again")));
        let three = pool(3).expect("a pool of three threads");
        assert_eq!(three.current_num_threads(), 3);
        assert!(!std::ptr::eq(two, three));
    }

    #[test]
    fn the_pool_borrows_the_callers_data_and_uses_its_threads() {
        use rayon::prelude::*;
        let pool = pool(3).expect("a pool of three threads");
        let data: Vec<u64> = (1..=3_000).collect();
        let threads = Mutex::new(std::collections::HashSet::new());
        let total: u64 = pool.install(|| {
            data.par_chunks(10)
                .map(|chunk| {
                    threads.lock().unwrap().insert(std::thread::current().id());
                    std::thread::sleep(std::time::Duration::from_micros(200));
                    chunk.iter().sum::<u64>()
                })
                .sum()
        });
        assert_eq!(total, 3_000 * 3_001 / 2);
        assert!(
            !threads
                .lock()
                .unwrap()
                .contains(&std::thread::current().id())
        );
        assert!(threads.lock().unwrap().len() > 1, "the work was spread");
    }
}
