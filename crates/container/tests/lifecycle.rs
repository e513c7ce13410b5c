//! Start, invoke and teardown of real sandboxes.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Footprint, config, sandbox_available};
use nimbus_container::{InvokeRequest, InvokeResult, Sandbox, StartError};

fn request(id: &str, payload: &str, timeout: Duration) -> InvokeRequest {
    InvokeRequest {
        request_id: id.to_owned(),
        payload: Bytes::from(payload.to_owned()),
        timeout,
        invoked_function_arn: "arn:aws:lambda:us-east-1:000000000000:function:testfn".to_owned(),
        trace_id: Some("Root=1-test".to_owned()),
        client_context: None,
        cognito_identity: None,
    }
}

fn response(result: &InvokeResult) -> String {
    match result {
        InvokeResult::Response(body) => String::from_utf8_lossy(body).into_owned(),
        InvokeResult::FunctionError(e) => panic!("function error {e:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_round_trips_and_the_sandbox_is_reused() {
    if !sandbox_available() {
        return;
    }
    let mut sandbox = Sandbox::start(config("echo"))
        .await
        .expect("sandbox starts");
    let footprint = Footprint::of(&sandbox);
    assert!(String::from_utf8_lossy(sandbox.init_log()).contains("testfn init, handler bootstrap"));
    for i in 0..3 {
        let id = format!("req-{i}");
        let outcome = sandbox
            .invoke(request(
                &id,
                &format!("echo hello {i}"),
                Duration::from_secs(30),
            ))
            .await
            .unwrap();
        assert_eq!(response(&outcome.result), format!("hello {i}"));
        assert!(
            outcome.max_memory_used_bytes > 64 << 10,
            "the peak memory is read from the cgroup: {}",
            outcome.max_memory_used_bytes
        );
        assert!(
            String::from_utf8_lossy(&outcome.log)
                .contains(&format!("testfn handling echo for {id}")),
            "{:?}",
            String::from_utf8_lossy(&outcome.log)
        );
        assert!(!outcome.sandbox_lost);
    }
    let outcome = sandbox
        .invoke(request("req-h", "headers", Duration::from_secs(30)))
        .await
        .unwrap();
    let headers = response(&outcome.result);
    assert!(
        headers.contains("lambda-runtime-aws-request-id: req-h"),
        "{headers}"
    );
    assert!(
        headers.contains("lambda-runtime-deadline-ms: "),
        "{headers}"
    );
    assert!(headers.contains("lambda-runtime-invoked-function-arn: arn:aws:lambda:us-east-1:000000000000:function:testfn"), "{headers}");
    assert!(
        headers.contains("lambda-runtime-trace-id: root=1-test"),
        "{headers}"
    );
    let env = response(
        &sandbox
            .invoke(request("req-e", "env", Duration::from_secs(30)))
            .await
            .unwrap()
            .result,
    );
    for expected in [
        "AWS_LAMBDA_RUNTIME_API=127.0.0.1:9001",
        "LAMBDA_TASK_ROOT=/var/task",
        "_HANDLER=bootstrap",
        "AWS_LAMBDA_FUNCTION_NAME=testfn",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE=128",
        "AWS_REGION=us-east-1",
        "TZ=:UTC",
    ] {
        assert!(
            env.lines().any(|l| l == expected),
            "{expected} missing from {env}"
        );
    }
    // /tmp stays a sparse image: its inode tables are not zeroed behind it.
    let image = common::host().state_dir.join("echo/tmp.img");
    let allocated =
        std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(&image).unwrap()) * 512;
    assert!(
        allocated < 8 << 20,
        "the 64 MB /tmp image holds {allocated} bytes"
    );
    let wrong = response(
        &sandbox
            .invoke(request("req-w", "wrong-id", Duration::from_secs(30)))
            .await
            .unwrap()
            .result,
    );
    assert!(wrong.contains("400"), "{wrong}");
    sandbox.shutdown().await;
    footprint.assert_gone();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_error_has_lambdas_shape() {
    if !sandbox_available() {
        return;
    }
    let mut sandbox = Sandbox::start(config("error")).await.unwrap();
    let footprint = Footprint::of(&sandbox);
    let outcome = sandbox
        .invoke(request("r1", "error", Duration::from_secs(30)))
        .await
        .unwrap();
    let InvokeResult::FunctionError(e) = outcome.result else {
        panic!("expected an error")
    };
    assert_eq!(
        (e.error_type.as_str(), e.error_message.as_str()),
        ("TestError", "boom")
    );
    assert!(!outcome.sandbox_lost);
    let outcome = sandbox
        .invoke(request("r2", "echo still here", Duration::from_secs(30)))
        .await
        .unwrap();
    assert_eq!(response(&outcome.result), "still here");
    drop(sandbox);
    footprint.assert_gone();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_kills_every_process_of_the_sandbox() {
    if !sandbox_available() {
        return;
    }
    let mut sandbox = Sandbox::start(config("timeout")).await.unwrap();
    let footprint = Footprint::of(&sandbox);
    let outcome = sandbox
        .invoke(request("r1", "sleep", Duration::from_millis(500)))
        .await
        .unwrap();
    let InvokeResult::FunctionError(e) = outcome.result else {
        panic!("expected a timeout")
    };
    assert_eq!(e.error_type, "Sandbox.Timedout");
    assert!(
        e.error_message
            .contains("Task timed out after 0.50 seconds"),
        "{}",
        e.error_message
    );
    assert!(outcome.sandbox_lost && !sandbox.is_alive());
    assert!(
        sandbox
            .invoke(request("r2", "echo x", Duration::from_secs(1)))
            .await
            .is_err()
    );
    sandbox.shutdown().await;
    footprint.assert_gone();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_is_reported_as_lambda_does() {
    if !sandbox_available() {
        return;
    }
    let mut sandbox = Sandbox::start(config("crash")).await.unwrap();
    let footprint = Footprint::of(&sandbox);
    let outcome = sandbox
        .invoke(request("r1", "crash", Duration::from_secs(30)))
        .await
        .unwrap();
    let InvokeResult::FunctionError(e) = outcome.result else {
        panic!("expected a crash")
    };
    assert_eq!(e.error_type, "Runtime.ExitError");
    assert!(
        e.error_message
            .ends_with("Runtime exited with error: exit status 3"),
        "{}",
        e.error_message
    );
    drop(sandbox);
    footprint.assert_gone();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_bomb_ends_in_an_out_of_memory_error() {
    if !sandbox_available() {
        return;
    }
    let mut sandbox = Sandbox::start(config("oom")).await.unwrap();
    let footprint = Footprint::of(&sandbox);
    let outcome = sandbox
        .invoke(request("r1", "alloc", Duration::from_secs(60)))
        .await
        .unwrap();
    let InvokeResult::FunctionError(e) = outcome.result else {
        panic!("expected out of memory")
    };
    assert_eq!(e.error_type, "Runtime.OutOfMemory", "{e:?}");
    assert!(
        e.error_message.contains("out of memory"),
        "{}",
        e.error_message
    );
    drop(sandbox);
    footprint.assert_gone();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_failures_are_reported_as_lambda_does() {
    if !sandbox_available() {
        return;
    }
    let mut c = config("init-error");
    c.environment
        .push(("TESTFN_INIT".into(), "init-error".into()));
    let error = Sandbox::start(c).await.err().expect("init fails");
    let (error_type, message, _) = error.function_error().expect("a function error");
    assert_eq!(
        (error_type.as_str(), message.as_str()),
        ("Runtime.TestInitError", "cannot start")
    );

    let mut c = config("init-exit");
    c.environment.push(("TESTFN_INIT".into(), "exit".into()));
    let error = Sandbox::start(c).await.err().expect("init fails");
    assert!(
        matches!(&error, StartError::RuntimeExited { status, .. } if status == "exit status 2"),
        "{error:?}"
    );

    let mut c = config("init-hang");
    c.environment.push(("TESTFN_INIT".into(), "hang".into()));
    c.init_timeout = Duration::from_millis(500);
    let error = Sandbox::start(c).await.err().expect("init times out");
    assert!(matches!(error, StartError::InitTimedOut(..)), "{error:?}");

    let mut c = config("no-bootstrap");
    c.command = vec!["/var/task/missing".into()];
    let error = Sandbox::start(c).await.err().expect("exec fails");
    assert!(error.to_string().contains("exec the bootstrap"), "{error}");
    for id in ["init-error", "init-exit", "init-hang", "no-bootstrap"] {
        common::Footprint::for_id(id).assert_gone();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_root_holds_what_python3_needs() {
    if !sandbox_available() {
        return;
    }
    if !std::path::Path::new("/usr/bin/python3").exists() {
        eprintln!("SKIPPED: no /usr/bin/python3 on this host");
        return;
    }
    // The runtime client comes from its own directory, at /var/runtime, as a
    // managed runtime's does; the code directory holds only the function.
    let mut c = config("python");
    c.runtime_dir =
        Some(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/python"));
    c.command = vec![
        "/usr/bin/python3".into(),
        "/var/runtime/bootstrap.py".into(),
    ];
    let mut sandbox = Sandbox::start(c).await.expect("python starts");
    let footprint = Footprint::of(&sandbox);
    let outcome = sandbox
        .invoke(request(
            "py-1",
            r#"{"hello": "world"}"#,
            Duration::from_secs(10),
        ))
        .await
        .unwrap();
    let body: String = response(&outcome.result);
    assert!(
        body.starts_with(r#"{"echo": {"hello": "world"}, "python": "3."#),
        "{body}"
    );
    sandbox.shutdown().await;
    footprint.assert_gone();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_sandboxes_start_at_once() {
    if !sandbox_available() {
        return;
    }
    let starts = (0..8).map(|i| tokio::spawn(Sandbox::start(config(&format!("many-{i}")))));
    let mut sandboxes = Vec::new();
    for start in starts {
        sandboxes.push(start.await.unwrap().expect("sandbox starts"));
    }
    let footprints: Vec<Footprint> = sandboxes.iter().map(Footprint::of).collect();
    for (i, sandbox) in sandboxes.iter_mut().enumerate() {
        let outcome = sandbox
            .invoke(request("r", &format!("echo {i}"), Duration::from_secs(30)))
            .await
            .unwrap();
        assert_eq!(response(&outcome.result), i.to_string());
    }
    for sandbox in sandboxes {
        sandbox.shutdown().await;
    }
    for footprint in footprints {
        footprint.assert_gone();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_invocation_retires_the_sandbox() {
    if !sandbox_available() {
        return;
    }
    let mut sandbox = Sandbox::start(config("abandoned")).await.unwrap();
    let footprint = Footprint::of(&sandbox);
    let call = sandbox.invoke(request("r1", "sleep", Duration::from_secs(60)));
    assert!(
        tokio::time::timeout(Duration::from_millis(300), call)
            .await
            .is_err()
    );
    assert!(!sandbox.is_alive());
    let error = sandbox
        .invoke(request("r2", "echo x", Duration::from_secs(30)))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("abandoned"), "{error}");
    sandbox.shutdown().await;
    footprint.assert_gone();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_start_leaves_nothing() {
    if !sandbox_available() {
        return;
    }
    common::code_dir();
    for (i, after) in [0u64, 1, 2, 4].into_iter().enumerate() {
        let id = format!("cancelled-{i}");
        let start = Sandbox::start(config(&id));
        let _ = tokio::time::timeout(Duration::from_millis(after), start).await;
        common::Footprint::for_id(&id).assert_gone();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_sandbox_runs_the_function_that_claims_it() {
    if !sandbox_available() {
        return;
    }
    // Warmed with no code at all: an empty directory and a placeholder command.
    let empty = common::scratch().join("no-code");
    std::fs::create_dir_all(&empty).unwrap();
    let mut template = config("warm-claimed");
    template.code_dir = empty;
    template.command = vec!["/nonexistent".into()];
    let warm = nimbus_container::WarmSandbox::start(&template)
        .await
        .expect("warms up");
    let footprint = Footprint::for_id(warm.id());
    // Claimed by a function with its own code, variables and memory size.
    let mut function = config("ignored-id");
    function.environment = vec![("CLAIMED_BY".into(), "warm-test".into())];
    function.memory_mb = 256;
    let mut sandbox = warm
        .claim(&function)
        .await
        .expect("the claim execs the function");
    assert_eq!(sandbox.id(), "warm-claimed", "the sandbox keeps its own id");
    let env = sandbox
        .invoke(request("w-1", "env", Duration::from_secs(30)))
        .await
        .unwrap();
    let env = response(&env.result);
    assert!(env.contains("CLAIMED_BY=warm-test\n"), "{env}");
    assert!(
        env.contains("AWS_LAMBDA_FUNCTION_MEMORY_SIZE=256\n"),
        "{env}"
    );
    assert!(
        env.contains("AWS_LAMBDA_LOG_STREAM_NAME=$LATEST/warm-claimed\n"),
        "the log stream names the sandbox: {env}"
    );
    let layout = nimbus_container::CgroupLayout::discover().unwrap();
    let limit_file = match layout.memory.version {
        nimbus_container::Version::V1 => "memory.limit_in_bytes",
        nimbus_container::Version::V2 => "memory.max",
    };
    let limit = std::fs::read_to_string(
        layout
            .memory
            .mount
            .join(format!("nimbus-{}", common::tag()))
            .join("warm-claimed")
            .join(limit_file),
    )
    .unwrap();
    assert_eq!(
        limit.trim(),
        (256u64 << 20).to_string(),
        "the claim set MemorySize"
    );
    let echo = sandbox
        .invoke(request("w-2", "echo claimed", Duration::from_secs(30)))
        .await
        .unwrap();
    assert_eq!(response(&echo.result), "claimed");
    sandbox.shutdown().await;
    footprint.assert_gone();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unclaimed_or_mismatched_warm_sandbox_leaves_nothing() {
    if !sandbox_available() {
        return;
    }
    let warm = nimbus_container::WarmSandbox::start(&config("warm-discarded"))
        .await
        .expect("warms up");
    let footprint = Footprint::for_id(warm.id());
    warm.discard().await;
    footprint.assert_gone();

    let warm = nimbus_container::WarmSandbox::start(&config("warm-dropped"))
        .await
        .expect("warms up");
    let footprint = Footprint::for_id(warm.id());
    drop(warm);
    footprint.assert_gone();

    // A function whose /tmp differs from the sandbox's disk cannot claim it.
    let warm = nimbus_container::WarmSandbox::start(&config("warm-mismatch"))
        .await
        .expect("warms up");
    let footprint = Footprint::for_id(warm.id());
    let mut bigger = config("warm-mismatch");
    bigger.ephemeral_storage_mb = 128;
    let error = warm.claim(&bigger).await.err().expect("refused");
    assert!(matches!(error, StartError::InvalidConfig(_)), "{error}");
    footprint.assert_gone();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_whose_code_cannot_be_mounted_says_so() {
    if !sandbox_available() {
        return;
    }
    let warm = nimbus_container::WarmSandbox::start(&config("warm-no-code"))
        .await
        .expect("warms up");
    let footprint = Footprint::for_id(warm.id());
    let mut function = config("warm-no-code");
    function.code_dir = common::scratch().join("does-not-exist");
    let error = warm.claim(&function).await.err().expect("refused");
    let text = error.to_string();
    assert!(
        text.contains("mount the function's code") && text.contains("does-not-exist"),
        "{text}"
    );
    footprint.assert_gone();
}
