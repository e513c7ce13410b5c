//! The AWS Lambda Runtime API (2018-06-01) for one sandbox.
//!
//! The function long-polls `GET /2018-06-01/runtime/invocation/next` for its
//! next event and posts the result to `…/invocation/{id}/response` or
//! `…/invocation/{id}/error`; a runtime that cannot initialise posts
//! `/2018-06-01/runtime/init/error`. One endpoint serves one sandbox and
//! accepts results only for that sandbox's current request id: any other id
//! gets 400 `InvalidRequestID`, an unknown path 404, as AWS's emulator answers.
//!
//! # Who serves a connection
//!
//! A runtime asks `/next` and waits; the next invocation is the answer.
//! While its connection waits on `/next`, or sits between requests after a
//! result, it is *parked* in the sandbox's state, held by no task. The next
//! invocation takes it and drives the exchange itself — reads the `/next`,
//! writes the event, reads the posted result, writes the 202 — so a hot
//! invocation hands nothing between tasks from the caller's request to its
//! answer. Everything else (init, a runtime that opens a connection per
//! request, a second connection, a wrong id) is served by a task per
//! connection with the same code (`serve`), and a parked connection the
//! invocation cannot use is handed back to one. HTTP/1.1 itself is `wire`.

use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore, mpsc, oneshot, watch};

use crate::limits;

mod wire;

use wire::{Body, Conn, Head, Method, Status, WireError};

/// An event handed to the function by `/next`.
#[derive(Debug)]
pub(crate) struct Event {
    pub request_id: String,
    pub deadline_ms: u64,
    pub invoked_function_arn: String,
    pub trace_id: Option<String>,
    pub client_context: Option<String>,
    pub cognito_identity: Option<String>,
    pub payload: Bytes,
}

/// A function error as Lambda shapes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FunctionError {
    /// `errorType`, e.g. `Runtime.ExitError`, `Sandbox.Timedout`, or the runtime's own.
    pub error_type: String,
    /// `errorMessage`.
    pub error_message: String,
    /// The body returned to the caller: what the runtime posted when it is
    /// JSON with Lambda's fields, else `{"errorMessage","errorType"}`.
    pub body: Bytes,
}

impl FunctionError {
    /// A platform-made error with Lambda's body shape.
    pub fn new(error_type: impl Into<String>, error_message: impl Into<String>) -> FunctionError {
        let (error_type, error_message) = (error_type.into(), error_message.into());
        let body = serde_json::json!({ "errorMessage": error_message, "errorType": error_type });
        FunctionError {
            error_type,
            error_message,
            body: Bytes::from(body.to_string()),
        }
    }

    /// From a body a runtime posted, with the type header as fallback.
    fn from_posted(body: Bytes, type_header: Option<&str>) -> FunctionError {
        let parsed: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
        let field = |name: &str| {
            parsed
                .as_ref()
                .and_then(|v| v.get(name))
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        };
        match (
            field("errorType").or(type_header.map(str::to_owned)),
            field("errorMessage"),
        ) {
            (Some(error_type), Some(error_message)) if parsed.is_some() => FunctionError {
                error_type,
                error_message,
                body,
            },
            (error_type, _) => FunctionError::new(
                error_type.unwrap_or_else(|| "Unhandled".to_owned()),
                String::from_utf8_lossy(&body).into_owned(),
            ),
        }
    }
}

/// What the function answered for the current request.
#[derive(Debug)]
pub(crate) enum Reply {
    Response(Bytes),
    Error(FunctionError),
}

/// The request the function may answer.
struct Current {
    request_id: String,
    /// Set by the first result posted for it: a second is refused.
    answered: bool,
    /// Where a result served by a connection task goes. A result read by
    /// the invocation itself is returned to it, not sent.
    reply: Option<oneshot::Sender<Reply>>,
}

/// A runtime's connection that no task holds, for the next invocation to drive.
struct Parked {
    conn: Conn,
    /// Its `/next` is read and waits for an event; else it is between requests.
    asked_next: bool,
}

#[derive(Default)]
struct State {
    current: Option<Current>,
    /// The current event until a `/next` takes it, when no connection had
    /// asked for it when it came.
    queued: Option<Event>,
    parked: Option<Parked>,
}

/// State shared by the connection tasks, the invocations and the sandbox.
struct Shared {
    state: Mutex<State>,
    /// Wakes a connection task whose `/next` waits while another connection
    /// is parked, when an event is queued.
    event_queued: Notify,
    /// Count of `/next` calls: the first one ends init.
    next_calls: watch::Sender<u64>,
    /// An error posted to `/init/error`.
    init_error: watch::Sender<Option<FunctionError>>,
    /// Connections an invocation gives back, for the server to serve.
    handed_back: mpsc::UnboundedSender<(Conn, Pending)>,
}

/// Where a connection handed to a task stands in its exchange.
enum Pending {
    /// Between requests.
    Nothing,
    /// This request is read but not served.
    Request(Head),
    /// Its `/next` is read and waits for an event.
    Next,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Gives `conn` to a connection task, in the state `pending` says.
    fn hand_back(&self, conn: Conn, pending: Pending) {
        // A closed server means a sandbox being torn down: the connection goes with it.
        let _ = self.handed_back.send((conn, pending));
    }

    /// Keeps a connection that is between requests for the next invocation,
    /// or, if another is kept already, gives it to a task.
    fn park_between_requests(&self, conn: Conn) {
        if !conn.is_between_requests() {
            return;
        }
        let mut state = self.state();
        if state.parked.is_none() {
            state.parked = Some(Parked {
                conn,
                asked_next: false,
            });
        } else {
            drop(state);
            self.hand_back(conn, Pending::Nothing);
        }
    }

    /// Marks `id` answered if it is the current, unanswered request.
    fn answer(&self, id: &str) -> bool {
        let mut state = self.state();
        match state.current.as_mut() {
            Some(c) if c.request_id == id && !c.answered => {
                c.answered = true;
                true
            }
            _ => false,
        }
    }

    /// Hands a result a connection task read for `id` to the invocation
    /// waiting for it.
    fn deliver(&self, id: &str, reply: Reply) {
        let sender = self
            .state()
            .current
            .as_mut()
            .filter(|c| c.request_id == id)
            .and_then(|c| c.reply.take());
        if let Some(sender) = sender {
            let _ = sender.send(reply);
        }
    }
}

/// The sandbox's side of its Runtime API.
pub(crate) struct RuntimeApi {
    shared: Arc<Shared>,
    /// Taken by the server when it starts.
    handed_back: Option<mpsc::UnboundedReceiver<(Conn, Pending)>>,
}

impl RuntimeApi {
    pub(crate) fn new() -> RuntimeApi {
        let (handed_back, receiver) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            event_queued: Notify::new(),
            next_calls: watch::channel(0).0,
            init_error: watch::channel(None).0,
            handed_back,
        });
        RuntimeApi {
            shared,
            handed_back: Some(receiver),
        }
    }

    pub(crate) fn next_calls(&self) -> watch::Receiver<u64> {
        self.shared.next_calls.subscribe()
    }

    pub(crate) fn init_error(&self) -> watch::Receiver<Option<FunctionError>> {
        self.shared.init_error.subscribe()
    }

    /// Makes `event` the current request: the invocation takes the parked
    /// connection, if there is one, or queues the event for a `/next`.
    pub(crate) fn begin(&self, event: Event) -> Invocation {
        let (reply, receiver) = oneshot::channel();
        let mut state = self.shared.state();
        state.current = Some(Current {
            request_id: event.request_id.clone(),
            answered: false,
            reply: Some(reply),
        });
        // A runtime gone from its parked connection (a `/next` given up on)
        // would take the event with it: the event waits for its next `/next`.
        let direct = state.parked.take().filter(|p| !p.conn.peer_closed());
        let event = match &direct {
            Some(parked) if parked.asked_next => Some(event),
            // Queued even when a connection between requests was taken: the
            // runtime may ask over another one.
            _ => {
                state.queued = Some(event);
                None
            }
        };
        drop(state);
        if event.is_none() {
            self.shared.event_queued.notify_one();
        }
        Invocation {
            shared: self.shared.clone(),
            reply: receiver,
            direct,
            event,
        }
    }

    /// Serves the Runtime API on `listener` until the returned task is aborted.
    pub(crate) fn spawn_server(&mut self, listener: TcpListener) -> tokio::task::JoinHandle<()> {
        let handed_back = self
            .handed_back
            .take()
            .unwrap_or_else(|| mpsc::unbounded_channel().1);
        tokio::spawn(serve_listener(self.shared.clone(), listener, handed_back))
    }
}

/// One invocation's exchange with the runtime, from its event to its result.
pub(crate) struct Invocation {
    shared: Arc<Shared>,
    reply: oneshot::Receiver<Reply>,
    /// The runtime's parked connection, which this invocation drives itself.
    direct: Option<Parked>,
    /// The event, when the parked connection had asked for it already.
    event: Option<Event>,
}

/// How driving the parked connection ended.
enum Driven {
    /// The result came over it.
    Replied(Reply),
    /// Something else came: a task serves it from here on.
    HandBack(Pending),
    /// The connection is closed or broken.
    Lost,
}

impl Invocation {
    /// The function's result; `None` if the sandbox's Runtime API is gone.
    ///
    /// Cancelling it (the invocation's timeout, the function's death) drops
    /// the connection it drives: the sandbox is being killed then.
    pub(crate) async fn result(mut self) -> Option<Reply> {
        if let Some(parked) = self.direct.take() {
            let mut conn = parked.conn;
            let event = self.event.take();
            let driven = tokio::select! {
                biased;
                driven = drive(&self.shared, &mut conn, parked.asked_next, event) => driven,
                // Answered over another connection: a runtime that opens one per request.
                reply = &mut self.reply => {
                    self.shared.park_between_requests(conn);
                    return reply.ok();
                }
            };
            match driven {
                Driven::Replied(reply) => {
                    self.shared.park_between_requests(conn);
                    return Some(reply);
                }
                Driven::HandBack(pending) => self.shared.hand_back(conn, pending),
                Driven::Lost => {}
            }
        }
        self.reply.await.ok()
    }
}

/// Serves the current invocation over the runtime's parked connection:
/// its `/next` (unless already read), the event, and the requests after it
/// until its result.
async fn drive(shared: &Shared, conn: &mut Conn, asked_next: bool, event: Option<Event>) -> Driven {
    let event = match event {
        Some(event) if asked_next => event,
        _ => {
            let head = match conn.read_head().await {
                Ok(head) => head,
                Err(e) => {
                    conn.refuse(&e).await;
                    return Driven::Lost;
                }
            };
            if route(&head) != Route::Next || head.has_body() {
                return Driven::HandBack(Pending::Request(head));
            }
            shared.next_calls.send_modify(|n| *n += 1);
            let queued = shared.state().queued.take();
            match queued {
                Some(event) => event,
                // Another connection asked first and took it.
                None => return Driven::HandBack(Pending::Next),
            }
        }
    };
    if write_event(conn, &event).await.is_err() || !conn.is_open() {
        // Closed after the event (`Connection: close`): the result comes
        // over another connection.
        return Driven::Lost;
    }
    loop {
        let head = match conn.read_head().await {
            Ok(head) => head,
            Err(e) => {
                conn.refuse(&e).await;
                return Driven::Lost;
            }
        };
        match serve(shared, conn, head).await {
            Ok(Served::Result(_, reply)) => return Driven::Replied(reply),
            Ok(Served::Next) => return Driven::HandBack(Pending::Next),
            Ok(Served::Answered) if conn.is_open() => {}
            Ok(Served::Answered) => return Driven::Lost,
            Err(e) => {
                conn.refuse(&e).await;
                return Driven::Lost;
            }
        }
    }
}

async fn serve_listener(
    shared: Arc<Shared>,
    listener: TcpListener,
    mut handed_back: mpsc::UnboundedReceiver<(Conn, Pending)>,
) {
    let connections = Arc::new(Semaphore::new(limits::RUNTIME_API_CONNECTIONS_MAX));
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let (conn, pending) = tokio::select! {
            accepted = accept(&listener, &connections) => match accepted {
                Some(conn) => (conn, Pending::Nothing),
                None => continue,
            },
            Some(given) = handed_back.recv() => given,
        };
        tasks.spawn(serve_connection(shared.clone(), conn, pending));
        while tasks.try_join_next().is_some() {}
    }
}

/// The next connection, within the sandbox's bound: a function opening
/// connections without end waits here instead of growing the host's task count.
async fn accept(listener: &TcpListener, connections: &Arc<Semaphore>) -> Option<Conn> {
    let permit = connections.clone().acquire_owned().await.ok()?;
    let (stream, _) = listener.accept().await.ok()?;
    let _ = stream.set_nodelay(true);
    Some(Conn::new(stream, permit))
}

/// Serves one connection's requests until it closes or is parked.
async fn serve_connection(shared: Arc<Shared>, mut conn: Conn, mut pending: Pending) {
    loop {
        let head = match std::mem::replace(&mut pending, Pending::Nothing) {
            Pending::Next => {
                let Some((taken, event)) = wait_for_event(&shared, conn).await else {
                    return;
                };
                conn = taken;
                if write_event(&mut conn, &event).await.is_err() {
                    return;
                }
                continue;
            }
            Pending::Request(head) => head,
            Pending::Nothing if !conn.is_open() => return,
            Pending::Nothing => match conn.read_head().await {
                Ok(head) => head,
                Err(e) => return conn.refuse(&e).await,
            },
        };
        match serve(&shared, &mut conn, head).await {
            Ok(Served::Next) => pending = Pending::Next,
            Ok(Served::Result(id, reply)) => shared.deliver(&id, reply),
            Ok(Served::Answered) => {}
            Err(e) => return conn.refuse(&e).await,
        }
    }
}

/// A `/next` a task serves: the queued event; else the connection is
/// parked for the next invocation (`None`); else, another being parked,
/// it waits for an event.
async fn wait_for_event(shared: &Shared, conn: Conn) -> Option<(Conn, Event)> {
    loop {
        let queued = shared.event_queued.notified();
        {
            let mut state = shared.state();
            if let Some(event) = state.queued.take() {
                if !conn.peer_closed() {
                    return Some((conn, event));
                }
                // The runtime gave up on this `/next`: the event waits for
                // one that is still asked.
                state.queued = Some(event);
                drop(state);
                shared.event_queued.notify_one();
                return None;
            }
            if state.parked.is_none() {
                state.parked = Some(Parked {
                    conn,
                    asked_next: true,
                });
                return None;
            }
        }
        queued.await;
    }
}

/// The Runtime API's paths.
#[derive(Debug, PartialEq, Eq)]
enum Route<'a> {
    Next,
    Result {
        id: &'a str,
        error: bool,
    },
    InitError,
    /// A path of the API asked with the wrong method.
    WrongMethod,
    Unknown,
}

fn route(head: &Head) -> Route<'_> {
    let Some(rest) = head.path.strip_prefix("/2018-06-01/runtime/") else {
        return Route::Unknown;
    };
    let (found, method) = match rest {
        "invocation/next" => (Route::Next, Method::Get),
        "init/error" => (Route::InitError, Method::Post),
        _ => match rest
            .strip_prefix("invocation/")
            .and_then(|r| r.split_once('/'))
        {
            Some((id, "response")) if !id.is_empty() => {
                (Route::Result { id, error: false }, Method::Post)
            }
            Some((id, "error")) if !id.is_empty() => {
                (Route::Result { id, error: true }, Method::Post)
            }
            _ => return Route::Unknown,
        },
    };
    if head.method == method {
        found
    } else {
        Route::WrongMethod
    }
}

/// What serving one request left to its caller.
enum Served {
    /// The runtime asked `/next`: the caller answers it with an event.
    Next,
    /// The result of the current request (its id), accepted: the caller
    /// hands it on.
    Result(String, Reply),
    /// Answered; nothing follows.
    Answered,
}

/// The most of a body read only to be thrown away (a request that should have none).
const IGNORED_BODY_BYTES_MAX: usize = 64 * 1024;

/// Serves one request but for the event of a `/next`.
async fn serve(shared: &Shared, conn: &mut Conn, head: Head) -> Result<Served, WireError> {
    match route(&head) {
        Route::Next => {
            conn.read_body(&head, IGNORED_BODY_BYTES_MAX).await?;
            shared.next_calls.send_modify(|n| *n += 1);
            Ok(Served::Next)
        }
        Route::Result { id, error } => {
            let body = conn.read_body(&head, limits::RESPONSE_BYTES_MAX).await?;
            if !shared.answer(id) {
                conn.respond_error(Status::BadRequest, "Invalid request ID", "InvalidRequestID")
                    .await;
                return Ok(Served::Answered);
            }
            let reply = match body {
                Body::Complete(body) if error => {
                    Reply::Error(FunctionError::from_posted(body, head.error_type.as_deref()))
                }
                Body::Complete(body) => Reply::Response(body),
                Body::TooLarge => {
                    let message = format!(
                        "Response payload size exceeded maximum allowed payload size ({} bytes).",
                        limits::RESPONSE_BYTES_MAX
                    );
                    conn.respond_error(Status::PayloadTooLarge, &message, "RequestEntityTooLarge")
                        .await;
                    let error = FunctionError::new("Function.ResponseSizeTooLarge", message);
                    return Ok(Served::Result(id.to_owned(), Reply::Error(error)));
                }
            };
            // A runtime gone before reading this leaves its result standing.
            let _ = write_accepted(conn).await;
            Ok(Served::Result(id.to_owned(), reply))
        }
        Route::InitError => {
            let Body::Complete(body) = conn.read_body(&head, limits::RESPONSE_BYTES_MAX).await?
            else {
                conn.respond_error(
                    Status::PayloadTooLarge,
                    "Payload Too Large",
                    "RequestEntityTooLarge",
                )
                .await;
                return Ok(Served::Answered);
            };
            let body = body.slice(..body.len().min(limits::INIT_ERROR_BYTES_MAX));
            let posted = FunctionError::from_posted(body, head.error_type.as_deref());
            shared.init_error.send_replace(Some(posted));
            let _ = write_accepted(conn).await;
            Ok(Served::Answered)
        }
        route @ (Route::WrongMethod | Route::Unknown) => {
            conn.read_body(&head, IGNORED_BODY_BYTES_MAX).await?;
            let (status, message, error_type) = if route == Route::WrongMethod {
                (
                    Status::MethodNotAllowed,
                    "Method Not Allowed",
                    "MethodNotAllowed",
                )
            } else {
                (Status::NotFound, "Not Found", "NotFound")
            };
            conn.respond_error(status, message, error_type).await;
            Ok(Served::Answered)
        }
    }
}

/// The answer to a result posted for the current request, built from
/// constants: it is written once per invocation.
const ACCEPTED: &[u8] = b"HTTP/1.1 202 Accepted\r\ncontent-type: application/json\r\n\
content-length: 15\r\n\r\n{\"status\":\"OK\"}";

/// The same for a request that asked to close the connection after it.
const ACCEPTED_THEN_CLOSE: &[u8] = b"HTTP/1.1 202 Accepted\r\ncontent-type: application/json\r\n\
connection: close\r\ncontent-length: 15\r\n\r\n{\"status\":\"OK\"}";

async fn write_accepted(conn: &mut Conn) -> Result<(), WireError> {
    let answer = if conn.is_open() {
        ACCEPTED
    } else {
        ACCEPTED_THEN_CLOSE
    };
    conn.respond_raw(answer).await
}

/// Answers a `/next` with `event`.
async fn write_event(conn: &mut Conn, event: &Event) -> Result<(), WireError> {
    let mut headers = Vec::with_capacity(256);
    let mut put = |name: &str, value: &str| {
        // A value that would split the answer is left out, as hyper refused it before.
        if wire::is_header_safe(value) {
            headers.extend_from_slice(name.as_bytes());
            headers.extend_from_slice(b": ");
            headers.extend_from_slice(value.as_bytes());
            headers.extend_from_slice(b"\r\n");
        }
    };
    put("content-type", "application/json");
    put("lambda-runtime-aws-request-id", &event.request_id);
    put("lambda-runtime-deadline-ms", &event.deadline_ms.to_string());
    put(
        "lambda-runtime-invoked-function-arn",
        &event.invoked_function_arn,
    );
    put(
        "lambda-runtime-trace-id",
        event.trace_id.as_deref().unwrap_or(""),
    );
    if let Some(v) = &event.client_context {
        put("lambda-runtime-client-context", v);
    }
    if let Some(v) = &event.cognito_identity {
        put("lambda-runtime-cognito-identity", v);
    }
    conn.respond(Status::Ok, &headers, &event.payload).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// One HTTP/1.1 request over a real socket; returns the status line and body.
    fn http(port: u16, method: &str, path: &str, body: &[u8]) -> (String, String) {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).unwrap();
        let _ = stream.write_all(body);
        let mut raw = String::new();
        let _ = stream.read_to_string(&mut raw);
        let status = raw.lines().next().unwrap_or("").to_owned();
        let body = raw
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body)
    }

    fn event(id: &str) -> Event {
        Event {
            request_id: id.to_owned(),
            deadline_ms: 1,
            invoked_function_arn: "arn".to_owned(),
            trace_id: None,
            client_context: Some("ctx".to_owned()),
            cognito_identity: None,
            payload: Bytes::from_static(b"{}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn answers_only_the_current_request() {
        let mut api = RuntimeApi::new();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = api.spawn_server(listener);
        let blocking =
            |f: Box<dyn FnOnce() -> (String, String) + Send>| tokio::task::spawn_blocking(f);

        let (status, _) = blocking(Box::new(move || {
            http(port, "GET", "/2018-06-01/runtime/nope", b"")
        }))
        .await
        .unwrap();
        assert!(status.contains("404"), "{status}");
        let (status, body) = blocking(Box::new(move || {
            http(
                port,
                "POST",
                "/2018-06-01/runtime/invocation/nobody/response",
                b"x",
            )
        }))
        .await
        .unwrap();
        assert!(
            status.contains("400") && body.contains("InvalidRequestID"),
            "{status} {body}"
        );

        let reply = api.begin(event("r1"));
        let (status, _) = blocking(Box::new(move || {
            http(port, "GET", "/2018-06-01/runtime/invocation/next", b"")
        }))
        .await
        .unwrap();
        assert!(status.contains("200"), "{status}");
        let (status, _) = blocking(Box::new(move || {
            http(
                port,
                "POST",
                "/2018-06-01/runtime/invocation/r1/response",
                b"done",
            )
        }))
        .await
        .unwrap();
        assert!(status.contains("202"), "{status}");
        assert!(matches!(reply.result().await.unwrap(), Reply::Response(b) if b == "done"));
        // A second answer to the same request is refused.
        let (status, _) = blocking(Box::new(move || {
            http(
                port,
                "POST",
                "/2018-06-01/runtime/invocation/r1/response",
                b"again",
            )
        }))
        .await
        .unwrap();
        assert!(status.contains("400"), "{status}");

        let reply = api.begin(event("r2"));
        let big = vec![b'x'; limits::RESPONSE_BYTES_MAX + 1];
        let (status, _) = blocking(Box::new(move || {
            http(
                port,
                "POST",
                "/2018-06-01/runtime/invocation/r2/response",
                &big,
            )
        }))
        .await
        .unwrap();
        assert!(status.contains("413"), "{status}");
        assert!(
            matches!(reply.result().await.unwrap(), Reply::Error(e) if e.error_type == "Function.ResponseSizeTooLarge")
        );

        let mut init_error = api.init_error();
        let (status, _) = blocking(Box::new(move || {
            http(
                port,
                "POST",
                "/2018-06-01/runtime/init/error",
                br#"{"errorMessage":"m","errorType":"T"}"#,
            )
        }))
        .await
        .unwrap();
        assert!(status.contains("202"), "{status}");
        let posted = init_error
            .wait_for(Option::is_some)
            .await
            .unwrap()
            .clone()
            .unwrap();
        assert_eq!(posted.error_type, "T");
        server.abort();
    }

    #[test]
    fn posted_errors_keep_lambdas_shape() {
        let e = FunctionError::from_posted(
            Bytes::from_static(
                br#"{"errorMessage":"boom","errorType":"ValueError","stackTrace":[]}"#,
            ),
            None,
        );
        assert_eq!(
            (e.error_type.as_str(), e.error_message.as_str()),
            ("ValueError", "boom")
        );
        let e = FunctionError::from_posted(Bytes::from_static(b"not json"), Some("Runtime.Weird"));
        assert_eq!(e.error_type, "Runtime.Weird");
        let body: serde_json::Value = serde_json::from_slice(&e.body).unwrap();
        assert_eq!(body["errorMessage"], "not json");
    }

    /// A runtime's side of one connection, scripted.
    struct Runtime {
        stream: tokio::net::TcpStream,
        read: Vec<u8>,
    }

    /// What one answer said: its status, its head (lower-cased) and its body.
    struct Answer {
        status: u16,
        head: String,
        body: Vec<u8>,
    }

    const NEXT: &[u8] = b"GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: t\r\n\r\n";

    impl Runtime {
        async fn connect(port: u16) -> Runtime {
            let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap();
            Runtime {
                stream,
                read: Vec::new(),
            }
        }

        async fn send(&mut self, raw: &[u8]) {
            use tokio::io::AsyncWriteExt as _;
            self.stream.write_all(raw).await.unwrap();
        }

        /// Reads one answer (a `Content-Length` body), failing after 5 s.
        async fn answer(&mut self) -> Answer {
            use tokio::io::AsyncReadExt as _;
            let read = async {
                loop {
                    let mut headers = [httparse::EMPTY_HEADER; 32];
                    let mut response = httparse::Response::new(&mut headers);
                    if let httparse::Status::Complete(end) = response.parse(&self.read).unwrap() {
                        let length: usize = response
                            .headers
                            .iter()
                            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                            .map_or(0, |h| {
                                std::str::from_utf8(h.value).unwrap().parse().unwrap()
                            });
                        if self.read.len() >= end + length {
                            let head = String::from_utf8_lossy(&self.read[..end]).to_lowercase();
                            let body = self.read[end..end + length].to_vec();
                            let status = response.code.unwrap();
                            self.read.drain(..end + length);
                            return Answer { status, head, body };
                        }
                    }
                    let mut chunk = [0u8; 4096];
                    let n = self.stream.read(&mut chunk).await.unwrap();
                    assert!(n > 0, "the connection closed");
                    self.read.extend_from_slice(&chunk[..n]);
                }
            };
            tokio::time::timeout(std::time::Duration::from_secs(5), read)
                .await
                .expect("an answer within 5 s")
        }

        /// Whether the server closed the connection (within 5 s).
        async fn closed(&mut self) -> bool {
            use tokio::io::AsyncReadExt as _;
            let mut rest = Vec::new();
            let read = self.stream.read_to_end(&mut rest);
            matches!(
                tokio::time::timeout(std::time::Duration::from_secs(5), read).await,
                Ok(Ok(_)) | Ok(Err(_))
            )
        }
    }

    async fn api_on_a_port() -> (RuntimeApi, u16, tokio::task::JoinHandle<()>) {
        let mut api = RuntimeApi::new();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = api.spawn_server(listener);
        (api, port, server)
    }

    /// Waits until a connection is parked for the next invocation.
    async fn parked(api: &RuntimeApi) {
        for _ in 0..5000 {
            if api.shared.state().parked.is_some() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        panic!("no connection was parked");
    }

    fn post(id: &str, kind: &str, body: &str) -> Vec<u8> {
        format!(
            "POST /2018-06-01/runtime/invocation/{id}/{kind} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    /// The runtime posts `body` as `id`'s response: it is accepted, and it
    /// is what the invocation gets.
    async fn answered(
        runtime: &mut Runtime,
        result: tokio::task::JoinHandle<Option<Reply>>,
        id: &str,
        body: &str,
    ) {
        runtime.send(&post(id, "response", body)).await;
        assert_eq!(runtime.answer().await.status, 202);
        let reply = result.await.unwrap();
        assert!(
            matches!(&reply, Some(Reply::Response(b)) if b == body),
            "{reply:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_invocation_drives_a_keep_alive_runtime_itself() {
        let (api, port, server) = api_on_a_port().await;
        let mut runtime = Runtime::connect(port).await;
        runtime.send(NEXT).await;
        parked(&api).await;

        // The /next is parked: the invocation answers it itself.
        let invocation = api.begin(event("r1"));
        assert!(invocation.direct.as_ref().is_some_and(|p| p.asked_next));
        let result = tokio::spawn(invocation.result());
        let answer = runtime.answer().await;
        assert_eq!(answer.status, 200);
        assert!(
            answer
                .head
                .contains("lambda-runtime-aws-request-id: r1\r\n")
                && answer
                    .head
                    .contains("lambda-runtime-client-context: ctx\r\n"),
            "{}",
            answer.head
        );
        assert_eq!(answer.body, b"{}");
        // The result, with the next /next pipelined behind it.
        let mut raw = post("r1", "response", "done");
        raw.extend_from_slice(NEXT);
        runtime.send(&raw).await;
        assert_eq!(runtime.answer().await.status, 202);
        assert!(matches!(result.await.unwrap(), Some(Reply::Response(b)) if b == "done"));

        // Between requests, the connection is parked again: the next
        // invocation reads the /next waiting on it.
        let invocation = api.begin(event("r2"));
        assert!(invocation.direct.as_ref().is_some_and(|p| !p.asked_next));
        let result = tokio::spawn(invocation.result());
        let answer = runtime.answer().await;
        assert!(
            answer
                .head
                .contains("lambda-runtime-aws-request-id: r2\r\n")
        );
        assert_eq!(*api.next_calls().borrow(), 2);
        // A wrong id is refused on the way; the connection stays open.
        runtime.send(&post("r1", "response", "late")).await;
        let refused = runtime.answer().await;
        assert_eq!(refused.status, 400);
        assert!(String::from_utf8_lossy(&refused.body).contains("InvalidRequestID"));
        // The error, chunked, behind `Expect: 100-continue`.
        runtime
            .send(
                b"POST /2018-06-01/runtime/invocation/r2/error HTTP/1.1\r\nHost: t\r\n\
                  Expect: 100-continue\r\nTransfer-Encoding: chunked\r\n\
                  Lambda-Runtime-Function-Error-Type: Fallback\r\n\r\n",
            )
            .await;
        assert_eq!(runtime.answer().await.status, 100);
        runtime
            .send(b"10\r\n{\"errorMessage\":\r\n14;ext=1\r\n\"m\",\"errorType\":\"T\"}\r\n0\r\nTrailer: x\r\n\r\n")
            .await;
        assert_eq!(runtime.answer().await.status, 202);
        let reply = result.await.unwrap();
        assert!(
            matches!(&reply, Some(Reply::Error(e)) if e.error_type == "T" && e.error_message == "m"),
            "{reply:?}"
        );
        server.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_runtime_may_ask_and_answer_over_other_connections() {
        let (api, port, server) = api_on_a_port().await;
        let mut first = Runtime::connect(port).await;
        first.send(NEXT).await;
        parked(&api).await;
        let result = tokio::spawn(api.begin(event("r1")).result());
        assert_eq!(first.answer().await.status, 200);

        // Answered over a connection of its own, closed after.
        let mut other = Runtime::connect(port).await;
        let mut raw = post("r1", "response", "one");
        raw.splice(
            raw.len() - 3 - 2..raw.len() - 3 - 2,
            b"Connection: close\r\n".iter().copied(),
        );
        other.send(&raw).await;
        let accepted = other.answer().await;
        assert_eq!(accepted.status, 202);
        assert!(other.closed().await);
        assert!(matches!(result.await.unwrap(), Some(Reply::Response(b)) if b == "one"));

        // The next /next comes over a third connection while the first is
        // parked between requests: it takes the event.
        let mut third = Runtime::connect(port).await;
        third.send(NEXT).await;
        api.next_calls().wait_for(|n| *n == 2).await.unwrap();
        let result = tokio::spawn(api.begin(event("r2")).result());
        let answer = third.answer().await;
        assert!(
            answer
                .head
                .contains("lambda-runtime-aws-request-id: r2\r\n")
        );
        answered(&mut third, result, "r2", "two").await;

        // The first connection still serves: a third invocation reads its /next.
        first.send(NEXT).await;
        let result = tokio::spawn(api.begin(event("r3")).result());
        assert!(
            first
                .answer()
                .await
                .head
                .contains("lambda-runtime-aws-request-id: r3\r\n")
        );
        answered(&mut first, result, "r3", "three").await;

        server.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_next_that_closes_its_connection_is_answered_and_closed() {
        // As a runtime of curl calls in a loop asks.
        let (api, port, server) = api_on_a_port().await;
        let mut once = Runtime::connect(port).await;
        once.send(b"GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nConnection: close\r\n\r\n")
            .await;
        parked(&api).await;
        let result = tokio::spawn(api.begin(event("r1")).result());
        let answer = once.answer().await;
        assert!(
            answer
                .head
                .contains("lambda-runtime-aws-request-id: r1\r\n")
                && answer.head.contains("connection: close"),
            "{}",
            answer.head
        );
        assert!(once.closed().await);
        let mut answering = Runtime::connect(port).await;
        answered(&mut answering, result, "r1", "one").await;
        server.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_event_never_goes_to_a_next_the_runtime_gave_up() {
        let (api, port, server) = api_on_a_port().await;
        // A parked /next whose runtime went away (a client's timeout).
        let mut gone = Runtime::connect(port).await;
        gone.send(NEXT).await;
        parked(&api).await;
        drop(gone);
        // Its retry waits on another connection, and so does a second
        // connection's /next that is then given up too.
        let mut retry = Runtime::connect(port).await;
        retry.send(NEXT).await;
        let mut also_gone = Runtime::connect(port).await;
        also_gone.send(NEXT).await;
        api.next_calls().wait_for(|n| *n == 3).await.unwrap();
        drop(also_gone);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let result = tokio::spawn(api.begin(event("r1")).result());
        let answer = retry.answer().await;
        assert!(
            answer
                .head
                .contains("lambda-runtime-aws-request-id: r1\r\n")
        );
        answered(&mut retry, result, "r1", "one").await;
        server.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hostile_requests_are_refused_and_the_api_keeps_serving() {
        let (api, port, server) = api_on_a_port().await;
        let long_header = format!(
            "GET /x HTTP/1.1\r\nX-Long: {}\r\n\r\n",
            "a".repeat(wire::HEAD_BYTES_MAX)
        );
        let many_headers = format!("GET /x HTTP/1.1\r\n{}\r\n", "X-A: b\r\n".repeat(60));
        let cases: Vec<(&[u8], u16)> = vec![
            (b"GARBAGE\r\n\r\n", 400),
            (b"GET /x HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
            (b"GET /x HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
            (b"GET /x HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n", 400),
            (b"POST /2018-06-01/runtime/init/error HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            (b"POST /2018-06-01/runtime/init/error HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
            (b"POST /2018-06-01/runtime/invocation/x/response HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
            (b"POST /2018-06-01/runtime/invocation/x/response HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n", 400),
            (long_header.as_bytes(), 431),
            (many_headers.as_bytes(), 431),
            (b"POST /2018-06-01/runtime/invocation/next HTTP/1.1\r\n\r\n", 405),
            (b"GET /2018-06-01/runtime/invocation/x/response HTTP/1.1\r\n\r\n", 405),
            (b"GET /2018-06-01/runtime/invocation//response HTTP/1.1\r\n\r\n", 404),
            // Chunk sizes whose sum with what was read would wrap around 2^64.
            (b"POST /2018-06-01/runtime/init/error HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nFFFFFFFFFFFFFFFD\r\n", 413),
            (b"POST /2018-06-01/runtime/init/error HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\nFFFFFFFFFFFFFFFF\r\n", 413),
            // Too large to accept: refused before its body is asked for.
            (b"POST /2018-06-01/runtime/init/error HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 99999999\r\n\r\n", 413),
        ];
        for (raw, status) in cases {
            let mut runtime = Runtime::connect(port).await;
            runtime.send(raw).await;
            let answer = runtime.answer().await;
            let shown = String::from_utf8_lossy(&raw[..raw.len().min(80)]).into_owned();
            assert_eq!(answer.status, status, "{shown}");
            if status != 405 && status != 404 {
                assert!(answer.head.contains("connection: close"), "{shown}");
                assert!(runtime.closed().await, "{shown}");
            }
        }

        // Mutations of well-formed requests, each on a connection the
        // runtime closes after sending: every one is answered or dropped.
        let seeds: [&[u8]; 4] = [
            b"POST /2018-06-01/runtime/invocation/abc/response HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello",
            b"POST /2018-06-01/runtime/invocation/abc/error HTTP/1.1\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            b"POST /2018-06-01/runtime/init/error HTTP/1.1\r\nLambda-Runtime-Function-Error-Type: X\r\nContent-Length: 2\r\n\r\n{}",
            b"GET /2018-06-01/runtime/nothing?x=1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        ];
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut random = move |below: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % below as u64) as usize
        };
        for _ in 0..600 {
            let mut raw = seeds[random(seeds.len())].to_vec();
            for _ in 0..1 + random(4) {
                let at = random(raw.len());
                match random(4) {
                    0 => raw[at] = b"\r\n:0 \t;-9aZ\x00\xff"[random(13)],
                    1 => raw.truncate(at),
                    2 => raw.insert(at, b"\r\n:0 \t;-9"[random(9)]),
                    _ => raw[at] ^= 1 << random(8),
                }
                if raw.is_empty() {
                    raw.push(b'\n');
                }
            }
            let mut runtime = Runtime::connect(port).await;
            runtime.send(&raw).await;
            tokio::io::AsyncWriteExt::shutdown(&mut runtime.stream)
                .await
                .unwrap();
            assert!(
                runtime.closed().await,
                "{:?}",
                String::from_utf8_lossy(&raw)
            );
        }
        assert!(!server.is_finished(), "the server stopped");

        // And a well-formed exchange still works.
        let mut runtime = Runtime::connect(port).await;
        runtime.send(NEXT).await;
        let result = tokio::spawn(api.begin(event("r1")).result());
        assert_eq!(runtime.answer().await.status, 200);
        answered(&mut runtime, result, "r1", "ok").await;
        server.abort();
    }
}
