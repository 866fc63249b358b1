"""The backend role: reference image built offline, replicas, secrets, readiness gate, checks,
the site's API keys, a rotated secret applied after a failed run, a replica that drains its
requests when replaced."""
import json
import shlex
import threading
import time

import pytest

REPLICAS = ["mmo-backend-1", "mmo-backend-2"]
PASSWORD = "molecule-backend-Redis-4d2e"
API_KEY = "molecule-backend-llama-key-7c1f"
# backend_api_keys in molecule.yml; the calls read the key from the host's file, as a client
# given it would.
SITE_KEY = "molecule-backend-api-key-5b9e0c"
SITE_KEYS_FILE = "/etc/multimodel/backend/api_keys"
# A request from inside a replica (or a client container): the site key, when given, from the
# MMO_TEST_KEY environment of the docker exec/run (never in a replica's configuration). Prints
# the body, and fails unless the answer is a 2xx.
PROBE = ("import json, os, sys, urllib.request; key = os.environ.get('MMO_TEST_KEY'); "
         "r = urllib.request.Request('http://127.0.0.1:8000' + sys.argv[1], "
         "data=sys.argv[2].encode() if len(sys.argv) > 2 else None, headers=dict({'Content-Type': 'application/json'}, "
         "**({'Authorization': 'Bearer ' + key} if key else {}))); "
         "print(urllib.request.urlopen(r, timeout=60).read().decode())")
# The same request, any status: prints {status, headers, body}.
STATUS_PROBE = PROBE.replace("urllib.request;", "urllib.error, urllib.request;", 1).replace(
    "print(urllib.request.urlopen(r, timeout=60).read().decode())", """
try:
    a = urllib.request.urlopen(r, timeout=60)
except urllib.error.HTTPError as error:
    a = error
print(json.dumps({'status': a.getcode(), 'headers': dict(a.headers), 'body': a.read().decode()}))""")


def site_key(host):
    """The site key as the role wrote it on the host (first non-comment line)."""
    lines = host.file(SITE_KEYS_FILE).content_string.splitlines()
    return next(line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#"))


def exec_probe(host, replica, probe, path, body=None, key=None):
    args = [path] + ([json.dumps(body)] if body is not None else [])
    env = f"-e MMO_TEST_KEY={shlex.quote(key)} " if key else ""
    return host.run(f"docker exec {env}{replica} python3 -c {shlex.quote(probe)} "
                    + " ".join(shlex.quote(a) for a in args))


def call(host, replica, path, body=None):
    """The JSON a 2xx answer of the replica has, the site key sent (the probes need none)."""
    result = exec_probe(host, replica, PROBE, path, body, site_key(host))
    assert result.rc == 0, f"{replica} {path}: {result.stderr[-2000:]}"
    return json.loads(result.stdout)


def status(host, replica, path, body=None, key=None):
    """{status, headers (lower-cased names), body} of any answer of the replica."""
    result = exec_probe(host, replica, STATUS_PROBE, path, body, key)
    assert result.rc == 0, result.stderr[-2000:]
    answer = json.loads(result.stdout)
    answer["headers"] = {name.lower(): value for name, value in answer["headers"].items()}
    return answer


def state(host_json):
    """name -> (Id, StartedAt) of every backend replica."""
    found = host_json("docker inspect $(docker ps -aq --filter label=org.multimodel.component=backend)")
    return {c["Name"].lstrip("/"): (c["Id"], c["State"]["StartedAt"]) for c in found}


@pytest.fixture
def inspect(host_json):
    return host_json("docker container inspect " + " ".join(REPLICAS))


def test_replicas_run_hardened_from_the_built_reference_image(inspect, assert_hardened):
    for replica in inspect:
        assert_hardened(replica, user="10001:10001", labels={"org.multimodel.test": "backend"},
                        networks=["mmo-internal", "mmo-backend-egress"], aliases={"mmo-internal": "backend"})
        assert replica["Config"]["Image"].startswith("multimodel/backend:")
        command = replica["Config"]["Cmd"]
        assert command[:2] == ["mmo-serve", "multimodel_backend.main:app"]  # uvicorn with the drain
        assert command[command.index("--workers") + 1] == "2"
        assert command[command.index("--timeout-graceful-shutdown") + 1] == "95"  # backend_stop_timeout - 5
        assert replica["Config"]["StopTimeout"] == 100
        # The secret files' digest: a rotated secret recreates the replica.
        assert len(replica["Config"]["Labels"]["org.multimodel.config-sha256"]) == 64
    assert inspect[0]["Image"] == inspect[1]["Image"]


def test_environment_from_the_settings_without_secrets(inspect):
    env = dict(item.split("=", 1) for item in inspect[0]["Config"]["Env"])
    tiers = json.loads(env["MMO_TIERS_JSON"])
    assert [t["complexity"] for t in tiers] == ["simple", "moderate", "complex"]
    assert tiers[0] == {"name": "tiny-simple", "url": "http://host.docker.internal:8090",
                        "complexity": "simple", "alias": "tiny"}
    assert env["MMO_REDIS_URL_FILE"] == "/etc/mmo-backend/redis_url"
    assert env["MMO_LLAMA_API_KEY_FILE"] == "/etc/mmo-backend/llama_api_key"
    assert env["PROMETHEUS_MULTIPROC_DIR"] == "/run/prometheus"
    assert env["MMO_DRAIN_DELAY"] == "2"
    for replica in inspect:
        assert PASSWORD not in json.dumps(replica["Config"]) and API_KEY not in json.dumps(replica["Config"])


def test_secret_file_readable_by_the_app_user_only(host):
    url_file = host.file("/etc/multimodel/backend/redis_url")
    assert (url_file.uid, url_file.gid, url_file.mode) == (10001, 10001, 0o400)
    assert url_file.content_string.strip() == f"redis://:{PASSWORD}@redis:6379/0"
    key_file = host.file("/etc/multimodel/backend/llama_api_key")
    assert (key_file.uid, key_file.gid, key_file.mode) == (10001, 10001, 0o400)
    assert key_file.content_string.strip() == API_KEY
    assert host.file("/etc/multimodel/backend").mode == 0o700


def test_site_keys_file_readable_by_the_app_user_only(host, inspect):
    keys = host.file(SITE_KEYS_FILE)
    assert (keys.uid, keys.gid, keys.mode) == (10001, 10001, 0o400)
    assert [line for line in keys.content_string.splitlines() if line.strip()] == [SITE_KEY]
    for replica in inspect:
        env = dict(item.split("=", 1) for item in replica["Config"]["Env"])
        assert env["MMO_AUTH"] == "on" and env["MMO_API_KEYS_FILE"] == "/etc/mmo-backend/api_keys"
        assert SITE_KEY not in json.dumps(replica["Config"])
        # The mounted file is the host's (its digest is in the label: a new key recreates the replica).
        assert host.check_output(f"docker exec {replica['Name'].lstrip('/')} cat /etc/mmo-backend/api_keys") \
            == keys.content_string.strip()


@pytest.mark.parametrize("key", [None, "not-the-site-key-0123456789"], ids=["no-key", "wrong-key"])
def test_the_api_needs_the_site_key(host, key):
    query = {"query": "who are you", "mode": "simple", "max_tokens": 2}
    refused = status(host, "mmo-backend-1", "/api/query", query, key)
    assert refused["status"] == 401 and refused["headers"]["www-authenticate"] == "Bearer", refused
    assert "detail" in json.loads(refused["body"])
    models = status(host, "mmo-backend-1", "/v1/models", key=key)
    assert models["status"] == 401, models
    assert json.loads(models["body"])["error"]["code"] == "invalid_api_key"
    # The probes need none (the proxy routes only /health; the others are internal).
    for path in ("/health", "/health/ready", "/metrics"):
        assert status(host, "mmo-backend-1", path, key=key)["status"] == 200, path


def test_the_site_key_opens_the_api(host):
    key = site_key(host)
    assert key == SITE_KEY
    models = json.loads(status(host, "mmo-backend-2", "/v1/models", key=key)["body"])
    assert {model["id"] for model in models["data"]} == {"simple", "moderate", "complex", "auto"}


def test_ready_with_redis_and_every_tier(host):
    for replica in REPLICAS:
        ready = call(host, replica, "/health/ready")
        assert ready["status"] == "ready" and ready["redis"] == "ok"
        assert set(ready["tiers"]) == {"simple", "moderate", "complex"}


def test_query_answered_by_llama_server_then_cached(host):
    body = {"query": "backend scenario question", "mode": "moderate", "max_tokens": 4}
    first = call(host, "mmo-backend-1", "/api/query", body)
    assert first["instance"] == "tiny-moderate" and first["cached"] is False and first["answer"].strip()
    # The cache is Redis, shared by the replicas.
    second = call(host, "mmo-backend-2", "/api/query", body)
    assert second["cached"] is True and second["answer"] == first["answer"]


def test_metrics_sum_every_worker(host):
    for dummy in range(4):
        call(host, "mmo-backend-1", "/health")
    metrics = host.check_output("docker exec mmo-backend-1 python3 -c \"import urllib.request as u;"
                                " print(u.urlopen('http://127.0.0.1:8000/metrics').read().decode())\"")
    # With two workers, /metrics sums what every worker counted (PROMETHEUS_MULTIPROC_DIR).
    lines = [line for line in metrics.splitlines()
             if line.startswith("mmo_http_requests_total{") and 'endpoint="/health"' in line and 'status="200"' in line]
    assert lines and float(lines[0].rsplit(" ", 1)[1]) >= 4


def test_scale_up_then_down(host, host_json, playbook):
    result = playbook("backend.yml", {"test_replicas": 3})
    assert result.returncode == 0, result.stdout[-3000:]
    assert set(state(host_json)) == {"mmo-backend-1", "mmo-backend-2", "mmo-backend-3"}
    result = playbook("backend.yml")
    assert result.returncode == 0, result.stdout[-3000:]
    assert set(state(host_json)) == set(REPLICAS)


def test_a_replica_that_is_not_ready_stops_the_rollout(host, host_json, playbook):
    before = state(host_json)
    unreachable = {"test_complex_url": "http://host.docker.internal:8099", "test_ready_timeout": 6}
    result = playbook("backend.yml", unreachable)
    assert result.returncode != 0
    message = result.flat
    assert "backend replica mmo-backend-1 is running but not ready" in message
    assert "tier complex" in message
    after = state(host_json)
    assert after["mmo-backend-1"] != before["mmo-backend-1"]  # replaced, and not ready
    assert after["mmo-backend-2"] == before["mmo-backend-2"]  # untouched: still serving
    assert call(host, "mmo-backend-2", "/health/ready")["status"] == "ready"
    result = playbook("backend.yml")
    assert result.returncode == 0, result.stdout[-3000:]


@pytest.mark.parametrize("extra_vars, message", [
    ({"redis_password": ""}, "backend_redis_password is empty"),
    ({"backend_tiers": [{"name": "only", "url": "http://host.docker.internal:8090", "complexity": "simple"}]},
     "needs at least one instance (missing: moderate, complex)"),
    ({"backend_tiers": [{"name": "bad", "url": "ftp://x", "complexity": "simple"}]}, "needs a name, an http(s) url"),
    ({"backend_tiers": []}, "backend: no model tier found"),
    ({"backend_replicas": 0}, "backend_replicas (0) and backend_workers (2) must both be at least 1"),
    # With a change the run would otherwise make (a new Redis URL file): nothing is written.
    ({"backend_cors_origins": ["https://app.example.com", "not a url"], "backend_redis_db": 3},
     'backend_cors_origins has "not a url", which is not an origin'),
    ({"backend_stop_timeout": 20, "backend_redis_db": 3},
     "backend_stop_timeout is 20 s, shorter than backend_request_timeout (90 s) + backend_drain_delay (2 s) + 5 s"),
])
def test_bad_input_fails_before_any_change(host, host_json, playbook, extra_vars, message):
    before = state(host_json)
    url_file = host.file("/etc/multimodel/backend/redis_url").sha256sum
    result = playbook("backend.yml", extra_vars)
    assert result.returncode != 0
    assert message in result.flat, result.stdout[-3000:]
    assert state(host_json) == before
    assert host.file("/etc/multimodel/backend/redis_url").sha256sum == url_file


def container_file(host, replica, path):
    return host.check_output(f"docker exec {replica} cat {path}").strip()


def test_a_rotated_secret_is_applied_by_the_run_after_a_failed_one_and_replicas_drain(host, host_json, playbook):
    """The Redis URL file changes (backend_redis_db, as a rotated password would): a run that
    wrote it and stopped (only the configure phase) restarts nothing; the next full run
    recreates every replica, which then reads the new file. Meanwhile a query held in flight
    (llama-server stopped with SIGSTOP) through the replica being replaced completes: the
    replica drains (/health 503, the request finishes) before it exits."""
    rotated = {"backend_redis_db": 1}
    before = state(host_json)
    result = playbook("backend.yml", rotated, tags="backend_configure")
    assert result.returncode == 0, result.stdout[-3000:]
    assert host.file("/etc/multimodel/backend/redis_url").content_string.strip().endswith("@redis:6379/1")
    assert state(host_json) == before  # written, not applied: what a failed run leaves

    old_id = before["mmo-backend-1"][0]
    body = json.dumps({"query": f"drain test {time.time()}", "mode": "simple", "max_tokens": 4})
    # The client runs in a container of its own on the internal network, as Caddy would.
    probe = PROBE.replace('127.0.0.1', 'mmo-backend-1').replace('timeout=60', 'timeout=300')
    client = (f"docker run -d --name mmo-drain-client --network mmo-internal -e MMO_TEST_KEY={site_key(host)} "
              f"mmo/python-test:3.11 python3 -c {shlex.quote(probe)} /api/query {shlex.quote(body)}")
    host.run("docker rm -f mmo-drain-client")
    # Replica 1 is removed once replaced: keep its log.
    host.run(f"setsid nohup docker logs -f {old_id} > /tmp/mmo-drain-old.log 2>&1 < /dev/null &")
    roll = {}
    thread = threading.Thread(target=lambda: roll.setdefault("result", playbook("backend.yml", rotated)))
    host.check_output("systemctl kill --signal=SIGSTOP llama-server@TINY")
    try:
        host.check_output(client)
        time.sleep(4)  # the query reached the replica, which waits on llama-server (backend_request_timeout 90 s)
        thread.start()
        deadline = time.monotonic() + 120
        while "Draining: /health answers 503" not in host.run("cat /tmp/mmo-drain-old.log").stdout:
            assert time.monotonic() < deadline and thread.is_alive(), "replica 1 never started draining"
            time.sleep(1)
        time.sleep(4)  # twice the drain delay: still running, held by the query in flight
        assert host_json(f"docker inspect {old_id}")[0]["State"]["Running"]
    finally:
        host.run("systemctl kill --signal=SIGCONT llama-server@TINY")
    thread.join(600)
    answer = host.run("docker wait mmo-drain-client && docker logs mmo-drain-client")
    host.run("docker rm -f mmo-drain-client")
    assert answer.rc == 0 and answer.stdout.startswith("0\n"), answer.stdout + answer.stderr
    assert json.loads(answer.stdout.split("\n", 1)[1])["instance"] == "tiny-simple"
    result = roll["result"]
    assert result.returncode == 0, result.stdout[-3000:]
    old_log = host.check_output("cat /tmp/mmo-drain-old.log")
    assert "(1 now)" in old_log and "Drain timeout" not in old_log, old_log[-3000:]

    after = state(host_json)
    for replica in REPLICAS:
        assert after[replica][0] != before[replica][0]  # recreated: the label of the secret files changed
        assert container_file(host, replica, "/etc/mmo-backend/redis_url").endswith("@redis:6379/1")
        assert call(host, replica, "/health/ready")["status"] == "ready"
        # The running app uses the new URL: its answer is cached in database 1.
        query = {"query": f"rotated {replica} {time.time()}", "mode": "simple", "max_tokens": 2}
        assert call(host, replica, "/api/query", query)["cached"] is False
    keys = host.check_output(f"docker exec -e REDISCLI_AUTH={PASSWORD} mmo-redis redis-cli -n 1 "
                             "--scan --pattern 'mmo:v2:*'")  # the answer cache's versioned keys
    assert len(keys.split()) >= 2, keys
