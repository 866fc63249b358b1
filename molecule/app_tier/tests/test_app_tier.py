"""End to end: HTTPS through Caddy to the backend replicas, Redis and real llama-server tiers."""
import json
import os
import shlex
import subprocess
import time
import uuid

import pytest

CLIENT = "/usr/local/lib/mmo-stack-client.py"
CA = "/var/lib/multimodel/caddy/caddy/pki/authorities/local/root.crt"
REDIS_PASSWORD_FILE = "/etc/multimodel/redis/password"
SEARXNG_SETTINGS = "/etc/multimodel/searxng/settings.yml"
CONTAINERS = ["mmo-redis", "mmo-searxng", "mmo-backend-1", "mmo-backend-2", "mmo-caddy"]
CADDY_PORTS = ["443/tcp", "443/udp", "80/tcp"]


@pytest.fixture(scope="module")
def client(host):
    """Copy the stdlib HTTPS/WebSocket client to the instance; return a runner for it."""
    source = os.path.join(os.path.dirname(__file__), "stack_client.py")
    subprocess.run(["docker", "cp", source, f"{host.backend.get_hostname()}:{CLIENT}"], check=True)

    def run(*args):
        result = host.run("python3 " + " ".join(shlex.quote(a) for a in (CLIENT,) + args))
        assert result.rc == 0, result.stderr
        return json.loads(result.stdout)
    return run


def query(client, text, mode="simple", max_tokens=8):
    body = {"query": text, "mode": mode, "max_tokens": max_tokens}
    return client("post", "/api/query", json.dumps(body))


def unique(text):
    return f"{text} {uuid.uuid4().hex[:8]}"


def containers(host_json):
    """name -> (Id, State.StartedAt) of the stack's containers: proof that nothing was touched."""
    found = host_json("docker inspect " + " ".join(CONTAINERS))
    return {c["Name"].lstrip("/"): (c["Id"], c["State"]["StartedAt"]) for c in found}


@pytest.mark.parametrize("name", CONTAINERS)
def test_every_container_is_healthy_and_hardened(host_json, assert_hardened, name):
    assert_hardened(host_json(f"docker inspect {name}")[0], ports=CADDY_PORTS if name == "mmo-caddy" else ())


def test_only_caddy_publishes_ports(host_json):
    published = {c["Name"].lstrip("/"): sorted(c["HostConfig"]["PortBindings"] or {})
                 for c in host_json("docker inspect " + " ".join(CONTAINERS))}
    assert published.pop("mmo-caddy") == CADDY_PORTS
    assert all(ports == [] for ports in published.values()), published


def test_https_with_caddys_own_ca_and_security_headers(host, client):
    assert host.file(CA).exists
    page = client("get", "/")
    assert page["status"] == 200 and "<html" in page["text"].lower()
    headers = {k.lower(): v for k, v in page["headers"].items()}
    assert headers["strict-transport-security"].startswith("max-age=")
    assert headers["x-content-type-options"] == "nosniff"
    assert "server" not in headers
    # An unknown path is the single-page app, not a 404.
    assert client("get", "/some/client/route")["text"] == page["text"]
    # Plain HTTP is redirected to HTTPS.
    redirect = host.run("curl -s -o /dev/null -w '%{http_code} %{redirect_url}' http://localhost/api/query")
    assert redirect.stdout.startswith("308 https://localhost/")


@pytest.mark.parametrize("replica", ["mmo-backend-1", "mmo-backend-2"])
def test_backend_ready_on_the_internal_network(stack, replica):
    """Readiness and metrics are for the internal network (monitoring): asked of each replica
    from the other one, with no key."""
    ready = stack.internal(replica, "get", "/health/ready")
    assert ready["status"] == 200, ready
    assert ready["json"]["redis"] == "ok"
    assert set(ready["json"]["tiers"]) == {"simple", "moderate", "complex"}
    metrics = stack.internal(replica, "get", "/metrics")
    assert metrics["status"] == 200 and metrics["text"].startswith("# HELP mmo_"), metrics


@pytest.mark.parametrize("path", ["/health/ready", "/health/anything", "/metrics", "/metrics/x"])
def test_backend_internal_endpoints_are_not_served_by_caddy(client, path):
    """Only /health is public: readiness (it names instances and errors) and metrics get
    Caddy's plain 404, with the site key too (the client sends it), not the frontend's page."""
    answer = client("get", path)
    assert answer["status"] == 404, answer
    assert "<html" not in answer["text"].lower() and "mmo_" not in answer["text"] and answer["json"] is None, answer
    assert client("get", "/health")["json"] == {"status": "ok"}


def test_query_answered_by_a_real_model_then_cached(client):
    text = unique("What is a tiny model")
    first = query(client, text)
    assert first["status"] == 200, first
    answer = first["json"]
    assert answer["tier"] == "simple" and answer["instance"] in ("Q2_FAST_1", "Q2_FAST_2")
    assert answer["answer"].strip() and answer["cached"] is False
    second = query(client, text)
    assert second["status"] == 200
    assert second["json"]["cached"] is True and second["json"]["answer"] == answer["answer"]


@pytest.mark.parametrize("mode, instance", [("moderate", "Q3_SYNTH"), ("complex", "Q4_DEEP")])
def test_each_tier_answers(client, mode, instance):
    answer = query(client, unique("Compare two approaches"), mode=mode)
    assert answer["status"] == 200, answer
    assert answer["json"]["instance"] == instance


def test_websocket_streams_tokens(client):
    result = client("ws", json.dumps({"query": unique("Stream a few words"), "mode": "simple", "max_tokens": 8}))
    assert result["handshake"].startswith("HTTP/1.1 101"), result
    kinds = [m["type"] for m in result["messages"]]
    assert kinds[-1] == "done", result["messages"]
    assert kinds.count("token") >= 2, "expected several streamed token messages"


def test_fast_queries_survive_one_fast_replica_down(host, client):
    host.run_expect([0], "systemctl stop llama-server@Q2_FAST_1")
    try:
        served = {query(client, unique("Still there"))["json"]["instance"] for dummy in range(4)}
        assert served == {"Q2_FAST_2"}
    finally:
        host.run_expect([0], "systemctl start llama-server@Q2_FAST_1")
        deadline = time.time() + 60
        while host.run("curl -fs http://127.0.0.1:8080/health").rc != 0:
            assert time.time() < deadline, "Q2_FAST_1 did not come back"
            time.sleep(1)


def test_queries_survive_one_backend_replica_down(host, client):
    host.run_expect([0], "docker stop mmo-backend-1")
    try:
        for dummy in range(4):
            answer = query(client, unique("Through the other replica"))
            assert answer["status"] == 200, answer["text"]
    finally:
        host.run_expect([0], "docker start mmo-backend-1")


def test_no_secret_in_any_container_environment(host, host_json, api_key):
    password = host.file(REDIS_PASSWORD_FILE).content_string.strip()
    secret_key = [line.split(":", 1)[1].strip() for line in host.file(SEARXNG_SETTINGS).content_string.splitlines()
                  if line.strip().startswith("secret_key:")][0]
    assert len(secret_key) >= 16
    for container in host_json("docker inspect " + " ".join(CONTAINERS)):
        assert password not in json.dumps(container["Config"]), container["Name"]
        assert secret_key not in json.dumps(container["Config"]), container["Name"]
        assert api_key not in json.dumps(container["Config"]), container["Name"]
    settings = host.file(SEARXNG_SETTINGS)
    assert (settings.uid, settings.mode) == (10888, 0o400)  # searxng_uid: outside the host's system range


def backend_env(host_json, replica="mmo-backend-1"):
    return dict(item.split("=", 1) for item in host_json(f"docker inspect {replica}")[0]["Config"]["Env"])


def test_searxng_answers_the_backend(host, host_json, client):
    assert backend_env(host_json)["MMO_SEARXNG_URL"] == "http://searxng:8080"
    found = json.loads(host.check_output(
        "docker exec mmo-backend-1 python3 -c \"import urllib.request as u; "
        "print(u.urlopen('http://searxng:8080/search?q=llama&format=json', timeout=30).read().decode())\""))
    assert found["query"] == "llama" and isinstance(found["results"], list)
    # Through the whole stack: a query that asks for web results is answered (the sandbox's
    # SearXNG has no internet access, so it finds nothing to add).
    answer = client("post", "/api/query", json.dumps({"query": unique("Search the web"), "mode": "simple",
                                                      "max_tokens": 8, "use_web": True}))
    assert answer["status"] == 200, answer["text"]


def test_metrics_of_backend_and_caddy(host, client):
    def metrics(replica):
        return host.run(f"docker exec {replica} python3 -c \"import urllib.request as u;"
                        " print(u.urlopen('http://127.0.0.1:8000/metrics').read().decode())\"").stdout

    # Round robin spreads the queries; a replica restarted by an earlier test rejoins within
    # one active health check interval.
    replicas = ("mmo-backend-1", "mmo-backend-2")
    deadline = time.time() + 60
    while not all("mmo_query_latency_seconds_bucket" in metrics(r) for r in replicas):
        assert time.time() < deadline, "queries did not reach both replicas"
        assert query(client, unique("Count me"))["status"] == 200
    for replica in replicas:
        # Caddy's health checks.
        assert any(line.startswith("mmo_http_requests_total{") and 'endpoint="/health"' in line
                   for line in metrics(replica).splitlines())
    caddy = host.run("docker exec mmo-caddy wget -qO- http://127.0.0.1:9180/metrics")
    assert "caddy_http_request" in caddy.stdout


def test_cached_answer_survives_a_redis_recreate(host, client, playbook):
    text = unique("Remember this")
    answer = query(client, text)["json"]["answer"]
    time.sleep(2)  # appendfsync everysec
    host.run_expect([0], "docker rm -f mmo-redis")
    result = playbook("converge.yml", tags="app")
    assert result.returncode == 0, result.stdout[-3000:]
    again = query(client, text)
    assert again["status"] == 200 and again["json"]["cached"] is True and again["json"]["answer"] == answer


def test_searxng_off_removes_it_and_unwires_the_backend(host, host_json, playbook):
    result = playbook("converge.yml", {"searxng_enabled": False}, tags="app")
    assert result.returncode == 0, result.stdout[-3000:]
    assert host.run("docker inspect mmo-searxng").rc != 0
    assert backend_env(host_json)["MMO_SEARXNG_URL"] == ""
    result = playbook("converge.yml", tags="app")
    assert result.returncode == 0, result.stdout[-3000:]
    assert backend_env(host_json)["MMO_SEARXNG_URL"] == "http://searxng:8080"


@pytest.mark.parametrize("extra_vars, message", [
    ({"redis_password": ""}, "redis_password is not set"),
    ({"searxng_secret_key": "short"}, "searxng_secret_key from a vaulted variable"),
    ({"caddy_site_extra": "no_such_directive on"}, "no_such_directive"),
])
def test_bad_input_fails_and_leaves_the_stack_untouched(host, host_json, client, playbook, extra_vars, message):
    before = containers(host_json)
    caddyfile = host.file("/etc/multimodel/caddy/Caddyfile").content_string
    result = playbook("converge.yml", extra_vars, tags="app")
    assert result.returncode != 0
    assert message in result.flat, result.stdout[-3000:]
    assert containers(host_json) == before
    assert host.file("/etc/multimodel/caddy/Caddyfile").content_string == caddyfile
    assert query(client, unique("Still serving"))["status"] == 200
