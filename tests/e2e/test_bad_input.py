"""Bad input gets AWS's error for it, and the platform keeps serving with what
it had stored left as it was (the module's canary function is checked after
every refusal)."""

from __future__ import annotations

import base64
import io
import json
import struct
import zipfile

import pytest
from botocore.exceptions import ClientError

from support import (
    CREATE_BODY_MAX_BYTES,
    INVOKE_PAYLOAD_MAX_BYTES,
    ROLE,
    UNZIPPED_CODE_MAX_BYTES,
    assert_client_error,
    assert_intact,
    assert_raw_error,
    invoke_payload,
    json_string_of_size,
    make_zip,
    wat2wasm,
)

MIB = 1024 * 1024


def zip_bomb(echo: bytes) -> bytes:
    """A valid handler plus zero-filled entries that unzip past the 250 MB limit."""
    entries, entry_bytes = 11, 25 * MIB
    assert entries * entry_bytes > UNZIPPED_CODE_MAX_BYTES
    buf = io.BytesIO()
    zero = bytes(MIB)
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("echo.wasm", echo)
        for i in range(entries):
            with zf.open(f"pad/{i:02}.bin", "w") as f:
                for _ in range(entry_bytes // MIB):
                    f.write(zero)
    return buf.getvalue()


def lying_zip_bomb(echo: bytes) -> bytes:
    """One 300 MiB zero entry whose headers claim it unzips to 1 KiB."""
    buf = io.BytesIO()
    zero = bytes(MIB)
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("echo.wasm", echo)
        with zf.open("pad.bin", "w") as f:
            for _ in range(300):
                f.write(zero)
        infos = zf.infolist()
    data = bytearray(buf.getvalue())
    claimed = 1024
    for info in infos:
        if info.filename == "pad.bin":
            struct.pack_into("<I", data, info.header_offset + 22, claimed)
    eocd = data.rindex(b"PK\x05\x06")
    pos = struct.unpack_from("<I", data, eocd + 16)[0]
    for _ in infos:
        assert data[pos : pos + 4] == b"PK\x01\x02"
        name_len, extra_len, comment_len = struct.unpack_from("<HHH", data, pos + 28)
        if data[pos + 46 : pos + 46 + name_len] == b"pad.bin":
            struct.pack_into("<I", data, pos + 24, claimed)
        pos += 46 + name_len + extra_len + comment_len
    return bytes(data)


def invalid_module(tmp_path) -> bytes:
    """Well-formed binary, but the function body has the wrong type."""
    wat = tmp_path / "invalid.wat"
    wat.write_text("(module (func (export \"_start\") (result i32) (i64.const 1)))")
    return wat2wasm(wat, tmp_path / "invalid.wasm", check=False)


# Each case: what ZipFile holds, and the Handler CreateFunction names (the
# canary, used for the UpdateFunctionCode path, has Handler echo.wasm).
BAD_CODE_CASES = [
    "not-zip-nor-wasm",
    "empty",
    "truncated-wasm",
    "invalid-wasm",
    "invalid-wasm-in-zip",
    "truncated-zip",
    "handler-missing-from-zip",
    "two-wasm-no-handler",
    "zip-without-wasm",
    "zip-path-traversal",
    "zip-nested-path-traversal",
    "zip-absolute-path",
    "zip-bomb",
    "zip-bomb-lying-sizes",
]


@pytest.fixture(scope="module")
def bad_code(guests, tmp_path_factory):
    cache: dict[str, tuple[bytes, str | None]] = {}
    echo = guests["echo"]
    tmp = tmp_path_factory.mktemp("bad")

    def build(case: str) -> tuple[bytes, str | None]:
        if case in cache:
            return cache[case]
        good_zip = make_zip({"echo.wasm": echo})
        made = {
            "not-zip-nor-wasm": lambda: (b"this is neither a zip archive nor a wasm module\n", None),
            "empty": lambda: (b"", None),
            "truncated-wasm": lambda: (b"\x00asm\x01\x00\x00\x00\x01\x05\x01\x60", None),
            "invalid-wasm": lambda: (invalid_module(tmp), None),
            "invalid-wasm-in-zip": lambda: (make_zip({"echo.wasm": invalid_module(tmp)}), "echo.wasm"),
            "truncated-zip": lambda: (good_zip[: len(good_zip) // 2], "echo.wasm"),
            "handler-missing-from-zip": lambda: (make_zip({"hello.wasm": guests["hello"]}), "echo.wasm"),
            "two-wasm-no-handler": lambda: (make_zip({"a.wasm": echo, "b.wasm": guests["hello"]}), None),
            "zip-without-wasm": lambda: (make_zip({"README.txt": b"no code here"}), None),
            "zip-path-traversal": lambda: (make_zip({"echo.wasm": echo, "../evil.wasm": echo}), "echo.wasm"),
            "zip-nested-path-traversal": lambda: (
                make_zip({"echo.wasm": echo, "sub/../../evil.wasm": echo}),
                "echo.wasm",
            ),
            "zip-absolute-path": lambda: (make_zip({"echo.wasm": echo, "/tmp/evil.wasm": echo}), "echo.wasm"),
            "zip-bomb": lambda: (zip_bomb(echo), "echo.wasm"),
            "zip-bomb-lying-sizes": lambda: (lying_zip_bomb(echo), "echo.wasm"),
        }[case]()
        cache[case] = made
        return made

    return build


@pytest.fixture
def victim(functions, guests):
    """An echo function of this test's own, for refused updates to leave intact.

    Each update test gets its own so that one wrongly accepted update does
    not show up as a failure of every test after it.
    """
    package = make_zip({"echo.wasm": guests["echo"]})
    created = functions.create(package, handler="echo.wasm")
    return {"name": created["FunctionName"], "package": package, "created": created}


def assert_absent(lam, name: str) -> None:
    with pytest.raises(ClientError) as e:
        lam.get_function(FunctionName=name)
    assert_client_error(e, "ResourceNotFoundException", 404)


@pytest.mark.parametrize("case", BAD_CODE_CASES)
def test_create_with_bad_code_is_refused(lam, canary, bad_code, fn_name, case):
    code, handler = bad_code(case)
    args = {"FunctionName": fn_name, "Runtime": "wasm", "Role": ROLE, "Code": {"ZipFile": code}}
    if handler:
        args["Handler"] = handler
    with pytest.raises(ClientError) as e:
        lam.create_function(**args)
    assert_client_error(e, "InvalidParameterValueException", 400)
    assert_absent(lam, fn_name)
    assert_intact(lam, canary)


@pytest.mark.parametrize("case", BAD_CODE_CASES)
def test_update_with_bad_code_is_refused(lam, victim, bad_code, case):
    code, _ = bad_code(case)
    with pytest.raises(ClientError) as e:
        lam.update_function_code(FunctionName=victim["name"], ZipFile=code)
    assert_client_error(e, "InvalidParameterValueException", 400)
    assert_intact(lam, victim)


BAD_CONFIG_CASES = [
    ("memory-below-128", {"MemorySize": 127}),
    ("memory-64", {"MemorySize": 64}),
    ("memory-above-10240", {"MemorySize": 10241}),
    ("timeout-0", {"Timeout": 0}),
    ("timeout-above-900", {"Timeout": 901}),
    ("ephemeral-below-512", {"EphemeralStorage": {"Size": 511}}),
    ("ephemeral-above-10240", {"EphemeralStorage": {"Size": 10241}}),
]


@pytest.mark.parametrize("case,config", BAD_CONFIG_CASES, ids=[c[0] for c in BAD_CONFIG_CASES])
def test_create_with_out_of_range_config_is_refused(lam, lam_unchecked, canary, guests, fn_name, case, config):
    with pytest.raises(ClientError) as e:
        lam_unchecked.create_function(
            FunctionName=fn_name, Runtime="wasm", Role=ROLE, Code={"ZipFile": guests["echo"]}, **config
        )
    assert_client_error(e, "ValidationException", 400)
    assert_absent(lam, fn_name)
    assert_intact(lam, canary)


@pytest.mark.parametrize("case,config", BAD_CONFIG_CASES, ids=[c[0] for c in BAD_CONFIG_CASES])
def test_update_with_out_of_range_config_is_refused(lam, lam_unchecked, victim, case, config):
    with pytest.raises(ClientError) as e:
        lam_unchecked.update_function_configuration(FunctionName=victim["name"], **config)
    assert_client_error(e, "ValidationException", 400)
    conf = lam.get_function_configuration(FunctionName=victim["name"])
    assert (conf["MemorySize"], conf["Timeout"], conf["EphemeralStorage"]["Size"]) == (128, 3, 512)
    assert_intact(lam, victim)


@pytest.mark.parametrize("name", ["bad name!", "dots.are.bad", "ünïcode", ""])
def test_invalid_function_name_is_refused(lam, lam_unchecked, canary, guests, name):
    with pytest.raises(ClientError) as e:
        lam_unchecked.create_function(FunctionName=name, Runtime="wasm", Role=ROLE, Code={"ZipFile": guests["echo"]})
    assert_client_error(e, "ValidationException", 400)
    assert_intact(lam, canary)


BAD_ENV_CASES = [
    ("reserved-key", {"AWS_ACCESS_KEY_ID": "AKIAFAKE"}),
    ("over-4-kb", {"BIG": "x" * 5000}),
]


@pytest.mark.parametrize("case,variables", BAD_ENV_CASES, ids=[c[0] for c in BAD_ENV_CASES])
def test_bad_environment_is_refused(lam, canary, victim, guests, fn_name, case, variables):
    with pytest.raises(ClientError) as e:
        lam.create_function(
            FunctionName=fn_name,
            Runtime="wasm",
            Role=ROLE,
            Code={"ZipFile": guests["echo"]},
            Environment={"Variables": variables},
        )
    assert_client_error(e, "InvalidParameterValueException", 400)
    assert_absent(lam, fn_name)
    with pytest.raises(ClientError) as e:
        lam.update_function_configuration(FunctionName=victim["name"], Environment={"Variables": variables})
    assert_client_error(e, "InvalidParameterValueException", 400)
    assert_intact(lam, victim)
    assert_intact(lam, canary)


def test_create_existing_function_conflicts(lam, canary, guests):
    with pytest.raises(ClientError) as e:
        lam.create_function(
            FunctionName=canary["name"], Runtime="wasm", Role=ROLE, Code={"ZipFile": guests["hello"]}
        )
    assert_client_error(e, "ResourceConflictException", 409)
    assert_intact(lam, canary)


def test_missing_function_is_not_found_everywhere(lam, canary, guests, fn_name):
    calls = {
        "GetFunction": lambda: lam.get_function(FunctionName=fn_name),
        "GetFunctionConfiguration": lambda: lam.get_function_configuration(FunctionName=fn_name),
        "UpdateFunctionCode": lambda: lam.update_function_code(FunctionName=fn_name, ZipFile=guests["echo"]),
        "UpdateFunctionConfiguration": lambda: lam.update_function_configuration(FunctionName=fn_name, Timeout=5),
        "Invoke": lambda: lam.invoke(FunctionName=fn_name, Payload=b"{}"),
        "DeleteFunction": lambda: lam.delete_function(FunctionName=fn_name),
    }
    for op, call in calls.items():
        with pytest.raises(ClientError) as e:
            call()
        assert e.value.response["Error"]["Code"] == "ResourceNotFoundException", op
        assert_client_error(e, "ResourceNotFoundException", 404)
    assert_absent(lam, fn_name)
    assert_intact(lam, canary)


# --- malformed requests, sent raw -----------------------------------------------------


def create_body(**overrides) -> dict:
    body = {
        "FunctionName": "never-created",
        "Runtime": "wasm",
        "Role": ROLE,
        "Code": {"ZipFile": base64.b64encode(b"\x00asm\x01\x00\x00\x00").decode()},
    }
    body.update(overrides)
    return body


MALFORMED_CREATE_BODIES = [
    ("truncated-json", b'{"FunctionName": "never-created", "Runtime":'),
    ("not-json", b"FunctionName=never-created"),
    ("json-array", b"[]"),
    ("json-string", b'"create me"'),
    ("timeout-string", json.dumps(create_body(Timeout="ten")).encode()),
    ("memory-string", json.dumps(create_body(MemorySize="big")).encode()),
    ("memory-float", json.dumps(create_body(MemorySize=128.5)).encode()),
    ("name-number", json.dumps(create_body(FunctionName=42)).encode()),
    ("code-string", json.dumps(create_body(Code="zipfile")).encode()),
    ("env-list", json.dumps(create_body(Environment={"Variables": ["A=1"]})).encode()),
    ("env-value-number", json.dumps(create_body(Environment={"Variables": {"A": 1}})).encode()),
]


@pytest.mark.parametrize("case,body", MALFORMED_CREATE_BODIES, ids=[c[0] for c in MALFORMED_CREATE_BODIES])
def test_malformed_create_request_is_refused(lam, raw, canary, case, body):
    resp = raw("POST", "/2015-03-31/functions", body)
    assert_raw_error(resp, 400, "InvalidRequestContentException")
    assert_absent(lam, "never-created")
    assert_intact(lam, canary)


MALFORMED_UPDATE_BODIES = [
    ("truncated-json", b'{"Timeout": 5'),
    ("timeout-string", b'{"Timeout": "ten"}'),
    ("memory-bool", b'{"MemorySize": true}'),
    ("env-value-object", b'{"Environment": {"Variables": {"A": {"B": 1}}}}'),
    ("ephemeral-string", b'{"EphemeralStorage": "big"}'),
]


@pytest.mark.parametrize("case,body", MALFORMED_UPDATE_BODIES, ids=[c[0] for c in MALFORMED_UPDATE_BODIES])
def test_malformed_update_configuration_is_refused(lam, raw, victim, case, body):
    resp = raw("PUT", f"/2015-03-31/functions/{victim['name']}/configuration", body)
    assert_raw_error(resp, 400, "InvalidRequestContentException")
    assert_intact(lam, victim)


def test_malformed_update_code_is_refused(lam, raw, victim):
    resp = raw("PUT", f"/2015-03-31/functions/{victim['name']}/code", b'{"ZipFile": ')
    assert_raw_error(resp, 400, "InvalidRequestContentException")
    assert_intact(lam, victim)


def test_zipfile_that_is_not_base64_is_refused(lam, raw, canary):
    body = json.dumps(create_body(Code={"ZipFile": "***not base64***"})).encode()
    resp = raw("POST", "/2015-03-31/functions", body)
    assert resp.status == 400, resp
    assert resp.error_type in ("InvalidRequestContentException", "InvalidParameterValueException"), resp
    assert_absent(lam, "never-created")
    assert_intact(lam, canary)


# --- sizes ---------------------------------------------------------------------------


def test_invoke_payload_at_the_limit_is_accepted(lam, canary):
    payload = json_string_of_size(INVOKE_PAYLOAD_MAX_BYTES)
    out = invoke_payload(lam, canary["name"], payload)
    assert out["StatusCode"] == 200
    assert "FunctionError" not in out, out["Body"][:500]
    assert out["Body"] == payload


def test_invoke_payload_over_the_limit_is_413(lam, canary):
    payload = json_string_of_size(INVOKE_PAYLOAD_MAX_BYTES + 1)
    with pytest.raises(ClientError) as e:
        lam.invoke(FunctionName=canary["name"], Payload=payload)
    assert_client_error(e, "RequestTooLargeException", 413)
    assert_intact(lam, canary)


def test_create_body_over_the_limit_is_413(lam, canary, fn_name):
    # 53 MiB of package becomes about 74 MB of base64 in the JSON body, past
    # the 69,905,067 bytes Lambda takes for CreateFunction.
    package = bytes(53 * MIB)
    assert len(base64.b64encode(package)) > CREATE_BODY_MAX_BYTES
    with pytest.raises(ClientError) as e:
        lam.create_function(FunctionName=fn_name, Runtime="wasm", Role=ROLE, Code={"ZipFile": package})
    message = assert_client_error(e, "RequestEntityTooLargeException", 413)
    assert "Request must be smaller than 69905067 bytes for the CreateFunction operation" in message
    assert_absent(lam, fn_name)
    assert_intact(lam, canary)
