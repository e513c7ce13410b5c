//! Message attributes: their rules (SQS's), and how they are stored.

use crate::QueueError;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One message attribute: a typed value the sender attaches to a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageAttribute {
    /// `String`, `Number` or `Binary`, optionally with a custom suffix
    /// (`String.json`).
    pub data_type: String,
    /// The value of a `String` or `Number` attribute.
    pub string_value: Option<String>,
    /// The value of a `Binary` attribute.
    pub binary_value: Option<Vec<u8>>,
}

/// Longest attribute name or data type, in bytes (SQS's).
const NAME_MAX_BYTES: usize = 256;

impl MessageAttribute {
    /// Whether the value is binary (`Binary` or `Binary.*`).
    pub fn is_binary(&self) -> bool {
        base_type(&self.data_type) == "Binary"
    }

    /// Checks the attribute against SQS's rules; returns the bytes it
    /// counts toward the message size (name, type and value).
    pub(crate) fn check(&self, name: &str) -> Result<usize, QueueError> {
        let invalid = |why: String| {
            QueueError::InvalidParameterValue(format!(
                "Message attribute {name:?} is invalid: {why}"
            ))
        };
        let name_ok = !name.is_empty()
            && name.len() <= NAME_MAX_BYTES
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            && !name.starts_with('.')
            && !name.ends_with('.')
            && !name.contains("..");
        if !name_ok {
            return Err(invalid("a name is 1 to 256 of A-Z, a-z, 0-9, _, - and ., not starting or ending with a period nor holding two in a row.".into()));
        }
        let lower = name.to_ascii_lowercase();
        if lower.starts_with("aws.") || lower.starts_with("amazon.") {
            return Err(invalid(
                "names starting with AWS. or Amazon. are reserved.".into(),
            ));
        }
        if self.data_type.len() > NAME_MAX_BYTES
            || !matches!(base_type(&self.data_type), "String" | "Number" | "Binary")
        {
            return Err(invalid(format!(
                "DataType {:?} is not String, Number or Binary (optionally with a .suffix).",
                self.data_type
            )));
        }
        let value_bytes = if self.is_binary() {
            match &self.binary_value {
                Some(v) if !v.is_empty() => v.len(),
                _ => {
                    return Err(invalid(
                        "a Binary attribute needs a non-empty BinaryValue.".into(),
                    ));
                }
            }
        } else {
            let value = match &self.string_value {
                Some(v) if !v.is_empty() => v,
                _ => {
                    return Err(invalid(format!(
                        "a {} attribute needs a non-empty StringValue.",
                        self.data_type
                    )));
                }
            };
            if base_type(&self.data_type) == "Number" && value.trim().parse::<f64>().is_err() {
                return Err(invalid(format!("{value:?} is not a number.")));
            }
            value.len()
        };
        Ok(name.len() + self.data_type.len() + value_bytes)
    }
}

fn base_type(data_type: &str) -> &str {
    data_type.split('.').next().unwrap_or_default()
}

/// The stored form: binary values in base64, so the column is JSON text.
#[derive(Serialize, Deserialize)]
struct Stored {
    t: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    s: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    b: Option<String>,
}

/// The attributes as the `attributes` column holds them (NULL when none).
pub(crate) fn to_column(attributes: &BTreeMap<String, MessageAttribute>) -> Option<String> {
    if attributes.is_empty() {
        return None;
    }
    let stored: BTreeMap<&str, Stored> = attributes
        .iter()
        .map(|(name, a)| {
            let stored = Stored {
                t: a.data_type.clone(),
                s: a.string_value.clone(),
                b: a.binary_value.as_ref().map(|b| STANDARD.encode(b)),
            };
            (name.as_str(), stored)
        })
        .collect();
    serde_json::to_string(&stored).ok()
}

/// Reads the `attributes` column back.
pub(crate) fn from_column(
    column: Option<&str>,
) -> Result<BTreeMap<String, MessageAttribute>, QueueError> {
    let Some(column) = column else {
        return Ok(BTreeMap::new());
    };
    let damaged =
        |e: String| QueueError::Engine(format!("stored message attributes are damaged: {e}"));
    let stored: BTreeMap<String, Stored> =
        serde_json::from_str(column).map_err(|e| damaged(e.to_string()))?;
    stored
        .into_iter()
        .map(|(name, s)| {
            let binary_value = match s.b {
                Some(b) => Some(STANDARD.decode(b).map_err(|e| damaged(e.to_string()))?),
                None => None,
            };
            let attribute = MessageAttribute {
                data_type: s.t,
                string_value: s.s,
                binary_value,
            };
            Ok((name, attribute))
        })
        .collect()
}
