//! The Kafka frame: a 4-byte big-endian length followed by that many bytes.
//!
//! The decoder is sans-IO: the connection reads socket bytes into a buffer and asks the decoder
//! for whole frames. The length prefix is checked against the configured maximum
//! (`socket.request.max.bytes`) *before* any of the body is buffered, so an oversized or hostile
//! length costs nothing but the four bytes that announced it.

use bytes::{Buf, Bytes, BytesMut};

/// Why a frame could not be accepted. Both are fatal for the connection.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame of {size_bytes} bytes exceeds socket.request.max.bytes ({max_bytes})")]
    TooLarge { size_bytes: i64, max_bytes: usize },
    #[error("negative frame length {size_bytes}")]
    Negative { size_bytes: i64 },
}

/// Splits a byte stream into frames, refusing lengths above `max_frame_bytes`.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    max_frame_bytes: usize,
}

/// Bytes of the length prefix.
pub const LENGTH_PREFIX_BYTES: usize = 4;

impl FrameDecoder {
    pub fn new(max_frame_bytes: usize) -> Self {
        Self { max_frame_bytes }
    }

    /// How many more bytes the caller should make room for to complete the next frame, once its
    /// length is known; used to reserve buffer capacity without over-allocating.
    pub fn bytes_wanted(&self, buf: &[u8]) -> Result<usize, FrameError> {
        match self.peek_length(buf)? {
            None => Ok(LENGTH_PREFIX_BYTES - buf.len()),
            Some(size) => Ok((LENGTH_PREFIX_BYTES + size).saturating_sub(buf.len())),
        }
    }

    /// Takes one whole frame body (without its length prefix) off the front of `buf`, or returns
    /// `None` when more bytes are needed.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        let Some(size) = self.peek_length(buf)? else {
            return Ok(None);
        };
        if buf.len() < LENGTH_PREFIX_BYTES + size {
            return Ok(None);
        }
        buf.advance(LENGTH_PREFIX_BYTES);
        Ok(Some(buf.split_to(size).freeze()))
    }

    fn peek_length(&self, buf: &[u8]) -> Result<Option<usize>, FrameError> {
        let Some(prefix) = buf.get(..LENGTH_PREFIX_BYTES) else {
            return Ok(None);
        };
        let size = i32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
        if size < 0 {
            return Err(FrameError::Negative {
                size_bytes: size.into(),
            });
        }
        let size = size as usize;
        if size > self.max_frame_bytes {
            return Err(FrameError::TooLarge {
                size_bytes: size as i64,
                max_bytes: self.max_frame_bytes,
            });
        }
        Ok(Some(size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_frames_and_waits_for_partial_ones() {
        let decoder = FrameDecoder::new(100);
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[0, 0, 0, 3, b'a', b'b']);
        assert_eq!(decoder.decode(&mut buf).unwrap(), None);
        assert_eq!(decoder.bytes_wanted(&buf).unwrap(), 1);
        buf.extend_from_slice(&[b'c', 0, 0]);
        assert_eq!(
            decoder.decode(&mut buf).unwrap(),
            Some(Bytes::from_static(b"abc"))
        );
        assert_eq!(decoder.decode(&mut buf).unwrap(), None);
        assert_eq!(decoder.bytes_wanted(&buf).unwrap(), 2);
    }

    #[test]
    fn refuses_oversized_length_before_buffering() {
        let decoder = FrameDecoder::new(100);
        let mut buf = BytesMut::from(&[0x7f, 0xff, 0xff, 0xff][..]);
        assert!(matches!(
            decoder.decode(&mut buf),
            Err(FrameError::TooLarge { .. })
        ));
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff][..]);
        assert!(matches!(
            decoder.decode(&mut buf),
            Err(FrameError::Negative { .. })
        ));
    }
}
