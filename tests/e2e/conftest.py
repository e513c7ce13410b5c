"""Fixtures: the server under test, the guests, and the clients that talk to it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import uuid

import pytest

from support import (
    GUESTS_DIR,
    REGION,
    ROLE,
    ROOT_ACCESS_KEY_ID,
    ROOT_SECRET_ACCESS_KEY,
    NimbusServer,
    build_guest,
    clean_env,
    lambda_client,
    make_zip,
    require_capability,
    signed_request,
    wat2wasm,
)


# --- the server ----------------------------------------------------------------


@pytest.fixture
def own_server(tmp_path):
    """Starts a server of the test's own: own_server(*flags of `nimbus up`).
    Every start uses the same data dir, so a second one is a restart; all
    are stopped when the test ends."""
    servers: list[NimbusServer] = []

    def start(*flags: str) -> NimbusServer:
        srv = NimbusServer(tmp_path / "data", tmp_path / "server.log", extra_args=flags)
        try:
            servers.append(srv.start())
        except RuntimeError as e:
            pytest.fail(str(e), pytrace=False)
        return srv

    yield start
    for srv in servers:
        if srv.alive():
            srv.stop()


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("nimbus")
    srv = NimbusServer(base / "data", base / "server.log")
    try:
        srv.start()
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)
    yield srv
    alive = srv.alive()
    srv.stop()
    if not alive:
        pytest.fail(f"the server died during the run:\n{srv.log_tail()}", pytrace=False)


@pytest.fixture(autouse=True)
def _server_still_up(request):
    """Every test that used the shared server leaves it running, unpanicked."""
    yield
    if "server" in request.fixturenames:
        srv = request.getfixturevalue("server")
        assert srv.alive(), f"the server exited:\n{srv.log_tail()}"
        log = srv.log_path.read_bytes()
        assert b"panicked at" not in log, f"the server panicked:\n{log[-4000:].decode(errors='replace')}"


@pytest.fixture(scope="session")
def lam(server):
    return lambda_client(server.url)


@pytest.fixture(scope="session")
def lam_unchecked(server):
    """A client that sends out-of-range values instead of refusing them itself."""
    return lambda_client(server.url, validate=False)


@pytest.fixture(scope="session")
def raw(server):
    """Sends a request signed with the root keys: raw(method, path, body=None, **kw)."""

    def send(method, path, body=None, **kw):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        elif isinstance(body, str):
            body = body.encode()
        return signed_request(server.url, method, path, body, **kw)

    return send


# --- guests ----------------------------------------------------------------------


@pytest.fixture(scope="session")
def guests(tmp_path_factory) -> dict[str, bytes]:
    """Every tests/guests/*.wat compiled to wasm: name -> module bytes."""
    if shutil.which("wat2wasm") is None:
        pytest.fail("wat2wasm not found: install Debian's wabt (scripts/test does)", pytrace=False)
    out = tmp_path_factory.mktemp("guests")
    return {wat.stem: wat2wasm(wat, out / f"{wat.stem}.wasm") for wat in sorted(GUESTS_DIR.glob("*.wat"))}


@pytest.fixture(scope="session")
def component_echo(tmp_path_factory) -> bytes:
    """tests/guests/component-echo built as a wasi:cli component (wasm32-wasip2)."""
    if shutil.which("rustup") is not None:
        installed = subprocess.run(["rustup", "target", "list", "--installed"], capture_output=True, text=True)
        if "wasm32-wasip2" not in installed.stdout:
            require_capability("the wasm32-wasip2 target is not installed (rustup target add wasm32-wasip2)")
    return build_guest("component-echo", "component-echo.wasm", tmp_path_factory.mktemp("guest-target"), "wasm32-wasip2")


# --- functions -------------------------------------------------------------------


@pytest.fixture
def fn_name(request):
    """A function name unique to this test (and valid for Lambda)."""
    base = re.sub(r"[^a-zA-Z0-9-_]", "-", request.node.name)[:40]
    return f"{base}-{uuid.uuid4().hex[:8]}"


class Functions:
    """Creates functions and deletes them when the test ends."""

    def __init__(self, lam, prefix: str):
        self.lam = lam
        self.prefix = prefix
        self.names: list[str] = []
        self.count = 0

    def name(self) -> str:
        self.count += 1
        return f"{self.prefix}-{self.count}"

    def create(self, code: bytes, name: str | None = None, handler: str | None = None, **kw) -> dict:
        name = name or self.name()
        args = {"FunctionName": name, "Runtime": "wasm", "Role": ROLE, "Code": {"ZipFile": code}, **kw}
        if handler is not None:
            args["Handler"] = handler
        resp = self.lam.create_function(**args)
        self.names.append(name)
        return resp

    def cleanup(self) -> None:
        for name in self.names:
            try:
                self.lam.delete_function(FunctionName=name)
            except Exception:
                pass


@pytest.fixture
def functions(lam, fn_name):
    f = Functions(lam, fn_name)
    yield f
    f.cleanup()


@pytest.fixture(scope="module")
def canary(lam, guests, request):
    """An echo function made once per module; tests check it survives bad input."""
    name = f"canary-{re.sub(r'[^a-zA-Z0-9]', '-', request.module.__name__)}-{uuid.uuid4().hex[:6]}"
    package = make_zip({"echo.wasm": guests["echo"]})
    created = lam.create_function(
        FunctionName=name, Runtime="wasm", Role=ROLE, Handler="echo.wasm", Code={"ZipFile": package}
    )
    yield {"name": name, "package": package, "created": created}
    try:
        lam.delete_function(FunctionName=name)
    except Exception:
        pass


# --- the aws CLI -------------------------------------------------------------------


class AwsCli:
    def __init__(self, server, service: str = "lambda"):
        self.server = server
        self.service = service
        version = subprocess.run(["aws", "--version"], capture_output=True, text=True, env=self.env())
        self.v1 = (version.stdout + version.stderr).startswith("aws-cli/1.")

    def env(self) -> dict[str, str]:
        return clean_env(
            AWS_ENDPOINT_URL=self.server.url,
            AWS_ACCESS_KEY_ID=ROOT_ACCESS_KEY_ID,
            AWS_SECRET_ACCESS_KEY=ROOT_SECRET_ACCESS_KEY,
            AWS_DEFAULT_REGION=REGION,
            AWS_REGION=REGION,
            AWS_MAX_ATTEMPTS="1",
            AWS_PAGER="",
        )

    def run(self, *args: str, cwd=None) -> subprocess.CompletedProcess:
        cmd = ["aws", self.service, *args, "--endpoint-url", self.server.url, "--output", "json"]
        if not self.v1 and "invoke" in args:
            cmd += ["--cli-binary-format", "raw-in-base64-out"]
        return subprocess.run(cmd, capture_output=True, text=True, env=self.env(), cwd=cwd, timeout=120)

    def __call__(self, *args: str, cwd=None):
        """Runs `aws SERVICE ARGS`, asserts success, returns the parsed JSON (or None)."""
        done = self.run(*args, cwd=cwd)
        assert done.returncode == 0, f"aws {self.service} {' '.join(args)} failed ({done.returncode}): {done.stderr}"
        return json.loads(done.stdout) if done.stdout.strip() else None

    def fails(self, *args: str) -> str:
        """Runs `aws SERVICE ARGS`, asserts it failed, returns stderr."""
        done = self.run(*args)
        assert done.returncode != 0, f"aws {self.service} {' '.join(args)} succeeded: {done.stdout}"
        return done.stderr


@pytest.fixture(scope="session")
def aws(server):
    if shutil.which("aws") is None:
        pytest.fail("the aws CLI is not installed (pip install awscli; scripts/test does)", pytrace=False)
    return AwsCli(server)


@pytest.fixture(scope="session")
def aws_sqs(server):
    """`aws sqs …` against the platform's queues."""
    if shutil.which("aws") is None:
        pytest.fail("the aws CLI is not installed (pip install awscli; scripts/test does)", pytrace=False)
    return AwsCli(server, service="sqs")
