//! Echoes its event with what it saw of its context; `{"fail": …}` makes
//! it return an error, which Lambda reports as a function error.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::{Value, json};

async fn handler(event: LambdaEvent<Value>) -> Result<Value, Error> {
    let (payload, context) = event.into_parts();
    if let Some(why) = payload.get("fail").and_then(Value::as_str) {
        return Err(why.into());
    }
    Ok(json!({
        "echo": payload,
        "request_id": context.request_id,
        "arn": context.invoked_function_arn,
        "function_name": context.env_config.function_name,
        "memory": context.env_config.memory,
        "version": context.env_config.version,
    }))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(handler)).await
}
