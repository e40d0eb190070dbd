//! Client quotas (Kafka's `ClientQuotaControlManager`): AlterClientQuotas as records and
//! DescribeClientQuotas' filter.
//!
//! Kafka's rules: an entity is `user`, `client-id`, both, or `ip` alone (an ip name must be an
//! address; Kafka also resolves host names, which a controller here does not do); an empty name
//! or an unknown type is INVALID_REQUEST; keys are those of the entity's kind
//! ([`USER_AND_CLIENT_KEYS`], [`IP_KEYS`]), values above 0 and whole numbers for the integral
//! keys. A key named twice for one entity, or an entity named twice, is INVALID_REQUEST for that
//! entity. Entities are independent: one's error does not stop another's change, and an entity
//! with an error changes nothing (Kafka writes the valid keys of an entity whose other key is
//! refused; here the refusal is the whole answer for it). Only changed values become records.

use std::collections::{BTreeMap, BTreeSet};

use super::ControllerError;
use crate::client_quota::{
    QuotaEntity, QuotaValueKind, Quotas, CLIENT_ID, IP, IP_KEYS, USER, USER_AND_CLIENT_KEYS,
};
use crate::image::MetadataImage;
use crate::records::MetadataRecord;

/// One entity's changes in AlterClientQuotas: key to new value, `None` to remove it.
#[derive(Debug, Clone, PartialEq)]
pub struct QuotaAlteration {
    pub entity: QuotaEntity,
    pub ops: Vec<(String, Option<f64>)>,
}

/// The outcome of AlterClientQuotas per entity, in the order first named.
pub type QuotaResults = Vec<(QuotaEntity, Result<(), ControllerError>)>;

/// How a DescribeClientQuotas filter component matches an entity's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameMatch {
    /// MATCH_TYPE_EXACT: this name.
    Exact(String),
    /// MATCH_TYPE_DEFAULT: the type's default entity.
    Default,
    /// MATCH_TYPE_SPECIFIED: any entity with this type, default or named.
    Any,
}

/// Client quota changes as records, and the describe filter.
#[derive(Debug, Default)]
pub struct ClientQuotaControl;

impl ClientQuotaControl {
    /// The outcome per entity and the records of the accepted changes.
    pub fn alter(
        &self,
        image: &MetadataImage,
        alterations: &[QuotaAlteration],
    ) -> (QuotaResults, Vec<MetadataRecord>) {
        let mut named: BTreeMap<&QuotaEntity, usize> = BTreeMap::new();
        for a in alterations {
            *named.entry(&a.entity).or_default() += 1;
        }
        let mut results = QuotaResults::new();
        let mut records = Vec::new();
        let mut answered = BTreeSet::new();
        for a in alterations {
            if !answered.insert(&a.entity) {
                continue;
            }
            let outcome = if named[&a.entity] > 1 {
                Err(ControllerError::InvalidRequest(format!(
                    "Ignoring duplicate entity {}",
                    a.entity
                )))
            } else {
                alter_entity(image.client_quotas(&a.entity), a).map(|mut changes| {
                    records.append(&mut changes);
                })
            };
            results.push((a.entity.clone(), outcome));
        }
        (results, records)
    }

    /// The entities with quotas that `filter` matches (each component names a type and how
    /// its name must match); `strict` leaves out entities with types the filter does not name.
    pub fn describe<'i>(
        &self,
        image: &'i MetadataImage,
        filter: &[(String, NameMatch)],
        strict: bool,
    ) -> Result<Vec<(&'i QuotaEntity, &'i Quotas)>, ControllerError> {
        let mut types = BTreeSet::new();
        for (kind, _) in filter {
            if kind.is_empty() {
                return Err(ControllerError::InvalidRequest(
                    "Invalid empty entity type.".into(),
                ));
            }
            if !types.insert(kind.as_str()) {
                return Err(ControllerError::InvalidRequest(format!(
                    "Entity type {kind} cannot appear more than once in the filter."
                )));
            }
            if ![USER, CLIENT_ID, IP].contains(&kind.as_str()) {
                return Err(ControllerError::UnsupportedVersion(format!(
                    "Unsupported entity type {kind}"
                )));
            }
        }
        if types.contains(IP) && (types.contains(USER) || types.contains(CLIENT_ID)) {
            return Err(ControllerError::InvalidRequest(
                "Invalid entity filter component combination. IP filter component should not \
                 be used with user or clientId filter component."
                    .into(),
            ));
        }
        let matches = |entity: &QuotaEntity| {
            (!strict || entity.0.len() == filter.len())
                && filter.iter().all(|(kind, wanted)| {
                    entity.0.get(kind).is_some_and(|name| match wanted {
                        NameMatch::Exact(w) => name.as_deref() == Some(w.as_str()),
                        NameMatch::Default => name.is_none(),
                        NameMatch::Any => true,
                    })
                })
        };
        Ok(image
            .all_client_quotas()
            .filter(|(entity, _)| matches(entity))
            .collect())
    }
}

/// The records of one entity's changes, after checking the entity and every value.
fn alter_entity(
    current: Option<&Quotas>,
    alteration: &QuotaAlteration,
) -> Result<Vec<MetadataRecord>, ControllerError> {
    let invalid = ControllerError::InvalidRequest;
    let entity = &alteration.entity;
    let keys = keys_of(entity)?;
    let mut seen = BTreeSet::new();
    let mut records = Vec::new();
    for (key, value) in &alteration.ops {
        if !seen.insert(key.as_str()) {
            return Err(invalid(format!(
                "Duplicate quota key {key} not updating quota for this entity {entity}"
            )));
        }
        let old = current.and_then(|q| q.get(key)).copied();
        match value {
            None if old.is_none() => continue,
            Some(v) => {
                check_value(keys, key, *v)?;
                if old == Some(*v) {
                    continue;
                }
            }
            None => {}
        }
        records.push(MetadataRecord::ClientQuota {
            entity: entity.clone(),
            key: key.clone(),
            value: *value,
        });
    }
    Ok(records)
}

/// The keys `entity` may have, after checking its types and names.
fn keys_of(
    entity: &QuotaEntity,
) -> Result<&'static [(&'static str, QuotaValueKind)], ControllerError> {
    let invalid = ControllerError::InvalidRequest;
    if entity.0.is_empty() {
        return Err(invalid("Invalid empty client quota entity".into()));
    }
    for (kind, name) in &entity.0 {
        if ![USER, CLIENT_ID, IP].contains(&kind.as_str()) {
            return Err(invalid(format!(
                "Unhandled client quota entity type: {kind}"
            )));
        }
        if name.as_deref() == Some("") {
            return Err(invalid(format!("Empty {kind} not supported")));
        }
    }
    match entity.0.get(IP) {
        None => Ok(USER_AND_CLIENT_KEYS),
        Some(_) if entity.0.len() > 1 => Err(invalid(
            "Invalid quota entity combination, IP entity should not be combined with User or \
             ClientId"
                .into(),
        )),
        Some(Some(ip)) if ip.parse::<std::net::IpAddr>().is_err() => Err(invalid(format!(
            "{ip} is not a valid IP or resolvable host."
        ))),
        Some(_) => Ok(IP_KEYS),
    }
}

fn check_value(
    keys: &[(&str, QuotaValueKind)],
    key: &str,
    value: f64,
) -> Result<(), ControllerError> {
    let invalid = ControllerError::InvalidRequest;
    let Some((_, kind)) = keys.iter().find(|(k, _)| *k == key) else {
        return Err(invalid(format!("Invalid configuration key {key}")));
    };
    // A finite positive value only: NaN, which Kafka's `value <= 0.0` lets through, is refused.
    if !value.is_finite() || value <= 0.0 {
        return Err(invalid(format!("Quota {key} must be greater than 0")));
    }
    let (limit, name) = match kind {
        QuotaValueKind::Double => return Ok(()),
        QuotaValueKind::Int => (i32::MAX as f64, "an INT"),
        QuotaValueKind::Long => (i64::MAX as f64, "a LONG"),
    };
    if value > limit {
        return Err(invalid(format!(
            "Proposed value for {key} is too large for {name}."
        )));
    }
    if (value % 1.0).abs() > 1e-6 {
        return Err(invalid(format!("{key} cannot be a fractional value.")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: Option<&str>) -> QuotaEntity {
        QuotaEntity::new([(USER, name)])
    }

    fn alter(
        image: &MetadataImage,
        alterations: &[QuotaAlteration],
    ) -> (QuotaResults, MetadataImage) {
        let (results, records) = ClientQuotaControl.alter(image, alterations);
        (results, image.apply(&records))
    }

    fn set(entity: QuotaEntity, ops: &[(&str, Option<f64>)]) -> QuotaAlteration {
        QuotaAlteration {
            entity,
            ops: ops.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        }
    }

    fn error(result: &Result<(), ControllerError>) -> String {
        match result {
            Err(ControllerError::InvalidRequest(m)) => m.clone(),
            other => panic!("expected INVALID_REQUEST, got {other:?}"),
        }
    }

    #[test]
    fn quotas_are_set_changed_and_removed_and_only_changes_are_written() {
        let image = MetadataImage::default();
        let alice = user(Some("alice"));
        let (results, image) = alter(
            &image,
            &[set(
                alice.clone(),
                &[
                    ("producer_byte_rate", Some(1024.0)),
                    ("request_percentage", Some(12.5)),
                ],
            )],
        );
        assert!(results[0].1.is_ok());
        let quotas = image.client_quotas(&alice).expect("set");
        assert_eq!(quotas.get("producer_byte_rate"), Some(&1024.0));
        assert_eq!(quotas.get("request_percentage"), Some(&12.5));
        // The same value again writes nothing; removing an unset key writes nothing.
        let (_, records) = ClientQuotaControl.alter(
            &image,
            &[set(
                alice.clone(),
                &[
                    ("producer_byte_rate", Some(1024.0)),
                    ("consumer_byte_rate", None),
                ],
            )],
        );
        assert!(records.is_empty());
        let (_, image) = alter(
            &image,
            &[set(
                alice.clone(),
                &[("producer_byte_rate", None), ("request_percentage", None)],
            )],
        );
        assert!(
            image.client_quotas(&alice).is_none(),
            "no quota left: no entity"
        );
    }

    #[test]
    fn quotas_survive_a_snapshot_of_the_image() {
        let ip = QuotaEntity::new([(IP, None)]);
        let (_, image) = alter(
            &MetadataImage::default(),
            &[
                set(user(None), &[("request_percentage", Some(25.5))]),
                set(ip.clone(), &[("connection_creation_rate", Some(30.0))]),
            ],
        );
        let json = serde_json::to_string(&image).expect("serialises");
        let back: MetadataImage = serde_json::from_str(&json).expect("deserialises");
        assert_eq!(back, image);
        assert_eq!(
            back.client_quotas(&ip)
                .and_then(|q| q.get("connection_creation_rate")),
            Some(&30.0)
        );
    }

    #[test]
    fn invalid_entities_and_values_are_refused_each_alone() {
        let image = MetadataImage::default();
        let cases: Vec<(QuotaAlteration, &str)> = vec![
            (
                set(QuotaEntity::default(), &[]),
                "Invalid empty client quota entity",
            ),
            (
                set(QuotaEntity::new([("group", Some("g"))]), &[]),
                "Unhandled client quota entity type: group",
            ),
            (set(user(Some("")), &[]), "Empty user not supported"),
            (
                set(
                    QuotaEntity::new([(USER, Some("a")), (IP, Some("10.0.0.1"))]),
                    &[],
                ),
                "IP entity should not be combined",
            ),
            (
                set(QuotaEntity::new([(IP, Some("not-an-ip"))]), &[]),
                "not-an-ip is not a valid IP or resolvable host.",
            ),
            (
                set(user(Some("a")), &[("connection_creation_rate", Some(1.0))]),
                "Invalid configuration key connection_creation_rate",
            ),
            (
                set(user(Some("a")), &[("producer_byte_rate", Some(0.0))]),
                "Quota producer_byte_rate must be greater than 0",
            ),
            (
                set(user(Some("a")), &[("request_percentage", Some(f64::NAN))]),
                "must be greater than 0",
            ),
            (
                set(user(Some("a")), &[("producer_byte_rate", Some(1.5))]),
                "producer_byte_rate cannot be a fractional value.",
            ),
            (
                set(
                    QuotaEntity::new([(IP, None)]),
                    &[("connection_creation_rate", Some(3e9))],
                ),
                "too large for an INT",
            ),
            (
                set(
                    user(Some("a")),
                    &[
                        ("producer_byte_rate", Some(1.0)),
                        ("producer_byte_rate", Some(2.0)),
                    ],
                ),
                "Duplicate quota key producer_byte_rate",
            ),
        ];
        for (alteration, message) in cases {
            let valid = set(user(Some("ok")), &[("consumer_byte_rate", Some(100.0))]);
            let (results, image) = alter(&image, &[alteration.clone(), valid]);
            assert!(
                error(&results[0].1).contains(message),
                "{alteration:?}: {:?}",
                results[0]
            );
            assert!(results[1].1.is_ok(), "another entity is not held back");
            assert!(image.client_quotas(&alteration.entity).is_none());
            assert!(image.client_quotas(&user(Some("ok"))).is_some());
        }
        // An entity named twice changes nothing.
        let twice = [
            set(user(Some("b")), &[("producer_byte_rate", Some(1.0))]),
            set(user(Some("b")), &[("consumer_byte_rate", Some(1.0))]),
        ];
        let (results, image) = alter(&image, &twice);
        assert_eq!(results.len(), 1);
        assert!(error(&results[0].1).contains("Ignoring duplicate entity"));
        assert!(image.client_quotas(&user(Some("b"))).is_none());
        // Defaults and an ip entity are fine.
        let (results, _) = alter(
            &image,
            &[
                set(user(None), &[("producer_byte_rate", Some(1.0))]),
                set(
                    QuotaEntity::new([(USER, None), (CLIENT_ID, Some("app"))]),
                    &[("controller_mutation_rate", Some(0.5))],
                ),
                set(
                    QuotaEntity::new([(IP, Some("::1"))]),
                    &[("connection_creation_rate", Some(10.0))],
                ),
            ],
        );
        assert!(results.iter().all(|(_, r)| r.is_ok()), "{results:?}");
    }

    #[test]
    fn describe_matches_exact_default_and_any_names_strictly_or_not() {
        let entities = [
            user(Some("alice")),
            user(None),
            QuotaEntity::new([(USER, Some("alice")), (CLIENT_ID, Some("app"))]),
            QuotaEntity::new([(CLIENT_ID, None)]),
            QuotaEntity::new([(IP, Some("10.0.0.1"))]),
        ];
        let alterations: Vec<_> = entities
            .iter()
            .map(|e| {
                let key = if e.0.contains_key(IP) {
                    "connection_creation_rate"
                } else {
                    "producer_byte_rate"
                };
                set(e.clone(), &[(key, Some(10.0))])
            })
            .collect();
        let (_, image) = alter(&MetadataImage::default(), &alterations);
        let describe = |filter: &[(&str, NameMatch)], strict| {
            let filter: Vec<_> = filter
                .iter()
                .map(|(k, m)| (k.to_string(), m.clone()))
                .collect();
            ClientQuotaControl
                .describe(&image, &filter, strict)
                .map(|found| {
                    found
                        .into_iter()
                        .map(|(e, _)| e.to_string())
                        .collect::<Vec<_>>()
                })
        };
        let alice = NameMatch::Exact("alice".into());
        assert_eq!(
            describe(&[(USER, alice.clone())], false).expect("valid"),
            vec![
                "ClientQuotaEntity(entries={client-id=app, user=alice})",
                "ClientQuotaEntity(entries={user=alice})"
            ]
        );
        assert_eq!(
            describe(&[(USER, alice)], true).expect("valid"),
            vec!["ClientQuotaEntity(entries={user=alice})"]
        );
        assert_eq!(
            describe(&[(USER, NameMatch::Default)], false).expect("valid"),
            vec!["ClientQuotaEntity(entries={user=null})"]
        );
        assert_eq!(
            describe(&[(USER, NameMatch::Any)], false)
                .expect("valid")
                .len(),
            3
        );
        assert_eq!(
            describe(&[], false).expect("valid").len(),
            5,
            "no filter: all"
        );
        assert_eq!(
            describe(&[], true).expect("valid").len(),
            0,
            "strict and empty: none"
        );
        assert_eq!(
            describe(&[(IP, NameMatch::Any)], true)
                .expect("valid")
                .len(),
            1
        );
        for (filter, wanted) in [
            (
                vec![(USER, NameMatch::Any), (USER, NameMatch::Default)],
                "more than once",
            ),
            (
                vec![(IP, NameMatch::Any), (USER, NameMatch::Any)],
                "combination",
            ),
            (vec![("", NameMatch::Any)], "empty entity type"),
        ] {
            match describe(&filter, false) {
                Err(ControllerError::InvalidRequest(m)) => assert!(m.contains(wanted), "{m}"),
                other => panic!("{filter:?}: {other:?}"),
            }
        }
        assert!(matches!(
            describe(&[("group", NameMatch::Any)], false),
            Err(ControllerError::UnsupportedVersion(_))
        ));
    }
}
