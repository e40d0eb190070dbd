//! The API keys and version ranges Strata serves: the single source for ApiVersions and for the
//! request decoder's version check.
//!
//! Ranges follow Apache Kafka 4.1's broker. The floors are Kafka 4's (it removed Produce v0-2,
//! Fetch v0-3 and the other pre-2.1 versions, see KIP-896); the ceilings are the newest versions
//! Kafka 4.1 marks stable, where Strata implements what they add. Above them: InitProducerId v6
//! is the unreleased two-phase-commit extension and OffsetCommit/OffsetFetch v10 (topic ids)
//! are not stable in Kafka 4.1 either. The transactional APIs reach the versions of transaction protocol v2
//! (KIP-890 part 2: AddOffsetsToTxn v4, EndTxn v5, TxnOffsetCommit v5), which clients use once
//! `transaction.version` 2 is finalized; AddPartitionsToTxn v4+ is the batched
//! (broker-to-broker) form, v5 adding TRANSACTION_ABORTABLE.

use kafka_protocol::messages::ApiKey;

/// One served API and its inclusive version range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SupportedVersions {
    pub api_key: ApiKey,
    pub min_version: i16,
    pub max_version: i16,
}

const fn served(api_key: ApiKey, min_version: i16, max_version: i16) -> SupportedVersions {
    SupportedVersions {
        api_key,
        min_version,
        max_version,
    }
}

const SUPPORTED: &[SupportedVersions] = &[
    served(ApiKey::Produce, 3, 13),
    served(ApiKey::Fetch, 4, 18),
    served(ApiKey::ListOffsets, 1, 10),
    served(ApiKey::Metadata, 0, 13),
    served(ApiKey::OffsetCommit, 2, 9),
    served(ApiKey::OffsetFetch, 1, 9),
    served(ApiKey::FindCoordinator, 0, 6),
    served(ApiKey::JoinGroup, 0, 9),
    served(ApiKey::Heartbeat, 0, 4),
    served(ApiKey::LeaveGroup, 0, 5),
    served(ApiKey::SyncGroup, 0, 5),
    served(ApiKey::DescribeGroups, 0, 6),
    served(ApiKey::ListGroups, 0, 5),
    // SASL listeners answer these in the connection's authenticator (v0: bare tokens follow
    // the handshake); elsewhere, and after authentication, they are ILLEGAL_SASL_STATE.
    served(ApiKey::SaslHandshake, 0, 1),
    served(ApiKey::ApiVersions, 0, 4),
    served(ApiKey::CreateTopics, 2, 7),
    served(ApiKey::DeleteTopics, 1, 6),
    served(ApiKey::DeleteRecords, 0, 2),
    served(ApiKey::InitProducerId, 0, 5),
    served(ApiKey::OffsetForLeaderEpoch, 2, 4),
    served(ApiKey::AddPartitionsToTxn, 0, 5),
    served(ApiKey::AddOffsetsToTxn, 0, 4),
    served(ApiKey::EndTxn, 0, 5),
    // Broker to broker: a transaction coordinator writes markers to partitions led elsewhere.
    served(ApiKey::WriteTxnMarkers, 1, 1),
    served(ApiKey::TxnOffsetCommit, 0, 5),
    // ACLs (Kafka 4 serves CreateAcls and DeleteAcls from v2 on, KIP-896).
    served(ApiKey::DescribeAcls, 1, 3),
    served(ApiKey::CreateAcls, 2, 3),
    served(ApiKey::DeleteAcls, 2, 3),
    served(ApiKey::DescribeConfigs, 1, 4),
    served(ApiKey::AlterConfigs, 0, 2),
    served(ApiKey::DescribeLogDirs, 1, 4),
    // v1 adds the session lifetime (KIP-368), v2 is flexible.
    served(ApiKey::SaslAuthenticate, 0, 2),
    served(ApiKey::CreatePartitions, 0, 3),
    served(ApiKey::DeleteGroups, 0, 2),
    served(ApiKey::ElectLeaders, 0, 2),
    served(ApiKey::IncrementalAlterConfigs, 0, 1),
    // v1 (Kafka 4.1, KIP-860) adds the guard against a replication factor change.
    served(ApiKey::AlterPartitionReassignments, 0, 1),
    served(ApiKey::ListPartitionReassignments, 0, 0),
    served(ApiKey::OffsetDelete, 0, 0),
    // KIP-546: client quotas are metadata records; any Strata node commits a change.
    served(ApiKey::DescribeClientQuotas, 0, 1),
    served(ApiKey::AlterClientQuotas, 0, 1),
    // KIP-554: SCRAM credentials are metadata records; any Strata node commits a change.
    served(ApiKey::DescribeUserScramCredentials, 0, 0),
    served(ApiKey::AlterUserScramCredentials, 0, 0),
    // Kafka's brokers forward it to the controller; any Strata node asks the Raft leader.
    served(ApiKey::DescribeQuorum, 0, 2),
    // Kafka's brokers forward it to the active controller; any Strata node commits it.
    served(ApiKey::UpdateFeatures, 0, 2),
    served(ApiKey::DescribeCluster, 0, 2),
    served(ApiKey::DescribeProducers, 0, 0),
    served(ApiKey::DescribeTransactions, 0, 0),
    served(ApiKey::ListTransactions, 0, 2),
    served(ApiKey::ConsumerGroupHeartbeat, 0, 1),
    served(ApiKey::ConsumerGroupDescribe, 0, 1),
    // v0 was ListClientMetricsResources (KIP-714); v1 lists every config resource (KIP-1142).
    served(ApiKey::ListConfigResources, 0, 1),
    served(ApiKey::DescribeTopicPartitions, 0, 0),
];

/// Every API Strata serves, in API-key order.
pub fn supported_versions() -> &'static [SupportedVersions] {
    SUPPORTED
}

/// The served range of `api_key`, or `None` when Strata does not serve that API at all.
pub fn supported_range(api_key: ApiKey) -> Option<SupportedVersions> {
    SUPPORTED.iter().copied().find(|v| v.api_key == api_key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_served_range_is_decodable_by_the_codec() {
        for v in supported_versions() {
            let codec = v.api_key.valid_versions();
            assert!(v.min_version <= v.max_version, "{:?}", v.api_key);
            assert!(
                codec.min <= v.min_version && v.max_version <= codec.max,
                "{:?} serves {}..={} but the codec knows {}..={}",
                v.api_key,
                v.min_version,
                v.max_version,
                codec.min,
                codec.max
            );
        }
    }

    /// docs/protocol.md lists what is served next to Kafka 4.1; it must say what this table says.
    #[test]
    fn the_protocol_document_lists_every_served_range() {
        let doc = include_str!("../../../docs/protocol.md");
        let documented: Vec<(i16, String)> = doc
            .lines()
            .filter_map(|line| {
                let cells: Vec<&str> = line.split('|').map(str::trim).collect();
                let key = cells.get(1)?.parse::<i16>().ok()?;
                Some((key, cells.get(3)?.to_string()))
            })
            .filter(|(_, served)| served != "—")
            .collect();
        let served: Vec<(i16, String)> = supported_versions()
            .iter()
            .map(|v| {
                (
                    v.api_key as i16,
                    format!("{}-{}", v.min_version, v.max_version),
                )
            })
            .collect();
        assert_eq!(documented, served, "docs/protocol.md is out of date");
    }

    #[test]
    fn table_is_in_api_key_order_without_duplicates() {
        let keys: Vec<i16> = supported_versions()
            .iter()
            .map(|v| v.api_key as i16)
            .collect();
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(keys, sorted);
    }
}
