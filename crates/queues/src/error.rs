//! What can go wrong with a queue operation; each variant is one SQS error.

/// A queue operation's failure. The API maps each variant to SQS's error
/// name; the message is meant for the person who sent the request.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// No queue of that name in the tenant's account.
    #[error("The specified queue {0} does not exist.")]
    QueueDoesNotExist(String),
    /// CreateQueue named an existing queue with different attribute values.
    #[error(
        "A queue already exists with the same name and a different value for attribute {attribute}"
    )]
    QueueNameExists {
        /// The queue.
        queue: String,
        /// The first attribute whose value differs.
        attribute: String,
    },
    /// An attribute name SQS does not know, or that nimbus does not offer.
    #[error("{0}")]
    InvalidAttributeName(String),
    /// A known attribute with a value out of its range.
    #[error("Invalid value for the parameter {name}. Reason: {reason}")]
    InvalidAttributeValue {
        /// The attribute.
        name: String,
        /// What was wrong with the value.
        reason: String,
    },
    /// A request parameter out of range or malformed.
    #[error("{0}")]
    InvalidParameterValue(String),
    /// A required parameter is missing.
    #[error("The request must contain the parameter {0}.")]
    MissingParameter(&'static str),
    /// The message body holds characters SQS does not allow.
    #[error("Invalid characters found in the message body: {0}")]
    InvalidMessageContents(String),
    /// The receipt handle is not one this service issued.
    #[error("The input receipt handle \"{0}\" is not a valid receipt handle.")]
    ReceiptHandleIsInvalid(String),
    /// ChangeMessageVisibility on a message that is not in flight.
    #[error("The message referred to is not in flight.")]
    MessageNotInflight,
    /// A second purge within 60 s of the last.
    #[error("Only one PurgeQueue operation on {0} is allowed every 60 seconds.")]
    PurgeQueueInProgress(String),
    /// Too many messages in flight in the queue.
    #[error("Too many messages in flight in queue {0}: delete some before receiving more.")]
    OverLimit(String),
    /// A feature of SQS nimbus does not offer.
    #[error("{0}")]
    UnsupportedOperation(String),
    /// The store failed; not the caller's fault.
    #[error("queue store: {0}")]
    Engine(String),
}

impl From<rusqlite::Error> for QueueError {
    fn from(e: rusqlite::Error) -> QueueError {
        QueueError::Engine(e.to_string())
    }
}
