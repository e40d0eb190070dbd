//! The broker as a process: its CPU time and memory from `/proc`, finding it by its listening
//! port, and starting a private Strata broker when no address is given.

use std::fs;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// CPU time and memory of one process, read from `/proc/<pid>`.
#[derive(Clone, Copy, Debug)]
pub struct ProcessStats {
    pid: u32,
}

impl ProcessStats {
    pub fn new(pid: u32) -> Self {
        ProcessStats { pid }
    }

    /// This process, for the client side's CPU.
    pub fn current() -> Self {
        ProcessStats {
            pid: std::process::id(),
        }
    }

    /// User plus system CPU seconds the process (all its threads) has used so far.
    pub fn cpu_seconds(&self) -> io::Result<f64> {
        let stat = fs::read_to_string(format!("/proc/{}/stat", self.pid))?;
        // The command name (field 2) may hold spaces and parentheses: fields after it start at
        // the last ')'. utime and stime are fields 14 and 15, so 11 and 12 after the name.
        let rest = stat
            .rsplit_once(')')
            .map(|(_, r)| r)
            .ok_or_else(|| io::Error::other("malformed /proc/<pid>/stat"))?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| -> io::Result<u64> {
            fields
                .get(i)
                .and_then(|f| f.parse().ok())
                .ok_or_else(|| io::Error::other("malformed /proc/<pid>/stat"))
        };
        let total = ticks(11)? + ticks(12)?;
        Ok(total as f64 / clock_ticks_per_second())
    }

    /// Resident set size now, in bytes.
    pub fn rss_bytes(&self) -> io::Result<u64> {
        self.status_kib("VmRSS:").map(|k| k * 1024)
    }

    fn status_kib(&self, field: &str) -> io::Result<u64> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| io::Error::other(format!("no {field} in /proc/<pid>/status")))
    }
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions; it returns -1 for an unknown name.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// Samples a process's resident set size in the background and keeps the largest value, so a
/// phase's peak is known even when the process's all-time peak (VmHWM) came from earlier.
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl RssSampler {
    pub fn start(stats: ProcessStats) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, peak) = (stop.clone(), peak.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(rss) = stats.rss_bytes() {
                        peak.fetch_max(rss, Ordering::Relaxed);
                    }
                    thread::sleep(Duration::from_millis(50));
                }
            })
        };
        RssSampler {
            stop,
            peak,
            thread: Some(thread),
        }
    }

    /// Stops sampling and returns the peak seen, in bytes.
    pub fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.peak.load(Ordering::Relaxed)
    }
}

/// Finds the process listening on TCP `port` on this machine, through `/proc/net/tcp{,6}` and
/// the socket links in `/proc/*/fd`. `None` when the broker is elsewhere or not visible to us.
pub fn find_listener_pid(port: u16) -> Option<u32> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // local_address is HEXIP:HEXPORT, st 0A is LISTEN, the inode is column 9.
            let (Some(local), Some(state), Some(inode)) = (cols.get(1), cols.get(3), cols.get(9))
            else {
                continue;
            };
            let listening_port = local
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            if *state == "0A" && listening_port == Some(port) {
                inodes.push(format!("socket:[{inode}]"));
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    for entry in fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(link) = fs::read_link(fd.path()) {
                if inodes.iter().any(|i| Path::new(i) == link) {
                    return Some(pid);
                }
            }
        }
    }
    None
}

/// A Strata broker this bench started (`strata serve`, from the same executable), on free
/// loopback ports, with its data in `data_dir`. Stopped cleanly on drop.
pub struct LocalBroker {
    child: Child,
    pub addr: SocketAddr,
    /// The SSL listener's address, for a broker started with one.
    pub ssl_addr: Option<SocketAddr>,
    /// The admin HTTP address (/health, /metrics).
    pub http: SocketAddr,
    /// The broker's `--data-dir`.
    pub data_dir: PathBuf,
    args: Vec<String>,
    log: PathBuf,
}

impl LocalBroker {
    /// Starts a broker and waits until it accepts connections.
    pub fn start(data_dir: &Path, overrides: &[String]) -> anyhow::Result<Self> {
        Self::start_with(data_dir, &[], overrides)
    }

    /// [`LocalBroker::start`] with more `strata serve` arguments (`--object-store URL`).
    pub fn start_with(
        data_dir: &Path,
        serve_args: &[String],
        overrides: &[String],
    ) -> anyhow::Result<Self> {
        Self::launch(data_dir, serve_args, overrides, None)
    }

    /// [`LocalBroker::start`] with an SSL listener too, serving the key and certificate chain
    /// of the PEM file `key_store`.
    pub fn start_with_ssl(
        data_dir: &Path,
        overrides: &[String],
        key_store: &Path,
    ) -> anyhow::Result<Self> {
        Self::launch(data_dir, &[], overrides, Some(key_store))
    }

    fn launch(
        data_dir: &Path,
        serve_args: &[String],
        overrides: &[String],
        ssl_key_store: Option<&Path>,
    ) -> anyhow::Result<Self> {
        fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create {}", data_dir.display()))?;
        let addr = free_loopback_addr()?;
        let http = free_loopback_addr()?;
        let broker_dir = data_dir.join("broker");
        let mut args = vec!["serve".to_string()];
        let ssl_addr = match ssl_key_store {
            None => {
                args.extend(["--listen".into(), addr.to_string()]);
                None
            }
            Some(key_store) => {
                let ssl_addr = free_loopback_addr()?;
                for o in [
                    format!("listeners=PLAINTEXT://{addr},SSL://{ssl_addr}"),
                    "ssl.keystore.type=PEM".into(),
                    format!("ssl.keystore.location={}", key_store.display()),
                ] {
                    args.extend(["--override".into(), o]);
                }
                Some(ssl_addr)
            }
        };
        args.extend([
            "--http".into(),
            http.to_string(),
            "--data-dir".into(),
            broker_dir.display().to_string(),
        ]);
        args.extend(serve_args.iter().cloned());
        for o in overrides {
            args.push("--override".into());
            args.push(o.clone());
        }
        let log = data_dir.join("broker.log");
        let child = spawn(&args, &log)?;
        let mut broker = LocalBroker {
            child,
            addr,
            ssl_addr,
            http,
            data_dir: broker_dir,
            args,
            log,
        };
        broker.wait_ready(Duration::from_secs(120))?;
        Ok(broker)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Where the broker's output goes (warnings and errors only: RUST_LOG=warn).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Stops the broker with SIGTERM (a clean shutdown) and waits for it to exit.
    pub fn stop(&mut self) -> anyhow::Result<Duration> {
        let started = Instant::now();
        if self.child.try_wait()?.is_none() {
            // SAFETY: kill has no memory-safety preconditions; the pid is our own child.
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
            let deadline = started + Duration::from_secs(60);
            while self.child.try_wait()?.is_none() {
                if Instant::now() > deadline {
                    self.child.kill()?;
                    bail!("the broker did not stop within 60 s of SIGTERM; killed it");
                }
                thread::sleep(Duration::from_millis(10));
            }
        }
        Ok(started.elapsed())
    }

    /// Starts the stopped broker again on the same address and data, and waits until it
    /// accepts connections.
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        if self.child.try_wait()?.is_none() {
            bail!("the broker is still running");
        }
        self.child = spawn(&self.args, &self.log)?;
        self.wait_ready(Duration::from_secs(600))
    }

    fn wait_ready(&mut self, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "the private broker exited ({status}) before accepting connections; see {}",
                    self.log.display()
                );
            }
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the private broker did not accept connections within {limit:?}; see {}",
                    self.log.display()
                );
            }
            thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for LocalBroker {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::warn!("stopping the private broker: {e:#}");
        }
    }
}

fn spawn(args: &[String], log: &Path) -> anyhow::Result<Child> {
    let exe = std::env::current_exe().context("cannot find the strata executable")?;
    let log_file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("cannot open {}", log.display()))?;
    Command::new(exe)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .spawn()
        .context("cannot start the private broker")
}

/// Raises this process's open-file limit towards `wanted` (up to the hard limit), so that it,
/// and the private brokers it starts, can hold many idle connections.
pub fn raise_open_file_limit(wanted: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < wanted {
            limit.rlim_cur = wanted.min(limit.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

fn free_loopback_addr() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?;
    Ok(listener.local_addr()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        let me = ProcessStats::current();
        // Burn a little CPU so the reading cannot be a constant.
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        assert!(me.cpu_seconds().unwrap() >= 0.0);
        assert!(me.rss_bytes().unwrap() > 0);
    }

    #[test]
    fn finds_a_listening_socket_owner() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert_eq!(find_listener_pid(port), Some(std::process::id()));
        drop(listener);
        assert_eq!(find_listener_pid(port), None);
    }
}
