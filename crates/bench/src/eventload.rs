//! A closed-loop HTTP/1.1 load of one pre-built request: a number of
//! clients, each one keep-alive connection with one request in flight,
//! sending the same bytes back to back. Raw `TcpStream`s on one tokio
//! thread: the client's work per request is a write and a read of a few
//! hundred bytes, so one thread keeps up with the server and leaves the
//! other core to it (its CPU is measured and reported beside the server's).
//!
//! `wrk` cannot be used here: it counts every 2xx alike, and the point is
//! that each answer was the 202 of a durable accept.

use anyhow::{Context as _, bail, ensure};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// An answer slower than this fails the run.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest answer head read; an accept's is a few hundred bytes.
const HEAD_MAX_BYTES: usize = 16 * 1024;
/// Largest answer body read; an accept's is empty, an error's a little JSON.
const BODY_MAX_BYTES: usize = 64 * 1024;

/// When the load starts counting and when it stops.
#[derive(Clone, Copy)]
pub struct Window {
    /// Requests sent before this are warm-up: answered, checked, not timed.
    pub start: Instant,
    /// No request is sent after this.
    pub end: Instant,
}

/// What the load saw.
pub struct Seen {
    /// Latency of every request sent and answered within the window.
    pub latencies: Vec<Duration>,
    /// Every answer's status, warm-up included, with its count.
    pub statuses: BTreeMap<u16, u64>,
    /// The first answer that was not `expected`, as text, if any.
    pub first_unexpected: Option<String>,
}

/// Runs `clients` connections to `address` sending `request` until
/// `window.end`, on one thread of its own; the handle gives what they saw.
pub fn spawn(
    address: SocketAddr,
    request: Vec<u8>,
    clients: u32,
    expected: u16,
    window: Window,
) -> std::thread::JoinHandle<anyhow::Result<Seen>> {
    let request: Arc<[u8]> = request.into();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("start the load's runtime")?;
        runtime.block_on(async move {
            let tasks: Vec<_> = (0..clients)
                .map(|_| tokio::spawn(client(address, request.clone(), expected, window)))
                .collect();
            let mut seen = Seen {
                latencies: Vec::new(),
                statuses: BTreeMap::new(),
                first_unexpected: None,
            };
            for task in tasks {
                let one = task.await.context("a load client panicked")??;
                seen.latencies.extend(one.latencies);
                for (status, n) in one.statuses {
                    *seen.statuses.entry(status).or_default() += n;
                }
                seen.first_unexpected = seen.first_unexpected.or(one.first_unexpected);
            }
            Ok(seen)
        })
    })
}

/// One connection's loop.
async fn client(
    address: SocketAddr,
    request: Arc<[u8]>,
    expected: u16,
    window: Window,
) -> anyhow::Result<Seen> {
    let mut stream = TcpStream::connect(address)
        .await
        .with_context(|| format!("connect to {address}"))?;
    stream.set_nodelay(true).context("set TCP_NODELAY")?;
    let mut buf = Vec::with_capacity(HEAD_MAX_BYTES);
    let mut seen = Seen {
        latencies: Vec::with_capacity(1 << 16),
        statuses: BTreeMap::new(),
        first_unexpected: None,
    };
    loop {
        let sent = Instant::now();
        if sent >= window.end {
            return Ok(seen);
        }
        stream.write_all(&request).await.context("send a request")?;
        let answer = tokio::time::timeout(ANSWER_TIMEOUT, read_answer(&mut stream, &mut buf))
            .await
            .with_context(|| format!("no answer within {ANSWER_TIMEOUT:?}"))??;
        let done = Instant::now();
        *seen.statuses.entry(answer.status).or_default() += 1;
        if answer.status != expected && seen.first_unexpected.is_none() {
            seen.first_unexpected = Some(answer.text);
        }
        if sent >= window.start && done <= window.end {
            seen.latencies.push(done - sent);
        }
    }
}

/// An answer's status, and its head and body as text for error reports.
struct Answer {
    status: u16,
    text: String,
}

/// Reads one answer: its head up to the blank line, then `Content-Length`
/// bytes of body. One request is in flight per connection, so nothing may
/// follow it.
async fn read_answer(stream: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<Answer> {
    buf.clear();
    let head_len = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        ensure!(buf.len() < HEAD_MAX_BYTES, "an answer's head is too long");
        if read_more(stream, buf).await? == 0 {
            bail!("the server closed the connection");
        }
    };
    let (status, body_len) = parse_head(&buf[..head_len])?;
    ensure!(body_len <= BODY_MAX_BYTES, "an answer's body is too long");
    while buf.len() < head_len + body_len {
        if read_more(stream, buf).await? == 0 {
            bail!("the server closed the connection mid-answer");
        }
    }
    ensure!(
        buf.len() == head_len + body_len,
        "the server sent more than one answer"
    );
    Ok(Answer {
        status,
        text: String::from_utf8_lossy(buf).into_owned(),
    })
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<usize> {
    let mut chunk = [0u8; 4096];
    let n = stream.read(&mut chunk).await.context("read an answer")?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

/// The status and `Content-Length` of an HTTP/1.1 answer's head. A body
/// without a length (chunked) is refused: the server under test never
/// sends one to these requests.
fn parse_head(head: &[u8]) -> anyhow::Result<(u16, usize)> {
    let text = std::str::from_utf8(head).context("an answer's head is not UTF-8")?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("not an HTTP/1.1 status line: {status_line:?}"))?;
    let mut length = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.trim().parse().context("a bad Content-Length")?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            bail!("an answer with Transfer-Encoding {}", value.trim());
        }
    }
    Ok((status, length.unwrap_or(0)))
}

/// The bytes of one HTTP/1.1 POST of `body` to `path` with `headers`.
pub fn request_bytes(path: &str, headers: &[(String, String)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("POST {path} HTTP/1.1\r\n");
    for (name, value) in headers {
        out += &format!("{name}: {value}\r\n");
    }
    out += &format!("content-length: {}\r\n\r\n", body.len());
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_parsed() {
        let head = b"HTTP/1.1 202 Accepted\r\nx-amzn-RequestId: a\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(parse_head(head).unwrap(), (202, 0));
        let head = b"HTTP/1.1 429 Too Many Requests\r\ncontent-length: 57\r\n\r\n";
        assert_eq!(parse_head(head).unwrap(), (429, 57));
        assert!(parse_head(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").is_err());
        assert!(parse_head(b"SSH-2.0\r\n\r\n").is_err());
    }

    #[test]
    fn a_request_carries_its_length() {
        let headers = [("host".to_string(), "h".to_string())];
        let bytes = request_bytes("/p", &headers, b"{}");
        assert_eq!(
            bytes,
            b"POST /p HTTP/1.1\r\nhost: h\r\ncontent-length: 2\r\n\r\n{}"
        );
    }

    /// A tiny server that answers every request with a 202, then the load
    /// against it: every answer counted, latencies only inside the window.
    #[test]
    fn the_load_counts_every_answer() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let address = listener.local_addr().unwrap();
        runtime.spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 {
                            return;
                        }
                        let answer = b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n";
                        if s.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let now = Instant::now();
        let window = Window {
            start: now + Duration::from_millis(50),
            end: now + Duration::from_millis(250),
        };
        let request = request_bytes("/", &[], b"");
        let seen = spawn(address, request, 4, 202, window)
            .join()
            .unwrap()
            .unwrap();
        assert!(seen.first_unexpected.is_none());
        let answered = seen.statuses[&202];
        assert!(answered > seen.latencies.len() as u64);
        assert!(!seen.latencies.is_empty());
    }
}
