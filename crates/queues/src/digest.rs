//! The MD5 digests SQS returns so a client can check what was stored.

use crate::messages::MessageAttribute;
use md5::{Digest, Md5};
use std::collections::BTreeMap;

/// Hex MD5 of a message body (SQS's `MD5OfMessageBody` / `MD5OfBody`).
pub fn md5_of_body(body: &str) -> String {
    hex::encode(Md5::digest(body.as_bytes()))
}

/// Hex MD5 of message attributes as SQS defines it: for each attribute in
/// name order, the name, the data type, a transport byte (1 for String and
/// Number, 2 for Binary) and the value, each string and value preceded by
/// its length as a 4-byte big-endian integer. `None` when there are none.
pub fn md5_of_attributes(attributes: &BTreeMap<String, MessageAttribute>) -> Option<String> {
    if attributes.is_empty() {
        return None;
    }
    let mut md5 = Md5::new();
    for (name, attribute) in attributes {
        length_prefixed(&mut md5, name.as_bytes());
        length_prefixed(&mut md5, attribute.data_type.as_bytes());
        if attribute.is_binary() {
            md5.update([2u8]);
            length_prefixed(
                &mut md5,
                attribute.binary_value.as_deref().unwrap_or_default(),
            );
        } else {
            md5.update([1u8]);
            let value = attribute.string_value.as_deref().unwrap_or_default();
            length_prefixed(&mut md5, value.as_bytes());
        }
    }
    Some(hex::encode(md5.finalize()))
}

fn length_prefixed(md5: &mut Md5, bytes: &[u8]) {
    // Every field is bounded by the message size limit (1 MiB), far below
    // u32::MAX, so the cast cannot truncate.
    md5.update((bytes.len() as u32).to_be_bytes());
    md5.update(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_digest_is_hex_md5() {
        assert_eq!(md5_of_body(""), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(md5_of_body("hello"), "5d41402abc4b2a76b9719d911017c592");
    }

    #[test]
    fn attribute_digest_follows_the_encoding() {
        let mut attributes = BTreeMap::new();
        assert_eq!(md5_of_attributes(&attributes), None);
        attributes.insert(
            "a".to_string(),
            MessageAttribute {
                data_type: "String".into(),
                string_value: Some("b".into()),
                binary_value: None,
            },
        );
        let mut expected = Vec::new();
        expected.extend_from_slice(&[0, 0, 0, 1, b'a', 0, 0, 0, 6]);
        expected.extend_from_slice(b"String");
        expected.extend_from_slice(&[1, 0, 0, 0, 1, b'b']);
        assert_eq!(
            md5_of_attributes(&attributes).as_deref(),
            Some(hex::encode(Md5::digest(&expected)).as_str())
        );
    }
}
