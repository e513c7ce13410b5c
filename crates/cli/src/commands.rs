//! The client subcommands: deploy, invoke, ls, rm, logs (and in
//! [`crate::asynchronous`], the async path's).

use crate::client::{Client, label};
use anyhow::Context as _;
use base64::Engine as _;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::path::PathBuf;

/// `nimbus deploy`.
#[derive(clap::Args)]
pub struct DeployArgs {
    /// The function's name.
    name: String,
    /// A `.wasm` file or a zip archive.
    file: PathBuf,
    /// Runtime (`wasm`).
    #[arg(long, default_value = "wasm")]
    runtime: String,
    /// The `.wasm` file inside a zip to run.
    #[arg(long)]
    handler: Option<String>,
    /// Memory in MB (128–10240).
    #[arg(long)]
    memory: Option<u32>,
    /// Timeout in seconds (1–900).
    #[arg(long)]
    timeout: Option<u32>,
    /// An environment variable, `KEY=VALUE`; repeatable.
    #[arg(long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Free-text description.
    #[arg(long)]
    description: Option<String>,
}

fn environment(pairs: &[String]) -> anyhow::Result<serde_json::Map<String, Value>> {
    pairs
        .iter()
        .map(|pair| {
            let (k, v) = pair
                .split_once('=')
                .with_context(|| format!("--env {pair:?} is not KEY=VALUE"))?;
            Ok((k.to_string(), Value::String(v.to_string())))
        })
        .collect()
}

/// Creates the function, or, if it exists, updates its code and then the
/// configuration given.
pub fn deploy(args: DeployArgs) -> anyhow::Result<()> {
    let client = Client::from_env()?;
    let code =
        std::fs::read(&args.file).with_context(|| format!("read {}", args.file.display()))?;
    let zip = base64::engine::general_purpose::STANDARD.encode(&code);
    let mut config = serde_json::Map::new();
    if let Some(h) = &args.handler {
        config.insert("Handler".into(), json!(h));
    }
    if let Some(m) = args.memory {
        config.insert("MemorySize".into(), json!(m));
    }
    if let Some(t) = args.timeout {
        config.insert("Timeout".into(), json!(t));
    }
    if let Some(d) = &args.description {
        config.insert("Description".into(), json!(d));
    }
    if !args.env.is_empty() {
        config.insert(
            "Environment".into(),
            json!({ "Variables": environment(&args.env)? }),
        );
    }
    let mut create = config.clone();
    create.insert("FunctionName".into(), json!(args.name));
    create.insert("Runtime".into(), json!(args.runtime));
    create.insert(
        "Role".into(),
        json!("arn:aws:iam::000000000000:role/nimbus"),
    );
    create.insert("Code".into(), json!({ "ZipFile": zip }));
    let answer = client.send(
        "POST",
        "/2015-03-31/functions",
        &[("content-type", "application/json")],
        &serde_json::to_vec(&create)?,
    )?;
    let result = if answer.status == 409 {
        let path = format!("/2015-03-31/functions/{}", label(&args.name));
        let body = serde_json::to_vec(&json!({ "ZipFile": zip }))?;
        let mut result = client
            .send(
                "PUT",
                &format!("{path}/code"),
                &[("content-type", "application/json")],
                &body,
            )?
            .ok()?;
        if !config.is_empty() {
            let body = serde_json::to_vec(&config)?;
            result = client
                .send(
                    "PUT",
                    &format!("{path}/configuration"),
                    &[("content-type", "application/json")],
                    &body,
                )?
                .ok()?;
        }
        println!("updated {}", args.name);
        result
    } else {
        let answer = answer.ok()?;
        println!("created {}", args.name);
        answer
    };
    let c = result.json()?;
    println!("  arn          {}", c["FunctionArn"].as_str().unwrap_or(""));
    println!("  code sha256  {}", c["CodeSha256"].as_str().unwrap_or(""));
    println!("  revision     {}", c["RevisionId"].as_str().unwrap_or(""));
    Ok(())
}

/// `nimbus invoke`.
#[derive(clap::Args)]
pub struct InvokeArgs {
    /// The function's name (or `name:qualifier`, or an ARN).
    name: String,
    /// The event as JSON, or `-` to read it from stdin.
    payload: Option<String>,
    /// Print the invocation's log (its tail) to stderr.
    #[arg(long, conflicts_with = "asynchronous")]
    log: bool,
    /// Invoke asynchronously (`InvocationType=Event`): print the
    /// invocation's id once it is durably accepted.
    #[arg(long = "async", id = "asynchronous")]
    asynchronous: bool,
    /// With `--async`: a key that makes a repeat of this request within
    /// 24 hours a no-op answered with the first request's id.
    #[arg(long, requires = "asynchronous")]
    idempotency_key: Option<String>,
}

/// Invokes synchronously; prints the response, or the function's error and
/// exits non-zero.
pub fn invoke(args: InvokeArgs) -> anyhow::Result<()> {
    let client = Client::from_env()?;
    let payload = match args.payload.as_deref() {
        None => b"{}".to_vec(),
        Some("-") => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .context("read the payload from stdin")?;
            buf
        }
        Some(text) => text.as_bytes().to_vec(),
    };
    let mut headers = vec![("content-type", "application/json")];
    if args.log {
        headers.push(("x-amz-log-type", "Tail"));
    }
    if args.asynchronous {
        headers.push(("x-amz-invocation-type", "Event"));
    }
    if let Some(key) = &args.idempotency_key {
        headers.push(("x-nimbus-idempotency-key", key));
    }
    let path = format!("/2015-03-31/functions/{}/invocations", label(&args.name));
    let answer = client.send("POST", &path, &headers, &payload)?.ok()?;
    if args.asynchronous {
        let id = answer.header("x-amzn-requestid").unwrap_or_default();
        if answer.header("x-nimbus-idempotent-replay").is_some() {
            eprintln!("(a repeat: the first request with this key was accepted as {id})");
        }
        println!("{id}");
        return Ok(());
    }
    if let Some(log) = answer.header("x-amz-log-result") {
        let text = base64::engine::general_purpose::STANDARD
            .decode(log)
            .unwrap_or_default();
        std::io::stderr().write_all(&text)?;
    }
    if answer.header("x-amz-function-error").is_some() {
        anyhow::bail!("function error: {}", String::from_utf8_lossy(&answer.body));
    }
    let mut out = std::io::stdout();
    out.write_all(&answer.body)?;
    if !answer.body.ends_with(b"\n") {
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// Lists every function, one per line.
pub fn ls() -> anyhow::Result<()> {
    let client = Client::from_env()?;
    let mut marker: Option<String> = None;
    println!(
        "{:<40} {:<8} {:>7} {:>8}  LAST MODIFIED",
        "NAME", "RUNTIME", "MEMORY", "TIMEOUT"
    );
    loop {
        let path = match &marker {
            None => "/2015-03-31/functions?MaxItems=50".to_string(),
            Some(m) => format!("/2015-03-31/functions?Marker={}&MaxItems=50", label(m)),
        };
        let page = client.send("GET", &path, &[], b"")?.ok()?.json()?;
        for f in page["Functions"].as_array().into_iter().flatten() {
            println!(
                "{:<40} {:<8} {:>5}MB {:>7}s  {}",
                f["FunctionName"].as_str().unwrap_or(""),
                f["Runtime"].as_str().unwrap_or(""),
                f["MemorySize"].as_u64().unwrap_or(0),
                f["Timeout"].as_u64().unwrap_or(0),
                f["LastModified"].as_str().unwrap_or("")
            );
        }
        match page["NextMarker"].as_str() {
            Some(next) => marker = Some(next.to_string()),
            None => return Ok(()),
        }
    }
}

/// Deletes a function.
pub fn rm(name: &str) -> anyhow::Result<()> {
    let client = Client::from_env()?;
    client
        .send(
            "DELETE",
            &format!("/2015-03-31/functions/{}", label(name)),
            &[],
            b"",
        )?
        .ok()?;
    println!("deleted {name}");
    Ok(())
}

/// Prints the tail of a function's log.
pub fn logs(name: &str, bytes: u64) -> anyhow::Result<()> {
    let client = Client::from_env()?;
    let path = format!(
        "/nimbus/2026-11-25/functions/{}/logs?bytes={bytes}",
        label(name)
    );
    let answer = client.send("GET", &path, &[], b"")?.ok()?;
    std::io::stdout().write_all(&answer.body)?;
    Ok(())
}
