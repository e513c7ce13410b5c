//! The HTTP half: `nimbus up` and the bare baseline under the same `wrk`
//! load, in two placements of the processes on the machine's cores.
//!
//! *Spread* leaves placement to the scheduler, as a deployment would. On a
//! virtual machine every wake-up of an idle core is a round trip through the
//! hypervisor, so there the figures are dominated by how often a request
//! crosses cores. *One core* pins `wrk` and the server to one CPU: nothing
//! crosses cores, every microsecond is CPU work of one of the two, and the
//! difference between the servers is the CPU cost of what nimbus adds.

use crate::api::{self, Api};
use crate::process::Server;
use crate::wrk::{self, LoadResult};
use crate::{ACCESS_KEY_ID, FUNCTION_NAME, PAYLOAD, REGION, SECRET_ACCESS_KEY, guest};
use anyhow::ensure;
use std::path::Path;
use std::time::Duration;

/// Where the load generator and the servers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Wherever the scheduler puts them.
    Spread,
    /// All on this CPU.
    OneCore(usize),
}

impl Layout {
    /// The CPU everything is pinned to, if any.
    pub fn cpu(self) -> Option<usize> {
        match self {
            Layout::Spread => None,
            Layout::OneCore(cpu) => Some(cpu),
        }
    }

    /// A short name for tables.
    pub fn name(self) -> String {
        match self {
            Layout::Spread => "spread".into(),
            Layout::OneCore(cpu) => format!("one core (CPU {cpu})"),
        }
    }
}

/// What to run.
pub struct Plan {
    /// Times the whole sequence runs.
    pub rounds: u32,
    /// Connection counts, latency run first.
    pub connections: [u32; 2],
    /// `wrk` threads (never more than connections).
    pub wrk_threads: u32,
    /// Unmeasured load before each run.
    pub warmup: Duration,
    /// Measured time of each run.
    pub duration: Duration,
    /// The placements measured.
    pub layouts: Vec<Layout>,
}

/// The same load against both servers in one layout.
pub struct LoadPair {
    /// Where the processes ran.
    pub layout: Layout,
    /// Connections of the run.
    pub connections: u32,
    /// The bare axum baseline.
    pub bare: LoadResult,
    /// `nimbus up` invoking the echo.
    pub nimbus: LoadResult,
}

/// One layout's two servers, with the echo deployed and checked.
struct Servers {
    layout: Layout,
    nimbus: Server,
    bare: Server,
    api: Api,
}

/// Runs `plan`; every server started is killed before this returns.
pub fn measure(plan: &Plan, nimbus_bin: &Path, scratch: &Path) -> anyhow::Result<Vec<LoadPair>> {
    let servers = plan
        .layouts
        .iter()
        .map(|&layout| Servers::start(layout, nimbus_bin, scratch))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut loads = Vec::new();
    // Rounds repeat the whole sequence, so a burst of load from elsewhere
    // on the machine skews one round, not one server's or one layout's.
    for round in 1..=plan.rounds {
        for s in &servers {
            for connections in plan.connections {
                let load = wrk::Load {
                    connections,
                    threads: plan.wrk_threads.min(connections),
                    warmup: plan.warmup,
                    duration: plan.duration,
                    cpu: s.layout.cpu(),
                };
                let label = format!("round {round}, {}, {connections} conn.", s.layout.name());
                eprintln!("{label}: bare axum");
                let bare = s.load(&s.bare, &load)?;
                eprintln!("{label}: nimbus");
                let nimbus = s.load(&s.nimbus, &load)?;
                loads.push(LoadPair {
                    layout: s.layout,
                    connections,
                    bare,
                    nimbus,
                });
            }
        }
    }
    Ok(loads)
}

impl Servers {
    fn start(layout: Layout, nimbus_bin: &Path, scratch: &Path) -> anyhow::Result<Servers> {
        let tag = match layout.cpu() {
            None => "spread".to_string(),
            Some(cpu) => format!("cpu{cpu}"),
        };
        let keys = (ACCESS_KEY_ID, SECRET_ACCESS_KEY);
        let nimbus =
            Server::start_nimbus(nimbus_bin, scratch, &tag, keys, REGION, layout.cpu(), &[])?;
        let bare = Server::start_hello(scratch, &tag, layout.cpu())?;
        eprintln!(
            "{}: nimbus on {}, bare axum on {}",
            layout.name(),
            nimbus.address,
            bare.address
        );
        let api = Api::new(nimbus.address, ACCESS_KEY_ID, SECRET_ACCESS_KEY, REGION);
        api.create_function(FUNCTION_NAME, &guest::echo_wasm()?)?;
        // Both servers must answer the payload with itself before any load:
        // a load run of fast errors would measure nothing useful.
        let answer = api.post(&invoke_path(), PAYLOAD.as_bytes())?;
        ensure!(
            answer == PAYLOAD.as_bytes(),
            "nimbus answered the echo with {:?}",
            String::from_utf8_lossy(&answer)
        );
        let answer = api::post_unsigned(bare.address, &invoke_path(), PAYLOAD.as_bytes())?;
        ensure!(
            answer == PAYLOAD.as_bytes(),
            "the bare server does not echo"
        );
        Ok(Servers {
            layout,
            nimbus,
            bare,
            api,
        })
    }

    /// One warmed-up, measured load run against `server`. The request is
    /// signed right before the run, so the signature (good for 5 minutes)
    /// outlasts it; the baseline gets the same signed headers, so both
    /// servers parse, and send back, the same bytes.
    fn load(&self, server: &Server, load: &wrk::Load) -> anyhow::Result<LoadResult> {
        let path = invoke_path();
        let headers = self.api.signed_headers("POST", &path, PAYLOAD.as_bytes())?;
        wrk::measure(server.address, &path, &headers, PAYLOAD, load)
    }
}

fn invoke_path() -> String {
    format!("/2015-03-31/functions/{FUNCTION_NAME}/invocations")
}
