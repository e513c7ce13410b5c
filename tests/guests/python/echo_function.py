"""The benchmark's python3.x handler: the same answer as the Rust guest
(tests/guests/lambda-rust), its event and what it saw of its context, and
nothing else (no log lines), so the two runtimes are measured alike."""


def lambda_handler(event, context):
    return {
        "echo": event,
        "request_id": context.aws_request_id,
        "arn": context.invoked_function_arn,
        "function_name": context.function_name,
        "memory": context.memory_limit_in_mb,
        "version": context.function_version,
    }
