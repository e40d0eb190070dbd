//! Record-level access to magic-v2 batches, used only where Kafka also looks
//! inside batches: the "records need keys" check of compacted topics and the
//! log cleaner.
//!
//! Compressed record sections are inflated with the codecs of the
//! `kafka-protocol` crate (`kafka_protocol::compression`). Records are never
//! re-encoded field by field: a surviving record is copied byte for byte
//! (its offset and timestamp deltas stay valid because a rebuilt batch keeps
//! the original base offset and base timestamp), so headers, attributes and
//! any unusual-but-valid encodings are preserved exactly.

use std::borrow::Cow;
use std::io::Read;

use bytes::{Bytes, BytesMut};
use kafka_protocol::compression::{Compressor, Decompressor, Gzip, Lz4, Snappy, Zstd};

use crate::batch::{self, read_varint, RecordBatchHeader, BATCH_HEADER_SIZE_BYTES};
use crate::error::LogError;

/// Upper bound on the inflated size of one batch's records. Streaming codecs (gzip, lz4,
/// zstd) are read through it; Snappy declares the inflated length up front and its codec
/// allocates that much, so the declared length is checked against it before inflating.
pub(crate) const MAX_INFLATED_BATCH_BYTES: u64 = 256 << 20;

const XERIAL_SNAPPY_MAGIC: &[u8; 16] = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01";

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

/// Reads an unsigned varint (snappy's length preamble).
fn read_uvarint32(buf: &[u8]) -> Option<u64> {
    let mut v: u64 = 0;
    for (i, b) in buf.iter().take(5).enumerate() {
        v |= ((b & 0x7f) as u64) << (7 * i);
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// Sum of the inflated lengths a snappy stream declares (raw or xerial-framed).
fn snappy_declared_len(raw: &[u8]) -> Option<u64> {
    if raw.len() >= XERIAL_SNAPPY_MAGIC.len() && raw[..16] == XERIAL_SNAPPY_MAGIC[..] {
        let mut pos = 16usize;
        let mut total = 0u64;
        while pos < raw.len() {
            let len_bytes = raw.get(pos..pos + 4)?;
            let len = u32::from_be_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]);
            pos += 4;
            let block = raw.get(pos..pos.checked_add(len as usize)?)?;
            total += read_uvarint32(block)?;
            pos += len as usize;
        }
        Some(total)
    } else {
        read_uvarint32(raw)
    }
}

/// The records section of a whole batch, inflated if compressed.
pub(crate) fn records_section<'a>(
    batch: &'a [u8],
    h: &RecordBatchHeader,
) -> Result<Cow<'a, [u8]>, LogError> {
    let raw = batch
        .get(BATCH_HEADER_SIZE_BYTES..h.size_bytes())
        .ok_or_else(|| corrupt("batch shorter than its header says"))?;
    let codec = h.compression();
    if codec == 0 {
        return Ok(Cow::Borrowed(raw));
    }
    let bad = |e: String| {
        LogError::CorruptRecord(format!(
            "cannot decompress batch at offset {}: {e}",
            h.base_offset
        ))
    };
    if codec == 2 {
        match snappy_declared_len(raw) {
            Some(n) if n <= MAX_INFLATED_BATCH_BYTES => {}
            _ => {
                return Err(LogError::CorruptRecord(format!(
                    "snappy batch at offset {} declares an invalid or oversized length",
                    h.base_offset
                )))
            }
        }
    }
    // Streaming codecs are read through a limit, so a small batch that inflates to gigabytes
    // (a decompression bomb) is refused instead of exhausting memory.
    let capped = |reader: &mut dyn Read| -> Result<Vec<u8>, LogError> {
        let mut out = Vec::new();
        reader
            .take(MAX_INFLATED_BATCH_BYTES + 1)
            .read_to_end(&mut out)
            .map_err(|e| bad(e.to_string()))?;
        if out.len() as u64 > MAX_INFLATED_BATCH_BYTES {
            return Err(bad(format!(
                "inflates beyond {MAX_INFLATED_BATCH_BYTES} bytes"
            )));
        }
        Ok(out)
    };
    let out = match codec {
        1 => capped(&mut flate2::read::GzDecoder::new(raw))?,
        2 => {
            let mut input = Bytes::copy_from_slice(raw);
            let take = |b: &mut Bytes| Ok(std::mem::take(b));
            Snappy::decompress(&mut input, take)
                .map_err(|e| bad(e.to_string()))?
                .to_vec()
        }
        3 => capped(&mut lz4::Decoder::new(raw).map_err(|e| bad(e.to_string()))?)?,
        4 => capped(&mut zstd::stream::read::Decoder::new(raw).map_err(|e| bad(e.to_string()))?)?,
        other => {
            return Err(LogError::InvalidRecord(format!(
                "unknown compression codec {other}"
            )))
        }
    };
    Ok(Cow::Owned(out))
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

/// Kafka's check for compacted topics: every record must have a key
/// (`InvalidRecordException: Compacted topic cannot accept message without key`).
pub(crate) fn check_records_have_keys(batch: &[u8], h: &RecordBatchHeader) -> Result<(), LogError> {
    let section = records_section(batch, h)?;
    for_each_record(&section, |r| {
        if r.key.is_none() {
            return Err(LogError::InvalidRecord(
                "Compacted topic cannot accept message without key".into(),
            ));
        }
        Ok(())
    })
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
            Err(LogError::CorruptRecord(_))
        ));

        let mut small = Vec::new();
        zstd::stream::copy_encode(&b"abc"[..], &mut small, 3).unwrap();
        let batch = zstd_batch(&small);
        let h = RecordBatchHeader::parse(&batch).unwrap();
        assert_eq!(&*records_section(&batch, &h).unwrap(), b"abc");
    }
}
