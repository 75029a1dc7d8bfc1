//! How fast this machine streams memory into the cores: the ceiling of a memory-bound decode.
//!
//! Decoding one token reads every weight once, so `bytes per token × tokens/s` can be compared with the read
//! bandwidth measured here: a buffer much larger than the caches, split over the pool's threads, folded with
//! plain loads (the compiler's vector code is far faster than memory, so the memory system is what is timed).

use std::time::Instant;

use super::ThreadPool;

/// Best-of-`reps` read bandwidth in bytes/s over a buffer of `bytes` (rounded down to 8 KiB), with the pool's
/// threads each streaming a contiguous part.
pub fn read_bandwidth(pool: &ThreadPool, bytes: usize, reps: usize) -> f64 {
    let words = bytes / 8 / 1024 * 1024;
    // Written once, so that every page is really backed (a fresh zeroed mapping would read the zero page).
    let buf: Vec<u64> = (0..words as u64).collect();
    let parts = pool.n_threads() * 4;
    let chunk = words / parts;
    let sink = std::sync::atomic::AtomicU64::new(0);
    let mut best = 0f64;
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        pool.run(parts, &|i| {
            let part = &buf[i * chunk..(i + 1) * chunk];
            // Eight independent lanes: no loop-carried dependency slows the loads down.
            let mut acc = [0u64; 8];
            for c in part.chunks_exact(8) {
                for k in 0..8 {
                    acc[k] ^= c[k];
                }
            }
            sink.fetch_xor(acc.iter().fold(0, |a, b| a ^ b), std::sync::atomic::Ordering::Relaxed);
        });
        best = best.max((parts * chunk * 8) as f64 / t.elapsed().as_secs_f64());
    }
    std::hint::black_box(sink.into_inner());
    best
}
