//! The container executor: a pool of hot sandboxes per function version.
//!
//! A sandbox whose function waits in `/next` after an invocation is *hot*
//! and serves the next invocation of the same version and revision; a miss
//! starts one from nothing (*cold*). Idle sandboxes are recycled after
//! [`IDLE_RECYCLE`], the host never holds more than [`SANDBOXES_MAX`], and a
//! sandbox that was killed (timeout, out of memory, crash) is never reused.

use crate::snapshot::FunctionSnapshot;
use nimbus_container::{
    HostConfig, InvokeOutcome, InvokeRequest, Sandbox, SandboxConfig, StartError,
};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Idle time after which a hot sandbox is shut down (Lambda keeps them
/// minutes; so do we).
pub const IDLE_RECYCLE: Duration = Duration::from_secs(10 * 60);
/// Most sandboxes alive at once on this host.
pub const SANDBOXES_MAX: usize = 64;

/// (tenant, function, version, revision): a sandbox only ever serves the
/// exact configuration it was started with.
type PoolKey = (String, String, String, u64);

struct Idle {
    sandbox: Sandbox,
    since: Instant,
}

/// Why an invocation could not get a sandbox.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// Every sandbox slot is busy.
    #[error("all {SANDBOXES_MAX} sandboxes of this host are busy")]
    Capacity,
    /// The function's own init failed: Lambda's error type and message, and
    /// the init log.
    #[error("{0}: {1}")]
    Init(String, String, Vec<u8>),
    /// The platform could not build the sandbox.
    #[error("the sandbox could not start: {0}")]
    Start(StartError),
    /// The sandbox failed in a way that is not the function's.
    #[error("the sandbox failed: {0}")]
    Invoke(String),
}

/// What a container invocation produced, and whether it was a cold start.
pub struct ContainerOutcome {
    /// The function's answer, log and measurements.
    pub outcome: InvokeOutcome,
    /// `Some(init)` when this invocation started the sandbox.
    pub init_duration: Option<Duration>,
}

/// Hot sandboxes, by function version.
pub struct ContainerPool {
    host: HostConfig,
    region: String,
    idle: Mutex<HashMap<PoolKey, Vec<Idle>>>,
    /// Sandboxes alive, idle or busy.
    live: AtomicUsize,
    next_id: AtomicU64,
}

impl ContainerPool {
    /// A pool whose sandboxes keep their state under `state_dir` and are
    /// tagged `tag` (so a restart on the same data dir sweeps only its own).
    /// Sweeps what a killed predecessor with the same tag left behind.
    pub fn open(state_dir: &Path, tag: &str, region: &str) -> Result<ContainerPool, String> {
        let host = HostConfig::new(state_dir, tag);
        let report = nimbus_container::sweep(&host).map_err(|e| e.to_string())?;
        tracing::info!(?report, "swept sandboxes left by a previous run");
        Ok(ContainerPool {
            host,
            region: region.to_string(),
            idle: Mutex::default(),
            live: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
        })
    }

    fn key(snapshot: &FunctionSnapshot) -> PoolKey {
        (
            snapshot.tenant.clone(),
            snapshot.name.clone(),
            snapshot.version.clone(),
            snapshot.revision,
        )
    }

    fn take_idle(&self, key: &PoolKey) -> Option<Sandbox> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.get_mut(key)?;
        let sandbox = list.pop().map(|i| i.sandbox);
        if list.is_empty() {
            idle.remove(key);
        }
        sandbox
    }

    /// Claims a slot for a new sandbox, evicting the longest-idle sandbox of
    /// any function when the host is full.
    async fn claim_slot(&self) -> Result<(), ContainerError> {
        if self.live.fetch_add(1, Ordering::AcqRel) < SANDBOXES_MAX {
            return Ok(());
        }
        let victim = {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            let oldest = idle
                .iter()
                .filter_map(|(k, list)| list.first().map(|i| (k.clone(), i.since)))
                .min_by_key(|(_, since)| *since)
                .map(|(k, _)| k);
            oldest.and_then(|k| {
                let list = idle.get_mut(&k)?;
                let victim = list.remove(0);
                if list.is_empty() {
                    idle.remove(&k);
                }
                Some(victim.sandbox)
            })
        };
        match victim {
            Some(sandbox) => {
                // The victim's slot becomes ours: live stays counted once.
                self.live.fetch_sub(1, Ordering::AcqRel);
                sandbox.shutdown().await;
                Ok(())
            }
            None => {
                self.live.fetch_sub(1, Ordering::AcqRel);
                Err(ContainerError::Capacity)
            }
        }
    }

    async fn start(
        &self,
        snapshot: &FunctionSnapshot,
        code_dir: &Path,
    ) -> Result<Sandbox, ContainerError> {
        self.claim_slot().await?;
        let id = format!("s{}", self.next_id.fetch_add(1, Ordering::Relaxed));
        let mut config = SandboxConfig::provided(id, self.host.clone(), code_dir);
        let c = &snapshot.config;
        config.function_name = c.name.clone();
        config.function_version = snapshot.version.clone();
        config.handler = c.handler.clone().unwrap_or_default();
        config.region = self.region.clone();
        config.memory_mb = c.memory_size_mb;
        config.ephemeral_storage_mb = c.ephemeral_storage_mb;
        config.environment = c
            .environment
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        match Sandbox::start(config).await {
            Ok(sandbox) => Ok(sandbox),
            Err(e) => {
                self.live.fetch_sub(1, Ordering::AcqRel);
                Err(match e.function_error() {
                    Some((kind, message, log)) => ContainerError::Init(
                        kind.to_string(),
                        message.to_string(),
                        log.as_bytes().to_vec(),
                    ),
                    None => ContainerError::Start(e),
                })
            }
        }
    }

    /// Runs one invocation on a hot sandbox of the snapshot's version, or a
    /// new one.
    pub async fn invoke(
        &self,
        snapshot: &FunctionSnapshot,
        code_dir: &Path,
        request: InvokeRequest,
    ) -> Result<ContainerOutcome, ContainerError> {
        let key = Self::key(snapshot);
        let (mut sandbox, init_duration) = match self.take_idle(&key) {
            Some(hot) => (hot, None),
            None => {
                let cold = self.start(snapshot, code_dir).await?;
                let init = cold.init_duration();
                (cold, Some(init))
            }
        };
        let result = sandbox.invoke(request).await;
        let reusable = matches!(&result, Ok(o) if !o.sandbox_lost) && sandbox.is_alive();
        if reusable {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            idle.entry(key).or_default().push(Idle {
                sandbox,
                since: Instant::now(),
            });
        } else {
            self.live.fetch_sub(1, Ordering::AcqRel);
            sandbox.shutdown().await;
        }
        match result {
            Ok(outcome) => Ok(ContainerOutcome {
                outcome,
                init_duration,
            }),
            Err(e) => Err(ContainerError::Invoke(e.to_string())),
        }
    }

    /// Shuts down idle sandboxes that are older than `max_idle`, or that
    /// belong to `(tenant, function)` when `retire` names it (the function
    /// changed or was deleted).
    pub async fn recycle(&self, max_idle: Duration, retire: Option<(&str, &str)>) {
        let now = Instant::now();
        let doomed: Vec<Sandbox> = {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            let mut doomed = Vec::new();
            idle.retain(|key, list| {
                let retired = retire.is_some_and(|(t, f)| key.0 == t && key.1 == f);
                let mut kept = Vec::new();
                for entry in list.drain(..) {
                    if retired || now.duration_since(entry.since) > max_idle {
                        doomed.push(entry.sandbox);
                    } else {
                        kept.push(entry);
                    }
                }
                *list = kept;
                !list.is_empty()
            });
            doomed
        };
        for sandbox in doomed {
            self.live.fetch_sub(1, Ordering::AcqRel);
            sandbox.shutdown().await;
        }
    }
}
