//! Task plumbing every floor of the broker shares: periodic ticks, the stop signal, the
//! hop from async code to a blocking thread, and the wall clock. A leaf: it knows nothing of the broker.

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
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("blocking work did not run: {e}"),
    }
}
