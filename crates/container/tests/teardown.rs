//! Nothing is left behind when the process owning sandboxes is SIGKILLed:
//! the sandboxes die with it (parent-death signal), and the start-up sweep
//! of its successor removes their cgroups and state.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Footprint, config, sandbox_available};
use nimbus_container::Sandbox;

/// Runs in a helper process: starts a sandbox, says its pid, waits to be killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "helper of a_killed_owner_leaves_nothing_after_the_sweep, started by it"]
async fn helper_holds_a_sandbox_until_killed() {
    if std::env::var_os("NIMBUS_CONTAINER_TEST_SCRATCH").is_none() {
        return;
    }
    let sandbox = Sandbox::start(config("held"))
        .await
        .expect("sandbox starts");
    println!("SANDBOX_PID {}", sandbox.pid());
    tokio::time::sleep(Duration::from_secs(600)).await;
}

#[test]
fn a_killed_owner_leaves_nothing_after_the_sweep() {
    if !sandbox_available() {
        return;
    }
    common::code_dir();
    let mut helper = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "helper_holds_a_sandbox_until_killed",
            "--ignored",
            "--nocapture",
        ])
        .env("NIMBUS_CONTAINER_TEST_SCRATCH", common::scratch())
        .env("NIMBUS_CONTAINER_TEST_TAG", common::tag())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(helper.stdout.take().unwrap());
    let pid: libc::pid_t = stdout
        .lines()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("SANDBOX_PID ").map(|p| p.parse().unwrap()))
        .expect("the helper started a sandbox");
    helper.kill().unwrap(); // SIGKILL: no destructor runs
    helper.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    // SAFETY: kill with signal 0 only checks existence.
    while unsafe { libc::kill(pid, 0) } == 0 {
        assert!(
            Instant::now() < deadline,
            "sandbox process {pid} outlived its owner"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let state = common::host().state_dir.join("held");
    assert!(
        state.exists(),
        "the killed owner's state is still there to sweep"
    );
    let report = nimbus_container::sweep(&common::host()).unwrap();
    assert!(report.cgroups >= 1 && report.state_dirs == 1, "{report:?}");
    Footprint::for_id("held").assert_gone();
}
