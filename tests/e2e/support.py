"""Helpers shared by the end-to-end tests: the server process, guest builds,
zip packages, raw signed requests and AWS error checks.

Everything here talks to the platform the way an outside client does: over a
real socket, with AWS's wire formats, signed with botocore's own signer.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import time
import zipfile
from pathlib import Path

import boto3
import pytest
import botocore.auth
import botocore.awsrequest
import botocore.credentials
import urllib3
from botocore.config import Config

REPO_ROOT = Path(__file__).resolve().parents[2]
GUESTS_DIR = REPO_ROOT / "tests" / "guests"

# Fixed root credentials handed to `nimbus up`, shaped like AWS's.
ROOT_ACCESS_KEY_ID = "AKIANIMBUSE2ETEST001"
ROOT_SECRET_ACCESS_KEY = "nimbusE2eTestSecretKey0000000000000000000"
REGION = "us-east-1"
ROLE = "arn:aws:iam::123456789012:role/nimbus-e2e"

# Limits from the brief's decisions (and AWS's documentation).
INVOKE_PAYLOAD_MAX_BYTES = 6 * 1024 * 1024
CREATE_BODY_MAX_BYTES = 69_905_067
UNZIPPED_CODE_MAX_BYTES = 262_144_000

SERVER_START_TIMEOUT_S = 60.0
SERVER_STOP_TIMEOUT_S = 15.0

# Environment variables a test's child processes must not inherit: they would
# point clients or the server somewhere other than where the test says.
_SCRUBBED_PREFIXES = ("AWS_",)
_SCRUBBED_NAMES = (
    "NIMBUS_ROOT_ACCESS_KEY_ID",
    "NIMBUS_ROOT_SECRET_ACCESS_KEY",
    "NIMBUS_LISTEN",
    "NIMBUS_DATA_DIR",
    "NIMBUS_SANDBOXES_MAX",
    "NIMBUS_WARM_SANDBOXES",
    "NIMBUS_WORKER_THREADS",
    "NIMBUS_ACCOUNT_CONCURRENCY",
    "NIMBUS_SANDBOX_MEMORY_MB",
    "NIMBUS_IDLE_RECYCLE_S",
    "NIMBUS_PREWARM_INTERVAL_S",
    "NIMBUS_BURST_LIMIT",
    "NIMBUS_TENANT_WEIGHTS",
    "NIMBUS_ASYNC_BACKLOG_MAX",
    "NIMBUS_ASYNC_RETRY_BASE_MS",
    "NIMBUS_ASYNC_LEASE_MS",
    "NIMBUS_REGION",
)


def require_capability(reason: str) -> None:
    """Skips for a missing capability, or fails where CI says it must be there."""
    if os.environ.get("NIMBUS_REQUIRE_SANDBOX") == "1":
        pytest.fail(f"required capability missing: {reason}")
    pytest.skip(reason)


def build_guest(name: str, binary: str, scratch, target: str | None = None) -> bytes:
    """Builds the Cargo project tests/guests/<name> (release, for `target` or
    the host) and returns the bytes of its `binary`. Builds go to
    $CARGO_TARGET_DIR/e2e-guests when set, so runs share them."""
    cargo = shutil.which("cargo")
    if cargo is None:
        require_capability(f"cargo is not installed, so the guest {name} cannot be built")
    target_root = os.environ.get("CARGO_TARGET_DIR")
    target_dir = Path(target_root) / "e2e-guests" if target_root else scratch
    command = [cargo, "build", "--quiet", "--release", "--locked",
               "--manifest-path", str(GUESTS_DIR / name / "Cargo.toml"), "--target-dir", str(target_dir)]
    if target is not None:
        command += ["--target", target]
    env = dict(os.environ)
    env.pop("CARGO_TARGET_DIR", None)
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr
    return (target_dir / (target or "") / "release" / binary).read_bytes()


def clean_env(**extra: str) -> dict[str, str]:
    """The test runner's environment less AWS and nimbus settings, plus `extra`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(_SCRUBBED_PREFIXES) and k not in _SCRUBBED_NAMES
    }
    # The aws CLI must not find a profile or config of the machine's user.
    env["AWS_CONFIG_FILE"] = os.devnull
    env["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    env.update(extra)
    return env


def nimbus_bin() -> Path:
    """The server binary under test: $NIMBUS_BIN, else the cargo debug build."""
    if os.environ.get("NIMBUS_BIN"):
        return Path(os.environ["NIMBUS_BIN"])
    target = Path(os.environ.get("CARGO_TARGET_DIR") or REPO_ROOT / "target")
    return target / "debug" / "nimbus"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def root_env() -> dict[str, str]:
    return {
        "NIMBUS_ROOT_ACCESS_KEY_ID": ROOT_ACCESS_KEY_ID,
        "NIMBUS_ROOT_SECRET_ACCESS_KEY": ROOT_SECRET_ACCESS_KEY,
    }


class NimbusServer:
    """One `nimbus up` process on a loopback port with its own data dir."""

    def __init__(self, data_dir: Path, log_path: Path, root_keys: bool = True, port: int | None = None,
                 extra_args: tuple[str, ...] = (), wrapper: tuple[str, ...] = ()):
        self.bin = nimbus_bin()
        self.extra_args = list(extra_args)
        # A command the server runs under (e.g. strace), its arguments first.
        self.wrapper = list(wrapper)
        self.data_dir = data_dir
        self.log_path = log_path
        self.port = port or free_port()
        self.env = clean_env(**(root_env() if root_keys else {}))
        self.proc: subprocess.Popen | None = None

    @property
    def listen(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.listen}"

    def start(self) -> "NimbusServer":
        if not self.bin.exists():
            raise RuntimeError(f"nimbus binary not found at {self.bin}: build it with `cargo build -p nimbus` or set NIMBUS_BIN")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [*self.wrapper, str(self.bin), "up", "--listen", self.listen, "--data-dir", str(self.data_dir),
             *self.extra_args],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nimbus up exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"nimbus up did not listen on {self.listen} within {SERVER_START_TIMEOUT_S}s:\n{self.log_tail()}")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Sends `sig` and waits; returns the exit code (negative: killed by a signal)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=SERVER_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise RuntimeError(f"nimbus up ignored signal {sig} for {SERVER_STOP_TIMEOUT_S}s:\n{self.log_tail()}")
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def close(self) -> None:
        """Stops the server if it still runs: SIGTERM first, so that it takes its
        sandboxes' cgroups off the host, then SIGKILL if it lingers."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=SERVER_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.kill()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_bytes()[-n:].decode("utf-8", "replace")
        except OSError:
            return "(no log)"

    def nimbus_env(self) -> dict[str, str]:
        """What `nimbus env` prints for this server, as a dict."""
        out = subprocess.run(
            [str(self.bin), "env", "--listen", self.listen, "--data-dir", str(self.data_dir)],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert out.returncode == 0, f"nimbus env failed ({out.returncode}): {out.stderr}"
        return parse_exports(out.stdout)


def parse_exports(text: str) -> dict[str, str]:
    """Parses `export K=V ...` lines as a POSIX shell would."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        words = shlex.split(line, comments=True)
        for word in words:
            if word == "export" or "=" not in word:
                continue
            key, value = word.split("=", 1)
            found[key] = value
    return found


def lambda_client(url: str, access_key=ROOT_ACCESS_KEY_ID, secret_key=ROOT_SECRET_ACCESS_KEY, validate=True):
    return aws_client("lambda", url, access_key, secret_key, validate)


def sqs_client(url: str, access_key=ROOT_ACCESS_KEY_ID, secret_key=ROOT_SECRET_ACCESS_KEY, validate=True):
    return aws_client("sqs", url, access_key, secret_key, validate)


def aws_client(
    service: str,
    url: str,
    access_key: str = ROOT_ACCESS_KEY_ID,
    secret_key: str = ROOT_SECRET_ACCESS_KEY,
    validate: bool = True,
    read_timeout: float = 120,
):
    return boto3.session.Session().client(
        service,
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        config=Config(
            retries={"max_attempts": 1},
            parameter_validation=validate,
            connect_timeout=5,
            read_timeout=read_timeout,
        ),
    )


# --- guests -----------------------------------------------------------------


def wat2wasm(wat_path: Path, out_path: Path, check: bool = True) -> bytes:
    cmd = ["wat2wasm", str(wat_path), "-o", str(out_path)]
    if not check:
        cmd.append("--no-check")
    subprocess.run(cmd, check=True, capture_output=True, timeout=60)
    return out_path.read_bytes()


def make_zip(entries: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in entries.items():
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            info.compress_type = compression
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)
    return buf.getvalue()


def code_sha256(package: bytes) -> str:
    """Lambda's CodeSha256: base64 of the SHA-256 of the uploaded bytes."""
    return base64.b64encode(hashlib.sha256(package).digest()).decode()


def json_string_of_size(n: int) -> bytes:
    """A JSON document (one string) exactly `n` bytes long."""
    assert n >= 2
    return b'"' + b"a" * (n - 2) + b'"'


# --- raw signed requests ------------------------------------------------------

_http = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=5, read=120))


class RawResponse:
    def __init__(self, status: int, headers: dict[str, str], body: bytes):
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, name: str) -> str | None:
        for k, v in self.headers.items():
            if k.lower() == name.lower():
                return v
        return None

    def json(self):
        return json.loads(self.body)

    @property
    def error_type(self) -> str | None:
        """The AWS error name, from x-amzn-ErrorType as botocore reads it."""
        value = self.header("x-amzn-ErrorType")
        if value is None:
            return None
        return value.split(":", 1)[0]

    def __repr__(self) -> str:
        return f"<{self.status} {self.error_type} {self.body[:300]!r}>"


def signed_request(
    base_url: str,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    access_key: str = ROOT_ACCESS_KEY_ID,
    secret_key: str = ROOT_SECRET_ACCESS_KEY,
    region: str = REGION,
    tamper=None,
    service: str = "lambda",
) -> RawResponse:
    """Signs a request with botocore's SigV4 signer and sends it as is.

    `path` may carry a query string. `tamper`, when given, receives the signed
    request's (body, headers) and returns new ones to send instead.
    """
    hdrs = {"Content-Type": "application/json"} if body is not None else {}
    hdrs.update(headers or {})
    req = botocore.awsrequest.AWSRequest(method=method, url=base_url + path, data=body or b"", headers=hdrs)
    creds = botocore.credentials.Credentials(access_key, secret_key)
    botocore.auth.SigV4Auth(creds, service, region).add_auth(req)
    prepared = req.prepare()
    send_body = prepared.body
    send_headers = dict(prepared.headers.items())
    if tamper is not None:
        send_body, send_headers = tamper(send_body, send_headers)
    return send_raw(method, prepared.url, send_body, send_headers)


def send_raw(method: str, url: str, body, headers: dict[str, str]) -> RawResponse:
    r = _http.request(method, url, body=body, headers=headers, redirect=False, preload_content=True)
    return RawResponse(r.status, dict(r.headers.items()), r.data)


def assert_raw_error(resp: RawResponse, status: int, error_type: str) -> None:
    """An AWS-format error: the status, x-amzn-ErrorType and a JSON message."""
    assert resp.status == status, resp
    assert resp.error_type == error_type, resp
    doc = resp.json()
    message = doc.get("message", doc.get("Message"))
    assert isinstance(message, str) and message, resp


def assert_client_error(exc_info, code: str, status: int) -> str:
    """Checks a botocore ClientError; returns its message."""
    err = exc_info.value.response
    assert err["Error"]["Code"] == code, err
    assert err["ResponseMetadata"]["HTTPStatusCode"] == status, err
    message = err["Error"].get("Message", "")
    assert message, f"error without a message: {err}"
    return message


# --- functions -------------------------------------------------------------------


def log_of(resp) -> str:
    """The decoded log tail of an invoke made with LogType=Tail."""
    return base64.b64decode(resp["LogResult"]).decode()


def invoke_payload(lam, name: str, payload: bytes, **kw) -> dict:
    """Invokes and reads the payload into resp['Body']."""
    resp = lam.invoke(FunctionName=name, Payload=payload, **kw)
    resp["Body"] = resp["Payload"].read()
    return resp


def assert_intact(lam, canary) -> None:
    """The canary still has the code it was made with and still runs it."""
    conf = lam.get_function_configuration(FunctionName=canary["name"])
    assert conf["CodeSha256"] == canary["created"]["CodeSha256"]
    assert conf["RevisionId"] == canary["created"]["RevisionId"]
    resp = invoke_payload(lam, canary["name"], b'{"still":"here"}')
    assert resp["StatusCode"] == 200
    assert "FunctionError" not in resp, resp["Body"]
    assert resp["Body"] == b'{"still":"here"}'
