//! The queue semantics in injected time: every `now_ms` is the test's.

use crate::*;
use rusqlite::Connection;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const T0: u64 = 1_700_000_000_000;
const A: &str = "111111111111";
const B: &str = "222222222222";

fn store() -> Connection {
    let conn = Connection::open_in_memory().unwrap();
    create_schema(&conn).unwrap();
    conn
}

fn attrs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn one(conn: &Connection, queue: &str, now_ms: u64) -> Option<ReceivedMessage> {
    let got = receive(conn, A, queue, &ReceiveOptions::default(), now_ms).unwrap();
    assert!(got.len() <= 1);
    got.into_iter().next()
}

#[test]
fn a_received_message_is_hidden_for_the_visibility_timeout_then_redelivered() {
    let conn = store();
    create_queue(&conn, A, "q", &attrs(&[("VisibilityTimeout", "10")]), T0).unwrap();
    let sent = send(&conn, A, "q", "hello", None, T0).unwrap();
    assert_eq!(sent.md5_of_body, md5_of_body("hello"));

    let first = one(&conn, "q", T0).unwrap();
    assert_eq!((first.body.as_str(), first.receive_count), ("hello", 1));
    assert_eq!(first.message_id, sent.message_id);
    assert_eq!((first.sent_ms, first.first_receive_ms), (T0, T0));
    assert!(one(&conn, "q", T0 + 9_999).is_none(), "still in flight");

    let second = one(&conn, "q", T0 + 10_000).unwrap();
    assert_eq!(second.receive_count, 2);
    assert_eq!(second.first_receive_ms, T0, "first receive is kept");
    assert_ne!(second.receipt_handle, first.receipt_handle);

    // A receive's own VisibilityTimeout overrides the queue's.
    let options = ReceiveOptions {
        max_messages: 1,
        visibility_timeout_s: Some(0),
    };
    let third = receive(&conn, A, "q", &options, T0 + 20_000).unwrap();
    assert_eq!(third[0].receive_count, 3);
    assert_eq!(one(&conn, "q", T0 + 20_000).unwrap().receive_count, 4);
}

#[test]
fn receive_takes_up_to_max_messages_in_order() {
    let conn = store();
    create_queue(&conn, A, "q", &[], T0).unwrap();
    for i in 0..12 {
        send(&conn, A, "q", &format!("m{i}"), None, T0).unwrap();
    }
    let options = ReceiveOptions {
        max_messages: 10,
        visibility_timeout_s: None,
    };
    let got = receive(&conn, A, "q", &options, T0).unwrap();
    let bodies: Vec<&str> = got.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, (0..10).map(|i| format!("m{i}")).collect::<Vec<_>>());
    assert_eq!(receive(&conn, A, "q", &options, T0).unwrap().len(), 2);
    let too_many = ReceiveOptions {
        max_messages: 11,
        visibility_timeout_s: None,
    };
    assert!(matches!(
        receive(&conn, A, "q", &too_many, T0),
        Err(QueueError::InvalidParameterValue(_))
    ));
}

#[test]
fn delayed_messages_appear_when_their_delay_passes() {
    let conn = store();
    create_queue(&conn, A, "q", &attrs(&[("DelaySeconds", "5")]), T0).unwrap();
    send(&conn, A, "q", "queue-delay", None, T0).unwrap();
    send(&conn, A, "q", "own-delay", Some(0), T0).unwrap();
    let stats = queue_stats(&conn, A, "q", T0).unwrap();
    assert_eq!((stats.available, stats.delayed, stats.in_flight), (1, 1, 0));
    assert_eq!(one(&conn, "q", T0).unwrap().body, "own-delay");
    assert!(one(&conn, "q", T0 + 4_999).is_none());
    assert_eq!(one(&conn, "q", T0 + 5_000).unwrap().body, "queue-delay");
    assert!(matches!(
        send(&conn, A, "q", "x", Some(901), T0),
        Err(QueueError::InvalidParameterValue(_))
    ));
}

#[test]
fn messages_past_retention_are_never_delivered_and_are_swept() {
    let conn = store();
    create_queue(
        &conn,
        A,
        "q",
        &attrs(&[("MessageRetentionPeriod", "60")]),
        T0,
    )
    .unwrap();
    create_queue(
        &conn,
        A,
        "r",
        &attrs(&[("MessageRetentionPeriod", "60")]),
        T0,
    )
    .unwrap();
    send(&conn, A, "q", "old", None, T0).unwrap();
    send(&conn, A, "q", "new", None, T0 + 30_000).unwrap();
    send(&conn, A, "r", "old", None, T0).unwrap();

    // At 60 s "old" is gone, even though it was never received.
    assert_eq!(
        queue_stats(&conn, A, "q", T0 + 60_000).unwrap().available,
        1
    );
    assert_eq!(one(&conn, "q", T0 + 60_000).unwrap().body, "new");

    // The sweep removes what no receive looked at.
    assert_eq!(sweep_expired(&conn, T0 + 59_999).unwrap(), 0);
    assert_eq!(sweep_expired(&conn, T0 + 60_000).unwrap(), 1);
    assert_eq!(
        sweep_expired(&conn, T0 + 90_000).unwrap(),
        1,
        "in flight expires too"
    );
    let left: i64 = conn
        .query_row("SELECT COUNT(*) FROM queue_messages", [], |r| r.get(0))
        .unwrap();
    assert_eq!(left, 0);
}

#[test]
fn a_stale_receipt_handle_never_touches_the_newer_receive() {
    let conn = store();
    create_queue(&conn, A, "q", &attrs(&[("VisibilityTimeout", "10")]), T0).unwrap();
    send(&conn, A, "q", "m", None, T0).unwrap();
    let old = one(&conn, "q", T0).unwrap().receipt_handle;
    let new = one(&conn, "q", T0 + 10_000).unwrap().receipt_handle;

    // The old consumer's delete succeeds but keeps the message.
    assert_eq!(
        delete_message(&conn, A, "q", &old).unwrap(),
        DeleteOutcome::Stale
    );
    assert!(matches!(
        change_visibility(&conn, A, "q", &old, 0, T0 + 10_001),
        Err(QueueError::InvalidParameterValue(_))
    ));
    assert_eq!(
        queue_stats(&conn, A, "q", T0 + 10_001).unwrap().in_flight,
        1
    );

    assert_eq!(
        delete_message(&conn, A, "q", &new).unwrap(),
        DeleteOutcome::Deleted
    );
    assert_eq!(
        delete_message(&conn, A, "q", &new).unwrap(),
        DeleteOutcome::Gone
    );
    assert!(matches!(
        delete_message(&conn, A, "q", "garbage"),
        Err(QueueError::ReceiptHandleIsInvalid(_))
    ));
}

#[test]
fn a_forged_handle_with_the_current_count_is_invalid() {
    let conn = store();
    create_queue(&conn, A, "q", &[], T0).unwrap();
    send(&conn, A, "q", "m", None, T0).unwrap();
    let real = receipt::Receipt::parse(&one(&conn, "q", T0).unwrap().receipt_handle).unwrap();
    let forged = receipt::Receipt {
        token: receipt::Receipt::new_token(),
        ..real
    };
    assert!(matches!(
        delete_message(&conn, A, "q", &forged.encode()),
        Err(QueueError::ReceiptHandleIsInvalid(_))
    ));
}

#[test]
fn change_visibility_moves_the_deadline_of_an_in_flight_message() {
    let conn = store();
    create_queue(&conn, A, "q", &attrs(&[("VisibilityTimeout", "10")]), T0).unwrap();
    send(&conn, A, "q", "m", None, T0).unwrap();
    let handle = one(&conn, "q", T0).unwrap().receipt_handle;
    change_visibility(&conn, A, "q", &handle, 60, T0 + 5_000).unwrap();
    assert!(one(&conn, "q", T0 + 64_999).is_none());
    assert!(matches!(
        change_visibility(&conn, A, "q", &handle, 43_201, T0),
        Err(QueueError::InvalidParameterValue(_))
    ));
    // Never beyond 12 hours after the receive.
    assert!(matches!(
        change_visibility(&conn, A, "q", &handle, 43_200, T0 + 5_000),
        Err(QueueError::InvalidParameterValue(_))
    ));
    change_visibility(&conn, A, "q", &handle, 0, T0 + 6_000).unwrap();
    assert!(matches!(
        change_visibility(&conn, A, "q", &handle, 10, T0 + 6_000),
        Err(QueueError::MessageNotInflight)
    ));
    assert_eq!(one(&conn, "q", T0 + 6_000).unwrap().receive_count, 2);
}

#[test]
fn purge_empties_the_queue_once_a_minute() {
    let conn = store();
    create_queue(&conn, A, "q", &[], T0).unwrap();
    for _ in 0..3 {
        send(&conn, A, "q", "m", None, T0).unwrap();
    }
    one(&conn, "q", T0).unwrap();
    purge_queue(&conn, A, "q", T0).unwrap();
    let stats = queue_stats(&conn, A, "q", T0).unwrap();
    assert_eq!((stats.available, stats.in_flight), (0, 0));
    assert!(matches!(
        purge_queue(&conn, A, "q", T0 + 59_999),
        Err(QueueError::PurgeQueueInProgress(_))
    ));
    purge_queue(&conn, A, "q", T0 + 60_000).unwrap();
}

#[test]
fn a_deleted_queue_and_its_messages_are_gone() {
    let conn = store();
    create_queue(&conn, A, "q", &[], T0).unwrap();
    send(&conn, A, "q", "m", None, T0).unwrap();
    delete_queue(&conn, A, "q").unwrap();
    assert!(matches!(
        get_queue(&conn, A, "q"),
        Err(QueueError::QueueDoesNotExist(_))
    ));
    assert!(matches!(
        send(&conn, A, "q", "m", None, T0),
        Err(QueueError::QueueDoesNotExist(_))
    ));
    assert!(matches!(
        delete_queue(&conn, A, "q"),
        Err(QueueError::QueueDoesNotExist(_))
    ));
    let again = create_queue(&conn, A, "q", &[], T0).unwrap();
    assert_eq!(queue_stats(&conn, A, "q", T0).unwrap().available, 0);
    assert!(again.id > 1, "a new queue, not the old one's row");
}

#[test]
fn tenants_see_only_their_own_queues() {
    let conn = store();
    create_queue(&conn, A, "q", &[], T0).unwrap();
    create_queue(&conn, B, "q", &[], T0).unwrap();
    send(&conn, A, "q", "for A", None, T0).unwrap();
    assert!(
        receive(&conn, B, "q", &ReceiveOptions::default(), T0)
            .unwrap()
            .is_empty()
    );
    assert_eq!(one(&conn, "q", T0).unwrap().body, "for A");
    assert_eq!(list_queues(&conn, B, "", None, 10).unwrap(), ["q"]);
    assert!(matches!(
        get_queue(&conn, B, "only-a"),
        Err(QueueError::QueueDoesNotExist(_))
    ));

    let arn = queue_arn("us-east-1", A, "q");
    assert_eq!(queue_by_arn(&conn, A, &arn).unwrap().tenant, A);
    assert!(matches!(
        queue_by_arn(&conn, B, &arn),
        Err(QueueError::QueueDoesNotExist(_))
    ));
    assert!(matches!(
        queue_by_arn(&conn, A, "arn:aws:lambda:us-east-1:1:function:f"),
        Err(QueueError::InvalidParameterValue(_))
    ));
}

#[test]
fn create_is_idempotent_only_when_the_attributes_match() {
    let conn = store();
    let made = create_queue(&conn, A, "q", &attrs(&[("VisibilityTimeout", "60")]), T0).unwrap();
    let same = create_queue(
        &conn,
        A,
        "q",
        &attrs(&[("VisibilityTimeout", "60")]),
        T0 + 1,
    )
    .unwrap();
    assert_eq!(made, same);
    assert_eq!(create_queue(&conn, A, "q", &[], T0 + 2).unwrap(), made);
    match create_queue(&conn, A, "q", &attrs(&[("VisibilityTimeout", "61")]), T0) {
        Err(QueueError::QueueNameExists { attribute, .. }) => {
            assert_eq!(attribute, "VisibilityTimeout")
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        create_queue(&conn, A, "bad name", &[], T0),
        Err(QueueError::InvalidParameterValue(_))
    ));
    let changed =
        set_queue_attributes(&conn, A, "q", &attrs(&[("DelaySeconds", "3")]), T0 + 5).unwrap();
    assert_eq!((changed.settings.delay_s, changed.modified_ms), (3, T0 + 5));
    assert!(matches!(
        set_queue_attributes(
            &conn,
            A,
            "q",
            &attrs(&[("DelaySeconds", "2"), ("VisibilityTimeout", "-1")]),
            T0
        ),
        Err(QueueError::InvalidAttributeValue { .. })
    ));
    assert_eq!(
        get_queue(&conn, A, "q").unwrap().settings.delay_s,
        3,
        "nothing applied"
    );
}

#[test]
fn list_pages_by_name_and_prefix() {
    let conn = store();
    for name in ["b1", "a_2", "a12", "a1", "c"] {
        create_queue(&conn, A, name, &[], T0).unwrap();
    }
    assert_eq!(
        list_queues(&conn, A, "a1", None, 10).unwrap(),
        ["a1", "a12"]
    );
    assert_eq!(
        list_queues(&conn, A, "a_", None, 10).unwrap(),
        ["a_2"],
        "_ is no wildcard"
    );
    assert_eq!(list_queues(&conn, A, "", None, 2).unwrap(), ["a1", "a12"]);
    assert_eq!(
        list_queues(&conn, A, "", Some("a12"), 2).unwrap(),
        ["a_2", "b1"]
    );
    assert_eq!(list_queues(&conn, A, "", Some("b1"), 2).unwrap(), ["c"]);
}

#[test]
fn size_and_content_limits_are_enforced() {
    let conn = store();
    create_queue(&conn, A, "q", &attrs(&[("MaximumMessageSize", "1024")]), T0).unwrap();
    send(&conn, A, "q", &"x".repeat(1024), None, T0).unwrap();
    assert!(matches!(
        send(&conn, A, "q", &"x".repeat(1025), None, T0),
        Err(QueueError::InvalidParameterValue(_))
    ));
    assert!(matches!(
        send(&conn, A, "q", "", None, T0),
        Err(QueueError::MissingParameter(_))
    ));
    assert!(matches!(
        send(&conn, A, "q", "bell\u{7}", None, T0),
        Err(QueueError::InvalidMessageContents(_))
    ));
    send(&conn, A, "q", "tab\tnewline\n é 🦀", None, T0).unwrap();
}

#[test]
fn message_attributes_round_trip_with_their_digest() {
    let conn = store();
    create_queue(&conn, A, "q", &[], T0).unwrap();
    let mut attributes = BTreeMap::new();
    attributes.insert(
        "kind".to_string(),
        MessageAttribute {
            data_type: "String".into(),
            string_value: Some("order".into()),
            binary_value: None,
        },
    );
    attributes.insert(
        "raw".to_string(),
        MessageAttribute {
            data_type: "Binary.gz".into(),
            string_value: None,
            binary_value: Some(vec![0, 1, 255]),
        },
    );
    let message = NewMessage {
        body: "b".into(),
        delay_s: None,
        attributes: attributes.clone(),
    };
    let sent = send_message(&conn, A, "q", &message, T0).unwrap();
    assert_eq!(sent.md5_of_attributes, md5_of_attributes(&attributes));
    assert_eq!(one(&conn, "q", T0).unwrap().attributes, attributes);

    let reserved = NewMessage {
        attributes: BTreeMap::from([(
            "AWS.x".to_string(),
            MessageAttribute {
                data_type: "Number".into(),
                string_value: Some("1".into()),
                binary_value: None,
            },
        )]),
        ..message
    };
    assert!(matches!(
        send_message(&conn, A, "q", &reserved, T0),
        Err(QueueError::InvalidParameterValue(_))
    ));
}

#[test]
fn a_send_in_the_callers_transaction_rolls_back_with_it() {
    let mut conn = store();
    create_queue(&conn, A, "q", &[], T0).unwrap();
    {
        let tx = conn.transaction().unwrap();
        send(&tx, A, "q", "dropped", None, T0).unwrap();
        // Not committed: dropped with the transaction.
    }
    {
        let tx = conn.transaction().unwrap();
        let queue = queue_by_arn(&tx, A, &queue_arn("us-east-1", A, "q")).unwrap();
        send(&tx, A, &queue.name, "kept", None, T0).unwrap();
        tx.commit().unwrap();
    }
    assert_eq!(one(&conn, "q", T0).unwrap().body, "kept");
    assert!(one(&conn, "q", T0).is_none());
}

fn fixed_clock(at: u64) -> (Clock, Arc<AtomicU64>) {
    let now = Arc::new(AtomicU64::new(at));
    let read = now.clone();
    (Arc::new(move || read.load(Ordering::SeqCst)), now)
}

#[test]
fn queues_and_messages_survive_reopening_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("async.db");
    let (clock, _) = fixed_clock(T0);
    {
        let queues = Queues::open_with_clock(&path, clock.clone()).unwrap();
        queues
            .with(|conn, now| {
                create_queue(conn, A, "q", &attrs(&[("VisibilityTimeout", "5")]), now)?;
                send(conn, A, "q", "durable", None, now)
            })
            .unwrap();
    }
    let queues = Queues::open_with_clock(&path, clock).unwrap();
    let got = queues
        .with(|conn, now| receive(conn, A, "q", &ReceiveOptions::default(), now))
        .unwrap();
    assert_eq!(got[0].body, "durable");
    assert_eq!(
        queues
            .with(|conn, _| get_queue(conn, A, "q"))
            .unwrap()
            .settings
            .visibility_timeout_s,
        5
    );
}

#[tokio::test]
async fn a_long_poll_answers_when_a_message_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let (clock, _) = fixed_clock(T0);
    let queues = Arc::new(Queues::open_with_clock(&dir.path().join("q.db"), clock).unwrap());
    queues
        .with(|conn, now| create_queue(conn, A, "q", &[], now))
        .unwrap();

    let waiting = {
        let queues = queues.clone();
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let got = queues
                .receive_waiting(A, "q", ReceiveOptions::default(), Duration::from_secs(10))
                .await
                .unwrap();
            (got, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    queues
        .with(|conn, now| send(conn, A, "q", "wake", None, now))
        .unwrap();
    queues.ring(A, "q");
    let (got, waited) = waiting.await.unwrap();
    assert_eq!(got[0].body, "wake");
    assert!(
        waited < Duration::from_secs(2),
        "answered on arrival, not at the deadline: {waited:?}"
    );

    // Nothing arrives: empty after the wait, and the bell is gone.
    let got = queues
        .receive_waiting(
            A,
            "q",
            ReceiveOptions::default(),
            Duration::from_millis(100),
        )
        .await
        .unwrap();
    assert!(got.is_empty());
    assert!(queues.bells_held() == 0);
}
