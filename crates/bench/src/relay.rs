//! The second baseline of hot container invokes: the Runtime API with
//! nothing else around it.
//!
//! A bare axum server takes each POST, hands its body to a runtime that
//! long-polls `/next` on a second listener, and answers with what the runtime
//! posts to `/response`. The runtime is a plain child process — no
//! namespaces, no cgroups, no seccomp — so the difference between nimbus and
//! this is what the platform adds around the protocol (authentication,
//! routing, admission, the sandbox, the log, metering), and the difference
//! between this and the bare echo is the protocol's own round trip to
//! another process.
//!
//! `--direct` is the same protocol with no hand-off between tasks: the
//! client's request task itself writes the event to the runtime's one
//! connection (parked at its pending `/next`) and reads the posted result
//! back, parsing the runtime's requests with `httparse` — the floor for a
//! server whose invocation drives the Runtime API connection it uses.

use anyhow::Context as _;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::collections::HashMap;
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};

/// What the banner line starts with; the client address follows.
pub const BANNER: &str = "relay is up: http://";

/// The environment Lambda gives every function, for the relay's one.
const LAMBDA_ENV: [(&str, &str); 6] = [
    ("AWS_LAMBDA_FUNCTION_NAME", "relay"),
    ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
    ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"),
    ("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/relay"),
    ("AWS_LAMBDA_LOG_STREAM_NAME", "relay"),
    ("AWS_REGION", "us-east-1"),
];

struct Relay {
    events: mpsc::Sender<(String, Bytes)>,
    next: tokio::sync::Mutex<mpsc::Receiver<(String, Bytes)>>,
    waiting: Mutex<HashMap<String, oneshot::Sender<Bytes>>>,
    ids: AtomicU64,
}

/// Serves clients on `listen`, runs `command` (with `env`) as the runtime
/// on a Runtime API of its own, and stops when the runtime exits or when
/// killed.
pub fn serve(
    listen: &str,
    env: &[(String, String)],
    command: &[String],
    direct: bool,
) -> anyhow::Result<()> {
    let (program, args) = command.split_first().context("no runtime command given")?;
    let runtime = tokio::runtime::Runtime::new().context("start the async runtime")?;
    runtime.block_on(async {
        let clients = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("listen on {listen}"))?;
        let runtime_api = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("listen for the runtime")?;
        if direct {
            return serve_direct(clients, runtime_api, program, args, env).await;
        }
        let (events, next) = mpsc::channel(1);
        let relay = Arc::new(Relay {
            events,
            next: tokio::sync::Mutex::new(next),
            waiting: Mutex::new(HashMap::new()),
            ids: AtomicU64::new(0),
        });
        let api = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next_event))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(response),
            )
            .with_state(relay.clone());
        let front = Router::new()
            .route("/{*path}", post(invoke))
            .with_state(relay);
        let mut child = spawn_runtime(program, args, env, &runtime_api)?;
        banner(&clients)?;
        tokio::select! {
            served = axum::serve(clients, front) => served.context("serve clients"),
            served = axum::serve(runtime_api, api) => served.context("serve the runtime"),
            status = child.wait() => anyhow::bail!("the runtime exited: {status:?}"),
        }
    })
}

async fn invoke(State(relay): State<Arc<Relay>>, body: Bytes) -> Response {
    let id = format!("relay-{}", relay.ids.fetch_add(1, Ordering::Relaxed));
    let (answer, answered) = oneshot::channel();
    relay
        .waiting
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(id.clone(), answer);
    if relay.events.send((id, body)).await.is_err() {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    match answered.await {
        Ok(body) => body.into_response(),
        Err(_) => StatusCode::BAD_GATEWAY.into_response(),
    }
}

async fn next_event(State(relay): State<Arc<Relay>>) -> Response {
    let Some((id, body)) = relay.next.lock().await.recv().await else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    let deadline_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64 + 60_000);
    (
        [
            ("content-type", "application/json".to_owned()),
            ("lambda-runtime-aws-request-id", id),
            ("lambda-runtime-deadline-ms", deadline_ms.to_string()),
            (
                "lambda-runtime-invoked-function-arn",
                "arn:aws:lambda:us-east-1:000000000000:function:relay".to_owned(),
            ),
            ("lambda-runtime-trace-id", String::new()),
        ],
        body,
    )
        .into_response()
}

async fn response(
    State(relay): State<Arc<Relay>>,
    Path(id): Path<String>,
    body: Bytes,
) -> StatusCode {
    let waiting = relay
        .waiting
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&id);
    match waiting {
        Some(answer) => {
            let _ = answer.send(body);
            StatusCode::ACCEPTED
        }
        None => StatusCode::BAD_REQUEST,
    }
}

fn spawn_runtime(
    program: &str,
    args: &[String],
    env: &[(String, String)],
    runtime_api: &tokio::net::TcpListener,
) -> anyhow::Result<tokio::process::Child> {
    tokio::process::Command::new(program)
        .args(args)
        // What Lambda sets and runtime clients read (`lambda_runtime`
        // refuses to start without them).
        .envs(LAMBDA_ENV.iter().copied())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env(
            "AWS_LAMBDA_RUNTIME_API",
            runtime_api.local_addr()?.to_string(),
        )
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("start the runtime {program}"))
}

fn banner(clients: &tokio::net::TcpListener) -> anyhow::Result<()> {
    let address = clients.local_addr()?;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "{BANNER}{address}")
        .and_then(|()| stdout.flush())
        .context("print the banner")
}

/// The runtime's one connection and what has been read of it.
struct Parked {
    stream: tokio::net::TcpStream,
    read: Vec<u8>,
}

async fn serve_direct(
    clients: tokio::net::TcpListener,
    runtime_api: tokio::net::TcpListener,
    program: &str,
    args: &[String],
    env: &[(String, String)],
) -> anyhow::Result<()> {
    let mut child = spawn_runtime(program, args, env, &runtime_api)?;
    let (stream, _) = runtime_api
        .accept()
        .await
        .context("the runtime's connection")?;
    stream.set_nodelay(true)?;
    let parked = Arc::new(tokio::sync::Mutex::new(Parked {
        stream,
        read: Vec::new(),
    }));
    let front = Router::new()
        .route("/{*path}", post(invoke_direct))
        .with_state(parked);
    banner(&clients)?;
    tokio::select! {
        served = axum::serve(clients, front) => served.context("serve clients"),
        status = child.wait() => anyhow::bail!("the runtime exited: {status:?}"),
    }
}

async fn invoke_direct(
    State(parked): State<Arc<tokio::sync::Mutex<Parked>>>,
    event: Bytes,
) -> Response {
    let mut conn = parked.lock().await;
    match exchange(&mut conn, &event).await {
        Ok(answer) => answer.into_response(),
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

/// Answers the runtime's pending `/next` with `event`, reads its result and
/// accepts it.
async fn exchange(conn: &mut Parked, event: &[u8]) -> anyhow::Result<Vec<u8>> {
    use tokio::io::AsyncWriteExt as _;
    let (path, _) = read_request(conn).await?;
    anyhow::ensure!(
        path.ends_with("/next"),
        "the runtime asked {path}, not /next"
    );
    let mut answer = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
         lambda-runtime-aws-request-id: relay\r\nlambda-runtime-deadline-ms: {}\r\n\
         lambda-runtime-invoked-function-arn: arn:aws:lambda:us-east-1:000000000000:function:relay\r\n\
         lambda-runtime-trace-id: \r\ncontent-length: {}\r\n\r\n",
        u64::MAX / 2,
        event.len()
    )
    .into_bytes();
    answer.extend_from_slice(event);
    conn.stream.write_all(&answer).await?;
    let (path, result) = read_request(conn).await?;
    anyhow::ensure!(path.ends_with("/response"), "the runtime posted {path}");
    conn.stream
        .write_all(b"HTTP/1.1 202 Accepted\r\ncontent-type: application/json\r\ncontent-length: 15\r\n\r\n{\"status\":\"OK\"}")
        .await?;
    Ok(result)
}

/// The next request on the runtime's connection: its path and body (a
/// `Content-Length` body: what the runtime clients measured here send).
async fn read_request(conn: &mut Parked) -> anyhow::Result<(String, Vec<u8>)> {
    use tokio::io::AsyncReadExt as _;
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut request = httparse::Request::new(&mut headers);
        if let httparse::Status::Complete(head) = request.parse(&conn.read)? {
            let path = request.path.unwrap_or_default().to_owned();
            let length = request
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .map(|h| {
                    std::str::from_utf8(h.value)
                        .unwrap_or("")
                        .trim()
                        .parse::<usize>()
                })
                .transpose()?
                .unwrap_or(0);
            while conn.read.len() < head + length {
                read_more(conn).await?;
            }
            let body = conn.read[head..head + length].to_vec();
            conn.read.drain(..head + length);
            return Ok((path, body));
        }
        read_more(conn).await?;
    }

    async fn read_more(conn: &mut Parked) -> anyhow::Result<()> {
        let mut chunk = [0u8; 8192];
        let n = conn.stream.read(&mut chunk).await?;
        anyhow::ensure!(n > 0, "the runtime closed its connection");
        conn.read.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}
