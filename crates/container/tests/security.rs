//! From inside a sandbox, every attempt to reach the host fails, and the
//! limits contain what a hostile function does.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Footprint, config, sandbox_available};
use nimbus_container::{InvokeRequest, InvokeResult, Sandbox};

fn request(payload: &str) -> InvokeRequest {
    InvokeRequest {
        request_id: "probe-1".to_owned(),
        payload: Bytes::from(payload.to_owned()),
        timeout: Duration::from_secs(30),
        invoked_function_arn: "arn:aws:lambda:us-east-1:000000000000:function:testfn".to_owned(),
        trace_id: None,
        client_context: None,
        cognito_identity: None,
    }
}

async fn run(id: &str, payload: &str, env: &[(&str, String)]) -> String {
    run_with(id, payload, env, |_| {}).await
}

async fn run_with(
    id: &str,
    payload: &str,
    env: &[(&str, String)],
    adjust: impl FnOnce(&mut nimbus_container::SandboxConfig),
) -> String {
    let mut c = config(id);
    adjust(&mut c);
    c.environment
        .extend(env.iter().map(|(k, v)| (k.to_string(), v.clone())));
    let mut sandbox = Sandbox::start(c).await.expect("sandbox starts");
    let footprint = Footprint::of(&sandbox);
    let outcome = sandbox.invoke(request(payload)).await.unwrap();
    let InvokeResult::Response(body) = outcome.result else {
        panic!("{:?}", outcome.result)
    };
    sandbox.shutdown().await;
    footprint.assert_gone();
    String::from_utf8_lossy(&body).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_is_out_of_reach() {
    if !sandbox_available() {
        return;
    }
    // A secret in a host directory (as the platform's data dir would be),
    // and a listener on the host's loopback (as the platform's API is).
    let secret_dir = common::scratch().join("data-dir");
    std::fs::create_dir_all(&secret_dir).unwrap();
    std::fs::write(secret_dir.join("store.db"), "secret").unwrap();
    let host_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = host_listener.local_addr().unwrap().port().to_string();
    let secret = secret_dir.join("store.db");
    let report = run(
        "probe",
        &format!("probe {} {}", secret.display(), secret_dir.display()),
        &[("PROBE_PORT", port)],
    )
    .await;
    println!("{report}");
    assert!(
        !report.contains("ALLOWED"),
        "an attempt succeeded:\n{report}"
    );
    assert!(
        report.contains("tmp-write=true"),
        "/tmp is writable:\n{report}"
    );
    assert!(
        report.contains("uid=993"),
        "the function runs as uid 993:\n{report}"
    );
    let pids = report
        .lines()
        .find_map(|l| l.strip_prefix("pids="))
        .unwrap();
    assert_eq!(pids, "1", "only the function's own process is visible");
    assert!(
        report.contains("interfaces=lo\n"),
        "the sandbox has only loopback:\n{report}"
    );
    for name in [
        "mount",
        "unshare-user",
        "unshare-net",
        "setns",
        "ptrace-attach-1",
        "bpf",
        "keyctl",
        "init_module",
    ] {
        assert!(
            report.contains(&format!("{name}=denied")),
            "{name} not denied:\n{report}"
        );
    }
    assert_eq!(std::fs::read_to_string(secret).unwrap(), "secret");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_bomb_stops_at_the_pids_limit() {
    if !sandbox_available() {
        return;
    }
    // A small limit keeps the test quick; memory stays ample so the pids
    // limit, not the OOM killer, is what stops the bomb.
    let pids_max = 64;
    let report = run_with("forkbomb", "forkbomb", &[], |c| c.pids_max = pids_max).await;
    let spawned: u32 = report
        .split_whitespace()
        .next()
        .unwrap()
        .trim_start_matches("spawned=")
        .parse()
        .unwrap();
    assert!(spawned < pids_max && spawned > pids_max / 2, "{report}");
    assert!(
        report.contains("Resource temporarily unavailable"),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tmp_is_a_disk_of_ephemeral_storage_size_outside_memory_size() {
    if !sandbox_available() {
        return;
    }
    // /tmp larger than MemorySize: filling it must end in "no space", never
    // in an out-of-memory kill (Decision 8: /tmp is disk, not tmpfs).
    let report = run_with("tmpfill", "tmpfill", &[], |c| {
        c.memory_mb = 128;
        c.ephemeral_storage_mb = 256;
    })
    .await;
    let megabytes: u64 = report.split_whitespace().nth(1).unwrap().parse().unwrap();
    // More than MemorySize went to /tmp; ext4 keeps ~10% for inode tables.
    assert!(
        (128 + 1..=256).contains(&megabytes) && megabytes >= 256 * 9 / 10,
        "{report}"
    );
    assert!(report.contains("No space left on device"), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_sandbox_cannot_reach_another() {
    if !sandbox_available() {
        return;
    }
    let mut a = Sandbox::start(config("tenant-a")).await.unwrap();
    let written = a.invoke(request("write /tmp/secret-a mine")).await.unwrap();
    assert_eq!(
        written.result,
        InvokeResult::Response(Bytes::from("Ok(())"))
    );
    // B runs at the same time, with A's code directory and A's state on the host.
    let a_state = common::host().state_dir.join("tenant-a");
    let report = run(
        "tenant-b",
        &format!("probe /tmp/secret-a {}", a_state.display()),
        &[],
    )
    .await;
    assert!(!report.contains("ALLOWED"), "{report}");
    assert!(
        report.lines().any(|l| l == "pids=1"),
        "B sees only itself: {report}"
    );
    // A's /tmp persists across its warm invocations, as on Lambda.
    let again = a.invoke(request("probe /tmp/secret-a")).await.unwrap();
    let InvokeResult::Response(body) = again.result else {
        panic!()
    };
    assert!(String::from_utf8_lossy(&body).contains("read:/tmp/secret-a=ALLOWED"));
    a.shutdown().await;
}
