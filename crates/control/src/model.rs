//! The function record as the control plane keeps it.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Default `MemorySize` in MB, as Lambda has it.
pub const MEMORY_SIZE_DEFAULT_MB: u32 = 128;
/// Default `Timeout` in seconds, as Lambda has it.
pub const TIMEOUT_DEFAULT_S: u32 = 3;
/// Default `/tmp` size in MB, as Lambda has it.
pub const EPHEMERAL_STORAGE_DEFAULT_MB: u32 = 512;

/// The runtimes a function may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Runtime {
    /// A WebAssembly core module or component run by the embedded wasmtime.
    Wasm,
    /// Lambda's OS-only runtime: the zip's `bootstrap` runs in a container
    /// sandbox and speaks the Runtime API.
    ProvidedAl2023,
    /// As `provided.al2023`, under its older name.
    ProvidedAl2,
    /// As `provided.al2023`, under its oldest name.
    Provided,
    /// Lambda's managed Python runtime `python3.<minor>`: the handler
    /// (`module.function`) runs under the platform's runtime client in a
    /// container sandbox, with the host's `python3.<minor>`.
    Python(u8),
}

/// The `python3.x` runtimes Lambda names, with their minor version.
const PYTHON_RUNTIMES: [(&str, u8); 6] = [
    ("python3.9", 9),
    ("python3.10", 10),
    ("python3.11", 11),
    ("python3.12", 12),
    ("python3.13", 13),
    ("python3.14", 14),
];

impl Runtime {
    /// Parses the `Runtime` field of a request.
    pub fn parse(name: &str) -> Result<Runtime, String> {
        match name {
            "wasm" => Ok(Runtime::Wasm),
            "provided.al2023" => Ok(Runtime::ProvidedAl2023),
            "provided.al2" => Ok(Runtime::ProvidedAl2),
            "provided" => Ok(Runtime::Provided),
            n => match PYTHON_RUNTIMES.iter().find(|(python, _)| *python == n) {
                Some(&(_, minor)) => Ok(Runtime::Python(minor)),
                None => Err(format!(
                    "Value {n} at 'runtime' failed to satisfy constraint: Member must be a runtime this server supports (wasm, provided.al2023, provided.al2, provided, python3.9 to python3.14)"
                )),
            },
        }
    }

    /// The name as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Wasm => "wasm",
            Runtime::ProvidedAl2023 => "provided.al2023",
            Runtime::ProvidedAl2 => "provided.al2",
            Runtime::Provided => "provided",
            Runtime::Python(minor) => PYTHON_RUNTIMES
                .iter()
                .find(|(_, m)| *m == minor)
                .map_or("python3", |(name, _)| name),
        }
    }

    /// Whether the runtime runs in a container sandbox (else in wasmtime).
    pub fn is_process(self) -> bool {
        !matches!(self, Runtime::Wasm)
    }

    /// Whether the package must hold an executable `bootstrap` (`provided.*`).
    pub fn needs_bootstrap(self) -> bool {
        matches!(
            self,
            Runtime::ProvidedAl2023 | Runtime::ProvidedAl2 | Runtime::Provided
        )
    }
}

impl TryFrom<String> for Runtime {
    type Error = String;
    fn try_from(name: String) -> Result<Runtime, String> {
        Runtime::parse(&name)
    }
}

impl From<Runtime> for String {
    fn from(runtime: Runtime) -> String {
        runtime.as_str().to_string()
    }
}

/// The configuration a user sets on a function (`$LATEST`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FunctionConfig {
    /// The function's name, unique per tenant.
    pub name: String,
    /// The runtime that executes the code.
    pub runtime: Runtime,
    /// The IAM role ARN: stored and echoed, grants nothing.
    pub role: String,
    /// For `wasm`: the `.wasm` file inside the package.
    pub handler: Option<String>,
    /// Free text.
    pub description: String,
    /// Wall-clock limit of one invocation, in seconds.
    pub timeout_s: u32,
    /// Memory limit in MB; also bounds a wasm guest's linear memory.
    pub memory_size_mb: u32,
    /// Size of `/tmp`, in MB.
    pub ephemeral_storage_mb: u32,
    /// Environment variables handed to the function.
    pub environment: BTreeMap<String, String>,
    /// Where an async event goes when every attempt failed
    /// (`DeadLetterConfig.TargetArn`: a built-in queue's ARN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_target: Option<String>,
}

/// A stored function: its configuration, its code and its revision.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FunctionRecord {
    /// The user's configuration.
    pub config: FunctionConfig,
    /// Monotonic revision; every update is a compare-and-set on it.
    pub revision: u64,
    /// Opaque id of this revision, Lambda's `RevisionId`.
    pub revision_id: String,
    /// Hex SHA-256 of the uploaded package (the artifact's address).
    pub code_sha256_hex: String,
    /// Size in bytes of the uploaded package.
    pub code_size: u64,
    /// Time of the last change, as Lambda formats it (`2026-11-25T06:15:37.000+0000`).
    pub last_modified: String,
    /// The number of the last version published (0: none yet). Versions are
    /// numbered 1, 2, … per function and a number is never reused, even
    /// after its version is deleted.
    #[serde(default)]
    pub last_version: u64,
    /// The function's tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

impl FunctionRecord {
    /// `CodeSha256` as Lambda reports it: the base64 of the package's SHA-256.
    pub fn code_sha256_base64(&self) -> String {
        base64_of_hex(&self.code_sha256_hex)
    }
}

impl VersionRecord {
    /// `CodeSha256` as Lambda reports it.
    pub fn code_sha256_base64(&self) -> String {
        base64_of_hex(&self.code_sha256_hex)
    }
}

fn base64_of_hex(hex_digest: &str) -> String {
    use base64::Engine as _;
    let raw = hex::decode(hex_digest).unwrap_or_default();
    base64::engine::general_purpose::STANDARD.encode(raw)
}

/// An immutable snapshot of a function's code and configuration, published
/// as version `version`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VersionRecord {
    /// The version's number.
    pub version: u64,
    /// The configuration as it was at publication (with the version's own
    /// description).
    pub config: FunctionConfig,
    /// Hex SHA-256 of the package.
    pub code_sha256_hex: String,
    /// Size in bytes of the package.
    pub code_size: u64,
    /// Lambda's `RevisionId` of the version.
    pub revision_id: String,
    /// Publication time.
    pub last_modified: String,
}

/// A named pointer to a version, optionally splitting traffic with a second.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AliasRecord {
    /// The alias' name (not all digits, so it never reads as a version).
    pub name: String,
    /// The version it points to: a number or `$LATEST`.
    pub function_version: String,
    /// Free text.
    pub description: String,
    /// A second version and the share of invocations (0.0–1.0) it gets.
    pub additional_version: Option<(String, f64)>,
    /// Monotonic revision; updates are compare-and-set on it.
    pub revision: u64,
    /// Lambda's `RevisionId`.
    pub revision_id: String,
}

/// Formats a time the way Lambda's `LastModified` does.
pub fn lambda_timestamp(at: time::OffsetDateTime) -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]+0000"
    );
    at.to_offset(time::UtcOffset::UTC)
        .format(&format)
        .unwrap_or_default()
}

/// A fresh `RevisionId`.
pub fn new_revision_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtimes_round_trip_through_their_names() {
        for name in [
            "wasm",
            "provided.al2023",
            "provided",
            "python3.9",
            "python3.14",
        ] {
            let runtime = Runtime::parse(name).unwrap();
            assert_eq!(runtime.as_str(), name);
            let json = serde_json::to_string(&runtime).unwrap();
            assert_eq!(serde_json::from_str::<Runtime>(&json).unwrap(), runtime);
        }
        assert_eq!(Runtime::parse("python3.11"), Ok(Runtime::Python(11)));
        assert!(
            Runtime::parse("python2.7")
                .unwrap_err()
                .contains("python2.7")
        );
        assert!(Runtime::parse("nodejs22.x").is_err());
        assert!(!Runtime::Python(11).needs_bootstrap() && Runtime::Provided.needs_bootstrap());
    }
}

/// Lambda's default `MaximumRetryAttempts` of an async invocation.
pub const MAXIMUM_RETRY_ATTEMPTS_DEFAULT: u32 = 2;
/// Lambda's default `MaximumEventAgeInSeconds` of an async invocation.
pub const MAXIMUM_EVENT_AGE_DEFAULT_S: u32 = 21_600;

/// How asynchronous invocations of a function, version or alias are
/// retried and where their records go (`FunctionEventInvokeConfig`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventInvokeConfig {
    /// The function's name.
    pub function: String,
    /// `$LATEST`, a version number or an alias name.
    pub qualifier: String,
    /// Retries after a function error, 0–2; unset means Lambda's default.
    pub maximum_retry_attempts: Option<u32>,
    /// How long an event may wait, 60–21,600 s; unset means the default.
    pub maximum_event_age_s: Option<u32>,
    /// Where a record of each success goes (an ARN).
    pub on_success: Option<String>,
    /// Where a record of each failure goes (an ARN).
    pub on_failure: Option<String>,
    /// When it was last set, in seconds since the Unix epoch.
    pub last_modified: f64,
}

impl EventInvokeConfig {
    /// The configuration in force where none was set.
    pub fn default_for(function: &str, qualifier: &str) -> EventInvokeConfig {
        EventInvokeConfig {
            function: function.to_string(),
            qualifier: qualifier.to_string(),
            maximum_retry_attempts: None,
            maximum_event_age_s: None,
            on_success: None,
            on_failure: None,
            last_modified: 0.0,
        }
    }

    /// Retries after a function error.
    pub fn retries(&self) -> u32 {
        self.maximum_retry_attempts
            .unwrap_or(MAXIMUM_RETRY_ATTEMPTS_DEFAULT)
    }

    /// How long an event may wait, in seconds.
    pub fn maximum_event_age_s(&self) -> u32 {
        self.maximum_event_age_s
            .unwrap_or(MAXIMUM_EVENT_AGE_DEFAULT_S)
    }
}
