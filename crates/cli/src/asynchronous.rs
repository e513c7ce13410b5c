//! The async path's client subcommands: `nimbus invocation get ID` and
//! `nimbus dlq redrive QUEUE`.

use crate::client::{Client, label};
use anyhow::{Context as _, bail};
use serde_json::{Value, json};

/// `nimbus invocation …`.
#[derive(clap::Subcommand)]
pub enum InvocationCommand {
    /// Print an async invocation's state, attempts and timestamps as JSON.
    Get {
        /// The invocation's id (the request id its 202 carried).
        id: String,
    },
}

/// `nimbus dlq …`.
#[derive(clap::Subcommand)]
pub enum DlqCommand {
    /// Send every event in a dead-letter queue (or a failure destination's
    /// queue) back to its function as a new async invocation, deleting each
    /// message once it is accepted.
    Redrive {
        /// The queue's name or URL.
        queue: String,
        /// Send every event to this function instead of the one it failed in.
        #[arg(long)]
        function: Option<String>,
    },
}

/// Runs `nimbus invocation …`.
pub fn invocation(command: InvocationCommand) -> anyhow::Result<()> {
    let InvocationCommand::Get { id } = command;
    let client = Client::from_env()?;
    let path = format!("/nimbus/2026-11-25/invocations/{}", label(&id));
    let status = client.send("GET", &path, &[], b"")?.ok()?.json()?;
    println!("{}", serde_json::to_string_pretty(&status)?);
    Ok(())
}

/// Runs `nimbus dlq …`.
pub fn dlq(command: DlqCommand) -> anyhow::Result<()> {
    let DlqCommand::Redrive { queue, function } = command;
    let client = Client::from_env()?;
    let url = if queue.starts_with("http://") || queue.starts_with("https://") {
        queue
    } else {
        let answer = client.sqs("GetQueueUrl", &json!({ "QueueName": queue }))?;
        answer["QueueUrl"]
            .as_str()
            .context("GetQueueUrl answered no QueueUrl")?
            .to_string()
    };
    let (mut sent, mut left) = (0u64, 0u64);
    loop {
        // Messages this run cannot send stay invisible for the rest of it,
        // so every receive brings new ones and the loop ends.
        let got = client.sqs(
            "ReceiveMessage",
            &json!({
                "QueueUrl": url,
                "MaxNumberOfMessages": 10,
                "VisibilityTimeout": 300,
                "MessageAttributeNames": ["All"],
            }),
        )?;
        let messages = got["Messages"].as_array().cloned().unwrap_or_default();
        if messages.is_empty() {
            break;
        }
        for message in messages {
            match redrive_one(&client, &message, function.as_deref()) {
                Ok(id) => {
                    let handle = message["ReceiptHandle"].as_str().unwrap_or_default();
                    client.sqs(
                        "DeleteMessage",
                        &json!({ "QueueUrl": url, "ReceiptHandle": handle }),
                    )?;
                    println!("{id}");
                    sent += 1;
                }
                Err(e) => {
                    let message_id = message["MessageId"].as_str().unwrap_or("?");
                    eprintln!("nimbus: message {message_id} left in the queue: {e:#}");
                    left += 1;
                }
            }
        }
    }
    eprintln!("redrove {sent} event(s); {left} left in the queue");
    if left > 0 {
        bail!("{left} message(s) could not be sent back");
    }
    Ok(())
}

/// Sends one message's event back to its function; the new invocation's id.
fn redrive_one(client: &Client, message: &Value, function: Option<&str>) -> anyhow::Result<String> {
    let body = message["Body"].as_str().unwrap_or_default();
    let attribute = message["MessageAttributes"]["nimbus.FunctionArn"]["StringValue"].as_str();
    // A dead letter is the event itself, its function named in an
    // attribute; a failure destination's record carries both.
    let record: Option<Value> = serde_json::from_str::<Value>(body).ok().filter(|v| {
        v["requestContext"]["functionArn"].is_string() && v.get("requestPayload").is_some()
    });
    let (target, payload) = match &record {
        Some(r) => (
            r["requestContext"]["functionArn"]
                .as_str()
                .map(String::from),
            serde_json::to_vec(&r["requestPayload"])?,
        ),
        None => (attribute.map(String::from), body.as_bytes().to_vec()),
    };
    let target = match (function, target) {
        (Some(f), _) => f.to_string(),
        (None, Some(arn)) => arn,
        (None, None) => bail!("it names no function: give one with --function"),
    };
    let message_id = message["MessageId"].as_str().unwrap_or_default();
    // A repeat of the redrive (after a crash between send and delete)
    // is a no-op: the key is the message's.
    let key = format!("redrive-{message_id}");
    let headers = [
        ("content-type", "application/json"),
        ("x-amz-invocation-type", "Event"),
        ("x-nimbus-idempotency-key", key.as_str()),
    ];
    let path = format!("/2015-03-31/functions/{}/invocations", label(&target));
    let answer = client.send("POST", &path, &headers, &payload)?.ok()?;
    Ok(answer
        .header("x-amzn-requestid")
        .unwrap_or_default()
        .to_string())
}
