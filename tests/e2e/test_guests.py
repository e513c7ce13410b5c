"""Guests that misbehave get a function error, and the platform goes on serving."""

from __future__ import annotations

import base64
import json
import threading
import time

import pytest

from support import assert_intact, invoke_payload


def assert_function_error(out: dict) -> dict:
    """Lambda's function error: 200, X-Amz-Function-Error Unhandled, an error body."""
    assert out["StatusCode"] == 200
    assert out.get("FunctionError") == "Unhandled", out["Body"][:500]
    assert out["ResponseMetadata"]["HTTPHeaders"].get("x-amz-function-error") == "Unhandled"
    body = json.loads(out["Body"])
    assert isinstance(body.get("errorMessage"), str) and body["errorMessage"], body
    assert isinstance(body.get("errorType"), str) and body["errorType"], body
    return body


def test_trap_is_a_function_error(lam, functions, guests, canary):
    name = functions.create(guests["trap"])["FunctionName"]
    for _ in range(2):
        out = invoke_payload(lam, name, b"{}", LogType="Tail")
        assert_function_error(out)
        assert "trap: about to execute unreachable" in base64.b64decode(out["LogResult"]).decode()
    assert_intact(lam, canary)


def test_timeout_is_a_function_error(lam, functions, guests, canary):
    name = functions.create(guests["loop"], Timeout=1)["FunctionName"]
    for _ in range(2):
        started = time.monotonic()
        out = invoke_payload(lam, name, b"{}")
        elapsed = time.monotonic() - started
        body = assert_function_error(out)
        assert "Task timed out after 1.00 seconds" in body["errorMessage"], body
        assert 0.9 <= elapsed < 5, f"a 1 s timeout took {elapsed:.2f} s"
    assert_intact(lam, canary)


def test_a_looping_guest_does_not_hold_up_other_invokes(lam, functions, guests, canary):
    name = functions.create(guests["loop"], Timeout=3)["FunctionName"]
    results: dict = {}

    def spin():
        results["loop"] = invoke_payload(lam, name, b"{}")

    spinner = threading.Thread(target=spin)
    spinner.start()
    time.sleep(0.3)
    started = time.monotonic()
    out = invoke_payload(lam, canary["name"], b'{"while":"looping"}')
    elapsed = time.monotonic() - started
    spinner.join(timeout=30)
    assert out["Body"] == b'{"while":"looping"}'
    assert elapsed < 1.5, f"an echo took {elapsed:.2f} s next to a looping guest"
    body = assert_function_error(results["loop"])
    assert "Task timed out after 3.00 seconds" in body["errorMessage"]


def test_memory_growth_past_memory_size_is_out_of_memory(lam, functions, guests, canary):
    name = functions.create(guests["grow"], MemorySize=128)["FunctionName"]
    for _ in range(2):
        body = assert_function_error(invoke_payload(lam, name, b"{}"))
        assert "OutOfMemory" in body["errorType"], body
    assert_intact(lam, canary)


def test_exit_nonzero_is_a_function_error(lam, functions, guests, canary):
    name = functions.create(guests["exit1"])["FunctionName"]
    for _ in range(2):
        assert_function_error(invoke_payload(lam, name, b"{}"))
    assert_intact(lam, canary)


def test_exit_zero_is_success(lam, functions, guests):
    name = functions.create(guests["exit0"])["FunctionName"]
    out = invoke_payload(lam, name, b"{}")
    assert "FunctionError" not in out, out["Body"]
    assert out["Body"] == b'{"exit":0}'


def test_environment_reaches_the_guest(lam, functions, guests):
    variables = {"GREETING": "hello world", "NUM": "42", "WITH_EQUALS": "x=y=z"}
    name = functions.create(guests["env"], Environment={"Variables": variables})["FunctionName"]
    lines = invoke_payload(lam, name, b"{}")["Body"].decode().splitlines()
    for key, value in variables.items():
        assert f"{key}={value}" in lines, lines
    lam.update_function_configuration(FunctionName=name, Environment={"Variables": {"GREETING": "changed"}})
    lines = invoke_payload(lam, name, b"{}")["Body"].decode().splitlines()
    assert "GREETING=changed" in lines, lines
    assert not any(line.startswith("NUM=") for line in lines), lines


def test_invocations_do_not_share_state(lam, functions, guests):
    name = functions.create(guests["echo"])["FunctionName"]
    results: dict[int, bytes] = {}

    def run(i: int):
        results[i] = invoke_payload(lam, name, json.dumps({"i": i}).encode())["Body"]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert results == {i: json.dumps({"i": i}).encode() for i in range(8)}


def test_wasi_cli_component_runs(lam, functions, component_echo):
    assert component_echo[4:8] != b"\x01\x00\x00\x00", "expected a component, got a core module"
    name = functions.create(component_echo, Environment={"Variables": {"GREETING": "from-config"}})["FunctionName"]
    out = invoke_payload(lam, name, b'{"component":true}', LogType="Tail")
    assert "FunctionError" not in out, out["Body"]
    assert out["Body"] == b'{"component":true}'
    log = base64.b64decode(out["LogResult"]).decode()
    assert "component-echo: 18 bytes, GREETING=from-config" in log, log


@pytest.mark.parametrize("guest", ["trap", "exit1"])
def test_function_error_through_the_log_tail(lam, functions, guests, guest):
    name = functions.create(guests[guest])["FunctionName"]
    out = invoke_payload(lam, name, b"{}", LogType="Tail")
    assert_function_error(out)
    log = base64.b64decode(out["LogResult"]).decode()
    request_id = out["ResponseMetadata"]["RequestId"]
    assert f"REPORT RequestId: {request_id}" in log, log
