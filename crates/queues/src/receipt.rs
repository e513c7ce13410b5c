//! Receipt handles: which message, which receive of it, and that receive's
//! random token, packed into one opaque string.

use crate::QueueError;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// What a receipt handle names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Receipt {
    /// The message's row.
    pub seq: i64,
    /// The receive that issued the handle (the message's receive count then).
    pub receive_count: u32,
    /// That receive's random token, so a handle cannot be forged by counting.
    pub token: String,
}

/// Handles start with this, so a handle from another system is told apart
/// from a damaged one of ours.
const VERSION: &str = "nq1";
/// Longest handle accepted; ours are far shorter. SQS allows 1,024.
const HANDLE_MAX_BYTES: usize = 1_024;

impl Receipt {
    /// A fresh token for a new receive.
    pub fn new_token() -> String {
        uuid::Uuid::new_v4().simple().to_string()
    }

    /// The opaque handle a client gets.
    pub fn encode(&self) -> String {
        let plain = format!(
            "{VERSION}:{}:{}:{}",
            self.seq, self.receive_count, self.token
        );
        URL_SAFE_NO_PAD.encode(plain)
    }

    /// Reads a handle back; `ReceiptHandleIsInvalid` if it is not one of ours.
    pub fn parse(handle: &str) -> Result<Receipt, QueueError> {
        let invalid = || QueueError::ReceiptHandleIsInvalid(shorten(handle));
        if handle.len() > HANDLE_MAX_BYTES {
            return Err(invalid());
        }
        let plain = URL_SAFE_NO_PAD.decode(handle).map_err(|_| invalid())?;
        let plain = String::from_utf8(plain).map_err(|_| invalid())?;
        let parts: Vec<&str> = plain.split(':').collect();
        let [VERSION, seq, count, token] = parts.as_slice() else {
            return Err(invalid());
        };
        let token_ok = token.len() == 32 && token.bytes().all(|b| b.is_ascii_hexdigit());
        match (seq.parse(), count.parse()) {
            (Ok(seq), Ok(receive_count)) if token_ok => Ok(Receipt {
                seq,
                receive_count,
                token: token.to_string(),
            }),
            _ => Err(invalid()),
        }
    }
}

/// A handle echoed in an error, cut so a hostile one cannot flood the answer.
fn shorten(handle: &str) -> String {
    match handle.char_indices().nth(64) {
        Some((cut, _)) => format!("{}…", &handle[..cut]),
        None => handle.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejects() {
        let receipt = Receipt {
            seq: 42,
            receive_count: 3,
            token: Receipt::new_token(),
        };
        assert_eq!(Receipt::parse(&receipt.encode()).unwrap(), receipt);
        for bad in ["", "not base64!", "bnExOjE6Mg", &"A".repeat(2_000)] {
            assert!(
                matches!(
                    Receipt::parse(bad),
                    Err(QueueError::ReceiptHandleIsInvalid(_))
                ),
                "{bad:?}"
            );
        }
    }
}
