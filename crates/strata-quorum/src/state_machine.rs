//! The metadata image as openraft's state machine, and its snapshots.
//!
//! Applying an entry is deterministic: a proposal applies iff its `base_offset` equals the
//! image's offset, so every node reaches the same image at the same log index. Blank and
//! membership entries leave the image alone. Each change is published on a watch channel
//! (what [`crate::Quorum::subscribe`] hands out).
//!
//! The state machine is not persisted on apply: the snapshot is. A snapshot is the serialised
//! image plus the last applied log id and membership, in one file `snapshot` written
//! atomically: `[u32 crc32c of the rest][u32 meta length][meta json][image json]`. At start the
//! image is the snapshot's; openraft then re-applies the log up to the persisted committed
//! index (see `log_store`). The bytes sent to a lagging node by `install_snapshot` are the image
//! json alone; the meta travels in openraft's request.
//!
//! Cost: a snapshot serialises the whole image (about a few hundred bytes per partition) and
//! keeps one copy of those bytes in memory to serve followers.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use openraft::storage::RaftStateMachine;
use openraft::{
    AnyError, EntryPayload, OptionalSend, RaftSnapshotBuilder, Snapshot, StorageIOError,
};
use strata_durable::LockExt;
use strata_meta::MetadataImage;
use tokio::sync::watch;

use crate::types::{
    ApplyOutcome, Entry, LogId, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};
use crate::QuorumError;

const SNAPSHOT_FILE: &str = "snapshot";
const SNAPSHOT_HEADER_BYTES: usize = 8;

/// A snapshot as kept in memory: its meta and the image's json.
#[derive(Clone)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    image_json: Arc<Vec<u8>>,
}

impl StoredSnapshot {
    fn encode(&self) -> Result<Vec<u8>, serde_json::Error> {
        let meta = serde_json::to_vec(&self.meta)?;
        let mut out =
            Vec::with_capacity(SNAPSHOT_HEADER_BYTES + meta.len() + self.image_json.len());
        out.extend_from_slice(&[0; 4]); // crc, filled below
        out.extend_from_slice(&(meta.len() as u32).to_be_bytes());
        out.extend_from_slice(&meta);
        out.extend_from_slice(&self.image_json);
        let crc = crc32c::crc32c(&out[4..]);
        out[..4].copy_from_slice(&crc.to_be_bytes());
        Ok(out)
    }

    fn decode(bytes: Vec<u8>, path: &Path) -> Result<Self, QuorumError> {
        let corrupt = |what: &str| QuorumError::Corrupt(format!("{}: {what}", path.display()));
        if bytes.len() < SNAPSHOT_HEADER_BYTES {
            return Err(corrupt("shorter than its header"));
        }
        let crc = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        if crc32c::crc32c(&bytes[4..]) != crc {
            return Err(corrupt("CRC mismatch"));
        }
        let meta_len = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as usize;
        if bytes.len() - SNAPSHOT_HEADER_BYTES < meta_len {
            return Err(corrupt("meta length past the end"));
        }
        let meta_end = SNAPSHOT_HEADER_BYTES + meta_len;
        let meta: SnapshotMeta = serde_json::from_slice(&bytes[SNAPSHOT_HEADER_BYTES..meta_end])
            .map_err(|e| corrupt(&format!("undecodable meta: {e}")))?;
        Ok(Self {
            meta,
            image_json: Arc::new(bytes[meta_end..].to_vec()),
        })
    }

    fn image(&self) -> Result<MetadataImage, serde_json::Error> {
        serde_json::from_slice(&self.image_json)
    }

    fn to_snapshot(&self) -> Snapshot<TypeConfig> {
        Snapshot {
            meta: self.meta.clone(),
            snapshot: Box::new(Cursor::new(self.image_json.to_vec())),
        }
    }
}

/// The current snapshot, shared by the state machine and the snapshot builders openraft runs
/// beside it.
struct SnapshotStore {
    dir: PathBuf,
    current: Mutex<Option<StoredSnapshot>>,
    /// Serialises file writes, so that an older snapshot never replaces a newer one on disk.
    /// Held only on the blocking pool; `current` is held only for a clone or a swap.
    write: Mutex<()>,
}

impl SnapshotStore {
    fn current(&self) -> Option<StoredSnapshot> {
        self.current.locked().clone()
    }

    /// Makes `snapshot` durable and current, unless a newer one already is. Blocking.
    fn save(&self, snapshot: &StoredSnapshot) -> std::io::Result<()> {
        let _write = self.write.locked();
        if let Some(current) = self.current() {
            if current.meta.last_log_id >= snapshot.meta.last_log_id {
                return Ok(());
            }
        }
        let bytes = snapshot.encode().map_err(std::io::Error::other)?;
        strata_durable::replace(&self.dir, SNAPSHOT_FILE, &bytes)?;
        *self.current.locked() = Some(snapshot.clone());
        Ok(())
    }
}

pub(crate) struct StateMachine {
    image: Arc<MetadataImage>,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    snapshots: Arc<SnapshotStore>,
    image_tx: watch::Sender<Arc<MetadataImage>>,
}

impl StateMachine {
    /// Loads the last snapshot in `dir` (which must exist), if any. Blocking. Returns the state
    /// machine and a receiver of every image it applies from now on.
    pub(crate) fn open(
        dir: &Path,
    ) -> Result<(Self, watch::Receiver<Arc<MetadataImage>>), QuorumError> {
        let path = dir.join(SNAPSHOT_FILE);
        let snapshot = strata_durable::read_if_exists(dir, SNAPSHOT_FILE)
            .map_err(|e| QuorumError::io(format!("read {}", path.display()), e))?
            .map(|bytes| StoredSnapshot::decode(bytes, &path))
            .transpose()?;
        let (image, last_applied, membership) = match &snapshot {
            Some(s) => {
                let image = s.image().map_err(|e| {
                    QuorumError::Corrupt(format!("{}: undecodable image: {e}", path.display()))
                })?;
                (image, s.meta.last_log_id, s.meta.last_membership.clone())
            }
            None => Default::default(),
        };
        tracing::info!(
            offset = image.offset,
            last_applied = ?last_applied,
            "metadata snapshot loaded"
        );
        let image = Arc::new(image);
        let (image_tx, image_rx) = watch::channel(image.clone());
        let machine = Self {
            image,
            last_applied,
            membership,
            snapshots: Arc::new(SnapshotStore {
                dir: dir.to_path_buf(),
                current: Mutex::new(snapshot),
                write: Mutex::new(()),
            }),
            image_tx,
        };
        Ok((machine, image_rx))
    }

    /// Applies one entry to the image; returns its outcome and whether the image changed.
    fn apply_entry(&mut self, entry: Entry) -> (ApplyOutcome, bool) {
        self.last_applied = Some(entry.log_id);
        match entry.payload {
            EntryPayload::Blank => (ApplyOutcome::Unchanged, false),
            EntryPayload::Membership(membership) => {
                self.membership = StoredMembership::new(Some(entry.log_id), membership);
                (ApplyOutcome::Unchanged, false)
            }
            EntryPayload::Normal(proposal) if proposal.base_offset == self.image.offset => {
                let next = self.image.apply(&proposal.records);
                assert_eq!(next.offset, proposal.base_offset + 1, "offsets grow by one");
                let offset = next.offset;
                self.image = Arc::new(next);
                (ApplyOutcome::Committed { offset }, true)
            }
            EntryPayload::Normal(_) => (
                ApplyOutcome::Conflict {
                    current_offset: self.image.offset,
                },
                false,
            ),
        }
    }
}

fn snapshot_error(
    meta: Option<&SnapshotMeta>,
    e: impl std::error::Error + 'static,
) -> StorageError {
    StorageIOError::write_snapshot(meta.map(SnapshotMeta::signature), AnyError::new(&e)).into()
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<ApplyOutcome>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut changed = false;
        let outcomes = entries
            .into_iter()
            .map(|entry| {
                let (outcome, entry_changed) = self.apply_entry(entry);
                changed |= entry_changed;
                outcome
            })
            .collect();
        if changed {
            self.image_tx.send_replace(self.image.clone());
        }
        Ok(outcomes)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            image: self.image.clone(),
            last_applied: self.last_applied,
            membership: self.membership.clone(),
            snapshots: self.snapshots.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let stored = StoredSnapshot {
            meta: meta.clone(),
            image_json: Arc::new(snapshot.into_inner()),
        };
        let image = stored.image().map_err(|e| snapshot_error(Some(meta), e))?;
        if image.offset < self.image.offset {
            // Raft installs only snapshots ahead of the state machine; an image going back
            // would make the broker delete logs the metadata still names.
            return Err(snapshot_error(
                Some(meta),
                std::io::Error::other(format!(
                    "snapshot image at offset {} is behind the applied image at {}",
                    image.offset, self.image.offset
                )),
            ));
        }
        let store = self.snapshots.clone();
        let to_save = stored.clone();
        crate::run_blocking(move || store.save(&to_save))
            .await
            .map_err(|e| snapshot_error(Some(meta), e))?;
        tracing::info!(
            offset = image.offset,
            last_log_id = ?meta.last_log_id,
            "installed metadata snapshot from the leader"
        );
        self.image = Arc::new(image);
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        self.image_tx.send_replace(self.image.clone());
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        Ok(self.snapshots.current().map(|s| s.to_snapshot()))
    }
}

/// Builds a snapshot of the image as it was when openraft asked for the builder, while the
/// state machine goes on applying.
pub(crate) struct SnapshotBuilder {
    image: Arc<MetadataImage>,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    snapshots: Arc<SnapshotStore>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let snapshot_id = match self.last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id.term, l.leader_id.node_id, l.index),
            None => "empty".to_string(),
        };
        let meta = SnapshotMeta {
            last_log_id: self.last_applied,
            last_membership: self.membership.clone(),
            snapshot_id,
        };
        let image = self.image.clone();
        let store = self.snapshots.clone();
        let build_meta = meta.clone();
        let stored = crate::run_blocking(move || {
            let image_json = serde_json::to_vec(&*image).map_err(std::io::Error::other)?;
            let stored = StoredSnapshot {
                meta: build_meta,
                image_json: Arc::new(image_json),
            };
            store.save(&stored)?;
            Ok(stored)
        })
        .await
        .map_err(|e| snapshot_error(Some(&meta), e))?;
        tracing::debug!(last_log_id = ?meta.last_log_id, "built metadata snapshot");
        Ok(stored.to_snapshot())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::ProposalData;
    use openraft::CommittedLeaderId;
    use strata_meta::MetadataRecord;

    fn proposal(index: u64, base_offset: u64, name: &str) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(ProposalData {
                base_offset,
                records: vec![MetadataRecord::Topic {
                    name: name.into(),
                    topic_id: uuid::Uuid::new_v4(),
                }],
            }),
        }
    }

    #[tokio::test]
    async fn applies_only_on_the_base_image_and_snapshots_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (mut sm, mut images) = StateMachine::open(dir.path()).unwrap();
        let blank = Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), 0),
            payload: EntryPayload::Blank,
        };
        let outcomes = sm
            .apply(vec![
                blank,
                proposal(1, 0, "a"),
                proposal(2, 0, "b"),
                proposal(3, 1, "c"),
            ])
            .await
            .unwrap();
        assert_eq!(
            outcomes,
            vec![
                ApplyOutcome::Unchanged,
                ApplyOutcome::Committed { offset: 1 },
                ApplyOutcome::Conflict { current_offset: 1 },
                ApplyOutcome::Committed { offset: 2 },
            ]
        );
        assert!(images.has_changed().unwrap());
        let image = images.borrow_and_update().clone();
        assert_eq!(image.offset, 2);
        assert!(image.topic("a").is_some() && image.topic("b").is_none());

        let built = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        assert_eq!(built.meta.last_log_id.map(|l| l.index), Some(3));
        drop(sm);

        let (mut reopened, images) = StateMachine::open(dir.path()).unwrap();
        assert_eq!(*images.borrow().clone(), *image);
        let (applied, _) = reopened.applied_state().await.unwrap();
        assert_eq!(applied.map(|l| l.index), Some(3));

        // A fresh node installs that snapshot as a follower would.
        let other = tempfile::tempdir().unwrap();
        let (mut follower, mut follower_images) = StateMachine::open(other.path()).unwrap();
        let current = reopened.get_current_snapshot().await.unwrap().unwrap();
        follower
            .install_snapshot(&current.meta, current.snapshot)
            .await
            .unwrap();
        assert_eq!(*follower_images.borrow_and_update().clone(), *image);
        let (applied, _) = follower.applied_state().await.unwrap();
        assert_eq!(applied.map(|l| l.index), Some(3));
    }

    #[test]
    fn corrupt_snapshot_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let stored = StoredSnapshot {
            meta: SnapshotMeta::default(),
            image_json: Arc::new(serde_json::to_vec(&MetadataImage::default()).unwrap()),
        };
        let mut bytes = stored.encode().unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(dir.path().join(SNAPSHOT_FILE), &bytes).unwrap();
        assert!(matches!(
            StateMachine::open(dir.path()),
            Err(QuorumError::Corrupt(_))
        ));
    }
}
