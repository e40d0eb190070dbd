//! The metadata log: the durable, ordered sequence of record batches behind the image.
//!
//! [`MetadataLog`] is the seam where a Raft-replicated log (openraft) will plug in: the store
//! only appends batches and replays them. [`FileMetadataLog`] is the single-node implementation:
//! one append-only file of frames ([`crate::frame`]: `[u32 length][u32 crc32c][json batch]`),
//! each append fsynced before it returns, so a committed change survives a crash. A torn last
//! frame (crash mid-write) is cut off at open; a bad frame in the middle is an error, never
//! skipped.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::frame::{self, FRAME_HEADER_BYTES};
use crate::records::MetadataRecord;
use crate::MetaError;

/// Largest batch accepted in the log: a frame's body, whose bound the replay also applies to
/// the allocation a corrupt length could cause.
pub const MAX_BATCH_BYTES: usize = frame::MAX_FRAME_BODY_BYTES;

/// An ordered, durable log of metadata record batches.
pub trait MetadataLog: Send {
    /// Appends one batch atomically and durably; returns its offset (0-based batch count).
    fn append(&mut self, batch: &[MetadataRecord]) -> Result<u64, MetaError>;
    /// Every batch committed so far, in order.
    fn replay(&mut self) -> Result<Vec<Vec<MetadataRecord>>, MetaError>;
}

pub struct FileMetadataLog {
    path: PathBuf,
    file: File,
    next_offset: u64,
}

impl FileMetadataLog {
    pub fn open(path: &Path) -> Result<Self, MetaError> {
        let io = |e| MetaError::io(format!("open metadata log {}", path.display()), e);
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(io)?;
        let mut log = Self {
            path: path.to_path_buf(),
            file,
            next_offset: 0,
        };
        let (batches, valid_len) = log.scan()?;
        let file_len = log.file.metadata().map_err(io)?.len();
        if valid_len < file_len {
            tracing::warn!(
                path = %path.display(),
                valid_len,
                file_len,
                "truncating torn tail of the metadata log"
            );
            log.file.set_len(valid_len).map_err(io)?;
            log.file.sync_all().map_err(io)?;
        }
        log.next_offset = batches.len() as u64;
        Ok(log)
    }

    /// Reads all frames; returns them and the byte length of the valid prefix.
    fn scan(&mut self) -> Result<(Vec<Vec<MetadataRecord>>, u64), MetaError> {
        let path = self.path.display().to_string();
        let mut data = Vec::new();
        self.file
            .seek(SeekFrom::Start(0))
            .and_then(|_| self.file.read_to_end(&mut data))
            .map_err(|e| MetaError::io(format!("read metadata log {path}"), e))?;
        let scan = frame::scan(&data).map_err(|e| MetaError::Corrupt(format!("{path}: {e}")))?;
        let mut batches = Vec::with_capacity(scan.frames.len());
        for f in &scan.frames {
            let batch: Vec<MetadataRecord> = serde_json::from_slice(f.body).map_err(|e| {
                MetaError::Corrupt(format!(
                    "{path}: undecodable batch at byte {}: {e}",
                    f.position
                ))
            })?;
            batches.push(batch);
        }
        Ok((batches, scan.valid_len))
    }
}

impl MetadataLog for FileMetadataLog {
    fn append(&mut self, batch: &[MetadataRecord]) -> Result<u64, MetaError> {
        let body = serde_json::to_vec(batch)
            .map_err(|e| MetaError::Corrupt(format!("cannot encode metadata batch: {e}")))?;
        if body.len() > MAX_BATCH_BYTES {
            return Err(MetaError::TooLarge {
                size_bytes: body.len(),
            });
        }
        let mut framed = Vec::with_capacity(FRAME_HEADER_BYTES + body.len());
        frame::encode(&body, &mut framed);
        let path = self.path.display().to_string();
        self.file
            .write_all(&framed)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| MetaError::io(format!("append to metadata log {path}"), e))?;
        let offset = self.next_offset;
        self.next_offset += 1;
        Ok(offset)
    }

    fn replay(&mut self) -> Result<Vec<Vec<MetadataRecord>>, MetaError> {
        Ok(self.scan()?.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn topic(name: &str) -> MetadataRecord {
        MetadataRecord::Topic {
            name: name.into(),
            topic_id: Uuid::new_v4(),
        }
    }

    #[test]
    fn appends_survive_reopen_and_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metadata.log");
        let mut log = FileMetadataLog::open(&path).unwrap();
        assert_eq!(log.append(&[topic("a")]).unwrap(), 0);
        assert_eq!(log.append(&[topic("b"), topic("c")]).unwrap(), 1);
        drop(log);
        let full_len = std::fs::metadata(&path).unwrap().len();
        // Every possible torn write of the last batch recovers the first batch only.
        let first_len = {
            let mut log = FileMetadataLog::open(&path).unwrap();
            let batches = log.replay().unwrap();
            assert_eq!(batches.len(), 2);
            let body = serde_json::to_vec(&batches[0]).unwrap();
            (FRAME_HEADER_BYTES + body.len()) as u64
        };
        let bytes = std::fs::read(&path).unwrap();
        for cut in first_len..full_len {
            std::fs::write(&path, &bytes[..cut as usize]).unwrap();
            let mut log = FileMetadataLog::open(&path).unwrap();
            assert_eq!(log.replay().unwrap().len(), 1, "cut at {cut}");
            assert_eq!(std::fs::metadata(&path).unwrap().len(), first_len);
            assert_eq!(log.append(&[topic("d")]).unwrap(), 1);
        }
    }

    #[test]
    fn corruption_in_the_middle_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metadata.log");
        let mut log = FileMetadataLog::open(&path).unwrap();
        log.append(&[topic("a")]).unwrap();
        log.append(&[topic("b")]).unwrap();
        drop(log);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[FRAME_HEADER_BYTES + 2] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            FileMetadataLog::open(&path),
            Err(MetaError::Corrupt(_))
        ));
    }
}
