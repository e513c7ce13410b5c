"""Asynchronous invocation (`InvocationType=Event`): the 202 comes after the
request is durably stored, the dispatcher runs it, failures are retried as
the function's event-invoke configuration says, an idempotency key makes a
repeat a no-op, and an attempt that outlives its lease is run again while
its late result is refused. Status is read through nimbus' extension route.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from support import ROLE, assert_client_error, lambda_client, make_zip, signed_request

STATUS_PATH = "/nimbus/2026-11-25/invocations/"
TERMINAL = {"succeeded", "failed", "dead-lettered"}


def status_of(url: str, invocation_id: str) -> dict:
    resp = signed_request(url, "GET", STATUS_PATH + invocation_id)
    assert resp.status == 200, (resp.status, resp.body)
    return json.loads(resp.body)


def wait_for(url: str, invocation_id: str, done=lambda s: s["State"] in TERMINAL, timeout_s: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        status = status_of(url, invocation_id)
        if done(status):
            return status
        assert time.monotonic() < deadline, f"invocation {invocation_id} stuck: {status}"
        time.sleep(0.05)


def event(lam, name: str, payload: bytes = b"{}", **kw) -> str:
    resp = lam.invoke(FunctionName=name, InvocationType="Event", Payload=payload, **kw)
    assert resp["StatusCode"] == 202, resp
    assert resp["Payload"].read() == b""
    return resp["ResponseMetadata"]["RequestId"]


def test_an_event_is_answered_202_then_run_once(lam, server, functions, guests):
    name = functions.create(make_zip({"echo.wasm": guests["echo"]}), handler="echo.wasm")["FunctionName"]
    invocation = event(lam, name, b'{"hello": "async"}')
    status = wait_for(server.url, invocation)
    assert status["State"] == "succeeded", status
    assert status["Attempts"] == 1
    assert [a["Outcome"] for a in status["History"]] == ["succeeded"]
    assert status["History"][0]["Epoch"] == 1
    assert status["FunctionName"] == name and status["ExecutedVersion"] == "$LATEST"
    log = signed_request(server.url, "GET", f"/nimbus/2026-11-25/functions/{name}/logs").body.decode()
    assert log.count(f"START RequestId: {invocation}") == 1, log


def test_an_event_for_a_missing_function_or_with_bad_json_is_refused_and_not_stored(lam, server, canary):
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.invoke(FunctionName="no-such-function", InvocationType="Event", Payload=b"{}")
    with pytest.raises(lam.exceptions.InvalidRequestContentException):
        lam.invoke(FunctionName=canary["name"], InvocationType="Event", Payload=b"{not json")
    backlog = json.loads(signed_request(server.url, "GET", "/nimbus/2026-11-25/async-backlog").body)
    assert all(f["FunctionName"] != "no-such-function" for f in backlog["Functions"])


def test_an_unknown_invocation_id_is_not_found(server):
    resp = signed_request(server.url, "GET", STATUS_PATH + "00000000-0000-4000-8000-000000000000")
    assert resp.status == 404
    assert resp.header("x-amzn-ErrorType") == "ResourceNotFoundException"


def test_an_idempotency_key_makes_a_repeat_a_no_op(server, functions, guests):
    name = functions.create(make_zip({"echo.wasm": guests["echo"]}), handler="echo.wasm")["FunctionName"]
    path = f"/2015-03-31/functions/{name}/invocations"
    headers = {"X-Amz-Invocation-Type": "Event", "X-Nimbus-Idempotency-Key": "order-42"}
    first = signed_request(server.url, "POST", path, b'{"n": 1}', headers=headers)
    assert first.status == 202, first.body
    again = signed_request(server.url, "POST", path, b'{"n": 1}', headers=headers)
    assert again.status == 202
    assert again.header("x-amzn-RequestId") == first.header("x-amzn-RequestId")
    assert again.header("X-Nimbus-Idempotent-Replay") == "true"
    other = signed_request(server.url, "POST", path, b'{"n": 1}',
                           headers={**headers, "X-Nimbus-Idempotency-Key": "order-43"})
    assert other.header("x-amzn-RequestId") != first.header("x-amzn-RequestId")
    status = wait_for(server.url, first.header("x-amzn-RequestId"))
    wait_for(server.url, other.header("x-amzn-RequestId"))
    assert status["Attempts"] == 1
    log = signed_request(server.url, "GET", f"/nimbus/2026-11-25/functions/{name}/logs").body.decode()
    assert log.count("START RequestId:") == 2, "the repeat ran nothing"
    bad = signed_request(server.url, "POST", path, b"{}", headers={**headers, "X-Nimbus-Idempotency-Key": "a b"})
    assert bad.status == 400 and bad.header("x-amzn-ErrorType") == "InvalidParameterValueException"


@pytest.fixture
def fast_retries(own_server):
    """A server whose retries wait 50 ms, then 100 ms (Lambda: 1, then 2 minutes)."""
    srv = own_server("--async-retry-base-ms", "50")
    return srv, lambda_client(srv.url)


def test_a_failing_function_is_retried_as_configured_then_fails(fast_retries, guests):
    srv, lam = fast_retries
    lam.create_function(FunctionName="traps", Runtime="wasm", Role=ROLE, Handler="trap.wasm",
                        Code={"ZipFile": make_zip({"trap.wasm": guests["trap"]})})
    default = wait_for(srv.url, event(lam, "traps"))
    assert default["State"] == "failed", default
    assert default["Condition"] == "RetriesExhausted"
    assert default["Attempts"] == 3, "one attempt and Lambda's default two retries"
    assert [a["Outcome"] for a in default["History"]] == ["failed"] * 3
    assert "unreachable" in default["LastError"], default["LastError"]

    lam.put_function_event_invoke_config(FunctionName="traps", MaximumRetryAttempts=0)
    once = wait_for(srv.url, event(lam, "traps"))
    assert (once["State"], once["Attempts"]) == ("failed", 1)

    lam.publish_version(FunctionName="traps")
    lam.put_function_event_invoke_config(FunctionName="traps", Qualifier="1", MaximumRetryAttempts=1)
    versioned = wait_for(srv.url, event(lam, "traps", Qualifier="1"))
    assert (versioned["Attempts"], versioned["ExecutedVersion"]) == (2, "1"), "the version's own configuration"


def test_a_retry_waits_for_its_backoff(fast_retries, guests):
    srv, lam = fast_retries
    lam.create_function(FunctionName="traps", Runtime="wasm", Role=ROLE, Handler="trap.wasm",
                        Code={"ZipFile": make_zip({"trap.wasm": guests["trap"]})})
    lam.put_function_event_invoke_config(FunctionName="traps", MaximumRetryAttempts=2)
    done = wait_for(srv.url, event(lam, "traps"))

    def ms(text: str) -> float:
        # 2026-11-30T08:00:00.123+0000
        return time.mktime(time.strptime(text[:19], "%Y-%m-%dT%H:%M:%S")) * 1000 + int(text[20:23])

    h = done["History"]
    first_gap = ms(h[1]["StartedAt"]) - ms(h[0]["EndedAt"])
    second_gap = ms(h[2]["StartedAt"]) - ms(h[1]["EndedAt"])
    # 50 ms then 100 ms, each with ±25% jitter (the clock shows whole ms).
    assert first_gap >= 37, h
    assert second_gap >= 74, h


def test_event_invoke_configs_through_boto3(lam, functions, guests):
    name = functions.create(make_zip({"echo.wasm": guests["echo"]}), handler="echo.wasm")["FunctionName"]
    assert lam.list_function_event_invoke_configs(FunctionName=name)["FunctionEventInvokeConfigs"] == []
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as missing:
        lam.get_function_event_invoke_config(FunctionName=name)
    assert "doesn't have an EventInvokeConfig" in str(missing.value)
    queue = "arn:aws:sqs:us-east-1:000000000000:failures"
    put = lam.put_function_event_invoke_config(
        FunctionName=name, MaximumRetryAttempts=1, MaximumEventAgeInSeconds=120,
        DestinationConfig={"OnFailure": {"Destination": queue}},
    )
    assert put["MaximumRetryAttempts"] == 1 and put["MaximumEventAgeInSeconds"] == 120
    assert put["FunctionArn"].endswith(f":function:{name}:$LATEST")
    assert put["DestinationConfig"]["OnFailure"]["Destination"] == queue
    updated = lam.update_function_event_invoke_config(FunctionName=name, MaximumRetryAttempts=0)
    assert updated["MaximumRetryAttempts"] == 0
    assert updated["MaximumEventAgeInSeconds"] == 120, "Update keeps what it was not given"
    replaced = lam.put_function_event_invoke_config(FunctionName=name, MaximumRetryAttempts=2)
    assert "MaximumEventAgeInSeconds" not in replaced, "Put removes what it was not given"
    assert replaced["DestinationConfig"] == {"OnSuccess": {}, "OnFailure": {}}
    got = lam.get_function_event_invoke_config(FunctionName=name)
    assert got["MaximumRetryAttempts"] == 2

    lam.create_alias(FunctionName=name, Name="live", FunctionVersion=lam.publish_version(FunctionName=name)["Version"])
    lam.put_function_event_invoke_config(FunctionName=name, Qualifier="live", MaximumRetryAttempts=0)
    listed = lam.list_function_event_invoke_configs(FunctionName=name)["FunctionEventInvokeConfigs"]
    assert [c["FunctionArn"].rsplit(":", 1)[1] for c in listed] == ["$LATEST", "live"]
    page = lam.list_function_event_invoke_configs(FunctionName=name, MaxItems=1)
    assert len(page["FunctionEventInvokeConfigs"]) == 1 and "NextMarker" in page
    rest = lam.list_function_event_invoke_configs(FunctionName=name, Marker=page["NextMarker"])
    assert [c["FunctionArn"].rsplit(":", 1)[1] for c in rest["FunctionEventInvokeConfigs"]] == ["live"]

    lam.delete_alias(FunctionName=name, Name="live")
    assert len(lam.list_function_event_invoke_configs(FunctionName=name)["FunctionEventInvokeConfigs"]) == 1
    lam.delete_function_event_invoke_config(FunctionName=name)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.delete_function_event_invoke_config(FunctionName=name)


def test_bad_event_invoke_configs_are_refused(lam, lam_unchecked, functions, guests):
    name = functions.create(make_zip({"echo.wasm": guests["echo"]}), handler="echo.wasm")["FunctionName"]
    with pytest.raises(lam_unchecked.exceptions.ClientError) as e:
        lam_unchecked.put_function_event_invoke_config(FunctionName=name, MaximumRetryAttempts=3)
    assert "less than or equal to 2" in assert_client_error(e, "ValidationException", 400)
    with pytest.raises(lam_unchecked.exceptions.ClientError) as e:
        lam_unchecked.put_function_event_invoke_config(FunctionName=name, MaximumEventAgeInSeconds=59)
    assert_client_error(e, "ValidationException", 400)
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.put_function_event_invoke_config(
            FunctionName=name, DestinationConfig={"OnSuccess": {"Destination": "arn:aws:sns:us-east-1:000000000000:t"}})
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.put_function_event_invoke_config(FunctionName=name, Qualifier="7", MaximumRetryAttempts=0)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.put_function_event_invoke_config(FunctionName="no-such-function", MaximumRetryAttempts=0)


def test_event_invoke_config_through_the_aws_cli(aws, functions, guests):
    name = functions.create(make_zip({"echo.wasm": guests["echo"]}), handler="echo.wasm")["FunctionName"]
    put = aws("put-function-event-invoke-config", "--function-name", name, "--maximum-retry-attempts", "1")
    assert put["MaximumRetryAttempts"] == 1
    got = aws("get-function-event-invoke-config", "--function-name", name)
    assert got["MaximumRetryAttempts"] == 1
    listed = aws("list-function-event-invoke-configs", "--function-name", name)
    assert len(listed["FunctionEventInvokeConfigs"]) == 1
    aws("delete-function-event-invoke-config", "--function-name", name)
    assert "ResourceNotFoundException" in aws.fails("get-function-event-invoke-config", "--function-name", name)


def test_an_event_through_the_aws_cli_is_accepted(aws, server, functions, guests, tmp_path):
    name = functions.create(make_zip({"echo.wasm": guests["echo"]}), handler="echo.wasm")["FunctionName"]
    out = tmp_path / "out.json"
    answer = aws("invoke", "--function-name", name, "--invocation-type", "Event",
                 "--payload", '{"via": "cli"}', str(out))
    assert answer["StatusCode"] == 202
    assert out.read_bytes() == b""


def test_a_full_backlog_answers_429_and_stores_nothing(own_server, guests):
    srv = own_server("--async-backlog-max", "3", "--async-retry-base-ms", "600000")
    lam = lambda_client(srv.url)
    lam.create_function(FunctionName="traps", Runtime="wasm", Role=ROLE, Handler="trap.wasm",
                        Code={"ZipFile": make_zip({"trap.wasm": guests["trap"]})})
    # Each fails once, then waits ten minutes for its retry: all stay unfinished.
    ids = [event(lam, "traps") for _ in range(3)]
    with pytest.raises(lam.exceptions.TooManyRequestsException):
        lam.invoke(FunctionName="traps", InvocationType="Event", Payload=b"{}")
    backlog = json.loads(signed_request(srv.url, "GET", "/nimbus/2026-11-25/async-backlog").body)
    assert backlog["Unfinished"] == 3 and backlog["Limit"] == 3
    assert backlog["Functions"] == [{"FunctionName": "traps", "Unfinished": 3}]
    for invocation in ids:
        assert wait_for(srv.url, invocation, lambda s: s["State"] == "retrying")["Attempts"] == 1


def test_accepted_events_survive_a_kill(own_server, guests):
    # Retries ten minutes apart: what was accepted stays queued while the server dies.
    srv = own_server("--async-retry-base-ms", "600000")
    lam = lambda_client(srv.url)
    lam.create_function(FunctionName="traps", Runtime="wasm", Role=ROLE, Handler="trap.wasm",
                        Code={"ZipFile": make_zip({"trap.wasm": guests["trap"]})})
    lam.put_function_event_invoke_config(FunctionName="traps", MaximumRetryAttempts=1)
    ids = [event(lam, "traps") for _ in range(20)]
    for invocation in ids:
        wait_for(srv.url, invocation, lambda s: s["State"] == "retrying")
    srv.proc.kill()
    srv.proc.wait(timeout=10)
    again = own_server("--async-retry-base-ms", "600000")
    for invocation in ids:
        s = status_of(again.url, invocation)
        assert (s["State"], s["Attempts"]) == ("retrying", 1), s


SLOW_FIRST_ATTEMPT = b'''
import time


def lambda_handler(event, context):
    # Slow only for an attempt that starts before `slow_until`: the first.
    if time.time() < event["slow_until"]:
        time.sleep(event["sleep_s"])
    return {"attempt_started": time.time()}
'''


def host_python_runtime() -> str:
    out = subprocess.run(["/usr/bin/python3", "-c", "import sys; print('python%d.%d' % sys.version_info[:2])"],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_an_attempt_that_outlives_its_lease_is_run_again_and_its_late_result_refused(own_server):
    srv = own_server("--async-lease-ms", "1500")
    lam = lambda_client(srv.url)
    lam.create_function(FunctionName="slow-first", Runtime=host_python_runtime(), Role=ROLE,
                        Handler="lambda_function.lambda_handler", Timeout=10,
                        Code={"ZipFile": make_zip({"lambda_function.py": SLOW_FIRST_ATTEMPT})})
    # The first attempt starts well within the first second (a warm sandbox
    # takes milliseconds) and sleeps 4 s; the second, after the first's
    # 1.5 s lease, starts past `slow_until`, is fast and wins; the first
    # reports about 2.5 s later and is refused.
    payload = json.dumps({"slow_until": time.time() + 1.0, "sleep_s": 4.0}).encode()
    invocation = event(lam, "slow-first", payload)
    done = wait_for(srv.url, invocation,
                    lambda s: len(s["History"]) >= 2 and s["History"][0].get("Outcome") == "stale")
    assert done["State"] == "succeeded", done
    assert [a["Epoch"] for a in done["History"]] == [1, 2]
    assert [a["Outcome"] for a in done["History"]] == ["stale", "succeeded"]
    assert done["Attempts"] == 2
    counts = json.loads(signed_request(srv.url, "GET", "/nimbus/2026-11-25/async-backlog").body)
    assert counts["StaleEndingsRefused"] == 1, counts
    log = signed_request(srv.url, "GET", "/nimbus/2026-11-25/functions/slow-first/logs").body.decode()
    assert log.count(f"START RequestId: {invocation}") == 2, "both attempts ran"


def test_a_throttled_event_waits_in_its_queue_without_using_up_retries(fast_retries, guests):
    srv, lam = fast_retries
    lam.create_function(FunctionName="echo", Runtime="wasm", Role=ROLE, Handler="echo.wasm",
                        Code={"ZipFile": make_zip({"echo.wasm": guests["echo"]})})
    lam.put_function_event_invoke_config(FunctionName="echo", MaximumRetryAttempts=0)
    lam.put_function_concurrency(FunctionName="echo", ReservedConcurrentExecutions=0)
    # A synchronous call is refused at once; an async one is accepted and waits.
    with pytest.raises(lam.exceptions.TooManyRequestsException):
        lam.invoke(FunctionName="echo", Payload=b"{}")
    invocation = event(lam, "echo", b'{"waited": true}')
    waiting = wait_for(srv.url, invocation, lambda s: "LastError" in s)
    assert "ReservedFunctionConcurrentInvocationLimitExceeded" in waiting["LastError"], waiting
    assert waiting["State"] == "queued" and waiting["History"] == [], "it waits without an attempt"
    time.sleep(0.3)
    assert status_of(srv.url, invocation)["History"] == [], "and keeps waiting"
    lam.delete_function_concurrency(FunctionName="echo")
    done = wait_for(srv.url, invocation)
    assert done["State"] == "succeeded", done
    assert done["Attempts"] == 1, "the wait did not count against MaximumRetryAttempts 0"
    assert [a["Outcome"] for a in done["History"]] == ["succeeded"]


def test_the_deprecated_invoke_async_is_an_event_invoke(lam, server, functions, guests):
    name = functions.create(make_zip({"echo.wasm": guests["echo"]}), handler="echo.wasm")["FunctionName"]
    resp = lam.invoke_async(FunctionName=name, InvokeArgs=b'{"old": "api"}')
    assert resp["Status"] == 202
    status = wait_for(server.url, resp["ResponseMetadata"]["RequestId"])
    assert status["State"] == "succeeded"
    with pytest.raises(lam.exceptions.InvalidRequestContentException):
        lam.invoke_async(FunctionName=name, InvokeArgs=b"{nope")
