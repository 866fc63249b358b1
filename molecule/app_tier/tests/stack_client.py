"""HTTPS and WebSocket client the app_tier suite runs on the test instance (Python stdlib only).

Talks to Caddy as a browser would: https://localhost, checking the certificate against the root
of Caddy's own CA (tls internal). Prints one JSON document.

  stack_client.py get PATH
  stack_client.py post PATH JSON
  stack_client.py ws JSON            (one query over wss://localhost/ws)
"""
import base64
import json
import os
import socket
import ssl
import struct
import sys
import urllib.error
import urllib.request

HOST = os.environ.get("STACK_HOST", "localhost")
PORT = int(os.environ.get("STACK_PORT", "443"))
CA = os.environ.get("STACK_CA", "/var/lib/multimodel/caddy/caddy/pki/authorities/local/root.crt")


def context():
    return ssl.create_default_context(cafile=CA)


def http(method, path, body=None):
    request = urllib.request.Request(f"https://{HOST}:{PORT}{path}", method=method, data=body,
                                     headers={"Content-Type": "application/json"} if body else {})
    try:
        with urllib.request.urlopen(request, context=context(), timeout=120) as answer:
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


def websocket(message):
    raw = socket.create_connection((HOST, PORT), timeout=120)
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


def main(argv):
    if argv[0] == "get":
        result = http("GET", argv[1])
    elif argv[0] == "post":
        result = http("POST", argv[1], argv[2].encode())
    else:
        result = websocket(argv[1])
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
