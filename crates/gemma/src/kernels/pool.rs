//! A small persistent thread pool for data-parallel kernels.
//!
//! Decode calls ~130 matrix kernels per token, so the per-call cost matters: workers spin on an atomic
//! generation counter for a short while before sleeping on a condition variable, and the caller takes part
//! in the work instead of waiting idle. Tasks are handed out with an atomic counter (dynamic scheduling).
//!
//! A task that panics does not take the pool down: as in rayon's `scope`, every task call is caught, counted
//! as done, and the first panic is raised again on the caller of [`ThreadPool::run`], once no thread is inside
//! the closure any more. The pool stays usable afterwards, and no lock is poisoned for good (every lock here
//! ignores poisoning: the data they guard stays consistent across a panic).

use std::any::Any;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle worker spins before it sleeps: long enough to cover the gap between two kernels of
/// one forward pass, short enough not to burn a core between requests.
const SPIN: Duration = Duration::from_micros(2000);

type Job = *const (dyn Fn(usize) + Sync);
type Payload = Box<dyn Any + Send>;

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
    /// The first panic of the current job's tasks, raised again on the caller once the slot is closed.
    panic: Mutex<Option<Payload>>,
}

/// Locks ignoring poisoning: nothing here panics while holding a lock (task panics are caught outside any),
/// and each guarded value stays consistent if something did, so one panic must not make every later call fail.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
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
            panic: Mutex::new(None),
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
    ///
    /// If a task panics, `run` panics with the first task's payload, after every thread has left `f`; other
    /// tasks may or may not have run (those on other threads do; on one thread the panic stops the loop).
    pub fn run(&self, n_tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        if n_tasks == 0 {
            return;
        }
        if self.n_threads == 1 || n_tasks == 1 {
            // No other thread sees `f`: a panic simply unwinds from here.
            (0..n_tasks).for_each(f);
            return;
        }
        let one_caller = lock(&self.caller);
        let s = &*self.shared;
        {
            let mut slot = lock(&s.slot);
            // SAFETY (lifetime erasure): the pointer is only dereferenced by workers registered as active while
            // the slot is open, and `close` below shuts the slot, waiting for every active worker to leave,
            // before `run` returns or unwinds, so before `f` can go out of scope.
            let erased: Job = unsafe { std::mem::transmute::<&(dyn Fn(usize) + Sync), Job>(f) };
            slot.job = Some(erased);
            slot.n_tasks = n_tasks;
            slot.open = true;
            s.next.store(0, Ordering::Relaxed);
            s.done.store(0, Ordering::Relaxed);
            s.generation.fetch_add(1, Ordering::Release);
        }
        let close = CloseOnDrop(s);
        if s.sleepers.load(Ordering::Acquire) > 0 {
            s.wake.notify_all();
        }
        // The caller works too.
        work(s, f, n_tasks);
        while s.done.load(Ordering::Acquire) < n_tasks {
            std::hint::spin_loop();
        }
        drop(close);
        let panic = lock(&s.panic).take();
        drop(one_caller);
        if let Some(payload) = panic {
            panic::resume_unwind(payload);
        }
    }
}

/// Closes the job slot when `run` leaves, by return or by unwinding: once no worker is registered inside it,
/// the slot is shut and the erased closure pointer cleared. (Registered workers leave once every task is
/// claimed; they would also finish the tasks of a caller that unwound from `work`, which catches panics so that
/// it does not.)
struct CloseOnDrop<'a>(&'a Shared);

impl Drop for CloseOnDrop<'_> {
    fn drop(&mut self) {
        loop {
            let mut slot = lock(&self.0.slot);
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

/// Claims and runs tasks until none is left. A panicking task is caught, counted as done like the others (so
/// the caller's wait ends) and its payload kept for the caller if it is the job's first.
fn work(s: &Shared, f: &(dyn Fn(usize) + Sync), n_tasks: usize) {
    let claim_and_run = || loop {
        let i = s.next.fetch_add(1, Ordering::Relaxed);
        if i >= n_tasks {
            return;
        }
        f(i);
        s.done.fetch_add(1, Ordering::Release);
    };
    // One `catch_unwind` around the loop rather than one per task: after a panic, the loop resumes.
    while let Err(payload) = panic::catch_unwind(AssertUnwindSafe(claim_and_run)) {
        keep_first(s, payload);
        // The task that panicked (its `done` was not counted).
        s.done.fetch_add(1, Ordering::Release);
    }
}

/// Keeps the first panic of a job for its caller; a later payload is dropped here (and should its own `drop`
/// panic, forgotten: that must not unwind out of `work`).
fn keep_first(s: &Shared, payload: Payload) {
    let mut first = lock(&s.panic);
    if first.is_none() {
        *first = Some(payload);
        return;
    }
    drop(first);
    if let Err(nested) = panic::catch_unwind(AssertUnwindSafe(move || drop(payload))) {
        std::mem::forget(nested);
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
                let mut slot = lock(&s.slot);
                s.sleepers.fetch_add(1, Ordering::AcqRel);
                while s.generation.load(Ordering::Acquire) == seen && !slot.shutdown {
                    slot = s.wake.wait(slot).unwrap_or_else(PoisonError::into_inner);
                }
                s.sleepers.fetch_sub(1, Ordering::AcqRel);
                break;
            }
            std::hint::spin_loop();
        }
        // Register under the lock, so that the caller cannot close the slot while we hold its job.
        let (job, n_tasks) = {
            let mut slot = lock(&s.slot);
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
        // SAFETY: registered as active while the slot is open, so the caller of `run` is still inside it (its
        // `CloseOnDrop` waits for us, even when it unwinds) and keeps the closure alive until we deregister.
        let f = unsafe { &*job };
        // Does not unwind: task panics are caught inside.
        work(s, f, n_tasks);
        lock(&s.slot).active -= 1;
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        lock(&self.shared.slot).shutdown = true;
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

    /// Runs `body` on a thread of its own and fails, instead of blocking the test run, if it has not finished
    /// within `limit` (a hung pool then fails its test; the stuck thread is left behind).
    fn with_deadline(limit: Duration, body: impl FnOnce() + Send + 'static) {
        use std::sync::mpsc::RecvTimeoutError;
        let (tx, rx) = std::sync::mpsc::channel();
        let h = std::thread::spawn(move || {
            body();
            let _ = tx.send(());
        });
        match rx.recv_timeout(limit) {
            Ok(()) => h.join().unwrap(),
            Err(RecvTimeoutError::Timeout) => panic!("the pool hung: no answer within {limit:?}"),
            // The body panicked: its own message is the failure.
            Err(RecvTimeoutError::Disconnected) => panic::resume_unwind(h.join().unwrap_err()),
        }
    }

    /// Which tasks panic.
    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Panics {
        /// Task 0, whoever runs it.
        First,
        /// Every task the caller's thread runs; workers' tasks wait until the caller has run one.
        OnCaller,
        /// Every task a worker runs; the caller's tasks wait until a worker has taken one.
        OnWorker,
        Last,
        Every,
        /// Every task but task 0.
        AllButFirst,
    }

    /// Until `flag` is set, for at most a few seconds (long enough never to end early on a loaded machine;
    /// bounded so that a scenario that cannot happen fails its assertions instead of hanging).
    fn wait_for(flag: &AtomicBool) {
        let start = Instant::now();
        while !flag.load(Ordering::Acquire) && start.elapsed() < Duration::from_secs(5) {
            std::thread::yield_now();
        }
    }

    /// The pool works as new: every index of several jobs runs exactly once, and no lock is left poisoned.
    fn assert_usable(pool: &ThreadPool) {
        for n in [1usize, 2, 5, 64] {
            let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
            pool.run(n, &|i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1), "after a panic, n={n}: {hits:?}");
        }
        assert!(!pool.caller.is_poisoned() && !pool.shared.slot.is_poisoned() && !pool.shared.panic.is_poisoned());
    }

    /// For 1 to 4 threads and several task counts: `run` raises the task's panic, only after every thread has
    /// left the closure (nothing inside it, and nothing calls it afterwards), and the pool stays usable.
    fn check_panics(which: Panics) {
        with_deadline(Duration::from_secs(60), move || {
            for threads in 1..=4 {
                let pool = ThreadPool::new(threads);
                for n in [1usize, 2, 3, 7, 100] {
                    let serial = threads == 1 || n == 1;
                    // Forcing a task onto a worker needs a worker and a second task; onto the caller, a task
                    // the workers cannot all hold while they wait (at most one each).
                    if (which == Panics::OnWorker && serial) || (which == Panics::OnCaller && !serial && n < threads) {
                        continue;
                    }
                    let caller = std::thread::current().id();
                    let (caller_ran, worker_ran) = (AtomicBool::new(false), AtomicBool::new(false));
                    let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
                    let (inside, calls) = (AtomicUsize::new(0), AtomicUsize::new(0));
                    let task = |i: usize| {
                        calls.fetch_add(1, Ordering::SeqCst);
                        inside.fetch_add(1, Ordering::SeqCst);
                        // Leaves `inside` on return and on unwinding alike.
                        struct Leave<'a>(&'a AtomicUsize);
                        impl Drop for Leave<'_> {
                            fn drop(&mut self) {
                                self.0.fetch_sub(1, Ordering::SeqCst);
                            }
                        }
                        let _leave = Leave(&inside);
                        hits[i].fetch_add(1, Ordering::SeqCst);
                        let on_caller = std::thread::current().id() == caller;
                        let panics = match which {
                            Panics::First => i == 0,
                            Panics::Last => i == n - 1,
                            Panics::Every => true,
                            Panics::AllButFirst => i > 0,
                            Panics::OnCaller => {
                                if on_caller {
                                    caller_ran.store(true, Ordering::Release);
                                } else {
                                    wait_for(&caller_ran);
                                }
                                on_caller
                            }
                            Panics::OnWorker => {
                                if on_caller {
                                    wait_for(&worker_ran);
                                } else {
                                    worker_ran.store(true, Ordering::Release);
                                }
                                !on_caller
                            }
                        };
                        if panics {
                            panic!("planned panic in task {i}");
                        }
                    };
                    let got = panic::catch_unwind(AssertUnwindSafe(|| pool.run(n, &task)));
                    let what = format!("{which:?}, {threads} thread(s), {n} task(s)");
                    let expect_panic = !(which == Panics::AllButFirst && n == 1);
                    match got {
                        Ok(()) => assert!(!expect_panic, "{what}: run returned normally"),
                        Err(payload) => {
                            assert!(expect_panic, "{what}: unexpected panic");
                            let msg = payload.downcast_ref::<String>().map(String::as_str).unwrap_or("");
                            assert!(msg.starts_with("planned panic in task "), "{what}: payload {msg:?}");
                        }
                    }
                    match which {
                        Panics::OnCaller => assert!(caller_ran.load(Ordering::SeqCst), "{what}: the caller ran no task"),
                        Panics::OnWorker => assert!(worker_ran.load(Ordering::SeqCst), "{what}: no worker ran a task"),
                        _ => {}
                    }
                    assert_eq!(inside.load(Ordering::SeqCst), 0, "{what}: a thread is still inside the closure");
                    assert!(hits.iter().all(|h| h.load(Ordering::SeqCst) <= 1), "{what}: a task ran twice");
                    let after = calls.load(Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(2));
                    assert_eq!(calls.load(Ordering::SeqCst), after, "{what}: the closure was called after run returned");
                    assert_usable(&pool);
                }
            }
        });
    }

    #[test]
    fn panic_in_task_0() {
        check_panics(Panics::First);
    }

    #[test]
    fn panic_on_the_caller() {
        check_panics(Panics::OnCaller);
    }

    #[test]
    fn panic_on_a_worker() {
        check_panics(Panics::OnWorker);
    }

    #[test]
    fn panic_in_the_last_task() {
        check_panics(Panics::Last);
    }

    #[test]
    fn panic_in_every_task() {
        check_panics(Panics::Every);
    }

    #[test]
    fn panic_in_every_task_but_the_first() {
        check_panics(Panics::AllButFirst);
    }

    /// Two callers share a pool, each alternating jobs that panic with jobs that do not: no hang, each job
    /// answers for itself.
    #[test]
    fn panics_with_concurrent_callers() {
        with_deadline(Duration::from_secs(60), || {
            let pool = ThreadPool::new(3);
            std::thread::scope(|scope| {
                for c in 0..2 {
                    let pool = &pool;
                    scope.spawn(move || {
                        for round in 0..300 {
                            let bad = (round + c) % 3 == 0;
                            let sum = AtomicUsize::new(0);
                            let got = panic::catch_unwind(AssertUnwindSafe(|| {
                                pool.run(16, &|i| {
                                    sum.fetch_add(i, Ordering::Relaxed);
                                    if bad && i == 5 {
                                        panic!("planned panic in task {i}");
                                    }
                                })
                            }));
                            assert_eq!(got.is_err(), bad, "caller {c} round {round}");
                            if !bad {
                                assert_eq!(sum.load(Ordering::Relaxed), 120);
                            }
                        }
                    });
                }
            });
            assert_usable(&pool);
        });
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
