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
pub enum Runtime {
    /// A WebAssembly core module or component run by the embedded wasmtime.
    #[serde(rename = "wasm")]
    Wasm,
    /// Lambda's OS-only runtime: the zip's `bootstrap` runs in a container
    /// sandbox and speaks the Runtime API.
    #[serde(rename = "provided.al2023")]
    ProvidedAl2023,
    /// As `provided.al2023`, under its older name.
    #[serde(rename = "provided.al2")]
    ProvidedAl2,
    /// As `provided.al2023`, under its oldest name.
    #[serde(rename = "provided")]
    Provided,
}

impl Runtime {
    /// Parses the `Runtime` field of a request. Process runtimes
    /// (`provided.*`, `python3.x`) are recognised so their refusal can say why.
    pub fn parse(name: &str) -> Result<Runtime, String> {
        match name {
            "wasm" => Ok(Runtime::Wasm),
            "provided.al2023" => Ok(Runtime::ProvidedAl2023),
            "provided.al2" => Ok(Runtime::ProvidedAl2),
            "provided" => Ok(Runtime::Provided),
            n if n.starts_with("python") => Err(format!(
                "Runtime {n} needs a Python runtime client, which this server does not offer yet; use provided.al2023 with a bootstrap, or wasm"
            )),
            n => Err(format!(
                "Value {n} at 'runtime' failed to satisfy constraint: Member must be a runtime this server supports (wasm, provided.al2023, provided.al2, provided)"
            )),
        }
    }

    /// The name as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Wasm => "wasm",
            Runtime::ProvidedAl2023 => "provided.al2023",
            Runtime::ProvidedAl2 => "provided.al2",
            Runtime::Provided => "provided",
        }
    }

    /// Whether the runtime runs in a container sandbox (else in wasmtime).
    pub fn is_process(self) -> bool {
        !matches!(self, Runtime::Wasm)
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
