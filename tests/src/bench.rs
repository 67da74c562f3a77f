//! What the benchmarks share: pinning to one CPU, and medians and rates of samples.

use std::time::Instant;

use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::unistd::Pid;

/// Runs the calling thread, and every process and thread it starts from now on, on one CPU
/// (the first it may use), so a round trip's figures hold no migration and no parallelism.
/// Returns the set it had, for [`unpin`].
pub fn pin_to_one_cpu() -> CpuSet {
    let all = sched_getaffinity(Pid::from_raw(0)).expect("sched_getaffinity");
    let first = (0..CpuSet::count())
        .find(|&c| all.is_set(c).unwrap_or(false))
        .expect("a CPU to run on");
    let mut one = CpuSet::new();
    one.set(first).expect("CpuSet::set");
    sched_setaffinity(Pid::from_raw(0), &one).expect("sched_setaffinity");
    all
}

/// Undoes [`pin_to_one_cpu`] for the calling thread and what it starts after.
pub fn unpin(all: &CpuSet) {
    sched_setaffinity(Pid::from_raw(0), all).expect("sched_setaffinity");
}

/// The median of `v`.
pub fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

/// The 99th percentile of `v`.
pub fn p99(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() * 99 / 100]
}

/// Each call of `f`'s duration in nanoseconds, `n` calls.
pub fn time(n: usize, mut f: impl FnMut()) -> Vec<u64> {
    (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_nanos() as u64
        })
        .collect()
}

/// Calls per second of `clients` threads that each call their own `f` `n` times at once:
/// `make(i)` makes client i's `f` before the clock starts.
pub fn aggregate_rate<F: FnMut() + Send>(
    clients: usize,
    n: usize,
    make: impl Fn(usize) -> F,
) -> f64 {
    let mut fs: Vec<F> = (0..clients).map(make).collect();
    let barrier = std::sync::Barrier::new(clients + 1);
    let start = std::thread::scope(|s| {
        for f in fs.iter_mut() {
            let barrier = &barrier;
            s.spawn(move || {
                barrier.wait();
                for _ in 0..n {
                    f();
                }
            });
        }
        barrier.wait();
        Instant::now()
    });
    (clients * n) as f64 / start.elapsed().as_secs_f64()
}
