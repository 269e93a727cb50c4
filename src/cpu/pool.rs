//! A fixed pool of threads for the CPU kernels: [`Pool::run`] hands out task indices to the
//! caller and the workers and returns when every task is done. Workers spin briefly before they
//! sleep, since a decode step runs a few hundred short parallel regions back to back.
//!
//! Natively the pool spawns its threads. In a wasm build with shared memory (`atomics`, the
//! package's threaded build) wasm cannot spawn threads: JavaScript starts Web Workers on the same
//! memory and module, and each calls [`Pool::worker_handle`]'s [`run_worker`] (the `cpuThreadRun`
//! export), which joins the pool until it is dropped. Single-threaded wasm runs every task on the
//! caller.

/// A pool of `threads` threads, the caller's included.
pub struct Pool {
    threads: usize,
    #[cfg(threaded)]
    inner: shared::Inner,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("threads", &self.threads())
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

    /// A pool of `threads` threads (at least 1). Natively it starts `threads - 1` workers; a
    /// threaded wasm build waits for JavaScript to attach them ([`Pool::worker_handle`]); other
    /// wasm builds run everything on the caller's thread.
    pub fn new(threads: usize) -> Pool {
        #[cfg(threaded)]
        {
            let threads = threads.max(1);
            Pool {
                threads,
                inner: shared::Inner::new(threads - 1),
            }
        }
        #[cfg(not(threaded))]
        {
            let _ = threads;
            Pool { threads: 1 }
        }
    }

    /// The threads that share the work now, the caller's included (in threaded wasm, those
    /// attached so far).
    pub fn threads(&self) -> usize {
        #[cfg(all(threaded, target_arch = "wasm32"))]
        return self.inner.attached() + 1;
        #[allow(unreachable_code)]
        self.threads
    }

    /// The threads asked for, the caller's included.
    pub fn requested_threads(&self) -> usize {
        self.threads
    }

    /// Threaded wasm: a handle for one more worker thread, to pass to [`run_worker`] on it
    /// (JavaScript hands it to the Web Worker it starts). Each handle holds the pool's shared
    /// state until its worker returns. 0 in builds without shared memory.
    pub fn worker_handle(&self) -> usize {
        #[cfg(all(threaded, target_arch = "wasm32"))]
        return self.inner.handle();
        #[allow(unreachable_code)]
        0
    }

    /// Runs `task(i)` for every `i` in `0..tasks`, spread over the pool; returns when all are
    /// done. Tasks must not call `run` themselves.
    pub fn run(&self, tasks: usize, task: &(dyn Fn(usize) + Sync)) {
        if tasks == 0 {
            return;
        }
        #[cfg(threaded)]
        if self.threads() > 1 && tasks > 1 {
            return self.inner.run(tasks, task);
        }
        (0..tasks).for_each(task);
    }

    /// Splits `0..n` into contiguous ranges, a few per thread (they balance uneven cores
    /// without many tiny tasks), and runs `f(start, end)` on each in parallel.
    pub fn ranges(&self, n: usize, f: &(dyn Fn(usize, usize) + Sync)) {
        let threads = self.threads();
        let parts = if threads == 1 {
            1
        } else {
            (threads * 4).min(n).max(1)
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

/// Threaded wasm: joins the pool behind `handle` (from [`Pool::worker_handle`]) on this thread
/// and works for it until the pool is dropped. Blocks: call it on a Web Worker, never the page.
///
/// # Safety
/// `handle` must come from `worker_handle` and be used once.
#[cfg(all(threaded, target_arch = "wasm32"))]
pub unsafe fn run_worker(handle: usize) {
    // SAFETY: the caller passes a handle from `worker_handle` once.
    unsafe { shared::run_worker(handle) }
}

#[cfg(threaded)]
mod shared {
    use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
    use std::sync::{Arc, Condvar, Mutex};

    /// A counter of task indices shared by the threads of one [`Pool::run`](super::Pool::run).
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
        /// Workers that take part in every job from the next one on.
        attached: AtomicUsize,
        /// Workers still inside the current job.
        busy: AtomicUsize,
        wake: Condvar,
        sleepers: Mutex<()>,
        shutdown: AtomicBool,
        /// Held for a whole job: one job at a time, and workers attach only between jobs.
        running: Mutex<()>,
    }

    pub(super) struct Inner {
        shared: Arc<Shared>,
        #[cfg(not(target_arch = "wasm32"))]
        workers: Vec<std::thread::JoinHandle<()>>,
    }

    impl Inner {
        /// Natively, starts `workers` threads and waits until they have joined; in wasm, the
        /// workers attach themselves later ([`run_worker`]).
        pub(super) fn new(workers: usize) -> Inner {
            let shared = Arc::new(Shared {
                generation: AtomicU64::new(0),
                job: Mutex::new(None),
                attached: AtomicUsize::new(0),
                busy: AtomicUsize::new(0),
                wake: Condvar::new(),
                sleepers: Mutex::new(()),
                shutdown: AtomicBool::new(false),
                running: Mutex::new(()),
            });
            #[cfg(not(target_arch = "wasm32"))]
            {
                let workers = (0..workers)
                    .map(|i| {
                        let shared = shared.clone();
                        std::thread::Builder::new()
                            .name(format!("pocketlm-cpu-{i}"))
                            .spawn(move || worker(&shared))
                            .expect("spawning a CPU worker thread")
                    })
                    .collect::<Vec<_>>();
                while shared.attached.load(Ordering::Acquire) < workers.len() {
                    std::thread::yield_now();
                }
                Inner { shared, workers }
            }
            #[cfg(target_arch = "wasm32")]
            {
                let _ = workers;
                Inner { shared }
            }
        }

        #[cfg(target_arch = "wasm32")]
        pub(super) fn attached(&self) -> usize {
            self.shared.attached.load(Ordering::Acquire)
        }

        #[cfg(target_arch = "wasm32")]
        pub(super) fn handle(&self) -> usize {
            Arc::into_raw(self.shared.clone()) as usize
        }

        pub(super) fn run(&self, tasks: usize, task: &(dyn Fn(usize) + Sync)) {
            let s = &self.shared;
            let _one = s.running.lock().unwrap_or_else(|e| e.into_inner());
            // SAFETY: the lifetime is erased only until this function returns, and it returns
            // after every worker has left the job (`busy` back to 0).
            let task: &'static (dyn Fn(usize) + Sync) = unsafe { std::mem::transmute(task) };
            let job = Arc::new(Job {
                task,
                tasks,
                next: AtomicUsize::new(0),
            });
            *s.job.lock().unwrap_or_else(|e| e.into_inner()) = Some(job.clone());
            s.busy
                .store(s.attached.load(Ordering::Acquire), Ordering::SeqCst);
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

    /// Threaded wasm: see [`super::run_worker`].
    #[cfg(target_arch = "wasm32")]
    pub(super) unsafe fn run_worker(handle: usize) {
        // SAFETY: `handle` is one `Arc::into_raw` of `Inner::handle`, used once.
        let shared = unsafe { Arc::from_raw(handle as *const Shared) };
        worker(&shared);
    }

    fn worker(s: &Shared) {
        let mut seen = {
            let _between_jobs = s.running.lock().unwrap_or_else(|e| e.into_inner());
            s.attached.fetch_add(1, Ordering::AcqRel);
            s.generation.load(Ordering::Acquire)
        };
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
            #[cfg(not(target_arch = "wasm32"))]
            for w in self.workers.drain(..) {
                let _ = w.join();
            }
        }
    }
}
