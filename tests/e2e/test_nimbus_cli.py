"""The nimbus CLI's client commands, run as a user would with `nimbus env`'s output."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest
from botocore.exceptions import ClientError

from support import (
    REGION,
    ROOT_ACCESS_KEY_ID,
    ROOT_SECRET_ACCESS_KEY,
    assert_client_error,
    clean_env,
    code_sha256,
    make_zip,
)


@pytest.fixture(scope="module")
def user_env(server):
    """The environment a user has after `eval "$(nimbus env)"`."""
    return clean_env(**server.nimbus_env())


@pytest.fixture
def nimbus(server, user_env):
    def run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(server.bin), *args], input=stdin, capture_output=True, env=user_env, timeout=120
        )

    return run


@pytest.fixture
def cli_name(lam):
    names: list[str] = []

    def name() -> str:
        n = f"ncli-{uuid.uuid4().hex[:10]}"
        names.append(n)
        return n

    yield name
    for n in names:
        try:
            lam.delete_function(FunctionName=n)
        except Exception:
            pass


def ok(done: subprocess.CompletedProcess) -> bytes:
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr.decode(errors='replace')}"
    return done.stdout


def fails_with_one_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode != 0, done.stdout
    lines = done.stderr.decode(errors="replace").strip().splitlines()
    assert len(lines) == 1, f"expected one error line, got: {lines}"
    return lines[0]


def test_nimbus_env_prints_what_aws_clients_need(server):
    env = server.nimbus_env()
    assert env["AWS_ENDPOINT_URL"].rstrip("/") == server.url
    assert env["AWS_ACCESS_KEY_ID"] == ROOT_ACCESS_KEY_ID
    assert env["AWS_SECRET_ACCESS_KEY"] == ROOT_SECRET_ACCESS_KEY
    assert env["AWS_REGION"] == REGION
    assert env["AWS_DEFAULT_REGION"] == REGION


def test_plain_aws_cli_and_boto3_work_with_nimbus_env(user_env, canary):
    done = subprocess.run(
        ["aws", "lambda", "get-function-configuration", "--function-name", canary["name"]],
        capture_output=True, text=True, env=user_env, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["FunctionName"] == canary["name"]
    script = (
        "import boto3, sys; "
        "c = boto3.client('lambda'); "
        "print(c.invoke(FunctionName=sys.argv[1], Payload=b'{\"plain\":1}')['Payload'].read().decode())"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, canary["name"]], capture_output=True, text=True, env=user_env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == '{"plain":1}'


def test_deploy_raw_wasm_then_invoke(nimbus, lam, cli_name, guests, tmp_path):
    name = cli_name()
    wasm = tmp_path / "echo.wasm"
    wasm.write_bytes(guests["echo"])
    ok(nimbus("deploy", name, str(wasm)))
    conf = lam.get_function_configuration(FunctionName=name)
    assert conf["CodeSha256"] == code_sha256(guests["echo"])
    assert conf["Runtime"] == "wasm"
    assert ok(nimbus("invoke", name, '{"from":"arg"}')).strip() == b'{"from":"arg"}'
    assert ok(nimbus("invoke", name, "-", stdin=b'{"from":"stdin"}')).strip() == b'{"from":"stdin"}'


def test_deploy_sets_config_and_updates(nimbus, lam, cli_name, guests, tmp_path):
    name = cli_name()
    package = make_zip({"env.wasm": guests["env"], "hello.wasm": guests["hello"]})
    zip_path = tmp_path / "app.zip"
    zip_path.write_bytes(package)
    ok(nimbus(
        "deploy", name, str(zip_path),
        "--handler", "env.wasm", "--memory", "256", "--timeout", "7",
        "--env", "COLOR=blue", "--env", "SIZE=10",
    ))
    conf = lam.get_function_configuration(FunctionName=name)
    assert conf["CodeSha256"] == code_sha256(package)
    assert (conf["Handler"], conf["MemorySize"], conf["Timeout"]) == ("env.wasm", 256, 7)
    assert conf["Environment"]["Variables"] == {"COLOR": "blue", "SIZE": "10"}
    lines = ok(nimbus("invoke", name, "{}")).decode().splitlines()
    assert {"COLOR=blue", "SIZE=10"} <= set(lines)

    # Deploying again to the same name updates code and configuration.
    ok(nimbus("deploy", name, str(zip_path), "--handler", "hello.wasm", "--memory", "512"))
    conf2 = lam.get_function_configuration(FunctionName=name)
    assert (conf2["Handler"], conf2["MemorySize"]) == ("hello.wasm", 512)
    assert conf2["RevisionId"] != conf["RevisionId"]
    assert ok(nimbus("invoke", name, "{}")).strip() == b'{"v":2}'
    new_wasm = tmp_path / "echo.wasm"
    new_wasm.write_bytes(guests["echo"])
    ok(nimbus("deploy", name, str(new_wasm)))
    assert lam.get_function_configuration(FunctionName=name)["CodeSha256"] == code_sha256(guests["echo"])
    assert ok(nimbus("invoke", name, '{"v":3}')).strip() == b'{"v":3}'


def test_invoke_function_error_exits_nonzero(nimbus, cli_name, guests, tmp_path):
    name = cli_name()
    wasm = tmp_path / "trap.wasm"
    wasm.write_bytes(guests["trap"])
    ok(nimbus("deploy", name, str(wasm)))
    done = nimbus("invoke", name, "{}")
    assert done.returncode != 0
    printed = (done.stdout + done.stderr).decode(errors="replace")
    start = printed.index("{")
    error = json.JSONDecoder().raw_decode(printed[start:])[0]
    assert error["errorType"] and error["errorMessage"]


def test_ls_and_rm(nimbus, lam, cli_name, guests, tmp_path):
    name = cli_name()
    wasm = tmp_path / "echo.wasm"
    wasm.write_bytes(guests["echo"])
    ok(nimbus("deploy", name, str(wasm)))
    assert name in ok(nimbus("ls")).decode().split()
    ok(nimbus("rm", name))
    with pytest.raises(ClientError) as e:
        lam.get_function(FunctionName=name)
    assert_client_error(e, "ResourceNotFoundException", 404)
    assert name not in ok(nimbus("ls")).decode().split()


def test_logs_shows_the_function_log(nimbus, cli_name, guests, tmp_path):
    name = cli_name()
    wasm = tmp_path / "echo.wasm"
    wasm.write_bytes(guests["echo"])
    ok(nimbus("deploy", name, str(wasm)))
    ok(nimbus("invoke", name, '{"log":"me"}'))
    logs = ok(nimbus("logs", name)).decode()
    assert "echo: copying the event to the result" in logs
    assert "REPORT RequestId" in logs


def test_cli_errors_are_one_line(nimbus, tmp_path):
    missing = f"ncli-missing-{uuid.uuid4().hex[:6]}"
    fails_with_one_line(nimbus("invoke", missing, "{}"))
    fails_with_one_line(nimbus("rm", missing))
    fails_with_one_line(nimbus("logs", missing))
    fails_with_one_line(nimbus("deploy", missing, str(tmp_path / "does-not-exist.wasm")))
    bad = tmp_path / "bad.wasm"
    bad.write_bytes(b"not wasm at all")
    line = fails_with_one_line(nimbus("deploy", missing, str(bad)))
    assert "InvalidParameterValue" in line or "invalid" in line.lower(), line


def test_cli_with_wrong_secret_fails(server, user_env, tmp_path):
    env = dict(user_env, AWS_SECRET_ACCESS_KEY="y" * 40)
    done = subprocess.run([str(server.bin), "ls"], capture_output=True, env=env, timeout=60)
    line = fails_with_one_line(done)
    assert "InvalidSignature" in line or "signature" in line.lower(), line
