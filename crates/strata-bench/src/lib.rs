//! `strata bench`: drives a Kafka-compatible broker with librdkafka (producer throughput,
//! consumer throughput, end-to-end latency, idle partitions and connections, start-up time,
//! tiered storage), measures the machine's own limits in the same run, and reports every
//! result beside them.
//!
//! Speed is judged from this report, never by a timed test: the numbers are only meaningful as
//! ratios to baselines measured on the same machine at the same time.
//!
//! Errors are `anyhow` with context: this is a command-line tool, and every error ends up in
//! front of the user.

mod baseline;
mod client;
mod consumer;
mod metrics;
mod options;
mod process;
mod producer;
mod report;
mod scenarios;

pub use options::{BenchArgs, ByteSize, Scenario};
pub use report::Report;

use std::net::ToSocketAddrs;

use anyhow::Context;

use crate::process::{find_listener_pid, raise_open_file_limit, LocalBroker};

/// Runs the scenarios `args` asks for and prints the report (a table, or JSON with `--json`).
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let report = measure(&args)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }
    Ok(())
}

/// Runs the scenarios `args` asks for and returns the report.
pub fn measure(args: &BenchArgs) -> anyhow::Result<Report> {
    // Removed when `measure` returns.
    let mut temp = None;
    let work_dir = match &args.data_dir {
        Some(d) => d.clone(),
        None => temp
            .insert(tempfile::tempdir().context("cannot create a temporary directory")?)
            .path()
            .to_path_buf(),
    };
    if args.wants(Scenario::IdleConnections) {
        raise_open_file_limit(args.idle_connections as u64 + 4096);
    }
    std::fs::create_dir_all(&work_dir)
        .with_context(|| format!("cannot create {}", work_dir.display()))?;
    let mut private = None;
    let bootstrap = match &args.bootstrap {
        Some(b) => b.clone(),
        None => {
            tracing::info!("starting a private broker in {}", work_dir.display());
            let broker = LocalBroker::start(&work_dir.join("bench"), &args.broker_overrides)?;
            let addr = broker.addr.to_string();
            private = Some(broker);
            addr
        }
    };
    let pid = args
        .broker_pid
        .or(private.as_ref().map(LocalBroker::pid))
        .or_else(|| {
            let port = bootstrap.to_socket_addrs().ok()?.next()?.port();
            find_listener_pid(port)
        });
    let mut bench = scenarios::Bench::new(args, bootstrap, pid, private.is_some(), work_dir)?;
    let result = bench.run_all();
    // The topics go even when a scenario failed.
    bench.cleanup();
    result?;
    drop(private);
    Ok(bench.into_report())
}
