//! Task plumbing every floor of the broker shares: periodic ticks, the stop signal, the
//! hop from async code to a blocking thread, and the wall clock. A leaf: it knows nothing of the broker.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The wall clock in milliseconds since the Unix epoch (0 before it), as Kafka's timestamps
/// count.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

use tokio::sync::watch;

/// A periodic task's clock: ticks every `period` (a late tick delays the next instead of
/// bunching up), until the broker stops.
pub struct Ticker {
    interval: tokio::time::Interval,
    stop: watch::Receiver<bool>,
}

impl Ticker {
    pub fn new(period: Duration, stop: watch::Receiver<bool>) -> Self {
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Ticker { interval, stop }
    }

    /// Waits for the next tick; `false` once the broker is stopping.
    pub async fn tick(&mut self) -> bool {
        tokio::select! {
            _ = self.interval.tick() => true,
            _ = stopped(&mut self.stop) => false,
        }
    }
}

/// Resolves once the broker is stopping. (The guard `wait_for` returns is not `Send`, so it
/// is dropped here rather than held across an `await` by the caller.)
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Runs blocking work (file I/O, fsync) without stalling the async workers.
///
/// A panic in `f` aborts the process where it happens (crash policy, see ARCHITECTURE.md),
/// so a `JoinError` here is a panic only in tests, where it is passed on to the caller; the
/// other kind, cancellation, tokio reports only when the runtime shuts down before `f` ran,
/// and it panics too: the caller has no result to go on with.
///
/// Inside [`metered`], the CPU time of `f` counts towards the metered future's.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let meter = CPU_METER.try_with(Arc::clone).ok();
    let f = move || match meter {
        None => f(),
        Some(meter) => {
            let start = thread_cpu_time();
            let value = f();
            meter.fetch_add(cpu_nanos_since(start), Ordering::Relaxed);
            value
        }
    };
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("blocking work did not run: {e}"),
    }
}

tokio::task_local! {
    /// The CPU time, in nanoseconds, of the future [`metered`] runs.
    static CPU_METER: Arc<AtomicU64>;
}

/// The CPU time this thread has used (`CLOCK_THREAD_CPUTIME_ID`).
fn thread_cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        t.tv_sec.max(0) as u64,
        t.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

fn cpu_nanos_since(start: Duration) -> u64 {
    thread_cpu_time().saturating_sub(start).as_nanos() as u64
}

/// Runs `future` and returns its output with the CPU time it took: every poll of it on the
/// async threads, and every [`blocking`] closure it ran. Time it spent waiting (a long poll, a
/// replication wait, a rebalance) is not CPU time and does not count: this is what Kafka's
/// request quotas charge as request handler time.
pub async fn metered<F: Future>(future: F) -> (F::Output, Duration) {
    let meter = Arc::new(AtomicU64::new(0));
    let counted = meter.clone();
    let mut future = std::pin::pin!(future);
    let polls = std::future::poll_fn(move |cx| {
        let start = thread_cpu_time();
        let polled = future.as_mut().poll(cx);
        counted.fetch_add(cpu_nanos_since(start), Ordering::Relaxed);
        polled
    });
    let output = CPU_METER.scope(meter.clone(), polls).await;
    (output, Duration::from_nanos(meter.load(Ordering::Relaxed)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Burns `cpu` of this thread's CPU time.
    fn spin(cpu: Duration) {
        let start = thread_cpu_time();
        while thread_cpu_time().saturating_sub(start) < cpu {
            std::hint::black_box(0u64);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn metered_counts_cpu_on_either_side_and_not_waiting() {
        let (value, cpu) = metered(async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            spin(Duration::from_millis(20));
            blocking(|| {
                spin(Duration::from_millis(30));
                7
            })
            .await
        })
        .await;
        assert_eq!(value, 7);
        assert!(
            cpu >= Duration::from_millis(50) && cpu < Duration::from_millis(250),
            "{cpu:?}"
        );
        // Outside `metered`, blocking work is not counted anywhere (and does not fail).
        assert_eq!(blocking(|| 1).await, 1);
    }
}
