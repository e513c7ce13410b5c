//! The journal's rules, in injected time.

use super::*;

const T0: i64 = 1_800_000_000_000;

fn invocation(function: &str, key: Option<&str>) -> NewInvocation {
    NewInvocation {
        tenant: "111122223333".into(),
        function: function.into(),
        qualifier: "$LATEST".into(),
        version: "$LATEST".into(),
        payload: br#"{"n": 1}"#.to_vec(),
        idempotency_key: key.map(str::to_string),
    }
}

fn open(dir: &Path, config: JournalConfig) -> Journal {
    Journal::open(&dir.join("async.db"), config, T0).unwrap().0
}

/// Claims every due invocation with `lease_ms`.
async fn claim_all(j: &Journal, now: i64, lease_ms: i64) -> Vec<Claimed> {
    let picks = j
        .due(now, 100)
        .unwrap()
        .into_iter()
        .map(|d| (d.seq, lease_ms))
        .collect();
    j.claim(picks, now).await.unwrap()
}

#[tokio::test]
async fn an_accepted_invocation_is_claimed_once_and_its_success_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let j = open(dir.path(), JournalConfig::default());
    let id = j.accept(invocation("f", None), T0).await.unwrap();
    let Accepted::New { id } = id else {
        panic!("{id:?}")
    };
    let claimed = claim_all(&j, T0, 1_000).await;
    assert_eq!(claimed.len(), 1);
    let c = &claimed[0];
    assert_eq!((c.id.as_str(), c.epoch, c.attempt), (id.as_str(), 1, 1));
    assert_eq!(c.invocation, invocation("f", None));
    assert!(
        claim_all(&j, T0 + 10, 1_000).await.is_empty(),
        "a leased invocation is not due"
    );
    let done = j
        .end(
            c.seq,
            c.epoch,
            Ending::Succeeded { deliveries: vec![] },
            T0 + 20,
        )
        .await;
    assert_eq!(done.unwrap(), Completion::Accepted);
    let status = j.status("111122223333", &id).unwrap().unwrap();
    assert_eq!(status.state, State::Succeeded);
    assert_eq!(status.attempts, 1);
    assert_eq!(status.history.len(), 1);
    assert_eq!(status.history[0].outcome.as_deref(), Some("succeeded"));
    assert_eq!(status.history[0].ended_at_ms, Some(T0 + 20));
    assert!(
        j.status("999999999999", &id).unwrap().is_none(),
        "another tenant's"
    );
    assert!(claim_all(&j, T0 + 1_000_000, 1_000).await.is_empty());
}

#[tokio::test]
async fn concurrent_accepts_share_commits() {
    let dir = tempfile::tempdir().unwrap();
    let j = Arc::new(open(dir.path(), JournalConfig::default()));
    let before = j.batches();
    let tasks: Vec<_> = (0..500)
        .map(|i| {
            let j = j.clone();
            tokio::spawn(
                async move { j.accept(invocation(&format!("f{}", i % 7), None), T0).await },
            )
        })
        .collect();
    let mut ids = std::collections::HashSet::new();
    for t in tasks {
        ids.insert(t.await.unwrap().unwrap().id().to_string());
    }
    assert_eq!(ids.len(), 500, "every accept got an id of its own");
    let batches = j.batches() - before;
    assert!(batches < 500, "500 accepts took {batches} commits");
    assert_eq!(j.due(T0, 1_000).unwrap().len(), 500);
}

#[tokio::test]
async fn an_idempotency_key_maps_to_one_invocation_per_function_within_its_window() {
    let dir = tempfile::tempdir().unwrap();
    let j = open(dir.path(), JournalConfig::default());
    let first = j.accept(invocation("f", Some("k1")), T0).await.unwrap();
    assert!(matches!(first, Accepted::New { .. }));
    let again = j
        .accept(invocation("f", Some("k1")), T0 + 1_000)
        .await
        .unwrap();
    assert_eq!(
        again,
        Accepted::Repeat {
            id: first.id().to_string()
        }
    );
    let other_function = j.accept(invocation("g", Some("k1")), T0).await.unwrap();
    assert!(matches!(other_function, Accepted::New { .. }));
    assert_eq!(
        j.due(T0 + 1_000, 10).unwrap().len(),
        2,
        "the repeat stored nothing"
    );
    let later = j
        .accept(invocation("f", Some("k1")), T0 + IDEMPOTENCY_WINDOW_MS + 1)
        .await
        .unwrap();
    assert!(
        matches!(later, Accepted::New { .. }),
        "the window has passed"
    );
    assert_ne!(later.id(), first.id());
}

#[tokio::test]
async fn a_stale_owner_cannot_complete_after_its_lease_is_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let j = open(dir.path(), JournalConfig::default());
    let id = j.accept(invocation("f", None), T0).await.unwrap();
    let first = claim_all(&j, T0, 100).await.remove(0);
    // The first owner stalls past its lease; the invocation is claimed again.
    let second = claim_all(&j, T0 + 100, 100).await.remove(0);
    assert_eq!((first.epoch, second.epoch), (1, 2));
    assert_eq!(second.attempt, 2);
    let late = j
        .end(
            first.seq,
            first.epoch,
            Ending::Succeeded { deliveries: vec![] },
            T0 + 150,
        )
        .await;
    assert_eq!(late.unwrap(), Completion::Stale);
    assert_eq!(j.stale_endings(), 1);
    let status = j.status("111122223333", id.id()).unwrap().unwrap();
    assert_eq!(
        status.state,
        State::Running,
        "the stale ending changed nothing"
    );
    let owner = j
        .end(
            second.seq,
            second.epoch,
            Ending::Succeeded { deliveries: vec![] },
            T0 + 160,
        )
        .await;
    assert_eq!(owner.unwrap(), Completion::Accepted);
    let status = j.status("111122223333", id.id()).unwrap().unwrap();
    let outcomes: Vec<_> = status
        .history
        .iter()
        .map(|a| a.outcome.as_deref())
        .collect();
    assert_eq!(outcomes, [Some("stale"), Some("succeeded")]);
    assert_eq!(status.state, State::Succeeded);
    // Once ended, even the owner's second ending is stale.
    let twice = j
        .end(
            second.seq,
            second.epoch,
            Ending::Succeeded { deliveries: vec![] },
            T0 + 170,
        )
        .await;
    assert_eq!(twice.unwrap(), Completion::Stale);
}

#[tokio::test]
async fn retries_wait_until_due_and_throttles_do_not_use_up_attempts() {
    let dir = tempfile::tempdir().unwrap();
    let j = open(dir.path(), JournalConfig::default());
    let id = j.accept(invocation("f", None), T0).await.unwrap();
    let c = claim_all(&j, T0, 1_000).await.remove(0);
    let throttled = Ending::Throttled {
        due_at_ms: T0 + 50,
        reason: "TooManyRequestsException".into(),
    };
    j.end(c.seq, c.epoch, throttled, T0 + 1).await.unwrap();
    assert!(
        claim_all(&j, T0 + 49, 1_000).await.is_empty(),
        "not yet due"
    );
    let c = claim_all(&j, T0 + 50, 1_000).await.remove(0);
    assert_eq!(c.attempt, 1, "the throttled attempt never ran");
    let retry = Ending::Retry {
        due_at_ms: T0 + 500,
        error: "Unhandled: boom".into(),
    };
    j.end(c.seq, c.epoch, retry, T0 + 60).await.unwrap();
    let status = j.status("111122223333", id.id()).unwrap().unwrap();
    assert_eq!(
        (status.state, status.attempts, status.due_at_ms),
        (State::Retrying, 1, T0 + 500)
    );
    assert_eq!(status.last_error.as_deref(), Some("Unhandled: boom"));
    let c = claim_all(&j, T0 + 500, 1_000).await.remove(0);
    assert_eq!(c.attempt, 2);
    let failed = Ending::Failed {
        condition: "RetriesExhausted".into(),
        error: "Unhandled: boom".into(),
        deliveries: vec![],
    };
    j.end(c.seq, c.epoch, failed, T0 + 600).await.unwrap();
    let status = j.status("111122223333", id.id()).unwrap().unwrap();
    assert_eq!(status.state, State::Failed);
    assert_eq!(status.condition.as_deref(), Some("RetriesExhausted"));
    assert_eq!(j.next_due_ms().unwrap(), None);
}

#[tokio::test]
async fn a_full_backlog_refuses_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = JournalConfig {
        backlog_per_tenant: 2,
        ..JournalConfig::default()
    };
    let j = open(dir.path(), config.clone());
    j.accept(invocation("f", None), T0).await.unwrap();
    j.accept(invocation("f", None), T0).await.unwrap();
    let refused = j.accept(invocation("f", Some("k")), T0).await;
    assert_eq!(refused, Err(AcceptError::Backlog { limit: 2 }));
    let mut other = invocation("f", None);
    other.tenant = "444455556666".into();
    assert!(
        j.accept(other, T0).await.is_ok(),
        "another tenant's backlog is its own"
    );
    let c = claim_all(&j, T0, 1_000).await;
    j.end(
        c[0].seq,
        c[0].epoch,
        Ending::Succeeded { deliveries: vec![] },
        T0,
    )
    .await
    .unwrap();
    assert!(
        matches!(
            j.accept(invocation("f", Some("k")), T0).await,
            Ok(Accepted::New { .. })
        ),
        "a finished invocation frees its place; the refused key was not kept"
    );
    drop(j);
    // The count is rebuilt from the store.
    let j = open(dir.path(), config);
    assert!(j.accept(invocation("f", None), T0).await.is_err());
}

#[tokio::test]
async fn a_reopened_journal_still_has_every_invocation_and_reruns_interrupted_attempts() {
    let dir = tempfile::tempdir().unwrap();
    let j = open(dir.path(), JournalConfig::default());
    let running = j.accept(invocation("f", None), T0).await.unwrap();
    claim_all(&j, T0, 60_000).await;
    let waiting = j.accept(invocation("g", None), T0 + 1).await.unwrap();
    drop(j);
    let (j, recovery) = Journal::open(
        &dir.path().join("async.db"),
        JournalConfig::default(),
        T0 + 2,
    )
    .unwrap();
    assert_eq!(
        recovery,
        Recovery {
            unfinished: 2,
            interrupted: 1,
            quarantined: 0
        }
    );
    let claimed = claim_all(&j, T0 + 2, 60_000).await;
    let mut ids: Vec<_> = claimed.iter().map(|c| c.id.as_str()).collect();
    ids.sort();
    let mut want = [running.id(), waiting.id()];
    want.sort();
    assert_eq!(ids, want, "the interrupted one did not wait out its lease");
    let rerun = claimed.iter().find(|c| c.id == running.id()).unwrap();
    assert_eq!(rerun.epoch, 2);
    let status = j.status("111122223333", running.id()).unwrap().unwrap();
    assert_eq!(status.history[0].outcome.as_deref(), Some("lost"));
}

fn tamper(dir: &Path, sql: &str) {
    let conn = Connection::open(dir.join("async.db")).unwrap();
    conn.execute_batch(sql).unwrap();
}

#[tokio::test]
async fn a_damaged_record_stops_the_start_until_repair_quarantines_it() {
    let dir = tempfile::tempdir().unwrap();
    let j = open(dir.path(), JournalConfig::default());
    let hit = j.accept(invocation("f", None), T0).await.unwrap();
    let intact = j.accept(invocation("g", None), T0).await.unwrap();
    drop(j);
    tamper(
        dir.path(),
        &format!(
            "UPDATE invocations SET payload = X'7b226e223a20327d' WHERE id = '{}'",
            hit.id()
        ),
    );
    let path = dir.path().join("async.db");
    let refused = Journal::open(&path, JournalConfig::default(), T0)
        .err()
        .unwrap();
    let message = refused.to_string();
    assert!(matches!(refused, JournalError::Damaged { .. }), "{message}");
    assert!(
        message.contains(hit.id()) && message.contains("checksum"),
        "{message}"
    );
    let repair = JournalConfig {
        repair: true,
        ..JournalConfig::default()
    };
    let (j, recovery) = Journal::open(&path, repair, T0).unwrap();
    assert_eq!(recovery.quarantined, 1);
    let due = j.due(T0, 10).unwrap();
    assert_eq!(due.len(), 1, "the damaged one is never run");
    assert_eq!(
        j.status("111122223333", intact.id())
            .unwrap()
            .unwrap()
            .function,
        "g"
    );
    assert!(j.status("111122223333", hit.id()).unwrap().is_none());
    drop(j);
    assert!(
        Journal::open(&path, JournalConfig::default(), T0).is_ok(),
        "repaired, it opens"
    );
}

#[tokio::test]
async fn a_tampered_dispatch_state_is_caught_too() {
    let dir = tempfile::tempdir().unwrap();
    let j = open(dir.path(), JournalConfig::default());
    let id = j.accept(invocation("f", None), T0).await.unwrap();
    drop(j);
    tamper(
        dir.path(),
        &format!(
            "UPDATE invocations SET state = 'succeeded' WHERE id = '{}'",
            id.id()
        ),
    );
    let refused = Journal::open(&dir.path().join("async.db"), JournalConfig::default(), T0);
    assert!(matches!(refused, Err(JournalError::Damaged { .. })));
}

#[tokio::test]
async fn lost_acknowledged_invocations_are_detected_by_the_mark() {
    let dir = tempfile::tempdir().unwrap();
    let j = open(dir.path(), JournalConfig::default());
    for _ in 0..3 {
        j.accept(invocation("f", None), T0).await.unwrap();
    }
    drop(j);
    // What WAL recovery does to a damaged tail: the last commit is gone,
    // and what is left is consistent.
    tamper(
        dir.path(),
        "DELETE FROM invocations WHERE seq = 3; UPDATE journal_meta SET value = 2 WHERE key = 'max_seq';",
    );
    let path = dir.path().join("async.db");
    match Journal::open(&path, JournalConfig::default(), T0) {
        Err(JournalError::Lost {
            held: 2, mark: 3, ..
        }) => {}
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("the loss went unnoticed"),
    }
    let repair = JournalConfig {
        repair: true,
        ..JournalConfig::default()
    };
    let (j, _) = Journal::open(&path, repair, T0).unwrap();
    let next = j.accept(invocation("f", None), T0).await.unwrap();
    assert!(matches!(next, Accepted::New { .. }));
    drop(j);
    assert!(Journal::open(&path, JournalConfig::default(), T0).is_ok());
}

#[tokio::test]
async fn purge_removes_finished_invocations_and_expired_keys_only() {
    let dir = tempfile::tempdir().unwrap();
    let j = open(dir.path(), JournalConfig::default());
    let done = j.accept(invocation("f", Some("k")), T0).await.unwrap();
    let waiting = j.accept(invocation("g", None), T0).await.unwrap();
    let c = claim_all(&j, T0, 1_000).await;
    let finished = c.iter().find(|c| c.id == done.id()).unwrap();
    j.end(
        finished.seq,
        finished.epoch,
        Ending::Succeeded { deliveries: vec![] },
        T0,
    )
    .await
    .unwrap();
    let unfinished = c.iter().find(|c| c.id == waiting.id()).unwrap();
    let retry = Ending::Retry {
        due_at_ms: T0 + 10,
        error: "x".into(),
    };
    j.end(unfinished.seq, unfinished.epoch, retry, T0)
        .await
        .unwrap();
    let later = T0 + IDEMPOTENCY_WINDOW_MS + 1;
    assert_eq!(j.purge(T0 + 1, later).await.unwrap(), 1);
    assert!(j.status("111122223333", done.id()).unwrap().is_none());
    assert!(j.status("111122223333", waiting.id()).unwrap().is_some());
    assert_eq!(j.backlog("111122223333").unwrap(), [("g".to_string(), 1)]);
}

const DLQ: &str = "arn:aws:sqs:us-east-1:111122223333:dlq";

#[tokio::test]
async fn a_failed_invocation_is_dead_lettered_with_its_end_or_marked_failed_when_it_cannot_be() {
    let dir = tempfile::tempdir().unwrap();
    let j = open(dir.path(), JournalConfig::default());
    let queues = Connection::open(dir.path().join("async.db")).unwrap();
    nimbus_queues::create_queue(&queues, "111122223333", "dlq", &[], T0 as u64).unwrap();
    let letter = |body: &str| Delivery::Queue {
        arn: DLQ.into(),
        body: body.into(),
        attributes: vec![("ErrorMessage".into(), "String".into(), "boom".into())],
    };
    let kept = j.accept(invocation("f", None), T0).await.unwrap();
    let lost = j.accept(invocation("g", None), T0).await.unwrap();
    let claimed = claim_all(&j, T0, 1_000).await;
    let by_id = |id: &str| claimed.iter().find(|c| c.id == id).unwrap();
    let failed = |deliveries| Ending::Failed {
        condition: "RetriesExhausted".into(),
        error: "Unhandled: boom".into(),
        deliveries,
    };
    let c = by_id(kept.id());
    j.end(c.seq, c.epoch, failed(vec![letter(r#"{"n": 1}"#)]), T0 + 1)
        .await
        .unwrap();
    let gone = Delivery::Queue {
        arn: "arn:aws:sqs:us-east-1:111122223333:no-such-queue".into(),
        body: "{}".into(),
        attributes: vec![],
    };
    let c = by_id(lost.id());
    j.end(c.seq, c.epoch, failed(vec![gone]), T0 + 1)
        .await
        .unwrap();

    let s = j.status("111122223333", kept.id()).unwrap().unwrap();
    assert_eq!(s.state, State::DeadLettered);
    let s = j.status("111122223333", lost.id()).unwrap().unwrap();
    assert_eq!(s.state, State::Failed, "nothing took it");
    assert!(
        s.last_error.as_deref().unwrap().contains("no-such-queue"),
        "{s:?}"
    );
    let options = nimbus_queues::ReceiveOptions {
        max_messages: 10,
        visibility_timeout_s: None,
    };
    let got =
        nimbus_queues::receive(&queues, "111122223333", "dlq", &options, T0 as u64 + 2).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, r#"{"n": 1}"#);
    assert_eq!(
        got[0].attributes["ErrorMessage"].string_value.as_deref(),
        Some("boom")
    );
}

#[tokio::test]
async fn a_destination_function_gets_a_new_invocation_in_the_same_commit() {
    let dir = tempfile::tempdir().unwrap();
    let j = open(dir.path(), JournalConfig::default());
    let first = j.accept(invocation("f", None), T0).await.unwrap();
    let c = claim_all(&j, T0, 1_000).await.remove(0);
    let mut record = invocation("on-success", None);
    record.payload = br#"{"requestContext": {}}"#.to_vec();
    let ending = Ending::Succeeded {
        deliveries: vec![Delivery::Invoke(record.clone())],
    };
    j.end(c.seq, c.epoch, ending, T0 + 5).await.unwrap();
    let due = j.due(T0 + 5, 10).unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].function, "on-success");
    let next = j.claim(vec![(due[0].seq, 1_000)], T0 + 5).await.unwrap();
    assert_eq!(next[0].invocation, record);
    assert_ne!(next[0].id, first.id());
    let s = j.status("111122223333", first.id()).unwrap().unwrap();
    assert_eq!(s.state, State::Succeeded);
}

#[tokio::test]
async fn a_write_on_another_connection_to_the_file_delays_a_batch_but_never_fails_it() {
    let dir = tempfile::tempdir().unwrap();
    let j = open(dir.path(), JournalConfig::default());
    j.accept(invocation("f", None), T0).await.unwrap();
    let c = claim_all(&j, T0, 1_000).await.remove(0);
    // The queues' connection holds the write lock, then commits a write
    // while the journal's batch waits.
    let other = Connection::open(dir.path().join("async.db")).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    nimbus_queues::create_queue(&other, "111122223333", "q", &[], T0 as u64).unwrap();
    let release = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(200));
        other.execute_batch("COMMIT").unwrap();
    });
    let ended = j
        .end(
            c.seq,
            c.epoch,
            Ending::Succeeded { deliveries: vec![] },
            T0 + 1,
        )
        .await;
    release.join().unwrap();
    assert_eq!(ended.unwrap(), Completion::Accepted);
    assert!(j.accept(invocation("f", None), T0 + 2).await.is_ok());
}

/// The opcodes of a statement's program.
fn opcodes(conn: &Connection, sql: &str) -> Vec<String> {
    let mut q = conn.prepare(&format!("EXPLAIN {sql}")).unwrap();
    let unbound = std::iter::repeat_n(rusqlite::types::Null, q.parameter_count());
    q.query_map(rusqlite::params_from_iter(unbound), |r| {
        r.get::<_, String>(1)
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

/// The query plan's lines.
fn plan(conn: &Connection, sql: &str) -> String {
    let mut q = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
    let lines: Vec<String> = q
        .query_map([], |r| r.get::<_, String>(3))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    lines.join("\n")
}

#[test]
fn the_writers_statements_build_no_temporary_b_trees_and_the_readers_use_the_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let conn = Connection::open(dir.path().join("async.db")).unwrap();
    schema::create(&conn).unwrap();
    // Every state change rewrites the partial indexes' entries; a predicate
    // evaluated through a temporary b-tree would cost two per UPDATE.
    let update = "UPDATE invocations SET state = ?2, epoch = ?3, attempts = ?4, due_at_ms = ?5,
        lease_until_ms = ?6, updated_at_ms = ?7, last_error = ?8, condition = ?9, state_sum = ?10
        WHERE seq = ?1";
    let insert = format!(
        "INSERT INTO invocations ({}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11,
         ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)",
        schema::COLUMNS
    );
    for sql in [update, insert.as_str()] {
        let ops = opcodes(&conn, sql);
        assert!(!ops.iter().any(|o| o == "OpenEphemeral"), "{sql}: {ops:?}");
    }
    let due = format!(
        "SELECT seq FROM invocations WHERE {} AND due_at_ms <= 5",
        schema::WAITING
    );
    assert!(
        plan(&conn, &due).contains("invocations_due"),
        "{}",
        plan(&conn, &due)
    );
    let backlog = format!(
        "SELECT function, COUNT(*) FROM invocations WHERE tenant = 't' AND {} GROUP BY function",
        schema::UNFINISHED
    );
    assert!(
        plan(&conn, &backlog).contains("invocations_unfinished"),
        "{}",
        plan(&conn, &backlog)
    );
}

#[tokio::test]
async fn a_deferred_invocation_waits_without_an_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let j = open(dir.path(), JournalConfig::default());
    let id = j.accept(invocation("f", None), T0).await.unwrap();
    let due = j.due(T0, 10).unwrap();
    assert_eq!((due[0].accepted_at_ms, due[0].leased), (T0, false));
    let why = "ReservedFunctionConcurrentInvocationLimitExceeded".to_string();
    assert_eq!(
        j.defer(vec![(due[0].seq, T0 + 500, why.clone())], T0)
            .await
            .unwrap(),
        1
    );
    assert!(j.due(T0 + 499, 10).unwrap().is_empty());
    let s = j.status("111122223333", id.id()).unwrap().unwrap();
    assert_eq!(
        (s.state, s.attempts, s.history.len()),
        (State::Queued, 0, 0)
    );
    assert_eq!(s.last_error, Some(why.clone()));
    // Not due any more: a second deferral moves nothing.
    assert_eq!(
        j.defer(vec![(due[0].seq, T0 + 900, why)], T0 + 1)
            .await
            .unwrap(),
        0
    );
    let c = claim_all(&j, T0 + 500, 1_000).await;
    assert_eq!(c[0].attempt, 1);
}
