"""A host keeps at most `--sandboxes-max` function sandboxes and
`--sandbox-memory-mb` of their MemorySize: a start on a full host evicts the
longest-idle ones, the warm pool is kept on top of them, and when every
sandbox is busy the caller is told to retry (429), never queued without bound
or run unsandboxed. Idle sandboxes go after `--idle-recycle-s`."""

from __future__ import annotations

import json
import subprocess
import threading
import time

import botocore.exceptions
import pytest

from support import ROLE, clean_env, invoke_payload, lambda_client, nimbus_bin, root_env
from test_provided import bootstrap_zip, tier_of

SANDBOXES_MAX = 2
# Long enough for the other invocations to meet the busy sandbox.
BUSY_S = 3


@pytest.fixture
def host(own_server):
    """A server of the test's own with the given flags and a warm pool of one."""
    return lambda *flags: own_server("--warm-sandboxes", "1", *flags)


@pytest.fixture
def small_host(host):
    return host("--sandboxes-max", str(SANDBOXES_MAX))


class Concurrently:
    """Invocations run at once, each on a thread and a client of its own:
    `start()` them, then `wait()` for what each got — its answer, or, for a
    refused one, the error response (which has an "Error" member)."""

    def __init__(self, url: str, names: list[str], event: bytes, stagger_s: float = 0.0):
        self.outcomes: list[dict] = []
        self.threads = [threading.Thread(target=self._call, args=(url, name, event)) for name in names]
        self.stagger_s = stagger_s

    def _call(self, url: str, name: str, event: bytes) -> None:
        try:
            self.outcomes.append(invoke_payload(lambda_client(url), name, event))
        except botocore.exceptions.ClientError as e:
            self.outcomes.append(e.response)

    def start(self) -> "Concurrently":
        for t in self.threads:
            t.start()
            time.sleep(self.stagger_s)
        return self

    def wait(self) -> list[dict]:
        for t in self.threads:
            t.join()
        return self.outcomes


def refused(outcomes: list[dict]) -> list[dict]:
    return [o for o in outcomes if "Error" in o]


def deploy(lam, name: str, memory_mb: int = 128) -> str:
    lam.create_function(FunctionName=name, Runtime="provided.al2023", Role=ROLE, Handler="unused",
                        Code={"ZipFile": bootstrap_zip()}, Timeout=BUSY_S * 3, MemorySize=memory_mb)
    return name


def sleep_event(seconds: float) -> bytes:
    return json.dumps({"do": "sleep", "seconds": seconds}).encode()


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
    holders = Concurrently(small_host.url, busy, sleep_event(BUSY_S)).start()
    time.sleep(BUSY_S / 3)  # both are in their handlers now
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lam.invoke(FunctionName=other, Payload=b"{}")
    err = e.value.response
    assert err["ResponseMetadata"]["HTTPStatusCode"] == 429
    assert err["Error"]["Code"] == "TooManyRequestsException", err
    assert "busy" in err["Error"]["Message"]
    answers = holders.wait()
    assert not refused(answers) and len(answers) == len(busy), answers
    for answer in answers:
        assert json.loads(answer["Body"])["echo"] == {"do": "sleep", "seconds": BUSY_S}
    # Idle again: the refused function now starts by evicting one of them.
    assert json.loads(invoke_payload(lam, other, b'{"after":1}')["Body"])["echo"] == {"after": 1}


def test_memory_is_a_limit_too_and_evicts_as_much_as_a_start_needs(host):
    srv = host("--sandbox-memory-mb", "256")
    lam = lambda_client(srv.url)
    small = [deploy(lam, f"mem-small-{i}", 128) for i in range(2)]
    big = deploy(lam, "mem-big", 256)
    for name in small:
        invoke_payload(lam, name, b"{}")
    assert all(tier_of(invoke_payload(lam, n, b"{}")) == "hot" for n in small), "256 MB hold both"
    # 256 MB more: both idle sandboxes must go.
    assert json.loads(invoke_payload(lam, big, b'{"big":1}')["Body"])["echo"] == {"big": 1}
    assert tier_of(invoke_payload(lam, big, b"{}")) == "hot"
    assert tier_of(invoke_payload(lam, small[0], b"{}")) != "hot", "evicted for the big one"
    # Both small ones idle (256 MB): the big one evicts them again, and
    # while it is busy it holds all the memory, with nothing to evict.
    invoke_payload(lam, small[1], b"{}")
    holder = Concurrently(srv.url, [big], sleep_event(BUSY_S)).start()
    time.sleep(BUSY_S / 3)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lam.invoke(FunctionName=small[1], Payload=b"{}")
    assert e.value.response["Error"]["Code"] == "TooManyRequestsException"
    assert not refused(holder.wait())
    # A function larger than the host can never start, and says so.
    huge = deploy(lam, "mem-huge", 512)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lam.invoke(FunctionName=huge, Payload=b"{}")
    assert e.value.response["Error"]["Code"] == "TooManyRequestsException"
    assert tier_of(invoke_payload(lam, big, b"{}")) == "hot", "a refused start evicts nothing"


def test_idle_sandboxes_are_recycled_after_the_idle_time(host):
    lam = lambda_client(host("--idle-recycle-s", "1").url)
    name = deploy(lam, "idle")
    invoke_payload(lam, name, b"{}")
    assert tier_of(invoke_payload(lam, name, b"{}")) == "hot"
    time.sleep(2.5)
    assert tier_of(invoke_payload(lam, name, b"{}")) != "hot", "recycled after a second idle"


def test_a_forecast_keeps_sandboxes_ready_for_a_busy_function(host):
    # Idle sandboxes go after a second, unless a function's forecast (its
    # recent arrivals times their duration) wants them kept; pre-warming
    # runs every second.
    srv = host("--idle-recycle-s", "1", "--prewarm-interval-s", "1")
    lam = lambda_client(srv.url)
    busy, quiet = deploy(lam, "busy"), deploy(lam, "quiet")
    invoke_payload(lam, quiet, b"{}")
    for _ in range(8):
        assert not refused(Concurrently(srv.url, [busy] * 3, sleep_event(0.5)).start().wait())
    time.sleep(3)
    answers = Concurrently(srv.url, [busy] * 2, sleep_event(0.5)).start().wait()
    tiers = [tier_of(a) for a in answers]
    assert tiers == ["hot", "hot"], f"kept for the forecast past the idle time: {tiers}"
    assert tier_of(invoke_payload(lam, quiet, b"{}")) != "hot", "a function called once is not"


def test_a_function_adds_sandboxes_no_faster_than_its_burst_limit(host):
    srv = host("--burst-limit", "2")
    lam = lambda_client(srv.url)
    name = deploy(lam, "bursty")
    outcomes = Concurrently(srv.url, [name] * 3, sleep_event(1.5)).start().wait()
    shed = refused(outcomes)
    assert [o["StatusCode"] for o in outcomes if "Error" not in o] == [200, 200], outcomes
    assert len(shed) == 1, outcomes
    assert shed[0]["Error"]["Code"] == "TooManyRequestsException"
    assert shed[0]["Reason"] == "FunctionInvocationRateLimitExceeded", shed[0]
    # The two it did add serve on, hot, with no new sandbox needed.
    assert tier_of(invoke_payload(lam, name, b"{}")) == "hot"


def test_one_function_cannot_take_the_last_sandboxes_while_another_needs_them(host):
    # 8 sandboxes, an eighth of them headroom: a function alone may fill the
    # host, but once another function is active it leaves the headroom.
    srv = host("--sandboxes-max", "8")
    lam = lambda_client(srv.url)
    flood, other = deploy(lam, "flood"), deploy(lam, "other")
    assert json.loads(invoke_payload(lam, other, b'{"n":1}')["Body"])["echo"] == {"n": 1}
    holders = Concurrently(srv.url, [flood] * 8, sleep_event(BUSY_S), stagger_s=0.05).start()
    time.sleep(BUSY_S / 3)
    # The other function still finds a sandbox while the flood holds its most.
    assert json.loads(invoke_payload(lam, other, b'{"n":2}')["Body"])["echo"] == {"n": 2}
    outcomes = holders.wait()
    shed = refused(outcomes)
    assert len(outcomes) - len(shed) == 7 and len(shed) == 1, outcomes
    assert all(o["StatusCode"] == 200 for o in outcomes if "Error" not in o), outcomes
    assert shed[0]["Error"]["Code"] == "TooManyRequestsException"
    assert "fair share" in shed[0]["Error"]["Message"], shed[0]


def test_one_worker_thread_still_runs_invocations_side_by_side(own_server):
    """`--worker-threads 1` gives the server's async runtime one thread (the
    faster layout for container invokes on a small host): a sleeping
    invocation must not hold up another function's."""
    srv = own_server("--warm-sandboxes", "1", "--worker-threads", "1")
    lam = lambda_client(srv.url)
    sleeper, quick = deploy(lam, "sleeper"), deploy(lam, "quick")
    assert "FunctionError" not in invoke_payload(lam, quick, b"{}")
    slow = Concurrently(srv.url, [sleeper], sleep_event(BUSY_S)).start()
    time.sleep(0.5)
    answer = invoke_payload(lam, quick, b'{"a":1}')
    assert json.loads(answer["Body"])["echo"] == {"a": 1}
    assert slow.threads[0].is_alive(), "the quick function answered while the sleeper still ran"
    [slept] = slow.wait()
    assert "FunctionError" not in slept, slept


@pytest.mark.parametrize("value", ["0", "-1", "1025", "many"])
def test_worker_threads_out_of_range_is_refused_at_start(tmp_path, value):
    done = subprocess.run(
        [str(nimbus_bin()), "up", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "data"),
         f"--worker-threads={value}"],
        env=clean_env(**root_env()), capture_output=True, text=True, timeout=30,
    )
    assert done.returncode != 0
    assert "--worker-threads" in done.stderr, done.stderr
