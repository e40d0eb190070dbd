//! The Raft log, vote and committed index on disk (openraft's `RaftLogStorage`).
//!
//! Files in the quorum directory:
//!
//! - `raft.log`: a header frame (`{"last_purged": <log id>}`) followed by one frame per entry,
//!   each `[u32 length][u32 crc32c][json]` (`strata_meta::frame`, the single node's metadata
//!   log's format and recovery rule). Appends are written and fsynced before openraft is
//!   told they are durable. A torn last frame (crash mid-append) is cut off at open; a bad frame
//!   anywhere else is an error, never skipped, because skipping would leave a hole in the log.
//!   Truncation (a follower dropping a conflicting suffix) cuts the file at a frame boundary and
//!   fsyncs. Purging (after a snapshot) rewrites the file atomically with a new header: the
//!   metadata log is small, and a rewrite keeps one file with one format.
//! - `vote.json`, `committed.json`: replaced atomically (temp file, rename, fsync of the
//!   directory). The committed index lets a restarted node replay its log into the image
//!   without first hearing from a leader.
//!
//! Invariants: entry indexes in the file are consecutive and start right after `last_purged`;
//! the in-memory copy (`LogMem`) equals the file after every completed operation. Entries are
//! kept in memory because openraft reads them for replication and the log is bounded by the
//! snapshot policy (about `snapshot_every` entries plus what lagging followers still need).
//!
//! Cost: one `write` + `fdatasync` per append call (openraft batches entries per call), two
//! fsyncs and a rename per vote or committed-index change, a rewrite of the unsnapshotted tail
//! per purge.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{AnyError, LogState, OptionalSend, RaftLogReader, StorageIOError};
use serde::{Deserialize, Serialize};
use strata_durable::{LockExt, RwLockExt};
use strata_meta::frame::{self, FRAME_HEADER_BYTES};

use crate::types::{Entry, LogId, StorageError, TypeConfig, Vote};
use crate::QuorumError;

const LOG_FILE: &str = "raft.log";
const VOTE_FILE: &str = "vote.json";
const COMMITTED_FILE: &str = "committed.json";

#[derive(Debug, Serialize, Deserialize)]
struct LogHeader {
    last_purged: Option<LogId>,
}

/// The log as openraft reads it: shared with the replication tasks' readers.
#[derive(Debug, Default)]
struct LogMem {
    entries: BTreeMap<u64, Entry>,
    last_purged: Option<LogId>,
}

impl LogMem {
    fn last_log_id(&self) -> Option<LogId> {
        self.entries
            .values()
            .next_back()
            .map(|e| e.log_id)
            .or(self.last_purged)
    }

    /// The index the next appended entry must have.
    fn next_index(&self) -> u64 {
        self.last_log_id().map_or(0, |l| l.index + 1)
    }
}

/// The open log file. Only touched on the blocking pool, one operation at a time.
struct LogFile {
    dir: PathBuf,
    file: File,
    /// Byte position of each entry's frame, by log index.
    positions: BTreeMap<u64, u64>,
    len_bytes: u64,
}

impl LogFile {
    fn path(&self) -> PathBuf {
        self.dir.join(LOG_FILE)
    }

    fn open_append(path: &Path) -> std::io::Result<File> {
        OpenOptions::new().read(true).append(true).open(path)
    }

    /// Opens (creating if absent) the log file and reads it into memory.
    fn open(dir: &Path) -> Result<(LogFile, LogMem), QuorumError> {
        let path = dir.join(LOG_FILE);
        let io = |what: &str, e| QuorumError::io(format!("{what} {}", path.display()), e);
        if !path.exists() {
            let mut header = Vec::new();
            let body = serde_json::to_vec(&LogHeader { last_purged: None })
                .map_err(|e| QuorumError::Corrupt(format!("encode log header: {e}")))?;
            frame::encode(&body, &mut header);
            strata_durable::replace(dir, LOG_FILE, &header).map_err(|e| io("create", e))?;
        }
        let mut file = Self::open_append(&path).map_err(|e| io("open", e))?;
        let mut data = Vec::new();
        file.read_to_end(&mut data).map_err(|e| io("read", e))?;
        let scan = frame::scan(&data)
            .map_err(|e| QuorumError::Corrupt(format!("{}: {e}", path.display())))?;
        let valid_len = scan.valid_len;
        let mut frames = scan.frames.into_iter();
        let header = frames
            .next()
            .ok_or_else(|| QuorumError::Corrupt(format!("{}: no header frame", path.display())))?;
        let header: LogHeader = serde_json::from_slice(header.body).map_err(|e| {
            QuorumError::Corrupt(format!("{}: undecodable header: {e}", path.display()))
        })?;
        let mut mem = LogMem {
            entries: BTreeMap::new(),
            last_purged: header.last_purged,
        };
        let mut positions = BTreeMap::new();
        for frame::Frame {
            position: pos,
            body,
        } in frames
        {
            let entry: Entry = serde_json::from_slice(body).map_err(|e| {
                QuorumError::Corrupt(format!(
                    "{}: undecodable entry at byte {pos}: {e}",
                    path.display()
                ))
            })?;
            let expected = mem.next_index();
            if entry.log_id.index != expected {
                return Err(QuorumError::Corrupt(format!(
                    "{}: entry at byte {pos} has index {}, expected {expected}",
                    path.display(),
                    entry.log_id.index
                )));
            }
            positions.insert(entry.log_id.index, pos);
            mem.entries.insert(entry.log_id.index, entry);
        }
        if valid_len < data.len() as u64 {
            tracing::warn!(
                path = %path.display(),
                valid_len,
                file_len = data.len(),
                "cutting the torn tail of the raft log"
            );
            file.set_len(valid_len).map_err(|e| io("truncate", e))?;
            file.sync_all().map_err(|e| io("sync", e))?;
        }
        let log = LogFile {
            dir: dir.to_path_buf(),
            file,
            positions,
            len_bytes: valid_len,
        };
        Ok((log, mem))
    }

    /// Appends encoded entries `(index, json)` and fsyncs.
    fn append(&mut self, entries: &[(u64, Vec<u8>)]) -> std::io::Result<()> {
        let mut buf = Vec::new();
        let mut positions = Vec::with_capacity(entries.len());
        for (index, body) in entries {
            positions.push((*index, self.len_bytes + buf.len() as u64));
            frame::encode(body, &mut buf);
        }
        self.file.write_all(&buf)?;
        self.file.sync_data()?;
        self.len_bytes += buf.len() as u64;
        self.positions.extend(positions);
        Ok(())
    }

    /// Removes entries from `index` on.
    fn truncate(&mut self, index: u64) -> std::io::Result<()> {
        let Some((_, &pos)) = self.positions.range(index..).next() else {
            return Ok(()); // nothing at or after `index`
        };
        self.file.set_len(pos)?;
        self.file.sync_all()?;
        self.positions.split_off(&index);
        self.len_bytes = pos;
        Ok(())
    }

    /// Rewrites the file without entries up to `upto`, recording it as purged.
    fn purge(&mut self, upto: LogId) -> std::io::Result<()> {
        let keep_from = self
            .positions
            .range(upto.index + 1..)
            .next()
            .map(|(_, &pos)| pos);
        let mut tail = Vec::new();
        if let Some(pos) = keep_from {
            let mut reader = File::open(self.path())?;
            reader.seek(SeekFrom::Start(pos))?;
            reader.read_to_end(&mut tail)?;
        }
        let header = serde_json::to_vec(&LogHeader {
            last_purged: Some(upto),
        })
        .map_err(std::io::Error::other)?;
        let mut content = Vec::with_capacity(FRAME_HEADER_BYTES + header.len() + tail.len());
        frame::encode(&header, &mut content);
        let header_len = content.len() as u64;
        content.extend_from_slice(&tail);
        strata_durable::replace(&self.dir, LOG_FILE, &content)?;
        self.file = Self::open_append(&self.path())?;
        let kept = self.positions.split_off(&(upto.index + 1));
        self.positions = kept
            .into_iter()
            .map(|(index, pos)| (index, header_len + (pos - keep_from.unwrap_or(pos))))
            .collect();
        self.len_bytes = content.len() as u64;
        Ok(())
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(
    dir: &Path,
    name: &str,
) -> Result<Option<T>, QuorumError> {
    let path = dir.join(name);
    let Some(bytes) = strata_durable::read_if_exists(dir, name)
        .map_err(|e| QuorumError::io(format!("read {}", path.display()), e))?
    else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map_err(|e| QuorumError::Corrupt(format!("{}: {e}", path.display())))
}

fn write_error(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_logs(AnyError::new(&e)).into()
}

/// The last committed log id, shared with [`crate::Quorum::status`].
pub(crate) type SharedCommitted = Arc<Mutex<Option<LogId>>>;

pub(crate) struct LogStore {
    dir: PathBuf,
    mem: Arc<RwLock<LogMem>>,
    file: Arc<Mutex<LogFile>>,
    vote: Option<Vote>,
    committed: SharedCommitted,
}

impl LogStore {
    /// Opens the store in `dir` (which must exist). Blocking.
    pub(crate) fn open(dir: &Path, committed: SharedCommitted) -> Result<Self, QuorumError> {
        let (file, mem) = LogFile::open(dir)?;
        let vote = read_json(dir, VOTE_FILE)?;
        let saved: Option<LogId> = read_json(dir, COMMITTED_FILE)?;
        *committed.locked() = saved;
        Ok(Self {
            dir: dir.to_path_buf(),
            mem: Arc::new(RwLock::new(mem)),
            file: Arc::new(Mutex::new(file)),
            vote,
            committed,
        })
    }

    /// Runs `op` on the log file on the blocking pool.
    async fn with_file<T: Send + 'static>(
        &self,
        op: impl FnOnce(&mut LogFile) -> std::io::Result<T> + Send + 'static,
    ) -> std::io::Result<T> {
        let file = self.file.clone();
        crate::run_blocking(move || {
            let mut file = file.locked();
            op(&mut file)
        })
        .await
    }

    async fn write_small_file(&self, name: &'static str, bytes: Vec<u8>) -> std::io::Result<()> {
        let dir = self.dir.clone();
        crate::run_blocking(move || strata_durable::replace(&dir, name, &bytes)).await
    }

    fn mem_read(&self) -> std::sync::RwLockReadGuard<'_, LogMem> {
        self.mem.read_locked()
    }

    fn mem_write(&self) -> std::sync::RwLockWriteGuard<'_, LogMem> {
        self.mem.write_locked()
    }
}

fn read_range<RB: RangeBounds<u64>>(mem: &RwLock<LogMem>, range: RB) -> Vec<Entry> {
    let mem = mem.read_locked();
    mem.entries.range(range).map(|(_, e)| e.clone()).collect()
}

/// Reads entries for replication tasks.
pub(crate) struct LogReader {
    mem: Arc<RwLock<LogMem>>,
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        Ok(read_range(&self.mem, range))
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        Ok(read_range(&self.mem, range))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let mem = self.mem_read();
        Ok(LogState {
            last_purged_log_id: mem.last_purged,
            last_log_id: mem.last_log_id(),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        LogReader {
            mem: self.mem.clone(),
        }
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let bytes = serde_json::to_vec(vote)
            .map_err(|e| StorageError::from(StorageIOError::write_vote(AnyError::new(&e))))?;
        self.write_small_file(VOTE_FILE, bytes)
            .await
            .map_err(|e| StorageError::from(StorageIOError::write_vote(AnyError::new(&e))))?;
        self.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let bytes = serde_json::to_vec(&committed).map_err(write_error)?;
        self.write_small_file(COMMITTED_FILE, bytes)
            .await
            .map_err(write_error)?;
        *self.committed.locked() = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(*self.committed.locked())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let first_index = self.mem_read().next_index();
        let mut encoded = Vec::with_capacity(entries.len());
        for (next_index, entry) in (first_index..).zip(&entries) {
            if entry.log_id.index != next_index {
                // openraft never leaves a hole; a gap here would corrupt the log on disk.
                return Err(StorageIOError::write_log_entry(
                    entry.log_id,
                    AnyError::error(format!(
                        "append of index {} where {next_index} was expected",
                        entry.log_id.index
                    )),
                )
                .into());
            }
            let body = serde_json::to_vec(entry).map_err(write_error)?;
            encoded.push((entry.log_id.index, body));
        }
        self.with_file(move |file| file.append(&encoded))
            .await
            .map_err(write_error)?;
        {
            let mut mem = self.mem_write();
            for entry in entries {
                mem.entries.insert(entry.log_id.index, entry);
            }
        }
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::info!(%log_id, "truncating the raft log");
        self.with_file(move |file| file.truncate(log_id.index))
            .await
            .map_err(write_error)?;
        self.mem_write().entries.split_off(&log_id.index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(%log_id, "purging the raft log");
        self.with_file(move |file| file.purge(log_id))
            .await
            .map_err(write_error)?;
        let mut mem = self.mem_write();
        mem.entries = mem.entries.split_off(&(log_id.index + 1));
        mem.last_purged = Some(log_id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::ProposalData;
    use openraft::storage::RaftLogStorageExt;
    use openraft::{CommittedLeaderId, EntryPayload};

    fn entry(term: u64, index: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Normal(ProposalData {
                base_offset: index,
                records: Vec::new(),
            }),
        }
    }

    fn open(dir: &Path) -> LogStore {
        LogStore::open(dir, Arc::default()).unwrap()
    }

    async fn append(store: &mut LogStore, entries: Vec<Entry>) {
        store.blocking_append(entries).await.unwrap();
    }

    async fn indexes(store: &mut LogStore) -> Vec<u64> {
        store
            .try_get_log_entries(..)
            .await
            .unwrap()
            .iter()
            .map(|e| e.log_id.index)
            .collect()
    }

    #[tokio::test]
    async fn entries_truncate_and_purge_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path());
        append(&mut store, (0..6).map(|i| entry(1, i)).collect()).await;
        store
            .truncate(LogId::new(CommittedLeaderId::new(1, 1), 4))
            .await
            .unwrap();
        append(&mut store, vec![entry(2, 4)]).await;
        store
            .purge(LogId::new(CommittedLeaderId::new(1, 1), 1))
            .await
            .unwrap();
        assert_eq!(indexes(&mut store).await, vec![2, 3, 4]);
        drop(store);

        let mut store = open(dir.path());
        assert_eq!(indexes(&mut store).await, vec![2, 3, 4]);
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id.map(|l| l.index), Some(1));
        assert_eq!(
            state.last_log_id.map(|l| (l.leader_id.term, l.index)),
            Some((2, 4))
        );
        // Appends after a purge land after the kept entries, and a truncate still finds them.
        append(&mut store, vec![entry(2, 5), entry(2, 6)]).await;
        store
            .truncate(LogId::new(CommittedLeaderId::new(2, 1), 6))
            .await
            .unwrap();
        drop(store);
        let mut store = open(dir.path());
        assert_eq!(indexes(&mut store).await, vec![2, 3, 4, 5]);

        // Purging past the last entry (a snapshot installed ahead of the log) empties it.
        store
            .purge(LogId::new(CommittedLeaderId::new(3, 1), 9))
            .await
            .unwrap();
        drop(store);
        let mut store = open(dir.path());
        assert!(indexes(&mut store).await.is_empty());
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id.map(|l| l.index), Some(9));
        append(&mut store, vec![entry(3, 10)]).await;
        drop(store);
        assert_eq!(indexes(&mut open(dir.path())).await, vec![10]);
    }

    #[tokio::test]
    async fn torn_tail_is_cut_and_middle_corruption_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path());
        append(&mut store, vec![entry(1, 0), entry(1, 1)]).await;
        drop(store);
        let path = dir.path().join(LOG_FILE);
        let bytes = std::fs::read(&path).unwrap();
        let second = serde_json::to_vec(&entry(1, 1)).unwrap().len() + FRAME_HEADER_BYTES;
        let first_end = bytes.len() - second;
        for cut in first_end + 1..bytes.len() {
            std::fs::write(&path, &bytes[..cut]).unwrap();
            let mut store = open(dir.path());
            assert_eq!(indexes(&mut store).await, vec![0], "cut at {cut}");
            assert_eq!(std::fs::metadata(&path).unwrap().len(), first_end as u64);
        }
        let mut corrupt = bytes.clone();
        corrupt[first_end - 3] ^= 0xff; // inside entry 0, which is followed by entry 1
        std::fs::write(&path, &corrupt).unwrap();
        assert!(matches!(
            LogStore::open(dir.path(), Arc::default()),
            Err(QuorumError::Corrupt(_))
        ));
    }

    #[tokio::test]
    async fn vote_and_committed_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path());
        assert_eq!(store.read_vote().await.unwrap(), None);
        let vote = Vote::new(3, 2);
        store.save_vote(&vote).await.unwrap();
        let committed = Some(LogId::new(CommittedLeaderId::new(3, 2), 7));
        store.save_committed(committed).await.unwrap();
        drop(store);
        let mut store = open(dir.path());
        assert_eq!(store.read_vote().await.unwrap(), Some(vote));
        assert_eq!(store.read_committed().await.unwrap(), committed);
    }
}
