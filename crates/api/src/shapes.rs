//! Lambda's response shapes, built from control-plane records.

use nimbus_control::{AliasRecord, FunctionConfig, FunctionRecord, VersionRecord};
use serde_json::{Value, json};

/// Identity of the region and account a response speaks for.
pub struct ArnContext<'a> {
    /// The region in ARNs.
    pub region: &'a str,
    /// The account (tenant) id in ARNs.
    pub account: &'a str,
}

impl ArnContext<'_> {
    /// `arn:aws:lambda:REGION:ACCOUNT:function:NAME`.
    pub fn function_arn(&self, name: &str) -> String {
        format!(
            "arn:aws:lambda:{}:{}:function:{name}",
            self.region, self.account
        )
    }

    /// The ARN qualified by a version or alias.
    pub fn qualified_arn(&self, name: &str, qualifier: &str) -> String {
        format!("{}:{qualifier}", self.function_arn(name))
    }
}

/// What a `FunctionConfiguration` shows: `$LATEST` or one version.
pub struct ConfigView<'a> {
    /// The configuration.
    pub config: &'a FunctionConfig,
    /// `$LATEST` or the version number.
    pub version: String,
    /// Hex SHA-256 of the package.
    pub code_sha256_base64: String,
    /// Package size in bytes.
    pub code_size: u64,
    /// Lambda's `LastModified`.
    pub last_modified: &'a str,
    /// Lambda's `RevisionId`.
    pub revision_id: &'a str,
}

impl<'a> ConfigView<'a> {
    /// The view of `$LATEST`.
    pub fn latest(record: &'a FunctionRecord) -> ConfigView<'a> {
        ConfigView {
            config: &record.config,
            version: "$LATEST".into(),
            code_sha256_base64: record.code_sha256_base64(),
            code_size: record.code_size,
            last_modified: &record.last_modified,
            revision_id: &record.revision_id,
        }
    }

    /// The view of a published version.
    pub fn version(record: &'a VersionRecord) -> ConfigView<'a> {
        ConfigView {
            config: &record.config,
            version: record.version.to_string(),
            code_sha256_base64: record.code_sha256_base64(),
            code_size: record.code_size,
            last_modified: &record.last_modified,
            revision_id: &record.revision_id,
        }
    }
}

/// A `FunctionConfiguration` object. `qualifier` is the one the caller named
/// (it qualifies `FunctionArn`); `$LATEST` is shown unqualified.
pub fn function_configuration(
    view: &ConfigView<'_>,
    arn: &ArnContext<'_>,
    qualifier: Option<&str>,
) -> Value {
    let c = view.config;
    let function_arn = match qualifier
        .or(Some(view.version.as_str()))
        .filter(|q| *q != "$LATEST")
    {
        Some(q) => arn.qualified_arn(&c.name, q),
        None => arn.function_arn(&c.name),
    };
    let mut out = json!({
        "FunctionName": c.name,
        "FunctionArn": function_arn,
        "Runtime": c.runtime.as_str(),
        "Role": c.role,
        "Handler": c.handler.clone().unwrap_or_default(),
        "CodeSize": view.code_size,
        "Description": c.description,
        "Timeout": c.timeout_s,
        "MemorySize": c.memory_size_mb,
        "LastModified": view.last_modified,
        "CodeSha256": view.code_sha256_base64,
        "Version": view.version,
        "TracingConfig": { "Mode": "PassThrough" },
        "RevisionId": view.revision_id,
        "State": "Active",
        "LastUpdateStatus": "Successful",
        "PackageType": "Zip",
        "Architectures": ["x86_64"],
        "EphemeralStorage": { "Size": c.ephemeral_storage_mb },
        "LoggingConfig": { "LogFormat": "Text", "LogGroup": format!("/aws/lambda/{}", c.name) },
    });
    if !c.environment.is_empty() {
        out["Environment"] = json!({ "Variables": c.environment });
    }
    if let Some(arn) = &c.dead_letter_target {
        out["DeadLetterConfig"] = json!({ "TargetArn": arn });
    }
    out
}

/// An `AliasConfiguration` object.
pub fn alias_configuration(function: &str, alias: &AliasRecord, arn: &ArnContext<'_>) -> Value {
    let mut out = json!({
        "AliasArn": arn.qualified_arn(function, &alias.name),
        "Name": alias.name,
        "FunctionVersion": alias.function_version,
        "Description": alias.description,
        "RevisionId": alias.revision_id,
    });
    if let Some((version, weight)) = &alias.additional_version {
        out["RoutingConfig"] = json!({ "AdditionalVersionWeights": { version.as_str(): weight } });
    }
    out
}
