//! Brokers (Kafka's `ClusterControlManager`): registration, fencing and unfencing, and where
//! new replicas go (rack-aware placement over the unfenced brokers).
//!
//! Not here: the partition changes a broker's fencing or unfencing causes. Those are
//! [`PartitionControl`](super::PartitionControl)'s; the [`Controller`](super::Controller)
//! puts both in one batch.

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

use crate::image::MetadataImage;
use crate::records::MetadataRecord;

/// What a broker tells the controller when it registers (Kafka's BrokerRegistrationRequest).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BrokerRegistrationRequest {
    pub broker_id: i32,
    /// New on every start of the broker process, so that a retried registration of the same
    /// process is recognised and a restarted process gets a new epoch.
    pub incarnation_id: Uuid,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
    /// The feature levels the broker can serve (KIP-584); absent from software older than
    /// feature versions.
    #[serde(default)]
    pub supported_features: BTreeMap<String, crate::features::VersionRange>,
    /// Every listener's advertised endpoint; `host`/`port` are the inter-broker listener's.
    /// Absent from software older than named listeners.
    #[serde(default)]
    pub listeners: Vec<crate::image::BrokerEndpoint>,
}

/// Brokers' registrations and sessions as records. Each method returns the broker's own
/// record, or `None` when the request changes nothing.
#[derive(Debug, Default)]
pub struct BrokerControl;

impl BrokerControl {
    /// The record registering a broker. A new registration (a restarted process) gets a new
    /// epoch and starts fenced; a retry from the same process (the same incarnation) changes
    /// nothing. Returns the broker epoch.
    pub fn register(
        &self,
        image: &MetadataImage,
        request: &BrokerRegistrationRequest,
    ) -> (i64, Option<MetadataRecord>) {
        if let Some(existing) = image.broker(request.broker_id) {
            if existing.incarnation_id == request.incarnation_id {
                return (existing.broker_epoch, None);
            }
        }
        let broker_epoch = image.offset as i64 + 1;
        let record = MetadataRecord::RegisterBroker {
            broker_id: request.broker_id,
            broker_epoch,
            incarnation_id: request.incarnation_id,
            host: request.host.clone(),
            port: request.port,
            rack: request.rack.clone(),
            supported_features: request.supported_features.clone(),
            listeners: request.listeners.clone(),
        };
        (broker_epoch, Some(record))
    }

    /// The record fencing a broker (its session expired, or it is shutting down); `None` when
    /// it is already fenced or `broker_epoch` is not its current registration.
    pub fn fence(
        &self,
        image: &MetadataImage,
        broker_id: i32,
        broker_epoch: i64,
    ) -> Option<MetadataRecord> {
        Self::is_unfenced_in_epoch(image, broker_id, broker_epoch).then_some(
            MetadataRecord::FenceBroker {
                broker_id,
                broker_epoch,
            },
        )
    }

    /// The record unfencing a broker that caught up with the metadata log; `None` when it is
    /// not fenced in `broker_epoch`.
    pub fn unfence(
        &self,
        image: &MetadataImage,
        broker_id: i32,
        broker_epoch: i64,
    ) -> Option<MetadataRecord> {
        image
            .broker(broker_id)
            .is_some_and(|b| b.broker_epoch == broker_epoch && b.fenced)
            .then_some(MetadataRecord::UnfenceBroker {
                broker_id,
                broker_epoch,
            })
    }

    /// Whether `broker_id` is registered in `broker_epoch` and unfenced: a request carrying
    /// any other epoch comes from a stale process.
    pub(super) fn is_unfenced_in_epoch(
        image: &MetadataImage,
        broker_id: i32,
        broker_epoch: i64,
    ) -> bool {
        image
            .broker(broker_id)
            .is_some_and(|b| b.broker_epoch == broker_epoch && !b.fenced)
    }

    /// The brokers that take new replicas: the unfenced registered ones.
    pub(super) fn usable_brokers(image: &MetadataImage) -> BTreeSet<i32> {
        image.live_brokers()
    }

    /// Replica sets for partitions `first..first + count` of a topic (Kafka's rack-aware
    /// assignment): live brokers ordered so that consecutive ones are in different racks,
    /// replicas of a partition taken consecutively from that order, each partition starting
    /// one further on, from a start derived from the topic id so that topics spread out.
    pub(super) fn place(
        image: &MetadataImage,
        topic_id: Uuid,
        first: i32,
        count: i32,
        replication_factor: usize,
    ) -> Vec<Vec<i32>> {
        let order = rack_alternated(image);
        assert!(replication_factor <= order.len() && !order.is_empty());
        let start = (topic_id.as_u128() % order.len() as u128) as usize;
        (first..first + count)
            .map(|p| {
                (0..replication_factor)
                    .map(|r| order[(start + p as usize + r) % order.len()])
                    .collect()
            })
            .collect()
    }
}

/// Live brokers ordered so that consecutive ones are in different racks where possible
/// (Kafka's `getRackAlternatedBrokerList`): racks in name order, brokers without a rack as
/// one more rack, then one broker of each rack in turn.
fn rack_alternated(image: &MetadataImage) -> Vec<i32> {
    let mut by_rack: BTreeMap<Option<&str>, Vec<i32>> = BTreeMap::new();
    for b in image.brokers().filter(|b| !b.fenced) {
        by_rack
            .entry(b.rack.as_deref())
            .or_default()
            .push(b.broker_id);
    }
    let total: usize = by_rack.values().map(Vec::len).sum();
    let mut order = Vec::with_capacity(total);
    for round in 0.. {
        if order.len() == total {
            break;
        }
        order.extend(by_rack.values().filter_map(|ids| ids.get(round).copied()));
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::test_support::{cluster, spec};
    use crate::controller::{Controller, NO_UNCLEAN_ELECTION};

    #[test]
    fn replicas_spread_over_live_brokers_and_racks() {
        let image = cluster(&[1, 2, 3, 4]);
        let (_, records) = Controller::new(1)
            .create_topic(&image, &spec("t", 8), (1, 1))
            .unwrap();
        let image = image.apply(&records);
        let leaders: Vec<i32> = image
            .topic("t")
            .unwrap()
            .partitions
            .iter()
            .map(|p| p.leader)
            .collect();
        for b in 1..=4 {
            assert_eq!(
                leaders.iter().filter(|l| **l == b).count(),
                2,
                "{leaders:?}"
            );
        }
        // Consecutive brokers of the placement order alternate racks.
        let order = rack_alternated(&image);
        assert!(order.windows(2).all(|w| w[0] % 2 != w[1] % 2), "{order:?}");
        // A fenced broker takes no new replicas.
        let epoch = image.broker(2).unwrap().broker_epoch;
        let image =
            image.apply(&Controller::new(1).fence_broker(&image, 2, epoch, NO_UNCLEAN_ELECTION));
        let (_, records) = Controller::new(1)
            .create_topic(&image, &spec("u", 6), (1, 1))
            .unwrap();
        let image = image.apply(&records);
        assert!(image
            .topic("u")
            .unwrap()
            .partitions
            .iter()
            .all(|p| p.replicas != vec![2]));
    }

    #[test]
    fn fencing_takes_leadership_away_and_unfencing_gives_it_back() {
        let controller = Controller::new(1);
        let image = cluster(&[1, 2]);
        let (_, records) = controller
            .create_topic(&image, &spec("t", 2), (1, 1))
            .unwrap();
        let image = image.apply(&records);
        let on = |image: &MetadataImage, b: i32| -> Vec<crate::PartitionImage> {
            image
                .topic("t")
                .unwrap()
                .partitions
                .iter()
                .filter(|p| p.replicas == vec![b])
                .cloned()
                .collect()
        };
        let before = on(&image, 2);
        assert_eq!(before.len(), 1);
        let epoch = image.broker(2).unwrap().broker_epoch;
        // A stale epoch changes nothing.
        assert!(controller
            .fence_broker(&image, 2, epoch - 1, NO_UNCLEAN_ELECTION)
            .is_empty());
        let image = image.apply(&controller.fence_broker(&image, 2, epoch, NO_UNCLEAN_ELECTION));
        assert!(image.broker(2).unwrap().fenced);
        let fenced = on(&image, 2);
        assert_eq!(fenced[0].leader, crate::partition_change::NO_LEADER);
        assert_eq!(fenced[0].isr, vec![2], "the last ISR member stays");
        assert!(fenced[0].leader_epoch > before[0].leader_epoch);
        assert!(controller
            .fence_broker(&image, 2, epoch, NO_UNCLEAN_ELECTION)
            .is_empty());
        let image = image.apply(&controller.unfence_broker(&image, 2, epoch, NO_UNCLEAN_ELECTION));
        let back = on(&image, 2);
        assert_eq!(back[0].leader, 2);
        assert!(back[0].leader_epoch > fenced[0].leader_epoch);
        assert_eq!(image.live_brokers(), BTreeSet::from([1, 2]));
    }

    #[test]
    fn a_new_incarnation_is_fenced_and_a_retry_is_not() {
        let controller = Controller::new(1);
        let image = cluster(&[1, 2]);
        let (_, records) = controller
            .create_topic(&image, &spec("t", 2), (1, 1))
            .unwrap();
        let image = image.apply(&records);
        let old = image.broker(2).unwrap().clone();
        let retry = BrokerRegistrationRequest {
            broker_id: 2,
            incarnation_id: old.incarnation_id,
            host: old.host.clone(),
            port: old.port,
            rack: old.rack.clone(),
            supported_features: old.supported_features.clone(),
            listeners: old.listeners.clone(),
        };
        assert_eq!(
            controller.register_broker(&image, &retry, NO_UNCLEAN_ELECTION),
            (old.broker_epoch, vec![])
        );
        let restarted = BrokerRegistrationRequest {
            incarnation_id: Uuid::new_v4(),
            ..retry
        };
        let (epoch, records) = controller.register_broker(&image, &restarted, NO_UNCLEAN_ELECTION);
        assert!(epoch > old.broker_epoch);
        let image = image.apply(&records);
        let b = image.broker(2).unwrap();
        assert!(b.fenced && b.broker_epoch == epoch);
        let led_by_2 = image
            .topic("t")
            .unwrap()
            .partitions
            .iter()
            .filter(|p| p.leader == 2)
            .count();
        assert_eq!(led_by_2, 0);
        // The image survives a snapshot round trip.
        let json = serde_json::to_string(&image).unwrap();
        let back: MetadataImage = serde_json::from_str(&json).unwrap();
        assert_eq!(back, image);
    }
}
