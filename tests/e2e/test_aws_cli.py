"""The real `aws` CLI (v1) against the platform: every answer must parse."""

from __future__ import annotations

import base64
import json
import uuid

import pytest

from support import ROLE, code_sha256, make_zip


@pytest.fixture
def cli_fn(aws, lam):
    names: list[str] = []

    def name() -> str:
        n = f"cli-{uuid.uuid4().hex[:10]}"
        names.append(n)
        return n

    yield name
    for n in names:
        try:
            lam.delete_function(FunctionName=n)
        except Exception:
            pass


def create(aws, tmp_path, name: str, package: bytes, *extra: str) -> dict:
    path = tmp_path / f"{name}.zip"
    path.write_bytes(package)
    return aws(
        "create-function",
        "--function-name", name,
        "--runtime", "wasm",
        "--role", ROLE,
        "--zip-file", f"fileb://{path}",
        *extra,
    )


def test_cli_function_lifecycle(aws, cli_fn, guests, tmp_path):
    name = cli_fn()
    package = make_zip({"echo.wasm": guests["echo"]})
    created = create(aws, tmp_path, name, package, "--handler", "echo.wasm", "--description", "from the cli")
    assert created["FunctionName"] == name
    assert created["CodeSha256"] == code_sha256(package)
    assert created["Handler"] == "echo.wasm"
    assert created["Runtime"] == "wasm"

    got = aws("get-function", "--function-name", name)
    assert got["Configuration"]["CodeSha256"] == code_sha256(package)
    assert got["Configuration"]["Description"] == "from the cli"
    conf = aws("get-function-configuration", "--function-name", name)
    assert conf == got["Configuration"]

    new_package = make_zip({"echo.wasm": guests["hello"]})
    (tmp_path / "v2.zip").write_bytes(new_package)
    updated = aws("update-function-code", "--function-name", name, "--zip-file", f"fileb://{tmp_path / 'v2.zip'}")
    assert updated["CodeSha256"] == code_sha256(new_package)
    assert updated["RevisionId"] != conf["RevisionId"]

    out = tmp_path / "out.json"
    result = aws("invoke", "--function-name", name, "--payload", '{"a":1}', str(out))
    assert result["StatusCode"] == 200
    assert result["ExecutedVersion"] == "$LATEST"
    assert out.read_bytes() == b'{"v":2}'

    deleted = aws("delete-function", "--function-name", name)
    # The model binds the answer's HTTP status to a StatusCode member.
    assert (deleted or {}).get("StatusCode", 204) in (200, 204), deleted
    err = aws.fails("get-function", "--function-name", name)
    assert "ResourceNotFoundException" in err


def test_cli_invoke_with_payload_and_log_tail(aws, cli_fn, guests, tmp_path):
    name = cli_fn()
    create(aws, tmp_path, name, make_zip({"echo.wasm": guests["echo"]}))
    out = tmp_path / "out.json"
    result = aws("invoke", "--function-name", name, "--payload", '{"via":"cli"}', "--log-type", "Tail", str(out))
    assert result["StatusCode"] == 200
    assert "FunctionError" not in result
    assert json.loads(out.read_bytes()) == {"via": "cli"}
    log = base64.b64decode(result["LogResult"]).decode()
    for marker in ("START RequestId:", "echo: copying the event to the result", "END RequestId:", "REPORT RequestId:"):
        assert marker in log, log


def test_cli_invoke_function_error(aws, cli_fn, guests, tmp_path):
    name = cli_fn()
    create(aws, tmp_path, name, make_zip({"trap.wasm": guests["trap"]}))
    out = tmp_path / "out.json"
    result = aws("invoke", "--function-name", name, "--payload", "{}", str(out))
    assert result["StatusCode"] == 200
    assert result["FunctionError"] == "Unhandled"
    body = json.loads(out.read_bytes())
    assert body["errorMessage"] and body["errorType"]


def test_cli_invoke_dry_run(aws, cli_fn, guests, tmp_path):
    name = cli_fn()
    create(aws, tmp_path, name, make_zip({"echo.wasm": guests["echo"]}))
    result = aws("invoke", "--function-name", name, "--invocation-type", "DryRun", str(tmp_path / "out.json"))
    assert result["StatusCode"] == 204


def test_cli_list_functions_pages(aws, cli_fn, guests, tmp_path):
    names = set()
    for _ in range(4):
        name = cli_fn()
        create(aws, tmp_path, name, make_zip({"hello.wasm": guests["hello"]}))
        names.add(name)
    # --page-size makes the CLI walk the server's Marker/NextMarker pages.
    listed = aws("list-functions", "--page-size", "2")["Functions"]
    got = [f["FunctionName"] for f in listed]
    assert len(got) == len(set(got)), got
    assert names <= set(got)
    # --max-items stops early and hands back a token to go on from.
    first = aws("list-functions", "--max-items", "1", "--page-size", "1")
    assert len(first["Functions"]) == 1
    assert first.get("NextToken")
    rest = aws("list-functions", "--page-size", "2", "--starting-token", first["NextToken"])["Functions"]
    assert first["Functions"][0]["FunctionName"] not in {f["FunctionName"] for f in rest}
    assert {first["Functions"][0]["FunctionName"]} | {f["FunctionName"] for f in rest} == set(got)


def test_cli_update_configuration_with_revision_id(aws, cli_fn, guests, tmp_path):
    name = cli_fn()
    created = create(aws, tmp_path, name, make_zip({"env.wasm": guests["env"]}))
    updated = aws(
        "update-function-configuration",
        "--function-name", name,
        "--revision-id", created["RevisionId"],
        "--timeout", "20",
        "--memory-size", "512",
        "--description", "tuned",
        "--environment", "Variables={MODE=cli,LEVEL=3}",
    )
    assert (updated["Timeout"], updated["MemorySize"], updated["Description"]) == (20, 512, "tuned")
    assert updated["Environment"]["Variables"] == {"MODE": "cli", "LEVEL": "3"}
    assert updated["RevisionId"] != created["RevisionId"]
    err = aws.fails(
        "update-function-configuration", "--function-name", name, "--revision-id", created["RevisionId"], "--timeout", "30"
    )
    assert "PreconditionFailedException" in err, err
    conf = aws("get-function-configuration", "--function-name", name)
    assert conf["Timeout"] == 20
    out = tmp_path / "out.txt"
    aws("invoke", "--function-name", name, "--payload", "{}", str(out))
    assert {"MODE=cli", "LEVEL=3"} <= set(out.read_text().splitlines())


def test_cli_get_account_settings(aws):
    settings = aws("get-account-settings")
    assert settings["AccountLimit"]["CodeSizeZipped"] == 52_428_800
    assert settings["AccountUsage"]["FunctionCount"] >= 0


def test_cli_errors_are_parsed(aws, cli_fn, guests, tmp_path):
    name = cli_fn()
    create(aws, tmp_path, name, make_zip({"echo.wasm": guests["echo"]}))
    err = aws.fails(
        "create-function", "--function-name", name, "--runtime", "wasm", "--role", ROLE,
        "--zip-file", f"fileb://{tmp_path / f'{name}.zip'}",
    )
    assert "ResourceConflictException" in err, err
    err = aws.fails("update-function-configuration", "--function-name", name, "--memory-size", "99999")
    assert "ValidationException" in err, err
    err = aws.fails("invoke", "--function-name", "no-such-function-here", str(tmp_path / "x"))
    assert "ResourceNotFoundException" in err, err
