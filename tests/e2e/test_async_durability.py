"""Durability of the async path, proven rather than assumed (Decision 13):
SIGKILL cannot reveal a missing fsync (the page cache survives it), so the
server's syncs are watched under strace; and damage to the store file is
detected at start-up, refused, and repaired only when asked.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time

import pytest

from support import ROLE, NimbusServer, lambda_client, make_zip, signed_request
from test_async import event, status_of, wait_for

SYNC = re.compile(r"^(\d+) .*?\b(fdatasync|fsync)\((\d+)<([^>]*)>(.*)$")
RESUMED = re.compile(r"^(\d+) .*<\.\.\. (fdatasync|fsync) resumed>.*= 0")


def syncs_and_answers(trace: str, port: int) -> list[str]:
    """The trace as a sequence of 'sync' (a completed fsync/fdatasync of the
    journal's write-ahead log) and 'accepted' (a 202 written back)."""
    events: list[str] = []
    pending: dict[str, bool] = {}
    for line in trace.splitlines():
        m = SYNC.match(line)
        if m:
            pid, _, _, path, rest = m.groups()
            wal = path.endswith("async.db-wal")
            if "<unfinished" in rest:
                pending[pid] = wal
            elif wal and rest.rstrip().endswith("= 0"):
                events.append("sync")
            continue
        m = RESUMED.match(line)
        if m:
            if pending.pop(m.group(1), False):
                events.append("sync")
            continue
        if "HTTP/1.1 202" in line:
            events.append("accepted")
    return events


@pytest.fixture
def traced_server(tmp_path):
    if shutil.which("strace") is None:
        pytest.fail("strace is not installed (scripts/test installs it)", pytrace=False)
    trace = tmp_path / "trace"
    srv = NimbusServer(
        tmp_path / "data", tmp_path / "server.log",
        # No sandboxes: only the server's own syscalls are traced.
        extra_args=("--warm-sandboxes", "0", "--prewarm-interval-s", "0", "--async-retry-base-ms", "600000"),
        wrapper=("strace", "-f", "--seccomp-bpf", "-tt", "-y", "-s", "48", "-o", str(trace),
                 "-e", "trace=fsync,fdatasync,write,writev,sendto,sendmsg"),
    )
    srv.start()
    yield srv, trace
    # The process started is strace; the server is its child.
    subprocess.run(["pkill", "-TERM", "-P", str(srv.proc.pid)], check=False)
    try:
        srv.proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        srv.kill()


def test_every_accept_is_synced_to_disk_before_its_202(traced_server, guests):
    srv, trace = traced_server
    lam = lambda_client(srv.url)
    # A function that fails: each invocation is attempted once, then waits
    # ten minutes for its retry, so the journal goes quiet afterwards.
    lam.create_function(FunctionName="traps", Runtime="wasm", Role=ROLE, Handler="trap.wasm",
                        Code={"ZipFile": make_zip({"trap.wasm": guests["trap"]})})
    path = "/2015-03-31/functions/traps/invocations"
    ids = []
    for i in range(20):
        resp = signed_request(srv.url, "POST", path, b"{}",
                              headers={"X-Amz-Invocation-Type": "Event", "X-Nimbus-Idempotency-Key": f"k{i}"})
        assert resp.status == 202
        ids.append(resp.header("x-amzn-RequestId"))
    for invocation in ids:
        wait_for(srv.url, invocation, lambda s: s["State"] == "retrying")
    time.sleep(0.5)
    mark = len(trace.read_text().splitlines())
    # Repeats store nothing, so they must not sync: a control that the count
    # sees syncs only where writes are.
    for i in range(20):
        resp = signed_request(srv.url, "POST", path, b"{}",
                              headers={"X-Amz-Invocation-Type": "Event", "X-Nimbus-Idempotency-Key": f"k{i}"})
        assert resp.header("X-Nimbus-Idempotent-Replay") == "true"
    time.sleep(0.5)
    lines = trace.read_text().splitlines()
    first = syncs_and_answers("\n".join(lines[:mark]), srv.port)
    repeats = syncs_and_answers("\n".join(lines[mark:]), srv.port)
    assert first.count("accepted") == 20 and repeats.count("accepted") == 20, (first, repeats)
    # Each 202 of a new invocation was preceded by a sync since the one before.
    answered = 0
    synced = False
    for e in first:
        if e == "sync":
            synced = True
        else:
            assert synced, f"202 number {answered + 1} was sent with no fsync of the journal since the last: {first}"
            answered += 1
            synced = False
    assert "sync" not in repeats, f"idempotent repeats synced the journal: {repeats}"


def flip_marker(data_dir, marker: bytes) -> list[str]:
    """Flips one bit inside every copy of `marker` the journal's files hold
    (the main file and its write-ahead log may both have one, and the live
    copy may be either); returns the files hit."""
    hit = []
    for name in ("async.db", "async.db-wal"):
        path = data_dir / name
        if not path.exists():
            continue
        data = bytearray(path.read_bytes())
        at = data.find(marker)
        while at >= 0:
            data[at + len(marker) // 2] ^= 0x04
            at = data.find(marker, at + 1)
            if name not in hit:
                hit.append(name)
        path.write_bytes(bytes(data))
    assert hit, "the marker is in neither journal file"
    return hit


@pytest.mark.parametrize("stop", ["sigterm", "sigkill"])
def test_a_flipped_bit_in_the_journal_is_detected_at_start_up(tmp_path, guests, stop):
    data = tmp_path / "data"
    args = ("--async-retry-base-ms", "600000", "--warm-sandboxes", "0")
    srv = NimbusServer(data, tmp_path / "server.log", extra_args=args).start()
    try:
        lam = lambda_client(srv.url)
        lam.create_function(FunctionName="traps", Runtime="wasm", Role=ROLE, Handler="trap.wasm",
                            Code={"ZipFile": make_zip({"trap.wasm": guests["trap"]})})
        kept = [event(lam, "traps", b'{"filler": "kept"}') for _ in range(3)]
        hit = event(lam, "traps", b'{"marker": "ZZZZ-flip-me-ZZZZ"}')
        for invocation in [*kept, hit]:
            wait_for(srv.url, invocation, lambda s: s["State"] == "retrying")
    finally:
        if stop == "sigkill":
            srv.kill()
        else:
            srv.stop()
    flip_marker(data, b"ZZZZ-flip-me-ZZZZ")

    refused = NimbusServer(data, tmp_path / "refused.log", extra_args=args)
    try:
        refused.start()
    except RuntimeError as e:
        message = str(e)
    else:
        refused.stop()
        pytest.fail("the server started from a damaged journal")
    assert "--repair-journal" in message, message
    assert ("damaged" in message) or ("lost acknowledged" in message), message

    repaired = NimbusServer(data, tmp_path / "repaired.log", extra_args=(*args, "--repair-journal")).start()
    try:
        gone = signed_request(repaired.url, "GET", "/nimbus/2026-11-25/invocations/" + hit)
        assert gone.status == 404, "the damaged record is quarantined (or was lost), never run"
        assert status_of(repaired.url, event(lambda_client(repaired.url), "traps"))["State"] in {"queued", "running", "retrying"}
    finally:
        repaired.stop()
    # Repaired once, the store opens as usual.
    NimbusServer(data, tmp_path / "after.log", extra_args=args).start().stop()
