//! Feature versions (KIP-584, KIP-1022): cluster-wide levels that switch protocol behaviour on,
//! finalized in the metadata log like every other change.
//!
//! Each feature has a range of levels this software supports ([`FEATURES`]). A level is
//! *finalized* by a [`MetadataRecord::FeatureLevel`] record (level 0 removes the feature), so it
//! is durable and the same on every node; a new cluster starts at [`bootstrap_records`]
//! (Kafka's `kafka-storage format` with its defaults). UpdateFeatures changes levels through
//! [`update_features`], with the checks and error messages of Kafka's
//! `FeatureControlManager`: the level must be supported by this node and by every registered
//! broker (each broker's registration carries its supported ranges), a downgrade needs an
//! explicit downgrade type, and `metadata.version` refuses a safe downgrade across a level
//! that changed the metadata format.
//!
//! What the levels switch on in Strata: `transaction.version` 2 is transactions v2 (KIP-890
//! part 2: clients bump the producer epoch on every transaction end and let the partition
//! leaders add partitions), `group.version` 1 is the consumer group protocol (KIP-848).
//! `metadata.version` is reported and validated as Kafka does, and gates nothing else here.
//! `kraft.version` 1 (dynamic quorum membership, KIP-853), eligible leader replicas
//! (KIP-966), share groups (KIP-932) and streams groups (KIP-1071) are not implemented:
//! their supported range is 0 to 0, so, as Kafka does for such a feature, ApiVersions leaves
//! them out and UpdateFeatures refuses any other level.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::image::MetadataImage;
use crate::records::MetadataRecord;

pub const METADATA_VERSION: &str = "metadata.version";
pub const KRAFT_VERSION: &str = "kraft.version";
pub const TRANSACTION_VERSION: &str = "transaction.version";
pub const GROUP_VERSION: &str = "group.version";
pub const ELIGIBLE_LEADER_REPLICAS_VERSION: &str = "eligible.leader.replicas.version";
pub const SHARE_VERSION: &str = "share.version";
pub const STREAMS_VERSION: &str = "streams.version";

/// `metadata.version` 3.3-IV3: the lowest level Kafka 4 supports (`MINIMUM_VERSION`).
pub const METADATA_VERSION_MINIMUM: i16 = 7;
/// `metadata.version` 4.1-IV1: Kafka 4.1's `LATEST_PRODUCTION`.
pub const METADATA_VERSION_LATEST: i16 = 27;

/// An inclusive range of feature levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionRange {
    pub min: i16,
    pub max: i16,
}

impl VersionRange {
    /// A feature this node does not know (Kafka's `QuorumFeatures.DISABLED`).
    pub const DISABLED: VersionRange = VersionRange { min: 0, max: 0 };

    pub fn contains(&self, level: i16) -> bool {
        self.min <= level && level <= self.max
    }
}

impl fmt::Display for VersionRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.min == self.max {
            write!(f, "{}", self.min)
        } else {
            write!(f, "{}-{}", self.min, self.max)
        }
    }
}

/// One feature this software knows.
#[derive(Debug, Clone, Copy)]
pub struct Feature {
    pub name: &'static str,
    /// The levels this node can serve.
    pub supported: VersionRange,
    /// The level a new cluster starts at (the latest production level).
    pub bootstrap_level: i16,
    /// The level a metadata log written before feature versions existed is finalized at: what
    /// that software served (the consumer group protocol, transactions v1).
    pub legacy_level: i16,
}

/// Every feature Strata knows, in name order.
pub const FEATURES: &[Feature] = &[
    Feature {
        name: ELIGIBLE_LEADER_REPLICAS_VERSION,
        supported: VersionRange::DISABLED,
        bootstrap_level: 0,
        legacy_level: 0,
    },
    Feature {
        name: GROUP_VERSION,
        supported: VersionRange { min: 0, max: 1 },
        bootstrap_level: 1,
        legacy_level: 1,
    },
    Feature {
        name: KRAFT_VERSION,
        supported: VersionRange::DISABLED,
        bootstrap_level: 0,
        legacy_level: 0,
    },
    Feature {
        name: METADATA_VERSION,
        supported: VersionRange {
            min: METADATA_VERSION_MINIMUM,
            max: METADATA_VERSION_LATEST,
        },
        bootstrap_level: METADATA_VERSION_LATEST,
        legacy_level: METADATA_VERSION_MINIMUM,
    },
    Feature {
        name: SHARE_VERSION,
        supported: VersionRange::DISABLED,
        bootstrap_level: 0,
        legacy_level: 0,
    },
    Feature {
        name: STREAMS_VERSION,
        supported: VersionRange::DISABLED,
        bootstrap_level: 0,
        legacy_level: 0,
    },
    Feature {
        name: TRANSACTION_VERSION,
        supported: VersionRange { min: 0, max: 2 },
        bootstrap_level: 2,
        legacy_level: 0,
    },
];

/// `metadata.version` levels 7..=27 whose introduction changed the metadata format (Kafka's
/// `MetadataVersion.didMetadataChange`): a safe downgrade may not cross one of them.
const METADATA_CHANGED: [bool; (METADATA_VERSION_LATEST - METADATA_VERSION_MINIMUM + 1) as usize] = [
    true, true, false, false, true, false, true, true, // 7 (3.3-IV3) ..= 14 (3.6-IV2)
    true, false, true, false, false, false, false, // 15 (3.7-IV0) ..= 21 (3.9-IV0)
    false, true, false, false, false, false, // 22 (4.0-IV0) ..= 27 (4.1-IV1)
];

/// The ranges of levels this node supports, by feature name (those at 0 to 0 included): what
/// its broker registration carries.
pub fn supported() -> BTreeMap<String, VersionRange> {
    FEATURES
        .iter()
        .map(|f| (f.name.to_string(), f.supported))
        .collect()
}

/// The records that finalize the features of a cluster without any: a new cluster starts at
/// the latest levels (`new_cluster`); a metadata log written before feature versions existed
/// gets the levels that software served, to be upgraded with UpdateFeatures.
pub fn bootstrap_records(new_cluster: bool) -> Vec<MetadataRecord> {
    FEATURES
        .iter()
        .map(|f| {
            if new_cluster {
                f.bootstrap_level
            } else {
                f.legacy_level
            }
        })
        .zip(FEATURES)
        .filter(|(level, _)| *level > 0)
        .map(|(level, f)| MetadataRecord::FeatureLevel {
            name: f.name.to_string(),
            level,
        })
        .collect()
}

/// How UpdateFeatures may move a level (Kafka's `FeatureUpdate.UpgradeType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpgradeType {
    Upgrade,
    SafeDowngrade,
    UnsafeDowngrade,
    /// A code Kafka does not define: refused.
    Unknown,
}

impl UpgradeType {
    /// The v1+ `upgrade_type` field's code.
    pub fn from_code(code: i8) -> Self {
        match code {
            1 => UpgradeType::Upgrade,
            2 => UpgradeType::SafeDowngrade,
            3 => UpgradeType::UnsafeDowngrade,
            _ => UpgradeType::Unknown,
        }
    }
}

/// One feature of an UpdateFeatures request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureUpdate {
    pub name: String,
    pub level: i16,
    pub upgrade_type: UpgradeType,
}

/// Why UpdateFeatures is refused; every case is Kafka's INVALID_UPDATE_VERSION (95), with its
/// message, except a malformed request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeatureError {
    #[error("{0}")]
    InvalidUpdateVersion(String),
    /// INVALID_REQUEST (42): the same feature twice.
    #[error("{0}")]
    InvalidRequest(String),
}

impl FeatureError {
    pub fn kafka_error_code(&self) -> i16 {
        match self {
            FeatureError::InvalidUpdateVersion(_) => 95,
            FeatureError::InvalidRequest(_) => 42,
        }
    }
}

fn invalid_update(name: &str, level: i16, why: impl fmt::Display) -> FeatureError {
    FeatureError::InvalidUpdateVersion(format!(
        "Invalid update version {level} for feature {name}. {why}"
    ))
}

fn invalid_metadata_version(level: i16, why: impl fmt::Display) -> FeatureError {
    FeatureError::InvalidUpdateVersion(format!("Invalid metadata.version {level}. {why}"))
}

/// Kafka's `QuorumFeatures.reasonNotSupported`.
fn not_supported(level: i16, what: &str, range: VersionRange) -> Option<String> {
    if range.contains(level) {
        None
    } else if range.max == 0 {
        Some(format!("{what} does not support this feature."))
    } else {
        Some(format!("{what} only supports versions {range}"))
    }
}

/// The records of an UpdateFeatures request, all or nothing (Kafka 4's
/// `FeatureControlManager.updateFeatures`): the first refused update fails the whole request.
/// `node_id` names this node in messages; `local` is what it supports. Records are returned
/// for `validate_only` too: the caller does not commit them.
pub fn update_features(
    image: &MetadataImage,
    node_id: i32,
    local: &BTreeMap<String, VersionRange>,
    updates: &[FeatureUpdate],
) -> Result<Vec<MetadataRecord>, FeatureError> {
    let mut seen = std::collections::BTreeSet::new();
    for u in updates {
        if !seen.insert(u.name.as_str()) {
            return Err(FeatureError::InvalidRequest(format!(
                "Feature {} appears more than once in the request.",
                u.name
            )));
        }
    }
    let mut records = Vec::with_capacity(updates.len());
    for u in updates {
        let (name, level) = (u.name.as_str(), u.level);
        if u.upgrade_type == UpgradeType::Unknown {
            return Err(invalid_update(
                name,
                level,
                "The controller does not support the given upgrade type.",
            ));
        }
        let current = image.feature_level(name);
        if level < 0 {
            return Err(invalid_update(
                name,
                level,
                "A feature version cannot be less than 0.",
            ));
        }
        let local_range = local.get(name).copied().unwrap_or(VersionRange::DISABLED);
        if let Some(why) = not_supported(level, &format!("Local controller {node_id}"), local_range)
        {
            return Err(invalid_update(name, level, why));
        }
        for broker in image.brokers() {
            let range = broker
                .supported_features
                .get(name)
                .copied()
                .unwrap_or(VersionRange::DISABLED);
            if let Some(why) = not_supported(level, &format!("broker{}", broker.broker_id), range) {
                return Err(invalid_update(name, level, why));
            }
        }
        if level < current && u.upgrade_type == UpgradeType::Upgrade {
            return Err(invalid_update(
                name,
                level,
                "Can't downgrade the version of this feature without setting the upgrade type to either safe or unsafe downgrade.",
            ));
        }
        if level > current && u.upgrade_type != UpgradeType::Upgrade {
            return Err(invalid_update(
                name,
                level,
                "Can't downgrade to a newer version.",
            ));
        }
        // Kafka's `Feature.validateVersion` checks a feature's dependencies here; none of
        // Strata's has any beyond a metadata.version that stores levels, which every
        // supported metadata.version does.
        if name == METADATA_VERSION {
            check_metadata_version(current, level, u.upgrade_type)?;
        }
        records.push(MetadataRecord::FeatureLevel {
            name: name.to_string(),
            level,
        });
    }
    Ok(records)
}

/// Kafka's `FeatureControlManager.updateMetadataVersion`.
fn check_metadata_version(
    current: i16,
    level: i16,
    upgrade_type: UpgradeType,
) -> Result<(), FeatureError> {
    if !(METADATA_VERSION_MINIMUM..=METADATA_VERSION_LATEST).contains(&level) {
        return Err(invalid_metadata_version(level, "Unknown metadata.version."));
    }
    if level < current {
        let changed = (level + 1..=current).any(|l| {
            METADATA_CHANGED
                .get((l - METADATA_VERSION_MINIMUM) as usize)
                .copied()
                .unwrap_or(true)
        });
        if !changed {
            tracing::warn!(from = current, to = level, "downgrading metadata.version");
        } else if upgrade_type == UpgradeType::UnsafeDowngrade {
            return Err(invalid_metadata_version(
                level,
                "Unsafe metadata downgrade is not supported in this version.",
            ));
        } else {
            return Err(invalid_metadata_version(
                level,
                "Refusing to perform the requested downgrade because it might delete metadata information.",
            ));
        }
    }
    Ok(())
}

/// Why a broker may not register: it cannot serve a level the cluster has finalized (Kafka's
/// `ClusterControlManager.registerBroker`, UNSUPPORTED_VERSION). Registrations without any
/// ranges come from software older than feature versions and are taken as they are.
pub fn check_registration(
    image: &MetadataImage,
    broker_id: i32,
    supported: &BTreeMap<String, VersionRange>,
) -> Result<(), String> {
    if supported.is_empty() {
        return Ok(());
    }
    for (name, level) in image.finalized_features() {
        let range = supported
            .get(name)
            .copied()
            .unwrap_or(VersionRange::DISABLED);
        if !range.contains(*level) {
            return Err(format!(
                "Unable to register broker {broker_id} because it does not support finalized version {level} of {name}. The broker supports versions {range}"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::{BrokerRegistrationRequest, Controller};
    use crate::NO_UNCLEAN_ELECTION;

    fn new_cluster() -> MetadataImage {
        MetadataImage::default().apply(&bootstrap_records(true))
    }

    fn update(name: &str, level: i16, upgrade_type: UpgradeType) -> FeatureUpdate {
        FeatureUpdate {
            name: name.into(),
            level,
            upgrade_type,
        }
    }

    fn apply(image: &MetadataImage, updates: &[FeatureUpdate]) -> Result<MetadataImage, String> {
        update_features(image, 1, &supported(), updates)
            .map(|records| image.apply(&records))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_new_cluster_starts_at_the_latest_levels_and_an_old_log_at_what_it_served() {
        let image = new_cluster();
        assert_eq!(image.feature_level(METADATA_VERSION), 27);
        assert_eq!(image.feature_level(TRANSACTION_VERSION), 2);
        assert_eq!(image.feature_level(GROUP_VERSION), 1);
        assert_eq!(image.feature_level(KRAFT_VERSION), 0);
        assert!(
            !image.finalized_features().contains_key(KRAFT_VERSION),
            "level 0 is not finalized"
        );
        let legacy = MetadataImage::default().apply(&bootstrap_records(false));
        assert_eq!(legacy.feature_level(METADATA_VERSION), 7);
        assert_eq!(legacy.feature_level(TRANSACTION_VERSION), 0);
        assert_eq!(legacy.feature_level(GROUP_VERSION), 1);
    }

    #[test]
    fn downgrades_need_a_downgrade_type_and_upgrades_need_support() {
        let image = new_cluster();
        let err = apply(
            &image,
            &[update(TRANSACTION_VERSION, 0, UpgradeType::Upgrade)],
        )
        .unwrap_err();
        assert!(err.contains("without setting the upgrade type"), "{err}");
        let down = apply(
            &image,
            &[update(TRANSACTION_VERSION, 0, UpgradeType::SafeDowngrade)],
        )
        .unwrap();
        assert_eq!(down.feature_level(TRANSACTION_VERSION), 0);
        assert!(!down.finalized_features().contains_key(TRANSACTION_VERSION));
        let err = apply(
            &down,
            &[update(TRANSACTION_VERSION, 1, UpgradeType::SafeDowngrade)],
        )
        .unwrap_err();
        assert!(err.contains("Can't downgrade to a newer version"), "{err}");
        let err = apply(
            &down,
            &[update(TRANSACTION_VERSION, 3, UpgradeType::Upgrade)],
        )
        .unwrap_err();
        assert_eq!(
            err,
            "Invalid update version 3 for feature transaction.version. Local controller 1 only supports versions 0-2"
        );
        let err = apply(&down, &[update(KRAFT_VERSION, 1, UpgradeType::Upgrade)]).unwrap_err();
        assert!(err.ends_with("does not support this feature."), "{err}");
        let err = apply(&down, &[update("no.such.feature", 1, UpgradeType::Upgrade)]).unwrap_err();
        assert!(err.ends_with("does not support this feature."), "{err}");
        let err = apply(&down, &[update(GROUP_VERSION, 1, UpgradeType::Unknown)]).unwrap_err();
        assert!(err.contains("upgrade type"), "{err}");
        let err = apply(
            &down,
            &[update(GROUP_VERSION, -1, UpgradeType::SafeDowngrade)],
        )
        .unwrap_err();
        assert!(err.contains("cannot be less than 0"), "{err}");
    }

    #[test]
    fn a_request_is_all_or_nothing() {
        let image = new_cluster();
        let result = update_features(
            &image,
            1,
            &supported(),
            &[
                update(GROUP_VERSION, 0, UpgradeType::SafeDowngrade),
                update(TRANSACTION_VERSION, 9, UpgradeType::Upgrade),
            ],
        );
        assert!(matches!(result, Err(FeatureError::InvalidUpdateVersion(_))));
        let dup = update_features(
            &image,
            1,
            &supported(),
            &[
                update(GROUP_VERSION, 1, UpgradeType::Upgrade),
                update(GROUP_VERSION, 1, UpgradeType::Upgrade),
            ],
        );
        assert_eq!(dup.unwrap_err().kafka_error_code(), 42);
    }

    #[test]
    fn metadata_version_refuses_downgrades_across_format_changes() {
        let image = new_cluster();
        // 27 -> 24: none of 25..=27 changed the metadata format.
        let safe = apply(
            &image,
            &[update(METADATA_VERSION, 24, UpgradeType::SafeDowngrade)],
        )
        .unwrap();
        assert_eq!(safe.feature_level(METADATA_VERSION), 24);
        // 24 -> 22 crosses 23 (4.0-IV1), which did.
        for t in [UpgradeType::SafeDowngrade, UpgradeType::UnsafeDowngrade] {
            let err = apply(&safe, &[update(METADATA_VERSION, 22, t)]).unwrap_err();
            assert!(err.starts_with("Invalid metadata.version 22."), "{err}");
        }
        let err = apply(
            &safe,
            &[update(METADATA_VERSION, 6, UpgradeType::SafeDowngrade)],
        )
        .unwrap_err();
        assert!(err.contains("only supports versions 7-27"), "{err}");
        assert_eq!(
            apply(&safe, &[update(METADATA_VERSION, 27, UpgradeType::Upgrade)])
                .unwrap()
                .feature_level(METADATA_VERSION),
            27
        );
    }

    #[test]
    fn every_registered_broker_must_support_the_level() {
        let controller = Controller::new(1);
        let mut image = new_cluster();
        let mut old = supported();
        old.insert(
            TRANSACTION_VERSION.to_string(),
            VersionRange { min: 0, max: 1 },
        );
        for (broker_id, features) in [(1, supported()), (2, old)] {
            let request = BrokerRegistrationRequest {
                broker_id,
                incarnation_id: uuid::Uuid::new_v4(),
                host: "localhost".into(),
                port: 9092,
                rack: None,
                supported_features: features,
                listeners: Vec::new(),
            };
            if broker_id == 2 {
                // It cannot serve the finalized transaction.version 2: refused.
                let err = check_registration(&image, 2, &request.supported_features).unwrap_err();
                assert!(err.contains("transaction.version"), "{err}");
                image = apply(
                    &image,
                    &[update(TRANSACTION_VERSION, 1, UpgradeType::SafeDowngrade)],
                )
                .unwrap();
            }
            check_registration(&image, broker_id, &request.supported_features).unwrap();
            let (_, records) = controller.register_broker(&image, &request, NO_UNCLEAN_ELECTION);
            image = image.apply(&records);
        }
        let err = apply(
            &image,
            &[update(TRANSACTION_VERSION, 2, UpgradeType::Upgrade)],
        )
        .unwrap_err();
        assert_eq!(
            err,
            "Invalid update version 2 for feature transaction.version. broker2 only supports versions 0-1"
        );
        // The levels and the registrations survive a snapshot of the image.
        let json = serde_json::to_string(&image).unwrap();
        let back: MetadataImage = serde_json::from_str(&json).unwrap();
        assert_eq!(back.finalized_features(), image.finalized_features());
        assert_eq!(
            back.broker(2).unwrap().supported_features[TRANSACTION_VERSION],
            VersionRange { min: 0, max: 1 }
        );
    }
}
