//! The audit log of authorization decisions: one JSON object per line, appended to
//! `authorizer.audit.log.file`, for every denial and, with `authorizer.audit.log.allowed`, every
//! allowed action too. Kafka has none built in (Confluent sells one); the fields are those an
//! auditor asks for: when, who (principal, client address, listener), what (API, operation,
//! resource type and name) and the answer with its reason.
//!
//! Recording never blocks a request: records go through a bounded queue to one writer thread;
//! when the queue is full (the disk cannot keep up) a record is dropped and counted, and the
//! count is on `/metrics`. Nothing secret is in a record: principals and resource names only.

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;

use serde::Serialize;

/// Records queued for the writer at most; past it, records are dropped and counted.
const QUEUE_RECORDS: usize = 8192;

/// One decision, as written.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AuditRecord {
    pub time_ms: i64,
    pub principal: String,
    pub client: String,
    pub listener: String,
    /// The API whose handler asked, as Kafka names it (`Produce`, `OffsetCommit`, ...).
    pub api: String,
    pub operation: String,
    pub resource_type: String,
    pub resource: String,
    /// `ALLOWED` or `DENIED`.
    pub result: &'static str,
    /// Why: `SuperUser`, `Acl`, `NoAclFound`, `NoMatchingAcl`.
    pub reason: String,
}

/// Where decisions are recorded.
#[derive(Debug)]
pub struct AuditLog {
    queue: SyncSender<AuditRecord>,
    /// Whether allowed actions are recorded too (else only denials).
    pub record_allowed: bool,
    dropped: Arc<AtomicU64>,
    written: Arc<AtomicU64>,
}

/// The audit log file cannot be opened.
#[derive(Debug, thiserror::Error)]
#[error("authorizer.audit.log.file {path}: {source}")]
pub struct AuditLogError {
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

impl AuditLog {
    /// Opens (appending to) `path` and starts its writer thread, which ends when the log is
    /// dropped, after writing what is queued.
    pub fn open(path: &Path, record_allowed: bool) -> Result<AuditLog, AuditLogError> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| AuditLogError {
                path: path.to_path_buf(),
                source,
            })?;
        let (queue, records) = sync_channel(QUEUE_RECORDS);
        let written = Arc::new(AtomicU64::new(0));
        let count = written.clone();
        let path = path.to_path_buf();
        std::thread::Builder::new()
            .name("audit-log".into())
            .spawn(move || write_records(records, BufWriter::new(file), &path, &count))
            .map_err(|source| AuditLogError {
                path: PathBuf::from("(writer thread)"),
                source,
            })?;
        Ok(AuditLog {
            queue,
            record_allowed,
            dropped: Arc::new(AtomicU64::new(0)),
            written,
        })
    }

    /// Queues `record` without waiting; a full queue drops it (counted).
    pub fn record(&self, record: AuditRecord) {
        match self.queue.try_send(record) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Records dropped because the writer fell behind (or failed).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Records written so far.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }
}

/// The writer thread: each record as a line, flushed whenever the queue runs empty. A write
/// error is logged once and ends the writer (later records count as dropped).
fn write_records(
    records: Receiver<AuditRecord>,
    mut out: BufWriter<std::fs::File>,
    path: &Path,
    written: &AtomicU64,
) {
    let mut next = records.recv().ok();
    while let Some(record) = next {
        let line = serde_json::to_string(&record).unwrap_or_default();
        let mut wrote = writeln!(out, "{line}");
        next = records.try_recv().ok();
        if next.is_none() {
            wrote = wrote.and_then(|()| out.flush());
        }
        if let Err(e) = wrote {
            tracing::error!(path = %path.display(), error = %e, "cannot write the audit log; auditing stops");
            return;
        }
        written.fetch_add(1, Ordering::Relaxed);
        if next.is_none() {
            next = records.recv().ok();
        }
    }
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(result: &'static str) -> AuditRecord {
        AuditRecord {
            time_ms: crate::task::now_ms(),
            principal: "User:alice".into(),
            client: "127.0.0.1".into(),
            listener: "SASL_SSL".into(),
            api: "Produce".into(),
            operation: "Write".into(),
            resource_type: "Topic".into(),
            resource: "orders".into(),
            result,
            reason: "NoMatchingAcl".into(),
        }
    }

    #[test]
    fn records_are_json_lines_in_order() {
        let dir = std::env::temp_dir().join(format!("strata-audit-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("audit.log");
        let log = AuditLog::open(&path, false).unwrap();
        log.record(record("DENIED"));
        log.record(record("ALLOWED"));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while log.written() < 2 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        drop(log);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["result"], "DENIED");
        assert_eq!(lines[0]["principal"], "User:alice");
        assert_eq!(lines[1]["result"], "ALLOWED");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_log_that_cannot_be_opened_says_which_file() {
        let err = AuditLog::open(Path::new("/nonexistent/dir/audit.log"), false).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/dir/audit.log"));
    }
}
