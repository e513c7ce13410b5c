//! What a sandbox is started with.

use std::path::PathBuf;
use std::time::Duration;

use crate::limits;

/// Host-wide settings shared by every sandbox of one platform instance.
#[derive(Clone, Debug)]
pub struct HostConfig {
    /// Directory for per-sandbox state (root mount point, `/tmp` image);
    /// each sandbox gets `<state_dir>/<id>/`, removed at teardown.
    pub state_dir: PathBuf,
    /// Tag naming this platform instance's cgroups (`nimbus-<tag>`), so a
    /// sweep at start-up removes only what a predecessor on the same data
    /// dir left, never another server's sandboxes.
    pub tag: String,
    /// Unprivileged host uid (and gid) the function runs as.
    pub host_id: u32,
}

impl HostConfig {
    /// Settings with the default unprivileged host id.
    pub fn new(state_dir: impl Into<PathBuf>, tag: impl Into<String>) -> Self {
        HostConfig {
            state_dir: state_dir.into(),
            tag: tag.into(),
            host_id: limits::SANDBOX_HOST_ID_DEFAULT,
        }
    }
}

/// One sandbox: the function it runs and its limits.
#[derive(Clone, Debug)]
pub struct SandboxConfig {
    /// Unique id of the sandbox (ASCII letters, digits, `-`, `_`); names its
    /// cgroups and state directory.
    pub id: String,
    /// Host-wide settings.
    pub host: HostConfig,
    /// Directory holding the unpacked function code, mounted read-only at `/var/task`.
    pub code_dir: PathBuf,
    /// The command to exec inside the sandbox; `/var/task/bootstrap` for `provided.*`.
    pub command: Vec<String>,
    /// A host directory mounted read-only at `/var/runtime` (`LAMBDA_RUNTIME_DIR`):
    /// the runtime client of a managed runtime such as `python3.x`.
    pub runtime_dir: Option<PathBuf>,
    /// `AWS_LAMBDA_FUNCTION_NAME`.
    pub function_name: String,
    /// `AWS_LAMBDA_FUNCTION_VERSION` (`$LATEST` or a number).
    pub function_version: String,
    /// `_HANDLER`.
    pub handler: String,
    /// `AWS_REGION` and `AWS_DEFAULT_REGION`.
    pub region: String,
    /// MemorySize in MB: the memory limit, and the CPU weight in proportion.
    pub memory_mb: u32,
    /// EphemeralStorage in MB: the size of the disk mounted at `/tmp`.
    pub ephemeral_storage_mb: u32,
    /// Processes and threads the sandbox may hold at once.
    pub pids_max: u32,
    /// The function's own environment variables.
    pub environment: Vec<(String, String)>,
    /// Time allowed from exec to the first `/next`.
    pub init_timeout: Duration,
}

impl SandboxConfig {
    /// A `provided.*` sandbox running `<code_dir>/bootstrap` with Lambda's defaults.
    pub fn provided(id: impl Into<String>, host: HostConfig, code_dir: impl Into<PathBuf>) -> Self {
        SandboxConfig {
            id: id.into(),
            host,
            code_dir: code_dir.into(),
            command: vec!["/var/task/bootstrap".to_owned()],
            runtime_dir: None,
            function_name: "function".to_owned(),
            function_version: "$LATEST".to_owned(),
            handler: "bootstrap".to_owned(),
            region: "us-east-1".to_owned(),
            memory_mb: 128,
            ephemeral_storage_mb: limits::EPHEMERAL_STORAGE_MB_DEFAULT,
            pids_max: limits::PIDS_MAX_DEFAULT,
            environment: Vec::new(),
            init_timeout: limits::INIT_TIMEOUT_DEFAULT,
        }
    }

    /// The environment Lambda gives a runtime, then the function's own
    /// variables, which may override the defaults but not the reserved ones
    /// (the control plane refuses those at deploy; this keeps them right anyway).
    pub(crate) fn lambda_environment(&self) -> Vec<(String, String)> {
        let defaults = [
            ("PATH", "/usr/local/bin:/usr/bin:/bin:/var/task"),
            ("LD_LIBRARY_PATH", "/var/task:/var/task/lib:/opt/lib"),
            ("LANG", "en_US.UTF-8"),
            ("TZ", ":UTC"),
            ("HOME", "/tmp"),
        ];
        let mut env: Vec<(String, String)> = defaults
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        for (key, value) in &self.environment {
            if !RESERVED.contains(&key.as_str()) {
                env.retain(|(k, _)| k != key);
                env.push((key.clone(), value.clone()));
            }
        }
        let reserved = [
            (
                "AWS_LAMBDA_RUNTIME_API",
                format!("127.0.0.1:{}", limits::RUNTIME_API_PORT),
            ),
            ("_HANDLER", self.handler.clone()),
            ("LAMBDA_TASK_ROOT", "/var/task".to_owned()),
            ("LAMBDA_RUNTIME_DIR", "/var/runtime".to_owned()),
            ("AWS_LAMBDA_FUNCTION_NAME", self.function_name.clone()),
            ("AWS_LAMBDA_FUNCTION_VERSION", self.function_version.clone()),
            (
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
                self.memory_mb.to_string(),
            ),
            ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand".to_owned()),
            (
                "AWS_LAMBDA_LOG_GROUP_NAME",
                format!("/aws/lambda/{}", self.function_name),
            ),
            (
                "AWS_LAMBDA_LOG_STREAM_NAME",
                format!("{}/{}", self.function_version, self.id),
            ),
            ("AWS_REGION", self.region.clone()),
            ("AWS_DEFAULT_REGION", self.region.clone()),
            ("AWS_EXECUTION_ENV", "AWS_Lambda_nimbus".to_owned()),
        ];
        env.extend(reserved.into_iter().map(|(k, v)| (k.to_owned(), v)));
        env
    }
}

impl SandboxConfig {
    /// What a runtime started before its function is exec'd with: Lambda's
    /// environment without what names the function (its name, version,
    /// handler, memory, log names, region), which the handoff brings.
    pub(crate) fn runtime_environment(&self) -> Vec<(String, String)> {
        let mut env = self.lambda_environment();
        env.retain(|(k, _)| !NAMES_THE_FUNCTION.contains(&k.as_str()));
        env
    }
}

/// Reserved variables whose values depend on the function.
const NAMES_THE_FUNCTION: &[&str] = &[
    "_HANDLER",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_INITIALIZATION_TYPE",
    "AWS_LAMBDA_LOG_GROUP_NAME",
    "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
];

/// Variables the platform sets that a function's own variables may not
/// replace, as Lambda reserves them.
const RESERVED: &[&str] = &[
    "AWS_LAMBDA_RUNTIME_API",
    "_HANDLER",
    "_X_AMZN_TRACE_ID",
    "LAMBDA_TASK_ROOT",
    "LAMBDA_RUNTIME_DIR",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_INITIALIZATION_TYPE",
    "AWS_LAMBDA_LOG_GROUP_NAME",
    "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_EXECUTION_ENV",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_variables_override_defaults_but_not_reserved_ones() {
        let mut config = SandboxConfig::provided("id", HostConfig::new("/s", "t"), "/c");
        config.environment = vec![
            ("TZ".into(), "Europe/Paris".into()),
            ("AWS_REGION".into(), "mars-1".into()),
            ("MINE".into(), "1".into()),
        ];
        let env = config.lambda_environment();
        let get = |key: &str| {
            env.iter()
                .filter(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
                .collect::<Vec<_>>()
        };
        assert_eq!(get("TZ"), ["Europe/Paris"]);
        assert_eq!(get("AWS_REGION"), ["us-east-1"]);
        assert_eq!(get("MINE"), ["1"]);
    }

    #[test]
    fn a_runtime_started_ahead_gets_nothing_that_names_a_function() {
        let mut config = SandboxConfig::provided("id", HostConfig::new("/s", "t"), "/c");
        config.environment = vec![("PYTHONPATH".into(), "/var/task".into())];
        let env = config.runtime_environment();
        let keys: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
        for shared in [
            "AWS_LAMBDA_RUNTIME_API",
            "LAMBDA_TASK_ROOT",
            "PATH",
            "PYTHONPATH",
        ] {
            assert!(keys.contains(&shared), "{shared} missing from {keys:?}");
        }
        for named in NAMES_THE_FUNCTION {
            assert!(!keys.contains(named), "{named} in {keys:?}");
        }
    }
}
