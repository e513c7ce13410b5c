"""provided.* functions: a zip's `bootstrap` runs in a container sandbox and
speaks the Lambda Runtime API; driven through the aws CLI and boto3."""

from __future__ import annotations

import io
import json
import stat
import time
import zipfile

import botocore.exceptions
import pytest

from support import GUESTS_DIR, ROLE, assert_client_error, aws_client, build_guest, invoke_payload, log_of, make_zip

BOOTSTRAP = GUESTS_DIR / "provided" / "bootstrap"


def bootstrap_zip(program: bytes | None = None) -> bytes:
    """A custom-runtime package: `program` (the bootstrap script by default)
    as an executable named `bootstrap` at the zip's root."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        info = zipfile.ZipInfo("bootstrap")
        info.external_attr = (stat.S_IFREG | 0o755) << 16
        z.writestr(info, BOOTSTRAP.read_bytes() if program is None else program)
    return buf.getvalue()


@pytest.fixture
def provided(functions):
    """Creates a provided.al2023 function of the bootstrap script; returns its name."""

    def create(**kw) -> str:
        created = functions.create(bootstrap_zip(), handler="unused", Runtime="provided.al2023", **kw)
        return created["FunctionName"]

    return create


def test_round_trip_cold_then_hot(lam, provided):
    name = provided(Environment={"Variables": {"GREETING": "hi"}})
    first = invoke_payload(lam, name, b'{"a":1}', LogType="Tail")
    assert "FunctionError" not in first, first["Body"]
    body = json.loads(first["Body"])
    assert body["echo"] == {"a": 1}
    assert body["pid"] == 1, "the bootstrap is the init of its own pid namespace"
    assert body["uid"] != 0, "the function does not run as root"
    assert body["greeting"] == "hi" and body["version"] == "$LATEST"
    assert body["arn"].endswith(f":function:{name}:$LATEST")
    assert "Init Duration:" in log_of(first), "the first invocation is a cold start"
    assert "handling" in log_of(first)
    second = invoke_payload(lam, name, b'{"a":2}', LogType="Tail")
    assert json.loads(second["Body"])["echo"] == {"a": 2}
    assert "Init Duration:" not in log_of(second), "the second invocation finds the sandbox hot"


def test_function_error_timeout_and_crash(lam, provided):
    name = provided(Timeout=1)
    failed = invoke_payload(lam, name, b'{"do":"fail"}')
    assert failed["FunctionError"] == "Unhandled"
    assert json.loads(failed["Body"]) == {"errorMessage": "asked to fail", "errorType": "Asked"}
    slow = invoke_payload(lam, name, b'{"do":"sleep","seconds":5}')
    assert slow["FunctionError"] == "Unhandled"
    assert "Task timed out after 1.00 seconds" in json.loads(slow["Body"])["errorMessage"]
    crashed = invoke_payload(lam, name, b'{"do":"crash"}')
    assert crashed["FunctionError"] == "Unhandled"
    assert "Runtime exited with error" in json.loads(crashed["Body"])["errorMessage"]
    after = invoke_payload(lam, name, b'{"ok":true}')
    assert "FunctionError" not in after and json.loads(after["Body"])["echo"] == {"ok": True}


def test_code_is_read_only(lam, provided):
    name = provided()
    out = json.loads(invoke_payload(lam, name, b'{"do":"write-task"}')["Body"])
    assert out["echo"]["write"] in ("PermissionError", "OSError"), out


def test_versions_run_in_their_own_sandboxes(lam, provided):
    name = provided(Publish=True)
    lam.update_function_configuration(FunctionName=name, Environment={"Variables": {"GREETING": "v2"}})
    lam.get_waiter("function_updated_v2").wait(FunctionName=name)
    v1 = json.loads(invoke_payload(lam, name, b"{}", Qualifier="1")["Body"])
    latest = json.loads(invoke_payload(lam, name, b"{}")["Body"])
    assert (v1["version"], v1["greeting"]) == ("1", None)
    assert (latest["version"], latest["greeting"]) == ("$LATEST", "v2")


def test_bad_provided_packages_are_refused_at_deploy(lam, fn_name, guests):
    cases = {
        "no-bootstrap": make_zip({"main.py": b"print(1)"}),
        "raw-wasm": guests["echo"],
    }
    for label, code in cases.items():
        with pytest.raises(lam.exceptions.InvalidParameterValueException) as e:
            lam.create_function(
                FunctionName=f"{fn_name}-{label}", Runtime="provided.al2023", Role=ROLE,
                Handler="x", Code={"ZipFile": code},
            )
        assert_client_error(e, "InvalidParameterValueException", 400)


def test_aws_cli_deploys_and_invokes(aws, tmp_path, fn_name):
    package = tmp_path / "fn.zip"
    package.write_bytes(bootstrap_zip())
    created = aws(
        "create-function", "--function-name", fn_name, "--runtime", "provided.al2", "--role", ROLE,
        "--handler", "unused", "--zip-file", f"fileb://{package}",
    )
    assert created["Runtime"] == "provided.al2"
    out = tmp_path / "out.json"
    answer = aws("invoke", "--function-name", fn_name, "--payload", '{"cli":1}', str(out))
    assert answer["StatusCode"] == 200 and "FunctionError" not in answer
    assert json.loads(out.read_text())["echo"] == {"cli": 1}
    aws("delete-function", "--function-name", fn_name)


@pytest.fixture(scope="module")
def lambda_rust_zip(tmp_path_factory) -> bytes:
    """tests/guests/lambda-rust — a function written with AWS's `lambda_runtime`
    crate — built for this host and zipped as Lambda's custom runtime wants it."""
    return bootstrap_zip(build_guest("lambda-rust", "bootstrap", tmp_path_factory.mktemp("rust-target")))


def test_a_lambda_runtime_rust_function_runs_unchanged(lam, fn_name, lambda_rust_zip):
    lam.create_function(
        FunctionName=fn_name, Runtime="provided.al2023", Role=ROLE, Handler="bootstrap",
        Code={"ZipFile": lambda_rust_zip}, MemorySize=256, Publish=True,
    )
    try:
        answer = invoke_payload(lam, fn_name, b'{"a":[1,2]}', Qualifier="1")
        assert "FunctionError" not in answer, answer["Body"]
        body = json.loads(answer["Body"])
        assert body["echo"] == {"a": [1, 2]}
        assert body["request_id"] == answer["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"]
        assert body["arn"].endswith(f":function:{fn_name}:1")
        assert (body["function_name"], body["memory"], body["version"]) == (fn_name, 256, "1")
        failed = invoke_payload(lam, fn_name, b'{"fail":"asked to fail"}')
        assert failed["FunctionError"] == "Unhandled"
        error = json.loads(failed["Body"])
        assert error["errorMessage"] == "asked to fail" and error["errorType"], error
        again = invoke_payload(lam, fn_name, b'{"after":"error"}')
        assert json.loads(again["Body"])["echo"] == {"after": "error"}
    finally:
        lam.delete_function(FunctionName=fn_name)


def tier_of(resp) -> str:
    return resp["ResponseMetadata"]["HTTPHeaders"]["x-nimbus-tier"]


def test_each_invocation_records_its_tier(lam, provided):
    # The server keeps warm sandboxes (no code yet) ready; a first
    # invocation claims one, the next finds the function's sandbox hot.
    name = provided(Environment={"Variables": {"GREETING": "claimed"}})
    time.sleep(1.0)  # the pool refills in the background within milliseconds
    first = invoke_payload(lam, name, b'{"n":1}', LogType="Tail")
    assert tier_of(first) == "warm", first["ResponseMetadata"]["HTTPHeaders"]
    body = json.loads(first["Body"])
    assert body["echo"] == {"n": 1} and body["greeting"] == "claimed"
    assert "Init Duration:" in log_of(first), "a claimed warm sandbox still runs the function's init"
    second = invoke_payload(lam, name, b'{"n":2}', LogType="Tail")
    assert tier_of(second) == "hot" and "Init Duration:" not in log_of(second)
    # The pool's sandboxes have Lambda's default /tmp; the first start with
    # another size is built cold, and from then on the pool keeps that size too.
    big = provided(EphemeralStorage={"Size": 1024})
    time.sleep(1.0)
    assert tier_of(invoke_payload(lam, big, b"{}")) == "cold"
    time.sleep(1.0)
    also_big = provided(EphemeralStorage={"Size": 1024})
    assert tier_of(invoke_payload(lam, also_big, b"{}")) == "warm"
    # A wasm function's instance is prepared ahead: it is hot from the start.
    assert tier_of(lam.invoke(FunctionName=name, Payload=b"{}")) == "hot"


def test_an_invocation_whose_caller_goes_away_runs_to_its_end(server, lam, provided):
    # As on Lambda, a client that disconnects does not stop its invocation:
    # it runs to its end and its sandbox goes back to the pool, hot. An
    # invocation dropped midway would leave its sandbox to be killed.
    name = provided()
    invoke_payload(lam, name, b"{}")
    impatient = aws_client("lambda", server.url, read_timeout=0.5)
    with pytest.raises(botocore.exceptions.ReadTimeoutError):
        impatient.invoke(FunctionName=name, Payload=b'{"do":"sleep","seconds":1.5}')
    time.sleep(2.5)
    after = invoke_payload(lam, name, b'{"n":1}')
    assert json.loads(after["Body"])["echo"] == {"n": 1}
    assert tier_of(after) == "hot", "the abandoned invocation's sandbox was not returned"
