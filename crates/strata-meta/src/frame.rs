//! The frame format of Strata's metadata files, and the scan that recovers them after a crash.
//!
//! Both metadata logs write their content as frames `[u32 length][u32 crc32c][body]`
//! (big-endian, the CRC over the body only): the single node's `meta/metadata.log`
//! ([`crate::FileMetadataLog`], one frame per record batch) and the Raft log
//! (`strata-quorum`'s `raft.log`, a header frame then one frame per entry). This module is the
//! one implementation of that format; it does no I/O: callers read the file, scan it here, and
//! cut the file at [`Scan::valid_len`] themselves.
//!
//! Recovery rule (the same for both logs): a file is appended to only at its end, so a crash
//! can damage only its last frame. A frame that does not fit in what remains, or whose length
//! is beyond the bound, ends the scan as a torn tail; so does a CRC mismatch in the last
//! frame. A CRC mismatch in a frame followed by more data cannot come from a torn append: it
//! is an error ([`FrameError::CrcMismatch`]), never skipped, since skipping would leave a hole
//! in the log.
//!
//! Cost: one pass over the bytes with a CRC-32C of every body; no copy (frames borrow `data`).

/// Bytes before each body: the length and the CRC.
pub const FRAME_HEADER_BYTES: usize = 8;

/// Largest body accepted: bounds the allocation a corrupt length can cause (a length beyond
/// it ends the scan as a torn tail). Far above what either log writes: a metadata batch or a
/// Raft entry holds one proposal (`strata-quorum`'s `MAX_PROPOSAL_BYTES`).
pub const MAX_FRAME_BODY_BYTES: usize = 64 * 1024 * 1024;

/// A frame found by [`scan`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Byte position of the frame's header in the scanned data.
    pub position: u64,
    pub body: &'a [u8],
}

/// What [`scan`] recovered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scan<'a> {
    /// The valid frames, in order.
    pub frames: Vec<Frame<'a>>,
    /// Length of the valid prefix: the end of the last valid frame. Anything after it is a
    /// torn tail the caller cuts off before appending again.
    pub valid_len: u64,
}

/// Damage a crash cannot explain.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The body of frame `index` (0-based) at byte `position` does not match its CRC, and
    /// more data follows it.
    #[error("CRC mismatch in frame {index} at byte {position}")]
    CrcMismatch { index: usize, position: u64 },
}

/// Appends `body` to `out` as one frame.
///
/// Panics if `body` is longer than [`MAX_FRAME_BODY_BYTES`]: callers check their size limit
/// first (a frame the scan would treat as a torn tail must never be written).
pub fn encode(body: &[u8], out: &mut Vec<u8>) {
    assert!(
        body.len() <= MAX_FRAME_BODY_BYTES,
        "a frame body of {} bytes exceeds {MAX_FRAME_BODY_BYTES}",
        body.len()
    );
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32c::crc32c(body).to_be_bytes());
    out.extend_from_slice(body);
}

/// Splits `data` (a whole file) into frames, stopping at a torn tail; see the module
/// documentation for the rule.
pub fn scan(data: &[u8]) -> Result<Scan<'_>, FrameError> {
    let mut frames = Vec::new();
    let mut pos = 0usize;
    while data.len() - pos >= FRAME_HEADER_BYTES {
        let len = u32::from_be_bytes([data[pos], data[pos + 1], data[pos + 2], data[pos + 3]]);
        let crc = u32::from_be_bytes([data[pos + 4], data[pos + 5], data[pos + 6], data[pos + 7]]);
        let len = len as usize;
        let body_start = pos + FRAME_HEADER_BYTES;
        if len > MAX_FRAME_BODY_BYTES || data.len() - body_start < len {
            break; // torn (or garbage) tail: the last append did not complete
        }
        let body = &data[body_start..body_start + len];
        if crc32c::crc32c(body) != crc {
            if body_start + len == data.len() {
                break; // torn last frame
            }
            return Err(FrameError::CrcMismatch {
                index: frames.len(),
                position: pos as u64,
            });
        }
        frames.push(Frame {
            position: pos as u64,
            body,
        });
        pos = body_start + len;
    }
    Ok(Scan {
        frames,
        valid_len: pos as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(bodies: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for body in bodies {
            encode(body, &mut out);
        }
        out
    }

    fn bodies<'a>(scan: &Scan<'a>) -> Vec<&'a [u8]> {
        scan.frames.iter().map(|f| f.body).collect()
    }

    #[test]
    fn frames_round_trip_with_their_positions() {
        let data = file(&[b"first", b"", b"third"]);
        let scan = scan(&data).unwrap();
        assert_eq!(bodies(&scan), vec![&b"first"[..], b"", b"third"]);
        let positions: Vec<u64> = scan.frames.iter().map(|f| f.position).collect();
        assert_eq!(positions, vec![0, 13, 21]);
        assert_eq!(scan.valid_len, data.len() as u64);
        assert_eq!(super::scan(&[]).unwrap().valid_len, 0);
    }

    /// Every torn write of the last frame (any prefix of it, and any damage inside it)
    /// recovers exactly the frames before it.
    #[test]
    fn every_torn_last_frame_is_cut_off() {
        let data = file(&[b"committed one", b"committed two", b"being appended"]);
        let first_two = file(&[b"committed one", b"committed two"]).len();
        for cut in first_two..data.len() {
            let scan = scan(&data[..cut]).unwrap();
            assert_eq!(bodies(&scan).len(), 2, "cut at {cut}");
            assert_eq!(scan.valid_len, first_two as u64, "cut at {cut}");
        }
        for flip in first_two..data.len() {
            let mut torn = data.clone();
            torn[flip] ^= 0x01;
            let scan = scan(&torn).unwrap();
            assert_eq!(scan.valid_len, first_two as u64, "byte {flip} flipped");
        }
    }

    #[test]
    fn damage_before_the_last_frame_is_an_error() {
        let data = file(&[b"zero", b"one", b"two"]);
        let second = file(&[b"zero"]).len();
        let mut damaged = data.clone();
        damaged[second + FRAME_HEADER_BYTES] ^= 0xff; // the body of frame 1
        assert_eq!(
            scan(&damaged),
            Err(FrameError::CrcMismatch {
                index: 1,
                position: second as u64
            })
        );
        let mut damaged = data;
        damaged[FRAME_HEADER_BYTES + 1] ^= 0xff; // the body of frame 0
        assert!(matches!(
            scan(&damaged),
            Err(FrameError::CrcMismatch { index: 0, .. })
        ));
    }

    /// A length beyond the bound is never used to size anything: the scan stops there.
    #[test]
    fn an_oversized_length_ends_the_scan() {
        let mut data = file(&[b"kept"]);
        let kept = data.len();
        data.extend_from_slice(&u32::MAX.to_be_bytes());
        data.extend_from_slice(&[0; 12]);
        let scan = scan(&data).unwrap();
        assert_eq!(bodies(&scan), vec![&b"kept"[..]]);
        assert_eq!(scan.valid_len, kept as u64);
    }
}
