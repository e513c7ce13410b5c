"""SigV4: every request's signature is recomputed and checked, not just its key id."""

from __future__ import annotations

import datetime
from unittest import mock

import pytest
from botocore.exceptions import ClientError

from support import (
    ROOT_ACCESS_KEY_ID,
    ROOT_SECRET_ACCESS_KEY,
    assert_client_error,
    assert_intact,
    lambda_client,
    send_raw,
)

WRONG_SECRET = "x" * 40
UNKNOWN_KEY = "AKIANIMBUSUNKNOWN999"


def calls(lam, name):
    return {
        "ListFunctions": lambda: lam.list_functions(),
        "GetFunction": lambda: lam.get_function(FunctionName=name),
        "Invoke": lambda: lam.invoke(FunctionName=name, Payload=b"{}"),
        "UpdateFunctionConfiguration": lambda: lam.update_function_configuration(FunctionName=name, Timeout=9),
        "DeleteFunction": lambda: lam.delete_function(FunctionName=name),
    }


@pytest.mark.parametrize("op", ["ListFunctions", "GetFunction", "Invoke", "UpdateFunctionConfiguration", "DeleteFunction"])
def test_wrong_secret_is_invalid_signature(server, lam, canary, op):
    bad = lambda_client(server.url, ROOT_ACCESS_KEY_ID, WRONG_SECRET)
    with pytest.raises(ClientError) as e:
        calls(bad, canary["name"])[op]()
    assert_client_error(e, "InvalidSignatureException", 403)
    assert_intact(lam, canary)


@pytest.mark.parametrize("op", ["ListFunctions", "GetFunction", "Invoke", "UpdateFunctionConfiguration", "DeleteFunction"])
def test_unknown_key_is_unrecognized_client(server, lam, canary, op):
    bad = lambda_client(server.url, UNKNOWN_KEY, ROOT_SECRET_ACCESS_KEY)
    with pytest.raises(ClientError) as e:
        calls(bad, canary["name"])[op]()
    assert_client_error(e, "UnrecognizedClientException", 403)
    assert_intact(lam, canary)


def test_body_changed_after_signing_is_invalid_signature(raw, lam, canary):
    def tamper(body, headers):
        assert body == b'{"Timeout": 9}'
        return b'{"Timeout": 8}', headers

    resp = raw("PUT", f"/2015-03-31/functions/{canary['name']}/configuration", b'{"Timeout": 9}', tamper=tamper)
    assert resp.status == 403, resp
    assert resp.error_type == "InvalidSignatureException", resp
    assert_intact(lam, canary)


def test_path_changed_after_signing_is_invalid_signature(server, raw, lam, canary):
    # Signed for one function, sent to another: the canonical path differs.
    signed = {}

    def capture(body, headers):
        signed["headers"] = headers
        return body, headers

    raw("GET", "/2015-03-31/functions/some-other-function/configuration", tamper=capture)
    resp = send_raw(
        "GET", f"{server.url}/2015-03-31/functions/{canary['name']}/configuration", None, signed["headers"]
    )
    assert resp.status == 403, resp
    assert resp.error_type == "InvalidSignatureException", resp


def test_unsigned_request_is_refused(server, lam, canary):
    resp = send_raw("GET", f"{server.url}/2015-03-31/functions/{canary['name']}/configuration", None, {})
    assert resp.status == 403, resp
    assert resp.error_type, "an unsigned request got no x-amzn-ErrorType"
    resp = send_raw("POST", f"{server.url}/2015-03-31/functions/{canary['name']}/invocations", b"{}", {})
    assert resp.status == 403, resp
    assert_intact(lam, canary)


def skewed_now(minutes: float):
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    return lambda *args, **kwargs: now + datetime.timedelta(minutes=minutes)


@pytest.mark.parametrize("minutes", [-10, 10])
def test_signature_outside_the_clock_skew_is_refused(raw, canary, minutes):
    with mock.patch("botocore.auth.get_current_datetime", skewed_now(minutes)):
        resp = raw("GET", f"/2015-03-31/functions/{canary['name']}/configuration")
    assert resp.status == 403, resp
    assert resp.error_type == "InvalidSignatureException", resp


@pytest.mark.parametrize("minutes", [-3, 3])
def test_signature_within_the_clock_skew_is_accepted(raw, canary, minutes):
    with mock.patch("botocore.auth.get_current_datetime", skewed_now(minutes)):
        resp = raw("GET", f"/2015-03-31/functions/{canary['name']}/configuration")
    assert resp.status == 200, resp
    assert resp.json()["FunctionName"] == canary["name"]


def test_signature_for_another_region_is_refused(raw, canary):
    resp = raw("GET", f"/2015-03-31/functions/{canary['name']}/configuration", region="eu-west-1")
    assert resp.status == 403, resp
    assert resp.error_type == "InvalidSignatureException", resp
