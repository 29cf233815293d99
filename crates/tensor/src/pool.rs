//! A persistent pool of worker threads for the kernels' row-parallel loops.
//!
//! Threads are started once and reused: a call hands each helper a pointer to the job, the
//! helper polls its own slot briefly (the next op usually follows within microseconds) and
//! then parks. Polling spins a few iterations, then yields its core between polls, so a
//! waiting thread never holds a core that the thread it waits for (or another process) could
//! run on. The calling thread always takes part, so `threads = n` uses `n - 1` workers.
//!
//! # Invariants
//! - [`Pool::for_each`] runs `task(i)` exactly once for every `i < tasks`, and returns only
//!   after every call has finished (the job lives on the caller's stack).
//! - Which thread runs which index is scheduling, never arithmetic: callers split work by
//!   output rows, so the bits never depend on the thread count.
//! - A task that panics is not lost: the first panic is re-raised on the caller once every
//!   other call has finished, and the workers stay usable.
//! - One job at a time: a call made while the pool is busy (another thread's call, or a task
//!   that calls in again) runs on scoped threads instead; it never waits for the pool, so it
//!   cannot deadlock. Dropping a pool stops and joins its workers.
//!
//! # Example
//! ```
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use piazza_tensor::pool::Pool;
//!
//! let total = AtomicUsize::new(0);
//! Pool::global().for_each(2, 10, |i| {
//!     total.fetch_add(i, Ordering::Relaxed);
//! });
//! assert_eq!(total.into_inner(), 45);
//! ```

use std::any::Any;
use std::panic::{self, AssertUnwindSafe};
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, TryLockError};
use std::thread::{self, JoinHandle, Thread};
use std::time::{Duration, Instant};

/// Most threads one pool runs (the caller and `THREADS_MAX - 1` workers); larger requests are
/// clamped (fewer threads never change a result).
pub const THREADS_MAX: usize = 256;

/// How long an idle worker, or a caller waiting for its helpers, polls before it parks.
pub const SPIN_NS: u64 = 50_000;

/// Polls with a `pause` (`spin_loop`) before a waiting thread yields its core between polls
/// (about 3 µs): a hand-off that follows at once costs no system call, while a waiting thread
/// spinning on a core the awaited thread needs (on a loaded machine) gives it up within
/// microseconds. Measured with `bench_generate 64 2` (docs/engine.md §8.2).
pub const PAUSE_SPINS: u32 = 64;

type Payload = Box<dyn Any + Send + 'static>;

/// One call's shared state, on the caller's stack for the length of the call.
struct Job<'a> {
    work: &'a (dyn Fn() + Sync),
    /// Helpers that have not finished yet.
    pending: AtomicUsize,
    /// The calling thread, woken by the last helper to finish.
    caller: Thread,
    /// The first panic of a helper.
    panic: Mutex<Option<Payload>>,
}

/// A worker's mailbox: the job to run (null while idle) and the stop flag.
struct Slot {
    job: AtomicPtr<Job<'static>>,
    stop: AtomicBool,
}

struct Worker {
    slot: Arc<Slot>,
    thread: Thread,
    handle: Option<JoinHandle<()>>,
}

/// A pool of worker threads, started on first use and kept until the pool is dropped.
pub struct Pool {
    /// The workers started so far; locked for the length of a call (one job at a time).
    workers: Mutex<Vec<Worker>>,
}

impl Default for Pool {
    fn default() -> Self {
        Pool::new()
    }
}

impl Pool {
    /// A pool with no worker yet: workers start when a call first asks for them.
    pub fn new() -> Pool {
        Pool {
            workers: Mutex::new(Vec::new()),
        }
    }

    /// The process-wide pool the kernels use.
    pub fn global() -> &'static Pool {
        static GLOBAL: OnceLock<Pool> = OnceLock::new();
        GLOBAL.get_or_init(Pool::new)
    }

    /// Worker threads started so far (the caller is not counted).
    pub fn workers(&self) -> usize {
        match self.workers.lock() {
            Ok(workers) => workers.len(),
            Err(poisoned) => poisoned.into_inner().len(),
        }
    }

    /// Runs `task(i)` once for each `i < tasks` on up to `threads` threads (the caller among
    /// them; `0` is read as 1), indices handed out in increasing order as threads free up.
    /// Returns when every call has finished; re-raises the first panic of any call.
    pub fn for_each<F>(&self, threads: usize, tasks: usize, task: F)
    where
        F: Fn(usize) + Sync,
    {
        let threads = threads.clamp(1, THREADS_MAX).min(tasks);
        let next = AtomicUsize::new(0);
        let work = || loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= tasks {
                break;
            }
            task(i);
        };
        if threads <= 1 {
            work();
            return;
        }
        match self.workers.try_lock() {
            Ok(mut workers) => run_on_workers(&mut workers, threads - 1, &work),
            Err(TryLockError::Poisoned(poisoned)) => {
                run_on_workers(&mut poisoned.into_inner(), threads - 1, &work)
            }
            Err(TryLockError::WouldBlock) => run_scoped(threads - 1, &work),
        }
    }
}

/// Pool-busy fallback: `helpers` scoped threads and the caller run `work`.
fn run_scoped(helpers: usize, work: &(dyn Fn() + Sync)) {
    thread::scope(|scope| {
        for _ in 0..helpers {
            scope.spawn(work);
        }
        work();
    });
}

/// Starts workers up to `helpers`, hands the first `helpers` of them `work`, runs it on the
/// caller too, and waits for all of them.
fn run_on_workers(workers: &mut Vec<Worker>, helpers: usize, work: &(dyn Fn() + Sync)) {
    while workers.len() < helpers {
        match start_worker(workers.len()) {
            Some(worker) => workers.push(worker),
            // The OS refused a thread: run with the workers there are.
            None => break,
        }
    }
    let helpers = helpers.min(workers.len());
    let job = Job {
        work,
        pending: AtomicUsize::new(helpers),
        caller: thread::current(),
        panic: Mutex::new(None),
    };
    // The pointer's lifetime is erased; it is valid until `pending` reaches zero, which the
    // wait below ensures before `job` goes out of scope (even if the caller's `work` panics).
    let job_ptr = &job as *const Job<'_> as *mut Job<'static>;
    for worker in &workers[..helpers] {
        worker.slot.job.store(job_ptr, Ordering::Release);
        worker.thread.unpark();
    }
    let caller_result = panic::catch_unwind(AssertUnwindSafe(work));
    wait_until(|| job.pending.load(Ordering::Acquire) == 0);
    if let Err(payload) = caller_result {
        panic::resume_unwind(payload);
    }
    let helper_panic = match job.panic.into_inner() {
        Ok(payload) => payload,
        Err(poisoned) => poisoned.into_inner(),
    };
    if let Some(payload) = helper_panic {
        panic::resume_unwind(payload);
    }
}

/// What a waiting thread does before its next check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wait {
    Pause,
    Yield,
    Park,
}

/// The wait after `polls` unsuccessful checks, `waited` into the wait: [`PAUSE_SPINS`]
/// pauses, then yields until [`SPIN_NS`], then parking.
fn backoff(polls: u32, waited: Duration) -> Wait {
    if polls < PAUSE_SPINS {
        Wait::Pause
    } else if waited < Duration::from_nanos(SPIN_NS) {
        Wait::Yield
    } else {
        Wait::Park
    }
}

/// Waits until `done()`, as [`backoff`] says; parks between checks at the end (each wake-up
/// re-checks).
fn wait_until(mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    let mut polls = 0u32;
    while !done() {
        match backoff(polls, start.elapsed()) {
            Wait::Pause => std::hint::spin_loop(),
            Wait::Yield => thread::yield_now(),
            Wait::Park => thread::park(),
        }
        polls = polls.saturating_add(1);
    }
}

fn start_worker(index: usize) -> Option<Worker> {
    let slot = Arc::new(Slot {
        job: AtomicPtr::new(ptr::null_mut()),
        stop: AtomicBool::new(false),
    });
    let worker_slot = Arc::clone(&slot);
    let handle = thread::Builder::new()
        .name(format!("piazza-tensor-{index}"))
        .spawn(move || worker_loop(&worker_slot))
        .ok()?;
    Some(Worker {
        slot,
        thread: handle.thread().clone(),
        handle: Some(handle),
    })
}

fn worker_loop(slot: &Slot) {
    loop {
        let mut job_ptr = ptr::null_mut();
        wait_until(|| {
            job_ptr = slot.job.swap(ptr::null_mut(), Ordering::Acquire);
            !job_ptr.is_null() || slot.stop.load(Ordering::Acquire)
        });
        if job_ptr.is_null() {
            return;
        }
        // SAFETY: the caller keeps the job alive until `pending` reaches zero, and this worker
        // decrements it last, after its final use of `job`.
        let job = unsafe { &*job_ptr };
        if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(job.work)) {
            let mut first = match job.panic.lock() {
                Ok(first) => first,
                Err(poisoned) => poisoned.into_inner(),
            };
            first.get_or_insert(payload);
        }
        let caller = job.caller.clone();
        if job.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            caller.unpark();
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let workers = match self.workers.get_mut() {
            Ok(workers) => workers,
            Err(poisoned) => poisoned.into_inner(),
        };
        for worker in workers.iter() {
            worker.slot.stop.store(true, Ordering::Release);
            worker.thread.unpark();
        }
        for worker in workers.iter_mut() {
            if let Some(handle) = worker.handle.take() {
                // A worker catches every task's panic, so joining cannot fail in practice;
                // nothing is left to report from a drop if it did.
                let _ = handle.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// Pauses first, yields the core until the spin time is up, then parks.
    #[test]
    fn a_waiting_thread_pauses_then_yields_then_parks() {
        let spin = Duration::from_nanos(SPIN_NS);
        let check = |polls: u32, waited: Duration, expected: Wait| {
            assert_eq!(
                backoff(polls, waited),
                expected,
                "{polls} polls, {waited:?}"
            );
        };
        check(0, Duration::ZERO, Wait::Pause);
        check(PAUSE_SPINS - 1, Duration::ZERO, Wait::Pause);
        check(PAUSE_SPINS, Duration::ZERO, Wait::Yield);
        check(PAUSE_SPINS, spin - Duration::from_nanos(1), Wait::Yield);
        check(u32::MAX, spin - Duration::from_nanos(1), Wait::Yield);
        check(PAUSE_SPINS, spin, Wait::Park);
        check(u32::MAX, Duration::from_secs(1), Wait::Park);
    }

    #[test]
    fn every_index_runs_once() {
        let pool = Pool::new();
        for threads in [1, 2, 3, 4] {
            for tasks in [0, 1, 2, 7, 100] {
                let counts: Vec<AtomicUsize> = (0..tasks).map(|_| AtomicUsize::new(0)).collect();
                pool.for_each(threads, tasks, |i| {
                    counts[i].fetch_add(1, Ordering::Relaxed);
                });
                assert!(counts.iter().all(|c| c.load(Ordering::Relaxed) == 1));
            }
        }
    }

    #[test]
    fn workers_are_reused_across_calls() {
        let pool = Pool::new();
        let caller = thread::current().id();
        let mut helpers = BTreeSet::new();
        for _ in 0..50 {
            let seen = Mutex::new(Vec::new());
            pool.for_each(3, 64, |_| {
                thread::sleep(Duration::from_micros(50));
                seen.lock().unwrap().push(thread::current().id());
            });
            let seen = seen.into_inner().unwrap();
            helpers.extend(
                seen.into_iter()
                    .filter(|id| *id != caller)
                    .map(|id| format!("{id:?}")),
            );
        }
        // Threads started per call would give up to 100 distinct helpers.
        assert_eq!(pool.workers(), 2);
        assert!(
            !helpers.is_empty() && helpers.len() <= 2,
            "helpers seen: {helpers:?}"
        );
    }

    #[test]
    fn a_panicking_task_surfaces_and_the_pool_survives() {
        let pool = Pool::new();
        let done = AtomicUsize::new(0);
        let result = panic::catch_unwind(AssertUnwindSafe(|| {
            pool.for_each(2, 40, |i| {
                thread::sleep(Duration::from_micros(20));
                if i == 17 {
                    panic!("task 17");
                }
                done.fetch_add(1, Ordering::Relaxed);
            })
        }));
        let payload = result.expect_err("the task's panic must reach the caller");
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"task 17"));
        let total = AtomicUsize::new(0);
        pool.for_each(2, 10, |i| {
            total.fetch_add(i, Ordering::Relaxed);
        });
        assert_eq!(total.into_inner(), 45);
    }

    #[test]
    fn a_nested_call_runs_instead_of_waiting() {
        let pool = Pool::new();
        let total = AtomicUsize::new(0);
        pool.for_each(2, 4, |_| {
            pool.for_each(2, 4, |j| {
                total.fetch_add(j, Ordering::Relaxed);
            });
        });
        assert_eq!(total.into_inner(), 4 * 6);
    }

    #[test]
    fn dropping_a_pool_joins_its_workers() {
        let pool = Pool::new();
        pool.for_each(4, 16, |_| {});
        assert_eq!(pool.workers(), 3);
        drop(pool);
    }
}
