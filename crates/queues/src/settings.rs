//! A queue's settable attributes, their ranges and defaults (SQS's), and
//! the rules for queue names.

use crate::QueueError;

/// The attributes of a queue a caller sets. Seconds and bytes, as SQS
/// names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueSettings {
    /// How long a received message stays invisible to other receives.
    pub visibility_timeout_s: u32,
    /// How long a message is kept; older ones are never delivered.
    pub retention_s: u32,
    /// How long a new message stays hidden before its first delivery.
    pub delay_s: u32,
    /// How long a receive that names no wait time waits for a message.
    pub receive_wait_s: u32,
    /// The largest message body plus attributes accepted.
    pub max_message_bytes: u32,
}

impl Default for QueueSettings {
    fn default() -> QueueSettings {
        QueueSettings {
            visibility_timeout_s: 30,
            retention_s: 345_600,
            delay_s: 0,
            receive_wait_s: 0,
            max_message_bytes: 1_048_576,
        }
    }
}

/// One settable attribute: its name, range and place in [`QueueSettings`].
struct Setting {
    name: &'static str,
    min: u32,
    max: u32,
    field: fn(&mut QueueSettings) -> &mut u32,
}

const SETTINGS: &[Setting] = &[
    Setting {
        name: "VisibilityTimeout",
        min: 0,
        max: crate::VISIBILITY_TIMEOUT_MAX_S,
        field: |s| &mut s.visibility_timeout_s,
    },
    Setting {
        name: "MessageRetentionPeriod",
        min: 60,
        max: 1_209_600,
        field: |s| &mut s.retention_s,
    },
    Setting {
        name: "DelaySeconds",
        min: 0,
        max: crate::DELAY_MAX_S,
        field: |s| &mut s.delay_s,
    },
    Setting {
        name: "ReceiveMessageWaitTimeSeconds",
        min: 0,
        max: crate::WAIT_TIME_MAX_S,
        field: |s| &mut s.receive_wait_s,
    },
    Setting {
        name: "MaximumMessageSize",
        min: 1_024,
        max: 1_048_576,
        field: |s| &mut s.max_message_bytes,
    },
];

/// Attributes SQS has that nimbus does not offer: naming one in a write is
/// refused with this explanation rather than silently ignored.
const UNOFFERED: &[&str] = &[
    "Policy",
    "RedrivePolicy",
    "RedriveAllowPolicy",
    "FifoQueue",
    "ContentBasedDeduplication",
    "DeduplicationScope",
    "FifoThroughputLimit",
    "KmsMasterKeyId",
    "KmsDataKeyReusePeriodSeconds",
    "SqsManagedSseEnabled",
];

impl QueueSettings {
    /// Sets one attribute from its string value, checking name and range.
    pub fn apply(&mut self, name: &str, value: &str) -> Result<(), QueueError> {
        let Some(setting) = SETTINGS.iter().find(|s| s.name == name) else {
            if UNOFFERED.contains(&name) {
                return Err(QueueError::InvalidAttributeName(format!(
                    "The attribute {name} is not offered by nimbus queues."
                )));
            }
            return Err(QueueError::InvalidAttributeName(format!(
                "Unknown Attribute {name}."
            )));
        };
        let out_of_range = || QueueError::InvalidAttributeValue {
            name: name.to_string(),
            reason: format!(
                "{name} must be an integer from {} to {}, not {value:?}.",
                setting.min, setting.max
            ),
        };
        let parsed: u32 = value.trim().parse().map_err(|_| out_of_range())?;
        if !(setting.min..=setting.max).contains(&parsed) {
            return Err(out_of_range());
        }
        *(setting.field)(self) = parsed;
        Ok(())
    }

    /// The value of a settable attribute, as SQS prints it; `None` if the
    /// name is not one.
    pub fn value_of(&self, name: &str) -> Option<String> {
        let mut copy = *self;
        SETTINGS
            .iter()
            .find(|s| s.name == name)
            .map(|s| (s.field)(&mut copy).to_string())
    }

    /// The names of the settable attributes.
    pub fn names() -> impl Iterator<Item = &'static str> {
        SETTINGS.iter().map(|s| s.name)
    }
}

/// Checks a queue name: 1 to 80 of `[A-Za-z0-9_-]`. FIFO queues (`.fifo`)
/// are not offered.
pub fn validate_queue_name(name: &str) -> Result<(), QueueError> {
    if name.ends_with(".fifo") {
        return Err(QueueError::UnsupportedOperation(format!(
            "FIFO queues are not offered by nimbus: {name:?} names one (.fifo). Use a standard queue."
        )));
    }
    let valid_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if name.is_empty() || name.len() > crate::QUEUE_NAME_MAX_CHARS || !valid_chars {
        return Err(QueueError::InvalidParameterValue(format!(
            "Invalid queue name {name:?}: can only include alphanumeric characters, hyphens, or underscores, 1 to 80 in length."
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_checked() {
        let mut s = QueueSettings::default();
        s.apply("VisibilityTimeout", "43200").unwrap();
        assert_eq!(s.visibility_timeout_s, 43_200);
        assert!(matches!(
            s.apply("VisibilityTimeout", "43201"),
            Err(QueueError::InvalidAttributeValue { .. })
        ));
        assert!(matches!(
            s.apply("MessageRetentionPeriod", "59"),
            Err(QueueError::InvalidAttributeValue { .. })
        ));
        assert!(matches!(
            s.apply("DelaySeconds", "ten"),
            Err(QueueError::InvalidAttributeValue { .. })
        ));
        assert!(matches!(
            s.apply("Nope", "1"),
            Err(QueueError::InvalidAttributeName(_))
        ));
        assert!(matches!(
            s.apply("FifoQueue", "true"),
            Err(QueueError::InvalidAttributeName(_))
        ));
        assert_eq!(s.value_of("VisibilityTimeout").as_deref(), Some("43200"));
        assert_eq!(s.value_of("QueueArn"), None);
    }

    #[test]
    fn names_are_checked() {
        validate_queue_name("a-b_C9").unwrap();
        validate_queue_name(&"x".repeat(80)).unwrap();
        assert!(validate_queue_name("").is_err());
        assert!(validate_queue_name(&"x".repeat(81)).is_err());
        assert!(validate_queue_name("a.b").is_err());
        assert!(matches!(
            validate_queue_name("q.fifo"),
            Err(QueueError::UnsupportedOperation(_))
        ));
    }
}
