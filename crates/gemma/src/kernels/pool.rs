//! A small persistent thread pool for data-parallel kernels.
//!
//! Decode calls ~130 matrix kernels per token, so the per-call cost matters: workers spin on an atomic
//! generation counter for a short while before sleeping on a condition variable, and the caller takes part
//! in the work instead of waiting idle. Tasks are handed out with an atomic counter (dynamic scheduling).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle worker spins before it sleeps: long enough to cover the gap between two kernels of
/// one forward pass, short enough not to burn a core between requests.
const SPIN: Duration = Duration::from_micros(2000);

type Job = *const (dyn Fn(usize) + Sync);

struct JobSlot {
    /// Erased `&dyn Fn`; valid while `open` is true (see `ThreadPool::run`).
    job: Option<Job>,
    n_tasks: usize,
    open: bool,
    active: usize,
    shutdown: bool,
}

// SAFETY: the raw job pointer is only dereferenced while the caller of `run` keeps the closure alive and
// the slot is `open`; the closure itself is `Sync`.
unsafe impl Send for JobSlot {}

struct Shared {
    slot: Mutex<JobSlot>,
    wake: Condvar,
    generation: AtomicUsize,
    next: AtomicUsize,
    done: AtomicUsize,
    sleepers: AtomicUsize,
    stop: AtomicBool,
}

pub struct ThreadPool {
    /// Serializes callers: one job at a time occupies the slot.
    caller: Mutex<()>,
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    n_threads: usize,
}

impl ThreadPool {
    /// A pool of `n_threads` threads in all, counting the caller's (so `n_threads - 1` workers).
    pub fn new(n_threads: usize) -> Self {
        let n_threads = n_threads.max(1);
        let shared = Arc::new(Shared {
            slot: Mutex::new(JobSlot { job: None, n_tasks: 0, open: false, active: 0, shutdown: false }),
            wake: Condvar::new(),
            generation: AtomicUsize::new(0),
            next: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            sleepers: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let workers = (1..n_threads)
            .map(|i| {
                let s = shared.clone();
                std::thread::Builder::new().name(format!("gemma-worker-{i}")).spawn(move || worker(&s)).expect("spawn worker thread")
            })
            .collect();
        ThreadPool { caller: Mutex::new(()), shared, workers, n_threads }
    }

    pub fn n_threads(&self) -> usize {
        self.n_threads
    }

    /// Run `f(0..n_tasks)`, each index exactly once, spread over the pool; returns when all are done.
    pub fn run(&self, n_tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        if n_tasks == 0 {
            return;
        }
        if self.n_threads == 1 || n_tasks == 1 {
            (0..n_tasks).for_each(f);
            return;
        }
        let _one_caller = self.caller.lock().unwrap_or_else(|e| e.into_inner());
        let s = &*self.shared;
        {
            let mut slot = s.slot.lock().unwrap();
            // SAFETY (lifetime erasure): the pointer is cleared and the slot closed below, before `f` goes
            // out of scope, and no worker dereferences it after the slot closes (workers register under the lock).
            let erased: Job = unsafe { std::mem::transmute::<&(dyn Fn(usize) + Sync), Job>(f) };
            slot.job = Some(erased);
            slot.n_tasks = n_tasks;
            slot.open = true;
            s.next.store(0, Ordering::Relaxed);
            s.done.store(0, Ordering::Relaxed);
            s.generation.fetch_add(1, Ordering::Release);
        }
        if s.sleepers.load(Ordering::Acquire) > 0 {
            s.wake.notify_all();
        }
        // The caller works too.
        work(s, f, n_tasks);
        while s.done.load(Ordering::Acquire) < n_tasks {
            std::hint::spin_loop();
        }
        // Close the slot once no worker is inside it.
        loop {
            let mut slot = s.slot.lock().unwrap();
            if slot.active == 0 {
                slot.open = false;
                slot.job = None;
                return;
            }
            drop(slot);
            std::hint::spin_loop();
        }
    }
}

fn work(s: &Shared, f: &(dyn Fn(usize) + Sync), n_tasks: usize) {
    loop {
        let i = s.next.fetch_add(1, Ordering::Relaxed);
        if i >= n_tasks {
            return;
        }
        f(i);
        s.done.fetch_add(1, Ordering::Release);
    }
}

fn worker(s: &Shared) {
    let mut seen = 0usize;
    loop {
        // Wait for a new generation: spin first, then sleep.
        let start = Instant::now();
        loop {
            if s.stop.load(Ordering::Relaxed) {
                return;
            }
            if s.generation.load(Ordering::Acquire) != seen {
                break;
            }
            if start.elapsed() > SPIN {
                let mut slot = s.slot.lock().unwrap();
                s.sleepers.fetch_add(1, Ordering::AcqRel);
                while s.generation.load(Ordering::Acquire) == seen && !slot.shutdown {
                    slot = s.wake.wait(slot).unwrap();
                }
                s.sleepers.fetch_sub(1, Ordering::AcqRel);
                break;
            }
            std::hint::spin_loop();
        }
        // Register under the lock, so that the caller cannot close the slot while we hold its job.
        let (job, n_tasks) = {
            let mut slot = s.slot.lock().unwrap();
            if slot.shutdown {
                return;
            }
            seen = s.generation.load(Ordering::Acquire);
            match (slot.open, slot.job) {
                (true, Some(job)) => {
                    slot.active += 1;
                    (job, slot.n_tasks)
                }
                _ => continue,
            }
        };
        // SAFETY: registered as active while the slot is open, so the caller of `run` is still inside it and
        // keeps the closure alive until we deregister.
        let f = unsafe { &*job };
        work(s, f, n_tasks);
        s.slot.lock().unwrap().active -= 1;
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.slot.lock().unwrap().shutdown = true;
        self.shared.wake.notify_all();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_runs_once() {
        let pool = ThreadPool::new(3);
        for n in [1usize, 2, 7, 100, 1000] {
            let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
            pool.run(n, &|i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
        }
    }

    #[test]
    fn many_small_jobs() {
        let pool = ThreadPool::new(2);
        let total = AtomicUsize::new(0);
        for _ in 0..10_000 {
            pool.run(4, &|i| {
                total.fetch_add(i, Ordering::Relaxed);
            });
        }
        assert_eq!(total.load(Ordering::Relaxed), 10_000 * 6);
    }
}

#[cfg(test)]
mod overhead {
    use super::*;

    /// `cargo test --release -p gemma --lib pool_overhead -- --ignored --nocapture`: µs per empty `run`.
    #[test]
    #[ignore]
    fn pool_overhead() {
        for threads in [1, 2] {
            let pool = ThreadPool::new(threads);
            let sink = AtomicUsize::new(0);
            let n = 20_000;
            let t = Instant::now();
            for _ in 0..n {
                pool.run(16, &|i| {
                    sink.fetch_add(i, Ordering::Relaxed);
                });
            }
            println!("{threads} thread(s): {:.2} µs per run of 16 trivial tasks", t.elapsed().as_secs_f64() * 1e6 / n as f64);
        }
    }
}
