//! A spinning team for the short parallel loops of one-token steps.
//!
//! A decode step runs a few hundred products of tens of microseconds each. Rayon hands each
//! one to threads that went to sleep during the serial work between products; waking one
//! takes about as long as the product, so on a small model the second thread joined only the
//! largest products (Gemma 3 270M at 2 threads: the other products ran on one thread).
//! [`with_team`] keeps the pool's other threads spinning for the duration of a closure, and
//! [`for_each_index`] hands them the indices of a loop through an atomic counter, as
//! llama.cpp's thread pool does between its barriers.
//!
//! Results do not depend on which thread runs an index, so the bits are those of rayon's or a
//! serial loop. Outside [`with_team`] (or with one thread, or without the `rayon` feature),
//! [`for_each_index`] is a rayon or serial loop.

/// Runs `f(i)` for every `i in 0..n`, on the current team's threads when the calling thread
/// leads one ([`with_team`]), else on rayon's (or serially without the `rayon` feature).
pub fn for_each_index(n: usize, f: &(dyn Fn(usize) + Sync)) {
    #[cfg(feature = "rayon")]
    {
        if imp::run_on_team(n, f) {
            return;
        }
        use rayon::prelude::*;
        (0..n).into_par_iter().for_each(f);
    }
    #[cfg(not(feature = "rayon"))]
    (0..n).for_each(f);
}

/// Runs `body` with the other threads of the current rayon pool spinning, ready to take the
/// indices of every [`for_each_index`] that `body` runs on this thread. Meant for a one-token
/// step: while `body` runs, rayon's own parallel loops on this thread find no idle thread and
/// run serially. With one thread, more threads than the machine has cores, or without the
/// `rayon` feature, it only runs `body`.
pub fn with_team<R: Send>(body: impl FnOnce() -> R + Send) -> R {
    #[cfg(feature = "rayon")]
    return imp::with_team(body);
    #[cfg(not(feature = "rayon"))]
    body()
}

#[cfg(feature = "rayon")]
mod imp {
    use std::cell::Cell;
    use std::panic::{catch_unwind, AssertUnwindSafe};
    use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering::*};

    /// Spins before each `yield_now` while a helper waits for work (so that an I/O thread on
    /// the same core still runs).
    const SPINS_PER_YIELD: u32 = 4096;

    /// One loop handed to the team. Lives on the leader's stack until every helper is done
    /// with it (see [`run_on_team`]).
    struct Job<'a> {
        n: usize,
        f: &'a (dyn Fn(usize) + Sync),
        next: AtomicUsize,
        done: AtomicUsize,
        panicked: AtomicBool,
    }

    impl Job<'_> {
        /// Takes indices until none are left.
        fn work(&self) {
            loop {
                let i = self.next.fetch_add(1, Relaxed);
                if i >= self.n {
                    return;
                }
                if catch_unwind(AssertUnwindSafe(|| (self.f)(i))).is_err() {
                    self.panicked.store(true, Relaxed);
                }
                self.done.fetch_add(1, Release);
            }
        }
    }

    /// What the leader and its helpers share.
    struct Shared {
        /// The published job's number (0: none). Written by the leader only.
        gen: AtomicU64,
        /// The published job (valid while `gen` holds its number).
        job: AtomicPtr<Job<'static>>,
        /// Helpers between taking a job and leaving it.
        active: AtomicUsize,
        /// Helpers that started (all of them before `body` runs).
        started: AtomicUsize,
        stop: AtomicBool,
    }

    thread_local! {
        /// The team this thread leads, and the next job number.
        static LEADING: Cell<Option<(*const Shared, u64)>> = const { Cell::new(None) };
    }

    pub(super) fn with_team<R: Send>(body: impl FnOnce() -> R + Send) -> R {
        let threads = rayon::current_num_threads();
        let helpers = threads.saturating_sub(1);
        // More threads than cores: a spinning helper would take the core of the thread it
        // waits for.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        if helpers == 0
            || threads > cores
            || rayon::current_thread_index().is_none()
            || LEADING.get().is_some()
        {
            return body();
        }
        let shared = Shared {
            gen: AtomicU64::new(0),
            job: AtomicPtr::new(std::ptr::null_mut()),
            active: AtomicUsize::new(0),
            started: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        };
        rayon::in_place_scope(|s| {
            for _ in 0..helpers {
                s.spawn(|_| helper(&shared));
            }
            // Every helper must have left this thread's queue before `body` can join rayon
            // work here (a join that waits runs queued jobs, and a helper job never ends
            // until `stop`).
            while shared.started.load(Acquire) < helpers {
                std::hint::spin_loop();
            }
            LEADING.set(Some((&shared as *const Shared, 1)));
            let r = catch_unwind(AssertUnwindSafe(body));
            LEADING.set(None);
            shared.stop.store(true, Release);
            match r {
                Ok(r) => r,
                Err(e) => std::panic::resume_unwind(e),
            }
        })
    }

    /// A helper: takes every new job until `stop`.
    fn helper(shared: &Shared) {
        shared.started.fetch_add(1, Release);
        let mut seen = 0u64;
        let mut spins = 0u32;
        while !shared.stop.load(Acquire) {
            let g = shared.gen.load(Acquire);
            if g == 0 || g == seen {
                spins += 1;
                if spins == SPINS_PER_YIELD {
                    spins = 0;
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
                continue;
            }
            // Announce, then check the job is still published: the leader retracts it and
            // then waits for `active` to be 0, so a job seen published after the increment
            // stays alive until the decrement (SeqCst: the two sides' store-then-load must not
            // pass each other).
            shared.active.fetch_add(1, SeqCst);
            if shared.gen.load(SeqCst) == g {
                // SAFETY: `gen == g` after `active` was raised, so the leader has not retracted
                // job `g` and will not free it before `active` drops back; the pointer was
                // stored before `gen` (Release/Acquire).
                let job = unsafe { &*shared.job.load(Acquire) };
                job.work();
                seen = g;
            }
            shared.active.fetch_sub(1, Release);
            spins = 0;
        }
    }

    /// Runs the loop on the team this thread leads; `false` where it leads none.
    pub(super) fn run_on_team(n: usize, f: &(dyn Fn(usize) + Sync)) -> bool {
        let Some((shared, g)) = LEADING.get() else {
            return false;
        };
        if n == 0 {
            return true;
        }
        LEADING.set(Some((shared, g + 1)));
        // SAFETY: `LEADING` is set only inside `with_team`'s scope, where `shared` lives.
        let shared = unsafe { &*shared };
        let job = Job {
            n,
            f,
            next: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
        };
        // Helpers only read the job between seeing `gen == g` and lowering `active`, and it is
        // retracted and waited for below, before it goes out of scope; the lifetime is erased
        // for the shared slot only.
        let ptr = &job as *const Job<'_> as *mut Job<'static>;
        shared.job.store(ptr, Relaxed);
        shared.gen.store(g, SeqCst);
        job.work();
        while job.done.load(Acquire) < n {
            std::hint::spin_loop();
        }
        shared.gen.store(0, SeqCst);
        while shared.active.load(SeqCst) != 0 {
            std::hint::spin_loop();
        }
        if job.panicked.load(Relaxed) {
            panic!("a task of a team loop panicked");
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Every index runs exactly once, inside and outside a team, for many loops in a row
    /// (the job hand-over between loops), with two and three threads.
    #[test]
    #[cfg_attr(miri, ignore)] // spinning threads: far too slow under Miri
    fn every_index_once() {
        for threads in [1, 2, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                with_team(|| {
                    for n in (0..2000).map(|k| k % 37) {
                        let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
                        for_each_index(n, &|i| {
                            hits[i].fetch_add(1, Ordering::Relaxed);
                        });
                        assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1), "n {n}");
                    }
                });
                let hits: Vec<AtomicUsize> = (0..100).map(|_| AtomicUsize::new(0)).collect();
                for_each_index(100, &|i| {
                    hits[i].fetch_add(1, Ordering::Relaxed);
                });
                assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
            });
        }
    }

    /// The helpers do take indices: with two threads, some index runs off the leader.
    #[test]
    #[cfg_attr(miri, ignore)]
    fn helpers_take_work() {
        if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
            return; // no team on one core
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let off_leader = pool.install(|| {
            let leader = std::thread::current().id();
            with_team(|| {
                let off = AtomicUsize::new(0);
                for _ in 0..200 {
                    for_each_index(64, &|_| {
                        let t = std::time::Instant::now();
                        while t.elapsed() < std::time::Duration::from_micros(20) {
                            std::hint::spin_loop();
                        }
                        if std::thread::current().id() != leader {
                            off.fetch_add(1, Ordering::Relaxed);
                        }
                    });
                }
                off.load(Ordering::Relaxed)
            })
        });
        assert!(off_leader > 0);
    }

    /// A panicking task reaches the caller instead of hanging the team.
    #[test]
    #[cfg_attr(miri, ignore)]
    fn a_panic_propagates() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.install(|| {
                with_team(|| {
                    for_each_index(100, &|i| assert!(i != 57, "boom"));
                })
            })
        }));
        assert!(r.is_err());
    }
}
