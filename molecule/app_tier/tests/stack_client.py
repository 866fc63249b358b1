"""HTTPS and WebSocket client the app_tier suite runs on the test instance (Python stdlib only).

Talks to Caddy as a browser would: https://localhost, checking the certificate against the root
of Caddy's own CA (tls internal). Prints one JSON document.

Every request carries the site's API key (`Authorization: Bearer KEY`): STACK_KEY, else the
first key of STACK_KEY_FILE (default: the file the backend role writes on the host; the client
runs as root there). STACK_KEY_FILE= (empty) sends no key; STACK_COOKIE sends that Cookie
header; STACK_ORIGIN is the WebSocket upgrade's Origin (default: the site's own). STACK_URL
(e.g. http://mmo-backend-1:8000) talks to something else than Caddy: a replica, from another
one on the internal network (run there as `python3 - ARGS < stack_client.py`).

On the controller, the suite and the benches (bench/bench_faults.py, bench/bench_api.py) import
it for RemoteLoad (this client's load, run in the instance through docker exec) and table().

  stack_client.py get PATH
  stack_client.py post PATH JSON
  stack_client.py request METHOD PATH [JSON]
  stack_client.py ws JSON            (one query over wss://localhost/ws)
  stack_client.py big PATH BYTES [chunked]
                                     (a JSON query of BYTES bytes, sent until the answer comes)
  stack_client.py load SPEC          (queries in a loop until a stop file appears: see load())
  stack_client.py timed SPEC         (queries one after another or in threads: see timed())
"""
import base64
import collections
import concurrent.futures
import json
import os
import select
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid

HOST = os.environ.get("STACK_HOST", "localhost")
PORT = int(os.environ.get("STACK_PORT", "443"))
URL = os.environ.get("STACK_URL", f"https://{HOST}:{PORT}")
CA = os.environ.get("STACK_CA", "/var/lib/multimodel/caddy/caddy/pki/authorities/local/root.crt")
KEY_FILE = os.environ.get("STACK_KEY_FILE", "/etc/multimodel/backend/api_keys")


def context():
    return ssl.create_default_context(cafile=CA)


def api_key():
    """The key sent as a bearer token: STACK_KEY, else the first key of STACK_KEY_FILE (one a
    line, # comments), else none."""
    if "STACK_KEY" in os.environ:
        return os.environ["STACK_KEY"]
    if not KEY_FILE or not os.path.exists(KEY_FILE):
        return None
    with open(KEY_FILE, encoding="utf-8") as keys:
        return first_key(keys.read())


def first_key(text):
    """The first key of an API keys file's text (one a line, blank lines and # comments aside)."""
    return next((line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")),
                None)


def auth_headers():
    """Authorization (the key) and Cookie (STACK_COOKIE) headers, as set."""
    headers = {}
    key = api_key()
    if key:
        headers["Authorization"] = f"Bearer {key}"
    if os.environ.get("STACK_COOKIE"):
        headers["Cookie"] = os.environ["STACK_COOKIE"]
    return headers


def _parsed(status, headers, data):
    text = data.decode("utf-8", "replace")
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    return {"status": status, "headers": headers, "json": parsed, "text": text[:2000]}


def http(method, path, body=None, timeout=120):
    headers = dict(auth_headers(), **({"Content-Type": "application/json"} if body else {}))
    request = urllib.request.Request(URL + path, method=method, data=body, headers=headers)
    secure = {"context": context()} if URL.startswith("https:") else {}
    try:
        with urllib.request.urlopen(request, timeout=timeout, **secure) as answer:
            status, headers, data = answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as error:
        status, headers, data = error.code, dict(error.headers), error.read()
    return _parsed(status, headers, data)


def _connect(timeout):
    """A socket to URL's host (TLS for https), and the Host header's value."""
    scheme, rest = URL.split("://", 1)
    name, dummy, port = rest.partition(":")
    port = int(port or (443 if scheme == "https" else 80))
    raw = socket.create_connection((name, port), timeout=timeout)
    if scheme != "https":
        return raw, rest
    return context().wrap_socket(raw, server_hostname=name), name if port == 443 else rest


def big(path, size, chunked=False, timeout=60):
    """POST a JSON query of `size` bytes (Content-Length, or chunked), in pieces, reading at the
    same time: a server that refuses a large body answers without reading it all, and may
    close the connection. The answer (status, headers, json, text) and the bytes sent by then."""
    filler = size - len('{"query": ""}')
    body = ('{"query": "' + "x" * filler + '"}').encode()
    sock, host = _connect(timeout)
    head = [f"POST {path} HTTP/1.1", f"Host: {host}", "Content-Type: application/json", "Connection: close"]
    head += [f"{name}: {value}" for name, value in auth_headers().items()]
    if chunked:
        head.append("Transfer-Encoding: chunked")
        pieces = [body[i:i + 16384] for i in range(0, len(body), 16384)]
        payload = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces) + b"0\r\n\r\n"
    else:
        head.append(f"Content-Length: {len(body)}")
        payload = body
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
    sock.setblocking(False)
    pending, answer, sent = memoryview(payload), b"", 0
    deadline = time.time() + timeout
    while time.time() < deadline and not _complete(answer):
        writing = bool(pending) and not answer
        readable, writable, dummy = select.select([sock], [sock] if writing else [], [], 0.5)
        if readable or (hasattr(sock, "pending") and sock.pending()):
            try:
                chunk = sock.recv(65536)
            except (ssl.SSLWantReadError, BlockingIOError):
                chunk = None
            except OSError:  # reset after the answer, or before it
                break
            if chunk == b"":
                break
            answer += chunk or b""
        if writable and writing:
            try:
                count = sock.send(pending[:16384])
            except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError):
                count = 0
            except OSError:  # the server closed its side: read what it answered
                pending = pending[:0]
                count = 0
            pending, sent = pending[count:], sent + count
    sock.close()
    head_text, dummy, data = answer.partition(b"\r\n\r\n")
    lines = head_text.decode("iso-8859-1").split("\r\n")
    status = int(lines[0].split()[1]) if lines[0].startswith("HTTP/") else 0
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return dict(_parsed(status, headers, data), sent=sent, size=len(payload))


def _complete(answer):
    """Whether `answer` holds a whole HTTP response with a Content-Length."""
    head, found, data = answer.partition(b"\r\n\r\n")
    if not found:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, dummy, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(data) >= int(value)
    return False


def _read_exact(sock, count):
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ConnectionError("connection closed")
        data += chunk
    return data


def _send_text(sock, text):
    payload = text.encode()
    mask = os.urandom(4)
    header = bytes([0x81])
    if len(payload) < 126:
        header += bytes([0x80 | len(payload)])
    elif len(payload) < 65536:
        header += bytes([0x80 | 126]) + struct.pack(">H", len(payload))
    else:
        header += bytes([0x80 | 127]) + struct.pack(">Q", len(payload))
    sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))


def _receive(sock):
    first, second = _read_exact(sock, 2)
    length = second & 0x7F
    if length == 126:
        length = struct.unpack(">H", _read_exact(sock, 2))[0]
    elif length == 127:
        length = struct.unpack(">Q", _read_exact(sock, 8))[0]
    return first & 0x0F, _read_exact(sock, length)


def websocket(message, timeout=120, sent=None):
    """One query over /ws: {"handshake", "messages"}. `sent`, a list, gets True appended once
    the query is on the wire (the load loop tells a cut stream from a failed handshake)."""
    sock, host = _connect(timeout)
    key = base64.b64encode(os.urandom(16)).decode()
    origin = os.environ.get("STACK_ORIGIN", f"https://{HOST}")
    extra = "".join(f"{name}: {value}\r\n" for name, value in auth_headers().items())
    sock.sendall((f"GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                  + (f"Origin: {origin}\r\n" if origin else "") + extra + "\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += _read_exact(sock, 1)
    status_line = head.split(b"\r\n", 1)[0].decode()
    if " 101 " not in status_line + " ":
        return {"handshake": status_line, "messages": []}
    _send_text(sock, message)
    if sent is not None:
        sent.append(True)
    messages = []
    while True:
        opcode, payload = _receive(sock)
        if opcode == 8:
            break
        if opcode == 1:
            messages.append(json.loads(payload))
            if messages[-1].get("type") in ("done", "error"):
                break
    sock.close()
    return {"handshake": status_line, "messages": messages}


def _http_query(body, timeout):
    """One POST /api/query: None when answered, else why not."""
    try:
        answer = http("POST", "/api/query", json.dumps(body).encode(), timeout)
    except Exception as error:  # pylint: disable=broad-except
        return f"http: {error!r}"
    if answer["status"] == 200 and isinstance(answer["json"], dict) and "answer" in answer["json"]:
        return None
    return f"http: HTTP {answer['status']}: {answer['text'][:300]}"


def _ws_query(body, timeout, reconnects):
    """One query over /ws: (outcome, why): ok, cut (the stream ended before its done
    message), or failed (no handshake, or an error message). A connection closed before the
    handshake answered (nothing sent yet) is opened once more, as the frontend does: Caddy
    closes the odd upgrade that reaches the old configuration during a reload. `reconnects`,
    a list, gets each such first error."""
    for attempt in (1, 2):
        sent = []
        try:
            result = websocket(json.dumps(body), timeout, sent)
            break
        except Exception as error:  # pylint: disable=broad-except
            if isinstance(error, ConnectionError) and not sent and attempt == 1:
                reconnects.append(f"{time.time():.3f} ws: {error!r} before the handshake, opened again")
                continue
            return ("cut" if sent else "failed"), f"ws: {error!r}"
    if not result["handshake"].startswith("HTTP/1.1 101"):
        return "failed", f"ws: handshake {result['handshake']}"
    last = result["messages"][-1] if result["messages"] else {}
    if last.get("type") == "done":
        return "ok", None
    if last.get("type") == "error":
        return "failed", f"ws: error message {last.get('message')!r}"[:300]
    return "cut", f"ws: closed after {len(result['messages'])} messages, before done"


def load(spec):
    """Queries in a loop, one thread per entry of spec["http"] (POST /api/query) and of
    spec["ws"] (one query per WebSocket connection, as a stream), each entry a mode; every
    query is new (no cache hit). Runs until the file spec["stop_file"] exists (or
    spec["max_seconds"]); a query in flight then finishes. Each loop waits spec["pause"]
    seconds between its queries (a steady load, not a CPU-bound one). Returns the counts, the first
    errors and every query as [kind, start, end, outcome] (epoch seconds)."""
    timeout = spec.get("timeout", 30)
    started = time.time()
    run = uuid.uuid4().hex[:8]
    lock = threading.Lock()
    queries, errors, reconnects = [], [], []

    def stop():
        return os.path.exists(spec["stop_file"]) or time.time() - started > spec.get("max_seconds", 600)

    def worker(kind, mode, number):
        count = 0
        while not stop():
            count += 1
            body = {"query": f"load {run} {kind}{number} {count}: tell me about tiny models", "mode": mode,
                    "max_tokens": spec.get(f"{kind}_max_tokens", spec.get("max_tokens", 8))}
            begin = time.time()
            if kind == "http":
                why = _http_query(body, timeout)
                outcome = "failed" if why else "ok"
            else:
                outcome, why = _ws_query(body, timeout, reconnects)
            with lock:
                queries.append([kind, round(begin, 3), round(time.time(), 3), outcome])
                if why and len(errors) < 20:
                    errors.append(f"{time.time():.3f} {why}")
            time.sleep(spec.get("pause", 0))

    threads = [threading.Thread(target=worker, args=(kind, mode, number))
               for kind in ("http", "ws") for number, mode in enumerate(spec.get(kind, []))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    counts = {kind: {outcome: sum(1 for q in queries if q[0] == kind and q[3] == outcome)
                     for outcome in ("ok", "failed", "cut")} for kind in ("http", "ws")}
    counts["ws"]["reconnected"] = len(reconnects)
    return {"counts": counts, "errors": errors, "reconnects": reconnects[:20], "queries": queries,
            "seconds": round(time.time() - started, 3)}


def timed(spec):
    """spec["requests"] queries over spec["concurrency"] threads (default 1: one after another),
    each timed: POST spec["path"] (/api/query, or /v1/chat/completions), spec["mode"] (a tier,
    or a model for /v1) and spec["max_tokens"]; every query new unless spec["cached"] (then
    the same one, answered once before the clock starts). The latencies in seconds of the
    queries answered with spec["expect"] (default 200; in order), the statuses of the others,
    the first errors, the wall time."""
    run = uuid.uuid4().hex[:8]

    def body(number):
        text = f"timed {run} {'cached' if spec.get('cached') else number}: tell me about tiny models"
        if spec.get("path", "/api/query") == "/api/query":
            return {"query": text, "mode": spec.get("mode", "simple"), "max_tokens": spec.get("max_tokens", 8)}
        return {"model": spec.get("mode", "simple"), "max_tokens": spec.get("max_tokens", 8),
                "messages": [{"role": "user", "content": text}]}

    def call(number):
        begin = time.perf_counter()
        try:
            answer = http("POST", spec.get("path", "/api/query"), json.dumps(body(number)).encode(),
                          spec.get("timeout", 60))
            status = answer["status"]
        except Exception as error:  # pylint: disable=broad-except
            status, answer = "error", {"text": repr(error)}
        return time.perf_counter() - begin, status, answer["text"][:200]

    if spec.get("cached"):
        call(0)
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(spec.get("concurrency", 1)) as pool:
        results = list(pool.map(call, range(spec["requests"])))
    seconds = time.perf_counter() - started
    expect = spec.get("expect", 200)
    other = [(status, text) for dummy, status, text in results if status != expect]
    return {"latencies": [round(taken, 4) for taken, status, dummy in results if status == expect],
            "statuses": dict(collections.Counter(str(status) for status, dummy in other)),
            "errors": [f"{status}: {text}" for status, text in other[:5]], "seconds": round(seconds, 3)}


class RemoteLoad:
    """`stack_client.py load` in a container (the client copied to `client` there), started
    now from the controller; stop() ends it and returns its result."""

    def __init__(self, container, client, spec):
        self.container = container
        self.stop_file = f"/tmp/mmo-load-stop-{uuid.uuid4().hex[:8]}"
        self.spec = dict({"timeout": 30, "max_seconds": 600}, **spec, stop_file=self.stop_file)
        self.process = subprocess.Popen(  # pylint: disable=consider-using-with
            ["docker", "exec", container, "python3", client, "load", json.dumps(self.spec)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.result = None

    def stop(self):
        """Let the queries in flight finish; the load's result (counts, errors, queries)."""
        subprocess.run(["docker", "exec", self.container, "touch", self.stop_file], check=False)
        stdout, stderr = self.process.communicate(timeout=self.spec["timeout"] + 60)
        if self.process.returncode != 0:
            raise RuntimeError(f"the load client failed: {stderr[-2000:]}")
        self.result = json.loads(stdout)
        return self.result

    def count(self, kind, outcome):
        return self.result["counts"][kind][outcome]

    def during(self, start, end, kind="http"):
        """The queries of a kind that were in flight at some point between start and end."""
        return [q for q in self.result["queries"] if q[0] == kind and q[1] <= end and q[2] >= start]

    def summary(self):
        counts = self.result["counts"]
        return (f"http ok={counts['http']['ok']} failed={counts['http']['failed']}, ws ok={counts['ws']['ok']} "
                f"cut={counts['ws']['cut']} failed={counts['ws']['failed']} reconnected={counts['ws']['reconnected']}; "
                f"first errors: {self.result['errors'][:5]}; reconnects: {self.result['reconnects'][:5]}")


def table(title, columns, rows):
    """A Markdown table under its title, as text."""
    widths = [max(len(str(c)), *(len(str(r[i])) for r in rows)) for i, c in enumerate(columns)]
    lines = [title, "| " + " | ".join(str(c).ljust(w) for c, w in zip(columns, widths)) + " |",
             "| " + " | ".join("-" * w for w in widths) + " |"]
    lines += ["| " + " | ".join(str(v).ljust(w) for v, w in zip(row, widths)) + " |" for row in rows]
    return "\n".join(lines)


def main(argv):
    timeout = float(os.environ.get("STACK_TIMEOUT", "120"))
    if argv[0] == "get":
        result = http("GET", argv[1], timeout=timeout)
    elif argv[0] == "post":
        result = http("POST", argv[1], argv[2].encode(), timeout)
    elif argv[0] == "request":
        result = http(argv[1], argv[2], argv[3].encode() if argv[3:] else None, timeout)
    elif argv[0] == "big":
        result = big(argv[1], int(argv[2]), chunked=argv[3:] == ["chunked"], timeout=timeout)
    elif argv[0] == "load":
        result = load(json.loads(argv[1]))
    elif argv[0] == "timed":
        result = timed(json.loads(argv[1]))
    else:
        result = websocket(argv[1], timeout)
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
