"""Reserved concurrency and the account's limit, as Lambda has them:
PutFunctionConcurrency / GetFunctionConcurrency / DeleteFunctionConcurrency,
GetAccountSettings, and the 429 TooManyRequestsException (with Lambda's
Reason) that an invocation over its limit gets at once."""

from __future__ import annotations

import json
import threading
import time

import botocore.exceptions
import pytest

from support import ROLE, NimbusServer, assert_client_error, invoke_payload, lambda_client, make_zip
from test_provided import bootstrap_zip

ACCOUNT_CONCURRENCY = 1_000
UNRESERVED_MIN = 100
# How long the invocation holding the only reserved slot sleeps.
HOLD_S = 2


def unreserved(lam) -> int:
    return lam.get_account_settings()["AccountLimit"]["UnreservedConcurrentExecutions"]


def test_reservations_are_set_read_and_removed(lam, functions, guests):
    name = functions.create(guests["echo"])["FunctionName"]
    assert lam.get_function_concurrency(FunctionName=name).get("ReservedConcurrentExecutions") is None
    assert "Concurrency" not in lam.get_function(FunctionName=name)
    before = unreserved(lam)
    assert lam.get_account_settings()["AccountLimit"]["ConcurrentExecutions"] == ACCOUNT_CONCURRENCY
    put = lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=25)
    assert put["ReservedConcurrentExecutions"] == 25
    assert lam.get_function_concurrency(FunctionName=name)["ReservedConcurrentExecutions"] == 25
    assert lam.get_function(FunctionName=name)["Concurrency"] == {"ReservedConcurrentExecutions": 25}
    assert unreserved(lam) == before - 25
    # Changing it counts the function once; deleting it gives it back.
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=30)
    assert unreserved(lam) == before - 30
    lam.delete_function_concurrency(FunctionName=name)
    assert lam.get_function_concurrency(FunctionName=name).get("ReservedConcurrentExecutions") is None
    assert unreserved(lam) == before
    # A reservation does not touch the function's revision.
    revision = lam.get_function_configuration(FunctionName=name)["RevisionId"]
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=1)
    assert lam.get_function_configuration(FunctionName=name)["RevisionId"] == revision


def test_bad_reservations_are_refused_as_lambda_refuses_them(lam, functions, guests, raw):
    name = functions.create(guests["echo"])["FunctionName"]
    before = unreserved(lam)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=before - UNRESERVED_MIN + 1)
    message = assert_client_error(e, "InvalidParameterValueException", 400)
    assert f"below its minimum value of [{UNRESERVED_MIN}]" in message
    assert unreserved(lam) == before, "a refused reservation changes nothing"
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=before - UNRESERVED_MIN)
    assert unreserved(lam) == UNRESERVED_MIN
    lam.delete_function_concurrency(FunctionName=name)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lam.put_function_concurrency(FunctionName="no-such-function", ReservedConcurrentExecutions=1)
    assert_client_error(e, "ResourceNotFoundException", 404)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lam.get_function_concurrency(FunctionName="no-such-function")
    assert_client_error(e, "ResourceNotFoundException", 404)
    path = f"/2017-10-31/functions/{name}/concurrency"
    negative = raw("PUT", path, {"ReservedConcurrentExecutions": -1})
    assert negative.status == 400 and negative.error_type == "ValidationException", negative
    missing = raw("PUT", path, {})
    assert missing.status == 400 and missing.error_type == "ValidationException", missing
    qualified = raw("PUT", f"/2017-10-31/functions/{name}:1/concurrency", {"ReservedConcurrentExecutions": 1})
    assert qualified.status == 400 and qualified.error_type == "InvalidParameterValueException", qualified


def test_zero_reserved_throttles_every_invocation(lam, functions, guests, raw):
    name = functions.create(guests["echo"])["FunctionName"]
    assert invoke_payload(lam, name, b'{"a":1}')["StatusCode"] == 200
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lam.invoke(FunctionName=name, Payload=b"{}")
    assert_client_error(e, "TooManyRequestsException", 429)
    assert e.value.response.get("Reason") == "ReservedFunctionConcurrentInvocationLimitExceeded", e.value.response
    throttled = raw("POST", f"/2015-03-31/functions/{name}/invocations", b"{}")
    assert throttled.status == 429 and throttled.header("Retry-After") == "1", throttled
    assert throttled.json()["Reason"] == "ReservedFunctionConcurrentInvocationLimitExceeded"
    lam.delete_function_concurrency(FunctionName=name)
    assert invoke_payload(lam, name, b'{"a":2}')["StatusCode"] == 200


def test_a_reserved_function_never_runs_more_than_its_reservation(lam, functions, server):
    name = functions.create(bootstrap_zip(), handler="unused", Runtime="provided.al2023",
                            Timeout=HOLD_S * 5)["FunctionName"]
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=1)
    # Hot before the holder starts, and the holder's client made here: its
    # invoke is then admitted within milliseconds, well inside the pause below
    # even on a busy machine (a cold start or a new boto3 session can take
    # longer than that).
    invoke_payload(lam, name, b"{}")
    holder_client = lambda_client(server.url)
    held: dict = {}

    def hold() -> None:
        held["answer"] = invoke_payload(holder_client, name,
                                        json.dumps({"do": "sleep", "seconds": HOLD_S}).encode())

    holder = threading.Thread(target=hold)
    holder.start()
    time.sleep(HOLD_S / 4)  # it has been admitted and is sleeping
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lam.invoke(FunctionName=name, Payload=b"{}")
    assert_client_error(e, "TooManyRequestsException", 429)
    assert e.value.response.get("Reason") == "ReservedFunctionConcurrentInvocationLimitExceeded"
    holder.join()
    assert json.loads(held["answer"]["Body"])["echo"] == {"do": "sleep", "seconds": HOLD_S}
    # Its slot is free again once it has answered.
    assert json.loads(invoke_payload(lam, name, b'{"after":1}')["Body"])["echo"] == {"after": 1}


def test_the_aws_cli_manages_reservations(aws, lam, functions, guests):
    name = functions.create(guests["echo"])["FunctionName"]
    put = aws("put-function-concurrency", "--function-name", name, "--reserved-concurrent-executions", "5")
    assert put == {"ReservedConcurrentExecutions": 5}
    assert aws("get-function-concurrency", "--function-name", name) == {"ReservedConcurrentExecutions": 5}
    aws("delete-function-concurrency", "--function-name", name)
    assert lam.get_function_concurrency(FunctionName=name).get("ReservedConcurrentExecutions") is None


def test_reservations_survive_a_restart_and_die_with_their_function(own_server, guests):
    srv = own_server("--account-concurrency", "150")
    lam = lambda_client(srv.url)
    package = {"ZipFile": make_zip({"echo.wasm": guests["echo"]})}
    for name in ("kept", "deleted"):
        lam.create_function(FunctionName=name, Runtime="wasm", Role=ROLE, Code=package)
    assert lam.get_account_settings()["AccountLimit"]["ConcurrentExecutions"] == 150
    lam.put_function_concurrency(FunctionName="kept", ReservedConcurrentExecutions=30)
    lam.put_function_concurrency(FunctionName="deleted", ReservedConcurrentExecutions=20)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lam.put_function_concurrency(FunctionName="deleted", ReservedConcurrentExecutions=21)
    assert_client_error(e, "InvalidParameterValueException", 400)
    lam.delete_function(FunctionName="deleted")
    srv.stop()
    lam = lambda_client(own_server("--account-concurrency", "150").url)
    assert lam.get_function_concurrency(FunctionName="kept")["ReservedConcurrentExecutions"] == 30
    assert lam.get_account_settings()["AccountLimit"]["UnreservedConcurrentExecutions"] == 120
    # A function made again under a deleted one's name starts with none.
    lam.create_function(FunctionName="deleted", Runtime="wasm", Role=ROLE, Code=package)
    assert lam.get_function_concurrency(FunctionName="deleted").get("ReservedConcurrentExecutions") is None


def test_tenant_weights_are_taken_at_start_up_and_bad_ones_refused(tmp_path, own_server):
    srv = own_server("--tenant-weight", "000000000000=3", "--tenant-weight", "111122223333=2")
    assert lambda_client(srv.url).get_account_settings()["AccountLimit"]["ConcurrentExecutions"] > 0
    for bad in ("12=3", "000000000000=0", "000000000000=x", "000000000000"):
        bad_server = NimbusServer(tmp_path / f"bad-{len(bad)}", tmp_path / "bad.log",
                                  extra_args=("--tenant-weight", bad))
        try:
            bad_server.start()
        except RuntimeError as refused:
            assert "tenant-weight" in str(refused), str(refused)
        else:
            bad_server.stop()
            pytest.fail(f"--tenant-weight {bad} was taken")
