"""A python3.x handler for the end-to-end tests. The event says what to do;
the answer shows what the function saw of its context and sandbox."""
import logging
import os
import sys
import time

logger = logging.getLogger()
logger.setLevel(logging.INFO)
INITIALIZED_AT = time.time()


def exec_environment() -> list[str]:
    """The names of the variables this process was exec'd with (the kernel
    keeps them as they were at exec, whatever os.environ became since)."""
    with open("/proc/self/environ", "rb") as f:
        return sorted(v.split(b"=", 1)[0].decode() for v in f.read().split(b"\0") if v)


def lambda_handler(event, context):
    action = event.get("do") if isinstance(event, dict) else None
    print("handling", context.aws_request_id)
    logger.info("logged at info by %s", context.function_name)
    if action == "raise":
        raise ValueError("asked to raise")
    if action == "sleep":
        time.sleep(event["seconds"])
    if action == "unserializable":
        return {"set": {1, 2}}
    if action == "big":
        return {"filler": "x" * event["bytes"]}
    if action == "write-task":
        try:
            open("/var/task/new-file", "w").close()
            return {"write": "allowed"}
        except OSError as e:
            return {"write": type(e).__name__}
    if action == "dlopen":
        # A library the package brings in lib/, found by name through
        # LD_LIBRARY_PATH as on Lambda.
        import ctypes
        try:
            ctypes.CDLL(event["name"])
            return {"dlopen": "loaded"}
        except OSError as e:
            return {"dlopen": str(e)}
    if action == "tmp":
        path = "/tmp/counter"
        count = int(open(path).read()) + 1 if os.path.exists(path) else 1
        with open(path, "w") as f:
            f.write(str(count))
        return {"tmp_count": count}
    return {
        "echo": event,
        "request_id": context.aws_request_id,
        "function_name": context.function_name,
        "version": context.function_version,
        "arn": context.invoked_function_arn,
        "log_stream": context.log_stream_name,
        "memory": str(context.memory_limit_in_mb),
        "remaining_ms": context.get_remaining_time_in_millis(),
        "greeting": os.environ.get("GREETING"),
        "python": "%d.%d" % sys.version_info[:2],
        "pid": os.getpid(),
        "uid": os.getuid(),
        "initialized_at": INITIALIZED_AT,
        "exec_environment": exec_environment(),
        "cwd": os.getcwd(),
        "files": sorted(os.listdir(".")),
        "hash_randomization": sys.flags.hash_randomization,
    }
