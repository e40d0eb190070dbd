//! Transaction verification state of a partition leader's log (Kafka's
//! `VerificationStateEntry` and `VerificationGuard`, KIP-890).
//!
//! Before the first transactional batch of a producer's transaction starts that transaction
//! on this partition, the leader asks the transaction coordinator whether the partition is in
//! the transaction (protocol v1) or to add it (protocol v2), without holding the log's lock.
//! The log hands out a [`VerificationGuard`] when that check starts, and the append must
//! present it: a marker of the *same producer* that ends the checked transaction while the
//! coordinator was asked drops the guard, so that a stale answer cannot start a transaction
//! the coordinator already ended. Other producers' markers leave it alone (the state is kept
//! per producer id, as Kafka's is).
//!
//! Which marker ends the checked transaction depends on the protocol (`supports_epoch_bump`):
//! with v1 the transaction's marker carries the epoch its writes carry; with v2 every
//! transaction end bumps the epoch and its marker carries the bumped one, so the marker of
//! the transaction *before* (whose epoch is the one the new transaction writes with) does not
//! end the checked one.
//!
//! In memory only, on the leader: a follower drops it all (its leader checks the writes).
//! Bounded by [`MAX_VERIFICATIONS`]; an entry older than [`VERIFICATION_MAX_AGE_MS`] is
//! forgotten (a coordinator answer that late is refused, and the client retries).

use std::collections::HashMap;

/// Most producers with a check in flight on one partition. Past it the oldest entry is
/// dropped, which sends its write back to the client (a retriable refusal), never lets an
/// unchecked one through.
pub const MAX_VERIFICATIONS: usize = 4096;
/// Age after which an unused entry is forgotten: far above the longest coordinator check
/// (a 5 s request timeout plus its retries).
pub const VERIFICATION_MAX_AGE_MS: i64 = 5 * 60 * 1000;

/// The token of one check of one producer's write on one partition. Issued by
/// [`crate::Log::start_txn_verification`]; never 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VerificationGuard(u64);

/// One producer's check in flight.
#[derive(Debug, Clone, Copy)]
struct VerificationEntry {
    guard: VerificationGuard,
    /// The epoch the checked write carries.
    producer_epoch: i16,
    /// Protocol v2: the transaction's marker carries a bumped epoch.
    supports_epoch_bump: bool,
    created_ms: i64,
}

#[derive(Debug, Default)]
pub(crate) struct Verifications {
    entries: HashMap<i64, VerificationEntry>,
    /// The last guard handed out (guards start at 1).
    last_guard: u64,
}

impl Verifications {
    /// Starts (or joins, for the same producer, epoch and protocol: Kafka shares one entry
    /// between concurrent checks of a producer) a check; returns its guard.
    pub(crate) fn start(
        &mut self,
        producer_id: i64,
        producer_epoch: i16,
        supports_epoch_bump: bool,
        now_ms: i64,
    ) -> VerificationGuard {
        if let Some(e) = self.entries.get(&producer_id) {
            if e.producer_epoch == producer_epoch && e.supports_epoch_bump == supports_epoch_bump {
                return e.guard;
            }
        }
        if self.entries.len() >= MAX_VERIFICATIONS {
            self.entries
                .retain(|_, e| now_ms - e.created_ms < VERIFICATION_MAX_AGE_MS);
        }
        if self.entries.len() >= MAX_VERIFICATIONS {
            if let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.guard.0)
                .map(|(pid, _)| *pid)
            {
                self.entries.remove(&oldest);
            }
        }
        self.last_guard += 1;
        let guard = VerificationGuard(self.last_guard);
        self.entries.insert(
            producer_id,
            VerificationEntry {
                guard,
                producer_epoch,
                supports_epoch_bump,
                created_ms: now_ms,
            },
        );
        debug_assert!(self.entries.len() <= MAX_VERIFICATIONS);
        guard
    }

    /// Whether `guard` is still the producer's check in flight.
    pub(crate) fn is_valid(&self, producer_id: i64, guard: VerificationGuard, now_ms: i64) -> bool {
        self.entries
            .get(&producer_id)
            .is_some_and(|e| e.guard == guard && now_ms - e.created_ms < VERIFICATION_MAX_AGE_MS)
    }

    /// A marker of `producer_id` at `marker_epoch` was appended: drops the producer's check
    /// if the marker ends the checked transaction.
    pub(crate) fn on_marker(&mut self, producer_id: i64, marker_epoch: i16) {
        if let Some(e) = self.entries.get(&producer_id) {
            let ends_it = if e.supports_epoch_bump {
                marker_epoch > e.producer_epoch
            } else {
                marker_epoch >= e.producer_epoch
            };
            if ends_it {
                self.entries.remove(&producer_id);
            }
        }
    }

    /// Forgets every check (the log is no longer a leader's, or its tail was cut).
    pub(crate) fn clear(&mut self) {
        self.entries.clear();
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_are_per_producer_and_follow_the_protocol() {
        let mut v = Verifications::default();
        let a = v.start(1, 0, false, 0);
        let b = v.start(2, 0, false, 0);
        assert_ne!(a, b);
        assert_eq!(
            v.start(1, 0, false, 1),
            a,
            "a concurrent check joins the entry"
        );
        v.on_marker(2, 0);
        assert!(v.is_valid(1, a, 2), "another producer's marker leaves it");
        assert!(!v.is_valid(2, b, 2), "the producer's own marker ends it");
        v.on_marker(1, 0);
        assert!(!v.is_valid(1, a, 2));
        // Protocol v2: the previous transaction's marker carries the epoch the new one writes
        // with; only a higher one ends the checked transaction.
        let c = v.start(1, 5, true, 3);
        v.on_marker(1, 5);
        assert!(v.is_valid(1, c, 4));
        v.on_marker(1, 6);
        assert!(!v.is_valid(1, c, 4));
        let d = v.start(3, 0, false, 0);
        assert!(!v.is_valid(3, d, VERIFICATION_MAX_AGE_MS), "too old");
    }

    #[test]
    fn the_entries_are_bounded() {
        let mut v = Verifications::default();
        let first = v.start(0, 0, false, 0);
        for pid in 1..(MAX_VERIFICATIONS as i64 + 10) {
            v.start(pid, 0, false, 1);
        }
        assert_eq!(v.len(), MAX_VERIFICATIONS);
        assert!(!v.is_valid(0, first, 2), "the oldest went first");
        v.clear();
        assert_eq!(v.len(), 0);
    }
}
