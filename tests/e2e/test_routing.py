"""The router against botocore's Lambda model: every operation's method and
path reaches a handler, even those not implemented yet (which answer with an
AWS error of their own, never UnknownOperationException)."""

from __future__ import annotations

import re
from urllib.parse import quote

import botocore.loaders
import pytest

ACCOUNT = "123456789012"
ARN_FN = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:route-probe"

# A dummy value for each label the model's request URIs use.
LABEL_VALUES = {
    "FunctionName": "route-probe",
    "Name": "probe-alias",
    "StatementId": "probe-statement",
    "LayerName": "probe-layer",
    "VersionNumber": "1",
    "UUID": "6f1f5c58-2b8d-4d4e-9f3a-7f3b2f6a1c11",
    "Resource": ARN_FN,
    "CodeSigningConfigArn": f"arn:aws:lambda:us-east-1:{ACCOUNT}:code-signing-config:csc-0123456789abcdef0",
    "DurableExecutionArn": f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:route-probe:$LATEST/durable-execution/probe",
    "CallbackId": "probe-callback",
    "CapacityProviderName": "probe-capacity",
}

AUTH_ERRORS = {"UnknownOperationException", "InvalidSignatureException", "UnrecognizedClientException"}


def lambda_model() -> dict:
    return botocore.loaders.Loader().load_service_model("lambda", "service-2")


def probe_requests() -> list[tuple[str, str, str]]:
    """(operation, method, path with query) for every operation in the model."""
    model = lambda_model()
    shapes = model["shapes"]
    out = []
    for name, op in sorted(model["operations"].items()):
        method = op["http"]["method"]
        uri = op["http"]["requestUri"]
        path, _, fixed_query = uri.partition("?")

        def fill(m: re.Match) -> str:
            label = m.group(1).rstrip("+")
            assert label in LABEL_VALUES, f"{name}: no dummy value for label {label}"
            return quote(LABEL_VALUES[label], safe="")

        path = re.sub(r"\{([^}]+)\}", fill, path)
        query = [fixed_query] if fixed_query else []
        # Fill the members the model requires in the query string.
        input_shape = shapes.get(op.get("input", {}).get("shape", ""), {})
        for member_name in input_shape.get("required", []):
            member = input_shape["members"][member_name]
            if member.get("location") == "querystring":
                query.append(f"{member['locationName']}={quote(query_value(member_name), safe='')}")
        out.append((name, method, path + ("?" + "&".join(query) if query else "")))
    return out


def query_value(member: str) -> str:
    return {"Arn": f"arn:aws:lambda:us-east-1:{ACCOUNT}:layer:probe-layer:1", "Qualifier": "1"}.get(member, "probe")


PROBES = probe_requests()


def test_model_covers_the_families_the_brief_names():
    prefixes = {path.split("/")[1] for _, _, path in PROBES}
    for prefix in ("2015-03-31", "2016-08-19", "2017-10-31", "2019-09-25", "2019-09-30", "2021-10-31"):
        assert prefix in prefixes
    assert any("?List=ALL" in path for _, _, path in PROBES)


@pytest.mark.parametrize("op,method,path", PROBES, ids=[p[0] for p in PROBES])
def test_every_model_operation_is_routed(raw, op, method, path):
    body = b"{}" if method in ("POST", "PUT") else None
    resp = raw(method, path, body)
    if resp.status >= 400:
        assert resp.error_type, f"{op}: {method} {path} got {resp.status} without x-amzn-ErrorType: {resp.body[:200]!r}"
        assert resp.error_type not in AUTH_ERRORS, f"{op}: {method} {path} -> {resp!r}"
        assert resp.status != 405, f"{op}: {method} {path} -> {resp!r}"


@pytest.mark.parametrize(
    "method,path",
    [
        ("GET", "/2015-03-31/no-such-thing"),
        ("GET", "/1999-01-01/functions"),
        ("PATCH", "/2015-03-31/functions"),
        ("POST", "/2015-03-31/functions/route-probe/no-such-thing"),
    ],
)
def test_unknown_route_is_unknown_operation(raw, method, path):
    resp = raw(method, path, b"{}" if method != "GET" else None)
    # A known path with an unknown method may say 405, but in AWS's format.
    assert resp.status == 404 or (resp.status == 405 and method == "PATCH"), resp
    assert resp.error_type == "UnknownOperationException", resp
    assert resp.json().get("message"), resp
