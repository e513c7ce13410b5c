//! What the journal holds: an accepted invocation (an immutable fact) and
//! its mutable dispatch state, each under a checksum of its own.

use std::fmt;

/// An async invocation as the front door accepted it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewInvocation {
    /// The tenant (account id).
    pub tenant: String,
    /// The function's name.
    pub function: String,
    /// The qualifier as invoked: `$LATEST`, a version number or an alias.
    /// Its event-invoke configuration applies.
    pub qualifier: String,
    /// The version it was routed to at accept; every attempt runs this one.
    pub version: String,
    /// The event.
    pub payload: Vec<u8>,
    /// nimbus' `X-Nimbus-Idempotency-Key`, if the caller gave one.
    pub idempotency_key: Option<String>,
}

/// The answer to an accept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Accepted {
    /// Durably committed under a new id.
    New {
        /// The invocation's id (the request id the caller gets).
        id: String,
    },
    /// The idempotency key was seen for this function within its window:
    /// nothing new was stored; this is the first request's id.
    Repeat {
        /// The first request's id.
        id: String,
    },
}

impl Accepted {
    /// The invocation's id either way.
    pub fn id(&self) -> &str {
        match self {
            Accepted::New { id } | Accepted::Repeat { id } => id,
        }
    }
}

/// Where an invocation is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    /// Accepted, not yet attempted.
    Queued,
    /// An attempt holds its lease.
    Running,
    /// An attempt failed (or was throttled); the next one is due later.
    Retrying,
    /// An attempt succeeded.
    Succeeded,
    /// Retries or the event's age ran out; no failure destination took it.
    Failed,
    /// Retries or the event's age ran out and a dead-letter queue or
    /// failure destination took it.
    DeadLettered,
}

impl State {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Running => "running",
            State::Retrying => "retrying",
            State::Succeeded => "succeeded",
            State::Failed => "failed",
            State::DeadLettered => "dead-lettered",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<State> {
        Some(match s {
            "queued" => State::Queued,
            "running" => State::Running,
            "retrying" => State::Retrying,
            "succeeded" => State::Succeeded,
            "failed" => State::Failed,
            "dead-lettered" => State::DeadLettered,
            _ => return None,
        })
    }

    /// No attempt will follow.
    pub fn is_terminal(self) -> bool {
        matches!(self, State::Succeeded | State::Failed | State::DeadLettered)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An attempt the journal handed out: the invocation and the fencing epoch
/// that owns it until the lease ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claimed {
    /// The journal's sequence number of the invocation.
    pub seq: u64,
    /// The invocation's id.
    pub id: String,
    /// The fencing token: only a completion carrying it is accepted.
    pub epoch: u64,
    /// Which attempt this is, from 1 (attempts that were throttled before
    /// they ran are not counted).
    pub attempt: u32,
    /// When it was accepted, in ms since the Unix epoch.
    pub accepted_at_ms: i64,
    /// The invocation itself.
    pub invocation: NewInvocation,
}

/// Something an ending hands on, in the same transaction that records it:
/// a dead letter or a destination's record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// A message into one of the tenant's built-in queues.
    Queue {
        /// The queue's ARN.
        arn: String,
        /// The message body.
        body: String,
        /// Message attributes: (name, data type — `String` or `Number` —,
        /// value).
        attributes: Vec<(String, String, String)>,
    },
    /// A new async invocation (a destination function).
    Invoke(NewInvocation),
}

/// How an attempt ended, as its owner reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ending {
    /// The function answered; `deliveries` take the success record.
    Succeeded {
        /// Where the record of the success goes.
        deliveries: Vec<Delivery>,
    },
    /// The function failed; another attempt is due at `due_at_ms`.
    Retry {
        /// When the next attempt may start.
        due_at_ms: i64,
        /// What failed.
        error: String,
    },
    /// The attempt could not run (throttled): another is due at
    /// `due_at_ms`, and this one does not count against the retries.
    Throttled {
        /// When the next attempt may start.
        due_at_ms: i64,
        /// Why it could not run.
        reason: String,
    },
    /// No attempt will follow; `deliveries` take the event (a dead-letter
    /// queue, a failure destination). If one of them does, the invocation
    /// is dead-lettered, else failed.
    Failed {
        /// Lambda's condition: `RetriesExhausted` or `EventAgeExceeded`.
        condition: String,
        /// The last error.
        error: String,
        /// Where the failed event goes.
        deliveries: Vec<Delivery>,
    },
}

impl Ending {
    /// The state the invocation moves to, given how many of its
    /// deliveries were made.
    pub(crate) fn state(&self, delivered: usize) -> State {
        match self {
            Ending::Succeeded { .. } => State::Succeeded,
            Ending::Retry { .. } | Ending::Throttled { .. } => State::Retrying,
            Ending::Failed { .. } if delivered > 0 => State::DeadLettered,
            Ending::Failed { .. } => State::Failed,
        }
    }

    /// What the ending hands on.
    pub(crate) fn deliveries(&self) -> &[Delivery] {
        match self {
            Ending::Succeeded { deliveries } | Ending::Failed { deliveries, .. } => deliveries,
            _ => &[],
        }
    }

    /// The word stored in the attempt's record.
    pub(crate) fn outcome(&self) -> &'static str {
        match self {
            Ending::Succeeded { .. } => "succeeded",
            Ending::Retry { .. } => "failed",
            Ending::Throttled { .. } => "throttled",
            Ending::Failed { .. } => "failed",
        }
    }
}

/// Whether the journal took an attempt's ending.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Completion {
    /// The attempt owned the invocation: its ending is recorded.
    Accepted,
    /// Another attempt (a newer epoch) owns the invocation, or it ended:
    /// this late ending was refused and counted.
    Stale,
}

/// One attempt as the journal recorded it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttemptRecord {
    /// Its fencing epoch.
    pub epoch: u64,
    /// When it was claimed, in ms since the Unix epoch.
    pub started_at_ms: i64,
    /// When its owner reported its end.
    pub ended_at_ms: Option<i64>,
    /// `succeeded`, `failed`, `throttled`, or `stale` for an ending that
    /// came after the lease was lost; `None` while running (or lost).
    pub outcome: Option<String>,
    /// What went wrong, if anything.
    pub error: Option<String>,
}

/// An invocation's status, for `nimbus invocation get`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// The invocation's id.
    pub id: String,
    /// The function, the qualifier invoked and the version routed.
    pub function: String,
    /// The qualifier as invoked.
    pub qualifier: String,
    /// The version it runs.
    pub version: String,
    /// Where it is.
    pub state: State,
    /// Attempts that ran (throttled ones not counted).
    pub attempts: u32,
    /// When it was accepted, in ms since the Unix epoch.
    pub accepted_at_ms: i64,
    /// When its state last changed.
    pub updated_at_ms: i64,
    /// When the next attempt is due (queued or retrying).
    pub due_at_ms: i64,
    /// The last error, if any.
    pub last_error: Option<String>,
    /// Lambda's failure condition, once failed.
    pub condition: Option<String>,
    /// Every attempt, oldest first.
    pub history: Vec<AttemptRecord>,
}

/// A CRC-32 over fields, each prefixed by its length so that moving bytes
/// between fields changes the sum.
pub(crate) struct Sum(crc32fast::Hasher);

impl Sum {
    pub(crate) fn new() -> Sum {
        Sum(crc32fast::Hasher::new())
    }

    pub(crate) fn bytes(mut self, field: &[u8]) -> Sum {
        self.0.update(&(field.len() as u64).to_le_bytes());
        self.0.update(field);
        self
    }

    pub(crate) fn int(self, field: i64) -> Sum {
        self.bytes(&field.to_le_bytes())
    }

    pub(crate) fn opt(self, field: Option<&str>) -> Sum {
        match field {
            None => self.int(-1),
            Some(s) => self.bytes(s.as_bytes()),
        }
    }

    pub(crate) fn finish(self) -> i64 {
        i64::from(self.0.finalize())
    }
}

/// The checksum of the immutable fact.
pub(crate) fn fact_sum(seq: u64, id: &str, accepted_at_ms: i64, inv: &NewInvocation) -> i64 {
    Sum::new()
        .int(seq as i64)
        .bytes(id.as_bytes())
        .int(accepted_at_ms)
        .bytes(inv.tenant.as_bytes())
        .bytes(inv.function.as_bytes())
        .bytes(inv.qualifier.as_bytes())
        .bytes(inv.version.as_bytes())
        .bytes(&inv.payload)
        .opt(inv.idempotency_key.as_deref())
        .finish()
}

/// The mutable dispatch state of one invocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Dispatch {
    pub state: State,
    pub epoch: u64,
    pub attempts: u32,
    pub due_at_ms: i64,
    pub lease_until_ms: i64,
    pub updated_at_ms: i64,
    pub last_error: Option<String>,
    pub condition: Option<String>,
}

impl Dispatch {
    /// The checksum of the dispatch state, bound to its invocation.
    pub(crate) fn sum(&self, seq: u64) -> i64 {
        Sum::new()
            .int(seq as i64)
            .bytes(self.state.as_str().as_bytes())
            .int(self.epoch as i64)
            .int(i64::from(self.attempts))
            .int(self.due_at_ms)
            .int(self.lease_until_ms)
            .int(self.updated_at_ms)
            .opt(self.last_error.as_deref())
            .opt(self.condition.as_deref())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invocation() -> NewInvocation {
        NewInvocation {
            tenant: "111122223333".into(),
            function: "f".into(),
            qualifier: "$LATEST".into(),
            version: "$LATEST".into(),
            payload: b"{\"a\":1}".to_vec(),
            idempotency_key: None,
        }
    }

    #[test]
    fn the_fact_sum_covers_every_field_and_their_boundaries() {
        let base = fact_sum(1, "id", 5, &invocation());
        let mut moved = invocation();
        moved.function = "f$".into();
        moved.qualifier = "LATEST".into();
        assert_ne!(
            base,
            fact_sum(1, "id", 5, &moved),
            "bytes moved between fields"
        );
        let mut keyed = invocation();
        keyed.idempotency_key = Some(String::new());
        assert_ne!(
            base,
            fact_sum(1, "id", 5, &keyed),
            "an empty key is not no key"
        );
        let mut flipped = invocation();
        flipped.payload[2] ^= 1;
        assert_ne!(
            base,
            fact_sum(1, "id", 5, &flipped),
            "one bit of the payload"
        );
        assert_ne!(
            base,
            fact_sum(2, "id", 5, &invocation()),
            "the sequence number"
        );
    }

    #[test]
    fn states_round_trip_through_their_names() {
        for s in [
            State::Queued,
            State::Running,
            State::Retrying,
            State::Succeeded,
            State::Failed,
            State::DeadLettered,
        ] {
            assert_eq!(State::parse(s.as_str()), Some(s));
        }
        assert_eq!(State::parse("lost"), None);
    }
}
