"""python3.x functions: a handler module runs in a container sandbox under
nimbus' own runtime client, or under AWS's awslambdaric when the package
brings it; driven through boto3 and the aws CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support import GUESTS_DIR, ROLE, assert_client_error, invoke_payload, log_of, make_zip, require_capability

PYTHON_GUESTS = GUESTS_DIR / "python"
HOST_PYTHON = Path("/usr/bin/python3")


def host_runtime() -> str:
    """The python3.x runtime the host's interpreter serves."""
    if not HOST_PYTHON.exists():
        require_capability("the host has no /usr/bin/python3 for the python3.x runtimes")
    out = subprocess.run(
        [str(HOST_PYTHON), "-c", "import sys; print('python%d.%d' % sys.version_info[:2])"],
        capture_output=True, text=True, check=True,
    )
    return out.stdout.strip()


def handler_zip(extra: dict[str, bytes] | None = None) -> bytes:
    entries = {p.name: p.read_bytes() for p in sorted(PYTHON_GUESTS.glob("*.py"))}
    entries.update(extra or {})
    return make_zip(entries)


@pytest.fixture(scope="module")
def runtime() -> str:
    return host_runtime()


@pytest.fixture(scope="module")
def awslambdaric_files(tmp_path_factory, runtime) -> dict[str, bytes]:
    """AWS's runtime interface client and its dependencies, installed by pip
    for the host's python into a folder, as a user would vendor it into a zip."""
    target = tmp_path_factory.mktemp("awslambdaric")
    minor = runtime.removeprefix("python")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "--target", str(target), "--only-binary=:all:", "--implementation", "cp",
         "--python-version", minor, "--platform", "manylinux2014_x86_64", "awslambdaric"],
        capture_output=True, text=True, timeout=300,
    )
    if done.returncode != 0:
        require_capability(f"pip could not install awslambdaric: {done.stderr.strip()[-400:]}")
    files = {}
    for path in target.rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts:
            files[str(path.relative_to(target))] = path.read_bytes()
    assert "awslambdaric/__init__.py" in files, sorted(files)[:20]
    return files


@pytest.fixture
def python_fn(functions, runtime):
    """Creates a python function (deleted when the test ends); returns its name."""

    def create(code: bytes | None = None, handler: str = "lambda_function.lambda_handler", **kw) -> str:
        created = functions.create(code or handler_zip(), handler=handler, Runtime=runtime, **kw)
        return created["FunctionName"]

    return create


def test_round_trip_cold_then_hot(lam, python_fn, runtime):
    name = python_fn(Environment={"Variables": {"GREETING": "hi"}}, MemorySize=256, Timeout=5)
    assert lam.get_function_configuration(FunctionName=name)["Runtime"] == runtime
    first = invoke_payload(lam, name, b'{"a":1}', LogType="Tail")
    assert "FunctionError" not in first, first["Body"]
    body = json.loads(first["Body"])
    assert body["echo"] == {"a": 1}
    assert body["python"] == runtime.removeprefix("python")
    assert (body["function_name"], body["version"], body["memory"]) == (name, "$LATEST", "256")
    assert body["arn"].endswith(f":function:{name}:$LATEST")
    assert body["request_id"] == first["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"]
    assert 0 < body["remaining_ms"] <= 5000
    assert body["greeting"] == "hi"
    assert body["pid"] != os.getpid() and body["uid"] != 0, "the handler runs sandboxed, not as root"
    log = log_of(first)
    assert "Init Duration:" in log, "the first invocation is a cold start"
    assert f"handling {body['request_id']}" in log, "print() reaches the function's log"
    assert "[INFO]" in log and f"{body['request_id']}\tlogged at info by {name}" in log, log
    second = invoke_payload(lam, name, b'{"a":2}', LogType="Tail")
    again = json.loads(second["Body"])
    assert again["echo"] == {"a": 2}
    assert again["initialized_at"] == body["initialized_at"], "the module is imported once per sandbox"
    assert "Init Duration:" not in log_of(second), "the second invocation finds the sandbox hot"


def test_handler_errors_have_lambdas_shape(lam, python_fn):
    name = python_fn(Timeout=1)
    raised = invoke_payload(lam, name, b'{"do":"raise"}', LogType="Tail")
    assert raised["FunctionError"] == "Unhandled"
    error = json.loads(raised["Body"])
    assert (error["errorType"], error["errorMessage"]) == ("ValueError", "asked to raise")
    assert any("lambda_handler" in frame for frame in error["stackTrace"]), error
    assert "[ERROR] ValueError: asked to raise" in log_of(raised)
    bad = invoke_payload(lam, name, b'{"do":"unserializable"}')
    assert bad["FunctionError"] == "Unhandled"
    assert json.loads(bad["Body"])["errorType"] == "Runtime.MarshalError"
    slow = invoke_payload(lam, name, b'{"do":"sleep","seconds":5}')
    assert slow["FunctionError"] == "Unhandled"
    assert "Task timed out after 1.00 seconds" in json.loads(slow["Body"])["errorMessage"]
    after = invoke_payload(lam, name, b'{"ok":true}')
    assert "FunctionError" not in after and json.loads(after["Body"])["echo"] == {"ok": True}


def test_init_errors_are_reported_as_lambda_reports_them(lam, python_fn):
    cases = {
        "broken_import.lambda_handler": (
            "Runtime.ImportModuleError",
            "Unable to import module 'broken_import': No module named 'not_a_module_anywhere'",
        ),
        "no_such_module.handler": (
            "Runtime.ImportModuleError",
            "Unable to import module 'no_such_module': No module named 'no_such_module'",
        ),
        "lambda_function.missing": (
            "Runtime.HandlerNotFound",
            "Handler 'missing' missing on module 'lambda_function'",
        ),
        "nodot": ("Runtime.MalformedHandlerName", None),
    }
    for handler, (error_type, message) in cases.items():
        name = python_fn(handler=handler)
        resp = invoke_payload(lam, name, b"{}")
        assert resp["FunctionError"] == "Unhandled", (handler, resp["Body"])
        # A failed init is a start, never a hot sandbox.
        assert resp["ResponseMetadata"]["HTTPHeaders"]["x-nimbus-tier"] in ("warm", "cold")
        error = json.loads(resp["Body"])
        assert error["errorType"] == error_type, (handler, error)
        if message is not None:
            assert error["errorMessage"] == message, (handler, error)


def test_code_is_read_only_and_tmp_persists_while_hot(lam, python_fn):
    name = python_fn()
    out = json.loads(invoke_payload(lam, name, b'{"do":"write-task"}')["Body"])
    assert out["write"] in ("PermissionError", "OSError"), out
    counts = [json.loads(invoke_payload(lam, name, b'{"do":"tmp"}')["Body"])["tmp_count"] for _ in range(3)]
    assert counts == [1, 2, 3], "/tmp persists across warm invocations of one sandbox"


def test_a_warm_sandbox_runs_the_runtime_before_its_function_exists(lam, python_fn):
    # The first python function's start makes the server keep sandboxes
    # whose runtime client already runs and waits for its function.
    first = json.loads(invoke_payload(lam, python_fn(), b"{}")["Body"])
    time.sleep(1.0)  # they are built in the background
    before_deploy = time.time()
    library = Path("/usr/lib/x86_64-linux-gnu/libz.so.1").read_bytes()
    name = python_fn(code=handler_zip({"lib/libnimbusprobe.so": library}),
                     Environment={"Variables": {"GREETING": "handed over"}}, MemorySize=192)
    started = invoke_payload(lam, name, b'{"n":1}', LogType="Tail")
    assert started["ResponseMetadata"]["HTTPHeaders"]["x-nimbus-tier"] == "warm"
    body = json.loads(started["Body"])
    # The interpreter was exec'd before the function's environment existed:
    # its exec-time environment holds none of the function's variables.
    assert "LAMBDA_TASK_ROOT" in body["exec_environment"], body["exec_environment"]
    assert "GREETING" not in body["exec_environment"], body["exec_environment"]
    assert "AWS_LAMBDA_FUNCTION_NAME" not in body["exec_environment"], body["exec_environment"]
    assert body["initialized_at"] > before_deploy, "the handler's module is imported after the claim"
    # It is the function's own sandbox in every way a fresh start gives.
    assert (body["greeting"], body["function_name"], body["memory"]) == ("handed over", name, "192")
    assert body["cwd"] == "/var/task" and "lambda_function.py" in body["files"], body
    assert body["echo"] == {"n": 1} and "Init Duration:" in log_of(started)
    assert body["hash_randomization"] == first["hash_randomization"] == 1
    out = json.loads(invoke_payload(lam, name, b'{"do":"write-task"}')["Body"])
    assert out["write"] in ("PermissionError", "OSError"), "the code mounted late is read-only too"
    # The package's own native library, found by name in /var/task/lib,
    # though the runtime started before that directory had anything in it.
    out = json.loads(invoke_payload(lam, name, b'{"do":"dlopen","name":"libnimbusprobe.so"}')["Body"])
    assert out == {"dlopen": "loaded"}, out
    # A variable the interpreter reads only when it starts gets an
    # interpreter of its own, started for it.
    own = python_fn(Environment={"Variables": {"PYTHONHASHSEED": "0"}})
    body = json.loads(invoke_payload(lam, own, b"{}")["Body"])
    assert body["hash_randomization"] == 0, body
    assert {"PYTHONHASHSEED", "AWS_LAMBDA_FUNCTION_NAME"} <= set(body["exec_environment"]), body


def test_awslambdaric_runs_the_same_handler_alike(lam, python_fn, awslambdaric_files):
    ours = python_fn()
    theirs = python_fn(code=handler_zip(awslambdaric_files), Timeout=5)
    answer = json.loads(invoke_payload(lam, theirs, b'{"via":"ric"}')["Body"])
    assert answer["echo"] == {"via": "ric"} and answer["function_name"] == theirs
    # The same handler's failures look alike under both runtime clients.
    for payload in (b'{"do":"raise"}', b'{"do":"unserializable"}'):
        a = json.loads(invoke_payload(lam, ours, payload)["Body"])
        b = json.loads(invoke_payload(lam, theirs, payload)["Body"])
        assert (a["errorType"], a["errorMessage"]) == (b["errorType"], b["errorMessage"]), (a, b)
        assert set(a) == set(b), (a, b)
    # A large answer, and one over Lambda's 6 MB, refused alike.
    for fn in (ours, theirs):
        big = invoke_payload(lam, fn, b'{"do":"big","bytes":2000000}')
        assert "FunctionError" not in big, big["Body"][:300]
        assert len(json.loads(big["Body"])["filler"]) == 2_000_000
        over = invoke_payload(lam, fn, b'{"do":"big","bytes":7000000}')
        assert over["FunctionError"] == "Unhandled", over["Body"][:300]
        assert json.loads(over["Body"])["errorType"] == "Function.ResponseSizeTooLarge"
    broken = python_fn(code=handler_zip(awslambdaric_files), handler="broken_import.lambda_handler")
    mine = python_fn(handler="broken_import.lambda_handler")
    a = json.loads(invoke_payload(lam, mine, b"{}")["Body"])
    b = json.loads(invoke_payload(lam, broken, b"{}")["Body"])
    assert (a["errorType"], a["errorMessage"]) == (b["errorType"], b["errorMessage"]), (a, b)


def test_a_python_the_host_lacks_is_refused_at_deploy(lam, fn_name, runtime):
    missing = next(
        (f"python3.{m}" for m in range(9, 15) if not Path(f"/usr/bin/python3.{m}").exists()), None
    )
    if missing is None:
        pytest.skip("this host has every python3.x Lambda names")
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as e:
        lam.create_function(
            FunctionName=fn_name, Runtime=missing, Role=ROLE, Handler="lambda_function.lambda_handler",
            Code={"ZipFile": handler_zip()},
        )
    message = assert_client_error(e, "InvalidParameterValueException", 400)
    assert missing in message and runtime in message, message
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function(FunctionName=fn_name)


def test_aws_cli_deploys_and_invokes(aws, tmp_path, fn_name, runtime):
    package = tmp_path / "fn.zip"
    package.write_bytes(handler_zip())
    created = aws(
        "create-function", "--function-name", fn_name, "--runtime", runtime, "--role", ROLE,
        "--handler", "lambda_function.lambda_handler", "--zip-file", f"fileb://{package}",
    )
    assert created["Runtime"] == runtime and created["Handler"] == "lambda_function.lambda_handler"
    out = tmp_path / "out.json"
    answer = aws("invoke", "--function-name", fn_name, "--payload", '{"cli":1}', str(out))
    assert answer["StatusCode"] == 200 and "FunctionError" not in answer
    assert json.loads(out.read_text())["echo"] == {"cli": 1}
    aws("delete-function", "--function-name", fn_name)


def test_deleting_a_function_retires_its_sandboxes(lam, fn_name, runtime, server):
    lam.create_function(
        FunctionName=fn_name, Runtime=runtime, Role=ROLE, Handler="lambda_function.lambda_handler",
        Code={"ZipFile": handler_zip()},
    )
    body = json.loads(invoke_payload(lam, fn_name, b"{}")["Body"])
    # Lambda's log stream name is "<version>/<sandbox>" here.
    sandbox = body["log_stream"].split("/", 1)[1]
    state = server.data_dir / "sandboxes" / sandbox
    assert state.is_dir(), f"the hot sandbox's state {state} exists"
    lam.delete_function(FunctionName=fn_name)
    deadline = time.monotonic() + 10
    while state.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not state.exists(), "the deleted function's sandbox was shut down"
