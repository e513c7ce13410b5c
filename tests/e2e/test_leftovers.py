"""Nothing left behind: a SIGKILLed server's sandboxes die with it, and the next
start on the same data dir sweeps what stays on the host's filesystems — never
what another server's sandboxes hold."""

from __future__ import annotations

import base64
import hashlib
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from support import GUESTS_DIR, NimbusServer, invoke_payload, lambda_client, make_zip
from test_provided import bootstrap_zip
from test_python import host_runtime

ROLE = "arn:aws:iam::123456789012:role/r"
# Warm sandboxes a server keeps ready by default (`nimbus up --warm-sandboxes`).
WARM_SANDBOXES = 2
# How long the sandboxes of a killed server may take to die (parent-death signal).
SANDBOX_DEATH_TIMEOUT_S = 10.0


def tag_of(data_dir: Path) -> str:
    """The tag a server puts on its sandboxes' cgroups: a hash of its data dir."""
    return hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:12]


def cgroup_mounts() -> list[Path]:
    mounts = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            fstype = fields[fields.index("-") + 1]
            if fstype in ("cgroup", "cgroup2"):
                mounts.append(Path(fields[4]))
    return mounts


def sandbox_cgroups(tag: str) -> list[Path]:
    """Every sandbox cgroup directory tagged `tag`, on every hierarchy."""
    found = []
    for mount in cgroup_mounts():
        parent = mount / f"nimbus-{tag}"
        if parent.is_dir():
            found.extend(p for p in parent.iterdir() if p.is_dir())
    return found


def children(pid: int) -> set[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return {int(p) for p in out.stdout.split()}


def loop_devices_under(directory: Path) -> list[str]:
    out = subprocess.run(["losetup", "--list", "--noheadings", "--output", "NAME,BACK-FILE"],
                         capture_output=True, text=True)
    return [line for line in out.stdout.splitlines() if str(directory.resolve()) in line]


def state_dirs(data_dir: Path) -> list[str]:
    """The sandbox state directories under a data dir (dot-names are templates)."""
    root = data_dir / "sandboxes"
    return sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) if root.is_dir() else []


def python_zip() -> bytes:
    return make_zip({"lambda_function.py": (GUESTS_DIR / "python" / "lambda_function.py").read_bytes()})


def start(data_dir: Path, log: Path) -> NimbusServer:
    try:
        return NimbusServer(data_dir, log).start()
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)


def test_a_killed_servers_sandboxes_are_gone_after_the_next_start(tmp_path):
    ours_dir, other_dir = tmp_path / "ours", tmp_path / "other"
    ours = start(ours_dir, tmp_path / "ours.log")
    other = start(other_dir, tmp_path / "other.log")
    servers = [ours, other]
    try:
        lam, lam_other = lambda_client(ours.url), lambda_client(other.url)
        for client in (lam, lam_other):
            client.create_function(FunctionName="native", Runtime="provided.al2023", Role=ROLE,
                                   Handler="x", Code={"ZipFile": bootstrap_zip()}, Timeout=30)
        lam.create_function(FunctionName="py", Runtime=host_runtime(), Role=ROLE,
                            Handler="lambda_function.lambda_handler", Code={"ZipFile": python_zip()})
        # Hot sandboxes on both servers, and on ours two busy in invocations.
        assert "FunctionError" not in invoke_payload(lam, "native", b"{}")
        assert "FunctionError" not in invoke_payload(lam, "py", b"{}")
        assert "FunctionError" not in invoke_payload(lam_other, "native", b"{}")
        # Two at once: one takes the hot sandbox, the other starts a second.
        for _ in range(2):
            threading.Thread(
                target=_ignore_errors,
                args=(lambda: lam.invoke(FunctionName="native", Payload=b'{"do":"sleep","seconds":20}'),),
                daemon=True,
            ).start()
        deadline = time.monotonic() + 10
        # Three function sandboxes, plus the warm ones each server keeps ready.
        while len(children(ours.proc.pid)) < 3 + WARM_SANDBOXES and time.monotonic() < deadline:
            time.sleep(0.05)
        our_sandboxes = children(ours.proc.pid)
        other_sandboxes = children(other.proc.pid)
        # (A refill may be under way: at least, not exactly.)
        assert len(our_sandboxes) >= 3 + WARM_SANDBOXES, f"sandboxes of ours: {our_sandboxes}"
        assert len(other_sandboxes) >= 1 + WARM_SANDBOXES, other_sandboxes
        assert sandbox_cgroups(tag_of(ours_dir)) and loop_devices_under(ours_dir / "sandboxes")

        ours.stop(signal.SIGKILL)
        deadline = time.monotonic() + SANDBOX_DEATH_TIMEOUT_S
        while any(Path(f"/proc/{pid}").exists() for pid in our_sandboxes) and time.monotonic() < deadline:
            time.sleep(0.05)
        alive = [pid for pid in our_sandboxes if Path(f"/proc/{pid}").exists()]
        assert not alive, f"sandboxes of the killed server still run: {alive}"

        old_cgroups = sandbox_cgroups(tag_of(ours_dir))
        old_states = state_dirs(ours_dir)
        assert old_cgroups and old_states
        ours = start(ours_dir, tmp_path / "ours-again.log")
        servers.append(ours)
        # The restarted server makes warm sandboxes of its own at once; its
        # sandbox ids never repeat a predecessor's.
        left = set(old_cgroups) & set(sandbox_cgroups(tag_of(ours_dir)))
        assert not left, f"the restart left the killed server's cgroups: {sorted(left)}"
        left = set(old_states) & set(state_dirs(ours_dir))
        assert not left, f"sandbox state left behind: {sorted(left)}"
        stale = [line for line in loop_devices_under(ours_dir / "sandboxes")
                 if any(f"/{name}/" in line for name in old_states)]
        assert stale == [], f"loop devices of the killed server: {stale}"

        # The other server's sandbox was not touched: still running, still hot.
        assert all(Path(f"/proc/{pid}").exists() for pid in other_sandboxes)
        again = invoke_payload(lam_other, "native", b"{}", LogType="Tail")
        assert "FunctionError" not in again
        assert "Init Duration" not in base64.b64decode(again["LogResult"]).decode(), "its sandbox stayed hot"
        # And the restarted server runs its functions again.
        assert "FunctionError" not in invoke_payload(lambda_client(ours.url), "py", b"{}")
    finally:
        for srv in servers:
            srv.close()


def _ignore_errors(call) -> None:
    try:
        call()
    except Exception:
        pass


def test_a_stopped_server_leaves_nothing_of_its_own(tmp_path):
    # A server stopped as it should be takes down its sandboxes and its
    # cgroup groups: a data dir never used again leaves nothing on the host.
    data_dir = tmp_path / "data"
    server = start(data_dir, tmp_path / "server.log")
    try:
        lam = lambda_client(server.url)
        lam.create_function(FunctionName="native", Runtime="provided.al2023", Role=ROLE,
                            Handler="x", Code={"ZipFile": bootstrap_zip()})
        assert "FunctionError" not in invoke_payload(lam, "native", b"{}")
        tag = tag_of(data_dir)
        groups = [mount / f"nimbus-{tag}" for mount in cgroup_mounts()]
        assert any(group.is_dir() for group in groups) and sandbox_cgroups(tag)
        assert server.stop(signal.SIGTERM) == 0, server.log_tail()
        assert sandbox_cgroups(tag) == []
        left = [str(group) for group in groups if group.exists()]
        assert left == [], f"cgroup groups left behind: {left}"
        assert state_dirs(data_dir) == [] and loop_devices_under(data_dir / "sandboxes") == []
    finally:
        server.close()
