//! HTTP/1.1 as a runtime speaks it to its Runtime API, over one connection.
//!
//! Our own rather than hyper's: an invocation drives its runtime's
//! connection itself (see the parent module), so a connection is a value
//! handed between tasks between requests, not a future owned by one task.
//!
//! It reads what HTTP/1.1 lets a client send — a `Content-Length` or chunked
//! body, `Expect: 100-continue` (curl-based runtime clients send it),
//! pipelined requests, `Connection: close`, HTTP/1.0 — within limits, and
//! treats everything else as the hostile input it may be: a malformed head
//! is answered 400, an oversized one 431, and the connection closed.
//! Every read keeps what it has read in the connection's buffer until a
//! whole head or body is there, so a read may be cancelled between requests
//! without losing a byte.

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;

/// The most a request head (request line and headers) may take.
pub(crate) const HEAD_BYTES_MAX: usize = 16 * 1024;

/// The most headers a request may have: the runtime clients send fewer than ten.
const HEADERS_MAX: usize = 48;

/// The most a chunk-size line (with its extensions) may take.
const CHUNK_LINE_BYTES_MAX: usize = 1024;

/// How much one read asks of the socket.
const READ_CHUNK_BYTES: usize = 16 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Method {
    Get,
    Post,
    Other,
}

/// How the request's body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked,
}

/// A request's head, read and checked.
#[derive(Debug)]
pub(crate) struct Head {
    pub method: Method,
    /// The path without its query.
    pub path: String,
    /// `Lambda-Runtime-Function-Error-Type`, if sent.
    pub error_type: Option<String>,
    framing: Framing,
    expect_continue: bool,
    /// The client closes after this request (`Connection: close`, or HTTP/1.0).
    close: bool,
}

impl Head {
    /// Whether the request has a body to read.
    pub(crate) fn has_body(&self) -> bool {
        self.framing != Framing::Length(0)
    }
}

/// Why a request could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WireError {
    #[error("the runtime closed the connection")]
    Closed,
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    #[error("the request head is over {HEAD_BYTES_MAX} bytes or {HEADERS_MAX} headers")]
    HeadTooLarge,
}

/// A request body, or that it is over the limit it was read with.
#[derive(Debug)]
pub(crate) enum Body {
    Complete(Bytes),
    TooLarge,
}

/// An answer's status line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    Ok,
    BadRequest,
    NotFound,
    MethodNotAllowed,
    PayloadTooLarge,
    HeadersTooLarge,
}

impl Status {
    fn line(self) -> &'static str {
        match self {
            Status::Ok => "HTTP/1.1 200 OK\r\n",
            Status::BadRequest => "HTTP/1.1 400 Bad Request\r\n",
            Status::NotFound => "HTTP/1.1 404 Not Found\r\n",
            Status::MethodNotAllowed => "HTTP/1.1 405 Method Not Allowed\r\n",
            Status::PayloadTooLarge => "HTTP/1.1 413 Payload Too Large\r\n",
            Status::HeadersTooLarge => "HTTP/1.1 431 Request Header Fields Too Large\r\n",
        }
    }
}

/// One connection from the runtime, with what has been read of it.
pub(crate) struct Conn {
    stream: TcpStream,
    read: BytesMut,
    /// Set once an answer said `connection: close`: nothing more is read.
    closing: bool,
    /// Between requests: nothing of a request is consumed but unanswered.
    /// A connection that is not cannot be handed on.
    between: bool,
    /// Its place among the sandbox's connections, given back when it closes.
    _permit: OwnedSemaphorePermit,
}

impl Conn {
    pub(crate) fn new(stream: TcpStream, permit: OwnedSemaphorePermit) -> Conn {
        Conn {
            stream,
            read: BytesMut::new(),
            closing: false,
            between: true,
            _permit: permit,
        }
    }

    /// Whether the connection can serve another request.
    pub(crate) fn is_open(&self) -> bool {
        !self.closing
    }

    /// Whether no request is half served on it.
    pub(crate) fn is_between_requests(&self) -> bool {
        self.between && !self.closing
    }

    /// Whether the runtime has closed its end: it will never read what is
    /// written now. A peek that does not wait, so what is pending stays.
    pub(crate) fn peer_closed(&self) -> bool {
        use std::os::fd::AsRawFd as _;
        let mut byte = 0u8;
        // SAFETY: recv(2) into one byte this function owns, on a socket the
        // connection owns; MSG_PEEK leaves the data, MSG_DONTWAIT never blocks.
        let n = unsafe {
            libc::recv(
                self.stream.as_raw_fd(),
                (&raw mut byte).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        n == 0
    }

    /// Reads the next request's head. `Closed` when the runtime closed the
    /// connection between requests.
    pub(crate) async fn read_head(&mut self) -> Result<Head, WireError> {
        loop {
            if !self.read.is_empty() {
                if let Some(head) = self.parse_head()? {
                    self.between = false;
                    self.closing |= head.close;
                    return Ok(head);
                }
                if self.read.len() > HEAD_BYTES_MAX {
                    return Err(WireError::HeadTooLarge);
                }
            }
            if self.fill().await? == 0 {
                return Err(if self.read.is_empty() {
                    WireError::Closed
                } else {
                    WireError::Malformed("the connection closed mid-head")
                });
            }
        }
    }

    fn parse_head(&mut self) -> Result<Option<Head>, WireError> {
        let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
        let mut request = httparse::Request::new(&mut headers);
        let length = match request.parse(&self.read) {
            Ok(httparse::Status::Complete(length)) => length,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => return Err(WireError::HeadTooLarge),
            Err(_) => return Err(WireError::Malformed("not an HTTP/1.x request head")),
        };
        if length > HEAD_BYTES_MAX {
            return Err(WireError::HeadTooLarge);
        }
        let method = match request.method {
            Some("GET") => Method::Get,
            Some("POST") => Method::Post,
            _ => Method::Other,
        };
        let target = request.path.unwrap_or("/");
        let path = target.split_once('?').map_or(target, |(p, _)| p).to_owned();
        let mut content_length: Option<u64> = None;
        let mut chunked = false;
        let mut expect_continue = false;
        let mut close = request.version == Some(0);
        let mut error_type = None;
        for header in request.headers.iter() {
            let name = header.name;
            let value = std::str::from_utf8(header.value)
                .map_err(|_| WireError::Malformed("a header value is not UTF-8"))?
                .trim();
            if name.eq_ignore_ascii_case("content-length") {
                let parsed = parse_length(value)?;
                // Repeated with different values is how requests are smuggled.
                if content_length.is_some_and(|seen| seen != parsed) {
                    return Err(WireError::Malformed("conflicting Content-Length headers"));
                }
                content_length = Some(parsed);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                // Only `chunked` is a body framing a runtime would use; any
                // other coding, or `chunked` not last, cannot be delimited.
                if chunked || !value.eq_ignore_ascii_case("chunked") {
                    return Err(WireError::Malformed(
                        "a Transfer-Encoding other than chunked",
                    ));
                }
                chunked = true;
            } else if name.eq_ignore_ascii_case("expect") {
                expect_continue = value.eq_ignore_ascii_case("100-continue");
            } else if name.eq_ignore_ascii_case("connection") {
                for token in value.split(',').map(str::trim) {
                    if token.eq_ignore_ascii_case("close") {
                        close = true;
                    } else if token.eq_ignore_ascii_case("keep-alive") {
                        close = false;
                    }
                }
            } else if name.eq_ignore_ascii_case("lambda-runtime-function-error-type") {
                error_type = Some(value.to_owned());
            }
        }
        let framing = match (chunked, content_length) {
            (true, Some(_)) => {
                return Err(WireError::Malformed(
                    "both Transfer-Encoding and Content-Length",
                ));
            }
            (true, None) => Framing::Chunked,
            (false, length) => Framing::Length(length.unwrap_or(0)),
        };
        self.read.advance(length);
        Ok(Some(Head {
            method,
            path,
            error_type,
            framing,
            expect_continue,
            close,
        }))
    }

    /// Reads the body of `head`, up to `limit` bytes. Over the limit, the
    /// rest is left unread and the connection must close after the answer.
    pub(crate) async fn read_body(&mut self, head: &Head, limit: usize) -> Result<Body, WireError> {
        let limit = limit as u64;
        match head.framing {
            Framing::Length(0) => Ok(Body::Complete(Bytes::new())),
            Framing::Length(length) if length > limit => {
                self.closing = true;
                Ok(Body::TooLarge)
            }
            Framing::Length(length) => {
                self.continue_if_expected(head).await?;
                let length = length as usize;
                while self.read.len() < length {
                    self.fill_or_fail().await?;
                }
                Ok(Body::Complete(self.read.split_to(length).freeze()))
            }
            Framing::Chunked => {
                self.continue_if_expected(head).await?;
                self.read_chunked(limit).await
            }
        }
    }

    async fn read_chunked(&mut self, limit: u64) -> Result<Body, WireError> {
        let mut body = BytesMut::new();
        loop {
            let (line, size) = loop {
                match httparse::parse_chunk_size(&self.read) {
                    Ok(httparse::Status::Complete(found)) => break found,
                    Ok(httparse::Status::Partial) if self.read.len() <= CHUNK_LINE_BYTES_MAX => {
                        self.fill_or_fail().await?;
                    }
                    _ => return Err(WireError::Malformed("a bad chunk-size line")),
                }
            };
            self.read.advance(line);
            if size == 0 {
                self.skip_trailers().await?;
                return Ok(Body::Complete(body.freeze()));
            }
            // A size line may say up to 2^64 - 1: compared with what is left
            // of the limit, so that no sum can wrap.
            let room = limit.saturating_sub(body.len() as u64);
            if size > room {
                self.closing = true;
                return Ok(Body::TooLarge);
            }
            // Within the limit, so within memory.
            let size = size as usize;
            while self.read.len() < size + 2 {
                self.fill_or_fail().await?;
            }
            body.extend_from_slice(&self.read[..size]);
            if &self.read[size..size + 2] != b"\r\n" {
                return Err(WireError::Malformed("a chunk not ended by CRLF"));
            }
            self.read.advance(size + 2);
        }
    }

    /// Skips the trailer fields after the last chunk, up to the empty line.
    async fn skip_trailers(&mut self) -> Result<(), WireError> {
        let mut skipped = 0;
        loop {
            match self.read.windows(2).position(|w| w == b"\r\n") {
                Some(0) => {
                    self.read.advance(2);
                    return Ok(());
                }
                Some(end) => {
                    skipped += end + 2;
                    self.read.advance(end + 2);
                }
                None => self.fill_or_fail().await.map(drop)?,
            }
            if skipped > HEAD_BYTES_MAX || self.read.len() > HEAD_BYTES_MAX {
                return Err(WireError::HeadTooLarge);
            }
        }
    }

    async fn continue_if_expected(&mut self, head: &Head) -> Result<(), WireError> {
        if head.expect_continue {
            self.stream
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await?;
        }
        Ok(())
    }

    /// Reads what the socket has; 0 at its end.
    async fn fill(&mut self) -> Result<usize, WireError> {
        self.read.reserve(READ_CHUNK_BYTES);
        Ok(self.stream.read_buf(&mut self.read).await?)
    }

    async fn fill_or_fail(&mut self) -> Result<usize, WireError> {
        match self.fill().await? {
            0 => Err(WireError::Malformed("the connection closed mid-body")),
            n => Ok(n),
        }
    }

    /// Writes a whole answer: `headers` are `name: value\r\n` lines.
    pub(crate) async fn respond(
        &mut self,
        status: Status,
        headers: &[u8],
        body: &[u8],
    ) -> Result<(), WireError> {
        let mut head = Vec::with_capacity(160 + headers.len());
        head.extend_from_slice(status.line().as_bytes());
        head.extend_from_slice(headers);
        head.extend_from_slice(b"content-length: ");
        head.extend_from_slice(body.len().to_string().as_bytes());
        if self.closing {
            head.extend_from_slice(b"\r\nconnection: close");
        }
        head.extend_from_slice(b"\r\n\r\n");
        let mut answer = Buf::chain(&head[..], body);
        let written = self.stream.write_all_buf(&mut answer).await;
        self.between = !self.closing && written.is_ok();
        written.map_err(WireError::from)
    }

    /// Writes an answer made of constants, whole (it says its own length).
    pub(crate) async fn respond_raw(&mut self, answer: &'static [u8]) -> Result<(), WireError> {
        let written = self.stream.write_all(answer).await;
        self.between = !self.closing && written.is_ok();
        written.map_err(WireError::from)
    }

    /// Answers a request that could not be read, if it can be answered,
    /// and closes.
    pub(crate) async fn refuse(&mut self, error: &WireError) {
        self.closing = true;
        let (status, message) = match error {
            WireError::Malformed(why) => (Status::BadRequest, *why),
            WireError::HeadTooLarge => (Status::HeadersTooLarge, "request head too large"),
            WireError::Closed | WireError::Io(_) => return,
        };
        self.respond_error(status, message, "InvalidRequest").await;
    }

    /// An error answer in the shape AWS's emulator gives. A runtime that
    /// cannot read it is gone; the next read on the connection says so.
    pub(crate) async fn respond_error(&mut self, status: Status, message: &str, error_type: &str) {
        let body = serde_json::json!({ "errorMessage": message, "errorType": error_type });
        let _ = self
            .respond(
                status,
                b"content-type: application/json\r\n",
                body.to_string().as_bytes(),
            )
            .await;
    }
}

/// A `Content-Length` value: digits only (no sign, no list).
fn parse_length(value: &str) -> Result<u64, WireError> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(WireError::Malformed(
            "a Content-Length that is not a number",
        ));
    }
    value
        .parse()
        .map_err(|_| WireError::Malformed("a Content-Length out of range"))
}

/// Whether `value` may be sent as a header value as it is: no control
/// characters (CR and LF above all), which would split the answer.
pub(crate) fn is_header_safe(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}
