"""The gateway end to end, through Caddy, on the real stack (llama-server tiers, Redis, two
replicas): the official `openai` client (models, answers non-streamed and streamed with usage,
a bad model, no key or a wrong one), the site key on /api, /v1 and /ws, the browser's login
cookie and the WebSocket Origin check, the request body limits of Caddy and of the app (no
replica restarted), and a client gone mid-generation: the backend closes its request to
llama-server at once, and the slot is free.

The `openai` client runs here on the controller; it reaches Caddy through a relay from
127.0.0.1 to the instance's port 443 (so it talks to https://localhost:PORT, the name Caddy's
certificate has), checking the certificate against Caddy's own CA.
"""
import json
import os
import socket
import socketserver
import ssl
import subprocess
import threading
import uuid

import openai
import pytest
import yaml
from stack_client import first_key

CA = "/var/lib/multimodel/caddy/caddy/pki/authorities/local/root.crt"
MODELS = {"simple", "moderate", "complex", "auto"}
FOREIGN = "https://evil.example"
# One model server alone serves the complex level: what a query of that level holds is there.
DEEP = "Q4_DEEP"


def pump(source, sink):
    """Bytes from source to sink until either side ends; then both are closed."""
    try:
        while True:
            data = source.recv(65536)
            if not data:
                break
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for end in (source, sink):
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            end.close()


class RelayHandler(socketserver.BaseRequestHandler):
    def handle(self):
        upstream = socket.create_connection(self.server.target, timeout=10)
        upstream.settimeout(None)
        back = threading.Thread(target=pump, args=(upstream, self.request), daemon=True)
        back.start()
        pump(self.request, upstream)
        back.join()


class Relay(socketserver.ThreadingTCPServer):
    """127.0.0.1:PORT on the controller, each connection relayed to `target` byte for byte
    (TLS end to end); closing one side closes the other at once, as a client gone would."""

    daemon_threads = True

    def __init__(self, target):
        self.target = target
        super().__init__(("127.0.0.1", 0), RelayHandler)
        self.port = self.server_address[1]
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def close(self):
        self.shutdown()
        self.server_close()


@pytest.fixture(scope="module")
def site(host):
    """(base URL on the controller, TLS context trusting Caddy's CA)."""
    name = host.backend.get_hostname()
    address = subprocess.run(["docker", "inspect", "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
                              name], check=True, capture_output=True, text=True).stdout.split()[0]
    relay = Relay((address, 443))
    yield f"https://localhost:{relay.port}", ssl.create_default_context(cadata=host.file(CA).content_string)
    relay.close()


@pytest.fixture
def gpt(site, api_key):
    """gpt(key=the site's, **options) -> an openai.OpenAI client of the site's /v1 (no retry)."""
    clients = []

    def make(key=api_key, timeout=60):
        url, context = site
        client = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=timeout,
                               http_client=openai.DefaultHttpxClient(verify=context, trust_env=False))
        clients.append(client)
        return client
    yield make
    for client in clients:
        client.close()


def unique(text):
    return f"{text} {uuid.uuid4().hex[:8]}"


def ask(text):
    return [{"role": "user", "content": unique(text)}]


def sandbox_key_file():
    """The controller's copy of the sandbox's site key, where inventories/local reads it."""
    path = os.path.join(os.environ["MOLECULE_PROJECT_DIRECTORY"], "inventories", "local", "group_vars", "all.yml")
    with open(path, encoding="utf-8") as source:
        return os.path.join(yaml.safe_load(source)["sandbox_artifacts"], "secrets", "backend_api_key")


def test_the_site_key_is_the_sandboxs_readable_by_the_replicas_only(host, stack, api_key):
    with open(sandbox_key_file(), encoding="utf-8") as sandbox:
        assert api_key == sandbox.read().strip(), "the host's api_keys file is not the sandbox's key"
    keys = host.file("/etc/multimodel/backend/api_keys")
    user = json.loads(host.check_output("docker inspect mmo-backend-1"))[0]["Config"]["User"]
    assert (f"{keys.uid}:{keys.gid}", keys.mode) == (user, 0o400)
    env = stack.replica_env("mmo-backend-1")
    assert env["MMO_AUTH"] == "on"
    # The replica reads the same file, mounted.
    mounted = host.check_output(f"docker exec mmo-backend-1 cat {env['MMO_API_KEYS_FILE']}")
    assert first_key(mounted) == api_key


def test_models_are_the_levels_and_auto(gpt):
    models = gpt().models.list().data
    assert {model.id for model in models} == MODELS
    assert all(model.object == "model" and model.owned_by == "multimodel" for model in models)


@pytest.mark.parametrize("model", sorted(MODELS))
def test_answered_with_usage(gpt, model):
    reply = gpt().chat.completions.create(model=model, messages=ask("What is a tiny model?"), max_tokens=16)
    assert reply.object == "chat.completion"
    assert len(reply.choices) == 1 and reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content.strip()
    assert reply.choices[0].finish_reason in ("stop", "length")
    usage = reply.usage
    assert usage.prompt_tokens > 0 and 0 < usage.completion_tokens <= 16
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_streamed_with_usage(gpt):
    chunks = list(gpt().chat.completions.create(model="simple", messages=ask("Stream a few words"), max_tokens=16,
                                                stream=True, stream_options={"include_usage": True}))
    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    assert len({chunk.id for chunk in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    with_choices = [chunk for chunk in chunks if chunk.choices]
    text = "".join(chunk.choices[0].delta.content or "" for chunk in with_choices)
    assert text.strip(), chunks
    finished = [chunk.choices[0].finish_reason for chunk in with_choices if chunk.choices[0].finish_reason]
    assert finished in (["stop"], ["length"]) and with_choices[-1].choices[0].finish_reason, chunks
    # The usage chunk comes last, with no choice.
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None, last
    assert last.usage.completion_tokens > 0
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens


def test_the_same_request_is_answered_from_the_cache(gpt):
    messages = ask("Remember this answer")
    first = gpt().chat.completions.create(model="moderate", messages=messages, max_tokens=16, temperature=1.0)
    again = gpt().chat.completions.create(model="moderate", messages=messages, max_tokens=16, temperature=1.0)
    assert again.choices[0].message.content == first.choices[0].message.content
    assert again.usage == first.usage
    # The streamed form of the same request replays the cached answer.
    streamed = list(gpt().chat.completions.create(model="moderate", messages=messages, max_tokens=16, temperature=1.0,
                                                  stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == first.choices[0].message.content


def test_a_bad_model_is_not_found(gpt):
    with pytest.raises(openai.NotFoundError) as raised:
        gpt().chat.completions.create(model="gpt-4o", messages=ask("Hello"), max_tokens=4)
    assert raised.value.code == "model_not_found"
    assert "gpt-4o" in raised.value.message


def test_max_tokens_above_the_levels_bound_is_refused(gpt, stack):
    limit = json.loads(stack.replica_env("mmo-backend-1")["MMO_TIER_LIMITS_JSON"])["simple"]["max_tokens"]
    with pytest.raises(openai.BadRequestError) as raised:
        gpt().chat.completions.create(model="simple", messages=ask("Hello"), max_tokens=limit + 1)
    assert raised.value.param == "max_tokens"
    assert str(limit) in raised.value.message


@pytest.mark.parametrize("key", [None, "not-the-site-key-0123456789"], ids=["no-key", "wrong-key"])
def test_without_the_key_every_api_is_refused(gpt, stack, key):
    reason = "invalid" if key else "missing"
    refused_before = stack.metric("mmo_auth_failures_total", reason=reason)
    client = gpt(key=key or "unused")
    unset = {} if key else {"extra_headers": {"Authorization": openai.omit}}
    with pytest.raises(openai.AuthenticationError) as raised:
        client.chat.completions.create(model="simple", messages=ask("Hello"), max_tokens=4, **unset)
    assert raised.value.status_code == 401 and raised.value.code == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        client.models.list(**unset)
    # The site's own API and the WebSocket: a plain 401, whatever the Origin.
    env = {"STACK_KEY": key} if key else {"STACK_KEY_FILE": ""}
    answer = stack.client("post", "/api/query", json.dumps({"query": unique("Hello"), "max_tokens": 4}), env=env)
    assert answer["status"] == 401, answer
    assert {k.lower(): v for k, v in answer["headers"].items()}["www-authenticate"] == "Bearer"
    assert "detail" in answer["json"], answer
    upgrade = stack.client("ws", json.dumps({"query": unique("Hello"), "max_tokens": 4}), env=env)
    assert upgrade["handshake"].startswith("HTTP/1.1 401"), upgrade
    # Each refusal is counted, by reason.
    assert stack.metric("mmo_auth_failures_total", reason=reason) >= refused_before + 4
    # The public health check needs no key.
    health = stack.client("get", "/health", env={"STACK_KEY_FILE": ""})
    assert health["status"] == 200 and health["json"] == {"status": "ok"}


def test_metric_labels_come_from_a_fixed_set(stack):
    """Any HTTP method token reaches the replicas through Caddy; the metrics label it "other",
    never with the token itself (one series per token would grow without bound)."""
    token = "PROBE" + uuid.uuid4().hex[:6].upper()
    before = stack.metric("mmo_http_requests_total", method="other")
    for dummy in range(2):  # round robin: both replicas
        answer = stack.client("request", token, "/api/query")
        assert answer is not None and answer["status"] in (400, 405, 501), answer
    assert stack.metric("mmo_http_requests_total", method="other") >= before + 2
    assert stack.metric("mmo_http_requests_total", method=token) == 0


def cookie_of(answer):
    """The mmo_key cookie an answer sets: (name=value, its attributes lower-cased)."""
    value = {k.lower(): v for k, v in answer["headers"].items()}["set-cookie"]
    pair, *attributes = [part.strip() for part in value.split(";")]
    return pair, [attribute.lower() for attribute in attributes]


def test_the_browser_logs_in_and_its_websocket_is_accepted_from_the_site_only(stack):
    login = stack.client("post", "/api/login", "")
    assert login["status"] == 204, login
    pair, attributes = cookie_of(login)
    assert pair.startswith("mmo_key=") and len(pair) > len("mmo_key=")
    assert {"httponly", "samesite=strict", "secure", "path=/"} <= set(attributes), attributes
    query = json.dumps({"query": unique("Stream a few words"), "mode": "simple", "max_tokens": 8})
    with_cookie = {"STACK_KEY_FILE": "", "STACK_COOKIE": pair}

    # The site's own page (Origin https://localhost), with the cookie alone: accepted, answered.
    accepted = stack.client("ws", query, env=with_cookie)
    assert accepted["handshake"].startswith("HTTP/1.1 101"), accepted
    assert accepted["messages"][-1]["type"] == "done", accepted["messages"]
    assert stack.client("post", "/api/query", query, env=with_cookie)["status"] == 200
    assert stack.client("get", "/api/session", env=with_cookie)["status"] == 204
    assert stack.client("get", "/api/session", env={"STACK_KEY_FILE": ""})["status"] == 401
    # Another site's page: refused before the upgrade, with the cookie or with the key (counted).
    refused_before = stack.metric("mmo_ws_refused_total")
    for env in (with_cookie, {}):
        refused = stack.client("ws", query, env=dict(env, STACK_ORIGIN=FOREIGN))
        assert refused["handshake"].startswith("HTTP/1.1 403"), refused
        assert refused["messages"] == []
    assert stack.metric("mmo_ws_refused_total") >= refused_before + 2
    # A client that is no browser sends no Origin: accepted with the key.
    assert stack.client("ws", query, env={"STACK_ORIGIN": ""})["handshake"].startswith("HTTP/1.1 101")

    logout = stack.client("post", "/api/logout", "", env={"STACK_KEY_FILE": ""})
    assert logout["status"] == 204, logout
    pair, attributes = cookie_of(logout)
    assert pair == "mmo_key=" and "max-age=0" in attributes, (pair, attributes)


@pytest.mark.parametrize("path, chunked, status", [("/api/query", False, 413), ("/api/query", True, 411),
                                                   ("/v1/chat/completions", False, 413)],
                         ids=["api", "api-chunked", "v1"])
def test_a_1mb_body_is_refused_by_caddy_and_no_replica_restarts(stack, path, chunked, status):
    """Caddy refuses it (caddy_request_body_max_bytes: 413 from its length; without a length,
    chunked, 411) before a replica reads it, and does not hold it against the replicas: a
    refused body is the client's fault, and counted as a replica's failure it would take the
    whole site out of rotation for fail_duration."""
    stack.wait("no failure held against a replica", lambda: not any(stack.caddy_upstreams().values()), 15)
    before, refused = stack.started_at(), stack.metric("mmo_http_body_too_large_total")
    answer = stack.client("big", path, str(1024 * 1024), *(["chunked"] if chunked else []), timeout=60)
    assert answer is not None and answer["status"] == status, answer
    assert answer["json"] is None, f"not Caddy's own answer (the app's has a JSON body): {answer}"
    assert stack.metric("mmo_http_body_too_large_total") == refused, "the body reached a replica"
    assert not any(stack.caddy_upstreams().values()), f"Caddy counts the refused body against the replicas: " \
        f"{stack.caddy_upstreams()}"
    assert stack.started_at() == before, "a container restarted"
    after = stack.query()
    assert after is not None and after["status"] == 200, after


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_the_app_refuses_a_body_over_its_own_limit(stack, chunked):
    """Behind Caddy's smaller limit, the app's own (backend_max_body_bytes): a body one byte
    over it, sent to a replica on the internal network, gets the app's 413, before parsing."""
    before = stack.started_at()
    limit = int(stack.replica_env("mmo-backend-1")["MMO_MAX_BODY_BYTES"])
    answer = stack.internal("mmo-backend-1", "big", "/api/query", str(limit + 1), *(["chunked"] if chunked else []),
                            key=True)
    assert answer["status"] == 413, answer
    assert answer["json"] is not None and "detail" in answer["json"], answer
    assert stack.started_at() == before, "a container restarted"


def held_requests(stack, sources):
    """The connections to the deep tier's llama-server from the backend replicas' addresses
    that are open and hold a request it has not read (the server is stopped)."""
    held = []
    for line in stack.sh(f"ss -Htn state established '( sport = :{stack.llama_ports[DEEP]} )'").splitlines():
        received, dummy, dummy2, peer = line.split()[:4]
        if peer.rsplit(":", 1)[0].strip("[]") in sources and int(received) > 0:
            held.append(peer)
    return held


def replica_addresses(host):
    found = json.loads(host.check_output("docker inspect mmo-backend-1 mmo-backend-2"))
    return {network["IPAddress"] for c in found for network in c["NetworkSettings"]["Networks"].values()}


def stream_then_leave(gpt, seconds):
    """A streamed /v1 request of the complex level whose client gives up after `seconds`; how
    it ended."""
    try:
        stream = gpt(timeout=seconds).chat.completions.create(
            model="complex", messages=ask("Write a very long story"), max_tokens=512, stream=True)
        return f"answered: {list(stream)}"
    except Exception as error:  # pylint: disable=broad-except  # the timeout, whichever layer raises it
        return f"gave up: {error!r}"


@pytest.mark.parametrize("kind", ["api", "v1-stream", "ws"])
def test_a_client_gone_mid_generation_closes_the_upstream_request(host, stack, gpt, kind):
    """The tiny models generate thousands of tokens a second, so a generation cannot be caught
    running: the deep tier's llama-server (the only server of the complex level) is stopped
    (SIGSTOP) first, so the query waits there, its request unread (Recv-Q). The client gives
    up after 6 s; the backend must then close its request to llama-server at once (the
    connection leaves ESTABLISHED; otherwise it would wait for the answer until its request
    timeout). Resumed, the server has every slot free within seconds and answers the next
    query."""
    sources = replica_addresses(host)
    query = json.dumps({"query": unique("Write a very long story"), "mode": "complex", "max_tokens": 512})
    client = {"api": lambda: stack.client("post", "/api/query", query, timeout=6),
              "v1-stream": lambda: stream_then_leave(gpt, 6),
              "ws": lambda: stack.client("ws", query, timeout=6)}[kind]
    ended = []
    thread = threading.Thread(target=lambda: ended.append(client()))
    host.run_expect([0], f"systemctl kill --signal=SIGSTOP llama-server@{DEEP}")
    try:
        thread.start()
        stack.wait("the query held by the stopped llama-server", lambda: held_requests(stack, sources), 5,
                   interval=0.1)
        thread.join(30)
        assert not thread.is_alive(), "the client did not give up"
        assert ended[0] is None or ended[0].startswith("gave up"), f"the query was answered: {ended[0]}"
        stack.wait("the backend closing its request to llama-server after the client left",
                   lambda: not held_requests(stack, sources), 5, interval=0.1)
    finally:
        host.run_expect([0], f"systemctl kill --signal=SIGCONT llama-server@{DEEP}")
    stack.wait("every slot of the resumed llama-server free",
               lambda: not any(slot["is_processing"] for slot in stack.llama_slots(DEEP)), 5, interval=0.2)
    assert stack.llama_healthy(DEEP)
    answer = stack.query(mode="complex")
    assert answer is not None and answer["status"] == 200, answer
