//! Test-only builder of valid magic-v2 record batches.

/// Appends a zigzag varint, as record fields are encoded.
pub(crate) fn put_varint(out: &mut Vec<u8>, value: i64) {
    let mut v = ((value << 1) ^ (value >> 63)) as u64;
    loop {
        if v < 0x80 {
            out.push(v as u8);
            return;
        }
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
}

/// Builds one uncompressed v2 batch with `n` records, timestamps `ts, ts+1, ...`.
pub(crate) struct BatchBuilder {
    records: usize,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    base_timestamp: i64,
    attributes: i16,
    value_size_bytes: usize,
    count_override: Option<i32>,
    trailing_garbage_bytes: usize,
}

impl BatchBuilder {
    pub(crate) fn new(records: usize) -> Self {
        BatchBuilder {
            records,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            base_timestamp: 1_000,
            attributes: 0,
            value_size_bytes: 10,
            count_override: None,
            trailing_garbage_bytes: 0,
        }
    }
    pub(crate) fn producer(mut self, id: i64, epoch: i16, base_sequence: i32) -> Self {
        self.producer_id = id;
        self.producer_epoch = epoch;
        self.base_sequence = base_sequence;
        self
    }
    pub(crate) fn timestamp(mut self, ts: i64) -> Self {
        self.base_timestamp = ts;
        self
    }
    pub(crate) fn attributes(mut self, attributes: i16) -> Self {
        self.attributes = attributes;
        self
    }
    pub(crate) fn value_size(mut self, size_bytes: usize) -> Self {
        self.value_size_bytes = size_bytes;
        self
    }
    /// Declares a different record count (and matching last offset delta).
    pub(crate) fn override_count(mut self, count: i32) -> Self {
        self.count_override = Some(count);
        self
    }
    /// Appends bytes after the last record inside the batch.
    pub(crate) fn trailing_garbage(mut self, n: usize) -> Self {
        self.trailing_garbage_bytes = n;
        self
    }

    pub(crate) fn build(&self) -> Vec<u8> {
        let mut records = Vec::new();
        for i in 0..self.records {
            let mut body = Vec::new();
            body.push(0u8); // attributes
            put_varint(&mut body, i as i64); // timestamp delta
            put_varint(&mut body, i as i64); // offset delta
            put_varint(&mut body, -1); // null key
            put_varint(&mut body, self.value_size_bytes as i64);
            body.extend(std::iter::repeat_n(
                b'a' + (i % 26) as u8,
                self.value_size_bytes,
            ));
            put_varint(&mut body, 0); // no headers
            put_varint(&mut records, body.len() as i64);
            records.extend_from_slice(&body);
        }
        records.extend(std::iter::repeat_n(0xEEu8, self.trailing_garbage_bytes));
        let count = self.count_override.unwrap_or(self.records as i32);
        let mut out = Vec::new();
        out.extend_from_slice(&0i64.to_be_bytes());
        let batch_length = (61 - 12 + records.len()) as i32;
        out.extend_from_slice(&batch_length.to_be_bytes());
        out.extend_from_slice(&(-1i32).to_be_bytes()); // partition leader epoch
        out.push(2);
        out.extend_from_slice(&0u32.to_be_bytes()); // crc placeholder
        out.extend_from_slice(&self.attributes.to_be_bytes());
        out.extend_from_slice(&(count - 1).to_be_bytes());
        out.extend_from_slice(&self.base_timestamp.to_be_bytes());
        let max_ts = self.base_timestamp + self.records.saturating_sub(1) as i64;
        out.extend_from_slice(&max_ts.to_be_bytes());
        out.extend_from_slice(&self.producer_id.to_be_bytes());
        out.extend_from_slice(&self.producer_epoch.to_be_bytes());
        out.extend_from_slice(&self.base_sequence.to_be_bytes());
        out.extend_from_slice(&count.to_be_bytes());
        out.extend_from_slice(&records);
        let crc = crc32c::crc32c(&out[21..]);
        out[17..21].copy_from_slice(&crc.to_be_bytes());
        out
    }
}

/// Headers of every batch in a read result, checked whole and CRC-valid.
pub(crate) fn headers(bytes: &[u8]) -> Vec<crate::batch::RecordBatchHeader> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let h = crate::batch::RecordBatchHeader::parse(&bytes[pos..]).expect("header");
        let size = h.size_bytes();
        assert!(pos + size <= bytes.len(), "partial batch returned");
        crate::batch::check_crc(&bytes[pos..pos + size], &h).expect("crc");
        out.push(h);
        pos += size;
    }
    out
}

/// One v2 batch of `(key, value)` records with timestamps `ts, ts+1, ...`.
pub(crate) fn keyed_batch(
    records: &[(Option<&str>, Option<&str>)],
    ts: i64,
    codec: u8,
    producer: Option<(i64, i16, i32)>,
) -> Vec<u8> {
    let mut body = Vec::new();
    for (i, (k, v)) in records.iter().enumerate() {
        let mut r = vec![0u8];
        put_varint(&mut r, i as i64);
        put_varint(&mut r, i as i64);
        match k {
            Some(k) => {
                put_varint(&mut r, k.len() as i64);
                r.extend_from_slice(k.as_bytes());
            }
            None => put_varint(&mut r, -1),
        }
        match v {
            Some(v) => {
                put_varint(&mut r, v.len() as i64);
                r.extend_from_slice(v.as_bytes());
            }
            None => put_varint(&mut r, -1),
        }
        put_varint(&mut r, 1); // one header
        put_varint(&mut r, 1);
        r.push(b'h');
        put_varint(&mut r, 1);
        r.push(b'x');
        put_varint(&mut body, r.len() as i64);
        body.extend_from_slice(&r);
    }
    let n = records.len() as i32;
    let producer = producer.unwrap_or((-1, -1, -1));
    wrap_records(&body, n, codec, (ts, ts + n as i64 - 1), producer)
}

/// A v2 batch at base offset 0 around `n` encoded records (`body`), compressed with `codec`,
/// with `(base, max)` timestamps and `(producer id, epoch, base sequence)`; CRC set.
fn wrap_records(
    body: &[u8],
    n: i32,
    codec: u8,
    (base_ts, max_ts): (i64, i64),
    (pid, epoch, seq): (i64, i16, i32),
) -> Vec<u8> {
    let body = crate::records::compress(codec, body).expect("compress");
    let mut out = Vec::new();
    out.extend_from_slice(&0i64.to_be_bytes());
    out.extend_from_slice(&((49 + body.len()) as i32).to_be_bytes());
    out.extend_from_slice(&(-1i32).to_be_bytes());
    out.push(2);
    out.extend_from_slice(&0u32.to_be_bytes());
    out.extend_from_slice(&(codec as i16).to_be_bytes());
    out.extend_from_slice(&(n - 1).to_be_bytes());
    out.extend_from_slice(&base_ts.to_be_bytes());
    out.extend_from_slice(&max_ts.to_be_bytes());
    out.extend_from_slice(&pid.to_be_bytes());
    out.extend_from_slice(&epoch.to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&n.to_be_bytes());
    out.extend_from_slice(&body);
    let crc = crc32c::crc32c(&out[21..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    out
}

/// One v2 batch (base offset 0) of `(key, timestamp)` records with short values, compressed
/// with `codec`: base timestamp the first record's, max timestamp the largest.
pub(crate) fn timed_batch(records: &[(Option<&str>, i64)], codec: u8) -> Vec<u8> {
    let base_ts = records.first().map_or(0, |r| r.1);
    let mut body = Vec::new();
    for (i, (key, ts)) in records.iter().enumerate() {
        let mut r = vec![0u8];
        put_varint(&mut r, ts - base_ts);
        put_varint(&mut r, i as i64);
        match key {
            Some(k) => {
                put_varint(&mut r, k.len() as i64);
                r.extend_from_slice(k.as_bytes());
            }
            None => put_varint(&mut r, -1),
        }
        put_varint(&mut r, 3);
        r.extend_from_slice(b"val");
        put_varint(&mut r, 0); // no headers
        put_varint(&mut body, r.len() as i64);
        body.extend_from_slice(&r);
    }
    let max_ts = records.iter().map(|r| r.1).max().unwrap_or(-1);
    wrap_records(
        &body,
        records.len() as i32,
        codec,
        (base_ts, max_ts),
        (-1, -1, -1),
    )
}

/// Lets `edit` change a whole batch's bytes, then makes its CRC valid again.
pub(crate) fn edited(mut batch: Vec<u8>, edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    edit(&mut batch);
    let crc = crc32c::crc32c(&batch[21..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
    batch
}

/// `(timestamp, offset)` of a ListOffsets answer, for tests that are not about its epoch.
pub(crate) trait TimestampOffsetPair {
    fn pair(self) -> Option<(i64, i64)>;
}

impl TimestampOffsetPair for Option<crate::records::TimestampAndOffset> {
    fn pair(self) -> Option<(i64, i64)> {
        self.map(|f| (f.timestamp_ms, f.offset))
    }
}
