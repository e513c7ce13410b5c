"""The function lifecycle through boto3: every answer is parsed by botocore, so
a wrong shape fails here."""

from __future__ import annotations

import base64
import re

import pytest
import urllib3
from botocore.exceptions import ClientError

from support import ROLE, assert_client_error, code_sha256, invoke_payload, make_zip

LAST_MODIFIED_RE = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+0000$"


def arn_re(name: str) -> str:
    return r"^arn:aws:lambda:us-east-1:\d{12}:function:" + re.escape(name) + "$"


def strip_meta(resp: dict) -> dict:
    return {k: v for k, v in resp.items() if k != "ResponseMetadata"}


def test_create_from_zip_answers_lambda_configuration(functions, guests):
    package = make_zip({"echo.wasm": guests["echo"]})
    name = functions.name()
    resp = functions.create(package, name=name, handler="echo.wasm", Description="an echo")
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert resp["FunctionName"] == name
    assert re.match(arn_re(name), resp["FunctionArn"]), resp["FunctionArn"]
    assert resp["Runtime"] == "wasm"
    assert resp["Role"] == ROLE
    assert resp["Handler"] == "echo.wasm"
    assert resp["Description"] == "an echo"
    assert resp["CodeSize"] == len(package)
    assert resp["CodeSha256"] == code_sha256(package)
    assert resp["Timeout"] == 3
    assert resp["MemorySize"] == 128
    assert resp["EphemeralStorage"] == {"Size": 512}
    assert resp["Version"] == "$LATEST"
    assert resp["RevisionId"]
    assert re.match(LAST_MODIFIED_RE, resp["LastModified"]), resp["LastModified"]


def test_get_function_agrees_with_get_configuration(lam, functions, guests):
    package = make_zip({"echo.wasm": guests["echo"]})
    created = strip_meta(functions.create(package, handler="echo.wasm"))
    name = created["FunctionName"]
    conf = strip_meta(lam.get_function_configuration(FunctionName=name))
    got = lam.get_function(FunctionName=name)
    assert got["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert got["Configuration"] == conf
    for key in ("FunctionName", "FunctionArn", "CodeSha256", "CodeSize", "RevisionId", "Handler", "MemorySize", "Timeout"):
        assert conf[key] == created[key], key
    assert "Code" in got
    location = got["Code"].get("Location")
    if location and location.startswith("http"):
        # Lambda's Location downloads the package as it was uploaded.
        r = urllib3.PoolManager(retries=False).request("GET", location, timeout=30)
        assert r.status == 200
        assert r.data == package


def test_create_from_raw_wasm(lam, functions, guests):
    wasm = guests["echo"]
    resp = functions.create(wasm)
    assert resp["CodeSha256"] == code_sha256(wasm)
    assert resp["CodeSize"] == len(wasm)
    out = invoke_payload(lam, resp["FunctionName"], b'{"raw":true}')
    assert out["StatusCode"] == 200
    assert "FunctionError" not in out, out["Body"]
    assert out["Body"] == b'{"raw":true}'


def test_handler_may_be_omitted_when_the_zip_has_one_wasm(lam, functions, guests):
    resp = functions.create(make_zip({"app.wasm": guests["hello"], "README.txt": b"not code"}))
    out = invoke_payload(lam, resp["FunctionName"], b"{}")
    assert "FunctionError" not in out, out["Body"]
    assert out["Body"] == b'{"v":2}'


def test_handler_selects_the_wasm_inside_the_zip(lam, functions, guests):
    package = make_zip({"echo.wasm": guests["echo"], "bin/hello.wasm": guests["hello"]})
    name = functions.create(package, handler="bin/hello.wasm")["FunctionName"]
    assert invoke_payload(lam, name, b'{"a":1}')["Body"] == b'{"v":2}'
    updated = lam.update_function_configuration(FunctionName=name, Handler="echo.wasm")
    assert updated["Handler"] == "echo.wasm"
    assert invoke_payload(lam, name, b'{"a":1}')["Body"] == b'{"a":1}'


def test_invoke_request_response(lam, functions, guests):
    name = functions.create(guests["echo"])["FunctionName"]
    payload = b'{"hello":"world","n":[1,2,3]}'
    out = invoke_payload(lam, name, payload, InvocationType="RequestResponse")
    assert out["StatusCode"] == 200
    assert out["ExecutedVersion"] == "$LATEST"
    assert "FunctionError" not in out
    assert "LogResult" not in out
    assert out["Body"] == payload


def test_invoke_qualifier_latest_and_arn(lam, functions, guests):
    created = functions.create(guests["echo"])
    out = invoke_payload(lam, created["FunctionName"], b"[1]", Qualifier="$LATEST")
    assert out["Body"] == b"[1]"
    out = invoke_payload(lam, created["FunctionArn"], b"[2]")
    assert out["Body"] == b"[2]"
    conf = lam.get_function_configuration(FunctionName=created["FunctionArn"])
    assert conf["FunctionName"] == created["FunctionName"]


def test_invoke_dry_run(lam, functions, guests):
    name = functions.create(guests["trap"])["FunctionName"]
    out = invoke_payload(lam, name, b"{}", InvocationType="DryRun")
    # A dry run checks the request without running the function: the trap
    # guest would otherwise have answered with a function error.
    assert out["StatusCode"] == 204
    assert "FunctionError" not in out
    assert out["Body"] == b""


def decode_tail(out: dict) -> str:
    assert "LogResult" in out, "LogType=Tail answered without X-Amz-Log-Result"
    return base64.b64decode(out["LogResult"]).decode("utf-8", "replace")


def test_invoke_log_tail_has_the_guest_log_and_report(lam, functions, guests):
    name = functions.create(guests["echo"])["FunctionName"]
    out = invoke_payload(lam, name, b'{"x":1}', LogType="Tail")
    assert out["Body"] == b'{"x":1}'
    request_id = out["ResponseMetadata"]["RequestId"]
    assert request_id
    log = decode_tail(out)
    start = log.index(f"START RequestId: {request_id}")
    guest = log.index("echo: copying the event to the result")
    end = log.index(f"END RequestId: {request_id}")
    report = log.index(f"REPORT RequestId: {request_id}")
    assert start < guest < end < report, log
    assert "Duration:" in log[report:]


def test_log_tail_is_the_last_4_kb(lam, functions, guests):
    name = functions.create(guests["noisy"])["FunctionName"]
    out = invoke_payload(lam, name, b"{}", LogType="Tail")
    assert out["Body"] == b'{"noisy":true}'
    raw = base64.b64decode(out["LogResult"])
    # The guest alone logs 10,017 bytes; the tail keeps the last 4 KB of it.
    assert 3500 < len(raw) <= 4096, len(raw)
    log = raw.decode("utf-8", "replace")
    assert "START RequestId" not in log
    assert "noisy: last line" in log
    assert log.rstrip().splitlines()[-1].startswith("REPORT RequestId: "), log[-300:]


def test_list_functions_paginates_with_marker(lam, functions, guests):
    names = {functions.create(guests["hello"])["FunctionName"] for _ in range(5)}
    seen: list[str] = []
    marker = None
    for _ in range(1000):
        kw = {"MaxItems": 2}
        if marker:
            kw["Marker"] = marker
        page = lam.list_functions(**kw)
        assert len(page["Functions"]) <= 2
        seen += [f["FunctionName"] for f in page["Functions"]]
        marker = page.get("NextMarker")
        if not marker:
            break
    assert len(seen) == len(set(seen)), f"a page repeated a function: {seen}"
    assert names <= set(seen)
    listed = {f["FunctionName"]: f for f in lam.list_functions()["Functions"]}
    assert names <= set(listed)
    some = listed[sorted(names)[0]]
    assert some["Runtime"] == "wasm" and some["CodeSha256"] == code_sha256(guests["hello"])
    paged = [
        f["FunctionName"]
        for page in lam.get_paginator("list_functions").paginate(PaginationConfig={"PageSize": 2})
        for f in page["Functions"]
    ]
    assert set(paged) == set(seen)


def test_update_function_code(lam, functions, guests):
    created = functions.create(make_zip({"echo.wasm": guests["echo"]}), handler="echo.wasm")
    name = created["FunctionName"]
    assert invoke_payload(lam, name, b'{"v":1}')["Body"] == b'{"v":1}'
    package = make_zip({"echo.wasm": guests["hello"]})
    updated = lam.update_function_code(FunctionName=name, ZipFile=package)
    assert updated["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert updated["CodeSha256"] == code_sha256(package)
    assert updated["CodeSize"] == len(package)
    assert updated["RevisionId"] != created["RevisionId"]
    assert updated["Handler"] == "echo.wasm"
    assert lam.get_function_configuration(FunctionName=name)["CodeSha256"] == code_sha256(package)
    assert invoke_payload(lam, name, b'{"v":1}')["Body"] == b'{"v":2}'


def test_update_function_code_with_raw_wasm(lam, functions, guests):
    name = functions.create(guests["echo"])["FunctionName"]
    updated = lam.update_function_code(FunctionName=name, ZipFile=guests["hello"])
    assert updated["CodeSha256"] == code_sha256(guests["hello"])
    assert invoke_payload(lam, name, b"{}")["Body"] == b'{"v":2}'


def test_update_function_code_revision_precondition(lam, functions, guests):
    created = functions.create(guests["echo"])
    name = created["FunctionName"]
    lam.update_function_configuration(FunctionName=name, Description="moves the revision on")
    with pytest.raises(ClientError) as e:
        lam.update_function_code(FunctionName=name, ZipFile=guests["hello"], RevisionId=created["RevisionId"])
    assert_client_error(e, "PreconditionFailedException", 412)
    assert lam.get_function_configuration(FunctionName=name)["CodeSha256"] == code_sha256(guests["echo"])
    assert invoke_payload(lam, name, b"[7]")["Body"] == b"[7]"


def test_update_function_configuration(lam, functions, guests):
    created = functions.create(guests["env"])
    name = created["FunctionName"]
    updated = lam.update_function_configuration(
        FunctionName=name,
        RevisionId=created["RevisionId"],
        Description="updated",
        Timeout=30,
        MemorySize=256,
        Environment={"Variables": {"STAGE": "two"}},
        EphemeralStorage={"Size": 1024},
    )
    assert updated["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert updated["Description"] == "updated"
    assert updated["Timeout"] == 30
    assert updated["MemorySize"] == 256
    assert updated["Environment"]["Variables"] == {"STAGE": "two"}
    assert updated["EphemeralStorage"] == {"Size": 1024}
    assert updated["RevisionId"] != created["RevisionId"]
    assert updated["CodeSha256"] == created["CodeSha256"]
    conf = lam.get_function_configuration(FunctionName=name)
    for key in ("Description", "Timeout", "MemorySize", "Environment", "EphemeralStorage", "RevisionId", "CodeSha256"):
        assert conf[key] == updated[key], key
    assert "STAGE=two" in invoke_payload(lam, name, b"{}")["Body"].decode().splitlines()


def test_update_configuration_with_stale_revision_is_refused(lam, functions, guests):
    created = functions.create(guests["echo"])
    name = created["FunctionName"]
    first = lam.update_function_configuration(FunctionName=name, RevisionId=created["RevisionId"], Timeout=10)
    with pytest.raises(ClientError) as e:
        lam.update_function_configuration(FunctionName=name, RevisionId=created["RevisionId"], Timeout=20)
    assert_client_error(e, "PreconditionFailedException", 412)
    conf = lam.get_function_configuration(FunctionName=name)
    assert conf["Timeout"] == 10
    assert conf["RevisionId"] == first["RevisionId"]


def test_delete_function(lam, functions, guests):
    name = functions.create(guests["echo"])["FunctionName"]
    resp = lam.delete_function(FunctionName=name)
    assert resp["ResponseMetadata"]["HTTPStatusCode"] in (200, 204)
    for call in (
        lambda: lam.get_function(FunctionName=name),
        lambda: lam.get_function_configuration(FunctionName=name),
        lambda: lam.invoke(FunctionName=name, Payload=b"{}"),
        lambda: lam.delete_function(FunctionName=name),
    ):
        with pytest.raises(ClientError) as e:
            call()
        assert_client_error(e, "ResourceNotFoundException", 404)
    assert name not in {f["FunctionName"] for f in lam.list_functions()["Functions"]}


def test_name_can_be_reused_after_delete(lam, functions, guests):
    name = functions.name()
    functions.create(guests["echo"], name=name)
    lam.delete_function(FunctionName=name)
    again = functions.create(guests["hello"], name=name)
    assert again["CodeSha256"] == code_sha256(guests["hello"])
    assert invoke_payload(lam, name, b"{}")["Body"] == b'{"v":2}'


def test_get_account_settings(lam, functions, guests):
    before = lam.get_account_settings()
    assert before["ResponseMetadata"]["HTTPStatusCode"] == 200
    limits = before["AccountLimit"]
    assert limits["CodeSizeZipped"] == 52_428_800
    assert limits["CodeSizeUnzipped"] == 262_144_000
    assert limits["ConcurrentExecutions"] > 0
    assert limits["TotalCodeSize"] > 0
    count = before["AccountUsage"]["FunctionCount"]
    name = functions.create(guests["echo"])["FunctionName"]
    after = lam.get_account_settings()["AccountUsage"]
    assert after["FunctionCount"] == count + 1
    assert after["TotalCodeSize"] >= before["AccountUsage"]["TotalCodeSize"] + len(guests["echo"])
    lam.delete_function(FunctionName=name)
    assert lam.get_account_settings()["AccountUsage"]["FunctionCount"] == count


def test_boto3_waiters_see_an_active_function(lam, functions, guests):
    name = functions.create(guests["echo"])["FunctionName"]
    fast = {"Delay": 1, "MaxAttempts": 5}
    lam.get_waiter("function_exists").wait(FunctionName=name, WaiterConfig=fast)
    lam.get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig=fast)
    lam.update_function_code(FunctionName=name, ZipFile=guests["hello"])
    lam.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig=fast)
    conf = lam.get_function_configuration(FunctionName=name)
    assert conf["State"] == "Active"
    assert conf["LastUpdateStatus"] == "Successful"
