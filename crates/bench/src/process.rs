//! The servers under test, each a child process that is killed when its
//! [`Server`] drops — on success, on error and on panic alike.

use crate::hello;
use crate::relay;
use anyhow::{Context as _, bail};
use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Longest wait for a server's banner. `nimbus up` opens its store and starts
/// wasmtime first, well under a second on this hardware.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// What `nimbus up` prints before the address it listens on.
const NIMBUS_BANNER: &str = "nimbus is up: http://";
/// How much of a failed server's stderr is quoted in the error.
const STDERR_TAIL_BYTES: usize = 2_048;

/// A running server process.
pub struct Server {
    child: Child,
    /// Where it listens.
    pub address: SocketAddr,
}

impl Server {
    /// The process id, to read its CPU time and count its system calls.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts `nimbus up` on a free loopback port with a fresh data
    /// directory under `scratch` and the given root keys, pinned to `cpu`
    /// if given. `tag` tells this server's files from other servers'.
    pub fn start_nimbus(
        binary: &Path,
        scratch: &Path,
        tag: &str,
        (access_key_id, secret): (&str, &str),
        region: &str,
        cpu: Option<usize>,
        extra_args: &[&str],
    ) -> anyhow::Result<Server> {
        let mut command = pinned(binary, cpu);
        command
            .args(["up", "--listen", "127.0.0.1:0", "--region", region])
            .args(extra_args)
            .arg("--data-dir")
            .arg(scratch.join(format!("nimbus-{tag}")))
            .env("NIMBUS_ROOT_ACCESS_KEY_ID", access_key_id)
            .env("NIMBUS_ROOT_SECRET_ACCESS_KEY", secret);
        let stderr = scratch.join(format!("nimbus-{tag}.stderr"));
        Server::start("nimbus", command, NIMBUS_BANNER, &stderr)
    }

    /// Starts the bare axum baseline — this same binary, `hello` subcommand —
    /// pinned to `cpu` if given.
    pub fn start_hello(scratch: &Path, tag: &str, cpu: Option<usize>) -> anyhow::Result<Server> {
        let this = std::env::current_exe().context("locate this binary")?;
        let mut command = pinned(&this, cpu);
        command.args(["hello", "--listen", "127.0.0.1:0"]);
        let stderr = scratch.join(format!("hello-{tag}.stderr"));
        Server::start("hello", command, hello::BANNER, &stderr)
    }

    /// Starts the bare Runtime API relay — this same binary, `relay`
    /// subcommand — running `command` with `env` as its runtime.
    pub fn start_relay(
        scratch: &Path,
        tag: &str,
        env: &[(String, String)],
        command: &[String],
        direct: bool,
    ) -> anyhow::Result<Server> {
        let this = std::env::current_exe().context("locate this binary")?;
        let mut relay = Command::new(this);
        relay.args(["relay", "--listen", "127.0.0.1:0"]);
        if direct {
            relay.arg("--direct");
        }
        for (name, value) in env {
            relay.arg("--env").arg(format!("{name}={value}"));
        }
        relay.arg("--").args(command);
        let stderr = scratch.join(format!("relay-{tag}.stderr"));
        Server::start("relay", relay, relay::BANNER, &stderr)
    }

    /// Spawns `command` and waits for the stdout line `banner` + address.
    fn start(
        name: &str,
        mut command: Command,
        banner: &'static str,
        stderr_path: &Path,
    ) -> anyhow::Result<Server> {
        let stderr = std::fs::File::create(stderr_path)
            .with_context(|| format!("create {}", stderr_path.display()))?;
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("start {name} ({command:?})"))?;
        let stdout = child.stdout.take().expect("stdout was piped above");
        // From here on the child is owned by `server`, whose drop kills it.
        let mut server = Server {
            child,
            address: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let (found, address) = mpsc::channel();
        // The reader keeps draining stdout after the banner so the child
        // never blocks on a full pipe; it ends when the child does.
        std::thread::spawn(move || {
            let mut found = Some(found);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix(banner)
                    && let Some(tx) = found.take()
                {
                    let _ = tx.send(rest.trim().to_string());
                }
            }
        });
        match address.recv_timeout(STARTUP_TIMEOUT) {
            Ok(text) => {
                server.address = text
                    .parse()
                    .with_context(|| format!("{name} printed an address {text:?}"))?;
                Ok(server)
            }
            Err(e) => {
                let why = match e {
                    mpsc::RecvTimeoutError::Timeout => {
                        format!("no banner within {STARTUP_TIMEOUT:?}")
                    }
                    mpsc::RecvTimeoutError::Disconnected => "exited before its banner".into(),
                };
                let log = std::fs::read(stderr_path).unwrap_or_default();
                let tail =
                    String::from_utf8_lossy(&log[log.len().saturating_sub(STDERR_TAIL_BYTES)..]);
                bail!("{name} did not start: {why}; its stderr ends:\n{tail}")
            }
        }
    }
}

/// A command running `program`, on `cpu` alone if given. `taskset` sets the
/// affinity and then execs the program, so the child is the program itself
/// and every thread it starts inherits the affinity.
pub fn pinned(program: &Path, cpu: Option<usize>) -> Command {
    match cpu {
        None => Command::new(program),
        Some(cpu) => {
            let mut command = Command::new("taskset");
            command.arg("--cpu-list").arg(cpu.to_string()).arg(program);
            command
        }
    }
}

/// How long a server has to stop on SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

impl Drop for Server {
    fn drop(&mut self) {
        // SIGTERM first: a nimbus server then removes its sandboxes' cgroups
        // from the host, which a SIGKILL leaves until the next start on the
        // same (here, temporary) data directory.
        // Reaped already (it exited): its pid may be another process's by now.
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill(2) on our own child, which try_wait just found
            // running and so not reaped.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let deadline = std::time::Instant::now() + STOP_GRACE;
            while std::time::Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
