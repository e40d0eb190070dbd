//! Where a consumer should read a partition from (KIP-392, Kafka's `ReplicaManager
//! .findPreferredReadReplica` with `RackAwareReplicaSelector`): the leader answers a consumer's
//! fetch with a *preferred read replica* in the consumer's rack, and the consumer fetches from
//! that follower until it errs or its metadata says otherwise.
//!
//! Pure: the leader's view of its replicas goes in, a broker id (or "read here") comes out.
//! The caller owns the metadata (racks, fencing), the leader state (ISR, follower progress)
//! and the fetch. Not here: what a follower serves once a consumer is there (the fetch
//! handler), and any selector other than Kafka's rack-aware one.
//!
//! Kafka's rules, kept here:
//! - Only followers that can serve the fetch offset are candidates: alive (registered and
//!   unfenced, so that the consumer can reach them), in the ISR (an out-of-sync follower may
//!   lag without bound), and with `log start <= fetch offset <= log end` as the leader last
//!   saw them.
//! - No client rack: the leader. The leader in the client's rack: the leader. Otherwise the
//!   most caught-up candidate in the client's rack (largest log end, then the shortest time
//!   since it was last caught up, then the largest broker id, as Kafka's
//!   `ReplicaView.comparator`); none there: the leader.

use std::cmp::Reverse;

/// The leader's view of one follower when a consumer asks where to read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FollowerView<'a> {
    pub broker_id: i32,
    /// The broker's rack in the metadata (`--broker-rack`); `None` when it has none.
    pub rack: Option<&'a str>,
    /// Registered and unfenced: clients can reach it.
    pub alive: bool,
    /// In the ISR the controller committed.
    pub in_isr: bool,
    /// As of the follower's last fetch (its fetch offset, and the log start it reported).
    pub log_start_offset: i64,
    pub log_end_offset: i64,
    /// Milliseconds since the follower was last caught up with the leader's log end.
    pub time_since_last_caught_up_ms: i64,
}

impl FollowerView<'_> {
    /// Whether a consumer at `fetch_offset` could be sent to this follower.
    fn can_serve(&self, fetch_offset: i64) -> bool {
        self.alive
            && self.in_isr
            && self.log_start_offset <= fetch_offset
            && fetch_offset <= self.log_end_offset
    }

    /// Kafka's "most caught up" order: log end, then recency of being caught up, then id.
    fn rank(&self) -> (i64, Reverse<i64>, i32) {
        (
            self.log_end_offset,
            Reverse(self.time_since_last_caught_up_ms),
            self.broker_id,
        )
    }
}

/// The follower a consumer in `client_rack` should read from at `fetch_offset`, or `None` to
/// read from the leader (which is in `leader_rack`). An empty `client_rack` means the client
/// did not say where it is.
///
/// ```
/// use strata_partition::{preferred_read_replica, FollowerView};
/// let follower = |id, rack| FollowerView {
///     broker_id: id,
///     rack: Some(rack),
///     alive: true,
///     in_isr: true,
///     log_start_offset: 0,
///     log_end_offset: 10,
///     time_since_last_caught_up_ms: 0,
/// };
/// let followers = [follower(2, "r2"), follower(3, "r3")];
/// assert_eq!(preferred_read_replica("r2", 5, Some("r1"), &followers), Some(2));
/// assert_eq!(preferred_read_replica("r1", 5, Some("r1"), &followers), None);
/// assert_eq!(preferred_read_replica("", 5, Some("r1"), &followers), None);
/// ```
pub fn preferred_read_replica(
    client_rack: &str,
    fetch_offset: i64,
    leader_rack: Option<&str>,
    followers: &[FollowerView<'_>],
) -> Option<i32> {
    if client_rack.is_empty() || leader_rack == Some(client_rack) {
        return None;
    }
    followers
        .iter()
        .filter(|f| f.rack == Some(client_rack) && f.can_serve(fetch_offset))
        .max_by_key(|f| f.rank())
        .map(|f| f.broker_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(broker_id: i32, rack: &str) -> FollowerView<'_> {
        FollowerView {
            broker_id,
            rack: Some(rack),
            alive: true,
            in_isr: true,
            log_start_offset: 0,
            log_end_offset: 100,
            time_since_last_caught_up_ms: 0,
        }
    }

    #[test]
    fn a_follower_in_the_client_rack_is_preferred() {
        let followers = [view(2, "r2"), view(3, "r3")];
        assert_eq!(
            preferred_read_replica("r2", 50, Some("r1"), &followers),
            Some(2)
        );
        assert_eq!(
            preferred_read_replica("r3", 50, Some("r1"), &followers),
            Some(3)
        );
    }

    #[test]
    fn the_leader_when_the_client_gives_no_rack_or_none_matches() {
        let followers = [view(2, "r2"), view(3, "r3")];
        assert_eq!(preferred_read_replica("", 50, Some("r1"), &followers), None);
        assert_eq!(
            preferred_read_replica("r9", 50, Some("r1"), &followers),
            None
        );
        // A follower without a rack never matches.
        let no_rack = [FollowerView {
            rack: None,
            ..view(2, "")
        }];
        assert_eq!(preferred_read_replica("r2", 50, Some("r1"), &no_rack), None);
    }

    #[test]
    fn the_leader_in_the_client_rack_wins_over_its_followers() {
        let followers = [view(2, "r1"), view(3, "r1")];
        assert_eq!(
            preferred_read_replica("r1", 50, Some("r1"), &followers),
            None
        );
        // A leader without a rack is not in any client's rack.
        assert_eq!(preferred_read_replica("r1", 50, None, &followers), Some(3));
    }

    #[test]
    fn a_follower_that_cannot_serve_the_offset_is_skipped() {
        let out_of_isr = FollowerView {
            in_isr: false,
            ..view(2, "r2")
        };
        let fenced = FollowerView {
            alive: false,
            ..view(2, "r2")
        };
        let behind = FollowerView {
            log_end_offset: 49,
            ..view(2, "r2")
        };
        let retention_ahead = FollowerView {
            log_start_offset: 51,
            ..view(2, "r2")
        };
        for f in [out_of_isr, fenced, behind, retention_ahead] {
            assert_eq!(
                preferred_read_replica("r2", 50, Some("r1"), std::slice::from_ref(&f)),
                None,
                "{f:?}"
            );
        }
        // Both ends of the range are inclusive: the log end is where the next record goes.
        let exact = FollowerView {
            log_start_offset: 50,
            log_end_offset: 50,
            ..view(2, "r2")
        };
        assert_eq!(
            preferred_read_replica("r2", 50, Some("r1"), &[exact]),
            Some(2)
        );
    }

    #[test]
    fn the_most_caught_up_follower_of_the_rack_is_chosen() {
        let ahead = FollowerView {
            log_end_offset: 120,
            time_since_last_caught_up_ms: 900,
            ..view(2, "r2")
        };
        let recent = FollowerView {
            log_end_offset: 110,
            ..view(4, "r2")
        };
        assert_eq!(
            preferred_read_replica("r2", 50, Some("r1"), &[recent.clone(), ahead]),
            Some(2),
            "largest log end first"
        );
        let stale = FollowerView {
            log_end_offset: 110,
            time_since_last_caught_up_ms: 500,
            ..view(5, "r2")
        };
        assert_eq!(
            preferred_read_replica("r2", 50, Some("r1"), &[stale, recent.clone()]),
            Some(4),
            "then the one caught up most recently"
        );
        let twin = FollowerView {
            broker_id: 3,
            ..recent.clone()
        };
        assert_eq!(
            preferred_read_replica("r2", 50, Some("r1"), &[recent, twin]),
            Some(4),
            "then the largest broker id, as Kafka's comparator"
        );
    }
}
