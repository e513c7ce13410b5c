//! What a `Qualifier` names, and reading that target from the store.

use super::blocking;
use crate::Platform;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::shapes::ConfigView;
use axum::http::StatusCode;
use nimbus_control::validate::FunctionRef;
use nimbus_control::{FunctionRecord, VersionRecord};
use std::sync::Arc;

/// Longest alias name.
const ALIAS_NAME_MAX_CHARS: usize = 128;

/// A function version or alias, as a qualifier names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Qualifier {
    /// The mutable head.
    Latest,
    /// A published version.
    Version(u64),
    /// An alias.
    Alias(String),
}

/// Parses a qualifier: `$LATEST`, a version number, or an alias name.
pub fn qualifier(text: Option<&str>) -> Result<Qualifier, ApiError> {
    let Some(text) = text.filter(|t| !t.is_empty()) else {
        return Ok(Qualifier::Latest);
    };
    if text == "$LATEST" {
        return Ok(Qualifier::Latest);
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return match text.parse::<u64>() {
            Ok(n) if n > 0 => Ok(Qualifier::Version(n)),
            _ => Err(ApiError::invalid_parameter(format!(
                "Version {text:?} is not a version number"
            ))),
        };
    }
    alias_name(text)?;
    Ok(Qualifier::Alias(text.to_string()))
}

/// Checks an alias name against Lambda's pattern `(?!^[0-9]+$)([a-zA-Z0-9-_]+)`.
pub fn alias_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= ALIAS_NAME_MAX_CHARS
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && !name.bytes().all(|b| b.is_ascii_digit());
    if !ok {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "ValidationException",
            format!(
                "1 validation error detected: Value '{name}' at 'name' failed to satisfy constraint: Member must satisfy regular expression pattern: (?!^[0-9]+$)([a-zA-Z0-9-_]+)"
            ),
        ));
    }
    Ok(())
}

/// A configuration read from the store: `$LATEST` or a version.
pub enum Target {
    /// The head.
    Latest(FunctionRecord),
    /// A published version.
    Version(VersionRecord),
}

impl Target {
    /// The configuration view of the target.
    pub fn view(&self) -> ConfigView<'_> {
        match self {
            Target::Latest(r) => ConfigView::latest(r),
            Target::Version(v) => ConfigView::version(v),
        }
    }
}

/// Reads what `function` (with its qualifier) names; an alias is followed to
/// its primary version. Returns the target and the qualifier to show in ARNs.
pub async fn read_target(
    platform: &Arc<Platform>,
    caller: &Caller,
    function: &FunctionRef,
) -> Result<(Target, Option<String>), ApiError> {
    let wanted = qualifier(function.qualifier.as_deref())?;
    let (worker, tenant, name) = (
        platform.clone(),
        caller.account_id.clone(),
        function.name.clone(),
    );
    let found = blocking(move || {
        let store = &worker.store;
        let (version, shown) = match wanted {
            Qualifier::Latest => (Qualifier::Latest, None),
            Qualifier::Version(n) => (Qualifier::Version(n), None),
            Qualifier::Alias(alias) => match store.get_alias(&tenant, &name, &alias)? {
                None => return Ok(None),
                Some(a) => (qualifier(Some(&a.function_version))?, Some(alias)),
            },
        };
        let target = match version {
            Qualifier::Version(n) => store.get_version(&tenant, &name, n)?.map(Target::Version),
            _ => store.get(&tenant, &name)?.map(Target::Latest),
        };
        Ok(target.map(|t| (t, shown)))
    })
    .await?;
    found.ok_or_else(|| platform.function_not_found(caller, function))
}
