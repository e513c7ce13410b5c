"""Provisioned concurrency: instances of a published version (or of the
version an alias routes to) initialised ahead and kept while configured, so
the first invocation finds one hot; refused on $LATEST (Decision 15)."""

from __future__ import annotations

import json
import time

import botocore.exceptions
import pytest

from support import ROLE, assert_client_error, invoke_payload, lambda_client, log_of
from test_provided import bootstrap_zip, tier_of

READY_TIMEOUT_S = 30.0


def wait_ready(lam, name: str, qualifier: str) -> dict:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        config = lam.get_provisioned_concurrency_config(FunctionName=name, Qualifier=qualifier)
        if config["Status"] != "IN_PROGRESS" or time.monotonic() > deadline:
            return config
        time.sleep(0.1)


def provided_version(lam, name: str) -> str:
    lam.create_function(FunctionName=name, Runtime="provided.al2023", Role=ROLE, Handler="unused",
                        Code={"ZipFile": bootstrap_zip()})
    return lam.publish_version(FunctionName=name)["Version"]


@pytest.fixture
def fresh(own_server):
    """A server of the test's own (a second call restarts it on the same
    data dir), with a one-second idle time."""
    return lambda: own_server("--idle-recycle-s", "1")


def test_provisioned_instances_are_ready_before_the_first_invocation_and_kept(fresh):
    srv = fresh()
    lam = lambda_client(srv.url)
    version = provided_version(lam, "prov")
    put = lam.put_provisioned_concurrency_config(FunctionName="prov", Qualifier=version,
                                                 ProvisionedConcurrentExecutions=2)
    assert put["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert put["RequestedProvisionedConcurrentExecutions"] == 2 and put["Status"] in ("IN_PROGRESS", "READY")
    ready = wait_ready(lam, "prov", version)
    assert ready["Status"] == "READY", ready
    assert ready["AllocatedProvisionedConcurrentExecutions"] == 2
    assert ready["AvailableProvisionedConcurrentExecutions"] == 2
    first = invoke_payload(lam, f"prov:{version}", b'{"n":1}', LogType="Tail")
    assert tier_of(first) == "hot", "the first invocation finds a provisioned instance"
    assert "Init Duration:" not in log_of(first)
    assert json.loads(first["Body"])["echo"] == {"n": 1}
    # Idle far past the idle time, it is still there; $LATEST's is not.
    invoke_payload(lam, "prov", b"{}")
    time.sleep(2.5)
    assert tier_of(invoke_payload(lam, f"prov:{version}", b"{}")) == "hot"
    assert tier_of(invoke_payload(lam, "prov", b"{}")) != "hot", "an ordinary sandbox was recycled"
    listed = lam.list_provisioned_concurrency_configs(FunctionName="prov")["ProvisionedConcurrencyConfigs"]
    assert [c["FunctionArn"].rsplit(":", 1)[1] for c in listed] == [version]
    assert listed[0]["FunctionArn"].endswith(f":function:prov:{version}")
    # Removed, its instances become ordinary ones and are recycled in time.
    lam.delete_provisioned_concurrency_config(FunctionName="prov", Qualifier=version)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lam.get_provisioned_concurrency_config(FunctionName="prov", Qualifier=version)
    assert_client_error(e, "ProvisionedConcurrencyConfigNotFoundException", 404)
    time.sleep(2.5)
    assert tier_of(invoke_payload(lam, f"prov:{version}", b"{}")) != "hot"


def test_provisioned_concurrency_on_an_alias_and_after_a_restart(fresh):
    srv = fresh()
    lam = lambda_client(srv.url)
    version = provided_version(lam, "aliased")
    lam.create_alias(FunctionName="aliased", Name="live", FunctionVersion=version)
    lam.put_provisioned_concurrency_config(FunctionName="aliased", Qualifier="live",
                                           ProvisionedConcurrentExecutions=1)
    assert wait_ready(lam, "aliased", "live")["Status"] == "READY"
    assert tier_of(invoke_payload(lam, "aliased:live", b"{}")) == "hot"
    # The alias moves to a new version: its provisioned instances follow.
    lam.update_function_configuration(FunctionName="aliased", Timeout=4)
    lam.get_waiter("function_updated").wait(FunctionName="aliased")
    second = lam.publish_version(FunctionName="aliased")["Version"]
    lam.update_alias(FunctionName="aliased", Name="live", FunctionVersion=second)
    assert wait_ready(lam, "aliased", "live")["Status"] == "READY"
    assert tier_of(invoke_payload(lam, "aliased:live", b"{}")) == "hot"
    time.sleep(2.5)
    assert tier_of(invoke_payload(lam, f"aliased:{version}", b"{}")) != "hot", "the old version's are let go"
    assert tier_of(invoke_payload(lam, "aliased:live", b"{}")) == "hot"
    srv.stop()
    lam = lambda_client(fresh().url)
    ready = wait_ready(lam, "aliased", "live")
    assert ready["Status"] == "READY" and ready["RequestedProvisionedConcurrentExecutions"] == 1, ready
    assert tier_of(invoke_payload(lam, "aliased:live", b"{}")) == "hot", "provisioned again at start-up"


def test_bad_configurations_are_refused_as_lambda_refuses_them(lam, functions, guests, raw):
    name = functions.create(guests["echo"])["FunctionName"]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier="$LATEST",
                                               ProvisionedConcurrentExecutions=1)
    assert "unpublished function versions" in assert_client_error(e, "InvalidParameterValueException", 400)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier="7",
                                               ProvisionedConcurrentExecutions=1)
    assert_client_error(e, "ResourceNotFoundException", 404)
    version = lam.publish_version(FunctionName=name)["Version"]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lam.get_provisioned_concurrency_config(FunctionName=name, Qualifier=version)
    assert_client_error(e, "ProvisionedConcurrencyConfigNotFoundException", 404)
    path = f"/2019-09-30/functions/{name}/provisioned-concurrency"
    zero = raw("PUT", f"{path}?Qualifier={version}", {"ProvisionedConcurrentExecutions": 0})
    assert zero.status == 400 and zero.error_type == "ValidationException", zero
    unqualified = raw("PUT", path, {"ProvisionedConcurrentExecutions": 1})
    assert unqualified.status == 400 and unqualified.error_type == "ValidationException", unqualified
    # Provisioned instances come out of a reservation, never beyond it.
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=1)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier=version,
                                               ProvisionedConcurrentExecutions=2)
    assert_client_error(e, "InvalidParameterValueException", 400)
    # A reservation below what is provisioned is refused in turn.
    lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier=version,
                                           ProvisionedConcurrentExecutions=1)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
    assert_client_error(e, "InvalidParameterValueException", 400)
    lam.delete_function_concurrency(FunctionName=name)
    # Without one, it comes out of the unreserved pool, which keeps its 100.
    unreserved = lam.get_account_settings()["AccountLimit"]["UnreservedConcurrentExecutions"]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier=version,
                                               ProvisionedConcurrentExecutions=unreserved - 99)
    assert_client_error(e, "InvalidParameterValueException", 400)
    # A wasm instance is made from its compiled module per invocation: ready at once.
    put = lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier=version,
                                                 ProvisionedConcurrentExecutions=1)
    assert put["Status"] == "READY" and put["AllocatedProvisionedConcurrentExecutions"] == 1, put


def test_a_container_function_cannot_pin_more_than_the_host_holds(lam, functions):
    name = functions.create(bootstrap_zip(), handler="unused", Runtime="provided.al2023")["FunctionName"]
    version = lam.publish_version(FunctionName=name)["Version"]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier=version,
                                               ProvisionedConcurrentExecutions=65)
    assert "more than this host's 64 sandboxes" in assert_client_error(e, "InvalidParameterValueException", 400)


def test_the_aws_cli_sets_and_reads_provisioned_concurrency(aws, lam, functions, guests):
    name = functions.create(guests["echo"])["FunctionName"]
    version = lam.publish_version(FunctionName=name)["Version"]
    put = aws("put-provisioned-concurrency-config", "--function-name", name, "--qualifier", version,
              "--provisioned-concurrent-executions", "3")
    assert put["RequestedProvisionedConcurrentExecutions"] == 3
    got = aws("get-provisioned-concurrency-config", "--function-name", name, "--qualifier", version)
    assert got["Status"] == "READY" and got["AllocatedProvisionedConcurrentExecutions"] == 3
    aws("delete-provisioned-concurrency-config", "--function-name", name, "--qualifier", version)
    assert lam.list_provisioned_concurrency_configs(FunctionName=name)["ProvisionedConcurrencyConfigs"] == []
