//! Load from `wrk`: one request, signed once, replayed on a fixed number of
//! keep-alive connections for a fixed time, with latency percentiles read
//! from wrk's own histogram by a Lua `done` hook (exact microseconds rather
//! than the rounded text of `--latency`).

use anyhow::{Context as _, bail, ensure};
use std::collections::HashMap;
use std::io::{ErrorKind, Read as _, Write as _};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A request slower than this counts as a timeout error (and fails the run).
const REQUEST_TIMEOUT_S: u64 = 5;
/// How long past its duration a wrk run may take before it is killed: its
/// start-up, connection set-up and the last requests' timeout.
const WRK_OVERRUN: Duration = Duration::from_secs(REQUEST_TIMEOUT_S + 10);
/// How often a running wrk is checked for having exited.
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// What the Lua hook's summary line starts with.
const SUMMARY_PREFIX: &str = "nimbus-bench:";

/// One shape of load.
pub struct Load {
    /// Open connections, each with one request in flight at a time.
    pub connections: u32,
    /// wrk threads the connections are spread over.
    pub threads: u32,
    /// Load before measuring, so the server's caches and pools are warm.
    pub warmup: Duration,
    /// Measured time.
    pub duration: Duration,
    /// The CPU wrk is pinned to, if any.
    pub cpu: Option<usize>,
}

/// What a measured run gave.
#[derive(Debug, Clone)]
pub struct LoadResult {
    /// Requests completed.
    pub requests: u64,
    /// Time the requests took, as wrk measured it.
    pub elapsed: Duration,
    /// Median latency, µs.
    pub p50_us: u64,
    /// 90th percentile, µs.
    pub p90_us: u64,
    /// 99th percentile, µs.
    pub p99_us: u64,
    /// 99.9th percentile, µs.
    pub p999_us: u64,
    /// Slowest request, µs.
    pub max_us: u64,
}

impl LoadResult {
    /// Completed requests per second.
    pub fn requests_per_s(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
}

/// wrk's version line; fails with how to install it if it is missing.
pub fn version() -> anyhow::Result<String> {
    match Command::new("wrk").arg("--version").output() {
        Ok(out) => Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or("wrk")
            .split(" Copyright")
            .next()
            .unwrap_or("wrk")
            .to_string()),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            bail!("wrk is not installed (on Debian: apt-get install -y wrk)")
        }
        Err(e) => Err(e).context("run wrk --version"),
    }
}

/// Warms the server up, then measures: POST `body` with `headers` to `path`.
pub fn measure(
    address: SocketAddr,
    path: &str,
    headers: &[(String, String)],
    body: &str,
    load: &Load,
) -> anyhow::Result<LoadResult> {
    measure_script(address, path, &lua_script(headers, body), load)
}

/// Warms the server up, then measures: POST `body` to each of `targets`
/// (path and its signed headers) in turn, on every connection.
pub fn measure_many(
    address: SocketAddr,
    targets: &[(String, Vec<(String, String)>)],
    body: &str,
    load: &Load,
) -> anyhow::Result<LoadResult> {
    let first = targets.first().context("no request to send")?;
    measure_script(address, &first.0, &lua_script_many(targets, body), load)
}

fn measure_script(
    address: SocketAddr,
    path: &str,
    lua: &str,
    load: &Load,
) -> anyhow::Result<LoadResult> {
    let mut script = tempfile::Builder::new()
        .suffix(".lua")
        .tempfile()
        .context("create the wrk script")?;
    script
        .write_all(lua.as_bytes())
        .context("write the wrk script")?;
    let url = format!("http://{address}{path}");
    let script = script.path().to_str().context("temp path is not UTF-8")?;
    if !load.warmup.is_zero() {
        run(&url, script, load, load.warmup)?;
    }
    run(&url, script, load, load.duration)
}

fn run(url: &str, script: &str, load: &Load, duration: Duration) -> anyhow::Result<LoadResult> {
    let child = crate::process::pinned(Path::new("wrk"), load.cpu)
        .arg(format!("--threads={}", load.threads))
        .arg(format!("--connections={}", load.connections))
        .arg(format!("--duration={}s", duration.as_secs().max(1)))
        .arg(format!("--timeout={REQUEST_TIMEOUT_S}s"))
        .args(["--latency", "--script", script, url])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("start wrk")?;
    let mut wrk = KillOnDrop(child);
    let deadline = Instant::now() + duration + WRK_OVERRUN;
    let status = loop {
        if let Some(status) = wrk.0.try_wait().context("wait for wrk")? {
            break status;
        }
        ensure!(
            Instant::now() < deadline,
            "wrk ran past {deadline:?}; killed"
        );
        std::thread::sleep(POLL_INTERVAL);
    };
    // wrk's output is a few hundred bytes: it fits the pipe, so reading it
    // after the exit cannot have blocked wrk.
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut s) = wrk.0.stdout.take() {
        s.read_to_string(&mut out).context("read wrk's output")?;
    }
    if let Some(mut s) = wrk.0.stderr.take() {
        s.read_to_string(&mut err).context("read wrk's errors")?;
    }
    ensure!(status.success(), "wrk failed ({status}): {err}{out}");
    parse(&out).with_context(|| format!("wrk said:\n{out}{err}"))
}

/// A Lua table of headers. wrk adds its own `Host` unless the table holds
/// that exact key; a second, differently spelled one would break the
/// signature.
fn lua_headers(headers: &[(String, String)]) -> String {
    let entries: Vec<String> = headers
        .iter()
        .map(|(name, value)| {
            let name = if name.eq_ignore_ascii_case("host") {
                "Host"
            } else {
                name
            };
            format!("[{}] = {}", lua_string(name), lua_string(value))
        })
        .collect();
    format!("{{ {} }}", entries.join(", "))
}

/// The Lua script: the request, and a `done` hook printing one line of
/// `key=value` figures.
fn lua_script(headers: &[(String, String)], body: &str) -> String {
    let mut lua = String::from("wrk.method = \"POST\"\n");
    lua.push_str(&format!("wrk.body = {}\n", lua_string(body)));
    lua.push_str(&format!("wrk.headers = {}\n", lua_headers(headers)));
    lua + &done_hook()
}

/// The Lua script that sends the `targets` in turn.
fn lua_script_many(targets: &[(String, Vec<(String, String)>)], body: &str) -> String {
    let mut lua = format!("local body = {}\nlocal targets = {{\n", lua_string(body));
    for (path, headers) in targets {
        lua.push_str(&format!(
            "  {{ {}, {} }},\n",
            lua_string(path),
            lua_headers(headers)
        ));
    }
    lua.push_str(
        "}\nlocal next_target = 0\nfunction request()\n  next_target = next_target % #targets + 1\n  \
         local t = targets[next_target]\n  return wrk.format(\"POST\", t[1], t[2], body)\nend\n",
    );
    lua + &done_hook()
}

/// The `done` hook printing one line of `key=value` figures.
fn done_hook() -> String {
    format!(
        r#"
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "{SUMMARY_PREFIX} requests=%d duration_us=%d p50_us=%d p90_us=%d p99_us=%d p999_us=%d max_us=%d errors=%d non_2xx=%d\n",
    summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max,
    e.connect + e.read + e.write + e.timeout, e.status))
end
"#
    )
}

/// `text` as a Lua string literal: printable ASCII kept, the rest escaped
/// as decimal bytes.
fn lua_string(text: &str) -> String {
    let mut out = String::from("\"");
    for b in text.bytes() {
        match b {
            b'"' | b'\\' => {
                out.push('\\');
                out.push(b as char);
            }
            b' '..=b'~' => out.push(b as char),
            _ => out.push_str(&format!("\\{b:03}")),
        }
    }
    out.push('"');
    out
}

fn parse(output: &str) -> anyhow::Result<LoadResult> {
    let line = output
        .lines()
        .find_map(|l| l.strip_prefix(SUMMARY_PREFIX))
        .context("no summary line")?;
    let figures: HashMap<&str, u64> = line
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| Ok((k, v.parse::<u64>().with_context(|| format!("{k}={v}"))?)))
        .collect::<anyhow::Result<_>>()?;
    let get = |k: &str| figures.get(k).copied().with_context(|| format!("no {k}"));
    let (errors, non_2xx) = (get("errors")?, get("non_2xx")?);
    // A run with failures measured something other than the invoke path.
    ensure!(
        errors == 0 && non_2xx == 0,
        "{errors} socket errors and {non_2xx} non-2xx answers"
    );
    let requests = get("requests")?;
    ensure!(requests > 0, "no request completed");
    Ok(LoadResult {
        requests,
        elapsed: Duration::from_micros(get("duration_us")?),
        p50_us: get("p50_us")?,
        p90_us: get("p90_us")?,
        p99_us: get("p99_us")?,
        p999_us: get("p999_us")?,
        max_us: get("max_us")?,
    })
}

/// A child process killed (and reaped) when dropped.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lua_strings_escape_quotes_and_control_bytes() {
        assert_eq!(lua_string(r#"{"a":"\"}"#), r#""{\"a\":\"\\\"}""#);
        assert_eq!(lua_string("a\nb"), r#""a\010b""#);
    }

    #[test]
    fn a_script_for_many_targets_sends_each_in_turn_with_its_own_headers() {
        let targets = vec![
            (
                "/a".to_string(),
                vec![("host".to_string(), "h".to_string())],
            ),
            (
                "/b".to_string(),
                vec![("authorization".to_string(), "sig-b".to_string())],
            ),
        ];
        let lua = lua_script_many(&targets, "{}");
        assert!(lua.contains(r#"{ "/a", { ["Host"] = "h" } },"#), "{lua}");
        assert!(
            lua.contains(r#"{ "/b", { ["authorization"] = "sig-b" } },"#),
            "{lua}"
        );
        assert!(
            lua.contains("next_target = next_target % #targets + 1"),
            "{lua}"
        );
        assert!(lua.contains("function done("), "{lua}");
    }

    #[test]
    fn summary_line_parses_and_failures_are_refused() {
        let ok = "Running 1s test\nnimbus-bench: requests=100 duration_us=1000000 p50_us=40 \
                  p90_us=50 p99_us=90 p999_us=120 max_us=300 errors=0 non_2xx=0\n";
        let r = parse(ok).unwrap();
        assert_eq!(
            (r.requests, r.p50_us, r.p99_us, r.max_us),
            (100, 40, 90, 300)
        );
        assert_eq!(r.requests_per_s(), 100.0);
        let failed = ok.replace("non_2xx=0", "non_2xx=3");
        assert!(
            parse(&failed)
                .unwrap_err()
                .to_string()
                .contains("3 non-2xx")
        );
        assert!(parse("no summary").is_err());
    }
}
