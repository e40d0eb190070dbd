//! The quorum end to end: real loopback TCP, real files in temporary directories, short
//! election timeouts. Every wait is on a condition with a deadline.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::routing::post;
use serde::{Deserialize, Serialize};
use strata_meta::MetadataRecord;
use strata_quorum::{
    Proposal, Quorum, QuorumConfig, QuorumDescription, QuorumError, QuorumTls, ReplicaDescription,
};
use tokio::net::TcpListener;

/// Long enough for an election or two plus catch-up on a loaded machine.
const DEADLINE: Duration = Duration::from_secs(15);
const EXTRA_ROUTE: &str = "/controller/whoami";

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct WhoAmI {
    asked_by: i32,
    answered_by: i32,
}

struct Cluster {
    root: tempfile::TempDir,
    voters: BTreeMap<i32, String>,
    addrs: BTreeMap<i32, String>,
    nodes: BTreeMap<i32, Arc<Quorum>>,
    /// Listeners reserved for nodes not started yet, so their addresses stay theirs.
    parked: BTreeMap<i32, TcpListener>,
    snapshot_every: u64,
    /// Each node's controller-listener TLS (none: plaintext).
    tls: BTreeMap<i32, QuorumTls>,
}

impl Cluster {
    /// Starts `voters` voters (ids 1..=n); `learners` more ids are reserved but not started.
    async fn start(voters: i32, learners: i32, snapshot_every: u64) -> Cluster {
        Self::start_with_tls(voters, learners, snapshot_every, None).await
    }

    /// [`Cluster::start`] with `tls` on every node's controller listener.
    async fn start_with_tls(
        voters: i32,
        learners: i32,
        snapshot_every: u64,
        tls: Option<QuorumTls>,
    ) -> Cluster {
        let mut listeners = BTreeMap::new();
        let mut addrs = BTreeMap::new();
        for id in 1..=voters + learners {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            addrs.insert(id, listener.local_addr().unwrap().to_string());
            listeners.insert(id, listener);
        }
        let mut cluster = Cluster {
            root: tempfile::tempdir().unwrap(),
            voters: addrs
                .range(1..=voters)
                .map(|(k, v)| (*k, v.clone()))
                .collect(),
            addrs,
            nodes: BTreeMap::new(),
            parked: BTreeMap::new(),
            snapshot_every,
            tls: tls
                .map(|tls| {
                    (1..=voters + learners)
                        .map(|id| (id, tls.clone()))
                        .collect()
                })
                .unwrap_or_default(),
        };
        // Start voters concurrently, as a real cluster's nodes come up.
        let mut starting = Vec::new();
        for id in 1..=voters {
            let listener = listeners.remove(&id).unwrap();
            starting.push(cluster.start_with(id, listener));
        }
        for quorum in futures_join_all(starting).await {
            cluster.nodes.insert(quorum.status().node_id, quorum);
        }
        cluster.parked = listeners;
        cluster
    }

    fn config(&self, id: i32) -> QuorumConfig {
        let mut config = QuorumConfig::new(
            id,
            self.voters.clone(),
            self.addrs[&id].clone(),
            self.dir(id),
        );
        config.election_timeout_ms = 300;
        config.heartbeat_interval_ms = 50;
        config.snapshot_every = self.snapshot_every;
        config.tls = self.tls.get(&id).cloned();
        config
    }

    fn dir(&self, id: i32) -> PathBuf {
        self.root.path().join(format!("node-{id}"))
    }

    fn start_with(
        &self,
        id: i32,
        listener: TcpListener,
    ) -> impl Future<Output = Arc<Quorum>> + 'static {
        let config = self.config(id);
        async move {
            let routes = axum::Router::new().route(
                EXTRA_ROUTE,
                post(move |body: Bytes| async move {
                    let asked: WhoAmI = serde_json::from_slice(&body).unwrap();
                    serde_json::to_string(&WhoAmI {
                        asked_by: asked.asked_by,
                        answered_by: id,
                    })
                    .unwrap()
                }),
            );
            // Start replays local storage and returns: it never waits for the other voters.
            tokio::time::timeout(DEADLINE, Quorum::start(config, listener, routes))
                .await
                .expect("start returned")
                .unwrap()
        }
    }

    /// Starts (or restarts) node `id` on its address.
    async fn start_node(&mut self, id: i32) -> Arc<Quorum> {
        let listener = match self.parked.remove(&id) {
            Some(listener) => listener,
            None => TcpListener::bind(&self.addrs[&id]).await.unwrap(),
        };
        let quorum = self.start_with(id, listener).await;
        self.nodes.insert(id, quorum.clone());
        quorum
    }

    async fn stop_node(&mut self, id: i32) {
        let quorum = self.nodes.remove(&id).unwrap();
        quorum.shutdown().await;
    }

    fn node(&self, id: i32) -> &Arc<Quorum> {
        &self.nodes[&id]
    }

    /// Waits until every running node names the same leader, and returns it.
    async fn leader(&self) -> i32 {
        eventually("all running nodes agree on a leader", || {
            let leaders: Vec<Option<i32>> = self.nodes.values().map(|q| q.leader_id()).collect();
            match leaders.first() {
                Some(Some(leader))
                    if leaders.iter().all(|l| *l == Some(*leader))
                        && self.nodes.get(leader).is_some_and(|q| q.is_leader()) =>
                {
                    Some(*leader)
                }
                _ => None,
            }
        })
        .await
    }

    fn follower(&self, leader: i32) -> i32 {
        *self.nodes.keys().find(|id| **id != leader).unwrap()
    }

    async fn all_reach(&self, offset: u64) {
        for quorum in self.nodes.values() {
            reach(quorum, offset).await;
        }
    }

    async fn shutdown(mut self) {
        for id in self.nodes.keys().copied().collect::<Vec<_>>() {
            self.stop_node(id).await;
        }
    }
}

async fn futures_join_all<F: Future<Output = Arc<Quorum>> + Send + 'static>(
    futures: Vec<F>,
) -> Vec<Arc<Quorum>> {
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}

/// Polls `check` until it yields a value, failing the test after `DEADLINE`.
async fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn reach(quorum: &Quorum, offset: u64) {
    let node = quorum.status().node_id;
    let mut images = quorum.subscribe();
    tokio::time::timeout(DEADLINE, images.wait_for(|image| image.offset >= offset))
        .await
        .unwrap_or_else(|_| panic!("node {node} did not reach offset {offset}"))
        .unwrap();
}

fn topic(name: &str) -> MetadataRecord {
    MetadataRecord::Topic {
        name: name.into(),
        topic_id: uuid::Uuid::new_v4(),
    }
}

/// Proposes a new topic on `quorum`'s current image; expects it to commit.
async fn create_topic(quorum: &Quorum, name: &str) -> u64 {
    let base = quorum.image().offset;
    match quorum.propose(base, vec![topic(name)]).await.unwrap() {
        Proposal::Committed { offset } => {
            assert_eq!(offset, base + 1);
            // Read your own write: the proposer's image has it on return.
            assert!(quorum.image().topic(name).is_some());
            offset
        }
        other => panic!("expected a commit of {name}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn single_node_commits_and_survives_restart() {
    let mut cluster = Cluster::start(1, 0, 1000).await;
    let node = cluster.node(1).clone();
    assert_eq!(cluster.leader().await, 1);
    assert_eq!(create_topic(&node, "a").await, 1);
    assert_eq!(create_topic(&node, "b").await, 2);
    cluster.stop_node(1).await;

    let node = cluster.start_node(1).await;
    // Replayed before start returned, without waiting for an election.
    let image = node.image();
    assert_eq!(image.offset, 2);
    assert!(image.topic("a").is_some() && image.topic("b").is_some());
    cluster.leader().await;
    assert_eq!(create_topic(&node, "c").await, 3);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_voters_elect_exactly_one_leader() {
    let cluster = Cluster::start(3, 0, 1000).await;
    let leader = cluster.leader().await;
    let leaders: Vec<i32> = cluster
        .nodes
        .values()
        .filter(|q| q.is_leader())
        .map(|q| q.status().node_id)
        .collect();
    assert_eq!(leaders, vec![leader]);
    for quorum in cluster.nodes.values() {
        let status = quorum.status();
        assert_eq!(status.voters, cluster.voters);
        assert!(status.learners.is_empty());
        assert_eq!(status.leader_id, Some(leader));
        assert!(status.current_term >= 1);
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn proposal_from_a_follower_is_forwarded_and_applied_everywhere() {
    let cluster = Cluster::start(3, 0, 1000).await;
    let leader = cluster.leader().await;
    let follower = cluster.node(cluster.follower(leader)).clone();
    assert_eq!(create_topic(&follower, "from-follower").await, 1);
    cluster.all_reach(1).await;
    for quorum in cluster.nodes.values() {
        assert!(quorum.image().topic("from-follower").is_some());
        let status = quorum.status();
        assert!(status.committed_index >= status.last_applied_index);
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stale_base_offset_conflicts_and_a_bad_batch_is_rejected() {
    let cluster = Cluster::start(3, 0, 1000).await;
    let leader = cluster.leader().await;
    let follower = cluster.node(cluster.follower(leader)).clone();
    let leader = cluster.node(leader).clone();
    assert_eq!(create_topic(&leader, "first").await, 1);

    // Built from offset 0, which is no longer the latest: nothing is written, and the
    // proposer's image has caught up with the change that won.
    for quorum in [&leader, &follower] {
        let result = quorum.propose(0, vec![topic("stale")]).await.unwrap();
        assert_eq!(result, Proposal::Conflict { current_offset: 1 });
        assert!(quorum.image().topic("first").is_some());
        assert!(quorum.image().topic("stale").is_none());
    }

    // Racing proposals built from the same image all pass the leader's early check and reach
    // the log together; applying them lets exactly one through, on every node alike.
    let base = leader.image().offset;
    let racers: Vec<_> = (0..8)
        .map(|i| {
            let quorum = if i % 2 == 0 {
                leader.clone()
            } else {
                follower.clone()
            };
            tokio::spawn(async move {
                quorum
                    .propose(base, vec![topic(&format!("race-{i}"))])
                    .await
            })
        })
        .collect();
    let mut committed = Vec::new();
    for (i, racer) in racers.into_iter().enumerate() {
        match racer.await.unwrap().unwrap() {
            Proposal::Committed { offset } => committed.push((i, offset)),
            Proposal::Conflict { current_offset } => assert!(current_offset > base),
        }
    }
    assert_eq!(committed.len(), 1, "{committed:?}");
    let (winner, offset) = committed[0];
    assert_eq!(offset, base + 1);
    cluster.all_reach(offset).await;
    for quorum in cluster.nodes.values() {
        let image = quorum.image();
        assert_eq!(image.offset, offset);
        let present: Vec<usize> = (0..8)
            .filter(|i| image.topic(&format!("race-{i}")).is_some())
            .collect();
        assert_eq!(present, vec![winner]);
    }

    // A batch that does not fit its image never reaches the log.
    let error = follower
        .propose(offset, vec![topic("first")])
        .await
        .unwrap_err();
    assert!(matches!(error, QuorumError::InvalidBatch(_)), "{error}");
    assert_eq!(create_topic(&follower, "second").await, offset + 1);
    cluster.all_reach(offset + 1).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_failover_keeps_proposals_working_and_old_leader_catches_up() {
    let mut cluster = Cluster::start(3, 0, 1000).await;
    let old = cluster.leader().await;
    create_topic(cluster.node(old), "before").await;
    cluster.all_reach(1).await;

    cluster.stop_node(old).await;
    let new = cluster.leader().await;
    assert_ne!(new, old);
    let survivor = cluster.node(cluster.follower(new)).clone();
    assert_eq!(create_topic(&survivor, "after-1").await, 2);
    assert_eq!(create_topic(cluster.node(new), "after-2").await, 3);

    let restarted = cluster.start_node(old).await;
    reach(&restarted, 3).await;
    assert!(restarted.image().topic("after-2").is_some());
    assert_eq!(
        cluster.leader().await,
        new,
        "a rejoining node does not disturb the leader"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn node_down_during_snapshot_and_purge_catches_up_from_the_snapshot() {
    let mut cluster = Cluster::start(3, 0, 5).await;
    let leader = cluster.leader().await;
    let lagging = cluster.follower(leader);
    create_topic(cluster.node(leader), "t0").await;
    cluster.all_reach(1).await;
    let lagging_last_index = cluster.node(lagging).status().last_log_index.unwrap();
    cluster.stop_node(lagging).await;

    for i in 1..20 {
        create_topic(cluster.node(leader), &format!("t{i}")).await;
    }
    // The leader has snapshotted and purged past everything the lagging node has, so only
    // the snapshot can bring it up to date.
    let leader_quorum = cluster.node(leader).clone();
    eventually("the leader purges past the lagging node's log", || {
        let status = leader_quorum.status();
        status
            .purged_index
            .filter(|purged| *purged > lagging_last_index + 1)
    })
    .await;

    let restarted = cluster.start_node(lagging).await;
    reach(&restarted, 20).await;
    let image = restarted.image();
    assert!((0..20).all(|i| image.topic(&format!("t{i}")).is_some()));
    let status = restarted.status();
    assert!(status.snapshot_index.is_some(), "{status:?}");
    // Proposals keep working and reach the caught-up node through the log again.
    create_topic(cluster.node(leader), "t20").await;
    reach(&restarted, 21).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn whole_cluster_restarted_from_disk_keeps_the_image() {
    let mut cluster = Cluster::start(3, 0, 4).await;
    let leader = cluster.leader().await;
    for i in 0..6 {
        create_topic(cluster.node(leader), &format!("t{i}")).await;
    }
    cluster.all_reach(6).await;
    let before = cluster.node(leader).image();
    for id in 1..=3 {
        cluster.stop_node(id).await;
    }

    for id in 1..=3 {
        let quorum = cluster.start_node(id).await;
        // Snapshot plus the committed suffix of the log, replayed before start returned.
        assert_eq!(*quorum.image(), *before, "node {id}");
    }
    let leader = cluster.leader().await;
    assert_eq!(create_topic(cluster.node(leader), "t6").await, 7);
    cluster.all_reach(7).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broker_only_node_joins_as_learner_and_receives_the_image() {
    let mut cluster = Cluster::start(3, 1, 1000).await;
    let leader = cluster.leader().await;
    create_topic(cluster.node(leader), "before-join").await;

    let learner = cluster.start_node(4).await;
    reach(&learner, 1).await;
    assert!(learner.image().topic("before-join").is_some());
    let leader_quorum = cluster.node(leader).clone();
    eventually("the leader lists node 4 as a learner", || {
        let status = leader_quorum.status();
        (status.learners.get(&4) == Some(&cluster.addrs[&4])).then_some(())
    })
    .await;
    assert!(!leader_quorum.status().voters.contains_key(&4));

    // A learner's proposals are forwarded like a follower's; it never leads.
    assert_eq!(create_topic(&learner, "from-learner").await, 2);
    cluster.all_reach(2).await;
    assert_eq!(learner.leader_id(), Some(leader));
    assert!(!learner.is_leader());
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn call_leader_reaches_the_leaders_extra_route() {
    let cluster = Cluster::start(3, 0, 1000).await;
    let leader = cluster.leader().await;
    for (id, quorum) in &cluster.nodes {
        let reply: WhoAmI = quorum
            .call_leader(
                EXTRA_ROUTE,
                &WhoAmI {
                    asked_by: *id,
                    answered_by: -1,
                },
            )
            .await
            .unwrap();
        assert_eq!(
            reply,
            WhoAmI {
                asked_by: *id,
                answered_by: leader
            }
        );
    }
    // A route that does not exist is an error, not a retry loop.
    let error = cluster
        .node(cluster.follower(leader))
        .call_leader::<_, WhoAmI>("/controller/nothing", &())
        .await
        .unwrap_err();
    assert!(
        matches!(error, QuorumError::Remote { status: 404, .. }),
        "{error}"
    );
    cluster.shutdown().await;
}

/// Asks every running node for the quorum's description until all give the leader's view
/// with `leader` (and its voters), and returns one of them.
async fn describe_everywhere(cluster: &Cluster, leader: i32) -> Vec<(i32, QuorumDescription)> {
    let mut answers = Vec::new();
    for (id, quorum) in &cluster.nodes {
        let description = quorum.describe().await.unwrap();
        assert_eq!(description.leader_id, leader, "node {id} asked");
        answers.push((*id, description));
    }
    answers
}

/// Asks `quorum` for the description until `check` holds of it, failing after `DEADLINE`.
async fn describe_until(
    quorum: &Quorum,
    what: &str,
    check: impl Fn(&QuorumDescription) -> bool,
) -> QuorumDescription {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let description = quorum.describe().await.unwrap();
        if check(&description) {
            return description;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}: {description:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn heard_from(replica: &ReplicaDescription) -> bool {
    replica.last_fetch_timestamp_ms > 0 && replica.last_caught_up_timestamp_ms > 0
}

fn ids(replicas: &[ReplicaDescription]) -> Vec<i32> {
    replicas.iter().map(|r| r.node_id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_node_describes_the_leaders_quorum_and_failover_raises_the_epoch() {
    let mut cluster = Cluster::start(3, 1, 1000).await;
    let leader = cluster.leader().await;
    cluster.start_node(4).await;
    create_topic(cluster.node(leader), "described").await;
    cluster.all_reach(1).await;
    let leader_quorum = cluster.node(leader).clone();
    eventually("the leader lists node 4 as an observer", || {
        let d = leader_quorum.status();
        d.learners.contains_key(&4).then_some(())
    })
    .await;

    let answers = describe_everywhere(&cluster, leader).await;
    for (asked, d) in &answers {
        assert_eq!(ids(&d.voters), vec![1, 2, 3], "node {asked} asked");
        assert_eq!(ids(&d.observers), vec![4], "node {asked} asked");
        assert_eq!(d.voter_addresses, cluster.voters, "node {asked} asked");
        assert_eq!(d.leader_epoch, answers[0].1.leader_epoch);
        let leader_end = d
            .voters
            .iter()
            .find(|r| r.node_id == leader)
            .map(|r| r.log_end_offset)
            .unwrap();
        // The membership entry, a blank entry and the topic at least.
        assert!(d.high_watermark >= 3, "{d:?}");
        assert!(d.high_watermark <= leader_end, "{d:?}");
        for replica in d.voters.iter().chain(&d.observers) {
            assert!(replica.log_end_offset <= leader_end, "{d:?}");
        }
        // A majority holds everything below the high watermark.
        let holding = d
            .voters
            .iter()
            .filter(|r| r.log_end_offset >= d.high_watermark)
            .count();
        assert!(holding >= 2, "{d:?}");
    }
    let epoch = answers[0].1.leader_epoch;
    let high_watermark = answers[0].1.high_watermark;
    // KIP-836: every replica answers the leader's heartbeats, so each has fetch and
    // caught-up times of this leadership.
    describe_until(&leader_quorum, "every replica has been heard from", |d| {
        d.voters.iter().chain(&d.observers).all(heard_from)
    })
    .await;

    cluster.stop_node(leader).await;
    let new = cluster.leader().await;
    assert_ne!(new, leader);
    for (asked, d) in describe_everywhere(&cluster, new).await {
        assert!(d.leader_epoch > epoch, "node {asked} asked: {d:?}");
        assert!(
            d.high_watermark > high_watermark,
            "the new leader's blank entry: {d:?}"
        );
        assert_eq!(
            ids(&d.voters),
            vec![1, 2, 3],
            "the stopped node is still a voter"
        );
        let stopped = d.voters.iter().find(|r| r.node_id == leader).unwrap();
        assert_eq!(
            (
                stopped.last_fetch_timestamp_ms,
                stopped.last_caught_up_timestamp_ms
            ),
            (-1, -1),
            "never heard from in this leadership: {d:?}"
        );
    }
    cluster.shutdown().await;
}

/// A throw-away CA and a certificate for 127.0.0.1 it signed: both sides of a controller
/// listener's mutual TLS, as every node of one cluster has them; and the CA as trust roots.
fn mutual_tls() -> (QuorumTls, Arc<rustls::RootCertStore>) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let node_key = rcgen::KeyPair::generate().unwrap();
    let node = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&node_key, &issuer)
        .unwrap();
    let chain = vec![node.der().clone()];
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(node_key.serialize_der().into());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let roots = Arc::new(roots);
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        roots.clone(),
        provider.clone(),
    )
    .build()
    .unwrap();
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain.clone(), key.clone_key())
        .unwrap();
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots.clone())
        .with_client_auth_cert(chain, key)
        .unwrap();
    let server = Arc::new(server);
    let tls = QuorumTls {
        server: Arc::new(move || server.clone()),
        client: Arc::new(client),
    };
    (tls, roots)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn over_mutual_tls_voters_commit_and_a_node_without_the_cas_certificate_takes_no_part() {
    let (tls, roots) = mutual_tls();
    let mut cluster = Cluster::start_with_tls(3, 1, 1000, Some(tls)).await;
    let leader = cluster.leader().await;
    create_topic(cluster.node(leader), "over-tls").await;
    cluster.all_reach(1).await;

    // A client that trusts the CA but has no certificate, or speaks plain HTTP, is not served.
    let status = |scheme: &str, id: i32| format!("{scheme}://{}/raft/status", cluster.addrs[&id]);
    let anonymous = reqwest::Client::builder()
        .tls_backend_preconfigured(
            rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let refused = |answer: Result<reqwest::Response, reqwest::Error>| {
        answer.map_or(true, |r| !r.status().is_success())
    };
    assert!(refused(anonymous.get(status("https", leader)).send().await));
    assert!(refused(anonymous.get(status("http", leader)).send().await));

    // A node whose certificate another CA signed neither joins nor receives the image.
    let (foreign, _) = mutual_tls();
    cluster.tls.insert(4, foreign);
    let outsider = cluster.start_node(4).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(outsider.image().offset, 0);
    assert!(!cluster.node(leader).status().learners.contains_key(&4));
    cluster.stop_node(4).await;
    cluster.shutdown().await;
}
