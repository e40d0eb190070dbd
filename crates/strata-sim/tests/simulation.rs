//! Many seeds of the replication simulation (see the crate documentation), and proof that
//! the invariants catch broken rules.
//!
//! `STRATA_SIM_SEED=N` runs only seed N, printing every event (with `--nocapture`);
//! `STRATA_SIM_BUG=<name>` and `STRATA_SIM_PROFILE=harsh` replay a run with an injected bug or
//! the harsh profile, as a failure message says.

use std::time::Instant;

use strata_sim::{run, Bug, Invariant, Profile, SimConfig, Stats};

/// Seeds every `cargo test` runs, per profile: 3,000 chaos steps each, then healing (about
/// 3,300 steps a seed in all). About 2.5 s and 1.3 s in a debug build on an idle core.
const DEFAULT_SEEDS: u64 = 500;
const HARSH_SEEDS: u64 = 300;
/// How far the bug tests look for a seed that exposes the bug.
const BUG_SEEDS_MAX: u64 = 2_000;

/// The replay the environment asks for, if any: `(seed, bug, profile)`.
fn replay_request() -> Option<(u64, Option<Bug>, Profile)> {
    let seed = std::env::var("STRATA_SIM_SEED").ok()?;
    let seed = seed
        .parse()
        .unwrap_or_else(|_| panic!("STRATA_SIM_SEED={seed} is not a seed (a u64)"));
    let bug = std::env::var("STRATA_SIM_BUG").ok().map(|name| {
        Bug::from_name(&name).unwrap_or_else(|| {
            let names: Vec<_> = Bug::ALL.iter().map(|b| b.name()).collect();
            panic!("STRATA_SIM_BUG={name} is none of {names:?}")
        })
    });
    let profile = std::env::var("STRATA_SIM_PROFILE").map_or(Profile::Default, |name| {
        Profile::from_name(&name)
            .unwrap_or_else(|| panic!("STRATA_SIM_PROFILE={name} is neither default nor harsh"))
    });
    Some((seed, bug, profile))
}

/// Runs `seeds` of `profile`; panics with the replay command at the first failure.
fn run_seeds(profile: Profile, seeds: std::ops::Range<u64>) -> Stats {
    let started = Instant::now();
    let mut total = Stats::default();
    for seed in seeds.clone() {
        match run(&SimConfig::new(seed, profile)) {
            Ok(report) => total.add(&report.stats),
            Err(failure) => panic!("{failure}"),
        }
    }
    eprintln!(
        "{} seeds {seeds:?}: {} steps, {} s simulated, in {:?}\n{total:#?}",
        profile.name(),
        total.steps,
        total.sim_time_ms / 1_000,
        started.elapsed()
    );
    total
}

#[test]
fn replay_one_seed_from_the_environment() {
    let Some((seed, bug, profile)) = replay_request() else {
        return;
    };
    let mut config = SimConfig::new(seed, profile);
    config.bug = bug;
    config.trace = true;
    match run(&config) {
        Ok(report) => eprintln!("seed {seed} kept every invariant: {report:#?}"),
        Err(failure) => panic!("{failure}"),
    }
}

#[test]
fn every_default_seed_keeps_the_invariants_and_exercises_the_protocol() {
    if replay_request().is_some() {
        return;
    }
    let s = run_seeds(Profile::Default, 0..DEFAULT_SEEDS);
    // A green run proves little if nothing happened: each of these must have occurred.
    let exercised = [
        ("acknowledged records", s.records_acked),
        (
            "leader changes",
            s.leaderships.saturating_sub(DEFAULT_SEEDS),
        ),
        ("process crashes", s.crashes),
        (
            "machine crashes that lost records",
            s.machine_crashes_losing_records,
        ),
        ("pauses", s.pauses),
        ("metadata stalls", s.metadata_stalls),
        ("controller failovers", s.controller_failovers),
        (
            "messages while no controller was active",
            s.messages_to_no_controller,
        ),
        ("cut links", s.cuts),
        ("NOT_ENOUGH_REPLICAS", s.not_enough_replicas),
        (
            "NOT_ENOUGH_REPLICAS_AFTER_APPEND",
            s.not_enough_replicas_after_append,
        ),
        (
            "produces failed by a lost leadership",
            s.produces_failed_leadership_lost,
        ),
        ("ISR shrinks", s.isr_shrinks_proposed),
        ("ISR expansions", s.isr_expansions_proposed),
        ("AlterPartition refusals", s.alter_partition_refused),
        ("diverging-epoch answers", s.diverging_epoch_answers),
        ("truncated records", s.truncated_records),
        ("duplicate registrations", s.duplicate_registrations),
        ("lost messages", s.messages_lost),
        ("duplicated messages", s.messages_duplicated),
    ];
    for (what, count) in exercised {
        assert!(
            count > 0,
            "no {what} in {DEFAULT_SEEDS} seeds: the model lost its teeth"
        );
    }
    assert_eq!(
        s.offset_out_of_range, 0,
        "with diverging-epoch checks no fetch is ever past the leader's log end"
    );
}

#[test]
fn every_harsh_seed_keeps_the_invariants() {
    if replay_request().is_some() {
        return;
    }
    let s = run_seeds(Profile::Harsh, 0..HARSH_SEEDS);
    assert!(s.truncation_rounds_ask_again > 0 || s.truncations > 0);
}

#[test]
fn a_seed_replays_exactly() {
    if replay_request().is_some() {
        return;
    }
    let config = SimConfig::new(11, Profile::Harsh);
    let (a, b) = (run(&config), run(&config));
    match (a, b) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a.stats, b.stats);
            assert_eq!(
                (a.log_end_offset, a.leader_epoch),
                (b.log_end_offset, b.leader_epoch)
            );
        }
        (a, b) => panic!("seed 11 should pass: {a:?} / {b:?}"),
    }
}

/// Looks for the first seed of `profile` where `bug` breaks an invariant; the invariant must
/// be one of `expected` (data invariants, not the rule checks that would catch it trivially).
fn the_checker_catches(bug: Bug, profile: Profile, expected: &[Invariant]) {
    if replay_request().is_some() {
        return;
    }
    let started = Instant::now();
    for seed in 0..BUG_SEEDS_MAX {
        let mut config = SimConfig::new(seed, profile);
        config.bug = Some(bug);
        if let Err(failure) = run(&config) {
            assert!(
                expected.contains(&failure.violation.invariant),
                "{bug:?} caught as {:?}, expected one of {expected:?}: {failure}",
                failure.violation.invariant
            );
            eprintln!("{bug:?} caught after {:?}: {failure}", started.elapsed());
            return;
        }
    }
    panic!(
        "{bug:?} broke no invariant in {BUG_SEEDS_MAX} {} seeds",
        profile.name()
    );
}

#[test]
fn acknowledging_before_the_isr_has_the_records_loses_them() {
    the_checker_catches(
        Bug::AckBeforeReplicated,
        Profile::Default,
        &[Invariant::AckedRecordLost],
    );
}

#[test]
fn electing_outside_the_isr_loses_acknowledged_records() {
    the_checker_catches(
        Bug::UncleanElection,
        Profile::Default,
        &[Invariant::AckedRecordLost, Invariant::ReplicasDisagree],
    );
}

#[test]
fn followers_that_never_truncate_disagree_with_the_leader() {
    the_checker_catches(
        Bug::SkipTruncation,
        Profile::Default,
        &[Invariant::ReplicasDisagree, Invariant::AckedRecordLost],
    );
}

#[test]
fn dropping_a_pending_isr_change_on_a_stale_epoch_refusal_loses_records() {
    the_checker_catches(
        Bug::DropPendingIsrOnAnyRefusal,
        Profile::Harsh,
        &[Invariant::AckedRecordLost, Invariant::ReplicasDisagree],
    );
}

#[test]
fn without_broker_epochs_a_dead_process_s_fetch_puts_a_truncated_replica_in_the_isr() {
    the_checker_catches(
        Bug::NoBrokerEpochs,
        Profile::Harsh,
        &[Invariant::AckedRecordLost, Invariant::ReplicasDisagree],
    );
}

/// A longer sweep for a release build: `STRATA_SIM_SWEEP=20000 cargo test --release -p
/// strata-sim --test simulation -- --ignored --nocapture` runs that many seeds of each
/// profile, after the ones every `cargo test` runs.
#[test]
#[ignore = "minutes in a debug build; run on demand"]
fn sweep() {
    let count: u64 = std::env::var("STRATA_SIM_SWEEP")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000);
    run_seeds(Profile::Default, DEFAULT_SEEDS..DEFAULT_SEEDS + count);
    run_seeds(Profile::Harsh, HARSH_SEEDS..HARSH_SEEDS + count);
}
