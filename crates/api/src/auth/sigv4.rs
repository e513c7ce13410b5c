//! AWS Signature Version 4, both ways: the front door verifies requests with
//! it and the `nimbus` CLI signs its own. One canonicalisation serves both,
//! so the two can never disagree.
//!
//! The canonical URI is the path as sent, percent-encoded once more (AWS's
//! rule for every service but S3: a `%3A` in the path is signed as `%253A`).

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// The only algorithm AWS clients use for this API.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";

type HmacSha256 = Hmac<Sha256>;

/// Why an `Authorization` header could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigV4Error {
    /// The header is absent or not a SigV4 header.
    #[error("Authorization header is missing or is not {ALGORITHM}")]
    Missing,
    /// The header does not parse.
    #[error("Authorization header is malformed: {0}")]
    Malformed(String),
}

/// The parts of a SigV4 `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    /// The access key id.
    pub access_key: String,
    /// The scope's date, `YYYYMMDD`.
    pub date: String,
    /// The scope's region.
    pub region: String,
    /// The scope's service.
    pub service: String,
    /// Lower-case names of the signed headers, in order.
    pub signed_headers: Vec<String>,
    /// Hex signature.
    pub signature: String,
}

impl Authorization {
    /// Parses `AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…`.
    pub fn parse(header: &str) -> Result<Authorization, SigV4Error> {
        let rest = header.strip_prefix(ALGORITHM).ok_or(SigV4Error::Missing)?;
        let (mut credential, mut signed, mut signature) = (None, None, None);
        for part in rest.split(',') {
            let (key, value) = part
                .trim()
                .split_once('=')
                .ok_or_else(|| SigV4Error::Malformed(format!("{part:?} is not key=value")))?;
            match key {
                "Credential" => credential = Some(value),
                "SignedHeaders" => signed = Some(value),
                "Signature" => signature = Some(value),
                _ => {}
            }
        }
        let missing = |what: &str| SigV4Error::Malformed(format!("{what} is missing"));
        let credential = credential.ok_or_else(|| missing("Credential"))?;
        let scope: Vec<&str> = credential.split('/').collect();
        let [access_key, date, region, service, "aws4_request"] = scope.as_slice() else {
            return Err(SigV4Error::Malformed(format!(
                "Credential {credential:?} is not KEY/DATE/REGION/SERVICE/aws4_request"
            )));
        };
        Ok(Authorization {
            access_key: access_key.to_string(),
            date: date.to_string(),
            region: region.to_string(),
            service: service.to_string(),
            signed_headers: signed
                .ok_or_else(|| missing("SignedHeaders"))?
                .split(';')
                .map(str::to_ascii_lowercase)
                .collect(),
            signature: signature.ok_or_else(|| missing("Signature"))?.to_string(),
        })
    }

    /// The credential scope, `DATE/REGION/SERVICE/aws4_request`.
    pub fn scope(&self) -> String {
        format!(
            "{}/{}/{}/aws4_request",
            self.date, self.region, self.service
        )
    }
}

/// A request as far as the signature covers it.
pub struct RequestParts<'a> {
    /// HTTP method.
    pub method: &'a str,
    /// The path as sent on the wire (still percent-encoded).
    pub path: &'a str,
    /// The query string as sent, without `?`.
    pub query: &'a str,
    /// Every header, names in any case.
    pub headers: &'a [(String, String)],
    /// Hex SHA-256 of the body (or `UNSIGNED-PAYLOAD`).
    pub payload_hash: &'a str,
}

fn uri_encode(input: &[u8], keep_slash: bool) -> String {
    let mut out = String::with_capacity(input.len());
    for &b in input {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes `%XX` escapes; malformed escapes are kept as they are.
pub fn percent_decode(input: &str) -> Vec<u8> {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(
                std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"),
                16,
            )
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (
                uri_encode(&percent_decode(k), false),
                uri_encode(&percent_decode(v), false),
            )
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn header_value(headers: &[(String, String)], name: &str) -> String {
    let values: Vec<String> = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    values.join(",")
}

/// The canonical request of SigV4, step 1.
pub fn canonical_request(parts: &RequestParts<'_>, signed_headers: &[String]) -> String {
    let mut out = String::new();
    out.push_str(parts.method);
    out.push('\n');
    out.push_str(&uri_encode(parts.path.as_bytes(), true));
    out.push('\n');
    out.push_str(&canonical_query(parts.query));
    out.push('\n');
    for name in signed_headers {
        out.push_str(name);
        out.push(':');
        out.push_str(&header_value(parts.headers, name));
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&signed_headers.join(";"));
    out.push('\n');
    out.push_str(parts.payload_hash);
    out
}

/// The string to sign of SigV4, step 2.
pub fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &str) -> String {
    format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    )
}

fn hmac(key: &[u8], data: &[u8]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(data);
    mac
}

fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> Vec<u8> {
    let k_date = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes())
        .finalize()
        .into_bytes();
    let k_region = hmac(&k_date, region.as_bytes()).finalize().into_bytes();
    let k_service = hmac(&k_region, service.as_bytes()).finalize().into_bytes();
    hmac(&k_service, b"aws4_request")
        .finalize()
        .into_bytes()
        .to_vec()
}

/// The hex signature of `string_to_sign` under `secret` and the scope's parts.
pub fn signature(secret: &str, auth: &Authorization, string_to_sign: &str) -> String {
    let key = signing_key(secret, &auth.date, &auth.region, &auth.service);
    hex::encode(
        hmac(&key, string_to_sign.as_bytes())
            .finalize()
            .into_bytes(),
    )
}

/// Checks `auth.signature` over `parts` in constant time.
pub fn verify(
    secret: &str,
    auth: &Authorization,
    amz_date: &str,
    parts: &RequestParts<'_>,
) -> bool {
    let canonical = canonical_request(parts, &auth.signed_headers);
    let sts = string_to_sign(amz_date, &auth.scope(), &canonical);
    let key = signing_key(secret, &auth.date, &auth.region, &auth.service);
    let Ok(provided) = hex::decode(&auth.signature) else {
        return false;
    };
    hmac(&key, sts.as_bytes()).verify_slice(&provided).is_ok()
}

/// Signs a request for a client: returns the `Authorization` header value.
/// `parts.headers` must already hold `host` and `x-amz-date`; every header
/// given is signed.
pub fn sign(
    access_key: &str,
    secret: &str,
    region: &str,
    service: &str,
    amz_date: &str,
    parts: &RequestParts<'_>,
) -> String {
    let mut signed: Vec<String> = parts
        .headers
        .iter()
        .map(|(n, _)| n.to_ascii_lowercase())
        .collect();
    signed.sort();
    signed.dedup();
    let auth = Authorization {
        access_key: access_key.to_string(),
        date: amz_date.get(..8).unwrap_or_default().to_string(),
        region: region.to_string(),
        service: service.to_string(),
        signed_headers: signed,
        signature: String::new(),
    };
    let canonical = canonical_request(parts, &auth.signed_headers);
    let sts = string_to_sign(amz_date, &auth.scope(), &canonical);
    format!(
        "{ALGORITHM} Credential={access_key}/{}, SignedHeaders={}, Signature={}",
        auth.scope(),
        auth.signed_headers.join(";"),
        signature(secret, &auth, &sts)
    )
}

/// Hex SHA-256 of a body, as the payload hash.
pub fn payload_hash(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worked example of AWS's SigV4 documentation (IAM ListUsers).
    #[test]
    fn matches_the_documented_example() {
        let headers = vec![
            (
                "Content-Type".to_string(),
                "application/x-www-form-urlencoded; charset=utf-8".to_string(),
            ),
            ("Host".to_string(), "iam.amazonaws.com".to_string()),
            ("X-Amz-Date".to_string(), "20150830T123600Z".to_string()),
        ];
        let parts = RequestParts {
            method: "GET",
            path: "/",
            query: "Version=2010-05-08&Action=ListUsers",
            headers: &headers,
            payload_hash: &payload_hash(b""),
        };
        let signed: Vec<String> = ["content-type", "host", "x-amz-date"]
            .map(String::from)
            .to_vec();
        let canonical = canonical_request(&parts, &signed);
        assert_eq!(
            hex::encode(Sha256::digest(canonical.as_bytes())),
            "f536975d06c0309214f805bb90ccff089219ecd68b2577efef23edd43b7e1a59"
        );
        let header = sign(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            "us-east-1",
            "iam",
            "20150830T123600Z",
            &parts,
        );
        assert!(
            header.ends_with(
                "Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
            ),
            "{header}"
        );
        let auth = Authorization::parse(&header).unwrap();
        assert_eq!(auth.access_key, "AKIDEXAMPLE");
        assert!(verify(
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            &auth,
            "20150830T123600Z",
            &parts
        ));
        assert!(!verify("wrong", &auth, "20150830T123600Z", &parts));
    }

    #[test]
    fn encoded_paths_are_encoded_again() {
        let parts = RequestParts {
            method: "GET",
            path: "/f/a%3Ab",
            query: "",
            headers: &[],
            payload_hash: "x",
        };
        assert!(canonical_request(&parts, &[]).contains("/f/a%253Ab\n"));
    }

    #[test]
    fn malformed_headers_are_refused() {
        assert_eq!(Authorization::parse("Basic abc"), Err(SigV4Error::Missing));
        assert!(
            Authorization::parse(
                "AWS4-HMAC-SHA256 Credential=a/b, SignedHeaders=host, Signature=00"
            )
            .is_err()
        );
        assert!(Authorization::parse("AWS4-HMAC-SHA256 garbage").is_err());
    }
}
