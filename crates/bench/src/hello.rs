//! The baseline: a bare axum server that answers every POST with its body.
//!
//! It runs in its own process on the same default multi-threaded tokio
//! runtime as `nimbus up`, and echoes so both servers put the same bytes on
//! the wire; what separates their figures is then what nimbus does per
//! request — authentication, routing over the whole Lambda API, the sandbox,
//! the log — not the HTTP stack both share.

use anyhow::Context as _;
use axum::Router;
use axum::body::Bytes;
use axum::routing::post;
use std::io::Write as _;

/// What the banner line starts with; the address follows.
pub const BANNER: &str = "hello is up: http://";

/// Serves the baseline on `listen` until killed.
pub fn serve(listen: &str) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("start the async runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("listen on {listen}"))?;
        let address = listener.local_addr()?;
        let app = Router::new().route("/{*path}", post(echo));
        let mut stdout = std::io::stdout();
        writeln!(stdout, "{BANNER}{address}")
            .and_then(|()| stdout.flush())
            .context("print the banner")?;
        axum::serve(listener, app).await.context("serve")
    })
}

async fn echo(body: Bytes) -> Bytes {
    body
}
