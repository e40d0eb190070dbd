//! Client quotas (KIP-546): the entities quotas are set for and the keys Kafka accepts for
//! them. The rules that validate and match them are the controller's
//! ([`crate::controller::ClientQuotaControl`]); the image holds the quotas set.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Entity type of a user principal's quotas (the principal's name without `User:`).
pub const USER: &str = "user";
/// Entity type of a client id's quotas.
pub const CLIENT_ID: &str = "client-id";
/// Entity type of a client address's quotas (connection creation rate only).
pub const IP: &str = "ip";

/// A client quota entity (Kafka's `ClientQuotaEntity`): entity type to name, where `None` is
/// the type's default entity (`<default>` in `kafka-configs`). Valid ones are `user`,
/// `client-id`, both, or `ip` alone.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct QuotaEntity(pub BTreeMap<String, Option<String>>);

impl QuotaEntity {
    pub fn new<'a>(parts: impl IntoIterator<Item = (&'a str, Option<&'a str>)>) -> QuotaEntity {
        QuotaEntity(
            parts
                .into_iter()
                .map(|(kind, name)| (kind.to_string(), name.map(str::to_string)))
                .collect(),
        )
    }
}

impl std::fmt::Display for QuotaEntity {
    /// As Kafka prints a `ClientQuotaEntity`, e.g. `ClientQuotaEntity(entries={user=alice})`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientQuotaEntity(entries={")?;
        for (i, (kind, name)) in self.0.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}{kind}={}", name.as_deref().unwrap_or("null"))?;
        }
        f.write_str("})")
    }
}

/// The quotas of one entity: key to value.
pub type Quotas = BTreeMap<String, f64>;

/// How a quota's value must look: Kafka's `QuotaConfig` declares the byte rates LONG, the
/// connection rate INT and the others DOUBLE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaValueKind {
    Long,
    Int,
    Double,
}

/// Kafka's `QuotaConfig.userAndClientQuotaConfigs()`: the keys of user and client-id
/// entities.
pub const USER_AND_CLIENT_KEYS: &[(&str, QuotaValueKind)] = &[
    ("producer_byte_rate", QuotaValueKind::Long),
    ("consumer_byte_rate", QuotaValueKind::Long),
    ("request_percentage", QuotaValueKind::Double),
    ("controller_mutation_rate", QuotaValueKind::Double),
];

/// Kafka's `QuotaConfig.ipConfigs()`: the keys of ip entities.
pub const IP_KEYS: &[(&str, QuotaValueKind)] = &[("connection_creation_rate", QuotaValueKind::Int)];
