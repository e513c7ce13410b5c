"""What the platform accepted survives a restart on the same data dir, whether
the server was stopped or killed."""

from __future__ import annotations

import signal

import pytest

from support import NimbusServer, invoke_payload, lambda_client, make_zip

# Fields of a function's configuration that must come back unchanged.
KEPT = (
    "FunctionName", "FunctionArn", "Runtime", "Role", "Handler", "Description", "Timeout",
    "MemorySize", "CodeSha256", "CodeSize", "RevisionId", "LastModified", "EphemeralStorage",
)


@pytest.fixture
def own_server(tmp_path):
    """A server of this test's own, so it can be stopped and started."""
    servers: list[NimbusServer] = []

    def start(root_keys: bool = True) -> NimbusServer:
        port = servers[-1].port if servers else None
        srv = NimbusServer(tmp_path / "data", tmp_path / "server.log", root_keys=root_keys, port=port)
        servers.append(srv)
        try:
            return srv.start()
        except RuntimeError as e:
            pytest.fail(str(e), pytrace=False)

    yield start
    for srv in servers:
        srv.close()


def populate(lam, guests) -> dict[str, dict]:
    lam.create_function(
        FunctionName="kept-zip", Runtime="wasm", Role="arn:aws:iam::123456789012:role/r",
        Handler="echo.wasm", Code={"ZipFile": make_zip({"echo.wasm": guests["echo"]})},
        Description="zip package",
    )
    lam.create_function(
        FunctionName="kept-raw", Runtime="wasm", Role="arn:aws:iam::123456789012:role/r",
        Code={"ZipFile": guests["hello"]},
    )
    lam.create_function(
        FunctionName="kept-env", Runtime="wasm", Role="arn:aws:iam::123456789012:role/r",
        Code={"ZipFile": guests["env"]}, MemorySize=256, Timeout=9,
        Environment={"Variables": {"KEPT": "yes"}},
    )
    lam.update_function_configuration(FunctionName="kept-env", Description="updated before restart")
    lam.create_function(
        FunctionName="kept-updated", Runtime="wasm", Role="arn:aws:iam::123456789012:role/r",
        Code={"ZipFile": guests["echo"]},
    )
    lam.update_function_code(FunctionName="kept-updated", ZipFile=guests["hello"])
    return {f["FunctionName"]: f for f in lam.list_functions()["Functions"]}


def check_kept(lam, before: dict[str, dict]) -> None:
    after = {f["FunctionName"]: f for f in lam.list_functions()["Functions"]}
    assert set(after) == set(before)
    for name, conf in before.items():
        again = lam.get_function_configuration(FunctionName=name)
        for key in KEPT:
            assert again.get(key) == conf.get(key), (name, key)
    assert invoke_payload(lam, "kept-zip", b'{"after":"restart"}')["Body"] == b'{"after":"restart"}'
    assert invoke_payload(lam, "kept-raw", b"{}")["Body"] == b'{"v":2}'
    assert invoke_payload(lam, "kept-updated", b"{}")["Body"] == b'{"v":2}'
    assert "KEPT=yes" in invoke_payload(lam, "kept-env", b"{}")["Body"].decode().splitlines()
    assert after["kept-env"]["Description"] == "updated before restart"


def test_sigterm_exits_cleanly(own_server):
    srv = own_server()
    lambda_client(srv.url).list_functions()
    assert srv.stop(signal.SIGTERM) == 0, srv.log_tail()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_functions_survive_a_restart(own_server, guests, sig):
    srv = own_server()
    before = populate(lambda_client(srv.url), guests)
    assert len(before) == 4
    srv.stop(sig)
    srv = own_server()
    check_kept(lambda_client(srv.url), before)
    # And the restarted server takes new work too.
    lam = lambda_client(srv.url)
    lam.delete_function(FunctionName="kept-raw")
    lam.create_function(
        FunctionName="made-after", Runtime="wasm", Role="arn:aws:iam::123456789012:role/r",
        Code={"ZipFile": guests["echo"]},
    )
    assert invoke_payload(lam, "made-after", b"[1]")["Body"] == b"[1]"
    srv.stop(signal.SIGTERM)
    srv = own_server()
    names = {f["FunctionName"] for f in lambda_client(srv.url).list_functions()["Functions"]}
    assert names == {"kept-zip", "kept-env", "kept-updated", "made-after"}


def test_generated_keys_are_kept_in_the_data_dir(own_server, guests):
    srv = own_server(root_keys=False)
    env = srv.nimbus_env()
    key, secret = env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]
    assert key and secret
    lam = lambda_client(srv.url, key, secret)
    lam.create_function(
        FunctionName="under-generated-keys", Runtime="wasm", Role="arn:aws:iam::123456789012:role/r",
        Code={"ZipFile": guests["echo"]},
    )
    srv.stop()
    srv = own_server(root_keys=False)
    again = srv.nimbus_env()
    assert (again["AWS_ACCESS_KEY_ID"], again["AWS_SECRET_ACCESS_KEY"]) == (key, secret)
    lam = lambda_client(srv.url, key, secret)
    assert invoke_payload(lam, "under-generated-keys", b"[3]")["Body"] == b"[3]"
