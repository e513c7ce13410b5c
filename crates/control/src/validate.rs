//! Validation rules, as Lambda applies them. Each failure carries the
//! message Lambda gives, so the front door only has to pick the error name.

use std::collections::BTreeMap;

/// Smallest `MemorySize`, in MB.
pub const MEMORY_SIZE_MIN_MB: u32 = 128;
/// Largest `MemorySize`, in MB.
pub const MEMORY_SIZE_MAX_MB: u32 = 10_240;
/// Shortest `Timeout`, in seconds.
pub const TIMEOUT_MIN_S: u32 = 1;
/// Longest `Timeout`, in seconds.
pub const TIMEOUT_MAX_S: u32 = 900;
/// Smallest `EphemeralStorage`, in MB.
pub const EPHEMERAL_STORAGE_MIN_MB: u32 = 512;
/// Largest `EphemeralStorage`, in MB.
pub const EPHEMERAL_STORAGE_MAX_MB: u32 = 10_240;
/// Total size of all environment variables (keys and values), in bytes.
pub const ENVIRONMENT_TOTAL_MAX_BYTES: usize = 4 * 1024;
/// Longest function name.
pub const FUNCTION_NAME_MAX_CHARS: usize = 64;
/// Longest `Description`.
pub const DESCRIPTION_MAX_CHARS: usize = 256;

/// A rule that a request broke; `field` is the API's camelCase member name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// A member failed a model constraint (Lambda answers `ValidationException`).
    #[error(
        "1 validation error detected: Value '{value}' at '{field}' failed to satisfy constraint: {constraint}"
    )]
    Constraint {
        /// The member's name.
        field: &'static str,
        /// The value given.
        value: String,
        /// What the model requires.
        constraint: String,
    },
    /// A value is well-formed but not acceptable (`InvalidParameterValueException`).
    #[error("{0}")]
    Parameter(String),
}

/// A function named by a request: its name and the qualifier, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionRef {
    /// The bare function name.
    pub name: String,
    /// A version or alias, from `name:qualifier` or a qualified ARN.
    pub qualifier: Option<String>,
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

fn is_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= FUNCTION_NAME_MAX_CHARS && s.chars().all(is_name_char)
}

fn is_qualifier(s: &str) -> bool {
    s == "$LATEST" || (!s.is_empty() && s.len() <= 128 && s.chars().all(is_name_char))
}

/// Parses a `FunctionName` member: a name, `name:qualifier`, a partial ARN
/// (`123456789012:function:name`) or a full ARN.
pub fn function_ref(input: &str) -> Result<FunctionRef, Invalid> {
    let invalid = || {
        Invalid::Constraint {
        field: "functionName",
        value: input.to_string(),
        constraint: "Member must satisfy regular expression pattern: (arn:(aws[a-zA-Z-]*)?:lambda:)?([a-z]{2}(-gov)?-[a-z]+-\\d{1}:)?(\\d{12}:)?(function:)?([a-zA-Z0-9-_]+)(:(\\$LATEST|[a-zA-Z0-9-_]+))?".into(),
    }
    };
    let parts: Vec<&str> = input.split(':').collect();
    let (name, qualifier) = match parts.as_slice() {
        [name] => (*name, None),
        [name, q] => (*name, Some(*q)),
        [account, "function", name] if is_account(account) => (*name, None),
        [account, "function", name, q] if is_account(account) => (*name, Some(*q)),
        [
            "arn",
            partition,
            "lambda",
            region,
            account,
            "function",
            name,
            rest @ ..,
        ] if partition.starts_with("aws") && is_region(region) && is_account(account) => match rest
        {
            [] => (*name, None),
            [q] => (*name, Some(*q)),
            _ => return Err(invalid()),
        },
        _ => return Err(invalid()),
    };
    if !is_name(name) || !qualifier.is_none_or(is_qualifier) {
        return Err(invalid());
    }
    Ok(FunctionRef {
        name: name.to_string(),
        qualifier: qualifier.map(str::to_string),
    })
}

fn is_account(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

fn is_region(s: &str) -> bool {
    let mut parts = s.split('-');
    let geo = parts.next().unwrap_or("");
    let rest: Vec<&str> = parts.collect();
    geo.len() == 2
        && geo.bytes().all(|b| b.is_ascii_lowercase())
        && rest.len() >= 2
        && rest
            .last()
            .is_some_and(|n| n.len() == 1 && n.bytes().all(|b| b.is_ascii_digit()))
}

fn range(field: &'static str, value: i64, min: u32, max: u32) -> Result<u32, Invalid> {
    if value < i64::from(min) {
        return Err(Invalid::Constraint {
            field,
            value: value.to_string(),
            constraint: format!("Member must have value greater than or equal to {min}"),
        });
    }
    if value > i64::from(max) {
        return Err(Invalid::Constraint {
            field,
            value: value.to_string(),
            constraint: format!("Member must have value less than or equal to {max}"),
        });
    }
    Ok(value as u32)
}

/// Checks `MemorySize`.
pub fn memory_size(mb: i64) -> Result<u32, Invalid> {
    range("memorySize", mb, MEMORY_SIZE_MIN_MB, MEMORY_SIZE_MAX_MB)
}

/// Checks `Timeout`.
pub fn timeout(s: i64) -> Result<u32, Invalid> {
    range("timeout", s, TIMEOUT_MIN_S, TIMEOUT_MAX_S)
}

/// Checks `EphemeralStorage.Size`.
pub fn ephemeral_storage(mb: i64) -> Result<u32, Invalid> {
    range(
        "ephemeralStorage.size",
        mb,
        EPHEMERAL_STORAGE_MIN_MB,
        EPHEMERAL_STORAGE_MAX_MB,
    )
}

/// Checks `Description`.
pub fn description(text: &str) -> Result<(), Invalid> {
    if text.chars().count() > DESCRIPTION_MAX_CHARS {
        return Err(Invalid::Constraint {
            field: "description",
            value: text.to_string(),
            constraint: format!(
                "Member must have length less than or equal to {DESCRIPTION_MAX_CHARS}"
            ),
        });
    }
    Ok(())
}

/// Variables the platform sets itself; a function may not override them.
pub const RESERVED_ENVIRONMENT_KEYS: &[&str] = &[
    "_HANDLER",
    "_X_AMZN_TRACE_ID",
    "AWS_ACCESS_KEY",
    "AWS_ACCESS_KEY_ID",
    "AWS_DEFAULT_REGION",
    "AWS_EXECUTION_ENV",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_INITIALIZATION_TYPE",
    "AWS_LAMBDA_LOG_GROUP_NAME",
    "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_LAMBDA_RUNTIME_API",
    "AWS_REGION",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SECRET_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_XRAY_CONTEXT_MISSING",
    "AWS_XRAY_DAEMON_ADDRESS",
    "LAMBDA_RUNTIME_DIR",
    "LAMBDA_TASK_ROOT",
    "TZ",
];

/// Checks `Environment.Variables`: key names as Lambda allows them, no
/// reserved keys, and the 4 KB total Lambda enforces.
pub fn environment(vars: &BTreeMap<String, String>) -> Result<(), Invalid> {
    let reserved: Vec<&str> = vars
        .keys()
        .map(String::as_str)
        .filter(|k| RESERVED_ENVIRONMENT_KEYS.contains(k))
        .collect();
    if !reserved.is_empty() {
        return Err(Invalid::Parameter(format!(
            "Lambda was unable to configure your environment variables because the environment variables you have provided contains reserved keys that are currently not supported for modification. Reserved keys used in this request: {}",
            reserved.join(", ")
        )));
    }
    for key in vars.keys() {
        let mut chars = key.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
        if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(Invalid::Constraint {
                field: "environment.variables",
                value: key.clone(),
                constraint: "Member must satisfy regular expression pattern: [a-zA-Z]([a-zA-Z0-9_])+ for each key".into(),
            });
        }
    }
    let total: usize = vars.iter().map(|(k, v)| k.len() + v.len()).sum();
    if total > ENVIRONMENT_TOTAL_MAX_BYTES {
        return Err(Invalid::Parameter(format!(
            "Lambda was unable to configure your environment variables because the environment variables you have provided exceeded the 4KB limit. String measured: {total} bytes"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_refs_in_every_form() {
        let plain = function_ref("echo").unwrap();
        assert_eq!((plain.name.as_str(), plain.qualifier), ("echo", None));
        let q = function_ref("echo:$LATEST").unwrap();
        assert_eq!(q.qualifier.as_deref(), Some("$LATEST"));
        let partial = function_ref("123456789012:function:echo").unwrap();
        assert_eq!(partial.name, "echo");
        let arn = function_ref("arn:aws:lambda:us-east-1:123456789012:function:echo:live").unwrap();
        assert_eq!(
            (arn.name.as_str(), arn.qualifier.as_deref()),
            ("echo", Some("live"))
        );
    }

    #[test]
    fn bad_names_are_refused() {
        for bad in [
            "",
            "has space",
            "a/b",
            &"x".repeat(65),
            "arn:aws:s3:::bucket",
            "a:b:c",
        ] {
            assert!(function_ref(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn ranges_name_the_bound() {
        assert!(memory_size(128).is_ok() && memory_size(10_240).is_ok());
        let err = memory_size(127).unwrap_err().to_string();
        assert!(
            err.contains("memorySize") && err.contains("greater than or equal to 128"),
            "{err}"
        );
        assert!(timeout(0).is_err() && timeout(901).is_err() && timeout(900).is_ok());
    }

    #[test]
    fn environment_limits() {
        let mut vars = BTreeMap::new();
        vars.insert("GOOD_KEY".to_string(), "v".to_string());
        assert!(environment(&vars).is_ok());
        vars.insert("1bad".to_string(), "v".to_string());
        assert!(environment(&vars).is_err());
        let reserved = BTreeMap::from([("AWS_ACCESS_KEY_ID".to_string(), "x".to_string())]);
        assert!(
            matches!(environment(&reserved), Err(Invalid::Parameter(m)) if m.contains("AWS_ACCESS_KEY_ID"))
        );
        let mut big = BTreeMap::new();
        big.insert("K".to_string(), "v".repeat(4096));
        assert!(matches!(environment(&big), Err(Invalid::Parameter(_))));
    }
}
