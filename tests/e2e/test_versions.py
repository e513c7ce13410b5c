"""Versions, aliases, weighted routing and tags, through boto3 and the `aws`
CLI: every invocation must run exactly the version it was routed to, every
overwrite is a compare-and-set on a RevisionId, and all of it survives a
restart on the same data dir.

The guests are generated here: version N of a function's code answers
`{"v":N}`, and each function publishes its code generations in order, so the
body of every invocation names the version that really ran and can be checked
against the `X-Amz-Executed-Version` the platform reports.
"""

from __future__ import annotations

import json
import math
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from botocore.exceptions import ClientError, WaiterError

from support import (
    NimbusServer,
    ROLE,
    assert_client_error,
    assert_intact,
    code_sha256,
    invoke_payload,
    lambda_client,
    make_zip,
    wat2wasm,
)

VERSION_WAT = """;; version {n}: ignores the event and answers {{"v":{n}}}.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 256) "{body}")
  (func (export "_start")
    (i32.store (i32.const 16) (i32.const 256))
    (i32.store (i32.const 20) (i32.const {length}))
    (if (call $fd_write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 24))
      (then unreachable))
    ;; a short write would make the body unparseable, and the test would say so
    (if (i32.ne (i32.load (i32.const 24)) (i32.const {length}))
      (then unreachable))))
"""

WAITER = {"Delay": 1, "MaxAttempts": 10}


@pytest.fixture(scope="session")
def version_code(tmp_path_factory):
    """version_code(n) -> a wasm module that answers {"v":n}."""
    out = tmp_path_factory.mktemp("version-guests")
    built: dict[int, bytes] = {}

    def build(n: int) -> bytes:
        if n not in built:
            body = json.dumps({"v": n}, separators=(",", ":"))
            wat = out / f"v{n}.wat"
            wat.write_text(VERSION_WAT.format(n=n, body=body.replace('"', '\\"'), length=len(body)))
            built[n] = wat2wasm(wat, out / f"v{n}.wasm")
        return built[n]

    return build


def run(lam, name: str, qualifier: str | None = None) -> tuple[str, int]:
    """Invokes once; returns (ExecutedVersion, the version number in the body)."""
    kw = {"Qualifier": qualifier} if qualifier is not None else {}
    resp = invoke_payload(lam, name, b"{}", **kw)
    assert resp["StatusCode"] == 200, resp
    assert "FunctionError" not in resp, resp["Body"]
    return resp["ExecutedVersion"], json.loads(resp["Body"])["v"]


def versions_of(lam, name: str, **kw) -> list[str]:
    return [v["Version"] for v in lam.list_versions_by_function(FunctionName=name, **kw)["Versions"]]


def strip(resp: dict) -> dict:
    return {k: v for k, v in resp.items() if k != "ResponseMetadata"}


def error_code(e: ClientError) -> tuple[str, int]:
    return e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"]


def publish_generations(lam, functions, version_code, count: int, **create_kw) -> str:
    """A function whose versions 1..count run code generations 1..count; $LATEST = count."""
    name = functions.create(version_code(1), **create_kw)["FunctionName"]
    assert lam.publish_version(FunctionName=name)["Version"] == "1"
    for n in range(2, count + 1):
        lam.update_function_code(FunctionName=name, ZipFile=version_code(n))
        assert lam.publish_version(FunctionName=name)["Version"] == str(n)
    return name


# --- 1. the lifecycle ----------------------------------------------------------


def test_version_and_alias_lifecycle(lam, functions, version_code):
    created = functions.create(version_code(1), Description="generation one")
    name, arn = created["FunctionName"], created["FunctionArn"]
    assert created["Version"] == "$LATEST"
    assert versions_of(lam, name) == ["$LATEST"]

    v1 = lam.publish_version(FunctionName=name)
    assert v1["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert v1["Version"] == "1"
    assert v1["FunctionArn"] == f"{arn}:1"
    assert v1["CodeSha256"] == code_sha256(version_code(1))
    assert v1["Description"] == "generation one"
    assert v1["State"] == "Active"

    lam.update_function_code(FunctionName=name, ZipFile=version_code(2))
    v2 = lam.publish_version(FunctionName=name)
    assert v2["Version"] == "2"
    assert v2["CodeSha256"] == code_sha256(version_code(2))
    # Nothing changed since version 2: publishing again answers version 2.
    again = lam.publish_version(FunctionName=name)
    assert again["Version"] == "2"
    assert again["CodeSha256"] == v2["CodeSha256"]

    listed = lam.list_versions_by_function(FunctionName=name)["Versions"]
    assert [v["Version"] for v in listed] == ["$LATEST", "1", "2"]
    assert [v["FunctionArn"] for v in listed] == [arn, f"{arn}:1", f"{arn}:2"]
    assert listed[1]["CodeSha256"] == code_sha256(version_code(1))

    # A version's configuration, by Qualifier and by qualified ARN.
    conf1 = lam.get_function_configuration(FunctionName=name, Qualifier="1")
    assert conf1["Version"] == "1" and conf1["FunctionArn"] == f"{arn}:1"
    assert conf1["CodeSha256"] == code_sha256(version_code(1))
    got2 = lam.get_function(FunctionName=f"{arn}:2")
    assert got2["Configuration"]["Version"] == "2"
    assert got2["Configuration"]["CodeSha256"] == code_sha256(version_code(2))
    assert lam.get_function(FunctionName=name)["Configuration"]["Version"] == "$LATEST"

    alias = lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1", Description="prod")
    assert alias["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert alias["AliasArn"] == f"{arn}:live"
    assert alias["FunctionVersion"] == "1" and alias["Description"] == "prod"
    assert strip(lam.get_alias(FunctionName=name, Name="live")) == strip(alias)
    # An alias' configuration is that of the version it points to.
    assert lam.get_function_configuration(FunctionName=name, Qualifier="live")["CodeSha256"] == code_sha256(version_code(1))

    # Who answers: each route names the version that ran, and that version ran.
    assert run(lam, name, "live") == ("1", 1)
    assert run(lam, name, "1") == ("1", 1)
    assert run(lam, name, "2") == ("2", 2)
    assert run(lam, name, "$LATEST") == ("$LATEST", 2)
    assert run(lam, name) == ("$LATEST", 2)
    assert run(lam, f"{arn}:2") == ("2", 2)
    assert run(lam, f"{arn}:live") == ("1", 1)
    assert run(lam, f"{name}:1") == ("1", 1)

    # Forward, then roll back by moving the alias.
    moved = lam.update_alias(FunctionName=name, Name="live", FunctionVersion="2")
    assert moved["FunctionVersion"] == "2" and moved["RevisionId"] != alias["RevisionId"]
    assert moved["Description"] == "prod"
    assert run(lam, name, "live") == ("2", 2)
    lam.update_alias(FunctionName=name, Name="live", FunctionVersion="1")
    assert run(lam, name, "live") == ("1", 1)

    assert [a["Name"] for a in lam.list_aliases(FunctionName=name)["Aliases"]] == ["live"]
    assert [a["Name"] for a in lam.list_aliases(FunctionName=name, FunctionVersion="1")["Aliases"]] == ["live"]
    assert lam.list_aliases(FunctionName=name, FunctionVersion="2")["Aliases"] == []

    # A version an alias points to cannot go; an unused one can.
    with pytest.raises(ClientError) as e:
        lam.delete_function(FunctionName=name, Qualifier="1")
    assert_client_error(e, "ResourceConflictException", 409)
    assert run(lam, name, "1") == ("1", 1)
    deleted = lam.delete_function(FunctionName=name, Qualifier="2")
    assert deleted["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert versions_of(lam, name) == ["$LATEST", "1"]
    for call in (
        lambda: lam.get_function(FunctionName=name, Qualifier="2"),
        lambda: lam.get_function_configuration(FunctionName=f"{arn}:2"),
        lambda: lam.invoke(FunctionName=name, Qualifier="2", Payload=b"{}"),
    ):
        with pytest.raises(ClientError) as e:
            call()
        assert_client_error(e, "ResourceNotFoundException", 404)
    # $LATEST (still generation 2's code) is untouched by deleting version 2.
    assert run(lam, name) == ("$LATEST", 2)

    # Version numbers are never reused.
    lam.update_function_code(FunctionName=name, ZipFile=version_code(3))
    assert lam.publish_version(FunctionName=name)["Version"] == "3"
    assert versions_of(lam, name) == ["$LATEST", "1", "3"]
    assert run(lam, name, "3") == ("3", 3)

    deleted = lam.delete_alias(FunctionName=name, Name="live")
    assert deleted["ResponseMetadata"]["HTTPStatusCode"] == 204
    with pytest.raises(ClientError) as e:
        lam.get_alias(FunctionName=name, Name="live")
    assert_client_error(e, "ResourceNotFoundException", 404)
    with pytest.raises(ClientError) as e:
        lam.invoke(FunctionName=name, Qualifier="live", Payload=b"{}")
    assert_client_error(e, "ResourceNotFoundException", 404)
    # No alias holds version 1 any more.
    lam.delete_function(FunctionName=name, Qualifier="1")
    assert versions_of(lam, name) == ["$LATEST", "3"]

    # Deleting the function takes its versions and aliases with it.
    lam.create_alias(FunctionName=name, Name="beta", FunctionVersion="3")
    lam.delete_function(FunctionName=name)
    for call in (
        lambda: lam.get_function(FunctionName=name),
        lambda: lam.get_function(FunctionName=name, Qualifier="3"),
        lambda: lam.get_alias(FunctionName=name, Name="beta"),
        lambda: lam.list_versions_by_function(FunctionName=name),
        lambda: lam.list_aliases(FunctionName=name),
        lambda: lam.invoke(FunctionName=name, Qualifier="beta", Payload=b"{}"),
    ):
        with pytest.raises(ClientError) as e:
            call()
        assert_client_error(e, "ResourceNotFoundException", 404)
    # A function made again under the name starts with nothing of the old one's.
    functions.create(version_code(5), name=name)
    assert versions_of(lam, name) == ["$LATEST"]
    assert lam.list_aliases(FunctionName=name)["Aliases"] == []
    with pytest.raises(ClientError) as e:
        lam.invoke(FunctionName=name, Qualifier="beta", Payload=b"{}")
    assert_client_error(e, "ResourceNotFoundException", 404)
    assert run(lam, name) == ("$LATEST", 5)


def test_publish_flag_on_create_and_update(lam, functions, version_code):
    created = functions.create(version_code(1), Publish=True)
    name = created["FunctionName"]
    assert created["Version"] == "1"
    assert created["FunctionArn"].endswith(f":{name}:1")
    updated = lam.update_function_code(FunctionName=name, ZipFile=version_code(2), Publish=True)
    assert updated["Version"] == "2"
    assert updated["CodeSha256"] == code_sha256(version_code(2))
    # Without Publish the answer is $LATEST's.
    plain = lam.update_function_code(FunctionName=name, ZipFile=version_code(3))
    assert plain["Version"] == "$LATEST"
    assert versions_of(lam, name) == ["$LATEST", "1", "2"]
    assert run(lam, name, "1") == ("1", 1)
    assert run(lam, name, "2") == ("2", 2)
    assert run(lam, name) == ("$LATEST", 3)


def test_a_configuration_change_is_a_new_version_with_its_own_environment(lam, functions, guests):
    """A version keeps the configuration it was published with, and the guest
    sees AWS_LAMBDA_FUNCTION_VERSION = the version that runs."""
    name = functions.create(guests["env"], Environment={"Variables": {"GEN": "1"}})["FunctionName"]
    assert lam.publish_version(FunctionName=name)["Version"] == "1"
    lam.update_function_configuration(FunctionName=name, Environment={"Variables": {"GEN": "2"}})
    v2 = lam.publish_version(FunctionName=name)
    assert v2["Version"] == "2" and v2["Environment"] == {"Variables": {"GEN": "2"}}
    lam.update_function_configuration(FunctionName=name, Environment={"Variables": {"GEN": "3"}})
    lam.create_alias(
        FunctionName=name, Name="split", FunctionVersion="1",
        RoutingConfig={"AdditionalVersionWeights": {"2": 0.5}},
    )

    def env(qualifier: str) -> tuple[str, dict[str, str]]:
        resp = invoke_payload(lam, name, b"{}", Qualifier=qualifier)
        assert "FunctionError" not in resp, resp["Body"]
        lines = resp["Body"].decode().splitlines()
        return resp["ExecutedVersion"], dict(line.split("=", 1) for line in lines if "=" in line)

    executed, seen = env("$LATEST")
    assert executed == "$LATEST" and seen["AWS_LAMBDA_FUNCTION_VERSION"] == "$LATEST" and seen["GEN"] == "3"
    for q in ("1", "2"):
        executed, seen = env(q)
        assert executed == q and seen["AWS_LAMBDA_FUNCTION_VERSION"] == q and seen["GEN"] == q
    executed_seen = set()
    for _ in range(60):
        executed, seen = env("split")
        assert executed in ("1", "2"), executed
        assert seen["AWS_LAMBDA_FUNCTION_VERSION"] == executed and seen["GEN"] == executed, (executed, seen)
        executed_seen.add(executed)
    # Both sides of a 50/50 split show up in 60 draws (the chance of missing one is 2^-59).
    assert executed_seen == {"1", "2"}


def test_list_pagination(lam, functions, version_code):
    name = publish_generations(lam, functions, version_code, 5)
    for n in range(1, 6):
        lam.create_alias(FunctionName=name, Name=f"a{n}", FunctionVersion=str(n))

    def pages(op, key, field):
        seen, marker, calls = [], None, 0
        while True:
            kw = {"Marker": marker} if marker else {}
            page = op(FunctionName=name, MaxItems=2, **kw)
            assert len(page[key]) <= 2, page
            seen += [item[field] for item in page[key]]
            marker = page.get("NextMarker")
            calls += 1
            assert calls < 10, "pagination does not end"
            if not marker:
                return seen, calls

    versions, calls = pages(lam.list_versions_by_function, "Versions", "Version")
    assert versions == ["$LATEST", "1", "2", "3", "4", "5"] and calls >= 3
    aliases, calls = pages(lam.list_aliases, "Aliases", "Name")
    assert sorted(aliases) == ["a1", "a2", "a3", "a4", "a5"] and len(aliases) == 5 and calls >= 3
    # boto3's own paginators agree.
    pv = lam.get_paginator("list_versions_by_function").paginate(FunctionName=name, PaginationConfig={"PageSize": 4})
    assert [v["Version"] for page in pv for v in page["Versions"]] == versions
    pa = lam.get_paginator("list_aliases").paginate(FunctionName=name, PaginationConfig={"PageSize": 4})
    assert sorted(a["Name"] for page in pa for a in page["Aliases"]) == sorted(aliases)


# --- the lifecycle through the aws CLI -------------------------------------------


def test_cli_version_and_alias_lifecycle(aws, lam, version_code, tmp_path, fn_name):
    name = f"cli-{fn_name}"[:64]

    def package(n: int):
        path = tmp_path / f"v{n}.zip"
        path.write_bytes(make_zip({"v.wasm": version_code(n)}))
        return f"fileb://{path}"

    def invoke(*target: str) -> tuple[str, int]:
        out = tmp_path / "out.json"
        result = aws("invoke", *target, "--payload", "{}", str(out))
        assert result["StatusCode"] == 200 and "FunctionError" not in result, result
        return result["ExecutedVersion"], json.loads(out.read_bytes())["v"]

    try:
        created = aws(
            "create-function", "--function-name", name, "--runtime", "wasm", "--role", ROLE,
            "--handler", "v.wasm", "--zip-file", package(1), "--tags", "team=core,tier=gold",
        )
        arn = created["FunctionArn"]
        assert created["Version"] == "$LATEST"
        assert aws("publish-version", "--function-name", name, "--description", "first")["Version"] == "1"
        updated = aws("update-function-code", "--function-name", name, "--zip-file", package(2), "--publish")
        assert updated["Version"] == "2"
        assert aws("publish-version", "--function-name", name)["Version"] == "2"
        listed = aws("list-versions-by-function", "--function-name", name)
        assert [v["Version"] for v in listed["Versions"]] == ["$LATEST", "1", "2"]
        assert listed["Versions"][1]["Description"] == "first"

        alias = aws("create-alias", "--function-name", name, "--name", "live", "--function-version", "1")
        assert alias["AliasArn"] == f"{arn}:live" and alias["FunctionVersion"] == "1"
        assert invoke("--function-name", name, "--qualifier", "live") == ("1", 1)
        assert invoke("--function-name", name, "--qualifier", "2") == ("2", 2)
        assert invoke("--function-name", name) == ("$LATEST", 2)
        assert invoke("--function-name", f"{arn}:1") == ("1", 1)
        assert invoke("--function-name", f"{arn}:live") == ("1", 1)

        moved = aws(
            "update-alias", "--function-name", name, "--name", "live", "--function-version", "2",
            "--routing-config", '{"AdditionalVersionWeights": {"1": 0.25}}',
        )
        assert moved["FunctionVersion"] == "2"
        assert moved["RoutingConfig"]["AdditionalVersionWeights"] == {"1": 0.25}
        got = aws("get-alias", "--function-name", name, "--name", "live")
        assert got["RoutingConfig"]["AdditionalVersionWeights"] == {"1": 0.25}
        aliases = aws("list-aliases", "--function-name", name, "--function-version", "2")["Aliases"]
        assert [a["Name"] for a in aliases] == ["live"]
        # Roll back: version 1 only, the split cleared.
        back = aws(
            "update-alias", "--function-name", name, "--name", "live", "--function-version", "1",
            "--routing-config", '{"AdditionalVersionWeights": {}}',
        )
        assert back["FunctionVersion"] == "1"
        assert not (back.get("RoutingConfig") or {}).get("AdditionalVersionWeights")
        assert invoke("--function-name", name, "--qualifier", "live") == ("1", 1)

        err = aws.fails("delete-function", "--function-name", name, "--qualifier", "1")
        assert "ResourceConflictException" in err, err
        aws("delete-function", "--function-name", name, "--qualifier", "2")
        err = aws.fails("get-function", "--function-name", name, "--qualifier", "2")
        assert "ResourceNotFoundException" in err, err
        err = aws.fails("delete-function", "--function-name", name, "--qualifier", "$LATEST")
        assert "InvalidParameterValueException" in err, err

        assert aws("list-tags", "--resource", arn)["Tags"] == {"team": "core", "tier": "gold"}
        aws("tag-resource", "--resource", arn, "--tags", "owner=ops")
        aws("untag-resource", "--resource", arn, "--tag-keys", "tier")
        assert aws("get-function", "--function-name", name)["Tags"] == {"team": "core", "owner": "ops"}

        aws("delete-alias", "--function-name", name, "--name", "live")
        err = aws.fails("get-alias", "--function-name", name, "--name", "live")
        assert "ResourceNotFoundException" in err, err
        aws("create-alias", "--function-name", name, "--name", "again", "--function-version", "1")
        aws("delete-function", "--function-name", name)
        for args in (("get-function", "--function-name", name, "--qualifier", "1"),
                     ("get-alias", "--function-name", name, "--name", "again"),
                     ("list-versions-by-function", "--function-name", name)):
            err = aws.fails(*args)
            assert "ResourceNotFoundException" in err, (args, err)
    finally:
        try:
            lam.delete_function(FunctionName=name)
        except ClientError:
            pass


# --- 2. weighted routing -----------------------------------------------------------


def invoke_many(lam, name: str, qualifier: str, n: int, threads: int = 8) -> list[tuple[str, int]]:
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(lambda _: run(lam, name, qualifier), range(n)))


def test_weighted_routing_splits_traffic_per_invocation(lam, functions, version_code):
    name = publish_generations(lam, functions, version_code, 2)
    alias = lam.create_alias(
        FunctionName=name, Name="canary", FunctionVersion="1",
        RoutingConfig={"AdditionalVersionWeights": {"2": 0.3}},
    )
    assert alias["RoutingConfig"] == {"AdditionalVersionWeights": {"2": 0.3}}
    assert lam.get_alias(FunctionName=name, Name="canary")["RoutingConfig"] == {"AdditionalVersionWeights": {"2": 0.3}}

    n, weight = 2000, 0.3
    results = invoke_many(lam, name, "canary", n)
    mismatched = [(executed, v) for executed, v in results if executed != str(v)]
    assert not mismatched, f"{len(mismatched)} responses ran another version than reported: {mismatched[:5]}"
    assert {executed for executed, _ in results} <= {"1", "2"}
    share = sum(1 for executed, _ in results if executed == "2") / n
    # Each invocation draws version 2 with probability 0.3, independently, so the
    # count is Binomial(2000, 0.3): standard error sqrt(0.3*0.7/2000) = 0.0102.
    # 4.5 standard errors (+-0.046) is exceeded by chance with probability
    # below 1e-5, yet a split that ignores the weight (0.5, 0 or 1), or honours
    # it for the wrong version (0.7), is far outside it.
    bound = 4.5 * math.sqrt(weight * (1 - weight) / n)
    assert abs(share - weight) <= bound, f"version 2 got {share:.4f} of {n} invocations; expected {weight} +- {bound:.4f}"

    # The extremes are exact.
    lam.update_alias(FunctionName=name, Name="canary", RoutingConfig={"AdditionalVersionWeights": {"2": 0.0}})
    assert {r for r in invoke_many(lam, name, "canary", 200)} == {("1", 1)}
    lam.update_alias(FunctionName=name, Name="canary", RoutingConfig={"AdditionalVersionWeights": {"2": 1.0}})
    assert {r for r in invoke_many(lam, name, "canary", 200)} == {("2", 2)}
    # An empty map clears the split.
    cleared = lam.update_alias(FunctionName=name, Name="canary", RoutingConfig={"AdditionalVersionWeights": {}})
    assert not (cleared.get("RoutingConfig") or {}).get("AdditionalVersionWeights"), cleared
    assert not (lam.get_alias(FunctionName=name, Name="canary").get("RoutingConfig") or {}).get("AdditionalVersionWeights")
    assert {r for r in invoke_many(lam, name, "canary", 200)} == {("1", 1)}
    # UpdateAlias without RoutingConfig keeps the one it has.
    lam.update_alias(FunctionName=name, Name="canary", RoutingConfig={"AdditionalVersionWeights": {"2": 0.5}})
    kept = lam.update_alias(FunctionName=name, Name="canary", Description="still split")
    assert kept["RoutingConfig"] == {"AdditionalVersionWeights": {"2": 0.5}}


# --- 3 and 5. routing changes under load ----------------------------------------------


class Load:
    """Threads invoking `qualifier`s in a loop, recording (start, end, executed, v)."""

    def __init__(self, lam, name: str, qualifiers: list[str]):
        self.lam, self.name = lam, name
        self.stop = threading.Event()
        self.records: list[list[tuple[float, float, str, int]]] = [[] for _ in qualifiers]
        self.errors: list[BaseException] = []
        self.threads = [
            threading.Thread(target=self.loop, args=(q, self.records[i]), daemon=True)
            for i, q in enumerate(qualifiers)
        ]
        self.qualifiers = qualifiers

    def loop(self, qualifier: str, out: list) -> None:
        try:
            while not self.stop.is_set():
                start = time.monotonic()
                executed, v = run(self.lam, self.name, qualifier)
                out.append((start, time.monotonic(), executed, v))
        except BaseException as e:  # reported by the test, not lost in the thread
            self.errors.append(e)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=60)
        assert not self.errors, f"invocations failed under load: {self.errors[:3]!r}"


def test_rollback_takes_effect_when_update_alias_returns(lam, functions, version_code):
    name = publish_generations(lam, functions, version_code, 2)
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="2")
    with Load(lam, name, ["live"] * 6) as load:
        time.sleep(0.4)
        sent = time.monotonic()
        lam.update_alias(FunctionName=name, Name="live", FunctionVersion="1")
        acked = time.monotonic()
        time.sleep(0.6)
    records = [r for thread in load.records for r in thread]
    assert all(executed == str(v) for _, _, executed, v in records), "a body disagrees with its ExecutedVersion"
    before = [r for r in records if r[1] < sent]
    after = [r for r in records if r[0] > acked]
    assert len(before) >= 10 and len(after) >= 30, (len(before), len(after))
    assert {r[2] for r in before} == {"2"}
    late = [r for r in after if r[2] != "1"]
    assert not late, f"{len(late)} invocations started after the rollback was acknowledged ran version 2"
    # And sequentially, once the load is gone.
    assert set(invoke_many(lam, name, "live", 100, threads=4)) == {("1", 1)}


def test_updates_and_publishes_during_load(lam, functions, version_code):
    name = publish_generations(lam, functions, version_code, 1)
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    qualifiers = ["$LATEST"] * 3 + ["live"] * 3 + ["1"]
    code_acked: dict[int, float] = {1: 0.0}
    alias_acked: dict[int, float] = {1: 0.0}
    generations = 6
    with Load(lam, name, qualifiers) as load:
        time.sleep(0.2)
        for g in range(2, generations + 1):
            lam.update_function_code(FunctionName=name, ZipFile=version_code(g))
            code_acked[g] = time.monotonic()
            time.sleep(0.1)
            assert lam.publish_version(FunctionName=name)["Version"] == str(g)
            lam.update_alias(FunctionName=name, Name="live", FunctionVersion=str(g))
            alias_acked[g] = time.monotonic()
            time.sleep(0.15)
        time.sleep(0.2)

    def floor(acked: dict[int, float], start: float) -> int:
        """The newest generation acknowledged before `start`."""
        return max(g for g, t in acked.items() if t < start)

    for qualifier, records in zip(qualifiers, load.records):
        assert len(records) >= 20, (qualifier, len(records))
        previous = 0
        for start, _, executed, v in records:
            if qualifier == "$LATEST":
                assert executed == "$LATEST", executed
                assert v >= previous, f"$LATEST went back from generation {previous} to {v}"
                assert v >= floor(code_acked, start), (
                    f"an invocation of $LATEST started after generation {floor(code_acked, start)} "
                    f"was acknowledged ran generation {v}"
                )
            else:
                assert executed == str(v), f"{qualifier}: ExecutedVersion {executed} but version {v} ran"
                if qualifier == "1":
                    assert v == 1
                else:
                    assert v >= previous, f"alias went back from version {previous} to {v}"
                    assert v >= floor(alias_acked, start), (
                        f"an invocation of the alias started after it moved to {floor(alias_acked, start)} ran {v}"
                    )
            previous = v
    # Every published generation was seen through $LATEST or the alias.
    seen = {v for records in load.records for _, _, _, v in records}
    assert seen == set(range(1, generations + 1)), seen
    assert versions_of(lam, name) == ["$LATEST"] + [str(g) for g in range(1, generations + 1)]


# --- 4. RevisionId races ----------------------------------------------------------------


def race(threads: int, read, write) -> list[tuple[int, str, object]]:
    """Each thread reads a RevisionId, waits for all the others to have read
    theirs, then writes with it: [(thread, revision read, response or error)]."""
    barrier = threading.Barrier(threads)

    def one(i: int):
        rev = read()
        barrier.wait(timeout=30)
        try:
            return i, rev, write(i, rev)
        except ClientError as e:
            return i, rev, e

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(one, range(threads)))


def check_one_winner(results) -> tuple[int, dict]:
    revisions = {rev for _, rev, _ in results}
    assert len(revisions) == 1, f"the threads read different revisions before anyone wrote: {revisions}"
    winners = [(i, r) for i, _, r in results if not isinstance(r, ClientError)]
    losers = [r for _, _, r in results if isinstance(r, ClientError)]
    assert len(winners) == 1, f"{len(winners)} writes succeeded with the same RevisionId"
    for e in losers:
        assert error_code(e) == ("PreconditionFailedException", 412), e.response
    return winners[0]


def check_chain(initial: str, results) -> dict:
    """Free-running read-then-write: the successful writes form one chain of
    revisions from `initial`, at most one per revision read."""
    wins = {}
    for rev, r in results:
        if isinstance(r, ClientError):
            assert error_code(r) == ("PreconditionFailedException", 412), r.response
        else:
            assert rev not in wins, f"two writes succeeded from revision {rev}"
            wins[rev] = r
    chain, rev = [], initial
    while rev in wins:
        chain.append(wins[rev])
        rev = wins[rev]["RevisionId"]
    assert len(chain) == len(wins), "a successful write started from a revision outside the chain"
    return chain[-1]


def test_racing_configuration_updates_have_one_winner_per_revision(lam, functions, version_code):
    name = functions.create(version_code(1))["FunctionName"]
    for round_ in range(4):
        results = race(
            8,
            lambda: lam.get_function_configuration(FunctionName=name)["RevisionId"],
            lambda i, rev: lam.update_function_configuration(
                FunctionName=name, Description=f"round {round_} thread {i}", RevisionId=rev
            ),
        )
        i, won = check_one_winner(results)
        assert won["Description"] == f"round {round_} thread {i}"
        final = lam.get_function_configuration(FunctionName=name)
        assert final["Description"] == won["Description"]
        assert final["RevisionId"] == won["RevisionId"]

    # Free running: each thread reads and writes in a loop.
    initial = lam.get_function_configuration(FunctionName=name)["RevisionId"]
    lock, outcomes = threading.Lock(), []

    def worker(i: int):
        for k in range(6):
            rev = lam.get_function_configuration(FunctionName=name)["RevisionId"]
            try:
                r = lam.update_function_configuration(FunctionName=name, Description=f"free {i}.{k}", RevisionId=rev)
            except ClientError as e:
                r = e
            with lock:
                outcomes.append((rev, r))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(worker, range(8)))
    last = check_chain(initial, outcomes)
    final = lam.get_function_configuration(FunctionName=name)
    assert (final["Description"], final["RevisionId"]) == (last["Description"], last["RevisionId"])

    # Code updates are guarded the same way.
    results = race(
        6,
        lambda: lam.get_function_configuration(FunctionName=name)["RevisionId"],
        lambda i, rev: lam.update_function_code(FunctionName=name, ZipFile=version_code(10 + i), RevisionId=rev),
    )
    i, won = check_one_winner(results)
    assert won["CodeSha256"] == code_sha256(version_code(10 + i))
    assert run(lam, name) == ("$LATEST", 10 + i)


def test_updates_without_revision_id_are_never_lost(lam, functions, version_code):
    """Concurrent partial updates of different fields, without RevisionId: all
    are applied, none overwrites another's field with what it read before."""
    name = functions.create(version_code(1))["FunctionName"]
    for round_ in range(3):
        updates = [
            {"Description": f"round {round_}"},
            {"Timeout": 10 + round_},
            {"MemorySize": 256 + 64 * round_},
            {"Environment": {"Variables": {"ROUND": str(round_)}}},
            {"EphemeralStorage": {"Size": 1024 + round_}},
            {"Role": f"arn:aws:iam::123456789012:role/round-{round_}"},
        ]
        barrier = threading.Barrier(len(updates))

        def apply(update):
            barrier.wait(timeout=30)
            return lam.update_function_configuration(FunctionName=name, **update)

        with ThreadPoolExecutor(len(updates)) as pool:
            answers = list(pool.map(apply, updates))
        assert len({a["RevisionId"] for a in answers}) == len(updates), "two updates answered the same revision"
        final = lam.get_function_configuration(FunctionName=name)
        for update in updates:
            for key, value in update.items():
                assert final[key] == value, f"round {round_}: the update of {key} was lost: {final[key]!r}"


def test_racing_alias_updates_have_one_winner_per_revision(lam, functions, version_code):
    name = publish_generations(lam, functions, version_code, 2)
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    for round_ in range(4):
        results = race(
            8,
            lambda: lam.get_alias(FunctionName=name, Name="live")["RevisionId"],
            lambda i, rev: lam.update_alias(
                FunctionName=name, Name="live", FunctionVersion=str(1 + i % 2),
                Description=f"round {round_} thread {i}", RevisionId=rev,
            ),
        )
        i, won = check_one_winner(results)
        final = lam.get_alias(FunctionName=name, Name="live")
        assert final["Description"] == f"round {round_} thread {i}" == won["Description"]
        assert final["RevisionId"] == won["RevisionId"]
        assert final["FunctionVersion"] == str(1 + i % 2)
        assert run(lam, name, "live") == (final["FunctionVersion"], 1 + i % 2)

    initial = lam.get_alias(FunctionName=name, Name="live")["RevisionId"]
    lock, outcomes = threading.Lock(), []

    def worker(i: int):
        for k in range(6):
            rev = lam.get_alias(FunctionName=name, Name="live")["RevisionId"]
            try:
                r = lam.update_alias(FunctionName=name, Name="live", Description=f"free {i}.{k}", RevisionId=rev)
            except ClientError as e:
                r = e
            with lock:
                outcomes.append((rev, r))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(worker, range(8)))
    last = check_chain(initial, outcomes)
    final = lam.get_alias(FunctionName=name, Name="live")
    assert (final["Description"], final["RevisionId"]) == (last["Description"], last["RevisionId"])


# --- 6. waiters ----------------------------------------------------------------------------


def test_waiters(lam, functions, version_code):
    created = functions.create(version_code(1))
    name = created["FunctionName"]
    assert created["State"] == "Active"
    lam.get_waiter("function_exists").wait(FunctionName=name, WaiterConfig=WAITER)
    lam.get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig=WAITER)
    lam.get_waiter("function_active").wait(FunctionName=name, WaiterConfig=WAITER)

    updated = lam.update_function_configuration(FunctionName=name, Description="waited for")
    assert updated["LastUpdateStatus"] == "Successful"
    lam.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig=WAITER)
    lam.get_waiter("function_updated").wait(FunctionName=name, WaiterConfig=WAITER)
    lam.update_function_code(FunctionName=name, ZipFile=version_code(2))
    lam.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig=WAITER)

    published = lam.publish_version(FunctionName=name)
    lam.get_waiter("published_version_active").wait(
        FunctionName=name, Qualifier=published["Version"], WaiterConfig=WAITER
    )
    conf = lam.get_function_configuration(FunctionName=name, Qualifier=published["Version"])
    assert (conf["State"], conf["LastUpdateStatus"]) == ("Active", "Successful")
    # The waiters do fail for what is not there.
    with pytest.raises(WaiterError):
        lam.get_waiter("published_version_active").wait(
            FunctionName=name, Qualifier="99", WaiterConfig={"Delay": 1, "MaxAttempts": 1}
        )


# --- tags ------------------------------------------------------------------------------------


def test_tags(lam, functions, version_code):
    created = functions.create(version_code(1), Tags={"team": "core", "env": "dev"})
    name, arn = created["FunctionName"], created["FunctionArn"]
    assert lam.list_tags(Resource=arn)["Tags"] == {"team": "core", "env": "dev"}
    assert lam.get_function(FunctionName=name)["Tags"] == {"team": "core", "env": "dev"}

    lam.tag_resource(Resource=arn, Tags={"env": "prod", "cost": "42"})
    assert lam.list_tags(Resource=arn)["Tags"] == {"team": "core", "env": "prod", "cost": "42"}
    lam.untag_resource(Resource=arn, TagKeys=["team", "absent"])
    assert lam.list_tags(Resource=arn)["Tags"] == {"env": "prod", "cost": "42"}
    assert lam.get_function(FunctionName=name)["Tags"] == {"env": "prod", "cost": "42"}
    # Tags belong to the function, not to a configuration change.
    lam.update_function_configuration(FunctionName=name, Description="tags stay")
    lam.publish_version(FunctionName=name)
    assert lam.list_tags(Resource=arn)["Tags"] == {"env": "prod", "cost": "42"}

    missing = arn.rsplit(":", 1)[0] + ":" + name + "-missing"
    with pytest.raises(ClientError) as e:
        lam.list_tags(Resource=missing)
    assert_client_error(e, "ResourceNotFoundException", 404)
    with pytest.raises(ClientError) as e:
        lam.tag_resource(Resource=missing, Tags={"a": "b"})
    assert_client_error(e, "ResourceNotFoundException", 404)

    # A function made again under the name does not inherit the old tags.
    lam.delete_function(FunctionName=name)
    again = functions.create(version_code(1), name=name)
    assert lam.list_tags(Resource=again["FunctionArn"])["Tags"] == {}


# --- 7. restart ---------------------------------------------------------------------------------


@pytest.fixture
def own_server(tmp_path):
    servers: list[NimbusServer] = []

    def start() -> NimbusServer:
        port = servers[-1].port if servers else None
        srv = NimbusServer(tmp_path / "data", tmp_path / "server.log", port=port)
        servers.append(srv)
        try:
            return srv.start()
        except RuntimeError as e:
            pytest.fail(str(e), pytrace=False)

    yield start
    for srv in servers:
        srv.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_versions_aliases_and_tags_survive_a_restart(own_server, version_code, sig):
    srv = own_server()
    lam = lambda_client(srv.url)
    name = "kept-versions"
    arn = lam.create_function(
        FunctionName=name, Runtime="wasm", Role=ROLE, Code={"ZipFile": version_code(1)}, Tags={"team": "core"},
    )["FunctionArn"]
    lam.publish_version(FunctionName=name, Description="one")
    lam.update_function_code(FunctionName=name, ZipFile=version_code(2))
    lam.update_function_configuration(FunctionName=name, Environment={"Variables": {"K": "2"}})
    lam.publish_version(FunctionName=name)
    lam.update_function_code(FunctionName=name, ZipFile=version_code(3))
    assert lam.publish_version(FunctionName=name)["Version"] == "3"
    lam.delete_function(FunctionName=name, Qualifier="3")
    lam.create_alias(
        FunctionName=name, Name="live", FunctionVersion="1", Description="split",
        RoutingConfig={"AdditionalVersionWeights": {"2": 0.25}},
    )
    lam.create_alias(FunctionName=name, Name="stable", FunctionVersion="2")
    lam.tag_resource(Resource=arn, Tags={"env": "prod", "gone": "soon"})
    lam.untag_resource(Resource=arn, TagKeys=["gone"])

    versions = strip(lam.list_versions_by_function(FunctionName=name))
    aliases = {a["Name"]: a for a in lam.list_aliases(FunctionName=name)["Aliases"]}
    latest = strip(lam.get_function_configuration(FunctionName=name))
    assert [v["Version"] for v in versions["Versions"]] == ["$LATEST", "1", "2"]
    assert set(aliases) == {"live", "stable"}

    srv.stop(sig)
    srv = own_server()
    lam = lambda_client(srv.url)

    assert strip(lam.list_versions_by_function(FunctionName=name)) == versions
    assert {a["Name"]: a for a in lam.list_aliases(FunctionName=name)["Aliases"]} == aliases
    assert strip(lam.get_alias(FunctionName=name, Name="live")) == aliases["live"]
    assert aliases["live"]["RoutingConfig"] == {"AdditionalVersionWeights": {"2": 0.25}}
    assert strip(lam.get_function_configuration(FunctionName=name)) == latest
    assert lam.list_tags(Resource=arn)["Tags"] == {"team": "core", "env": "prod"}
    assert lam.get_function(FunctionName=name)["Tags"] == {"team": "core", "env": "prod"}

    assert run(lam, name, "1") == ("1", 1)
    assert run(lam, name, "2") == ("2", 2)
    assert run(lam, name, "stable") == ("2", 2)
    assert run(lam, name) == ("$LATEST", 3)
    with pytest.raises(ClientError) as e:
        lam.invoke(FunctionName=name, Qualifier="3", Payload=b"{}")
    assert_client_error(e, "ResourceNotFoundException", 404)
    # The split still routes: 400 draws at 0.25 give 0.25 +- 4.5 * 0.0217.
    results = invoke_many(lam, name, "live", 400)
    assert all(executed == str(v) for executed, v in results)
    share = sum(1 for executed, _ in results if executed == "2") / len(results)
    assert abs(share - 0.25) <= 4.5 * math.sqrt(0.25 * 0.75 / 400), share

    # Revisions carry over: the one read before the restart still guards the alias.
    moved = lam.update_alias(FunctionName=name, Name="stable", FunctionVersion="1", RevisionId=aliases["stable"]["RevisionId"])
    with pytest.raises(ClientError) as e:
        lam.update_alias(FunctionName=name, Name="stable", FunctionVersion="2", RevisionId=aliases["stable"]["RevisionId"])
    assert_client_error(e, "PreconditionFailedException", 412)
    assert run(lam, name, "stable") == ("1", 1)
    assert moved["FunctionVersion"] == "1"
    # The version counter carries over: 3 was deleted and is not handed out again.
    lam.update_function_code(FunctionName=name, ZipFile=version_code(4))
    assert lam.publish_version(FunctionName=name)["Version"] == "4"
    assert run(lam, name, "4") == ("4", 4)
    srv.stop()


# --- 8. bad input --------------------------------------------------------------------------------


def test_bad_version_and_alias_input(lam, lam_unchecked, functions, version_code, canary):
    name = publish_generations(lam, functions, version_code, 2)
    conf = lam.get_function_configuration(FunctionName=name)

    def refused(call, code: str, status: int) -> str:
        with pytest.raises(ClientError) as e:
            call()
        return assert_client_error(e, code, status)

    # Preconditions on publish and update.
    lam.update_function_code(FunctionName=name, ZipFile=version_code(3))
    refused(lambda: lam.publish_version(FunctionName=name, CodeSha256=code_sha256(version_code(2))),
            "PreconditionFailedException", 412)
    refused(lambda: lam.publish_version(FunctionName=name, RevisionId=conf["RevisionId"]),
            "PreconditionFailedException", 412)
    assert versions_of(lam, name) == ["$LATEST", "1", "2"]
    assert lam.publish_version(FunctionName=name, CodeSha256=code_sha256(version_code(3)))["Version"] == "3"
    refused(lambda: lam.update_function_configuration(FunctionName=name, Description="x", RevisionId=conf["RevisionId"]),
            "PreconditionFailedException", 412)
    refused(lambda: lam.update_function_code(FunctionName=name, ZipFile=version_code(4), RevisionId=conf["RevisionId"]),
            "PreconditionFailedException", 412)
    assert run(lam, name) == ("$LATEST", 3)

    # Aliases to what does not exist, and out-of-range routing.
    refused(lambda: lam.create_alias(FunctionName=name, Name="ghost", FunctionVersion="9"), "ResourceNotFoundException", 404)
    refused(lambda: lam.create_alias(FunctionName=name + "-missing", Name="a", FunctionVersion="1"),
            "ResourceNotFoundException", 404)
    refused(lambda: lam.create_alias(FunctionName=name, Name="ghost", FunctionVersion="1",
                                     RoutingConfig={"AdditionalVersionWeights": {"9": 0.5}}),
            "ResourceNotFoundException", 404)
    refused(lambda: lam_unchecked.create_alias(FunctionName=name, Name="heavy", FunctionVersion="1",
                                               RoutingConfig={"AdditionalVersionWeights": {"2": 1.5}}),
            "ValidationException", 400)
    refused(lambda: lam_unchecked.create_alias(FunctionName=name, Name="negative", FunctionVersion="1",
                                               RoutingConfig={"AdditionalVersionWeights": {"2": -0.1}}),
            "ValidationException", 400)
    refused(lambda: lam.create_alias(FunctionName=name, Name="three", FunctionVersion="1",
                                     RoutingConfig={"AdditionalVersionWeights": {"2": 0.2, "3": 0.2}}),
            "InvalidParameterValueException", 400)
    refused(lambda: lam.create_alias(FunctionName=name, Name="latest-split", FunctionVersion="$LATEST",
                                     RoutingConfig={"AdditionalVersionWeights": {"2": 0.2}}),
            "InvalidParameterValueException", 400)
    refused(lambda: lam.create_alias(FunctionName=name, Name="123", FunctionVersion="1"), "ValidationException", 400)
    assert lam.list_aliases(FunctionName=name)["Aliases"] == []

    live = lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    refused(lambda: lam.create_alias(FunctionName=name, Name="live", FunctionVersion="2"), "ResourceConflictException", 409)
    refused(lambda: lam.update_alias(FunctionName=name, Name="live", FunctionVersion="9"), "ResourceNotFoundException", 404)
    refused(lambda: lam_unchecked.update_alias(FunctionName=name, Name="live",
                                               RoutingConfig={"AdditionalVersionWeights": {"2": 2.0}}),
            "ValidationException", 400)
    refused(lambda: lam.update_alias(FunctionName=name, Name="missing", FunctionVersion="1"), "ResourceNotFoundException", 404)
    lam.update_alias(FunctionName=name, Name="live", Description="moved on")
    refused(lambda: lam.update_alias(FunctionName=name, Name="live", FunctionVersion="2", RevisionId=live["RevisionId"]),
            "PreconditionFailedException", 412)
    # None of the refusals changed the alias.
    got = lam.get_alias(FunctionName=name, Name="live")
    assert got["FunctionVersion"] == "1" and not (got.get("RoutingConfig") or {}).get("AdditionalVersionWeights")
    assert run(lam, name, "live") == ("1", 1)

    # Qualifiers that name nothing.
    for q in ("9", "nosuchalias"):
        refused(lambda: lam.invoke(FunctionName=name, Qualifier=q, Payload=b"{}"), "ResourceNotFoundException", 404)
        refused(lambda: lam.get_function(FunctionName=name, Qualifier=q), "ResourceNotFoundException", 404)
        refused(lambda: lam.get_function_configuration(FunctionName=name, Qualifier=q), "ResourceNotFoundException", 404)
    refused(lambda: lam.invoke(FunctionName=f"{conf['FunctionArn']}:9", Payload=b"{}"), "ResourceNotFoundException", 404)
    refused(lambda: lam.delete_function(FunctionName=name, Qualifier="$LATEST"), "InvalidParameterValueException", 400)
    refused(lambda: lam.delete_function(FunctionName=name, Qualifier="1"), "ResourceConflictException", 409)
    refused(lambda: lam.publish_version(FunctionName=name + "-missing"), "ResourceNotFoundException", 404)
    refused(lambda: lam.list_versions_by_function(FunctionName=name + "-missing"), "ResourceNotFoundException", 404)

    assert versions_of(lam, name) == ["$LATEST", "1", "2", "3"]
    assert run(lam, name, "1") == ("1", 1)
    assert_intact(lam, canary)
