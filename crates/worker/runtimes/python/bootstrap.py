"""nimbus' runtime client for the python3.x runtimes.

It runs inside the container sandbox as the function's first process and
speaks the AWS Lambda Runtime API at $AWS_LAMBDA_RUNTIME_API, the way the
runtime of Lambda's managed Python images does: it imports the handler named
by $_HANDLER ("module.function", the module found under $LAMBDA_TASK_ROOT),
then loops on /next, calls handler(event, context) and posts the result or
the error in Lambda's shapes. Python's standard library only, so it runs on
whatever python3 the host has.
"""

import decimal
import importlib
import json
import logging
import os
import socket
import sys
import time
import traceback

API_PREFIX = "/2018-06-01/runtime"
ERROR_TYPE_HEADER = "Lambda-Runtime-Function-Error-Type"


class RuntimeApi:
    """One keep-alive HTTP/1.1 connection to the sandbox's Runtime API.

    HTTP is spoken here directly over the socket rather than through
    http.client, whose header parsing (the email package) costs more than
    the rest of an invocation's work: the platform's answers are small and
    regular, and this client reads exactly what HTTP/1.1 allows them to be
    (a Content-Length body, or a chunked one).
    """

    def __init__(self, address):
        host, _, port = address.rpartition(":")
        self.address = (host, int(port))
        self.host_header = f"Host: {address}\r\n".encode()
        self.sock = None
        self.reader = None

    def connect(self):
        self.sock = socket.create_connection(self.address)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = self.sock.makefile("rb")

    def request(self, method, path, body=b"", headers=b""):
        """Sends one request; returns (status, headers with lower-case names, body)."""
        head = b"%s %s%s HTTP/1.1\r\n" % (method, API_PREFIX.encode(), path.encode())
        message = b"".join((head, self.host_header, headers,
                            b"Content-Length: %d\r\n\r\n" % len(body), body))
        for attempt in (0, 1):
            try:
                if self.sock is None:
                    self.connect()
                self.sock.sendall(message)
                return self.read_response()
            except (ConnectionError, EOFError):
                # The platform closed an idle keep-alive connection: one
                # more try on a new one, as http.client would.
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def read_response(self):
        status_line = self.reader.readline()
        if not status_line:
            raise EOFError("the Runtime API closed the connection")
        status = int(status_line.split(None, 2)[1])
        headers = {}
        while True:
            line = self.reader.readline()
            if line in (b"\r\n", b"\n"):
                break
            if not line:
                raise EOFError("the Runtime API closed the connection mid-headers")
            name, _, value = line.partition(b":")
            headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = self.read_chunked()
        else:
            body = self.reader.read(int(headers.get("content-length") or 0))
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, headers, body

    def read_chunked(self):
        chunks = []
        while True:
            size = int(self.reader.readline().split(b";", 1)[0], 16)
            if size == 0:
                # Trailers, if any, end with an empty line.
                while self.reader.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            chunks.append(self.reader.read(size))
            self.reader.readline()

    def close(self):
        if self.sock is not None:
            self.reader.close()
            self.sock.close()
        self.sock = self.reader = None

    def next(self):
        status, headers, body = self.request(b"GET", "/invocation/next")
        if status != 200:
            raise RuntimeError(f"/invocation/next answered {status}: {body[:200]!r}")
        return headers, body

    def post(self, path, body, error_type=None):
        headers = b"Content-Type: application/json\r\n"
        if error_type is not None:
            headers += f"{ERROR_TYPE_HEADER}: {error_type}\r\n".encode("latin-1", "replace")
        status, _, answer = self.request(b"POST", path, body, headers)
        if status >= 300:
            # The platform refused the result (e.g. too large): it has already
            # ended the invocation with an error of its own; say so in the log.
            print(f"[WARN] the Runtime API refused {path}: {status} {answer[:200]!r}",
                  file=sys.stderr, flush=True)


class LambdaContext:
    """The `context` argument, with the attributes Lambda's Python runtime gives it."""

    def __init__(self, headers):
        self.aws_request_id = headers.get("lambda-runtime-aws-request-id", "")
        self.invoked_function_arn = headers.get("lambda-runtime-invoked-function-arn", "")
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "")
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        self.memory_limit_in_mb = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "")
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME", "")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME", "")
        self.client_context = _json_header(headers, "lambda-runtime-client-context")
        self.identity = _json_header(headers, "lambda-runtime-cognito-identity")
        self._deadline_ms = int(headers.get("lambda-runtime-deadline-ms") or 0)

    def get_remaining_time_in_millis(self):
        return max(self._deadline_ms - int(time.time() * 1000), 0)

    def log(self, message):
        sys.stdout.write(str(message))
        sys.stdout.flush()


def _json_header(headers, name):
    text = headers.get(name)
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


class _LambdaEncoder(json.JSONEncoder):
    """Encodes what Lambda's own serializer does beyond the json module: Decimals."""

    def default(self, o):
        if isinstance(o, decimal.Decimal):
            return int(o) if o == o.to_integral_value() else float(o)
        return super().default(o)


def error_body(error_type, message, request_id="", stack=None):
    return json.dumps({
        "errorMessage": message,
        "errorType": error_type,
        "requestId": request_id,
        "stackTrace": stack or [],
    }).encode()


def stack_of(error):
    return [line.rstrip("\n") for line in traceback.format_tb(error.__traceback__)]


class InitError(Exception):
    def __init__(self, error_type, message, stack=None):
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.stack = stack or []


def load_handler(handler):
    """Imports `module.function` from the task root, reporting each failure
    with the error type Lambda's Python runtime uses for it."""
    try:
        module_path, function_name = handler.rsplit(".", 1)
    except ValueError as e:
        raise InitError("Runtime.MalformedHandlerName", f"Bad handler '{handler}': {e}")
    module_name = module_path.replace("/", ".")
    if module_name.startswith("__builtin__") or not module_name:
        raise InitError("Runtime.BuiltInModuleConflict",
                        f"Cannot use built-in module {module_name} as a handler module")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise InitError("Runtime.ImportModuleError", f"Unable to import module '{module_path}': {e}")
    except SyntaxError as e:
        raise InitError("Runtime.UserCodeSyntaxError",
                        f"Syntax error in module '{module_path}': {e}", stack_of(e))
    except Exception as e:  # noqa: BLE001 - any failure of the user's import is its init error
        raise InitError(type(e).__name__, str(e), stack_of(e))
    function = getattr(module, function_name, None)
    if function is None:
        raise InitError("Runtime.HandlerNotFound",
                        f"Handler '{function_name}' missing on module '{module_path}'")
    return function


class _RequestIdFilter(logging.Filter):
    """Puts the current request id on every record, as Lambda's log format shows it."""

    request_id = ""

    def filter(self, record):
        record.aws_request_id = _RequestIdFilter.request_id
        return True


def setup_logging():
    """The root logger writes Lambda's text format to stdout (the function's log)."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter(
        "[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(aws_request_id)s\t%(message)s\n",
        "%Y-%m-%dT%H:%M:%S"))
    handler.formatter.converter = time.gmtime
    handler.addFilter(_RequestIdFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    level = os.environ.get("AWS_LAMBDA_LOG_LEVEL", "").upper()
    root.setLevel(getattr(logging, level, logging.WARNING) if level else logging.WARNING)


def log_error(error_type, message, stack):
    lines = [f"[ERROR] {error_type}: {message}"]
    if stack:
        lines.append("Traceback (most recent call last):")
        lines.extend(stack)
    print("\n".join(lines), flush=True)


def serve(api, handler):
    while True:
        headers, body = api.next()
        context = LambdaContext(headers)
        request_id = context.aws_request_id
        _RequestIdFilter.request_id = request_id
        trace_id = headers.get("lambda-runtime-trace-id")
        if trace_id:
            os.environ["_X_AMZN_TRACE_ID"] = trace_id
        else:
            os.environ.pop("_X_AMZN_TRACE_ID", None)
        try:
            event = json.loads(body) if body else {}
        except ValueError as e:
            api.post(f"/invocation/{request_id}/error",
                     error_body("Runtime.UnmarshalError",
                                f"Unable to unmarshal input: {e}", request_id),
                     "Runtime.UnmarshalError")
            continue
        try:
            result = handler(event, context)
        except Exception as e:  # noqa: BLE001 - the function's failure is its answer
            stack = stack_of(e)
            error_type = type(e).__name__
            log_error(error_type, str(e), stack)
            api.post(f"/invocation/{request_id}/error",
                     error_body(error_type, str(e), request_id, stack), error_type)
            continue
        try:
            answer = json.dumps(result, cls=_LambdaEncoder).encode()
        except (TypeError, ValueError) as e:
            message = f"Unable to marshal response: {e}"
            log_error("Runtime.MarshalError", message, [])
            api.post(f"/invocation/{request_id}/error",
                     error_body("Runtime.MarshalError", message, request_id),
                     "Runtime.MarshalError")
            continue
        api.post(f"/invocation/{request_id}/response", answer)


def receive_function(fd):
    """A runtime started before its function (the platform's warm tier):
    say so on the handoff socket, then wait for the function. By the time
    its message arrives the platform has mounted the code at /var/task; the
    message carries the function's environment."""
    with socket.socket(fileno=fd) as handoff:
        handoff.sendall(b"r")
        chunks = []
        while chunk := handoff.recv(65536):
            chunks.append(chunk)
    os.environ.update(json.loads(b"".join(chunks))["environment"])
    # What the interpreter read at start-up and the code's mount changed:
    # the working directory was the empty mount point, the import system
    # cached that it was empty, and the time zone may be the function's.
    os.chdir(os.environ.get("LAMBDA_TASK_ROOT", "/var/task"))
    importlib.invalidate_caches()
    time.tzset()


def main():
    handoff = os.environ.pop("_NIMBUS_HANDOFF_FD", None)
    if handoff is not None:
        receive_function(int(handoff))
    # The log is read line by line as the function writes it.
    sys.stdout.reconfigure(line_buffering=True)
    sys.stderr.reconfigure(line_buffering=True)
    task_root = os.environ.get("LAMBDA_TASK_ROOT", "/var/task")
    if task_root not in sys.path:
        sys.path.insert(0, task_root)
    setup_logging()
    api = RuntimeApi(os.environ["AWS_LAMBDA_RUNTIME_API"])
    try:
        handler = load_handler(os.environ.get("_HANDLER", ""))
    except InitError as e:
        log_error(e.error_type, e.message, e.stack)
        api.post("/init/error", error_body(e.error_type, e.message, "", e.stack), e.error_type)
        sys.exit(1)
    serve(api, handler)


if __name__ == "__main__":
    main()
