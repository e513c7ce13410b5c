//! Lambda's response shapes, built from control-plane records.

use nimbus_control::FunctionRecord;
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
}

/// A `FunctionConfiguration` object.
pub fn function_configuration(record: &FunctionRecord, arn: &ArnContext<'_>) -> Value {
    let c = &record.config;
    let mut out = json!({
        "FunctionName": c.name,
        "FunctionArn": arn.function_arn(&c.name),
        "Runtime": c.runtime.as_str(),
        "Role": c.role,
        "Handler": c.handler.clone().unwrap_or_default(),
        "CodeSize": record.code_size,
        "Description": c.description,
        "Timeout": c.timeout_s,
        "MemorySize": c.memory_size_mb,
        "LastModified": record.last_modified,
        "CodeSha256": record.code_sha256_base64(),
        "Version": "$LATEST",
        "TracingConfig": { "Mode": "PassThrough" },
        "RevisionId": record.revision_id,
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
    out
}
