//! The `strata` command line.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use strata_meta::config::BrokerProperties;
use strata_server::{Broker, ServerConfig};

#[derive(Parser)]
#[command(
    name = "strata",
    version,
    about = "A Kafka-compatible event streaming engine"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a broker.
    Serve(ServeArgs),
    /// Measure a Kafka-compatible broker (a private Strata broker without --bootstrap)
    /// against this machine's limits.
    Bench(strata_bench::BenchArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address for Kafka clients.
    #[arg(long, default_value = "127.0.0.1:9092")]
    listen: SocketAddr,
    /// Address clients are told to connect to (default: the listen address).
    #[arg(long, value_name = "HOST:PORT")]
    advertised_listener: Option<String>,
    /// Where logs and metadata live.
    #[arg(long, default_value = "./strata-data")]
    data_dir: PathBuf,
    /// Admin HTTP address (/health, /metrics).
    #[arg(long, default_value = "127.0.0.1:9644")]
    http: SocketAddr,
    /// A Kafka-style server.properties file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Set a broker property, with Kafka's names (repeatable): --override num.partitions=3
    #[arg(long = "override", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Object store for tiered storage: file:///path, s3://bucket/prefix, gs://bucket/prefix,
    /// az://container/prefix (settings from the environment: AWS_ENDPOINT, AWS_REGION, ...).
    /// When given, new topics are tiered by default (log.remote.storage.enable=true).
    /// Without it, topics that set remote.storage.enable=true tier into <data-dir>/tier.
    #[arg(long, value_name = "URL")]
    object_store: Option<String>,
    /// An object-store setting (repeatable), over the environment: --object-store-option
    /// aws_endpoint=http://127.0.0.1:9000
    #[arg(long = "object-store-option", value_name = "KEY=VALUE")]
    object_store_options: Vec<String>,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match Cli::parse().command {
        Command::Serve(args) => serve(args),
        Command::Bench(args) => strata_bench::run(args),
    }
}

fn server_config(args: ServeArgs) -> anyhow::Result<ServerConfig> {
    let mut props = BrokerProperties::default();
    if let Some(path) = &args.config {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let entries = BrokerProperties::parse_properties(&text)
            .with_context(|| format!("in {}", path.display()))?;
        for (k, v) in entries {
            props
                .set(&k, &v)
                .with_context(|| format!("in {}", path.display()))?;
        }
    }
    for o in &args.overrides {
        let Some((k, v)) = o.split_once('=') else {
            bail!("--override expects KEY=VALUE, got {o:?}");
        };
        props
            .set(k.trim(), v)
            .with_context(|| format!("in --override {o}"))?;
    }
    if args.object_store.is_some() && props.get("log.remote.storage.enable").is_none() {
        props.set("log.remote.storage.enable", "true")?;
    }
    let object_store_options = args
        .object_store_options
        .iter()
        .map(|o| {
            o.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.to_string()))
                .with_context(|| format!("--object-store-option expects KEY=VALUE, got {o:?}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let node_id: i32 = props
        .get("node.id")
        .or(props.get("broker.id"))
        .unwrap_or("1")
        .parse()
        .context("node.id must be an integer")?;
    let advertised = args
        .advertised_listener
        .clone()
        .unwrap_or_else(|| args.listen.to_string());
    let (host, port) = advertised
        .rsplit_once(':')
        .with_context(|| format!("--advertised-listener expects HOST:PORT, got {advertised:?}"))?;
    let port: u16 = port
        .parse()
        .with_context(|| format!("bad port in --advertised-listener {advertised:?}"))?;
    Ok(ServerConfig {
        node_id,
        listen: args.listen,
        advertised_host: host.trim_matches(['[', ']']).to_string(),
        advertised_port: port.into(),
        data_dir: args.data_dir,
        http: args.http,
        props,
        object_store: args.object_store,
        object_store_options,
    })
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = server_config(args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("strata-worker")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let (kafka, http) = strata_server::bind(&config).await?;
        let broker = tokio::task::spawn_blocking(move || Broker::open(config)).await??;
        tracing::info!(
            listen = %kafka.local_addr()?,
            http = %http.local_addr()?,
            "serving Kafka clients"
        );
        broker.run(kafka, http, shutdown_signal()).await
    })
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received"),
        _ = term => tracing::info!("SIGTERM received"),
    }
}
