//! `strata dev cluster N`: an N-node cluster on this machine, for trying clustering out.
//!
//! It starts N child `strata serve` processes (this same executable), node ids 1..=N, each
//! both broker and controller, on loopback ports laid out from `--base-port`:
//!
//! | node i      | port                 |
//! |-------------|----------------------|
//! | Kafka       | BASE + i - 1         |
//! | controller  | BASE + 100 + i - 1   |
//! | admin HTTP  | BASE + 200 + i - 1   |
//!
//! with data in `<data-dir>/node-<i>` and output appended to `<data-dir>/node-<i>.log`. It
//! waits until every node is healthy and registered unfenced, prints the bootstrap servers,
//! then forwards SIGINT/SIGTERM to the nodes and waits for them. If a node exits on its own,
//! it stops the others and exits nonzero. Unix only (signals).

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::signal::unix::{signal, Signal, SignalKind};

/// Kafka ports are BASE..BASE+N-1 and must stay below the controller ports at BASE+100.
const MAX_NODES: u16 = 99;
const CONTROLLER_OFFSET: u16 = 100;
const HTTP_OFFSET: u16 = 200;
const HOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// How long the nodes get to stop after the forwarded signal before they are killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// Signals this soon after the one that started the shutdown are taken as duplicates.
const DUPLICATE_SIGNAL_WINDOW: Duration = Duration::from_secs(1);
/// How often the supervisor looks at its children.
const POLL: Duration = Duration::from_millis(100);

#[derive(clap::Args)]
pub struct DevArgs {
    #[command(subcommand)]
    command: DevCommand,
}

#[derive(clap::Subcommand)]
enum DevCommand {
    /// Run an N-node cluster on this machine: N child `strata serve` processes, each a
    /// broker and a controller, on loopback ports (Kafka BASE+i-1, controller BASE+100+i-1,
    /// admin HTTP BASE+200+i-1 for node i). Ctrl-C or SIGTERM stops them all.
    Cluster(ClusterArgs),
}

#[derive(clap::Args)]
struct ClusterArgs {
    /// Number of nodes (node ids 1..=N).
    #[arg(value_parser = clap::value_parser!(u16).range(1..=MAX_NODES as i64))]
    nodes: u16,
    /// Kafka port of node 1; the other ports follow from it.
    #[arg(long, default_value_t = 19092, value_name = "PORT")]
    base_port: u16,
    /// Parent of the nodes' data directories (node-<id>) and logs (node-<id>.log).
    #[arg(long, default_value = "./strata-cluster")]
    data_dir: PathBuf,
    /// A broker property for every node, with Kafka's names (repeatable):
    /// --override broker.session.timeout.ms=3000
    #[arg(long = "override", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// How long to wait for every node to be healthy and registered unfenced.
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    ready_timeout: u64,
}

pub fn run(args: DevArgs) -> anyhow::Result<()> {
    match args.command {
        DevCommand::Cluster(args) => cluster(args),
    }
}

/// The broker property that makes new topics tiered.
const TIERED_BY_DEFAULT: &str = "log.remote.storage.enable";

/// One node of the cluster: its addresses and files.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Node {
    id: u16,
    kafka: SocketAddr,
    controller: SocketAddr,
    http: SocketAddr,
    data_dir: PathBuf,
    log: PathBuf,
}

/// What to start, computed and checked before anything is started.
#[derive(Debug)]
struct Plan {
    nodes: Vec<Node>,
    overrides: Vec<String>,
    /// The object store every node tiers into: a partition's next leader must read what the
    /// last one uploaded.
    tier: PathBuf,
}

impl Plan {
    fn new(
        count: u16,
        base_port: u16,
        data_dir: &Path,
        overrides: &[String],
    ) -> anyhow::Result<Plan> {
        if count == 0 || count > MAX_NODES {
            bail!("a dev cluster has 1 to {MAX_NODES} nodes, not {count}");
        }
        if base_port == 0 {
            bail!("--base-port must be a port number (1..=65535), not 0");
        }
        let highest = u32::from(base_port) + u32::from(HTTP_OFFSET) + u32::from(count) - 1;
        if highest > u32::from(u16::MAX) {
            bail!(
                "--base-port {base_port} is too high for {count} nodes: the admin HTTP ports \
                 would reach {highest} (at most {} for {count} nodes)",
                u32::from(u16::MAX) + 1 - u32::from(HTTP_OFFSET) - u32::from(count)
            );
        }
        for o in overrides {
            match o.split_once('=') {
                Some((k, _)) if !k.trim().is_empty() => {}
                _ => bail!("--override expects KEY=VALUE, got {o:?}"),
            }
        }
        let nodes = (1..=count)
            .map(|id| {
                let port = |offset: u16| SocketAddr::new(HOST, base_port + offset + (id - 1));
                Node {
                    id,
                    kafka: port(0),
                    controller: port(CONTROLLER_OFFSET),
                    http: port(HTTP_OFFSET),
                    data_dir: data_dir.join(format!("node-{id}")),
                    log: data_dir.join(format!("node-{id}.log")),
                }
            })
            .collect();
        let tier = std::path::absolute(data_dir.join("tier"))
            .with_context(|| format!("cannot resolve {}", data_dir.display()))?;
        Ok(Plan {
            nodes,
            overrides: overrides.to_vec(),
            tier,
        })
    }

    /// `--controller-quorum-voters`: every node is a voter.
    fn voters(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("{}@{}", n.id, n.controller))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn bootstrap(&self) -> String {
        self.nodes
            .iter()
            .map(|n| n.kafka.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The `strata serve` arguments of one node.
    fn serve_args(&self, node: &Node) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "serve".into(),
            "--node-id".into(),
            node.id.to_string(),
            "--process-roles".into(),
            "broker,controller".into(),
            "--controller-quorum-voters".into(),
            self.voters(),
            "--controller-listen".into(),
            node.controller.to_string(),
            "--listen".into(),
            node.kafka.to_string(),
            "--http".into(),
            node.http.to_string(),
            "--data-dir".into(),
            node.data_dir.display().to_string(),
            "--object-store".into(),
            format!("file://{}", self.tier.display()),
        ];
        // A shared store alone would tier every new topic (`--object-store` does); a dev
        // cluster tiers what `strata serve` tiers unless told otherwise.
        if !self
            .overrides
            .iter()
            .any(|o| o.split('=').next().map(str::trim) == Some(TIERED_BY_DEFAULT))
        {
            args.push("--override".into());
            args.push(format!("{TIERED_BY_DEFAULT}=false"));
        }
        for o in &self.overrides {
            args.push("--override".into());
            args.push(o.clone());
        }
        args
    }

    /// Every port must be free before any node starts, so a clash is one clear error
    /// rather than a node dying while the others wait for it.
    fn check_ports_free(&self) -> anyhow::Result<()> {
        for n in &self.nodes {
            for (what, addr) in [
                ("Kafka", n.kafka),
                ("controller", n.controller),
                ("admin HTTP", n.http),
            ] {
                if let Err(e) = TcpListener::bind(addr) {
                    bail!(
                        "port {} ({what} port of node {}) is not free: {e}; \
                         is another cluster running? choose another --base-port",
                        addr.port(),
                        n.id
                    );
                }
            }
        }
        Ok(())
    }
}

fn cluster(args: ClusterArgs) -> anyhow::Result<()> {
    let plan = Plan::new(args.nodes, args.base_port, &args.data_dir, &args.overrides)?;
    plan.check_ports_free()?;
    for n in &plan.nodes {
        fs::create_dir_all(&n.data_dir)
            .with_context(|| format!("cannot create {}", n.data_dir.display()))?;
    }
    let exe = std::env::current_exe().context("cannot find the strata executable")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(supervise(
        &plan,
        &exe,
        Duration::from_secs(args.ready_timeout),
    ))
}

/// SIGINT and SIGTERM, listened to before the first child starts.
struct Signals {
    int: Signal,
    term: Signal,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sig {
    Int,
    Term,
}

impl Sig {
    fn name(self) -> &'static str {
        match self {
            Sig::Int => "SIGINT",
            Sig::Term => "SIGTERM",
        }
    }

    fn number(self) -> i32 {
        // The same on Linux and the BSDs (macOS).
        match self {
            Sig::Int => 2,
            Sig::Term => 15,
        }
    }
}

impl Signals {
    fn new() -> anyhow::Result<Signals> {
        Ok(Signals {
            int: signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?,
            term: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
        })
    }

    /// Waits up to `d`; returns the signal that arrived meanwhile, if any.
    async fn wait(&mut self, d: Duration) -> Option<Sig> {
        tokio::select! {
            biased;
            _ = self.int.recv() => Some(Sig::Int),
            _ = self.term.recv() => Some(Sig::Term),
            _ = tokio::time::sleep(d) => None,
        }
    }
}

/// A started node.
struct Running {
    node: Node,
    child: Child,
    status: Option<ExitStatus>,
}

impl Running {
    /// The exit status, once the child has exited (reaped here, once).
    fn poll_exit(&mut self) -> io::Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self.child.try_wait()?;
        }
        Ok(self.status)
    }

    fn send(&mut self, sig: Sig) -> io::Result<()> {
        if self.poll_exit()?.is_some() {
            return Ok(());
        }
        let pid = i32::try_from(self.child.id()).map_err(io::Error::other)?;
        // SAFETY: kill(2) has no memory-safety preconditions. The pid is our own child,
        // not reaped yet (try_wait above saw it running), so it names no other process.
        if unsafe { kill(pid, sig.number()) } == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

unsafe extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

/// The children; whatever is still running when this is dropped (an early error) is killed.
#[derive(Default)]
struct Children(Vec<Running>);

impl Drop for Children {
    fn drop(&mut self) {
        for r in &mut self.0 {
            if matches!(r.poll_exit(), Ok(None)) {
                let _ = r.child.kill();
                let _ = r.child.wait();
            }
        }
    }
}

impl Children {
    fn spawn(&mut self, plan: &Plan, node: &Node, exe: &Path) -> anyhow::Result<()> {
        let args = plan.serve_args(node);
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .with_context(|| format!("cannot open {}", node.log.display()))?;
        writeln!(
            log,
            "===== strata dev cluster: node {} starts: {} {}",
            node.id,
            exe.display(),
            args.join(" ")
        )
        .with_context(|| format!("cannot write {}", node.log.display()))?;
        let child = Command::new(exe)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start node {} ({})", node.id, exe.display()))?;
        self.0.push(Running {
            node: node.clone(),
            child,
            status: None,
        });
        Ok(())
    }

    /// The first node found to have exited, with its status.
    fn exited(&mut self) -> anyhow::Result<Option<(Node, ExitStatus)>> {
        for r in &mut self.0 {
            if let Some(status) = r.poll_exit().context("cannot check a node's process")? {
                return Ok(Some((r.node.clone(), status)));
            }
        }
        Ok(None)
    }

    /// Sends `sig` to every node still running and waits for all of them (at most
    /// STOP_TIMEOUT; another SIGINT/SIGTERM, after DUPLICATE_SIGNAL_WINDOW, kills them at
    /// once). Errors if a node had to be killed or exited with a failure (dying of `sig`
    /// itself is no failure: a node still starting has no handler for it yet).
    async fn stop(&mut self, sig: Sig, signals: &mut Signals) -> anyhow::Result<()> {
        // Only the nodes running now are judged by how they stop; one that exited before
        // has been reported by the caller.
        let mut stopping = Vec::new();
        for r in &mut self.0 {
            if r.poll_exit()?.is_some() {
                continue;
            }
            stopping.push(r.node.id);
            if let Err(e) = r.send(sig) {
                eprintln!("cannot send {} to node {}: {e}", sig.name(), r.node.id);
            }
        }
        let stop_started = Instant::now();
        let deadline = stop_started + STOP_TIMEOUT;
        let mut killed = Vec::new();
        loop {
            let mut running = Vec::new();
            for r in &mut self.0 {
                if r.poll_exit()?.is_none() {
                    running.push(r.node.id);
                }
            }
            if running.is_empty() {
                break;
            }
            // A signal in the first moments is the same one delivered twice (a terminal's
            // Ctrl-C reaches the whole process group, wrappers such as timeout(1) forward
            // theirs), not a second request.
            let again = signals
                .wait(Duration::from_millis(20))
                .await
                .filter(|_| stop_started.elapsed() >= DUPLICATE_SIGNAL_WINDOW);
            if again.is_some() || Instant::now() >= deadline {
                if again.is_some() {
                    eprintln!("another signal during shutdown: killing nodes {running:?}");
                } else {
                    eprintln!(
                        "nodes {running:?} did not stop within {STOP_TIMEOUT:?}; killing them"
                    );
                }
                for r in &mut self.0 {
                    if r.poll_exit()?.is_none() {
                        let _ = r.child.kill();
                        r.status = Some(r.child.wait()?);
                        killed.push(r.node.id);
                    }
                }
            }
        }
        let failed: Vec<String> = self
            .0
            .iter()
            .filter(|r| stopping.contains(&r.node.id) && !killed.contains(&r.node.id))
            .filter_map(|r| match r.status {
                Some(s) if !s.success() && s.signal() != Some(sig.number()) => {
                    Some(format!("node {} ({s})", r.node.id))
                }
                _ => None,
            })
            .collect();
        if !killed.is_empty() {
            bail!("killed nodes {killed:?}, which did not stop cleanly");
        }
        if !failed.is_empty() {
            bail!("stopping failed for {}", failed.join(", "));
        }
        Ok(())
    }
}

async fn supervise(plan: &Plan, exe: &Path, ready_timeout: Duration) -> anyhow::Result<()> {
    let mut signals = Signals::new()?;
    let mut children = Children::default();
    let started = Instant::now();
    println!(
        "strata dev cluster: starting {} nodes (data and logs in {})",
        plan.nodes.len(),
        plan.nodes[0]
            .data_dir
            .parent()
            .unwrap_or(Path::new("."))
            .display()
    );
    for node in &plan.nodes {
        children.spawn(plan, node, exe)?;
    }
    for r in &children.0 {
        println!(
            "  node {}  pid {}  kafka {}  controller {}  http http://{}  log {}",
            r.node.id,
            r.child.id(),
            r.node.kafka,
            r.node.controller,
            r.node.http,
            r.node.log.display()
        );
    }
    let _ = io::stdout().flush();

    match wait_ready(plan, &mut children, &mut signals, ready_timeout).await {
        Ok(Ready::Up(controller)) => {
            let controller = controller.map_or("unknown".to_string(), |c| format!("node {c}"));
            println!(
                "cluster ready in {:.1} s; active controller: {controller}",
                started.elapsed().as_secs_f64()
            );
            println!("bootstrap servers: {}", plan.bootstrap());
            println!(
                "Ctrl-C or SIGTERM stops every node (a second one, a second later, kills them)."
            );
            let _ = io::stdout().flush();
        }
        Ok(Ready::Signalled(sig)) => {
            println!(
                "{} received during start-up: stopping the nodes",
                sig.name()
            );
            return children.stop(sig, &mut signals).await;
        }
        Err(e) => {
            let stopped = children.stop(Sig::Term, &mut signals).await;
            if let Err(s) = stopped {
                eprintln!("{s:#}");
            }
            return Err(e);
        }
    }

    loop {
        if let Some(sig) = signals.wait(POLL).await {
            println!("{} received: stopping the nodes", sig.name());
            let _ = io::stdout().flush();
            children.stop(sig, &mut signals).await?;
            println!("all nodes stopped");
            return Ok(());
        }
        if let Some((node, status)) = children.exited()? {
            // A Ctrl-C in a terminal reaches the nodes (same process group) as well as us;
            // give our own copy of the signal a moment to arrive before calling it a crash.
            if let Some(sig) = signals.wait(Duration::from_millis(500)).await {
                println!("{} received: stopping the nodes", sig.name());
                children.stop(sig, &mut signals).await?;
                println!("all nodes stopped");
                return Ok(());
            }
            eprintln!(
                "node {} exited unexpectedly ({status}); stopping the others. Tail of {}:\n{}",
                node.id,
                node.log.display(),
                log_tail(&node.log, 20)
            );
            if let Err(e) = children.stop(Sig::Term, &mut signals).await {
                eprintln!("{e:#}");
            }
            bail!("node {} exited unexpectedly ({status})", node.id);
        }
    }
}

enum Ready {
    /// Every node healthy and every broker registered unfenced; the active controller, when
    /// the nodes report one.
    Up(Option<i64>),
    Signalled(Sig),
}

async fn wait_ready(
    plan: &Plan,
    children: &mut Children,
    signals: &mut Signals,
    timeout: Duration,
) -> anyhow::Result<Ready> {
    let deadline = Instant::now() + timeout;
    let mut healthy = vec![false; plan.nodes.len()];
    let mut last = vec![String::from("no answer yet"); plan.nodes.len()];
    loop {
        if let Some(sig) = signals.wait(POLL).await {
            return Ok(Ready::Signalled(sig));
        }
        if let Some((node, status)) = children.exited()? {
            bail!(
                "node {} exited during start-up ({status}); tail of {}:\n{}",
                node.id,
                node.log.display(),
                log_tail(&node.log, 20)
            );
        }
        for (i, n) in plan.nodes.iter().enumerate() {
            if !healthy[i] {
                match http_get(n.http, "/health") {
                    Some((200, _)) => healthy[i] = true,
                    Some((code, body)) => last[i] = format!("/health answered {code}: {body}"),
                    None => last[i] = "/health does not answer".into(),
                }
            }
        }
        if healthy.iter().all(|h| *h) {
            let mut controllers = Vec::new();
            for (i, n) in plan.nodes.iter().enumerate() {
                match http_get(n.http, "/cluster") {
                    // A broker without /cluster: health is all we can check.
                    Some((404, _)) => controllers.push(None),
                    Some((200, body)) => match cluster_view(&body, plan.nodes.len()) {
                        Ok(c) => controllers.push(Some(c)),
                        Err(why) => last[i] = why,
                    },
                    Some((code, body)) => last[i] = format!("/cluster answered {code}: {body}"),
                    None => last[i] = "/cluster does not answer".into(),
                }
            }
            if controllers.len() == plan.nodes.len() {
                let known: Vec<i64> = controllers.iter().flatten().copied().collect();
                if known.windows(2).all(|w| w[0] == w[1]) {
                    return Ok(Ready::Up(known.first().copied()));
                }
                for (i, c) in controllers.iter().enumerate() {
                    last[i] = format!("sees controller {c:?}; the nodes disagree");
                }
            }
        }
        if Instant::now() >= deadline {
            let why: Vec<String> = plan
                .nodes
                .iter()
                .zip(&last)
                .map(|(n, why)| format!("  node {}: {why} (log {})", n.id, n.log.display()))
                .collect();
            bail!(
                "the cluster was not ready within {timeout:?} (every node healthy, every \
                 broker registered and unfenced):\n{}",
                why.join("\n")
            );
        }
    }
}

/// From a node's `/cluster` JSON: the active controller's id when the node sees one and all
/// `expected` brokers unfenced, else why not. A plain text scan: this crate has no JSON
/// parser, and the shape is ours (`"controller_id": 2`, `"fenced": false`).
fn cluster_view(body: &str, expected: usize) -> Result<i64, String> {
    let compact: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    // The broker entries are flat objects: the list ends at the first ']'.
    let brokers = compact
        .split_once("\"brokers\":[")
        .and_then(|(_, rest)| rest.split_once(']'))
        .map_or("", |(list, _)| list);
    let unfenced = brokers.matches("\"fenced\":false").count();
    let fenced = brokers.matches("\"fenced\":true").count();
    let controller = compact
        .split_once("\"controller_id\":")
        .and_then(|(_, rest)| {
            let end = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '-'))
                .unwrap_or(rest.len());
            rest[..end].parse::<i64>().ok()
        });
    match controller {
        Some(c) if unfenced == expected && fenced == 0 => Ok(c),
        Some(_) => Err(format!(
            "{unfenced} of {expected} brokers unfenced ({fenced} fenced)"
        )),
        None => Err("no active controller yet".into()),
    }
}

/// A minimal HTTP/1.1 GET with short timeouts: (status, body), or None if the node does not
/// answer.
fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(1))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = Vec::new();
    s.take(1 << 20).read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.trim().to_string())
        .unwrap_or_default();
    Some((status, body))
}

/// The last `lines` lines of a node's log, for error messages.
fn log_tail(path: &Path, lines: usize) -> String {
    match fs::read(path) {
        Ok(data) => {
            let text = String::from_utf8_lossy(&data);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lays_out_ports_dirs_and_voters() {
        let plan = Plan::new(3, 19092, Path::new("/tmp/c"), &["a.b=1".into()]).unwrap();
        let n2 = &plan.nodes[1];
        assert_eq!(n2.id, 2);
        assert_eq!(n2.kafka, "127.0.0.1:19093".parse().unwrap());
        assert_eq!(n2.controller, "127.0.0.1:19193".parse().unwrap());
        assert_eq!(n2.http, "127.0.0.1:19293".parse().unwrap());
        assert_eq!(n2.data_dir, Path::new("/tmp/c/node-2"));
        assert_eq!(n2.log, Path::new("/tmp/c/node-2.log"));
        assert_eq!(
            plan.voters(),
            "1@127.0.0.1:19192,2@127.0.0.1:19193,3@127.0.0.1:19194"
        );
        assert_eq!(
            plan.bootstrap(),
            "127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094"
        );
        let args = plan.serve_args(n2);
        let after = |flag: &str| {
            let i = args.iter().position(|a| a == flag).unwrap();
            args[i + 1].as_str()
        };
        assert_eq!(args[0], "serve");
        assert_eq!(after("--node-id"), "2");
        assert_eq!(after("--controller-quorum-voters"), plan.voters());
        assert_eq!(after("--controller-listen"), "127.0.0.1:19193");
        assert_eq!(after("--listen"), "127.0.0.1:19093");
        assert_eq!(after("--http"), "127.0.0.1:19293");
        assert_eq!(after("--data-dir"), "/tmp/c/node-2");
        assert_eq!(after("--object-store"), "file:///tmp/c/tier");
        assert_eq!(after("--override"), "log.remote.storage.enable=false");
        assert_eq!(args.last().map(String::as_str), Some("a.b=1"));
        let tiered = Plan::new(
            3,
            19092,
            Path::new("/tmp/c"),
            &["log.remote.storage.enable=true".into()],
        )
        .unwrap();
        let args = tiered.serve_args(&tiered.nodes[0]);
        assert_eq!(
            args.iter()
                .filter(|a| a.starts_with("log.remote.storage.enable"))
                .count(),
            1
        );
    }

    #[test]
    fn refuses_bad_plans() {
        let err = |n, base, o: &[&str]| {
            let o: Vec<String> = o.iter().map(|s| s.to_string()).collect();
            Plan::new(n, base, Path::new("d"), &o)
                .unwrap_err()
                .to_string()
        };
        assert!(err(0, 19092, &[]).contains("1 to 99 nodes"));
        assert!(err(100, 19092, &[]).contains("1 to 99 nodes"));
        assert!(err(3, 0, &[]).contains("--base-port"));
        assert!(err(3, 65400, &[]).contains("too high"));
        assert!(err(3, 19092, &["novalue"]).contains("KEY=VALUE"));
        assert!(err(3, 19092, &["=1"]).contains("KEY=VALUE"));
        // the highest base that fits: 65535 - 200 - 3 + 1
        assert!(Plan::new(3, 65333, Path::new("d"), &[]).is_ok());
        assert!(err(3, 65334, &[]).contains("at most 65333"));
    }

    #[test]
    fn reads_the_cluster_view() {
        let body = r#"{"node_id": 1, "controller_id": 2, "is_active_controller": false,
            "metadata_offset": 7, "brokers": [
            {"id":1,"host":"127.0.0.1","port":9092,"rack":null,"fenced":false},
            {"id":2,"host":"127.0.0.1","port":9093,"rack":null,"fenced":false}]}"#;
        assert_eq!(cluster_view(body, 2), Ok(2));
        assert!(cluster_view(body, 3).unwrap_err().contains("2 of 3"));
        let fenced = body.replacen("\"fenced\":false", "\"fenced\": true", 1);
        assert!(cluster_view(&fenced, 2).unwrap_err().contains("1 fenced"));
        let none = body.replace("\"controller_id\": 2", "\"controller_id\": null");
        assert!(cluster_view(&none, 2)
            .unwrap_err()
            .contains("no active controller"));
        // only the broker list counts
        let more = body.replace("}]}", "}], \"quorum\": {\"x\": [{\"fenced\": true}]}}");
        assert_eq!(cluster_view(&more, 2), Ok(2));
    }

    #[test]
    fn finds_busy_ports() {
        let busy = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = busy.local_addr().unwrap().port();
        // node 1's HTTP port is the busy one
        let Some(base) = port.checked_sub(HTTP_OFFSET) else {
            return; // an ephemeral port this low cannot be laid out; nothing to check
        };
        let plan = Plan::new(1, base, Path::new("d"), &[]).unwrap();
        let err = plan.check_ports_free().unwrap_err().to_string();
        assert!(
            err.contains(&format!("port {port} (admin HTTP port of node 1)"))
                || err.contains("not free"),
            "{err}"
        );
    }
}
