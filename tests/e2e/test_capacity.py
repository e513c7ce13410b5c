"""A host keeps at most `--sandboxes-max` function sandboxes: a start on a full
host evicts the longest-idle one, the warm pool is kept on top of them, and
when every sandbox is busy the caller is told to retry (429), never queued
without bound or run unsandboxed."""

from __future__ import annotations

import json
import threading
import time

import botocore.exceptions
import pytest

from support import ROLE, NimbusServer, invoke_payload, lambda_client
from test_provided import bootstrap_zip, tier_of

SANDBOXES_MAX = 2
# Long enough for the other invocations to meet the busy sandbox.
BUSY_S = 3


@pytest.fixture
def small_host(tmp_path):
    srv = NimbusServer(tmp_path / "data", tmp_path / "server.log",
                       extra_args=("--sandboxes-max", str(SANDBOXES_MAX), "--warm-sandboxes", "1"))
    try:
        srv.start()
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)
    yield srv
    srv.stop()


def deploy(lam, name: str) -> str:
    lam.create_function(FunctionName=name, Runtime="provided.al2023", Role=ROLE, Handler="unused",
                        Code={"ZipFile": bootstrap_zip()}, Timeout=BUSY_S * 3)
    return name


def test_a_full_host_evicts_the_longest_idle_sandbox(small_host):
    lam = lambda_client(small_host.url)
    a, b, c = (deploy(lam, n) for n in ("cap-a", "cap-b", "cap-c"))
    for name in (a, b):
        assert tier_of(invoke_payload(lam, name, b"{}")) in ("warm", "cold")
    # `a` is used again, so `b` is now the longest idle of the two.
    assert tier_of(invoke_payload(lam, a, b"{}")) == "hot"
    time.sleep(0.5)  # the warm pool refills in the background
    started = invoke_payload(lam, c, b'{"n":3}')
    assert tier_of(started) == "warm", "a full host still starts from the warm pool"
    assert json.loads(started["Body"])["echo"] == {"n": 3}
    assert tier_of(invoke_payload(lam, a, b"{}")) == "hot", "the more recently used sandbox stays"
    assert tier_of(invoke_payload(lam, b, b"{}")) != "hot", "the longest-idle sandbox was evicted"


def test_every_sandbox_busy_is_429_and_the_host_recovers(small_host):
    lam = lambda_client(small_host.url)
    busy = [deploy(lam, f"cap-busy-{i}") for i in range(SANDBOXES_MAX)]
    other = deploy(lam, "cap-other")
    answers: dict[str, dict] = {}

    def hold(name: str) -> None:
        answers[name] = invoke_payload(lambda_client(small_host.url), name,
                                       json.dumps({"do": "sleep", "seconds": BUSY_S}).encode())

    holders = [threading.Thread(target=hold, args=(name,)) for name in busy]
    for t in holders:
        t.start()
    time.sleep(BUSY_S / 3)  # both are in their handlers now
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        lam.invoke(FunctionName=other, Payload=b"{}")
    err = refused.value.response
    assert err["ResponseMetadata"]["HTTPStatusCode"] == 429
    assert err["Error"]["Code"] == "TooManyRequestsException", err
    assert "busy" in err["Error"]["Message"]
    for t in holders:
        t.join()
    for name in busy:
        assert json.loads(answers[name]["Body"])["echo"] == {"do": "sleep", "seconds": BUSY_S}
    # Idle again: the refused function now starts by evicting one of them.
    assert json.loads(invoke_payload(lam, other, b'{"after":1}')["Body"])["echo"] == {"after": 1}
