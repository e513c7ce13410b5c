//! A small signed HTTP client for the platform's API, configured from the
//! same environment variables the AWS tools read.

use anyhow::{Context as _, bail};
use nimbus_api::auth::sigv4;

/// Largest response the client reads (a sync invoke answers at most 6 MB).
const RESPONSE_MAX_BYTES: u64 = 8 << 20;

/// The API endpoint and the keys to sign with.
pub struct Client {
    endpoint: String,
    host: String,
    access_key: String,
    secret: String,
    region: String,
    agent: ureq::Agent,
}

/// An answer from the API.
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Response headers, names lower-case.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl Answer {
    /// The value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Fails with the API's error name and message unless the status is 2xx.
    pub fn ok(self) -> anyhow::Result<Answer> {
        if (200..300).contains(&self.status) {
            return Ok(self);
        }
        // Lambda names the error in a header; the queues' JSON protocol in
        // the body's `__type` (`com.amazonaws.sqs#QueueDoesNotExist`).
        let typed = serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v.get("__type")?.as_str().map(String::from));
        let code = self
            .header("x-amzn-ErrorType")
            .map(String::from)
            .or_else(|| typed.map(|t| t.rsplit('#').next().unwrap_or_default().to_string()))
            .unwrap_or_else(|| "error".to_string());
        let message = serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| {
                v.get("message")
                    .or_else(|| v.get("Message"))
                    .and_then(|m| m.as_str().map(String::from))
            })
            .unwrap_or_else(|| String::from_utf8_lossy(&self.body).into_owned());
        bail!("{code}: {message}")
    }

    /// The body as JSON.
    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_slice(&self.body).context("the API answered something that is not JSON")
    }
}

fn env(name: &str) -> anyhow::Result<String> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .with_context(|| format!("{name} is not set; run: eval \"$(nimbus env)\""))
}

/// Percent-encodes one path label (a function name or ARN).
pub fn label(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

impl Client {
    /// A client from `AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY` and `AWS_REGION` (or `AWS_DEFAULT_REGION`).
    pub fn from_env() -> anyhow::Result<Client> {
        let endpoint = env("AWS_ENDPOINT_URL")?.trim_end_matches('/').to_string();
        let host = endpoint
            .strip_prefix("http://")
            .with_context(|| format!("AWS_ENDPOINT_URL {endpoint:?} must be an http:// URL"))?
            .split('/')
            .next()
            .unwrap_or_default()
            .to_string();
        let region = env("AWS_REGION").or_else(|_| env("AWS_DEFAULT_REGION"))?;
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build();
        Ok(Client {
            endpoint,
            host,
            access_key: env("AWS_ACCESS_KEY_ID")?,
            secret: env("AWS_SECRET_ACCESS_KEY")?,
            region,
            agent: config.into(),
        })
    }

    /// Sends a signed Lambda API request; `path_and_query` is already encoded.
    pub fn send(
        &self,
        method: &str,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> anyhow::Result<Answer> {
        self.send_to("lambda", method, path_and_query, headers, body)
    }

    /// Calls the built-in queues' `operation` (SQS's JSON protocol).
    pub fn sqs(
        &self,
        operation: &str,
        input: &serde_json::Value,
    ) -> anyhow::Result<serde_json::Value> {
        let target = format!("AmazonSQS.{operation}");
        let headers = [
            ("content-type", "application/x-amz-json-1.0"),
            ("x-amz-target", target.as_str()),
        ];
        let body = serde_json::to_vec(input)?;
        self.send_to("sqs", "POST", "/", &headers, &body)?
            .ok()?
            .json()
    }

    /// Sends a request signed for `service`.
    pub fn send_to(
        &self,
        service: &str,
        method: &str,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> anyhow::Result<Answer> {
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        let amz_date = time::OffsetDateTime::now_utc().format(
            time::macros::format_description!("[year][month][day]T[hour][minute][second]Z"),
        )?;
        let mut signed: Vec<(String, String)> = vec![
            ("host".into(), self.host.clone()),
            ("x-amz-date".into(), amz_date.clone()),
        ];
        signed.extend(
            headers
                .iter()
                .map(|(n, v)| (n.to_ascii_lowercase(), v.to_string())),
        );
        let payload_hash = sigv4::payload_hash(body);
        let parts = sigv4::RequestParts {
            method,
            path,
            query,
            headers: &signed,
            payload_hash: &payload_hash,
        };
        let authorization = sigv4::sign(
            &self.access_key,
            &self.secret,
            &self.region,
            service,
            &amz_date,
            &parts,
        );
        let url = format!("{}{path_and_query}", self.endpoint);
        let mut request = ureq::http::Request::builder().method(method).uri(&url);
        for (name, value) in signed.iter().filter(|(n, _)| n != "host") {
            request = request.header(name, value);
        }
        let request = request
            .header("authorization", authorization)
            .body(body.to_vec())?;
        let mut response = self
            .agent
            .run(request)
            .with_context(|| format!("cannot reach {}", self.endpoint))?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = response
            .body_mut()
            .with_config()
            .limit(RESPONSE_MAX_BYTES)
            .read_to_vec()?;
        Ok(Answer {
            status,
            headers,
            body,
        })
    }
}
