"""HTTPS and WebSocket client the app_tier suite runs on the test instance (Python stdlib only).

Talks to Caddy as a browser would: https://localhost, checking the certificate against the root
of Caddy's own CA (tls internal). Prints one JSON document.

On the controller, the suite and bench/bench_faults.py import it for RemoteLoad (this
client's load, run in the instance through docker exec) and table().

  stack_client.py get PATH
  stack_client.py post PATH JSON
  stack_client.py ws JSON            (one query over wss://localhost/ws)
  stack_client.py load SPEC          (queries in a loop until a stop file appears: see load())
"""
import base64
import json
import os
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
CA = os.environ.get("STACK_CA", "/var/lib/multimodel/caddy/caddy/pki/authorities/local/root.crt")


def context():
    return ssl.create_default_context(cafile=CA)


def http(method, path, body=None, timeout=120):
    request = urllib.request.Request(f"https://{HOST}:{PORT}{path}", method=method, data=body,
                                     headers={"Content-Type": "application/json"} if body else {})
    try:
        with urllib.request.urlopen(request, context=context(), timeout=timeout) as answer:
            status, headers, data = answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as error:
        status, headers, data = error.code, dict(error.headers), error.read()
    text = data.decode("utf-8", "replace")
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    return {"status": status, "headers": headers, "json": parsed, "text": text[:2000]}


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
    raw = socket.create_connection((HOST, PORT), timeout=timeout)
    sock = context().wrap_socket(raw, server_hostname=HOST)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET /ws HTTP/1.1\r\nHost: {HOST}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nOrigin: https://{HOST}\r\n\r\n").encode())
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
    elif argv[0] == "load":
        result = load(json.loads(argv[1]))
    else:
        result = websocket(argv[1], timeout)
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
