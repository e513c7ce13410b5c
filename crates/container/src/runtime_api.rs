//! The AWS Lambda Runtime API (2018-06-01) for one sandbox.
//!
//! The function long-polls `GET /2018-06-01/runtime/invocation/next` for its
//! next event and posts the result to `…/invocation/{id}/response` or
//! `…/invocation/{id}/error`; a runtime that cannot initialise posts
//! `/2018-06-01/runtime/init/error`. One endpoint serves one sandbox and
//! accepts results only for that sandbox's current request id: any other id
//! gets 400 `InvalidRequestID`, an unknown path 404, as AWS's emulator answers.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, oneshot, watch};

use crate::limits;

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

struct Current {
    request_id: String,
    /// Taken by the first result posted; a second post for the same id is refused.
    reply: Option<oneshot::Sender<Reply>>,
}

/// State shared by the handlers and the sandbox.
struct Shared {
    /// Events waiting for `/next`; the receiver is locked by the one poll
    /// that waits (a runtime polls one at a time).
    events: tokio::sync::Mutex<mpsc::Receiver<Event>>,
    /// The request the function may answer, set before its event is queued.
    current: Mutex<Option<Current>>,
    /// Count of `/next` calls: the first one ends init.
    next_calls: watch::Sender<u64>,
    /// An error posted to `/init/error`.
    init_error: watch::Sender<Option<FunctionError>>,
}

/// The sandbox's side of its Runtime API.
pub(crate) struct RuntimeApi {
    shared: Arc<Shared>,
    events: mpsc::Sender<Event>,
}

impl RuntimeApi {
    pub(crate) fn new() -> RuntimeApi {
        // One event at a time: a sandbox runs one invocation at a time.
        let (events, receiver) = mpsc::channel(1);
        let shared = Arc::new(Shared {
            events: tokio::sync::Mutex::new(receiver),
            current: Mutex::new(None),
            next_calls: watch::channel(0).0,
            init_error: watch::channel(None).0,
        });
        RuntimeApi { shared, events }
    }

    pub(crate) fn next_calls(&self) -> watch::Receiver<u64> {
        self.shared.next_calls.subscribe()
    }

    pub(crate) fn init_error(&self) -> watch::Receiver<Option<FunctionError>> {
        self.shared.init_error.subscribe()
    }

    /// Makes `event` the current request and queues it for `/next`.
    pub(crate) fn begin(&self, event: Event) -> oneshot::Receiver<Reply> {
        let (reply, receiver) = oneshot::channel();
        *self
            .shared
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(Current {
            request_id: event.request_id.clone(),
            reply: Some(reply),
        });
        // A full queue means an earlier event was never fetched; that sandbox
        // has been killed by its timeout before reaching here again.
        let _ = self.events.try_send(event);
        receiver
    }

    /// Serves the Runtime API on `listener` until the returned task is aborted.
    pub(crate) fn spawn_server(&self, listener: TcpListener) -> tokio::task::JoinHandle<()> {
        tokio::spawn(serve(self.shared.clone(), listener))
    }
}

async fn serve(shared: Arc<Shared>, listener: TcpListener) {
    let router = Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route(
            "/2018-06-01/runtime/invocation/{id}/response",
            post(response),
        )
        .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
        .route("/2018-06-01/runtime/init/error", post(init_error))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(limits::RESPONSE_BYTES_MAX))
        .with_state(shared);
    let connections = Arc::new(Semaphore::new(limits::RUNTIME_API_CONNECTIONS_MAX));
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        // Bounded accept: a function opening connections without end
        // waits here instead of growing the host's task count.
        let Ok(permit) = connections.clone().acquire_owned().await else {
            return;
        };
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        tasks.spawn(async move {
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await;
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    }
}

fn json_status(status: StatusCode, body: serde_json::Value) -> Response {
    (
        status,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// The answer to a result posted for the current request, built from
/// constants: it is written once per invocation.
fn accepted() -> Response {
    (
        StatusCode::ACCEPTED,
        [("content-type", "application/json")],
        r#"{"status":"OK"}"#,
    )
        .into_response()
}

fn invalid_request_id() -> Response {
    json_status(
        StatusCode::BAD_REQUEST,
        serde_json::json!({ "errorMessage": "Invalid request ID", "errorType": "InvalidRequestID" }),
    )
}

async fn not_found() -> Response {
    json_status(
        StatusCode::NOT_FOUND,
        serde_json::json!({ "errorMessage": "Not Found", "errorType": "NotFound" }),
    )
}

async fn next(State(shared): State<Arc<Shared>>) -> Response {
    shared.next_calls.send_modify(|n| *n += 1);
    let Some(event) = shared.events.lock().await.recv().await else {
        return json_status(
            StatusCode::INTERNAL_SERVER_ERROR,
            serde_json::json!({ "errorMessage": "sandbox closing", "errorType": "ServiceException" }),
        );
    };
    let mut response = Response::new(axum::body::Body::from(event.payload));
    let headers = response.headers_mut();
    let mut put = |name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(name, v);
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
    response
}

/// Takes the reply channel of `id` if it is the current, unanswered request.
fn take_reply(shared: &Shared, id: &str) -> Option<oneshot::Sender<Reply>> {
    let mut current = shared.current.lock().unwrap_or_else(|e| e.into_inner());
    match current.as_mut() {
        Some(c) if c.request_id == id => c.reply.take(),
        _ => None,
    }
}

async fn response(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: axum::body::Body,
) -> Response {
    finish(&shared, &id, body, Reply::Response).await
}

async fn error(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let type_header = headers
        .get("lambda-runtime-function-error-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    finish(&shared, &id, body, |body| {
        Reply::Error(FunctionError::from_posted(body, type_header.as_deref()))
    })
    .await
}

/// Reads a result body and hands it to the waiting invocation.
///
/// The size limit is checked here rather than by a layer, so that an
/// oversized result also ends the invocation, with Lambda's error, instead
/// of leaving it to run into its timeout.
async fn finish(
    shared: &Shared,
    id: &str,
    body: axum::body::Body,
    reply_with: impl FnOnce(Bytes) -> Reply,
) -> Response {
    let body = axum::body::to_bytes(body, limits::RESPONSE_BYTES_MAX).await;
    let Some(reply) = take_reply(shared, id) else {
        return invalid_request_id();
    };
    match body {
        Ok(body) => {
            let _ = reply.send(reply_with(body));
            accepted()
        }
        Err(_) => {
            let message = format!(
                "Response payload size exceeded maximum allowed payload size ({} bytes).",
                limits::RESPONSE_BYTES_MAX
            );
            let error = FunctionError::new("Function.ResponseSizeTooLarge", message.clone());
            let _ = reply.send(Reply::Error(error));
            json_status(
                StatusCode::PAYLOAD_TOO_LARGE,
                serde_json::json!({ "errorMessage": message, "errorType": "RequestEntityTooLarge" }),
            )
        }
    }
}

async fn init_error(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body = body.slice(..body.len().min(limits::INIT_ERROR_BYTES_MAX));
    let type_header = headers
        .get("lambda-runtime-function-error-type")
        .and_then(|v| v.to_str().ok());
    let posted = FunctionError::from_posted(body, type_header);
    shared.init_error.send_replace(Some(posted));
    accepted()
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
        let api = RuntimeApi::new();
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
        assert!(matches!(reply.await.unwrap(), Reply::Response(b) if b == "done"));
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
            matches!(reply.await.unwrap(), Reply::Error(e) if e.error_type == "Function.ResponseSizeTooLarge")
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
}
