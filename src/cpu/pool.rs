//! A fixed pool of threads for the CPU kernels: [`Pool::run`] hands out task indices to the
//! caller and the workers and returns when every task is done. Workers spin briefly before they
//! sleep, since a decode step runs a few hundred short parallel regions back to back.

/// A pool of `threads` threads, the caller's included.
pub struct Pool {
    threads: usize,
    #[cfg(not(target_arch = "wasm32"))]
    inner: native::Inner,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("threads", &self.threads)
            .finish()
    }
}

impl Pool {
    /// The cores this process may use (1 where that cannot be known, and in wasm).
    pub fn cores() -> usize {
        #[cfg(not(target_arch = "wasm32"))]
        {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
        #[cfg(target_arch = "wasm32")]
        {
            1
        }
    }

    /// A pool of `threads` threads (at least 1); wasm runs everything on the caller's thread.
    pub fn new(threads: usize) -> Pool {
        #[cfg(not(target_arch = "wasm32"))]
        {
            let threads = threads.max(1);
            Pool {
                threads,
                inner: native::Inner::new(threads - 1),
            }
        }
        #[cfg(target_arch = "wasm32")]
        {
            let _ = threads;
            Pool { threads: 1 }
        }
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `task(i)` for every `i` in `0..tasks`, spread over the pool; returns when all are
    /// done. Tasks must not call `run` themselves.
    pub fn run(&self, tasks: usize, task: &(dyn Fn(usize) + Sync)) {
        if tasks == 0 {
            return;
        }
        #[cfg(not(target_arch = "wasm32"))]
        if self.threads > 1 && tasks > 1 {
            return self.inner.run(tasks, task);
        }
        (0..tasks).for_each(task);
    }

    /// Splits `0..n` into contiguous ranges, a few per thread (they balance uneven cores
    /// without many tiny tasks), and runs `f(start, end)` on each in parallel.
    pub fn ranges(&self, n: usize, f: &(dyn Fn(usize, usize) + Sync)) {
        let parts = if self.threads == 1 {
            1
        } else {
            (self.threads * 4).min(n).max(1)
        };
        let per = n.div_ceil(parts).max(1);
        self.run(n.div_ceil(per), &|i| {
            let start = i * per;
            let end = ((i + 1) * per).min(n);
            if start < end {
                f(start, end);
            }
        });
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
    use std::sync::{Arc, Condvar, Mutex};
    use std::thread::JoinHandle;

    /// A counter of task indices shared by the threads of one [`Pool::run`].
    struct Job {
        task: *const (dyn Fn(usize) + Sync),
        tasks: usize,
        next: AtomicUsize,
    }

    // SAFETY: the closure behind `task` is `Sync`, and `run` keeps it alive until every worker has
    // finished with the job.
    unsafe impl Send for Job {}
    unsafe impl Sync for Job {}

    impl Job {
        fn work(&self) {
            loop {
                let i = self.next.fetch_add(1, Ordering::Relaxed);
                if i >= self.tasks {
                    break;
                }
                // SAFETY: see the `Send`/`Sync` impls.
                unsafe { (*self.task)(i) };
            }
        }
    }

    /// Spins of a waiting thread before it sleeps.
    const SPINS: u32 = 20_000;

    struct Shared {
        /// Bumped for every job; workers watch it.
        generation: AtomicU64,
        job: Mutex<Option<Arc<Job>>>,
        /// Workers still inside the current job.
        busy: AtomicUsize,
        wake: Condvar,
        sleepers: Mutex<()>,
        shutdown: AtomicBool,
    }

    pub(super) struct Inner {
        shared: Arc<Shared>,
        workers: Vec<JoinHandle<()>>,
        /// One job at a time.
        running: Mutex<()>,
    }

    impl Inner {
        pub(super) fn new(workers: usize) -> Inner {
            let shared = Arc::new(Shared {
                generation: AtomicU64::new(0),
                job: Mutex::new(None),
                busy: AtomicUsize::new(0),
                wake: Condvar::new(),
                sleepers: Mutex::new(()),
                shutdown: AtomicBool::new(false),
            });
            let workers = (0..workers)
                .map(|i| {
                    let shared = shared.clone();
                    std::thread::Builder::new()
                        .name(format!("pocketlm-cpu-{i}"))
                        .spawn(move || worker(&shared))
                        .expect("spawning a CPU worker thread")
                })
                .collect();
            Inner {
                shared,
                workers,
                running: Mutex::new(()),
            }
        }

        pub(super) fn run(&self, tasks: usize, task: &(dyn Fn(usize) + Sync)) {
            let _one = self.running.lock().unwrap_or_else(|e| e.into_inner());
            // SAFETY: the lifetime is erased only until this function returns, and it returns
            // after every worker has left the job (`busy` back to 0).
            let task: &'static (dyn Fn(usize) + Sync) = unsafe { std::mem::transmute(task) };
            let job = Arc::new(Job {
                task,
                tasks,
                next: AtomicUsize::new(0),
            });
            let s = &self.shared;
            *s.job.lock().unwrap_or_else(|e| e.into_inner()) = Some(job.clone());
            s.busy.store(self.workers.len(), Ordering::SeqCst);
            s.generation.fetch_add(1, Ordering::SeqCst);
            {
                let _g = s.sleepers.lock().unwrap_or_else(|e| e.into_inner());
                s.wake.notify_all();
            }
            job.work();
            let mut spins = 0u32;
            while s.busy.load(Ordering::Acquire) != 0 {
                spins += 1;
                if spins < SPINS {
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
            }
            *s.job.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
    }

    fn worker(s: &Shared) {
        let mut seen = 0u64;
        loop {
            let mut spins = 0u32;
            loop {
                if s.shutdown.load(Ordering::Acquire) {
                    return;
                }
                if s.generation.load(Ordering::Acquire) != seen {
                    break;
                }
                spins += 1;
                if spins < SPINS {
                    std::hint::spin_loop();
                } else {
                    let g = s.sleepers.lock().unwrap_or_else(|e| e.into_inner());
                    if s.generation.load(Ordering::Acquire) == seen
                        && !s.shutdown.load(Ordering::Acquire)
                    {
                        drop(s.wake.wait(g).unwrap_or_else(|e| e.into_inner()));
                    }
                }
            }
            seen = s.generation.load(Ordering::Acquire);
            let job = s.job.lock().unwrap_or_else(|e| e.into_inner()).clone();
            if let Some(job) = job {
                job.work();
            }
            s.busy.fetch_sub(1, Ordering::Release);
        }
    }

    impl Drop for Inner {
        fn drop(&mut self) {
            self.shared.shutdown.store(true, Ordering::Release);
            {
                let _g = self
                    .shared
                    .sleepers
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                self.shared.wake.notify_all();
            }
            for w in self.workers.drain(..) {
                let _ = w.join();
            }
        }
    }
}
