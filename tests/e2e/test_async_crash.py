"""Crash recovery of the async path, black box: 10,000 async invocations of
an echo function whose successes are recorded in a built-in queue (its
OnSuccess destination); the server is SIGKILLed at random points while
invocations are accepted and while they run, several times, and restarted
on the same data directory each time. A history checker then asserts:

- every invocation that got a 202 ran to completion (its status says so,
  and its success record is in the queue);
- no request answered with an error ran;
- every record reads back intact (the status route checks both checksums);
- duplicate executions (attempts that lost their owner to a kill) are
  counted and reported.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections import Counter

from support import ROLE, lambda_client, make_zip, signed_request, sqs_client

INVOCATIONS = 10_000
CLIENTS = 16
KILLS_DURING_ACCEPT = 3
KILLS_DURING_EXECUTION = 2
DRAIN_TIMEOUT_S = 240.0


def test_no_accepted_invocation_is_lost_across_sigkills(own_server, guests, capsys):
    # NIMBUS_CRASH_SEED replays a run's kill times.
    seed = int(os.environ.get("NIMBUS_CRASH_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)

    def say(line: str) -> None:
        # Shown in every run's output, not only a failing one's.
        with capsys.disabled():
            print(f"\n[crash test, seed {seed}] {line}", flush=True)

    flags = ("--async-retry-base-ms", "100", "--warm-sandboxes", "0")
    srv = own_server(*flags)
    lam, sqs = lambda_client(srv.url), sqs_client(srv.url)
    done_url = sqs.create_queue(QueueName="done")["QueueUrl"]
    done_arn = sqs.get_queue_attributes(QueueUrl=done_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    lam.create_function(FunctionName="echo", Runtime="wasm", Role=ROLE, Handler="echo.wasm",
                        Code={"ZipFile": make_zip({"echo.wasm": guests["echo"]})})
    lam.put_function_event_invoke_config(FunctionName="echo",
                                         DestinationConfig={"OnSuccess": {"Destination": done_arn}})

    current = {"server": srv}
    up = threading.Event()
    up.set()
    lock = threading.Lock()
    next_n = [0]
    accepted: dict[int, str] = {}
    refused: dict[int, int] = {}
    indeterminate: set[int] = set()

    def client() -> None:
        path = "/2015-03-31/functions/echo/invocations"
        while True:
            with lock:
                n = next_n[0]
                next_n[0] += 1
            if n >= INVOCATIONS:
                return
            up.wait()
            url = current["server"].url
            try:
                resp = signed_request(url, "POST", path, json.dumps({"n": n}).encode(),
                                      headers={"X-Amz-Invocation-Type": "Event"})
            except Exception:
                # The connection broke: it may or may not have been stored.
                with lock:
                    indeterminate.add(n)
                continue
            with lock:
                if resp.status == 202:
                    accepted[n] = resp.header("x-amzn-RequestId")
                else:
                    refused[n] = resp.status

    def kill_and_restart() -> None:
        up.clear()
        old = current["server"]
        old.proc.kill()
        old.proc.wait(timeout=10)
        current["server"] = own_server(*flags)
        up.set()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    kills = 0
    for _ in range(KILLS_DURING_ACCEPT):
        time.sleep(rng.uniform(0.3, 1.5))
        if next_n[0] >= INVOCATIONS:
            break
        kill_and_restart()
        kills += 1
    for t in threads:
        t.join(timeout=300)
        assert not t.is_alive(), "a client hung"
    say(f"accepted {len(accepted)}, refused {len(refused)}, broken connections {len(indeterminate)}, "
        f"kills while accepting {kills}")
    assert len(accepted) > INVOCATIONS // 2, "too few accepted for the test to mean anything"

    for _ in range(KILLS_DURING_EXECUTION):
        time.sleep(rng.uniform(0.1, 0.8))
        kill_and_restart()
        kills += 1

    url = current["server"].url
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while True:
        backlog = json.loads(signed_request(url, "GET", "/nimbus/2026-11-25/async-backlog").body)
        if backlog["Unfinished"] == 0:
            break
        assert time.monotonic() < deadline, f"still unfinished after {DRAIN_TIMEOUT_S}s: {backlog}"
        time.sleep(0.5)

    # Every 202 ran to completion, and its record reads back intact.
    executions = Counter()
    for n, invocation in accepted.items():
        resp = signed_request(url, "GET", "/nimbus/2026-11-25/invocations/" + invocation)
        assert resp.status == 200, f"invocation {invocation} (n={n}) is gone: {resp.status} {resp.body[:300]}"
        status = json.loads(resp.body)
        assert status["State"] == "succeeded", status
        # Attempts that were claimed: each may have run (one that lost its
        # owner to a kill is counted, though it may have been killed first).
        executions[n] = sum(1 for a in status["History"] if a.get("Outcome") != "throttled")

    # The success records: what ran to completion, by the event's n.
    sqs = sqs_client(url)
    completed = Counter()
    while True:
        got = sqs.receive_message(QueueUrl=done_url, MaxNumberOfMessages=10, VisibilityTimeout=600).get("Messages", [])
        if not got:
            break
        for m in got:
            record = json.loads(m["Body"])
            assert record["requestContext"]["condition"] == "Success"
            completed[record["requestPayload"]["n"]] += 1
    missing = [n for n in accepted if completed[n] == 0]
    assert not missing, f"{len(missing)} accepted invocations left no success record, e.g. {missing[:5]}"
    ran_after_error = [n for n in refused if completed[n] > 0]
    assert not ran_after_error, f"requests answered with an error ran: {ran_after_error[:5]}"
    unknown = [n for n in completed if n not in accepted and n not in indeterminate]
    assert not unknown, f"records of invocations nobody sent: {unknown[:5]}"
    twice_recorded = [n for n, c in completed.items() if c > 1]
    assert not twice_recorded, f"success records delivered twice: {twice_recorded[:5]}"

    duplicates = sum(c - 1 for c in executions.values() if c > 1)
    stored_without_answer = sum(1 for n in indeterminate if completed[n] > 0)
    say(f"{kills} kills; every one of {len(accepted)} accepted invocations completed; "
        f"{duplicates} extra attempts (owners killed mid-run); "
        f"{stored_without_answer} of {len(indeterminate)} broken requests had been stored and ran")
