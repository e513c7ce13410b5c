//! Built-in queues with Amazon SQS's semantics, durable in SQLite.
//!
//! Every operation is a function on a [`rusqlite::Connection`] the caller
//! gives, with the caller's clock (`now_ms`, milliseconds since the Unix
//! epoch), so another part of the platform can enqueue inside its own
//! transaction on the same file (a `&Transaction` derefs to a
//! `&Connection`), and tests run in exact, injected time. [`Queues`] is the
//! service the API shares: its own connection, long polling, a sweep.
//!
//! A message is in one of three states, told apart by two columns:
//! *delayed* (never received, `visible_ms` in the future), *available*
//! (`visible_ms` has passed) and *in flight* (received, `visible_ms` in the
//! future). Every receive raises `receive_count` and draws a new receipt
//! token; a receipt handle names the message, the receive count and the
//! token, so only the latest receive's handle can delete the message or
//! change its visibility (the fence).
#![deny(missing_docs)]

/// The SQLite binding the operations take connections of (the same
/// version as the rest of the platform), for callers that name its types.
pub use rusqlite;

mod digest;
mod error;
mod messages;
mod queues;
mod receipt;
mod schema;
mod service;
mod settings;

pub use digest::{md5_of_attributes, md5_of_body};
pub use error::QueueError;
pub use messages::{
    DeleteOutcome, MessageAttribute, NewMessage, ReceiveOptions, ReceivedMessage, SentMessage,
    change_visibility, delete_message, receive, send, send_message, sweep_expired,
};
pub use queues::{
    QueueInfo, QueueStats, create_queue, delete_queue, get_queue, list_queues, purge_queue,
    queue_arn, queue_by_arn, queue_stats, set_queue_attributes,
};
pub use schema::{atomically, create_schema};
pub use service::{Clock, Queues};
pub use settings::{QueueSettings, validate_queue_name};

/// Longest a queue name may be, in characters (SQS's).
pub const QUEUE_NAME_MAX_CHARS: usize = 80;
/// Most messages one receive returns (SQS's MaxNumberOfMessages).
pub const RECEIVE_BATCH_MAX: u32 = 10;
/// Longest a receive may wait for a message, in seconds (SQS's).
pub const WAIT_TIME_MAX_S: u32 = 20;
/// Longest a message may stay invisible after a receive, in seconds (12 h).
pub const VISIBILITY_TIMEOUT_MAX_S: u32 = 43_200;
/// Longest a message may be delayed, in seconds (15 min).
pub const DELAY_MAX_S: u32 = 900;
/// Most messages in flight in one queue; beyond, a receive gets OverLimit
/// (SQS's figure for standard queues).
pub const IN_FLIGHT_MAX: u64 = 120_000;
/// Most message attributes on one message (SQS's).
pub const MESSAGE_ATTRIBUTES_MAX: usize = 10;
/// How long after a purge another purge of the same queue is refused, in ms
/// (SQS allows one purge per 60 s).
pub const PURGE_INTERVAL_MS: u64 = 60_000;
/// Most queue names one page of ListQueues holds (SQS's).
pub const LIST_PAGE_MAX: usize = 1_000;

#[cfg(test)]
mod tests;
