"""Where async invocations end up: a dead-letter queue (the function's
DeadLetterConfig) for events whose every attempt failed, and destinations
(OnSuccess / OnFailure of the event-invoke configuration) — a built-in queue
or another function — with records in Lambda's destination format. Read
back through the SQS API, as a user would."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from support import ROLE, clean_env, lambda_client, make_zip, sqs_client
from test_async import event, wait_for

@pytest.fixture
def platform(own_server, guests):
    """A server with 50 ms retry backoff; a failing and an echoing function."""
    srv = own_server("--async-retry-base-ms", "50")
    lam, sqs = lambda_client(srv.url), sqs_client(srv.url)
    lam.create_function(FunctionName="traps", Runtime="wasm", Role=ROLE, Handler="trap.wasm",
                        Code={"ZipFile": make_zip({"trap.wasm": guests["trap"]})})
    lam.create_function(FunctionName="echo", Runtime="wasm", Role=ROLE, Handler="echo.wasm",
                        Code={"ZipFile": make_zip({"echo.wasm": guests["echo"]})})
    account = lam.get_function(FunctionName="echo")["Configuration"]["FunctionArn"].split(":")[4]
    return srv, lam, sqs, account


def queue(sqs, name: str) -> tuple[str, str]:
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return url, arn


def receive_one(sqs, url: str, timeout_s: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                  MessageAttributeNames=["All"]).get("Messages", [])
        if got:
            assert len(got) == 1, got
            sqs.delete_message(QueueUrl=url, ReceiptHandle=got[0]["ReceiptHandle"])
            return got[0]
    raise AssertionError(f"nothing arrived in {url}")


def test_a_dead_letter_queue_takes_the_event_when_every_attempt_failed(platform):
    srv, lam, sqs, _ = platform
    url, arn = queue(sqs, "dlq")
    lam.update_function_configuration(FunctionName="traps", DeadLetterConfig={"TargetArn": arn})
    assert lam.get_function_configuration(FunctionName="traps")["DeadLetterConfig"] == {"TargetArn": arn}
    lam.put_function_event_invoke_config(FunctionName="traps", MaximumRetryAttempts=1)
    invocation = event(lam, "traps", b'{"order": 7}')
    done = wait_for(srv.url, invocation)
    assert (done["State"], done["Attempts"]) == ("dead-lettered", 2), done
    # Read as a user would, with the aws CLI.
    env = clean_env(**srv.nimbus_env())
    read = subprocess.run(["aws", "sqs", "receive-message", "--queue-url", url, "--message-attribute-names", "All",
                           "--endpoint-url", srv.url, "--output", "json"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert read.returncode == 0, read.stderr
    letter = json.loads(read.stdout)["Messages"][0]
    sqs.delete_message(QueueUrl=url, ReceiptHandle=letter["ReceiptHandle"])
    assert json.loads(letter["Body"]) == {"order": 7}
    attrs = letter["MessageAttributes"]
    assert attrs["RequestID"]["StringValue"] == invocation
    assert attrs["ErrorCode"] == {"StringValue": "200", "DataType": "Number"}
    assert "unreachable" in attrs["ErrorMessage"]["StringValue"]

    lam.update_function_configuration(FunctionName="traps", DeadLetterConfig={"TargetArn": ""})
    assert "DeadLetterConfig" not in lam.get_function_configuration(FunctionName="traps")
    gone = wait_for(srv.url, event(lam, "traps"))
    assert gone["State"] == "failed"


def test_a_dead_letter_queue_must_be_one_of_the_built_in_queues(platform):
    _, lam, _, _ = platform
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.update_function_configuration(
            FunctionName="traps", DeadLetterConfig={"TargetArn": "arn:aws:sns:us-east-1:000000000000:topic"})


def test_a_failure_destination_gets_lambdas_record(platform):
    srv, lam, sqs, _ = platform
    url, arn = queue(sqs, "failures")
    lam.put_function_event_invoke_config(FunctionName="traps", MaximumRetryAttempts=2,
                                         DestinationConfig={"OnFailure": {"Destination": arn}})
    invocation = event(lam, "traps", b'{"order": 8}')
    assert wait_for(srv.url, invocation)["State"] == "dead-lettered"
    record = json.loads(receive_one(sqs, url)["Body"])
    assert record["version"] == "1.0"
    ctx = record["requestContext"]
    assert ctx["requestId"] == invocation
    assert ctx["condition"] == "RetriesExhausted"
    assert ctx["approximateInvokeCount"] == 3
    assert ctx["functionArn"].endswith(":function:traps:$LATEST")
    assert record["requestPayload"] == {"order": 8}
    assert record["responseContext"] == {"statusCode": 200, "executedVersion": "$LATEST",
                                         "functionError": "Unhandled"}
    assert "errorType" in record["responsePayload"], record


def test_a_success_destination_shows_completions_with_the_response(platform):
    srv, lam, sqs, _ = platform
    url, arn = queue(sqs, "successes")
    lam.put_function_event_invoke_config(FunctionName="echo", DestinationConfig={"OnSuccess": {"Destination": arn}})
    invocation = event(lam, "echo", b'{"order": 9}')
    assert wait_for(srv.url, invocation)["State"] == "succeeded"
    record = json.loads(receive_one(sqs, url)["Body"])
    assert record["requestContext"]["condition"] == "Success"
    assert record["requestContext"]["approximateInvokeCount"] == 1
    assert record["requestPayload"] == {"order": 9}
    assert record["responsePayload"] == {"order": 9}, "the echo's answer"
    assert record["responseContext"] == {"statusCode": 200, "executedVersion": "$LATEST"}


def test_a_function_destination_is_invoked_with_the_record(platform):
    srv, lam, sqs, account = platform
    url, arn = queue(sqs, "second-hop")
    # traps fails -> its record goes to echo -> echo's success record to the queue.
    lam.put_function_event_invoke_config(FunctionName="echo", DestinationConfig={"OnSuccess": {"Destination": arn}})
    echo_arn = f"arn:aws:lambda:us-east-1:{account}:function:echo"
    lam.put_function_event_invoke_config(FunctionName="traps", MaximumRetryAttempts=0,
                                         DestinationConfig={"OnFailure": {"Destination": echo_arn}})
    invocation = event(lam, "traps", b'{"order": 10}')
    assert wait_for(srv.url, invocation)["State"] == "dead-lettered"
    hop = json.loads(receive_one(sqs, url)["Body"])
    # What echo received (and answered) is traps' failure record.
    first = hop["requestPayload"]
    assert first["requestContext"]["requestId"] == invocation
    assert first["requestContext"]["condition"] == "RetriesExhausted"
    assert first["requestPayload"] == {"order": 10}
    assert hop["responsePayload"] == first


def test_an_undeliverable_record_leaves_the_invocation_failed_and_says_why(platform):
    srv, lam, _, account = platform
    missing = f"arn:aws:sqs:us-east-1:{account}:no-such-queue"
    lam.put_function_event_invoke_config(FunctionName="traps", MaximumRetryAttempts=0,
                                         DestinationConfig={"OnFailure": {"Destination": missing}})
    done = wait_for(srv.url, event(lam, "traps"))
    assert done["State"] == "failed", done
    assert "no-such-queue" in done["LastError"], done


def test_the_nimbus_cli_invokes_async_reads_status_and_redrives_a_dead_letter_queue(platform, guests):
    srv, lam, sqs, _ = platform
    env = clean_env(**srv.nimbus_env())

    def nimbus(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(srv.bin), *args], capture_output=True, text=True, env=env, timeout=60)

    url, arn = queue(sqs, "dlq")
    lam.update_function_configuration(FunctionName="traps", DeadLetterConfig={"TargetArn": arn})
    lam.put_function_event_invoke_config(FunctionName="traps", MaximumRetryAttempts=0)
    first = nimbus("invoke", "traps", '{"n": 1}', "--async", "--idempotency-key", "cli-1")
    assert first.returncode == 0, first.stderr
    again = nimbus("invoke", "traps", '{"n": 1}', "--async", "--idempotency-key", "cli-1")
    assert again.stdout == first.stdout and "repeat" in again.stderr
    second = nimbus("invoke", "traps", '{"n": 2}', "--async").stdout.strip()
    ids = [first.stdout.strip(), second]
    for invocation in ids:
        assert wait_for(srv.url, invocation)["State"] == "dead-lettered"
    shown = nimbus("invocation", "get", ids[0])
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["State"] == "dead-lettered"
    missing = nimbus("invocation", "get", "00000000-0000-4000-8000-000000000000")
    assert missing.returncode != 0 and "ResourceNotFoundException" in missing.stderr

    # The function is fixed (its code now answers); the events go back to it.
    lam.update_function_code(FunctionName="traps", ZipFile=make_zip({"trap.wasm": guests["echo"]}))
    redrive = nimbus("dlq", "redrive", "dlq")
    assert redrive.returncode == 0, redrive.stderr
    new_ids = redrive.stdout.split()
    assert len(new_ids) == 2 and not set(new_ids) & set(ids), redrive.stdout
    for invocation in new_ids:
        assert wait_for(srv.url, invocation)["State"] == "succeeded"
    assert sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0).get("Messages") is None
    nothing = nimbus("dlq", "redrive", "no-such-queue")
    assert nothing.returncode != 0 and "QueueDoesNotExist" in nothing.stderr, nothing.stderr
