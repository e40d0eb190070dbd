//! Task plumbing every floor of the broker shares: periodic ticks, the stop signal, and the
//! hop from async code to a blocking thread. A leaf: it knows nothing of the broker.

use std::time::Duration;

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
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}
