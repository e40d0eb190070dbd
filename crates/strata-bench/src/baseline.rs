//! The machine's own limits, measured in the same run as the broker so that results can be
//! read as ratios: a noisy machine slows the baseline and the broker alike.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::thread;
use std::time::Instant;

use serde::Serialize;

/// Throughputs in MB/s (10^6 bytes per second).
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Baseline {
    /// Sequential 1 MiB writes to a new file in the data directory, without syncing.
    pub disk_page_cache_mb_s: f64,
    /// The same, followed by one fdatasync that is included in the time (like `dd conv=fdatasync`).
    pub disk_fdatasync_mb_s: f64,
    /// One TCP connection over loopback, 1 MiB writes, the reader on another thread.
    pub loopback_tcp_mb_s: f64,
    /// Copying a 64 MiB buffer.
    pub memcpy_mb_s: f64,
}

const CHUNK: usize = 1 << 20;

pub fn measure(dir: &Path, bytes: u64) -> io::Result<Baseline> {
    let bytes = bytes.max(CHUNK as u64);
    Ok(Baseline {
        disk_page_cache_mb_s: disk_write(dir, bytes, false)?,
        disk_fdatasync_mb_s: disk_write(dir, bytes, true)?,
        loopback_tcp_mb_s: loopback_tcp(bytes)?,
        memcpy_mb_s: memcpy(bytes),
    })
}

fn mb_per_s(bytes: u64, started: Instant) -> f64 {
    bytes as f64 / 1e6 / started.elapsed().as_secs_f64().max(1e-9)
}

fn disk_write(dir: &Path, bytes: u64, sync: bool) -> io::Result<f64> {
    let file = tempfile::NamedTempFile::new_in(dir)?;
    let chunk = pattern(CHUNK);
    let mut f: &File = file.as_file();
    let started = Instant::now();
    let mut written = 0;
    while written < bytes {
        f.write_all(&chunk)?;
        written += CHUNK as u64;
    }
    if sync {
        f.sync_data()?;
    }
    let rate = mb_per_s(written, started);
    // Leave nothing dirty behind to slow the next measurement.
    f.sync_data()?;
    Ok(rate)
}

fn loopback_tcp(bytes: u64) -> io::Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let reader = thread::spawn(move || -> io::Result<u64> {
        let (mut conn, _) = listener.accept()?;
        let mut buf = vec![0u8; CHUNK];
        let mut total = 0u64;
        loop {
            match conn.read(&mut buf)? {
                0 => return Ok(total),
                n => total += n as u64,
            }
        }
    });
    let chunk = pattern(CHUNK);
    let mut conn = TcpStream::connect(addr)?;
    let started = Instant::now();
    let mut sent = 0;
    while sent < bytes {
        conn.write_all(&chunk)?;
        sent += CHUNK as u64;
    }
    conn.shutdown(std::net::Shutdown::Write)?;
    let received = reader
        .join()
        .map_err(|_| io::Error::other("loopback reader panicked"))??;
    assert_eq!(received, sent, "loopback lost bytes");
    Ok(mb_per_s(sent, started))
}

fn memcpy(bytes: u64) -> f64 {
    const BUF: usize = 64 << 20;
    let src = pattern(BUF);
    let mut dst = vec![0u8; BUF];
    // Touch the destination once so page faults are not timed.
    dst.copy_from_slice(&src);
    let rounds = (bytes / BUF as u64).max(4);
    let started = Instant::now();
    for _ in 0..rounds {
        dst.copy_from_slice(std::hint::black_box(&src));
        std::hint::black_box(&mut dst);
    }
    mb_per_s(rounds * BUF as u64, started)
}

/// Non-constant data, so nothing along the way can shortcut zeros.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 4096) as u8).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn measures_positive_rates() {
        let dir = tempfile::tempdir().unwrap();
        let b = super::measure(dir.path(), 4 << 20).unwrap();
        for rate in [
            b.disk_page_cache_mb_s,
            b.disk_fdatasync_mb_s,
            b.loopback_tcp_mb_s,
            b.memcpy_mb_s,
        ] {
            assert!(rate.is_finite() && rate > 0.0, "{b:?}");
        }
    }
}
