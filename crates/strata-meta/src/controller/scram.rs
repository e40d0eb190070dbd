//! SCRAM credentials (Kafka's `ScramControlManager`): AlterUserScramCredentials as records.
//!
//! The client sends a salted password (it salts and iterates itself, so the password never
//! reaches the broker); the controller keeps only the stored and server keys derived from it.
//! Kafka's rules: a user named twice in one request (in deletions or upsertions, whatever the
//! mechanisms) is DUPLICATE_RESOURCE for that user; an empty name is UNACCEPTABLE_CREDENTIAL;
//! an unknown mechanism UNSUPPORTED_SASL_MECHANISM; iterations outside
//! [`MIN_ITERATIONS`]`..=`[`MAX_ITERATIONS`] UNACCEPTABLE_CREDENTIAL; deleting a credential that
//! does not exist RESOURCE_NOT_FOUND. Users are independent: one user's error does not stop
//! another's change.

use std::collections::BTreeMap;

use super::ControllerError;
use crate::image::MetadataImage;
use crate::records::MetadataRecord;
use crate::scram::{
    ScramBootstrap, ScramCredential, ScramMechanism, MAX_ITERATIONS, MIN_ITERATIONS,
};

/// A deletion of AlterUserScramCredentials. `mechanism` is Kafka's type code, checked here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScramDeletion {
    pub name: String,
    pub mechanism: i8,
}

/// An upsertion of AlterUserScramCredentials: the salt and the salted password the client
/// derived with `iterations`. Its `Debug` hides the secrets.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramUpsertion {
    pub name: String,
    pub mechanism: i8,
    pub iterations: i32,
    pub salt: Vec<u8>,
    pub salted_password: Vec<u8>,
}

impl std::fmt::Debug for ScramUpsertion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramUpsertion")
            .field("name", &self.name)
            .field("mechanism", &self.mechanism)
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

/// The outcome of AlterUserScramCredentials per user.
pub type ScramResults = Vec<(String, Result<(), ControllerError>)>;

/// SCRAM credential changes as records.
#[derive(Debug, Default)]
pub struct ScramControl;

enum Change<'a> {
    Delete(ScramMechanism),
    Upsert(ScramMechanism, &'a ScramUpsertion),
}

impl ScramControl {
    /// The outcome per user (deletions first, then upsertions, then the refused users, each
    /// in name order) and the records of the accepted changes.
    pub fn alter_credentials(
        &self,
        image: &MetadataImage,
        deletions: &[ScramDeletion],
        upsertions: &[ScramUpsertion],
    ) -> (ScramResults, Vec<MetadataRecord>) {
        let mut changes: BTreeMap<&str, Change> = BTreeMap::new();
        let mut errors: BTreeMap<&str, ControllerError> = BTreeMap::new();
        let duplicate = || {
            ControllerError::DuplicateResource(
                "A user credential cannot be altered twice in the same request".into(),
            )
        };
        for d in deletions {
            let name = d.name.as_str();
            if errors.contains_key(name) {
                continue;
            }
            if changes.remove(name).is_some() {
                errors.insert(name, duplicate());
                continue;
            }
            match validate_deletion(image, d) {
                Ok(m) => {
                    changes.insert(name, Change::Delete(m));
                }
                Err(e) => {
                    errors.insert(name, e);
                }
            }
        }
        for u in upsertions {
            let name = u.name.as_str();
            if errors.contains_key(name) {
                continue;
            }
            if changes.remove(name).is_some() {
                errors.insert(name, duplicate());
                continue;
            }
            match validate_upsertion(u) {
                Ok(m) => {
                    changes.insert(name, Change::Upsert(m, u));
                }
                Err(e) => {
                    errors.insert(name, e);
                }
            }
        }
        let mut results = Vec::new();
        let mut records = Vec::new();
        for (name, change) in &changes {
            if let Change::Delete(mechanism) = change {
                records.push(MetadataRecord::RemoveUserScramCredential {
                    name: name.to_string(),
                    mechanism: *mechanism,
                });
                results.push((name.to_string(), Ok(())));
            }
        }
        for (name, change) in &changes {
            if let Change::Upsert(mechanism, u) = change {
                records.push(MetadataRecord::UserScramCredential {
                    name: name.to_string(),
                    mechanism: *mechanism,
                    credential: ScramCredential::from_salted_password(
                        *mechanism,
                        u.salt.clone(),
                        &u.salted_password,
                        u.iterations,
                    ),
                });
                results.push((name.to_string(), Ok(())));
            }
        }
        results.extend(
            errors
                .into_iter()
                .map(|(name, e)| (name.to_string(), Err(e))),
        );
        (results, records)
    }

    /// The records removing every credential of `user` (a tenant's user being deleted).
    pub fn remove_all(&self, image: &MetadataImage, user: &str) -> Vec<MetadataRecord> {
        image
            .scram_users()
            .filter(|(name, _)| *name == user)
            .flat_map(|(name, by_mechanism)| {
                by_mechanism
                    .keys()
                    .map(|mechanism| MetadataRecord::RemoveUserScramCredential {
                        name: name.clone(),
                        mechanism: *mechanism,
                    })
            })
            .collect()
    }

    /// The record creating a bootstrap credential unless the user already has one for its
    /// mechanism (`--add-scram` at every start, as `kafka-storage format` bootstraps it once:
    /// an existing credential, perhaps changed since, is never overwritten).
    pub fn bootstrap_credential(
        &self,
        image: &MetadataImage,
        bootstrap: &ScramBootstrap,
    ) -> Result<Option<MetadataRecord>, ControllerError> {
        check_name(&bootstrap.name)?;
        check_iterations(bootstrap.iterations)?;
        if image
            .scram_credential(&bootstrap.name, bootstrap.mechanism)
            .is_some()
        {
            return Ok(None);
        }
        Ok(Some(MetadataRecord::UserScramCredential {
            name: bootstrap.name.clone(),
            mechanism: bootstrap.mechanism,
            credential: bootstrap.credential(),
        }))
    }
}

fn check_name(name: &str) -> Result<(), ControllerError> {
    if name.is_empty() {
        return Err(ControllerError::UnacceptableCredential(
            "Username must not be empty".into(),
        ));
    }
    Ok(())
}

fn check_mechanism(code: i8) -> Result<ScramMechanism, ControllerError> {
    ScramMechanism::from_type(code)
        .ok_or_else(|| ControllerError::UnsupportedSaslMechanism("Unknown SCRAM mechanism".into()))
}

fn check_iterations(iterations: i32) -> Result<(), ControllerError> {
    if iterations < MIN_ITERATIONS {
        Err(ControllerError::UnacceptableCredential(
            "Too few iterations".into(),
        ))
    } else if iterations > MAX_ITERATIONS {
        Err(ControllerError::UnacceptableCredential(
            "Too many iterations".into(),
        ))
    } else {
        Ok(())
    }
}

fn validate_deletion(
    image: &MetadataImage,
    d: &ScramDeletion,
) -> Result<ScramMechanism, ControllerError> {
    check_name(&d.name)?;
    let mechanism = check_mechanism(d.mechanism)?;
    if image.scram_credential(&d.name, mechanism).is_none() {
        return Err(ControllerError::ResourceNotFound(
            "Attempt to delete a user credential that does not exist".into(),
        ));
    }
    Ok(mechanism)
}

fn validate_upsertion(u: &ScramUpsertion) -> Result<ScramMechanism, ControllerError> {
    check_name(&u.name)?;
    let mechanism = check_mechanism(u.mechanism)?;
    check_iterations(u.iterations)?;
    Ok(mechanism)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::Controller;

    const SHA256: i8 = 1;
    const SHA512: i8 = 2;

    fn upsert(name: &str, mechanism: i8, iterations: i32) -> ScramUpsertion {
        let salt = b"salt".to_vec();
        let salted_password = ScramMechanism::from_type(mechanism)
            .map(|m| m.salted_password(b"pw", &salt, 4096))
            .unwrap_or_default();
        ScramUpsertion {
            name: name.into(),
            mechanism,
            iterations,
            salt,
            salted_password,
        }
    }

    fn delete(name: &str, mechanism: i8) -> ScramDeletion {
        ScramDeletion {
            name: name.into(),
            mechanism,
        }
    }

    fn alter(
        image: &MetadataImage,
        deletions: &[ScramDeletion],
        upsertions: &[ScramUpsertion],
    ) -> (ScramResults, MetadataImage) {
        let (results, records) =
            Controller::new(1).alter_user_scram_credentials(image, deletions, upsertions);
        (results, image.apply(&records))
    }

    #[test]
    fn upsert_stores_keys_not_the_salted_password_and_delete_removes() {
        let (results, image) = alter(
            &MetadataImage::default(),
            &[],
            &[upsert("alice", SHA256, 4096), upsert("bob", SHA512, 8192)],
        );
        assert_eq!(
            results,
            vec![("alice".into(), Ok(())), ("bob".into(), Ok(()))]
        );
        let m = ScramMechanism::ScramSha256;
        let c = image.scram_credential("alice", m).expect("stored");
        let salted = m.salted_password(b"pw", b"salt", 4096);
        assert_eq!(c.stored_key, m.stored_key(&m.client_key(&salted)));
        assert_eq!(c.server_key, m.server_key(&salted));
        assert_ne!(c.stored_key, salted);
        assert_eq!(c.iterations, 4096);
        assert!(image
            .scram_credential("alice", ScramMechanism::ScramSha512)
            .is_none());
        assert_eq!(
            image
                .scram_credential("bob", ScramMechanism::ScramSha512)
                .map(|c| c.iterations),
            Some(8192)
        );

        // Snapshots keep the credentials.
        let json = serde_json::to_string(&image).unwrap();
        assert_eq!(serde_json::from_str::<MetadataImage>(&json).unwrap(), image);

        let (results, image) = alter(&image, &[delete("alice", SHA256)], &[]);
        assert_eq!(results, vec![("alice".into(), Ok(()))]);
        assert!(image.scram_users().all(|(name, _)| name == "bob"));
    }

    #[test]
    fn refusals_have_kafkas_errors_per_user() {
        let (_, image) = alter(
            &MetadataImage::default(),
            &[],
            &[upsert("u", SHA256, 4096), upsert("twice", SHA256, 4096)],
        );
        let (results, next) = alter(
            &image,
            &[
                delete("gone", SHA256),
                delete("u", SHA512),
                delete("twice", SHA256),
                delete("", SHA256),
            ],
            &[
                upsert("few", SHA256, 4095),
                upsert("many", SHA512, 16385),
                upsert("mech", 3, 4096),
                upsert("twice", SHA512, 4096),
                upsert("ok", SHA512, 16384),
            ],
        );
        let outcome: BTreeMap<String, Result<(), ControllerError>> = results.into_iter().collect();
        let expected = |name: &str| outcome.get(name).cloned();
        assert!(matches!(
            expected("gone"),
            Some(Err(ControllerError::ResourceNotFound(_)))
        ));
        assert!(matches!(
            expected("u"),
            Some(Err(ControllerError::ResourceNotFound(_)))
        ));
        assert!(matches!(
            expected(""),
            Some(Err(ControllerError::UnacceptableCredential(_)))
        ));
        assert_eq!(
            expected("few"),
            Some(Err(ControllerError::UnacceptableCredential(
                "Too few iterations".into()
            )))
        );
        assert_eq!(
            expected("many"),
            Some(Err(ControllerError::UnacceptableCredential(
                "Too many iterations".into()
            )))
        );
        assert!(matches!(
            expected("mech"),
            Some(Err(ControllerError::UnsupportedSaslMechanism(_)))
        ));
        // Named in a deletion and an upsertion: refused whole, whatever the mechanisms.
        assert!(matches!(
            expected("twice"),
            Some(Err(ControllerError::DuplicateResource(_)))
        ));
        assert_eq!(expected("ok"), Some(Ok(())));
        assert_eq!(outcome.len(), 8);
        // Only the accepted user changed.
        assert!(next
            .scram_credential("twice", ScramMechanism::ScramSha256)
            .is_some());
        assert!(next
            .scram_credential("ok", ScramMechanism::ScramSha512)
            .is_some());
        assert!(next
            .scram_credential("twice", ScramMechanism::ScramSha512)
            .is_none());
        assert!(next
            .scram_credential("u", ScramMechanism::ScramSha256)
            .is_some());
    }

    #[test]
    fn bootstrap_creates_only_a_missing_credential() {
        let control = ScramControl;
        let m = ScramMechanism::ScramSha256;
        let admin = |password: &str| {
            ScramBootstrap::parse(&format!("SCRAM-SHA-256=[name=admin,password={password}]"))
                .unwrap()
        };
        let image = MetadataImage::default();
        let record = control
            .bootstrap_credential(&image, &admin("admin-secret"))
            .unwrap()
            .expect("created");
        let image = image.apply(&[record]);
        let c = image.scram_credential("admin", m).unwrap();
        assert_eq!(c.salt.len(), 32);
        let salted = m.salted_password(b"admin-secret", &c.salt, 4096);
        assert_eq!(c.stored_key, m.stored_key(&m.client_key(&salted)));
        // A second start, even with another password, leaves it alone.
        assert_eq!(
            control.bootstrap_credential(&image, &admin("other")),
            Ok(None)
        );
        let sha512 = ScramBootstrap::parse("SCRAM-SHA-512=[name=admin,password=x]").unwrap();
        assert!(control
            .bootstrap_credential(&image, &sha512)
            .unwrap()
            .is_some());
    }

    #[test]
    fn removing_an_unknown_credential_does_not_fit_the_image() {
        let record = MetadataRecord::RemoveUserScramCredential {
            name: "nobody".into(),
            mechanism: ScramMechanism::ScramSha256,
        };
        assert!(matches!(
            MetadataImage::default().try_apply(&[record]),
            Err(crate::image::ImageError::UnknownScramCredential { .. })
        ));
    }
}
