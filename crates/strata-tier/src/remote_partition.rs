//! One partition's data in the tier: uploading rolled segments, reading batches back, and
//! deleting them, with the manifest as the single point where a change becomes visible.
//!
//! Layout under the store's root:
//! `<topic>-<topic id>/<partition>/manifest.json` and
//! `<topic>-<topic id>/<partition>/<base offset, 20 digits>-<segment id>.<log|index|...>`.
//! The topic id keeps a re-created topic of the same name apart from the old one.
//!
//! Callers serialise changes per partition (one uploader per partition); reads may run
//! concurrently with them, against the manifest they hold.

use std::collections::HashSet;
use std::path::PathBuf;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload, WriteMultipart};
use strata_log::{check_crc, RecordBatchHeader};
use tokio::io::AsyncReadExt;

use crate::error::TierError;
use crate::manifest::{RemoteManifest, RemoteSegment};
use crate::store::TierStore;

const MANIFEST: &str = "manifest.json";
/// Upload part size for segment files (object stores take parts of 5 MiB and more).
const UPLOAD_PART_BYTES: usize = 8 << 20;
/// Bytes of a v2 record batch header.
const BATCH_HEADER_BYTES: usize = 61;
/// A read starts at an offset-index entry, at most about `index.interval.bytes` (4 KiB by
/// default) before the wanted batch; the first ranged GET covers that much extra.
const INDEX_SLACK_BYTES: usize = 64 << 10;

/// A rolled local segment to upload.
#[derive(Clone, Debug)]
pub struct SegmentUpload {
    pub base_offset: i64,
    pub end_offset: i64,
    pub max_timestamp_ms: i64,
    pub leader_epochs: Vec<(i32, i64)>,
    /// The `.log` file.
    pub log: PathBuf,
    /// Auxiliary files, by extension: `index`, `timeindex`, `snapshot`, ...
    pub aux: Vec<(String, PathBuf)>,
}

/// One partition's directory in the tier.
#[derive(Clone, Debug)]
pub struct RemotePartition {
    store: TierStore,
    dir: Path,
}

impl RemotePartition {
    pub fn new(store: &TierStore, topic: &str, topic_id: &str, partition: i32) -> Self {
        RemotePartition {
            store: store.clone(),
            dir: store.path(&[&format!("{topic}-{topic_id}"), &partition.to_string()]),
        }
    }

    fn object(&self, name: &str) -> Path {
        self.dir.clone().join(name)
    }

    fn segment_object(&self, base_offset: i64, id: &str, ext: &str) -> Path {
        self.object(&format!("{base_offset:020}-{id}.{ext}"))
    }

    /// The partition's manifest; an empty one when nothing was ever uploaded.
    pub async fn load_manifest(&self) -> Result<RemoteManifest, TierError> {
        match self.store.store.get(&self.object(MANIFEST)).await {
            Ok(got) => RemoteManifest::from_json(&got.bytes().await?),
            Err(object_store::Error::NotFound { .. }) => Ok(RemoteManifest::new()),
            Err(e) => Err(e.into()),
        }
    }

    async fn write_manifest(&self, manifest: &RemoteManifest) -> Result<(), TierError> {
        manifest.check()?;
        self.store
            .store
            .put(&self.object(MANIFEST), PutPayload::from(manifest.to_json()))
            .await?;
        Ok(())
    }

    /// Uploads the segment's files, then records it in the manifest (written before this
    /// returns). On error the manifest is unchanged, in the store and in `manifest`; objects
    /// already written are orphans for [`RemotePartition::clean_orphans`].
    pub async fn upload_segment(
        &self,
        manifest: &mut RemoteManifest,
        upload: SegmentUpload,
    ) -> Result<RemoteSegment, TierError> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let mut segment = RemoteSegment {
            id: id.clone(),
            base_offset: upload.base_offset,
            end_offset: upload.end_offset,
            max_timestamp_ms: upload.max_timestamp_ms,
            size_bytes: 0,
            crc32c: 0,
            leader_epochs: upload.leader_epochs.clone(),
            files: Vec::new(),
        };
        manifest.check_append(&segment)?;
        for (ext, path) in &upload.aux {
            let bytes = tokio::fs::read(path)
                .await
                .map_err(TierError::io(format!("reading {}", path.display())))?;
            self.store
                .store
                .put(
                    &self.segment_object(upload.base_offset, &id, ext),
                    PutPayload::from(bytes),
                )
                .await?;
            segment.files.push(ext.clone());
        }
        let (size, crc) = self
            .upload_file(
                &upload.log,
                &self.segment_object(upload.base_offset, &id, "log"),
            )
            .await?;
        segment.size_bytes = size;
        segment.crc32c = crc;
        let mut next = manifest.clone();
        next.segments.push(segment.clone());
        self.write_manifest(&next).await?;
        *manifest = next;
        Ok(segment)
    }

    /// Streams a file into an object in parts; returns its size and CRC-32C.
    async fn upload_file(
        &self,
        file: &std::path::Path,
        to: &Path,
    ) -> Result<(u64, u32), TierError> {
        let mut f = tokio::fs::File::open(file)
            .await
            .map_err(TierError::io(format!("opening {}", file.display())))?;
        let upload = self.store.store.put_multipart(to).await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, UPLOAD_PART_BYTES);
        let mut buf = vec![0u8; 1 << 20];
        let (mut size, mut crc) = (0u64, 0u32);
        loop {
            let n = match f.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    let _ = writer.abort().await;
                    return Err(TierError::io(format!("reading {}", file.display()))(e));
                }
            };
            crc = crc32c::crc32c_append(crc, &buf[..n]);
            size += n as u64;
            writer.wait_for_capacity(2).await?;
            writer.write(&buf[..n]);
        }
        writer.finish().await?;
        Ok((size, crc))
    }

    /// Whole batches from `offset` on, at most `max_bytes` of them (but at least one batch
    /// when `min_one_batch`), from the segment holding `offset`. Empty when the tier has
    /// nothing at or after `offset`. Every batch returned has had its CRC checked.
    pub async fn read(
        &self,
        manifest: &RemoteManifest,
        offset: i64,
        max_bytes: usize,
        min_one_batch: bool,
    ) -> Result<Bytes, TierError> {
        let Some(seg) = manifest.segment_for(offset) else {
            return Ok(Bytes::new());
        };
        let log = self.segment_object(seg.base_offset, &seg.id, "log");
        let start = self.index_position(seg, offset).await?;
        let end = seg
            .size_bytes
            .min(start + (max_bytes + INDEX_SLACK_BYTES) as u64);
        let buf = self.store.store.get_range(&log, start..end).await?;
        let corrupt = |why: String| {
            TierError::Corrupt(format!(
                "segment {} of {}: {why}",
                seg.base_offset, self.dir
            ))
        };
        let mut cursor = 0usize;
        let mut out: Option<(usize, usize)> = None;
        while buf.len() - cursor >= BATCH_HEADER_BYTES {
            let h = RecordBatchHeader::parse(&buf[cursor..]).map_err(|e| corrupt(e.to_string()))?;
            let size = h.size_bytes();
            if h.last_offset() < offset {
                cursor += size;
                continue;
            }
            let first = *out.get_or_insert((cursor, cursor));
            let have_some = first.1 > first.0;
            if cursor + size - first.0 > max_bytes && (have_some || !min_one_batch) {
                break;
            }
            if cursor + size > buf.len() {
                break;
            }
            check_crc(&buf[cursor..cursor + size], &h).map_err(|e| corrupt(e.to_string()))?;
            cursor += size;
            out = Some((first.0, cursor));
        }
        match out {
            Some((from, to)) if to > from => Ok(buf.slice(from..to)),
            // The first wanted batch did not fit in what was read.
            Some((from, _)) if min_one_batch => {
                let at = start + from as u64;
                let header = self
                    .store
                    .store
                    .get_range(
                        &log,
                        at..(at + BATCH_HEADER_BYTES as u64).min(seg.size_bytes),
                    )
                    .await?;
                let h = RecordBatchHeader::parse(&header).map_err(|e| corrupt(e.to_string()))?;
                let to = at + h.size_bytes() as u64;
                if to > seg.size_bytes {
                    return Err(corrupt(format!("batch at {at} runs past the object's end")));
                }
                let batch = self.store.store.get_range(&log, at..to).await?;
                check_crc(&batch, &h).map_err(|e| corrupt(e.to_string()))?;
                Ok(batch)
            }
            _ => Ok(Bytes::new()),
        }
    }

    /// Position of the last offset-index entry at or before `offset` (0 without an index).
    async fn index_position(&self, seg: &RemoteSegment, offset: i64) -> Result<u64, TierError> {
        if !seg.files.iter().any(|f| f == "index") {
            return Ok(0);
        }
        let index = self
            .store
            .store
            .get(&self.segment_object(seg.base_offset, &seg.id, "index"))
            .await?
            .bytes()
            .await?;
        let target = (offset - seg.base_offset).max(0);
        let mut position = 0u64;
        for entry in index.chunks_exact(8) {
            let rel = u32::from_be_bytes([entry[0], entry[1], entry[2], entry[3]]) as i64;
            let pos = u32::from_be_bytes([entry[4], entry[5], entry[6], entry[7]]) as u64;
            if rel > target || pos >= seg.size_bytes {
                break;
            }
            position = pos;
        }
        Ok(position)
    }

    /// Drops every segment that ends below `offset` from the manifest (written first), then
    /// deletes their objects. Returns how many segments went.
    pub async fn delete_below(
        &self,
        manifest: &mut RemoteManifest,
        offset: i64,
    ) -> Result<usize, TierError> {
        let mut next = manifest.clone();
        next.log_start_offset = next.log_start_offset.max(offset);
        let keep_from = next.segments.partition_point(|s| s.end_offset < offset);
        let gone: Vec<RemoteSegment> = next.segments.drain(..keep_from).collect();
        self.write_manifest(&next).await?;
        *manifest = next;
        for seg in &gone {
            self.delete_segment_objects(seg).await?;
        }
        Ok(gone.len())
    }

    async fn delete_segment_objects(&self, seg: &RemoteSegment) -> Result<(), TierError> {
        for ext in seg.files.iter().map(String::as_str).chain(["log"]) {
            match self
                .store
                .store
                .delete(&self.segment_object(seg.base_offset, &seg.id, ext))
                .await
            {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Deletes everything of the partition, the manifest first (so a half-done deletion never
    /// leaves a manifest naming missing objects). Idempotent: call again until it succeeds.
    pub async fn delete_all(&self) -> Result<(), TierError> {
        match self.store.store.delete(&self.object(MANIFEST)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let objects: Vec<_> = self.store.store.list(Some(&self.dir)).try_collect().await?;
        for meta in objects {
            match self.store.store.delete(&meta.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Deletes objects under the partition that `manifest` does not name: leftovers of an
    /// upload or deletion interrupted by a crash. Only call when no upload of this partition
    /// is in progress. Returns how many objects were deleted.
    pub async fn clean_orphans(&self, manifest: &RemoteManifest) -> Result<usize, TierError> {
        let named: HashSet<&str> = manifest.segments.iter().map(|s| s.id.as_str()).collect();
        let objects: Vec<_> = self.store.store.list(Some(&self.dir)).try_collect().await?;
        let mut deleted = 0;
        for meta in objects {
            let Some(name) = meta.location.filename() else {
                continue;
            };
            if name == MANIFEST {
                continue;
            }
            // <base offset>-<id>.<ext>
            let id = name
                .split_once('-')
                .and_then(|(_, rest)| rest.split_once('.'))
                .map(|(id, _)| id);
            if id.is_some_and(|id| named.contains(id)) {
                continue;
            }
            self.store.store.delete(&meta.location).await?;
            deleted += 1;
        }
        Ok(deleted)
    }
}
