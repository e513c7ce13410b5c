//! Just enough of a Lambda API client to deploy the echo and check it, and
//! to sign the one request the load generator replays.
//!
//! Signing goes through `nimbus_api::auth::sigv4`, the code the server
//! verifies with, so a request signed here is one the server accepts.

use anyhow::{Context as _, bail, ensure};
use base64::Engine as _;
use nimbus_api::auth::sigv4;
use std::net::SocketAddr;

/// The content type of every request (what the AWS SDKs send to Lambda).
const CONTENT_TYPE: &str = "application/json";
/// Largest answer read back; the echo answers with the few bytes it is sent.
const ANSWER_MAX_BYTES: u64 = 1 << 20;

/// A signing client of one server.
pub struct Api {
    address: SocketAddr,
    access_key_id: String,
    secret: String,
    region: String,
    agent: ureq::Agent,
}

impl Api {
    /// A client of the server at `address`, signing with the given keys.
    pub fn new(address: SocketAddr, access_key_id: &str, secret: &str, region: &str) -> Api {
        Api {
            address,
            access_key_id: access_key_id.into(),
            secret: secret.into(),
            region: region.into(),
            agent: agent(),
        }
    }

    /// Every header of a signed `method` on `path` with `body`: `host`,
    /// `x-amz-date`, `content-type` and `authorization`. The signature is
    /// good for the server's allowed clock skew, 5 minutes.
    pub fn signed_headers(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> anyhow::Result<Vec<(String, String)>> {
        let amz_date = time::OffsetDateTime::now_utc().format(
            time::macros::format_description!("[year][month][day]T[hour][minute][second]Z"),
        )?;
        let mut headers = vec![
            ("host".to_string(), self.address.to_string()),
            ("x-amz-date".to_string(), amz_date.clone()),
            ("content-type".to_string(), CONTENT_TYPE.to_string()),
        ];
        let payload_hash = sigv4::payload_hash(body);
        let parts = sigv4::RequestParts {
            method,
            path,
            query: "",
            headers: &headers,
            payload_hash: &payload_hash,
        };
        let authorization = sigv4::sign(
            &self.access_key_id,
            &self.secret,
            &self.region,
            "lambda",
            &amz_date,
            &parts,
        );
        headers.push(("authorization".to_string(), authorization));
        Ok(headers)
    }

    /// Creates the wasm function `name` from a raw `.wasm`.
    pub fn create_function(&self, name: &str, wasm: &[u8]) -> anyhow::Result<()> {
        self.create(name, serde_json::json!({ "Runtime": "wasm" }), wasm)
    }

    /// Creates `name` with `runtime` from a zip package.
    pub fn create_zip_function(
        &self,
        name: &str,
        runtime: &str,
        handler: &str,
        zip: &[u8],
        ephemeral_storage_mb: u32,
    ) -> anyhow::Result<()> {
        let fields = serde_json::json!({
            "Runtime": runtime,
            "Handler": handler,
            "EphemeralStorage": { "Size": ephemeral_storage_mb },
        });
        self.create(name, fields, zip)
    }

    /// CreateFunction of `name` from `code`, with the given extra fields.
    fn create(&self, name: &str, mut fields: serde_json::Value, code: &[u8]) -> anyhow::Result<()> {
        fields["FunctionName"] = name.into();
        fields["Role"] = "arn:aws:iam::000000000000:role/nimbus-bench".into();
        fields["Code"] = serde_json::json!({ "ZipFile": base64::engine::general_purpose::STANDARD.encode(code) });
        let body = fields.to_string();
        let (status, answer) = self.send("POST", "/2015-03-31/functions", body.as_bytes(), &[])?;
        ensure!(
            status == 201,
            "CreateFunction {name} answered {status}: {}",
            String::from_utf8_lossy(&answer.body)
        );
        Ok(())
    }

    /// Deletes `name`.
    pub fn delete_function(&self, name: &str) -> anyhow::Result<()> {
        let path = format!("/2015-03-31/functions/{name}");
        let (status, answer) = self.send("DELETE", &path, b"", &[])?;
        ensure!(
            status == 204,
            "DeleteFunction {name} answered {status}: {}",
            String::from_utf8_lossy(&answer.body)
        );
        Ok(())
    }

    /// Invokes `name` with `LogType=Tail`: the answer and the log's tail.
    pub fn invoke_tail(&self, name: &str, payload: &[u8]) -> anyhow::Result<Answer> {
        self.invoke_with(name, payload, &[("x-amz-log-type", "Tail")])
    }

    /// Invokes `name`: the answer, with no log.
    pub fn invoke(&self, name: &str, payload: &[u8]) -> anyhow::Result<Answer> {
        self.invoke_with(name, payload, &[])
    }

    fn invoke_with(
        &self,
        name: &str,
        payload: &[u8],
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Answer> {
        let path = format!("/2015-03-31/functions/{name}/invocations");
        let (status, answer) = self.send("POST", &path, payload, headers)?;
        ensure!(
            status == 200,
            "Invoke {name} answered {status}: {}",
            String::from_utf8_lossy(&answer.body)
        );
        Ok(answer)
    }

    /// A signed POST that must succeed; returns the answer's body.
    pub fn post(&self, path: &str, body: &[u8]) -> anyhow::Result<Vec<u8>> {
        let (status, answer) = self.send("POST", path, body, &[])?;
        ensure!(
            status == 200,
            "POST {path} answered {status}: {}",
            String::from_utf8_lossy(&answer.body)
        );
        Ok(answer.body)
    }

    /// A signed PUT that must succeed; returns the answer's body.
    pub fn put(&self, path: &str, body: &[u8]) -> anyhow::Result<Vec<u8>> {
        let (status, answer) = self.send("PUT", path, body, &[])?;
        ensure!(
            status == 200,
            "PUT {path} answered {status}: {}",
            String::from_utf8_lossy(&answer.body)
        );
        Ok(answer.body)
    }

    /// A signed request with `extra` headers (not signed: the server signs
    /// only what `SignedHeaders` names). A function error is an error here.
    fn send(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
        extra: &[(&str, &str)],
    ) -> anyhow::Result<(u16, Answer)> {
        let url = format!("http://{}{path}", self.address);
        let mut request = ureq::http::Request::builder().method(method).uri(&url);
        for (name, value) in self.signed_headers(method, path, body)? {
            // ureq writes `host` itself, from the URL, as signed above.
            if name != "host" {
                request = request.header(name, value);
            }
        }
        for (name, value) in extra {
            request = request.header(*name, *value);
        }
        let request = request.body(body.to_vec()).context("build a request")?;
        let mut response = self
            .agent
            .run(request)
            .with_context(|| format!("{method} {path} to {}", self.address))?;
        if response.headers().contains_key("x-amz-function-error") {
            bail!("the function failed: {:?}", read(&mut response)?);
        }
        let log = response
            .headers()
            .get("x-amz-log-result")
            .and_then(|v| v.to_str().ok())
            .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
            .map(|raw| String::from_utf8_lossy(&raw).into_owned())
            .unwrap_or_default();
        let tier = response
            .headers()
            .get("x-nimbus-tier")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let status = response.status().as_u16();
        let body = read(&mut response)?;
        Ok((status, Answer { body, log, tier }))
    }
}

/// A successful answer.
pub struct Answer {
    /// The body.
    pub body: Vec<u8>,
    /// The decoded `X-Amz-Log-Result`, if asked for.
    pub log: String,
    /// `X-Nimbus-Tier` of an invoke: hot, warm or cold.
    pub tier: String,
}

/// An unsigned client of the baseline server, keeping its connection.
pub struct Unsigned {
    address: SocketAddr,
    agent: ureq::Agent,
}

impl Unsigned {
    /// A client of `address`.
    pub fn new(address: SocketAddr) -> Unsigned {
        Unsigned {
            address,
            agent: agent(),
        }
    }

    /// A POST that must succeed; returns the body.
    pub fn post(&self, path: &str, body: &[u8]) -> anyhow::Result<Vec<u8>> {
        let mut response = self
            .agent
            .post(format!("http://{}{path}", self.address))
            .header("content-type", CONTENT_TYPE)
            .send(body)
            .with_context(|| format!("POST {path} to {}", self.address))?;
        ensure!(
            response.status() == 200,
            "POST {path} to {} answered {}",
            self.address,
            response.status()
        );
        read(&mut response)
    }
}

/// A zip archive of `(name, contents, unix mode)` entries.
pub fn zip_of(entries: &[(&str, &[u8], u32)]) -> anyhow::Result<Vec<u8>> {
    use std::io::Write as _;
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, contents, mode) in entries {
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .unix_permissions(*mode);
        zip.start_file(*name, options)
            .context("start a zip entry")?;
        zip.write_all(contents).context("write a zip entry")?;
    }
    Ok(zip.finish().context("finish the zip")?.into_inner())
}

/// An unsigned POST that must succeed (for the baseline); returns the body.
pub fn post_unsigned(address: SocketAddr, path: &str, body: &[u8]) -> anyhow::Result<Vec<u8>> {
    Unsigned::new(address).post(path, body)
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

fn read(response: &mut ureq::http::Response<ureq::Body>) -> anyhow::Result<Vec<u8>> {
    Ok(response
        .body_mut()
        .with_config()
        .limit(ANSWER_MAX_BYTES)
        .read_to_vec()?)
}
