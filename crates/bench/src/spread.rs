//! Warm invokes spread over many functions: throughput and latency of
//! sync invocations sent to 1, 100 and 1,000 distinct wasm functions in
//! turn (Decision 14), each request signed once, on 2 cores. The target:
//! throughput falls no more than 2× from 1 function to 1,000.

use crate::api::Api;
use crate::process::Server;
use crate::report::Machine;
use crate::wrk::{self, Load, LoadResult};
use crate::{ACCESS_KEY_ID, PAYLOAD, REGION, SECRET_ACCESS_KEY, guest};
use anyhow::ensure;
use std::path::Path;
use std::time::Duration;

/// The function counts measured.
pub const COUNTS: [usize; 3] = [1, 100, 1_000];

/// One count's run.
pub struct Row {
    /// Distinct functions the requests went to.
    pub functions: usize,
    /// What wrk measured.
    pub result: LoadResult,
}

/// Deploys up to 1,000 copies of the echo guest on a fresh `nimbus up`,
/// then for each count runs `load` over that many of them.
pub fn measure(nimbus_bin: &Path, scratch: &Path, load: &Load) -> anyhow::Result<Vec<Row>> {
    let keys = (ACCESS_KEY_ID, SECRET_ACCESS_KEY);
    let nimbus = Server::start_nimbus(nimbus_bin, scratch, "spread", keys, REGION, None, &[])?;
    let api = Api::new(nimbus.address, ACCESS_KEY_ID, SECRET_ACCESS_KEY, REGION);
    let wasm = guest::echo_wasm()?;
    let name = |i: usize| format!("spread-{i}");
    let path = |i: usize| format!("/2015-03-31/functions/{}/invocations", name(i));
    eprintln!("deploying {} functions", COUNTS[COUNTS.len() - 1]);
    for i in 0..COUNTS[COUNTS.len() - 1] {
        api.create_function(&name(i), &wasm)?;
    }
    let answer = api.post(&path(0), PAYLOAD.as_bytes())?;
    ensure!(answer == PAYLOAD.as_bytes(), "the echo did not echo");
    let mut rows = Vec::new();
    for functions in COUNTS {
        eprintln!("{functions} functions: {:?} of load", load.duration);
        // Signed right before the run: a signature is good for 5 minutes.
        let targets = (0..functions)
            .map(|i| {
                let path = path(i);
                let headers = api.signed_headers("POST", &path, PAYLOAD.as_bytes())?;
                Ok((path, headers))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let result = wrk::measure_many(nimbus.address, &targets, PAYLOAD, load)?;
        rows.push(Row { functions, result });
    }
    Ok(rows)
}

/// The report, as markdown.
pub fn markdown(machine: &Machine, command: &str, load: &Load, rows: &[Row]) -> String {
    let mut md = crate::report::header("nimbus-bench spread", machine, command);
    md += &format!(
        "- load: wrk, {} connections on {} thread(s), {} s warm-up then {} s measured; every \
         connection sends to the functions in turn\n\n| functions | requests/s | p50 | p99 | max |\n\
         |---:|---:|---:|---:|---:|\n",
        load.connections,
        load.threads,
        load.warmup.as_secs(),
        load.duration.as_secs()
    );
    for row in rows {
        let r = &row.result;
        md += &format!(
            "| {} | {:.0} | {} µs | {} µs | {} µs |\n",
            row.functions,
            r.requests_per_s(),
            r.p50_us,
            r.p99_us,
            r.max_us
        );
    }
    if let (Some(one), Some(many)) = (rows.first(), rows.last()) {
        let fall = one.result.requests_per_s() / many.result.requests_per_s();
        md += &format!(
            "\nThroughput from {} to {} functions falls {fall:.2}× (target ≤ 2×: {}).\n",
            one.functions,
            many.functions,
            if fall <= 2.0 { "met" } else { "**missed**" }
        );
    }
    md
}

/// The load of a spread run.
pub fn load(connections: u32, duration: Duration) -> Load {
    Load {
        connections,
        threads: 1,
        warmup: Duration::from_secs(2),
        duration,
        cpu: None,
    }
}
