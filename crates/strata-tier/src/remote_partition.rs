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
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload, WriteMultipart};
use strata_log::{
    check_crc, find_record_by_timestamp, offset_of_max_timestamp, RecordBatchHeader,
    TimestampAndOffset,
};
use tokio::io::AsyncReadExt;

use crate::cache::{LogObject, RemoteReadCache};
use crate::error::TierError;
use crate::manifest::{RemoteManifest, RemoteSegment};
use crate::store::{blocking, delete_staging_files, remove_empty_dirs, TierStore};

pub(crate) const MANIFEST: &str = "manifest.json";
/// Upload part size for segment files (object stores take parts of 5 MiB and more).
const UPLOAD_PART_BYTES: usize = 8 << 20;
/// Bytes of a v2 record batch header.
const BATCH_HEADER_BYTES: usize = 61;
/// A read starts at an offset-index entry, at most about `index.interval.bytes` (4 KiB by
/// default) before the wanted batch; the first ranged GET covers that much extra.
const INDEX_SLACK_BYTES: usize = 64 << 10;
/// Bytes of `.log` object read at a time when walking batch headers without a cache (with
/// one, a chunk at a time): the first read is small, as the batch sought is usually near the
/// start, and each further one twice as large, up to the maximum.
const SCAN_WINDOW_FIRST_BYTES: u64 = 64 << 10;
const SCAN_WINDOW_MAX_BYTES: u64 = 1 << 20;
/// Bytes of an offset-index entry: relative offset u32, position u32.
const OFFSET_ENTRY_BYTES: usize = 8;
/// Bytes of a time-index entry: timestamp i64, relative offset i32.
const TIME_ENTRY_BYTES: usize = 12;

/// An auxiliary file of a segment to upload: a local file, or bytes built in memory (an
/// index rebuilt for the upload, a leader-epoch checkpoint cut to the segment, ...).
#[derive(Clone, Debug)]
pub enum AuxData {
    /// Read whole when uploaded. A file that does not exist then is an error
    /// ([`TierError::Io`]), never silently skipped: whether the upload can go without it is
    /// the caller's decision.
    File(PathBuf),
    /// Uploaded as given.
    Bytes(Bytes),
}

/// A rolled local segment to upload.
#[derive(Clone, Debug)]
pub struct SegmentUpload {
    pub base_offset: i64,
    pub end_offset: i64,
    pub max_timestamp_ms: i64,
    /// Offset of the first batch holding `max_timestamp_ms` (-1 if none).
    pub max_timestamp_offset: i64,
    /// The segment was compacted: its offsets may have gaps.
    pub compacted: bool,
    pub leader_epochs: Vec<(i32, i64)>,
    /// The `.log` file.
    pub log: PathBuf,
    /// Auxiliary files, by extension: `index`, `timeindex`, `snapshot`, ... An extension is
    /// letters, digits, `_` and `-`, is not `log`, and appears once. `index` (Kafka's offset
    /// index) speeds up reads and `timeindex` (Kafka's time index) timestamp lookups; both are
    /// optional.
    pub aux: Vec<(String, AuxData)>,
}

/// One partition's directory in the tier.
#[derive(Clone, Debug)]
pub struct RemotePartition {
    store: TierStore,
    dir: Path,
    /// Shared by the broker's partitions; `None` reads straight from the store.
    cache: Option<Arc<RemoteReadCache>>,
}

impl RemotePartition {
    pub fn new(store: &TierStore, topic: &str, topic_id: &str, partition: i32) -> Self {
        RemotePartition {
            store: store.clone(),
            dir: store.path(&[&format!("{topic}-{topic_id}"), &partition.to_string()]),
            cache: None,
        }
    }

    /// Reads (batches, timestamp lookups) go through `cache`: indexes and `.log` chunks come
    /// from it when cached, and a read of chunk k fetches chunk k + 1 in the background.
    /// What is returned is the same as without a cache.
    pub fn with_cache(mut self, cache: Arc<RemoteReadCache>) -> Self {
        self.cache = Some(cache);
        self
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
            max_timestamp_offset: upload.max_timestamp_offset,
            compacted: upload.compacted,
            size_bytes: 0,
            crc32c: 0,
            leader_epochs: upload.leader_epochs.clone(),
            files: Vec::new(),
        };
        manifest.check_append(&segment)?;
        check_aux_names(&upload.aux)?;
        for (ext, data) in &upload.aux {
            let bytes = match data {
                AuxData::File(path) => Bytes::from(
                    tokio::fs::read(path)
                        .await
                        .map_err(TierError::io(format!("reading {}", path.display())))?,
                ),
                AuxData::Bytes(bytes) => bytes.clone(),
            };
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
    /// when `min_one_batch`, however large), from the segment holding `offset` (or, when no
    /// batch of that segment reaches `offset`, as after compaction, the next one). Empty when
    /// the tier has nothing at or after `offset`, or when the first batch is larger than
    /// `max_bytes` and not `min_one_batch`. Every batch returned has had its CRC checked, on
    /// this read, and every batch walked its offsets, which the CRC does not cover (each
    /// batch must follow the one before it, within the segment's offsets); anything that
    /// does not parse or check is [`TierError::Corrupt`].
    pub async fn read(
        &self,
        manifest: &RemoteManifest,
        offset: i64,
        max_bytes: usize,
        min_one_batch: bool,
    ) -> Result<Bytes, TierError> {
        let mut next = offset;
        // Bounded by the manifest's segments: each turn moves past one.
        while let Some(seg) = manifest.segment_for(next) {
            let following = manifest.segment_for(seg.end_offset.saturating_add(1));
            if let Some(found) = self
                .read_segment(seg, following, offset, max_bytes, min_one_batch)
                .await?
            {
                return Ok(found);
            }
            next = seg.end_offset.saturating_add(1);
        }
        Ok(Bytes::new())
    }

    /// [`RemotePartition::read`] within one segment; `None` when no batch of it ends at or
    /// after `offset`.
    ///
    /// Reads `max_bytes` plus [`INDEX_SLACK_BYTES`] from the offset-index position, walks the
    /// batches below `offset`, and takes whole batches from there. When the walk leaves that
    /// range before finding a wanted batch, or the first wanted batch (no larger than
    /// `max_bytes`) does not end in it, it reads again from there: every read makes progress,
    /// so the loop ends within the segment. The offsets of every batch walked are checked
    /// ([`OffsetChain`]), across such reads again too.
    ///
    /// A read that reaches the segment's last chunk starts a read-ahead of the first chunk of
    /// `following`, so a consumer crossing segments does not wait for it.
    async fn read_segment(
        &self,
        seg: &RemoteSegment,
        following: Option<&RemoteSegment>,
        offset: i64,
        max_bytes: usize,
        min_one_batch: bool,
    ) -> Result<Option<Bytes>, TierError> {
        let log = self.log_object(seg);
        let corrupt = |why: String| self.corrupt(seg, why);
        let (mut start, entry_offset) = self.index_position(seg, offset).await?;
        // Kept across the reads of this loop: a read again from a position continues the
        // walk, so the next batch must still follow the last one walked.
        let mut chain = OffsetChain::starting_at(seg, start, entry_offset);
        loop {
            if start >= seg.size_bytes {
                return Ok(None);
            }
            let want = max_bytes.saturating_add(INDEX_SLACK_BYTES) as u64;
            let end = seg.size_bytes.min(start.saturating_add(want));
            if let (Some(cache), Some(following)) = (&self.cache, following) {
                if end.saturating_add(cache.chunk_bytes() as u64) >= seg.size_bytes {
                    cache.read_ahead(&self.log_object(following), 0);
                }
            }
            let buf = self.read_log(&log, start, end).await?;
            let mut cursor = 0usize;
            // Where the returned batches start in `buf`, once the first is found.
            let mut first: Option<usize> = None;
            // Where to read again from: a wanted batch that does not end in `buf`.
            let mut again: Option<u64> = None;
            while cursor + BATCH_HEADER_BYTES <= buf.len() {
                let h =
                    RecordBatchHeader::parse(&buf[cursor..]).map_err(|e| corrupt(e.to_string()))?;
                let size = h.size_bytes();
                let at = start + cursor as u64;
                if at + size as u64 > seg.size_bytes {
                    return Err(corrupt(format!("batch at {at} runs past the object's end")));
                }
                chain.check(seg, &h, at).map_err(corrupt)?;
                if h.last_offset() < offset {
                    cursor += size;
                    chain.advance(&h);
                    continue;
                }
                let whole = cursor + size <= buf.len();
                match first {
                    None if size > max_bytes => {
                        if !min_one_batch {
                            return Ok(Some(Bytes::new()));
                        }
                        // The one batch over budget, however large (it may span chunks).
                        let batch = if whole {
                            buf.slice(cursor..cursor + size)
                        } else {
                            self.read_log(&log, at, at + size as u64).await?
                        };
                        if batch.len() != size {
                            return Err(corrupt(format!("batch at {at} is torn")));
                        }
                        check_crc(&batch, &h).map_err(|e| corrupt(e.to_string()))?;
                        return Ok(Some(batch));
                    }
                    None if !whole => {
                        again = Some(at);
                        break;
                    }
                    None => first = Some(cursor),
                    Some(from) => {
                        if cursor + size - from > max_bytes || !whole {
                            break;
                        }
                    }
                }
                check_crc(&buf[cursor..cursor + size], &h).map_err(|e| corrupt(e.to_string()))?;
                cursor += size;
                chain.advance(&h);
            }
            if let Some(from) = first {
                return Ok(Some(buf.slice(from..cursor)));
            }
            let next = again.unwrap_or(start + cursor as u64);
            if next >= seg.size_bytes {
                return Ok(None);
            }
            if next <= start {
                return Err(corrupt(format!(
                    "{} bytes at {start} do not hold a batch header",
                    buf.len()
                )));
            }
            start = next;
        }
    }

    /// Kafka's ListOffsets by timestamp over the tier (`RemoteLogManager.findOffsetByTimestamp`):
    /// the first record at or after `log_start_offset` whose timestamp is at least
    /// `timestamp_ms`, with its timestamp and its batch's leader epoch; in a LogAppendTime
    /// batch every record has the batch's timestamp. `None` when no uploaded record qualifies. The manifest's own
    /// `log_start_offset` is honoured too: records below it are deleted.
    ///
    /// Segments whose max timestamp is below `timestamp_ms` or which end below the log start
    /// are skipped without a request. In a segment, the uploaded `timeindex` (if any) gives
    /// where to start: after the last entry whose timestamp is below `timestamp_ms`, since
    /// no batch up to that entry's offset can qualify. Batch headers are then walked from the
    /// offset index's position, in bounded reads, their offsets checked as
    /// [`RemotePartition::read`] checks them; a batch whose max timestamp reaches the target
    /// is read whole, its CRC checked and its records read (inflated if compressed, bounded
    /// by `strata-log`) until one answers — usually in the first such batch.
    pub async fn offset_for_timestamp(
        &self,
        manifest: &RemoteManifest,
        timestamp_ms: i64,
        log_start_offset: i64,
    ) -> Result<Option<TimestampAndOffset>, TierError> {
        let start = log_start_offset.max(manifest.log_start_offset);
        for seg in &manifest.segments {
            if seg.end_offset < start || seg.max_timestamp_ms < timestamp_ms {
                continue;
            }
            if let Some(found) = self.timestamp_in_segment(seg, timestamp_ms, start).await? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// ListOffsets MAX_TIMESTAMP over the tier (KIP-734): the segment ending at or after
    /// `log_start_offset` with the largest max timestamp (the first on a tie), and in it the
    /// first record holding that timestamp, never below `log_start_offset`, with the leader
    /// epoch of its batch. The manifest names the batch holding it; that batch is read (CRC
    /// checked) and its records walked. When the manifest does not know the batch (older
    /// manifests) or no record of it carries the timestamp, the answer falls back to the
    /// batch's (or segment's) base offset, and its epoch to the manifest's for that offset;
    /// so does an answer moved up to `log_start_offset`. `None` when the tier holds no
    /// timestamps.
    pub async fn max_timestamp(
        &self,
        manifest: &RemoteManifest,
        log_start_offset: i64,
    ) -> Result<Option<TimestampAndOffset>, TierError> {
        let start = log_start_offset.max(manifest.log_start_offset);
        let best = manifest
            .segments
            .iter()
            .filter(|s| s.end_offset >= start && s.max_timestamp_ms >= 0)
            .fold(None, |best: Option<&RemoteSegment>, s| match best {
                Some(b) if b.max_timestamp_ms >= s.max_timestamp_ms => best,
                _ => Some(s),
            });
        let Some(seg) = best else {
            return Ok(None);
        };
        let batch_offset = seg.max_timestamp_offset.max(seg.base_offset);
        let mut offset = batch_offset;
        let mut leader_epoch = None;
        if seg.max_timestamp_offset >= 0 {
            let batches = self.read(manifest, batch_offset, 1, true).await?;
            if let Ok(h) = RecordBatchHeader::parse(&batches) {
                if h.max_timestamp == seg.max_timestamp_ms && h.size_bytes() <= batches.len() {
                    let found =
                        offset_of_max_timestamp(&batches[..h.size_bytes()], &h).map_err(|e| {
                            self.corrupt(seg, format!("batch at offset {batch_offset}: {e}"))
                        })?;
                    offset = found.unwrap_or(offset);
                    leader_epoch = h.leader_epoch();
                }
            }
        }
        if offset < start {
            offset = start;
            leader_epoch = None;
        }
        Ok(Some(TimestampAndOffset {
            timestamp_ms: seg.max_timestamp_ms,
            offset,
            leader_epoch: leader_epoch.or_else(|| manifest.epoch_for_offset(offset)),
        }))
    }

    async fn timestamp_in_segment(
        &self,
        seg: &RemoteSegment,
        timestamp_ms: i64,
        start: i64,
    ) -> Result<Option<TimestampAndOffset>, TierError> {
        let corrupt = |why: String| self.corrupt(seg, why);
        let mut from = start.max(seg.base_offset);
        if let Some(index) = self.read_aux(seg, "timeindex").await? {
            // Entries are meant to be monotonic; stopping at the first at or above the
            // target keeps the skip safe even if they are not.
            for entry in index.chunks_exact(TIME_ENTRY_BYTES) {
                let mut ts = [0u8; 8];
                ts.copy_from_slice(&entry[..8]);
                let ts = i64::from_be_bytes(ts);
                let rel = i32::from_be_bytes([entry[8], entry[9], entry[10], entry[11]]);
                let entry_offset = seg.base_offset + i64::from(rel);
                if ts >= timestamp_ms || rel < 0 || entry_offset > seg.end_offset {
                    break;
                }
                from = from.max(entry_offset + 1);
            }
        }
        if from > seg.end_offset {
            return Ok(None);
        }
        let log = self.log_object(seg);
        let (mut pos, entry_offset) = self.index_position(seg, from).await?;
        let mut chain = OffsetChain::starting_at(seg, pos, entry_offset);
        let mut window = Bytes::new();
        let mut window_start = pos;
        let mut window_bytes = SCAN_WINDOW_FIRST_BYTES;
        // Bounded by the segment: every turn moves `pos` forward by a batch.
        while pos < seg.size_bytes {
            let in_window = pos >= window_start
                && pos + BATCH_HEADER_BYTES as u64 <= window_start + window.len() as u64;
            if !in_window {
                window = self.scan_window(&log, pos, window_bytes).await?;
                window_start = pos;
                window_bytes = (window_bytes * 2).min(SCAN_WINDOW_MAX_BYTES);
                if window.len() < BATCH_HEADER_BYTES {
                    return Err(corrupt(format!("torn batch header at {pos}")));
                }
            }
            let rel = (pos - window_start) as usize;
            let h = RecordBatchHeader::parse(&window[rel..]).map_err(|e| corrupt(e.to_string()))?;
            let size = h.size_bytes();
            if pos + size as u64 > seg.size_bytes {
                return Err(corrupt(format!(
                    "batch at {pos} runs past the object's end"
                )));
            }
            chain.check(seg, &h, pos).map_err(corrupt)?;
            // `from`, not `start`: the batches the time index skipped may lie after the
            // offset index's position.
            if h.max_timestamp >= timestamp_ms && h.last_offset() >= from {
                let batch = if rel + size <= window.len() {
                    window.slice(rel..rel + size)
                } else {
                    self.read_log(&log, pos, pos + size as u64).await?
                };
                if batch.len() != size {
                    return Err(corrupt(format!("batch at {pos} is torn")));
                }
                check_crc(&batch, &h).map_err(|e| corrupt(e.to_string()))?;
                let found = find_record_by_timestamp(&batch, &h, timestamp_ms, start)
                    .map_err(|e| corrupt(format!("batch at {pos}: {e}")))?;
                if found.is_some() {
                    return Ok(found);
                }
            }
            pos += size as u64;
            chain.advance(&h);
        }
        Ok(None)
    }

    /// The next bytes to walk batch headers in from `pos`: to the end of `pos`'s chunk with
    /// a cache (at least a header's worth), `bytes` without.
    async fn scan_window(&self, log: &LogObject, pos: u64, bytes: u64) -> Result<Bytes, TierError> {
        let end = match &self.cache {
            Some(cache) => {
                let chunk = cache.chunk_bytes() as u64;
                ((pos / chunk + 1) * chunk).max(pos + BATCH_HEADER_BYTES as u64)
            }
            None => pos + bytes,
        };
        self.read_log(log, pos, end.min(log.size)).await
    }

    /// Position of the last offset-index entry at or before `offset`, and that entry's
    /// offset; (0, `None`) without an index or without such an entry. Entries are (last
    /// offset of a batch, position of that batch), so the batch holding `offset` starts at
    /// or after the position found, and the batch starting there must end at the offset
    /// returned (which [`OffsetChain`] checks).
    async fn index_position(
        &self,
        seg: &RemoteSegment,
        offset: i64,
    ) -> Result<(u64, Option<i64>), TierError> {
        let Some(index) = self.read_aux(seg, "index").await? else {
            return Ok((0, None));
        };
        let target = (offset - seg.base_offset).max(0);
        let mut found = (0u64, None);
        for entry in index.chunks_exact(OFFSET_ENTRY_BYTES) {
            let rel = u32::from_be_bytes([entry[0], entry[1], entry[2], entry[3]]) as i64;
            let pos = u32::from_be_bytes([entry[4], entry[5], entry[6], entry[7]]) as u64;
            if rel > target || pos >= seg.size_bytes {
                break;
            }
            found = (pos, Some(seg.base_offset + rel));
        }
        Ok(found)
    }

    /// The segment's `.log` object, as the cache addresses it.
    fn log_object(&self, seg: &RemoteSegment) -> LogObject {
        LogObject {
            store: Arc::clone(&self.store.store),
            path: self.segment_object(seg.base_offset, &seg.id, "log"),
            segment_id: Arc::from(seg.id.as_str()),
            size: seg.size_bytes,
        }
    }

    /// Bytes `start..end` of a `.log` object, through the cache if there is one. Exactly
    /// `end - start` bytes (`end` at most the object's size): a shorter answer means the
    /// object is not what the manifest says, and is [`TierError::Corrupt`].
    async fn read_log(&self, log: &LogObject, start: u64, end: u64) -> Result<Bytes, TierError> {
        let end = end.min(log.size);
        if start >= end {
            return Ok(Bytes::new());
        }
        let data = match &self.cache {
            Some(cache) => cache.read_range(log, start, end).await?,
            None => self.store.store.get_range(&log.path, start..end).await?,
        };
        if data.len() as u64 != end - start {
            return Err(TierError::Corrupt(format!(
                "{}: got {} bytes at {start}, expected {}",
                log.path,
                data.len(),
                end - start
            )));
        }
        Ok(data)
    }

    /// A whole auxiliary object of the segment (`index`, `timeindex`, `snapshot`, `txnindex`,
    /// ...), through the cache if there is one; `None` when it was not uploaded with it.
    pub async fn read_aux(
        &self,
        seg: &RemoteSegment,
        ext: &'static str,
    ) -> Result<Option<Bytes>, TierError> {
        if !seg.files.iter().any(|f| f == ext) {
            return Ok(None);
        }
        let path = self.segment_object(seg.base_offset, &seg.id, ext);
        let data = match &self.cache {
            Some(cache) => cache.aux(&self.store.store, &path, &seg.id, ext).await?,
            None => self.store.store.get(&path).await?.bytes().await?,
        };
        Ok(Some(data))
    }

    fn corrupt(&self, seg: &RemoteSegment, why: String) -> TierError {
        TierError::Corrupt(format!(
            "segment {} of {}: {why}",
            seg.base_offset, self.dir
        ))
    }

    /// Drops every segment that ends below `offset` from the manifest (written first), then
    /// deletes their objects. Returns how many segments went.
    pub async fn delete_below(
        &self,
        manifest: &mut RemoteManifest,
        offset: i64,
    ) -> Result<usize, TierError> {
        let gone = self.drop_below(manifest, offset).await?;
        self.delete_segments(&gone).await?;
        Ok(gone.len())
    }

    /// The first half of [`RemotePartition::delete_below`]: writes the manifest without the
    /// segments that end below `offset` and returns them. Their objects stay until
    /// [`RemotePartition::delete_segments`], so a caller can first give readers the new
    /// manifest (readers holding the old one still find every object it names).
    pub async fn drop_below(
        &self,
        manifest: &mut RemoteManifest,
        offset: i64,
    ) -> Result<Vec<RemoteSegment>, TierError> {
        let mut next = manifest.clone();
        next.log_start_offset = next.log_start_offset.max(offset);
        let keep_from = next.segments.partition_point(|s| s.end_offset < offset);
        let gone: Vec<RemoteSegment> = next.segments.drain(..keep_from).collect();
        self.write_manifest(&next).await?;
        *manifest = next;
        Ok(gone)
    }

    /// Deletes the objects of segments no manifest names any more. A failure leaves orphans
    /// for [`RemotePartition::clean_orphans`].
    pub async fn delete_segments(&self, gone: &[RemoteSegment]) -> Result<(), TierError> {
        for seg in gone {
            if let Some(cache) = &self.cache {
                cache.invalidate_segment(&seg.id);
            }
            self.delete_segment_objects(seg).await?;
        }
        Ok(())
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
            if let (Some(cache), Some(id)) =
                (&self.cache, meta.location.filename().and_then(segment_id))
            {
                cache.invalidate_segment(id);
            }
            match self.store.store.delete(&meta.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Deletes objects under the partition that `manifest` does not name: leftovers of an
    /// upload or deletion interrupted by a crash. Returns how many objects (and staging files)
    /// were deleted.
    ///
    /// For a `file://` store it also deletes the partition folder's staging files
    /// (`<object>#<n>`: the store writes there and renames when a write completes, so a crash
    /// mid-write leaves one, which listings never show), and the folder if that empties it.
    ///
    /// Invariant: only call when no upload of this partition is in progress (the caller
    /// serialises changes per partition). An upload running meanwhile would lose objects it
    /// wrote before its manifest names them, and, on a local store, the staging file it is
    /// writing.
    ///
    /// Abandoned multipart uploads of cloud stores (S3, ...) are not visible here: the bucket
    /// needs a lifecycle rule aborting incomplete multipart uploads (see [`TierStore`]).
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
            if segment_id(name).is_some_and(|id| named.contains(id)) {
                continue;
            }
            self.store.store.delete(&meta.location).await?;
            deleted += 1;
        }
        if let (Some(dir), Some(root)) = (
            self.store.local_dir(&self.dir),
            self.store.local_root().map(std::path::Path::to_path_buf),
        ) {
            deleted += blocking(move || {
                let staging = delete_staging_files(&dir, false)?;
                if staging > 0 {
                    remove_empty_dirs(&dir, &root);
                }
                Ok(staging)
            })
            .await?;
        }
        Ok(deleted)
    }
}

/// The offsets a walk over a segment's batches expects next.
///
/// A v2 batch's CRC covers its attributes onwards, not its base offset (nor its length,
/// partition leader epoch or magic): a flipped bit there would label the records with other
/// offsets and still check. Offsets are therefore checked structurally, for every batch a walk
/// parses. Tiered segments are never compacted (the broker refuses remote storage for
/// compacted topics), so a segment's offsets are contiguous:
/// - every batch starts right after the one walked before it;
/// - a walk from position 0 starts at the segment's base offset, and a walk from an
///   offset-index entry at a batch ending at the entry's offset;
/// - every batch lies within the segment's offsets, and the batch ending at the object's end
///   ends at the segment's end offset.
///
/// [`OffsetChain::check`] a parsed header, then [`OffsetChain::advance`] past it once the
/// walk moves on: a walk that reads again from a batch checks it again against the same
/// expectation.
#[derive(Clone, Copy, Debug)]
struct OffsetChain {
    /// Base offset the next batch must have; `None` until known (a walk from an index entry).
    base: Option<i64>,
    /// Last offset the next batch must have: the offset of the index entry the walk started
    /// at, for its first batch.
    last: Option<i64>,
    /// A compacted segment: batches only move forwards, with gaps allowed, and the last one
    /// may end before the segment does.
    gaps: bool,
}

impl OffsetChain {
    /// A walk of `seg` from `position`, found with the index entry of offset `entry_offset`
    /// (`None` without one).
    fn starting_at(seg: &RemoteSegment, position: u64, entry_offset: Option<i64>) -> Self {
        OffsetChain {
            base: (position == 0).then_some(seg.base_offset),
            last: entry_offset,
            gaps: seg.compacted,
        }
    }

    /// Checks the offsets of the batch `h` parsed at `position` of `seg`'s `.log` object;
    /// the error says why they cannot be right.
    fn check(
        &self,
        seg: &RemoteSegment,
        h: &RecordBatchHeader,
        position: u64,
    ) -> Result<(), String> {
        let (base, last) = (h.base_offset, h.last_offset());
        if h.last_offset_delta < 0 {
            return Err(format!(
                "batch at {position} has last offset delta {}",
                h.last_offset_delta
            ));
        }
        if let Some(expected) = self.base.filter(|&b| b != base && !(self.gaps && base > b)) {
            return Err(format!(
                "batch at {position} has base offset {base}, expected {expected}"
            ));
        }
        if let Some(expected) = self.last.filter(|&l| l != last) {
            return Err(format!(
                "batch at {position} ends at offset {last}, its offset-index entry says {expected}"
            ));
        }
        if base < seg.base_offset || last > seg.end_offset {
            return Err(format!(
                "batch at {position} holds offsets {base}..={last}, outside the segment's {}..={}",
                seg.base_offset, seg.end_offset
            ));
        }
        if !self.gaps
            && position + h.size_bytes() as u64 == seg.size_bytes
            && last != seg.end_offset
        {
            return Err(format!(
                "the last batch ends at offset {last}, the segment at {}",
                seg.end_offset
            ));
        }
        Ok(())
    }

    /// Moves past the (checked) batch `h`: the next one must start right after it.
    fn advance(&mut self, h: &RecordBatchHeader) {
        self.base = Some(h.last_offset().saturating_add(1));
        self.last = None;
    }
}

/// The segment id in a segment object's name, `<base offset>-<id>.<ext>`.
fn segment_id(name: &str) -> Option<&str> {
    name.split_once('-')
        .and_then(|(_, rest)| rest.split_once('.'))
        .map(|(id, _)| id)
}

/// Refuses auxiliary extensions that would clash with the `.log` object or with each other,
/// or that would not round-trip through object names (`<base>-<id>.<ext>`).
fn check_aux_names(aux: &[(String, AuxData)]) -> Result<(), TierError> {
    let mut seen = HashSet::new();
    for (ext, _) in aux {
        let valid = !ext.is_empty()
            && ext != "log"
            && ext
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid {
            return Err(TierError::InvalidUpload(format!(
                "auxiliary file extension {ext:?} is not usable"
            )));
        }
        if !seen.insert(ext.as_str()) {
            return Err(TierError::InvalidUpload(format!(
                "auxiliary file extension {ext:?} given twice"
            )));
        }
    }
    Ok(())
}
