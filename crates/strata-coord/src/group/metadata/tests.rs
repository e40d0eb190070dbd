use super::*;
use crate::group::tests::*;

#[test]
fn two_members_rebalance_and_sync() {
    let mut c = coordinator(0);
    let a = join_new(&mut c, 1, 0);
    let a_join = joins(&mut c)
        .remove(&1)
        .expect("single member completes at once");
    assert_eq!(a_join.error_code, 0);
    assert_eq!(a_join.generation_id, 1);
    assert_eq!(a_join.leader.as_str(), a);
    sync(&mut c, 1, &a, 1, &[(&a, b"all")], 0);
    assert_eq!(syncs(&mut c)[&1].assignment.as_ref(), b"all");

    // A second member triggers a rebalance; it completes once the first one rejoins.
    let b = join_new(&mut c, 2, 10);
    assert!(joins(&mut c).is_empty());
    assert_eq!(
        c.heartbeat("g", &a, None, 1, 20),
        code(ResponseError::RebalanceInProgress)
    );
    c.join(
        3,
        9,
        &join_request(&a, None),
        "client",
        "/127.0.0.1",
        &[],
        30,
    );
    let answers = joins(&mut c);
    assert_eq!(answers[&3].generation_id, 2);
    assert_eq!(answers[&3].members.len(), 2, "the leader gets the members");
    assert!(answers[&2].members.is_empty());
    sync(&mut c, 4, &b, 2, &[], 40);
    assert!(syncs(&mut c).is_empty(), "followers wait for the leader");
    sync(&mut c, 5, &a, 2, &[(&a, b"p0"), (&b, b"p1")], 50);
    let (records, replies) = c.take_output();
    assert!(records
        .iter()
        .any(|r| matches!(r, OffsetsRecord::Group { value: Some(g), .. } if g.generation == 2)));
    let answers = split_replies(replies).1;
    assert_eq!(answers[&4].assignment.as_ref(), b"p1");
    assert_eq!(answers[&5].assignment.as_ref(), b"p0");
    assert_eq!(c.heartbeat("g", &b, None, 2, 60), 0);
    assert_eq!(
        c.heartbeat("g", &b, None, 1, 60),
        code(ResponseError::IllegalGeneration)
    );
}

#[test]
fn expired_session_triggers_rebalance_and_removal() {
    let mut c = coordinator(0);
    stable_group(&mut c);
    c.tick(&[], SESSION_MS as i64 - 1);
    assert_eq!(c.describe_group("g").unwrap().state, GroupState::Stable);
    c.tick(&[], SESSION_MS as i64 + 1);
    let d = c.describe_group("g").unwrap();
    assert_eq!(d.state, GroupState::Empty);
    assert!(d.members.is_empty());
}

#[test]
fn static_member_rejoins_without_rebalance() {
    let mut c = coordinator(0);
    c.join(1, 9, &join_request("", Some("i1")), "client", "/h", &[], 0);
    let a = joins(&mut c).remove(&1).unwrap();
    assert_eq!(a.error_code, 0, "static members skip MEMBER_ID_REQUIRED");
    let a_id = a.member_id.to_string();
    sync(&mut c, 1, &a_id, 1, &[(&a_id, b"mine")], 0);
    syncs(&mut c);
    // Restart: same instance id, no member id.
    c.join(
        2,
        9,
        &join_request("", Some("i1")),
        "client",
        "/h",
        &[],
        100,
    );
    let again = joins(&mut c).remove(&2).unwrap();
    assert_eq!(again.error_code, 0);
    assert_eq!(again.generation_id, 1, "no new generation");
    assert_ne!(again.member_id.to_string(), a_id);
    assert!(again.skip_assignment);
    assert_eq!(c.describe_group("g").unwrap().state, GroupState::Stable);
    // The old incarnation is fenced.
    assert_eq!(
        c.heartbeat("g", &a_id, Some("i1"), 1, 100),
        code(ResponseError::FencedInstanceId)
    );
    let new_id = again.member_id.to_string();
    sync(&mut c, 3, &new_id, 1, &[], 100);
    assert_eq!(syncs(&mut c)[&3].assignment.as_ref(), b"mine");
}

#[test]
fn initial_delay_waits_for_more_members() {
    let mut c = coordinator(3000);
    let a = join_new(&mut c, 1, 0);
    let b = join_new(&mut c, 2, 1000);
    assert!(joins(&mut c).is_empty());
    c.tick(&[], 2000);
    assert!(
        joins(&mut c).is_empty(),
        "delay extended by the second member"
    );
    c.tick(&[], 4001);
    let answers = joins(&mut c);
    assert_eq!(answers.len(), 2);
    assert_eq!(answers[&1].generation_id, 1);
    assert!(c
        .describe_group("g")
        .unwrap()
        .members
        .iter()
        .any(|m| m.member_id == b));
    let _ = a;
}

#[test]
fn rejoin_timeout_drops_silent_dynamic_members() {
    let mut c = coordinator(0);
    let a = stable_group(&mut c);
    let _b = join_new(&mut c, 2, 100);
    // `a` keeps heartbeating but never rejoins within the rebalance timeout.
    assert_eq!(
        c.heartbeat("g", &a, None, 1, 5000),
        code(ResponseError::RebalanceInProgress)
    );
    c.tick(&[], 30_101);
    let answers = joins(&mut c);
    assert_eq!(answers[&2].generation_id, 2);
    assert_eq!(c.describe_group("g").unwrap().members.len(), 1);
}

#[test]
fn leave_and_join_errors() {
    let mut c = coordinator(0);
    let a = join_new(&mut c, 1, 0);
    joins(&mut c);
    assert_eq!(
        c.leave("g", &[(a.clone(), None), ("nobody".into(), None)], &[], 0),
        Ok(vec![0, code(ResponseError::UnknownMemberId)])
    );
    assert_eq!(c.describe_group("g").unwrap().state, GroupState::Empty);
    c.join(5, 9, &join_request("ghost", None), "c", "h", &[], 0);
    assert_eq!(
        joins(&mut c)[&5].error_code,
        code(ResponseError::UnknownMemberId)
    );
    let mut bad = join_request("", None);
    bad.session_timeout_ms = 1;
    c.join(6, 9, &bad, "c", "h", &[], 0);
    assert_eq!(
        joins(&mut c)[&6].error_code,
        code(ResponseError::InvalidSessionTimeout)
    );
    let mut other = join_request("", None);
    other.protocol_type = s("connect");
    let _ = join_new(&mut c, 7, 0);
    joins(&mut c);
    c.join(8, 9, &other, "c", "h", &[], 0);
    assert_eq!(
        joins(&mut c)[&8].error_code,
        code(ResponseError::InconsistentGroupProtocol)
    );
}

#[test]
fn consumer_groups_survive_a_reload() {
    use crate::consumer_group::Heartbeat;
    let topics = topic_t();
    let mut c = coordinator(0);
    let joined = c
        .consumer_heartbeat(
            Heartbeat {
                group_id: "cg".into(),
                member_id: "m1".into(),
                member_epoch: 0,
                rebalance_timeout_ms: 1000,
                subscribed_topic_names: Some(vec!["t".into()]),
                owned: Some(Default::default()),
                api_version: 1,
                ..Default::default()
            },
            &topics,
            0,
        )
        .unwrap();
    let (records, _) = c.take_output();
    assert!(records
        .iter()
        .any(|r| matches!(r, OffsetsRecord::ConsumerGroup { value: Some(_), .. })));
    let mut reloaded = coordinator(0);
    for r in records {
        let (k, v) = r.encode();
        reloaded.load(
            OffsetsRecord::decode(&k, v.as_deref()).unwrap().unwrap(),
            10,
        );
    }
    // The member carries on with its epoch and assignment, without rejoining.
    let again = reloaded
        .consumer_heartbeat(
            Heartbeat {
                group_id: "cg".into(),
                member_id: "m1".into(),
                member_epoch: joined.member_epoch,
                owned: joined.assignment.clone(),
                api_version: 1,
                ..Default::default()
            },
            &topics,
            20,
        )
        .unwrap();
    assert_eq!(again.member_epoch, joined.member_epoch);
    assert_eq!(
        reloaded.consumer_group("cg").unwrap().members["m1"].assigned,
        joined.assignment.unwrap()
    );
    let (records, _) = reloaded.take_output();
    assert!(records.is_empty(), "a steady heartbeat writes nothing");
    assert_eq!(
        reloaded.delete_group("cg"),
        code(ResponseError::NonEmptyGroup)
    );
}
