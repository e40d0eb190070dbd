//! Reusable buffers for reading record batches out of segments.
//!
//! A fetch reads up to a few MiB per partition. A fresh buffer per read cost more than the read
//! itself: the allocator hands out large buffers as new mappings, so every page was faulted in
//! and zeroed by the kernel and then zeroed again by `vec![0; n]` — about a third of the
//! broker's CPU while consuming (perf, 2 GB consumed; see docs/performance.md). Here a large
//! read goes into a recycled buffer, which returns to the pool when the last `Bytes` that
//! points into it is dropped (after the fetch response was written), so steady-state reads
//! touch only warm, already-initialised memory.
//!
//! Bounded: the pool keeps at most `MAX_POOLED_BYTES`; buffers larger than `MAX_POOLED_BUFFER`
//! are allocated exactly and freed as usual. Pooled buffers are always fully initialised
//! (`len == capacity`), so no unsafe code is needed to read into them.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Mutex;

use bytes::Bytes;
use strata_durable::LockExt;

/// Reads below this size use a plain allocation: small allocations come from the allocator's
/// warm heap anyway.
const MIN_POOLED_BUFFER: usize = 64 << 10;
/// Reads above this size are not pooled (a whole oversized batch, read once).
const MAX_POOLED_BUFFER: usize = 16 << 20;
/// Most memory the idle pool holds.
const MAX_POOLED_BYTES: usize = 64 << 20;
/// A pooled buffer is used for a read only if it is at most this many times larger, so that
/// small reads do not pin big buffers.
const MAX_WASTE_FACTOR: usize = 4;

struct Pool {
    free: Vec<Vec<u8>>,
    bytes: usize,
}

static POOL: Mutex<Pool> = Mutex::new(Pool {
    free: Vec::new(),
    bytes: 0,
});

/// A pooled buffer lent to a `Bytes`; it goes back to the pool when dropped.
struct Lent(Vec<u8>);

impl AsRef<[u8]> for Lent {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.0);
        let mut pool = POOL.locked();
        if pool.bytes + buf.capacity() <= MAX_POOLED_BYTES {
            pool.bytes += buf.capacity();
            pool.free.push(buf);
        }
    }
}

/// The smallest free buffer that fits `len` without too much waste, or a new one.
fn take(len: usize) -> Vec<u8> {
    let mut pool = POOL.locked();
    let best = pool
        .free
        .iter()
        .enumerate()
        .filter(|(_, b)| b.len() >= len && b.len() <= len.saturating_mul(MAX_WASTE_FACTOR))
        .min_by_key(|(_, b)| b.len())
        .map(|(i, _)| i);
    if let Some(i) = best {
        let buf = pool.free.swap_remove(i);
        pool.bytes -= buf.capacity();
        return buf;
    }
    drop(pool);
    vec![0u8; len.next_power_of_two().min(MAX_POOLED_BUFFER)]
}

/// Reads exactly `len` bytes of `file` at `position`.
pub(crate) fn read_at(file: &File, position: u64, len: usize) -> io::Result<Bytes> {
    if !(MIN_POOLED_BUFFER..=MAX_POOLED_BUFFER).contains(&len) {
        let mut buf = vec![0u8; len];
        file.read_exact_at(&mut buf, position)?;
        return Ok(Bytes::from(buf));
    }
    let mut lent = Lent(take(len));
    debug_assert!(lent.0.len() >= len);
    // On error `lent` is dropped, which returns the buffer to the pool.
    file.read_exact_at(&mut lent.0[..len], position)?;
    let mut bytes = Bytes::from_owner(lent);
    bytes.truncate(len);
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn reads_exact_ranges_and_recycles_buffers() {
        let mut file = tempfile::tempfile().unwrap();
        let data: Vec<u8> = (0..(3 << 20)).map(|i: u32| (i * 31 % 251) as u8).collect();
        file.write_all(&data).unwrap();
        for (position, len) in [
            (0u64, 100usize),
            (5, 70_000),
            (1 << 20, 1 << 20),
            (7, 2_000_000),
        ] {
            // Twice: the second read of a pooled size reuses a buffer the first one returned.
            for _ in 0..2 {
                let got = read_at(&file, position, len).unwrap();
                assert_eq!(&got[..], &data[position as usize..position as usize + len]);
            }
        }
        // Reading past the end is an error, and the pool stays usable.
        assert!(read_at(&file, (3 << 20) - 10, 1 << 20).is_err());
        assert_eq!(read_at(&file, 0, 1 << 17).unwrap().len(), 1 << 17);
        let pool = POOL.locked();
        assert!(pool.bytes <= MAX_POOLED_BYTES);
        assert_eq!(
            pool.bytes,
            pool.free.iter().map(Vec::capacity).sum::<usize>()
        );
    }
}
