//! The primitives of Kafka's internal record formats (`__consumer_offsets`,
//! `__transaction_state`): big-endian integers, i16-length strings, i32-length bytes, and a
//! bounds-checked reader that fails cleanly on short or corrupt input.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use uuid::Uuid;

use crate::consumer_group::Assignment;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("undecodable {what}: {reason}")]
pub struct DecodeError {
    pub(crate) what: &'static str,
    pub(crate) reason: String,
}

pub(crate) fn put_string(b: &mut BytesMut, s: &str) {
    b.put_i16(s.len() as i16);
    b.put_slice(s.as_bytes());
}

pub(crate) fn put_nullable_string(b: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => put_string(b, s),
        None => b.put_i16(-1),
    }
}

pub(crate) fn put_bytes(b: &mut BytesMut, v: &[u8]) {
    b.put_i32(v.len() as i32);
    b.put_slice(v);
}

/// A bounds-checked reader: every read of decoded input fails cleanly when short.
pub(crate) struct Reader<'a> {
    pub(crate) buf: &'a [u8],
    pub(crate) what: &'static str,
}

impl Reader<'_> {
    pub(crate) fn short(&self) -> DecodeError {
        DecodeError {
            what: self.what,
            reason: "truncated".into(),
        }
    }
    /// An element count `n`, refused when more elements than bytes remain (each takes at
    /// least one), so a corrupt count cannot drive a huge loop.
    fn bounded_count(&self, n: usize) -> Result<usize, DecodeError> {
        if n > self.buf.len() {
            return Err(self.short());
        }
        Ok(n)
    }
    /// `raw` as UTF-8 text.
    fn text(&self, raw: Vec<u8>) -> Result<String, DecodeError> {
        String::from_utf8(raw).map_err(|e| DecodeError {
            what: self.what,
            reason: e.to_string(),
        })
    }
    pub(crate) fn take(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        if self.buf.len() < n {
            return Err(self.short());
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    pub(crate) fn i8(&mut self) -> Result<i8, DecodeError> {
        Ok(self.take(1)?.get_i8())
    }
    pub(crate) fn i16(&mut self) -> Result<i16, DecodeError> {
        Ok(self.take(2)?.get_i16())
    }
    pub(crate) fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(self.take(4)?.get_i32())
    }
    pub(crate) fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(self.take(8)?.get_i64())
    }
    pub(crate) fn nullable_string(&mut self) -> Result<Option<String>, DecodeError> {
        let len = self.i16()?;
        if len < 0 {
            return Ok(None);
        }
        let raw = self.take(len as usize)?.to_vec();
        self.text(raw).map(Some)
    }
    pub(crate) fn string(&mut self) -> Result<String, DecodeError> {
        Ok(self.nullable_string()?.unwrap_or_default())
    }
    /// An element count, bounded by the bytes left ([`Self::bounded_count`]).
    pub(crate) fn count(&mut self) -> Result<usize, DecodeError> {
        let n = self.i32()?.max(0) as usize;
        self.bounded_count(n)
    }
    pub(crate) fn uuid(&mut self) -> Result<Uuid, DecodeError> {
        let raw = self.take(16)?;
        Uuid::from_slice(raw).map_err(|_| self.short())
    }
    pub(crate) fn assignment(&mut self) -> Result<Assignment, DecodeError> {
        let mut a = Assignment::new();
        for _ in 0..self.count()? {
            let topic = self.uuid()?;
            let set = a.entry(topic).or_default();
            for _ in 0..self.count()? {
                set.insert(self.i32()?);
            }
        }
        Ok(a)
    }
    /// An unsigned varint of at most 5 bytes (every length and count of the flexible
    /// formats fits an i32).
    pub(crate) fn uvarint(&mut self) -> Result<u64, DecodeError> {
        let mut value = 0u64;
        for i in 0..5 {
            let b = self.take(1)?[0];
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeError {
            what: self.what,
            reason: "varint longer than 5 bytes".into(),
        })
    }
    /// A compact array's element count (a null array counts 0), bounded like [`Self::count`].
    pub(crate) fn compact_count(&mut self) -> Result<usize, DecodeError> {
        let n = self.uvarint()?.saturating_sub(1) as usize;
        self.bounded_count(n)
    }
    pub(crate) fn compact_string(&mut self) -> Result<String, DecodeError> {
        let len = self.uvarint()?.saturating_sub(1) as usize;
        let raw = self.take(len)?.to_vec();
        self.text(raw)
    }
    /// Reads a tagged-field section, handing each field's tag and bytes to `field`.
    pub(crate) fn skip_tagged_fields(
        &mut self,
        mut field: impl FnMut(u64, &[u8]) -> Result<(), String>,
    ) -> Result<(), DecodeError> {
        for _ in 0..self.compact_count_raw()? {
            let tag = self.uvarint()?;
            let len = self.uvarint()? as usize;
            let what = self.what;
            let data = self.take(len)?;
            field(tag, data).map_err(|reason| DecodeError { what, reason })?;
        }
        Ok(())
    }
    /// A count written as a plain uvarint (tagged-field sections), bounded by the bytes left.
    fn compact_count_raw(&mut self) -> Result<usize, DecodeError> {
        let n = self.uvarint()? as usize;
        self.bounded_count(n)
    }
    pub(crate) fn bytes(&mut self) -> Result<Bytes, DecodeError> {
        let len = self.i32()?;
        if len < 0 {
            return Ok(Bytes::new());
        }
        Ok(Bytes::copy_from_slice(self.take(len as usize)?))
    }
}
