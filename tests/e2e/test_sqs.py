"""The built-in queues through Amazon SQS's JSON protocol: the real `aws sqs`
CLI (v1) and boto3 against the platform. Every answer must parse, and every
error must reach boto3 with the code SQS gives (awsQueryCompatible: the
`x-amzn-query-error` code, e.g. AWS.SimpleQueueService.NonExistentQueue)."""

from __future__ import annotations

import hashlib
import json
import struct
import threading
import time
import uuid

import botocore.exceptions
import pytest

from support import assert_client_error, signed_request, sqs_client

NON_EXISTENT = "AWS.SimpleQueueService.NonExistentQueue"


@pytest.fixture(scope="module")
def sqs(server):
    return sqs_client(server.url)


@pytest.fixture(scope="module")
def sqs_unchecked(server):
    """A client that sends out-of-range values instead of refusing them itself."""
    return sqs_client(server.url, validate=False)


@pytest.fixture
def queue(sqs, request):
    """make(**attributes) creates a queue unique to the test; all are deleted after it."""
    urls = []

    def make(**attributes) -> str:
        name = f"{request.node.name[:40].replace('[', '-').replace(']', '')}-{uuid.uuid4().hex[:8]}"
        url = sqs.create_queue(QueueName=name, Attributes={k: str(v) for k, v in attributes.items()})["QueueUrl"]
        urls.append(url)
        return url

    yield make
    for url in urls:
        try:
            sqs.delete_queue(QueueUrl=url)
        except botocore.exceptions.ClientError:
            pass


def receive(sqs, url: str, **kw) -> list[dict]:
    return sqs.receive_message(QueueUrl=url, **kw).get("Messages", [])


def md5_of_attributes(attributes: dict) -> str:
    """SQS's digest of message attributes, computed here from its definition."""
    out = b""
    for name in sorted(attributes):
        a = attributes[name]
        out += struct.pack(">I", len(name.encode())) + name.encode()
        out += struct.pack(">I", len(a["DataType"].encode())) + a["DataType"].encode()
        if a["DataType"].startswith("Binary"):
            out += b"\x02" + struct.pack(">I", len(a["BinaryValue"])) + a["BinaryValue"]
        else:
            value = a["StringValue"].encode()
            out += b"\x01" + struct.pack(">I", len(value)) + value
    return hashlib.md5(out).hexdigest()


# --- the aws CLI ---------------------------------------------------------------


def test_cli_queue_lifecycle(aws_sqs, sqs):
    name = f"cli-{uuid.uuid4().hex[:8]}"
    url = aws_sqs("create-queue", "--queue-name", name, "--attributes", "VisibilityTimeout=30")["QueueUrl"]
    try:
        assert url.endswith(f"/{name}")
        assert aws_sqs("get-queue-url", "--queue-name", name)["QueueUrl"] == url
        assert aws_sqs("list-queues", "--queue-name-prefix", name)["QueueUrls"] == [url]

        sent = aws_sqs("send-message", "--queue-url", url, "--message-body", "from the cli")
        assert sent["MD5OfMessageBody"] == hashlib.md5(b"from the cli").hexdigest()

        got = aws_sqs("receive-message", "--queue-url", url, "--attribute-names", "All")["Messages"]
        assert [m["Body"] for m in got] == ["from the cli"]
        assert got[0]["MessageId"] == sent["MessageId"]
        assert got[0]["Attributes"]["ApproximateReceiveCount"] == "1"
        assert int(got[0]["Attributes"]["SentTimestamp"]) == pytest.approx(time.time() * 1000, abs=60_000)

        # In flight: hidden, until its visibility is set to 0.
        assert aws_sqs("receive-message", "--queue-url", url) is None
        attrs = aws_sqs("get-queue-attributes", "--queue-url", url, "--attribute-names", "All")["Attributes"]
        assert attrs["ApproximateNumberOfMessagesNotVisible"] == "1"
        assert attrs["ApproximateNumberOfMessages"] == "0"
        assert attrs["VisibilityTimeout"] == "30"
        assert attrs["QueueArn"].endswith(f":{name}") and attrs["QueueArn"].startswith("arn:aws:sqs:us-east-1:")
        aws_sqs(
            "change-message-visibility", "--queue-url", url,
            "--receipt-handle", got[0]["ReceiptHandle"], "--visibility-timeout", "0",
        )
        again = aws_sqs("receive-message", "--queue-url", url, "--attribute-names", "ApproximateReceiveCount")
        assert again["Messages"][0]["Attributes"] == {"ApproximateReceiveCount": "2"}

        aws_sqs("delete-message", "--queue-url", url, "--receipt-handle", again["Messages"][0]["ReceiptHandle"])
        attrs = aws_sqs(
            "get-queue-attributes", "--queue-url", url,
            "--attribute-names", "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
        )["Attributes"]
        assert attrs == {"ApproximateNumberOfMessages": "0", "ApproximateNumberOfMessagesNotVisible": "0"}

        aws_sqs("send-message", "--queue-url", url, "--message-body", "to be purged")
        aws_sqs("purge-queue", "--queue-url", url)
        assert aws_sqs("receive-message", "--queue-url", url) is None
    finally:
        aws_sqs("delete-queue", "--queue-url", url)
    err = aws_sqs.fails("get-queue-url", "--queue-name", name)
    assert NON_EXISTENT in err


# --- boto3: semantics ----------------------------------------------------------


def test_visibility_timeout_expiry_redelivers_with_a_higher_receive_count(sqs, queue):
    url = queue(VisibilityTimeout=1)
    sqs.send_message(QueueUrl=url, MessageBody="again")
    first = receive(sqs, url, MessageSystemAttributeNames=["All"])
    assert first[0]["Attributes"]["ApproximateReceiveCount"] == "1"
    assert receive(sqs, url) == []
    # A long poll returns when the visibility timeout runs out.
    started = time.monotonic()
    second = receive(sqs, url, WaitTimeSeconds=5, AttributeNames=["All"])
    assert 0.3 < time.monotonic() - started < 4
    assert second[0]["Body"] == "again"
    assert second[0]["Attributes"]["ApproximateReceiveCount"] == "2"
    assert (
        second[0]["Attributes"]["ApproximateFirstReceiveTimestamp"]
        == first[0]["Attributes"]["ApproximateFirstReceiveTimestamp"]
    )


def test_a_stale_receipt_handle_does_not_delete_the_newer_receive(sqs, queue):
    url = queue(VisibilityTimeout=1)
    sqs.send_message(QueueUrl=url, MessageBody="kept")
    old = receive(sqs, url)[0]["ReceiptHandle"]
    new = receive(sqs, url, WaitTimeSeconds=5)[0]["ReceiptHandle"]
    sqs.delete_message(QueueUrl=url, ReceiptHandle=old)  # succeeds, as SQS documents
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=new, VisibilityTimeout=0)
    assert receive(sqs, url)[0]["Body"] == "kept"


def test_long_poll_answers_when_a_message_arrives(sqs, queue):
    url = queue()
    timer = threading.Timer(0.5, lambda: sqs.send_message(QueueUrl=url, MessageBody="late"))
    timer.start()
    started = time.monotonic()
    got = receive(sqs, url, WaitTimeSeconds=10)
    timer.join()
    assert [m["Body"] for m in got] == ["late"]
    assert time.monotonic() - started < 5


def test_delay_hides_a_message_until_it_passes(sqs, queue):
    url = queue()
    sqs.send_message(QueueUrl=url, MessageBody="later", DelaySeconds=1)
    assert receive(sqs, url) == []
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessagesDelayed"])
    assert attrs["Attributes"] == {"ApproximateNumberOfMessagesDelayed": "1"}
    assert receive(sqs, url, WaitTimeSeconds=5)[0]["Body"] == "later"


def test_receive_takes_up_to_ten_and_batches_work(sqs, queue, sqs_unchecked):
    url = queue()
    entries = [{"Id": f"m{i}", "MessageBody": f"body {i}"} for i in range(10)]
    sent = sqs.send_message_batch(QueueUrl=url, Entries=entries)
    assert sorted(e["Id"] for e in sent["Successful"]) == sorted(e["Id"] for e in entries)
    assert sent["Failed"] == []
    for e in sent["Successful"]:
        assert e["MD5OfMessageBody"] == hashlib.md5(f"body {e['Id'][1:]}".encode()).hexdigest()

    partial = sqs_unchecked.send_message_batch(
        QueueUrl=url, Entries=[{"Id": "ok", "MessageBody": "x"}, {"Id": "bad", "MessageBody": "x", "DelaySeconds": 901}]
    )
    assert [e["Id"] for e in partial["Successful"]] == ["ok"]
    assert partial["Failed"][0]["Id"] == "bad" and partial["Failed"][0]["SenderFault"] is True
    assert partial["Failed"][0]["Code"] == "InvalidParameterValue"

    got = receive(sqs, url, MaxNumberOfMessages=10)
    assert len(got) == 10
    deleted = sqs.delete_message_batch(
        QueueUrl=url, Entries=[{"Id": f"d{i}", "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)]
    )
    assert len(deleted["Successful"]) == 10 and deleted["Failed"] == []
    assert len(receive(sqs, url, MaxNumberOfMessages=10)) == 1

    with pytest.raises(botocore.exceptions.ClientError) as e:
        sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": "a", "MessageBody": "x"}, {"Id": "a", "MessageBody": "y"}])
    assert_client_error(e, "AWS.SimpleQueueService.BatchEntryIdsNotDistinct", 400)
    with pytest.raises(sqs_unchecked.exceptions.EmptyBatchRequest):
        sqs_unchecked.delete_message_batch(QueueUrl=url, Entries=[])


def test_message_attributes_come_back_with_their_digest(sqs, queue):
    url = queue()
    attributes = {
        "kind": {"DataType": "String", "StringValue": "order"},
        "count": {"DataType": "Number", "StringValue": "42"},
        "raw": {"DataType": "Binary", "BinaryValue": b"\x00\x01\xff"},
    }
    sent = sqs.send_message(QueueUrl=url, MessageBody="with attributes", MessageAttributes=attributes)
    assert sent["MD5OfMessageAttributes"] == md5_of_attributes(attributes)
    got = receive(sqs, url, MessageAttributeNames=["All"])[0]
    assert got["MessageAttributes"] == attributes
    assert got["MD5OfMessageAttributes"] == md5_of_attributes(attributes)
    # Without asking, no attributes.
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=got["ReceiptHandle"], VisibilityTimeout=0)
    plain = receive(sqs, url)[0]
    assert "MessageAttributes" not in plain and plain["MD5OfBody"] == hashlib.md5(b"with attributes").hexdigest()


def test_create_is_idempotent_and_attributes_can_change(sqs, queue):
    url = queue(VisibilityTimeout=45)
    name = url.rsplit("/", 1)[1]
    assert sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "45"})["QueueUrl"] == url
    with pytest.raises(sqs.exceptions.QueueNameExists) as e:
        sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "46"})
    assert_client_error(e, "QueueAlreadyExists", 400)

    sqs.set_queue_attributes(QueueUrl=url, Attributes={"DelaySeconds": "2", "MessageRetentionPeriod": "120"})
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attrs["DelaySeconds"] == "2" and attrs["MessageRetentionPeriod"] == "120"
    assert attrs["VisibilityTimeout"] == "45" and attrs["MaximumMessageSize"] == "1048576"
    assert int(attrs["LastModifiedTimestamp"]) >= int(attrs["CreatedTimestamp"])


def test_list_queues_by_prefix_and_page(sqs, queue):
    prefix = f"page-{uuid.uuid4().hex[:6]}"
    urls = sorted(sqs.create_queue(QueueName=f"{prefix}-{i}")["QueueUrl"] for i in range(3))
    try:
        assert sqs.list_queues(QueueNamePrefix=prefix)["QueueUrls"] == urls
        first = sqs.list_queues(QueueNamePrefix=prefix, MaxResults=2)
        assert first["QueueUrls"] == urls[:2]
        rest = sqs.list_queues(QueueNamePrefix=prefix, MaxResults=2, NextToken=first["NextToken"])
        assert rest["QueueUrls"] == urls[2:] and "NextToken" not in rest
        assert "QueueUrls" not in sqs.list_queues(QueueNamePrefix=f"{prefix}-none")
    finally:
        for url in urls:
            sqs.delete_queue(QueueUrl=url)


# --- boto3: errors ---------------------------------------------------------------


def test_errors_reach_boto3_with_sqs_codes(sqs, sqs_unchecked, queue):
    with pytest.raises(sqs.exceptions.QueueDoesNotExist) as e:
        sqs.get_queue_url(QueueName=f"missing-{uuid.uuid4().hex[:8]}")
    assert_client_error(e, NON_EXISTENT, 400)

    url = queue()
    account = url.rstrip("/").split("/")[-2]
    other = url.replace(f"/{account}/", "/999999999999/")
    with pytest.raises(sqs.exceptions.QueueDoesNotExist) as e:
        sqs.send_message(QueueUrl=other, MessageBody="x")
    assert_client_error(e, NON_EXISTENT, 400)

    with pytest.raises(sqs.exceptions.ReceiptHandleIsInvalid) as e:
        sqs.delete_message(QueueUrl=url, ReceiptHandle="not-a-handle")
    assert_client_error(e, "ReceiptHandleIsInvalid", 400)

    sqs.send_message(QueueUrl=url, MessageBody="m")
    handle = receive(sqs, url)[0]["ReceiptHandle"]
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=handle, VisibilityTimeout=0)
    with pytest.raises(sqs.exceptions.MessageNotInflight) as e:
        sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=handle, VisibilityTimeout=10)
    assert_client_error(e, "AWS.SimpleQueueService.MessageNotInflight", 400)

    with pytest.raises(botocore.exceptions.ClientError) as e:
        sqs_unchecked.receive_message(QueueUrl=url, MaxNumberOfMessages=11)
    assert "MaxNumberOfMessages" in assert_client_error(e, "InvalidParameterValue", 400)

    with pytest.raises(sqs.exceptions.InvalidAttributeValue) as e:
        sqs.set_queue_attributes(QueueUrl=url, Attributes={"VisibilityTimeout": "43201"})
    assert_client_error(e, "InvalidAttributeValue", 400)
    with pytest.raises(sqs.exceptions.InvalidAttributeName) as e:
        sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["NoSuchAttribute"])
    assert_client_error(e, "InvalidAttributeName", 400)

    with pytest.raises(sqs.exceptions.InvalidMessageContents) as e:
        sqs.send_message(QueueUrl=url, MessageBody="bell \x07")
    assert_client_error(e, "InvalidMessageContents", 400)

    sqs.purge_queue(QueueUrl=url)
    with pytest.raises(sqs.exceptions.PurgeQueueInProgress) as e:
        sqs.purge_queue(QueueUrl=url)
    assert_client_error(e, "AWS.SimpleQueueService.PurgeQueueInProgress", 403)

    with pytest.raises(sqs.exceptions.UnsupportedOperation) as e:
        sqs.create_queue(QueueName="orders.fifo", Attributes={"FifoQueue": "true"})
    assert "FIFO" in assert_client_error(e, "AWS.SimpleQueueService.UnsupportedOperation", 400)

    with pytest.raises(botocore.exceptions.ClientError) as e:
        sqs.create_queue(QueueName="bad name!")
    assert_client_error(e, "InvalidParameterValue", 400)


def test_auth_errors_come_in_sqs_shape(server):
    wrong = sqs_client(server.url, secret_key="not-the-secret-key-000000000000000000000")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        wrong.list_queues()
    assert_client_error(e, "SignatureDoesNotMatch", 403)


@pytest.mark.parametrize(
    "target, body, code",
    [
        ("AmazonSQS.SendMessage", b"{not json", "InvalidParameterValue"),
        ("AmazonSQS.SendMessage", b'{"QueueUrl": 7, "MessageBody": "x"}', "InvalidParameterValue"),
        ("AmazonSQS.NoSuchOperation", b"{}", "InvalidAction"),
        ("AmazonSQS.TagQueue", b"{}", "AWS.SimpleQueueService.UnsupportedOperation"),
        ("SomethingElse.Op", b"{}", "InvalidAction"),
        ("AmazonSQS.ReceiveMessage", b"{}", "MissingParameter"),
    ],
)
def test_bad_requests_get_clear_errors(server, sqs, target, body, code):
    resp = signed_request(
        server.url, "POST", "/", body,
        headers={"X-Amz-Target": target, "Content-Type": "application/x-amz-json-1.0"},
        service="sqs",
    )
    assert resp.status == 400, resp
    assert resp.header("x-amzn-query-error") == f"{code};Sender", resp
    doc = json.loads(resp.body)
    assert doc["__type"].startswith("com.amazonaws.sqs#") and doc["message"], resp
    assert sqs.list_queues() is not None  # still serving
