//! Black-box tests of the `nimbus` binary: `up` on an ephemeral port, driven
//! by the binary's own client subcommands.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const NIMBUS: &str = env!("CARGO_BIN_EXE_nimbus");
const ACCESS_KEY: &str = "AKIATESTTESTTESTTEST";
const SECRET: &str = "test/secret/key/for/the/up/tests/000000";

struct Server {
    child: Child,
    endpoint: String,
    /// Held open so the server's later writes to stdout do not fail.
    _stdout: BufReader<std::process::ChildStdout>,
}

impl Drop for Server {
    /// SIGTERM first, so the server takes its warm sandboxes' cgroups off
    /// the host; SIGKILL if it has not stopped within 10 s.
    fn drop(&mut self) {
        // Reaped already: its pid may be another process's by now.
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn up(data_dir: &Path) -> Server {
    let mut child = Command::new(NIMBUS)
        .args(["up", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .env("NIMBUS_ROOT_ACCESS_KEY_ID", ACCESS_KEY)
        .env("NIMBUS_ROOT_SECRET_ACCESS_KEY", SECRET)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nimbus up");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    let endpoint = first
        .trim()
        .strip_prefix("nimbus is up: ")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .to_string();
    Server {
        child,
        endpoint,
        _stdout: stdout,
    }
}

fn client(server: &Server, args: &[&str]) -> Command {
    let mut command = Command::new(NIMBUS);
    command
        .args(args)
        .env("AWS_ENDPOINT_URL", &server.endpoint)
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .env("AWS_REGION", "us-east-1");
    command
}

fn run(mut command: Command) -> Output {
    command.output().expect("run the nimbus client")
}

fn wasm_file(dir: &Path, name: &str, wat: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, wat::parse_str(wat).unwrap()).unwrap();
    path.to_string_lossy().into_owned()
}

const SPIN: &str =
    r#"(module (memory (export "memory") 1) (func (export "_start") (loop $l (br $l))))"#;
const HELLO: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "{\"hello\":1}")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 11))
    (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;

#[test]
fn sigterm_lets_in_flight_invocations_finish() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = up(&dir.path().join("data"));
    let spin = wasm_file(dir.path(), "spin.wasm", SPIN);
    let deployed = run(client(
        &server,
        &["deploy", "spin", &spin, "--timeout", "2"],
    ));
    assert!(
        deployed.status.success(),
        "{}",
        String::from_utf8_lossy(&deployed.stderr)
    );

    let started = Instant::now();
    let in_flight = client(&server, &["invoke", "spin"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let killed = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());

    let answer = in_flight.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&answer.stderr);
    assert!(
        stderr.contains("Task timed out after 2.00 seconds"),
        "the in-flight invocation was answered: {stderr}"
    );
    assert!(started.elapsed() >= Duration::from_secs(2));
    let status = server.child.wait().unwrap();
    assert!(
        status.success(),
        "server exits cleanly after draining: {status:?}"
    );
}

#[test]
fn functions_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let hello = wasm_file(dir.path(), "hello.wasm", HELLO);
    {
        let server = up(&data);
        let deployed = run(client(
            &server,
            &["deploy", "hello", &hello, "--memory", "256"],
        ));
        assert!(
            deployed.status.success(),
            "{}",
            String::from_utf8_lossy(&deployed.stderr)
        );
    }
    let server = up(&data);
    let listed = run(client(&server, &["ls"]));
    assert!(String::from_utf8_lossy(&listed.stdout).contains("hello"));
    let invoked = run(client(&server, &["invoke", "hello"]));
    assert!(
        invoked.status.success(),
        "{}",
        String::from_utf8_lossy(&invoked.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&invoked.stdout).trim(),
        r#"{"hello":1}"#
    );
    let logs = run(client(&server, &["logs", "hello"]));
    let text = String::from_utf8_lossy(&logs.stdout);
    assert!(
        text.contains("REPORT RequestId:") && text.contains("Memory Size: 256 MB"),
        "{text}"
    );
}

#[test]
fn client_errors_are_one_line_and_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let server = up(&dir.path().join("data"));
    let missing = run(client(&server, &["invoke", "nope"]));
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("ResourceNotFoundException"), "{stderr}");
    let mut wrong_key = client(&server, &["ls"]);
    wrong_key.env("AWS_SECRET_ACCESS_KEY", "not-the-secret");
    let refused = run(wrong_key);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("InvalidSignatureException"));
}
