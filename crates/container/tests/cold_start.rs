//! Cold start of a trivial bootstrap: `Sandbox::start` to the first `/next`,
//! over many starts. Run with
//! `cargo test -p nimbus-container --release --test cold_start -- --ignored --nocapture`.

mod common;

use std::time::{Duration, Instant};

use common::{config, sandbox_available};
use nimbus_container::Sandbox;

const STARTS: usize = 50;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn line(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{name:<34} p50 {:>8.2} ms   p99 {:>8.2} ms   max {:>8.2} ms",
        percentile(&samples, 0.50).as_secs_f64() * 1e3,
        percentile(&samples, 0.99).as_secs_f64() * 1e3,
        samples.last().unwrap().as_secs_f64() * 1e3,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check: run it by name to print the figures"]
async fn cold_start_figures() {
    if !sandbox_available() {
        return;
    }
    common::code_dir(); // compile the bootstrap before the clock runs
    let (mut total, mut setup, mut init, mut teardown) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut cgroups, mut disk, mut clone) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..STARTS {
        let mut c = config(&format!("cold-{i}"));
        c.ephemeral_storage_mb = nimbus_container::limits::EPHEMERAL_STORAGE_MB_DEFAULT;
        let started = Instant::now();
        let sandbox = Sandbox::start(c).await.expect("sandbox starts");
        total.push(started.elapsed());
        setup.push(sandbox.setup_duration());
        init.push(sandbox.init_duration());
        let t = sandbox.start_timings();
        cgroups.push(t.cgroups);
        disk.push(t.tmp_disk);
        clone.push(t.clone_to_ready + t.claim_to_exec);
        let stopping = Instant::now();
        sandbox.shutdown().await;
        teardown.push(stopping.elapsed());
    }
    println!("{STARTS} cold starts of the std-only test bootstrap (512 MB /tmp disk):");
    line("start to first /next", total);
    line("  platform: prepare + clone + exec", setup);
    line("    cgroups", cgroups);
    line("    /tmp disk (image, mkfs, loop)", disk);
    line("    clone to exec", clone);
    line("  function: exec to first /next", init);
    line("shutdown (kill, reap, cleanup)", teardown);
    // Removes the tag's (now empty) cgroup groups.
    nimbus_container::sweep(&common::host()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check: run it by name to print the figures"]
async fn python_cold_start_figures() {
    if !sandbox_available() {
        return;
    }
    let (mut total, mut init) = (Vec::new(), Vec::new());
    for i in 0..STARTS {
        let mut c = config(&format!("cold-py-{i}"));
        c.code_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/python");
        c.command = vec!["/usr/bin/python3".into(), "/var/task/bootstrap.py".into()];
        let started = Instant::now();
        let sandbox = Sandbox::start(c).await.expect("sandbox starts");
        total.push(started.elapsed());
        init.push(sandbox.init_duration());
        sandbox.shutdown().await;
    }
    println!("{STARTS} cold starts of a stdlib-only python3 runtime (urllib):");
    line("start to first /next", total);
    line("  function: exec to first /next", init);
    nimbus_container::sweep(&common::host()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check: run it by name to print the figures"]
async fn warm_invoke_figures() {
    if !sandbox_available() {
        return;
    }
    const INVOKES: usize = 1000;
    let mut sandbox = Sandbox::start(config("warm"))
        .await
        .expect("sandbox starts");
    let mut samples = Vec::new();
    for i in 0..INVOKES {
        let request = nimbus_container::InvokeRequest {
            request_id: format!("warm-{i}"),
            payload: "echo hi".into(),
            timeout: Duration::from_secs(5),
            invoked_function_arn: "arn:aws:lambda:us-east-1:000000000000:function:warm".into(),
            trace_id: None,
            client_context: None,
            cognito_identity: None,
        };
        let started = Instant::now();
        let outcome = sandbox.invoke(request).await.unwrap();
        samples.push(started.elapsed());
        assert!(matches!(
            outcome.result,
            nimbus_container::InvokeResult::Response(_)
        ));
    }
    println!(
        "{INVOKES} warm invokes of the test bootstrap (a new TCP connection per Runtime API call):"
    );
    line("invoke to response", samples);
    sandbox.shutdown().await;
    nimbus_container::sweep(&common::host()).unwrap();
}
