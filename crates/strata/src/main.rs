//! The `strata` command line.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use strata_meta::config::BrokerProperties;
use strata_server::config::QuorumSettings;
use strata_server::controller_service::ControllerService;
use strata_server::{Broker, ServerConfig};

mod dev_cluster;
mod panic_hook;

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
    /// Development tools: `strata dev cluster N` runs an N-node cluster on this machine.
    Dev(dev_cluster::DevArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address for Kafka clients: one PLAINTEXT listener (default 127.0.0.1:9092). For
    /// several listeners, set Kafka's `listeners` property instead.
    #[arg(long, value_name = "HOST:PORT")]
    listen: Option<SocketAddr>,
    /// Address clients are told to connect to (default: the listen address); with
    /// `listeners`, use `advertised.listeners`.
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
    /// This node's id (Kafka's node.id; default: the node.id property, else 1).
    #[arg(long)]
    node_id: Option<i32>,
    /// What this node does: broker, controller, or both (comma-separated). A controller votes
    /// in the metadata quorum and may become the active controller.
    #[arg(long, default_value = "broker,controller")]
    process_roles: String,
    /// The metadata quorum's voters: ID@HOST:PORT,... (their controller listeners). Without
    /// it, the node is a cluster of one with its own metadata log.
    #[arg(long, value_name = "ID@HOST:PORT,...")]
    controller_quorum_voters: Option<String>,
    /// Where this node's controller listener binds (default: its address among the voters;
    /// required for a broker-only node, which follows the quorum as a learner).
    #[arg(long, value_name = "HOST:PORT")]
    controller_listen: Option<SocketAddr>,
    /// This broker's rack (Kafka's broker.rack): replicas are spread across racks.
    #[arg(long, value_name = "RACK")]
    broker_rack: Option<String>,
    /// A SCRAM credential to create at start-up if that user has none for that mechanism
    /// (repeatable; `kafka-storage format --add-scram` syntax):
    /// 'SCRAM-SHA-256=[name=admin,password=admin-secret]', optionally with iterations= and
    /// salt= (base64), or saltedpassword= (base64, with salt=) instead of password=.
    /// Parsed in `serve`, not by clap, whose error would echo the password.
    #[arg(long = "add-scram", value_name = "MECHANISM=[name=..,password=..]")]
    add_scram: Vec<String>,
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
    panic_hook::install();
    match Cli::parse().command {
        Command::Serve(args) => serve(args),
        Command::Bench(args) => strata_bench::run(args),
        Command::Dev(args) => dev_cluster::run(args),
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
    let node_id: i32 = match args.node_id {
        Some(id) => id,
        None => props
            .get("node.id")
            .or(props.get("broker.id"))
            .unwrap_or("1")
            .parse()
            .context("node.id must be an integer")?,
    };
    if node_id < 0 {
        bail!("--node-id must be at least 0, got {node_id}");
    }
    let quorum = quorum_settings(&args, node_id)?;
    if quorum.is_some() && args.object_store.is_none() {
        tracing::warn!(
            "in a cluster, tiered topics need --object-store naming a store every node shares: \
             without it this node tiers into its own data directory, where a partition's next \
             leader cannot read"
        );
    }
    let (listeners, inter_broker_listener) = strata_server::config::listeners_from(
        &props,
        args.listen,
        args.advertised_listener.as_deref(),
    )?;
    let inter = listeners
        .iter()
        .find(|l| l.name == inter_broker_listener)
        .context("the inter-broker listener is among the listeners")?
        .clone();
    Ok(ServerConfig {
        node_id,
        listen: inter.bind,
        advertised_host: inter.advertised_host,
        advertised_port: inter.advertised_port,
        listeners,
        inter_broker_listener,
        data_dir: args.data_dir,
        http: args.http,
        props,
        object_store: args.object_store,
        object_store_options,
        rack: args.broker_rack,
        quorum,
    })
}

/// Checks `--process-roles`, `--controller-quorum-voters` and `--controller-listen` together.
fn quorum_settings(args: &ServeArgs, node_id: i32) -> anyhow::Result<Option<QuorumSettings>> {
    let mut broker = false;
    let mut controller = false;
    for role in args.process_roles.split(',').map(str::trim) {
        match role {
            "broker" => broker = true,
            "controller" => controller = true,
            other => bail!(
                "--process-roles: unknown role {other:?} (expected broker, controller or both)"
            ),
        }
    }
    let Some(voters_text) = &args.controller_quorum_voters else {
        if !broker {
            bail!("--process-roles controller needs --controller-quorum-voters");
        }
        if args.controller_listen.is_some() {
            bail!("--controller-listen needs --controller-quorum-voters");
        }
        return Ok(None);
    };
    let voters = parse_voters(voters_text)?;
    let own = voters.get(&node_id);
    if controller && own.is_none() {
        bail!("node {node_id} has the controller role but is not among --controller-quorum-voters {voters_text}");
    }
    if !controller && own.is_some() {
        bail!("node {node_id} is among --controller-quorum-voters but lacks the controller role in --process-roles");
    }
    let (controller_listen, controller_advertised) = match (args.controller_listen, own) {
        (Some(listen), Some(own)) => (listen, own.clone()),
        (Some(listen), None) => (listen, listen.to_string()),
        (None, Some(own)) => {
            let listen = std::net::ToSocketAddrs::to_socket_addrs(own.as_str())
                .ok()
                .and_then(|mut a| a.next())
                .with_context(|| format!("cannot resolve this node's voter address {own}"))?;
            (listen, own.clone())
        }
        (None, None) => bail!("a broker-only node needs --controller-listen"),
    };
    Ok(Some(QuorumSettings {
        voters,
        controller_listen,
        controller_advertised,
        broker,
        controller,
    }))
}

/// Parses `1@host:port,2@host:port`.
fn parse_voters(text: &str) -> anyhow::Result<BTreeMap<i32, String>> {
    let mut voters = BTreeMap::new();
    for entry in text.split(',').map(str::trim) {
        let bad = || format!("--controller-quorum-voters: expected ID@HOST:PORT, got {entry:?}");
        let (id, addr) = entry.split_once('@').with_context(bad)?;
        let id: i32 = id
            .trim()
            .parse()
            .ok()
            .filter(|i| *i >= 0)
            .with_context(bad)?;
        let (host, port) = addr.rsplit_once(':').with_context(bad)?;
        if host.is_empty() || port.parse::<u16>().is_err() {
            bail!(bad());
        }
        if voters.insert(id, addr.to_string()).is_some() {
            bail!("--controller-quorum-voters names node {id} twice");
        }
    }
    Ok(voters)
}

fn serve(mut args: ServeArgs) -> anyhow::Result<()> {
    let add_scram = std::mem::take(&mut args.add_scram)
        .iter()
        .map(|a| strata_meta::scram::ScramBootstrap::parse(a))
        .collect::<Result<Vec<_>, _>>()?;
    let config = server_config(args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("strata-worker")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        if config.quorum.as_ref().is_some_and(|q| !q.broker) {
            if !add_scram.is_empty() {
                tracing::warn!("--add-scram is applied by broker nodes; this controller-only node ignores it");
            }
            return serve_controller_only(config).await;
        }
        let (kafka, http) = strata_server::bind(&config).await?;
        let quorum = match &config.quorum {
            Some(settings) => Some(start_quorum(&config, settings).await?),
            None => None,
        };
        let for_shutdown = quorum.as_ref().map(|(q, _)| q.clone());
        let broker = tokio::task::spawn_blocking(move || Broker::open(config, quorum)).await??;
        if !add_scram.is_empty() {
            let b = broker.clone();
            let created =
                tokio::task::spawn_blocking(move || b.bootstrap_scram_credentials(&add_scram))
                    .await??;
            for (user, mechanism) in created {
                tracing::info!(user = %user, mechanism = %mechanism, "SCRAM credential created (--add-scram)");
            }
        }
        let listening: Vec<String> = kafka
            .iter()
            .map(|l| {
                let addr = l
                    .socket
                    .local_addr()
                    .map_or_else(|_| l.config.bind.to_string(), |a| a.to_string());
                format!("{}://{addr}", l.config.name)
            })
            .collect();
        tracing::info!(
            listen = %listening.join(","),
            http = %http.local_addr()?,
            "serving Kafka clients"
        );
        let served = broker.run(kafka, http, shutdown_signal()).await;
        if let Some(quorum) = for_shutdown {
            quorum.shutdown().await;
        }
        served
    })
}

/// Binds the controller listener and joins the metadata quorum; the node's image is replayed
/// from its own disk when this returns (the quorum may not have a leader yet).
async fn start_quorum(
    config: &ServerConfig,
    settings: &QuorumSettings,
) -> anyhow::Result<(Arc<strata_quorum::Quorum>, Option<Arc<ControllerService>>)> {
    let listener = tokio::net::TcpListener::bind(settings.controller_listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.controller_listen))?;
    let service = settings.controller.then(|| ControllerService::new(config));
    let routes = service.as_ref().map(|s| s.routes()).unwrap_or_default();
    let mut quorum_config = strata_quorum::QuorumConfig::new(
        config.node_id,
        settings.voters.clone(),
        settings.controller_advertised.clone(),
        config.data_dir.join("meta").join("raft"),
    );
    quorum_config.tls = strata_server::tls::controller_tls(config)?;
    let quorum = strata_quorum::Quorum::start(quorum_config, listener, routes)
        .await
        .context("cannot start the metadata quorum")?;
    if let Some(service) = &service {
        service.attach(quorum.clone());
    }
    tracing::info!(
        controller_listen = %settings.controller_listen,
        voters = ?settings.voters,
        "joined the metadata quorum"
    );
    Ok((quorum, service))
}

/// A controller without the broker role: votes, and runs the active controller's duties
/// when elected, until SIGTERM/SIGINT.
async fn serve_controller_only(config: ServerConfig) -> anyhow::Result<()> {
    let settings = config
        .quorum
        .clone()
        .context("a controller needs a quorum")?;
    std::fs::create_dir_all(config.data_dir.join("meta"))
        .with_context(|| format!("cannot create {}", config.data_dir.display()))?;
    let (quorum, service) = start_quorum(&config, &settings).await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let sessions = service.map(|s| tokio::spawn(s.run_controller_duties(stop_rx)));
    shutdown_signal().await;
    let _ = stop_tx.send(true);
    if let Some(task) = sessions {
        let _ = task.await;
    }
    quorum.shutdown().await;
    Ok(())
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
