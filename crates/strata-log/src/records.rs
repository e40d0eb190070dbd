//! Record-level access to magic-v2 batches, used only where Kafka also looks
//! inside batches: produce validation of each record (keys on compacted topics,
//! timestamps), ListOffsets by timestamp (the record, not its batch), and the
//! log cleaner.
//!
//! Two ways in. [`walk_records`] streams a batch's records and hands out what
//! validation and lookups need of each (timestamp and offset deltas, key and
//! value lengths), skipping keys, values and headers without copying them, as
//! Kafka's `skipKeyValueIterator` does: an uncompressed batch is read in place,
//! a compressed one through its codec into a fixed [`WALK_BUFFER_BYTES`] buffer,
//! so memory does not grow with the inflated size. [`records_section`] inflates a
//! whole records section, for the cleaner, which keeps records byte for byte.
//!
//! Compressed record sections are inflated with `flate2`, `lz4`, `zstd` (a decompression
//! context kept per thread) and `snap` (snappy-java's framing one block at a time), never
//! past [`MAX_INFLATED_BATCH_BYTES`]; the compressed bytes are read where they are. Cost per
//! inflated GB on one core of the development VM, 1 KiB records of random letters (the
//! bench's), measured through [`walk_records`]: zstd 0.53-0.57 s (a context per batch cost
//! 1.38 s for 16 KiB batches, 0.65-0.70 s for 128 KiB ones), lz4 0.6-0.8 s, snappy
//! 0.06-0.09 s. Records are never re-encoded field by field: a
//! surviving record is copied byte for byte (its offset and timestamp deltas stay
//! valid because a rebuilt batch keeps the original base offset and base
//! timestamp), so headers, attributes and any unusual-but-valid encodings are
//! preserved exactly.

use std::borrow::Cow;
use std::cell::RefCell;
use std::io::{BufRead, BufReader, Read};
use std::ops::ControlFlow;

use bytes::BytesMut;
use kafka_protocol::compression::{Compressor, Gzip, Lz4, Snappy, Zstd};
use zstd::zstd_safe::DCtx;

use crate::batch::{
    self, read_varint, RecordBatchHeader, BATCH_HEADER_SIZE_BYTES, MIN_RECORD_BODY_BYTES,
};
use crate::error::LogError;

/// Upper bound on the inflated size of one batch's records. Streaming codecs (gzip, lz4,
/// zstd) are read through it; a snappy block declares its inflated length up front and is
/// inflated whole, so the declared length is checked against it before allocating.
pub(crate) const MAX_INFLATED_BATCH_BYTES: u64 = 256 << 20;

/// One record of a batch, borrowed from the (inflated) records section.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RawRecord<'a> {
    /// The whole record including its varint length prefix.
    pub(crate) bytes: &'a [u8],
    pub(crate) timestamp_delta: i64,
    pub(crate) offset_delta: i32,
    pub(crate) key: Option<&'a [u8]>,
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) value: Option<&'a [u8]>,
    pub(crate) value_is_null: bool,
}

/// Reads a zigzag varlong (at most 10 bytes).
fn read_varlong(buf: &[u8]) -> Result<(i64, usize), LogError> {
    let mut raw: u64 = 0;
    for (i, byte) in buf.iter().take(10).enumerate() {
        raw |= ((byte & 0x7f) as u64) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok((((raw >> 1) as i64) ^ -((raw & 1) as i64), i + 1));
        }
    }
    Err(LogError::CorruptRecord(
        "malformed or truncated varlong".into(),
    ))
}

fn corrupt(why: &str) -> LogError {
    LogError::CorruptRecord(format!("malformed record: {why}"))
}

/// Parses one record body (after its length prefix) far enough to find the
/// offset delta, key and value.
#[allow(clippy::type_complexity)]
fn parse_body(body: &[u8]) -> Result<(i64, i32, Option<&[u8]>, Option<&[u8]>), LogError> {
    let mut pos = 1usize; // attributes
    if body.is_empty() {
        return Err(corrupt("empty record"));
    }
    let (timestamp_delta, used) = read_varlong(&body[pos..])?;
    pos += used;
    let (offset_delta, used) = read_varint(body.get(pos..).unwrap_or_default())?;
    pos += used;
    let (key_len, used) = read_varint(body.get(pos..).unwrap_or_default())?;
    pos += used;
    let key = if key_len < 0 {
        None
    } else {
        let end = pos
            .checked_add(key_len as usize)
            .filter(|e| *e <= body.len())
            .ok_or_else(|| corrupt("key runs past the record"))?;
        let k = &body[pos..end];
        pos = end;
        Some(k)
    };
    let (value_len, used) = read_varint(body.get(pos..).unwrap_or_default())?;
    pos += used;
    let value = if value_len < 0 {
        None
    } else {
        let end = pos
            .checked_add(value_len as usize)
            .filter(|e| *e <= body.len())
            .ok_or_else(|| corrupt("value runs past the record"))?;
        Some(&body[pos..end])
    };
    Ok((timestamp_delta, offset_delta, key, value))
}

/// Calls `f` for every record of an inflated records section.
pub(crate) fn for_each_record<'a>(
    section: &'a [u8],
    mut f: impl FnMut(RawRecord<'a>) -> Result<(), LogError>,
) -> Result<(), LogError> {
    let mut pos = 0usize;
    while pos < section.len() {
        let (len, used) = read_varint(&section[pos..])?;
        let start = pos;
        let body_start = pos + used;
        let body_end = body_start
            .checked_add(usize::try_from(len).map_err(|_| corrupt("negative length"))?)
            .filter(|e| *e <= section.len())
            .ok_or_else(|| corrupt("record runs past the batch"))?;
        let (timestamp_delta, offset_delta, key, value) =
            parse_body(&section[body_start..body_end])?;
        f(RawRecord {
            bytes: &section[start..body_end],
            timestamp_delta,
            offset_delta,
            key,
            value,
            value_is_null: value.is_none(),
        })?;
        pos = body_end;
    }
    Ok(())
}

/// Reads through `inner` and fails once more than `limit_bytes` come out of it, so that a small
/// batch that inflates to gigabytes (a decompression bomb) is refused after `limit_bytes` of
/// work instead of exhausting memory or CPU.
struct InflateLimit<R> {
    inner: R,
    left_bytes: u64,
}

impl<R: Read> InflateLimit<R> {
    fn new(inner: R) -> Self {
        InflateLimit {
            inner,
            left_bytes: MAX_INFLATED_BATCH_BYTES,
        }
    }
}

impl<R: Read> Read for InflateLimit<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.left_bytes == 0 {
            // At the limit: only the end of the stream is acceptable.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(std::io::Error::other(format!(
                    "inflates beyond {MAX_INFLATED_BATCH_BYTES} bytes"
                ))),
            };
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left_bytes).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.left_bytes -= n as u64;
        Ok(n)
    }
}

fn decompress_error(h: &RecordBatchHeader, e: impl std::fmt::Display) -> LogError {
    LogError::Decompression(format!(
        "cannot decompress batch at offset {}: {e}",
        h.base_offset
    ))
}

/// A zstd decompression context kept by a thread once it grew past this (its window buffer
/// follows the largest window a frame asked for, up to zstd's default limit of 128 MiB) is
/// dropped after use rather than kept: the next batch on that thread allocates a fresh one.
/// librdkafka's and the Java client's frames use windows of at most a few MiB.
pub(crate) const MAX_KEPT_ZSTD_CONTEXT_BYTES: usize = 8 << 20;

thread_local! {
    /// This thread's zstd decompression context, reused from batch to batch: creating one and
    /// its window buffer (hundreds of KiB, through `mmap` past glibc's threshold) for every
    /// batch cost more than inflating a small batch. Blocking-pool threads that go idle exit,
    /// and their context with them.
    static ZSTD_CONTEXT: RefCell<Option<DCtx<'static>>> = const { RefCell::new(None) };
}

/// Runs `f` with this thread's zstd context (see [`ZSTD_CONTEXT`]), or a fresh one if `f`
/// is already using it further up the stack.
fn with_zstd_context<T>(f: impl FnOnce(&mut DCtx<'static>) -> T) -> T {
    ZSTD_CONTEXT.with(|cell| match cell.try_borrow_mut() {
        Ok(mut kept) => {
            let context = kept.get_or_insert_with(DCtx::create);
            let out = f(context);
            if context.sizeof() > MAX_KEPT_ZSTD_CONTEXT_BYTES {
                *kept = None;
            }
            out
        }
        Err(_) => f(&mut DCtx::create()),
    })
}

/// Runs `read` with the inflated records section of a compressed batch as a stream, at most
/// [`MAX_INFLATED_BATCH_BYTES`] long. `raw` is the batch after its header. The compressed
/// bytes are read in place, never copied.
///
/// Per codec: gzip and lz4 stream through their decoders (lz4's copies the input through a
/// 32 KiB buffer); zstd through this thread's reused context ([`ZSTD_CONTEXT`]); snappy as
/// [`SnappySection`] says. lz4 is left so: its decoding of the short sequences real records
/// compress to is most of its cost, and an LZ4F context reused per thread, fed in place,
/// saved under a tenth of it (measured) for unsafe code of its own.
fn with_inflated<T>(
    raw: &[u8],
    h: &RecordBatchHeader,
    read: impl FnOnce(&mut dyn Read) -> Result<T, LogError>,
) -> Result<T, LogError> {
    match h.compression() {
        1 => read(&mut InflateLimit::new(flate2::read::GzDecoder::new(raw))),
        2 => read(&mut InflateLimit::new(SnappySection::new(raw, h)?)),
        3 => read(&mut InflateLimit::new(
            lz4::Decoder::new(raw).map_err(|e| decompress_error(h, e))?,
        )),
        4 => with_zstd_context(|context| {
            let decoder = zstd::stream::read::Decoder::with_context(raw, context);
            read(&mut InflateLimit::new(decoder))
        }),
        other => Err(LogError::InvalidRecord(format!(
            "unknown compression codec {other}"
        ))),
    }
}

/// Header of snappy-java's framing (`SnappyOutputStream`): magic, version 1, compatible 1.
const XERIAL_SNAPPY_HEADER: &[u8; 16] = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01";

/// The records section of a snappy batch, inflated as it is read. Two encodings reach a
/// broker, and Kafka's reader takes both:
///
/// - snappy-java's framing, which Kafka's Java producer writes: the 16-byte
///   [`XERIAL_SNAPPY_HEADER`], then blocks of a 4-byte big-endian length and a raw snappy
///   block, each compressing at most 32 KiB on its own. They are inflated one at a time, so
///   memory follows the largest block, not the section.
/// - one raw snappy block for the whole section, which librdkafka writes. A raw block's
///   copies may reach back anywhere in its output, so it cannot be inflated piecewise: it is
///   inflated whole, into the length it declares, which is checked against
///   [`MAX_INFLATED_BATCH_BYTES`] first.
struct SnappySection<'a> {
    /// What is left to inflate: framed blocks, or nothing once the raw block is out.
    input: &'a [u8],
    framed: bool,
    /// The current block, inflated, and how much of it was read.
    block: Vec<u8>,
    read_bytes: usize,
    decoder: snap::raw::Decoder,
    base_offset: i64,
}

impl<'a> SnappySection<'a> {
    fn new(raw: &'a [u8], h: &RecordBatchHeader) -> Result<Self, LogError> {
        let framed = raw.starts_with(XERIAL_SNAPPY_HEADER);
        let mut section = SnappySection {
            input: raw,
            framed,
            block: Vec::new(),
            read_bytes: 0,
            decoder: snap::raw::Decoder::new(),
            base_offset: h.base_offset,
        };
        if framed {
            section.input = &raw[XERIAL_SNAPPY_HEADER.len()..];
        } else {
            section.inflate(raw).map_err(|e| decompress_error(h, e))?;
            section.input = &[];
        }
        Ok(section)
    }

    /// Inflates one raw snappy block into `self.block`, refusing a declared length past the
    /// bound before allocating for it.
    fn inflate(&mut self, compressed: &[u8]) -> std::io::Result<()> {
        let len = snap::raw::decompress_len(compressed).map_err(std::io::Error::other)?;
        if len as u64 > MAX_INFLATED_BATCH_BYTES {
            return Err(std::io::Error::other(format!(
                "a snappy block declares {len} bytes, more than {MAX_INFLATED_BATCH_BYTES}"
            )));
        }
        self.block.clear();
        self.block.resize(len, 0);
        let n = self
            .decoder
            .decompress(compressed, &mut self.block)
            .map_err(std::io::Error::other)?;
        self.block.truncate(n);
        self.read_bytes = 0;
        Ok(())
    }

    /// Inflates the next framed block; false at the end of the section.
    fn next_block(&mut self) -> std::io::Result<bool> {
        if self.input.is_empty() {
            return Ok(false);
        }
        let torn = || {
            std::io::Error::other(format!(
                "torn snappy-java block in batch at offset {}",
                self.base_offset
            ))
        };
        let (len, rest) = self.input.split_first_chunk::<4>().ok_or_else(torn)?;
        let len = u32::from_be_bytes(*len) as usize;
        let block = rest.get(..len).ok_or_else(torn)?;
        self.input = &rest[len..];
        self.inflate(block)?;
        Ok(true)
    }
}

impl Read for SnappySection<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.read_bytes == self.block.len() {
            if !self.framed || !self.next_block()? {
                return Ok(0);
            }
        }
        let n = buf.len().min(self.block.len() - self.read_bytes);
        buf[..n].copy_from_slice(&self.block[self.read_bytes..self.read_bytes + n]);
        self.read_bytes += n;
        Ok(n)
    }
}

/// The records section of a whole batch (after its header), as stored.
fn raw_section<'a>(batch: &'a [u8], h: &RecordBatchHeader) -> Result<&'a [u8], LogError> {
    batch
        .get(BATCH_HEADER_SIZE_BYTES..h.size_bytes())
        .ok_or_else(|| corrupt("batch shorter than its header says"))
}

/// The records section of a whole batch, inflated if compressed.
pub(crate) fn records_section<'a>(
    batch: &'a [u8],
    h: &RecordBatchHeader,
) -> Result<Cow<'a, [u8]>, LogError> {
    let raw = raw_section(batch, h)?;
    if h.compression() == 0 {
        return Ok(Cow::Borrowed(raw));
    }
    let mut out = Vec::new();
    with_inflated(raw, h, |section| {
        section
            .read_to_end(&mut out)
            .map_err(|e| decompress_error(h, e))
    })?;
    Ok(Cow::Owned(out))
}

/// Bytes of inflated records read at a time when [`walk_records`] walks a compressed batch:
/// the walk's whole buffer, whatever the batch inflates to.
pub(crate) const WALK_BUFFER_BYTES: usize = 16 << 10;

/// What produce validation and timestamp lookups need of one record (its fields up to the
/// value's length); key, value and headers are skipped, not read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RecordSummary {
    pub(crate) timestamp_delta: i64,
    pub(crate) offset_delta: i32,
    /// -1 for a null key.
    pub(crate) key_len: i32,
    /// -1 for a null value.
    pub(crate) value_len: i32,
}

/// Calls `f(index, record)` for the records of a whole batch in order, `index` counting from
/// 0, until `f` breaks. The batch must hold exactly `records_count` records filling its
/// records section, each long enough for the fields read; anything else is
/// [`LogError::InvalidRecord`] (a count that does not match), [`LogError::CorruptRecord`] (a
/// record that runs past its length or the batch) or [`LogError::Decompression`] (a section
/// its codec cannot inflate, or that inflates past the bound). Once `f` breaks, the rest is
/// not read.
///
/// Cost: no allocation for an uncompressed batch, which is read in place; a compressed one is
/// inflated as it is read, through one [`WALK_BUFFER_BYTES`] buffer, and refused past
/// [`MAX_INFLATED_BATCH_BYTES`]. CPU: a few varints per record, plus the codec.
pub(crate) fn walk_records(
    batch: &[u8],
    h: &RecordBatchHeader,
    f: impl FnMut(i32, RecordSummary) -> ControlFlow<()>,
) -> Result<(), LogError> {
    let raw = raw_section(batch, h)?;
    if h.compression() == 0 {
        return RecordStream { input: raw, h }.walk(f);
    }
    with_inflated(raw, h, |section| {
        let input = BufReader::with_capacity(WALK_BUFFER_BYTES, section);
        RecordStream { input, h }.walk(f)
    })
}

/// A ListOffsets answer naming one record (Kafka's `FileRecords.TimestampAndOffset`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimestampAndOffset {
    /// The record's timestamp (-1 for the special lookups that do not name one).
    pub timestamp_ms: i64,
    pub offset: i64,
    /// The leader epoch the record was written in, which clients keep with the offset to
    /// detect a truncated log (KIP-320): for a record found in a batch, the batch's partition
    /// leader epoch, `None` when the batch carries none (-1), as Kafka answers.
    pub leader_epoch: Option<i32>,
}

impl TimestampAndOffset {
    /// The record at `offset` with `timestamp_ms`, in the batch of `h`.
    pub fn in_batch(h: &RecordBatchHeader, timestamp_ms: i64, offset: i64) -> Self {
        TimestampAndOffset {
            timestamp_ms,
            offset,
            leader_epoch: h.leader_epoch(),
        }
    }
}

/// ListOffsets by timestamp inside one batch, once its max timestamp says it may hold the
/// answer (Kafka's `FileRecords.searchForTimestamp`): the first record at or above
/// `start_offset` whose timestamp is at least `target_ms`, with the batch's leader epoch. In
/// a LogAppendTime batch every record has the batch's timestamp. `batch` is one whole batch;
/// a compressed one is inflated as it is read ([`walk_records`], bounded), up to the record
/// found.
pub fn find_record_by_timestamp(
    batch: &[u8],
    h: &RecordBatchHeader,
    target_ms: i64,
    start_offset: i64,
) -> Result<Option<TimestampAndOffset>, LogError> {
    if h.max_timestamp < target_ms || h.last_offset() < start_offset {
        return Ok(None);
    }
    let mut found = None;
    walk_records(batch, h, |_, record| {
        let timestamp = h.record_timestamp(record.timestamp_delta);
        let offset = h.base_offset.saturating_add(i64::from(record.offset_delta));
        if timestamp >= target_ms && offset >= start_offset {
            found = Some(TimestampAndOffset::in_batch(h, timestamp, offset));
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    })?;
    Ok(found)
}

/// Kafka's `RecordBatch.offsetOfMaxTimestamp` (ListOffsets MAX_TIMESTAMP, KIP-734): the
/// offset of the first record of `batch` whose timestamp is the batch's max timestamp;
/// `None` if no record has it (a header that does not describe its records).
pub fn offset_of_max_timestamp(
    batch: &[u8],
    h: &RecordBatchHeader,
) -> Result<Option<i64>, LogError> {
    let mut found = None;
    walk_records(batch, h, |_, record| {
        if h.record_timestamp(record.timestamp_delta) == h.max_timestamp {
            found = Some(h.base_offset.saturating_add(i64::from(record.offset_delta)));
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    })?;
    Ok(found)
}

/// A records section read as a stream, for [`walk_records`].
struct RecordStream<'h, R> {
    input: R,
    h: &'h RecordBatchHeader,
}

impl<R: BufRead> RecordStream<'_, R> {
    fn walk(
        &mut self,
        mut f: impl FnMut(i32, RecordSummary) -> ControlFlow<()>,
    ) -> Result<(), LogError> {
        let expected = self.h.records_count.max(0);
        for index in 0..expected {
            if self.at_end()? {
                return Err(LogError::InvalidRecord(format!(
                    "record batch declares {expected} records but holds {index}"
                )));
            }
            let record = self.next_record(index)?;
            if f(index, record).is_break() {
                return Ok(());
            }
        }
        if !self.at_end()? {
            return Err(LogError::InvalidRecord(format!(
                "record batch holds more records than its count {expected}"
            )));
        }
        Ok(())
    }

    fn at_end(&mut self) -> Result<bool, LogError> {
        let h = self.h;
        Ok(self
            .input
            .fill_buf()
            .map_err(|e| decompress_error(h, e))?
            .is_empty())
    }

    /// The next byte; `None` at the end of the section.
    fn byte(&mut self) -> Result<Option<u8>, LogError> {
        let h = self.h;
        let b = match self.input.fill_buf().map_err(|e| decompress_error(h, e))? {
            [] => return Ok(None),
            [b, ..] => *b,
        };
        self.input.consume(1);
        Ok(Some(b))
    }

    /// Reads one record, its length prefix included, leaving the stream at the next one.
    fn next_record(&mut self, index: i32) -> Result<RecordSummary, LogError> {
        let past_end =
            || LogError::CorruptRecord(format!("record {index} runs past the end of the batch"));
        let len = self.varint(None, 5, index)?.ok_or_else(past_end)?;
        if len < MIN_RECORD_BODY_BYTES {
            return Err(LogError::CorruptRecord(format!(
                "record {index} has length {len}, less than a record's {MIN_RECORD_BODY_BYTES} bytes"
            )));
        }
        let mut left = len as u64;
        // attributes (unused in v2)
        self.take_in_record(&mut left, 1, index)?;
        let timestamp_delta = self
            .varint(Some(&mut left), 10, index)?
            .ok_or_else(past_end)?;
        let offset_delta = self
            .varint(Some(&mut left), 5, index)?
            .ok_or_else(past_end)?;
        let key_len = self
            .varint(Some(&mut left), 5, index)?
            .ok_or_else(past_end)?;
        if key_len > 0 {
            self.take_in_record(&mut left, key_len as u64, index)?;
        }
        let value_len = self
            .varint(Some(&mut left), 5, index)?
            .ok_or_else(past_end)?;
        // The value and the headers.
        let rest = left;
        self.take_in_record(&mut left, rest, index)?;
        Ok(RecordSummary {
            timestamp_delta,
            offset_delta: offset_delta as i32,
            key_len: key_len.max(-1) as i32,
            value_len: value_len.max(-1) as i32,
        })
    }

    /// Skips `n` bytes of the current record, whose unread part is `left` bytes long.
    fn take_in_record(&mut self, left: &mut u64, n: u64, index: i32) -> Result<(), LogError> {
        if n > *left {
            return Err(LogError::CorruptRecord(format!(
                "record {index} has fields running past its length"
            )));
        }
        *left -= n;
        let mut to_skip = n;
        while to_skip > 0 {
            let h = self.h;
            let available = self
                .input
                .fill_buf()
                .map_err(|e| decompress_error(h, e))?
                .len();
            if available == 0 {
                return Err(LogError::CorruptRecord(format!(
                    "record {index} runs past the end of the batch"
                )));
            }
            let step = available.min(usize::try_from(to_skip).unwrap_or(usize::MAX));
            self.input.consume(step);
            to_skip -= step as u64;
        }
        Ok(())
    }

    /// A zigzag varint of at most `max_bytes` bytes (5 for an int, 10 for a long), counted
    /// against the record's unread `left` bytes when given. `None` at the end of the section
    /// before its first byte.
    fn varint(
        &mut self,
        mut left: Option<&mut u64>,
        max_bytes: usize,
        index: i32,
    ) -> Result<Option<i64>, LogError> {
        let mut raw: u64 = 0;
        for i in 0..max_bytes {
            if let Some(left) = left.as_deref_mut() {
                if *left == 0 {
                    return Err(LogError::CorruptRecord(format!(
                        "record {index} has fields running past its length"
                    )));
                }
                *left -= 1;
            }
            let Some(b) = self.byte()? else {
                return if i == 0 {
                    Ok(None)
                } else {
                    Err(LogError::CorruptRecord(format!(
                        "record {index} runs past the end of the batch"
                    )))
                };
            };
            raw |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                let value = ((raw >> 1) as i64) ^ -((raw & 1) as i64);
                // A 5-byte varint must fit an int, as Kafka's `ByteUtils.readVarint` demands.
                if max_bytes == 5 && i32::try_from(value).is_err() {
                    break;
                }
                return Ok(Some(value));
            }
        }
        Err(LogError::CorruptRecord(format!(
            "record {index} has a malformed varint"
        )))
    }
}

/// Compresses `records` with `codec` (0..=4).
pub(crate) fn compress(codec: u8, records: &[u8]) -> Result<Vec<u8>, LogError> {
    let mut out = BytesMut::new();
    let fill = |b: &mut BytesMut| {
        b.extend_from_slice(records);
        Ok(())
    };
    let res = match codec {
        0 => {
            out.extend_from_slice(records);
            Ok(())
        }
        1 => Gzip::compress(&mut out, fill),
        2 => Snappy::compress(&mut out, fill),
        3 => Lz4::compress(&mut out, fill),
        4 => Zstd::compress(&mut out, fill),
        other => {
            return Err(LogError::StorageCorruption(format!(
                "unknown compression codec {other}"
            )))
        }
    };
    res.map_err(|e| LogError::StorageCorruption(format!("cannot compress batch: {e}")))?;
    Ok(out.to_vec())
}

/// Builds a copy of `original` holding only `survivors` (raw records of that
/// batch, in order). Base offset, last offset delta, base timestamp, producer
/// id/epoch, base sequence, partition leader epoch, attributes (codec,
/// timestamp type, transactional) are kept, as Kafka's `MemoryRecords.filterTo`
/// keeps them for v2 batches; the records count, length, max timestamp
/// (CreateTime only: the max of the survivors) and CRC are recomputed.
pub(crate) fn rebuild_batch(
    original: &[u8],
    h: &RecordBatchHeader,
    survivors: &[RawRecord<'_>],
) -> Result<Vec<u8>, LogError> {
    let mut records = Vec::with_capacity(survivors.iter().map(|r| r.bytes.len()).sum());
    for r in survivors {
        records.extend_from_slice(r.bytes);
    }
    let body = compress(h.compression(), &records)?;
    let mut out = Vec::with_capacity(BATCH_HEADER_SIZE_BYTES + body.len());
    out.extend_from_slice(&original[..BATCH_HEADER_SIZE_BYTES]);
    out.extend_from_slice(&body);
    let batch_length = i32::try_from(out.len() - batch::LOG_OVERHEAD_BYTES)
        .map_err(|_| LogError::StorageCorruption("rebuilt batch too large".into()))?;
    out[8..12].copy_from_slice(&batch_length.to_be_bytes());
    out[57..61].copy_from_slice(&(survivors.len() as i32).to_be_bytes());
    if h.timestamp_type() == batch::TimestampType::CreateTime {
        let max_ts = survivors
            .iter()
            .map(|r| h.base_timestamp.saturating_add(r.timestamp_delta))
            .max()
            .unwrap_or(h.max_timestamp);
        out[35..43].copy_from_slice(&max_ts.to_be_bytes());
    }
    let crc = batch::compute_crc(&out);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A batch header (magic 2, zstd, one record) followed by `payload` as its records.
    fn zstd_batch(payload: &[u8]) -> Vec<u8> {
        let mut b = Vec::with_capacity(BATCH_HEADER_SIZE_BYTES + payload.len());
        b.extend_from_slice(&0i64.to_be_bytes()); // base offset
        b.extend_from_slice(&((BATCH_HEADER_SIZE_BYTES - 12 + payload.len()) as i32).to_be_bytes());
        b.extend_from_slice(&0i32.to_be_bytes()); // partition leader epoch
        b.push(2); // magic
        b.extend_from_slice(&0u32.to_be_bytes()); // crc (not checked here)
        b.extend_from_slice(&4i16.to_be_bytes()); // attributes: zstd
        b.extend_from_slice(&0i32.to_be_bytes()); // last offset delta
        b.extend_from_slice(&0i64.to_be_bytes()); // base timestamp
        b.extend_from_slice(&0i64.to_be_bytes()); // max timestamp
        b.extend_from_slice(&(-1i64).to_be_bytes()); // producer id
        b.extend_from_slice(&(-1i16).to_be_bytes()); // producer epoch
        b.extend_from_slice(&(-1i32).to_be_bytes()); // base sequence
        b.extend_from_slice(&1i32.to_be_bytes()); // records count
        assert_eq!(b.len(), BATCH_HEADER_SIZE_BYTES);
        b.extend_from_slice(payload);
        b
    }

    use crate::test_util::{edited, put_varint, timed_batch};

    fn summaries(batch: &[u8]) -> Result<Vec<(i32, RecordSummary)>, LogError> {
        let h = RecordBatchHeader::parse(batch).unwrap();
        let mut out = Vec::new();
        walk_records(batch, &h, |i, r| {
            out.push((i, r));
            ControlFlow::Continue(())
        })?;
        Ok(out)
    }

    #[test]
    fn walk_reads_every_codec_alike() {
        let records = [(Some("key"), 100), (None, 90), (Some(""), 130)];
        let plain = summaries(&timed_batch(&records, 0)).unwrap();
        assert_eq!(
            plain
                .iter()
                .map(|(i, r)| (
                    *i,
                    r.timestamp_delta,
                    r.offset_delta,
                    r.key_len,
                    r.value_len
                ))
                .collect::<Vec<_>>(),
            vec![(0, 0, 0, 3, 3), (1, -10, 1, -1, 3), (2, 30, 2, 0, 3)]
        );
        for codec in 1..=4 {
            assert_eq!(
                summaries(&timed_batch(&records, codec)).unwrap(),
                plain,
                "codec {codec}"
            );
        }
    }

    #[test]
    fn walk_refuses_what_does_not_hold_its_records() {
        for codec in [0u8, 4] {
            let batch = timed_batch(&[(None, 1), (None, 2)], codec);
            // One record more declared than held, then one fewer.
            let more = edited(batch.clone(), |b| {
                b[57..61].copy_from_slice(&3i32.to_be_bytes())
            });
            assert!(
                matches!(summaries(&more), Err(LogError::InvalidRecord(_))),
                "codec {codec}"
            );
            let fewer = edited(batch, |b| b[57..61].copy_from_slice(&1i32.to_be_bytes()));
            assert!(
                matches!(summaries(&fewer), Err(LogError::InvalidRecord(_))),
                "codec {codec}"
            );
        }
        // A key longer than its record.
        let mut record = vec![0u8];
        put_varint(&mut record, 0);
        put_varint(&mut record, 0);
        put_varint(&mut record, 50); // key length
        record.extend_from_slice(b"abcdef");
        let batch = edited(timed_batch(&[(None, 1)], 0), |b| {
            b.truncate(BATCH_HEADER_SIZE_BYTES);
            put_varint(b, record.len() as i64);
            b.extend_from_slice(&record);
            let len = (b.len() - 12) as i32;
            b[8..12].copy_from_slice(&len.to_be_bytes());
        });
        assert!(matches!(summaries(&batch), Err(LogError::CorruptRecord(_))));
    }

    #[test]
    fn walk_stops_when_asked() {
        let batch = timed_batch(&[(None, 1), (None, 2), (None, 3)], 1);
        let h = RecordBatchHeader::parse(&batch).unwrap();
        let mut seen = 0;
        walk_records(&batch, &h, |i, _| {
            seen += 1;
            if i == 1 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap();
        assert_eq!(seen, 2);
    }

    #[test]
    fn the_walk_refuses_a_bomb_through_its_fixed_buffer() {
        // One record that claims (and, inflated, has) more bytes than the bound.
        let len = MAX_INFLATED_BATCH_BYTES + (1 << 20);
        let mut head = Vec::new();
        put_varint(&mut head, len as i64);
        head.push(0); // attributes
        put_varint(&mut head, 0);
        put_varint(&mut head, 0);
        put_varint(&mut head, -1); // no key
        let mut compressed = Vec::new();
        let stream = std::io::Read::chain(&head[..], std::io::repeat(0).take(len));
        zstd::stream::copy_encode(stream, &mut compressed, 1).unwrap();
        let batch = zstd_batch(&compressed);
        let h = RecordBatchHeader::parse(&batch).unwrap();
        match walk_records(&batch, &h, |_, _| ControlFlow::Continue(())) {
            Err(LogError::Decompression(m)) => assert!(m.contains("inflates beyond"), "{m}"),
            other => panic!("expected the bound, got {other:?}"),
        }
    }

    #[test]
    fn lookups_name_records() {
        let records = [(None, 50), (None, 10), (None, 70), (None, 70), (None, 60)];
        for codec in [0u8, 2, 3] {
            let batch = edited(timed_batch(&records, codec), |b| {
                b[0..8].copy_from_slice(&100i64.to_be_bytes()); // base offset 100
            });
            let h = RecordBatchHeader::parse(&batch).unwrap();
            let find = |target, start| {
                find_record_by_timestamp(&batch, &h, target, start)
                    .unwrap()
                    .map(|f| (f.timestamp_ms, f.offset))
            };
            assert_eq!(find(0, 0), Some((50, 100)));
            assert_eq!(find(51, 0), Some((70, 102)));
            assert_eq!(find(60, 103), Some((70, 103)));
            assert_eq!(find(65, 104), None);
            assert_eq!(find(60, 104), Some((60, 104)));
            assert_eq!(find(71, 0), None);
            assert_eq!(offset_of_max_timestamp(&batch, &h).unwrap(), Some(102));
            // LogAppendTime: every record has the batch's timestamp.
            let lat = edited(batch.clone(), |b| b[22] |= 0x08);
            let h = RecordBatchHeader::parse(&lat).unwrap();
            assert_eq!(
                find_record_by_timestamp(&lat, &h, 65, 101).unwrap(),
                Some(TimestampAndOffset {
                    timestamp_ms: 70,
                    offset: 101,
                    leader_epoch: None
                })
            );
            assert_eq!(offset_of_max_timestamp(&lat, &h).unwrap(), Some(100));
        }
    }

    #[test]
    fn decompression_bombs_are_refused() {
        // A few kilobytes that inflate past the bound.
        let mut bomb = Vec::new();
        let zeros = std::io::repeat(0).take(MAX_INFLATED_BATCH_BYTES + 1024);
        zstd::stream::copy_encode(zeros, &mut bomb, 3).unwrap();
        assert!(bomb.len() < 1 << 20);
        let batch = zstd_batch(&bomb);
        let h = RecordBatchHeader::parse(&batch).unwrap();
        assert!(matches!(
            records_section(&batch, &h),
            Err(LogError::Decompression(_))
        ));

        let mut small = Vec::new();
        zstd::stream::copy_encode(&b"abc"[..], &mut small, 3).unwrap();
        let batch = zstd_batch(&small);
        let h = RecordBatchHeader::parse(&batch).unwrap();
        assert_eq!(&*records_section(&batch, &h).unwrap(), b"abc");
    }

    /// A batch of `n` records of `value_bytes` each, its records section as `encode` makes it
    /// (attributes set to `codec`).
    fn batch_with_section(
        n: usize,
        value_bytes: usize,
        codec: u8,
        encode: impl FnOnce(&[u8]) -> Vec<u8>,
    ) -> (Vec<u8>, Vec<(i32, RecordSummary)>) {
        let records: Vec<(Option<&str>, i64)> = (0..n).map(|i| (None, i as i64)).collect();
        let plain = timed_batch(&records, 0);
        let mut section = Vec::new();
        for i in 0..n {
            let mut body = vec![0u8];
            put_varint(&mut body, i as i64);
            put_varint(&mut body, i as i64);
            put_varint(&mut body, -1);
            put_varint(&mut body, value_bytes as i64);
            let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ (i as u64 + 1);
            body.extend((0..value_bytes).map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                b'A' + (state % 26) as u8
            }));
            put_varint(&mut body, 0); // no headers
            put_varint(&mut section, body.len() as i64);
            section.extend_from_slice(&body);
        }
        let expected = {
            let uncompressed = edited(plain.clone(), |b| {
                b.truncate(BATCH_HEADER_SIZE_BYTES);
                b.extend_from_slice(&section);
                let len = (b.len() - 12) as i32;
                b[8..12].copy_from_slice(&len.to_be_bytes());
            });
            summaries(&uncompressed).unwrap()
        };
        let batch = edited(plain, |b| {
            b.truncate(BATCH_HEADER_SIZE_BYTES);
            b.extend_from_slice(&encode(&section));
            let len = (b.len() - 12) as i32;
            b[8..12].copy_from_slice(&len.to_be_bytes());
            b[22] = (b[22] & !0x07) | codec;
        });
        (batch, expected)
    }

    #[test]
    fn snappy_reads_snappy_java_blocks_one_by_one_and_raw_blocks_whole() {
        // 40 records of 2 KiB: several of snappy-java's 32 KiB blocks.
        let (framed, expected) = batch_with_section(40, 2048, 2, |s| compress(2, s).unwrap());
        assert!(framed[BATCH_HEADER_SIZE_BYTES..].starts_with(XERIAL_SNAPPY_HEADER));
        assert_eq!(summaries(&framed).unwrap(), expected);
        // librdkafka's encoding: one raw block.
        let raw_block = |s: &[u8]| snap::raw::Encoder::new().compress_vec(s).unwrap();
        let (raw, expected) = batch_with_section(40, 2048, 2, raw_block);
        assert_eq!(summaries(&raw).unwrap(), expected);
        // The blocks stream: at most one block is inflated at a time.
        let h = RecordBatchHeader::parse(&framed).unwrap();
        let mut section = SnappySection::new(&framed[BATCH_HEADER_SIZE_BYTES..], &h).unwrap();
        let mut out = Vec::new();
        let mut largest_block = 0;
        let mut buf = [0u8; 1000];
        loop {
            let n = section.read(&mut buf).unwrap();
            largest_block = largest_block.max(section.block.capacity());
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        assert!(out.len() > 80_000, "{}", out.len());
        assert!(largest_block <= 32 << 10, "{largest_block}");
        // A torn block and a raw block declaring more than the bound fail as the codec's.
        let torn = edited(framed.clone(), |b| {
            let len = b.len();
            b.truncate(len - 10);
            let len = (b.len() - 12) as i32;
            b[8..12].copy_from_slice(&len.to_be_bytes());
        });
        assert!(matches!(summaries(&torn), Err(LogError::Decompression(_))));
        let mut huge = Vec::new();
        let mut declared = MAX_INFLATED_BATCH_BYTES + 1;
        while declared >= 0x80 {
            huge.push((declared as u8 & 0x7f) | 0x80);
            declared >>= 7;
        }
        huge.push(declared as u8);
        huge.extend_from_slice(&[0u8; 8]);
        let (bomb, _) = batch_with_section(1, 1, 2, |_| huge.clone());
        match summaries(&bomb) {
            Err(LogError::Decompression(m)) => assert!(m.contains("declares"), "{m}"),
            other => panic!("expected the bound, got {other:?}"),
        }
    }

    #[test]
    fn a_thread_reuses_its_zstd_context_and_drops_a_large_one() {
        let kept = || ZSTD_CONTEXT.with(|c| c.borrow().as_ref().map(|c| c.sizeof()));
        let batch = timed_batch(&[(None, 1), (None, 2)], 4);
        let expected = summaries(&timed_batch(&[(None, 1), (None, 2)], 0)).unwrap();
        assert_eq!(summaries(&batch).unwrap(), expected);
        let size = kept().expect("kept after use");
        assert!(size <= MAX_KEPT_ZSTD_CONTEXT_BYTES, "{size}");
        // A frame left unfinished by garbage does not leak into the next batch.
        let torn = edited(batch.clone(), |b| {
            let len = b.len();
            b.truncate(len - 3);
            let len = (b.len() - 12) as i32;
            b[8..12].copy_from_slice(&len.to_be_bytes());
        });
        assert!(matches!(summaries(&torn), Err(LogError::Decompression(_))));
        assert_eq!(summaries(&batch).unwrap(), expected);
        // A frame with a 16 MiB window grows the context past what a thread keeps.
        let big_value = 12 << 20;
        let (large, expected) = batch_with_section(1, big_value, 4, |s| {
            let mut encoder = zstd::stream::Encoder::new(Vec::new(), 1).unwrap();
            encoder.window_log(24).unwrap();
            std::io::Write::write_all(&mut encoder, s).unwrap();
            encoder.finish().unwrap()
        });
        assert_eq!(summaries(&large).unwrap(), expected);
        assert_eq!(kept(), None, "a large context is not kept");
        assert_eq!(
            summaries(&batch).unwrap(),
            summaries(&timed_batch(&[(None, 1), (None, 2)], 0)).unwrap()
        );
        assert!(kept().is_some());
    }
}
