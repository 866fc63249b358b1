"""The backend role: reference image built offline, replicas, secrets, readiness gate, checks."""
import json

import pytest

REPLICAS = ["mmo-backend-1", "mmo-backend-2"]
PASSWORD = "molecule-backend-Redis-4d2e"
PROBE = ("import json, sys, urllib.request; r = urllib.request.Request('http://127.0.0.1:8000' + sys.argv[1], "
         "data=sys.argv[2].encode() if len(sys.argv) > 2 else None, headers={'Content-Type': 'application/json'}); "
         "print(urllib.request.urlopen(r, timeout=60).read().decode())")


def call(host, replica, path, body=None):
    args = [path] + ([json.dumps(body)] if body is not None else [])
    command = f"docker exec {replica} python3 -c \"{PROBE}\" " + " ".join(f"'{a}'" for a in args)
    return json.loads(host.check_output(command))


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
        assert replica["Config"]["Cmd"][:2] == ["uvicorn", "multimodel_backend.main:app"]
        assert replica["Config"]["Cmd"][replica["Config"]["Cmd"].index("--workers") + 1] == "2"
    assert inspect[0]["Image"] == inspect[1]["Image"]


def test_environment_from_the_settings_without_secrets(inspect):
    env = dict(item.split("=", 1) for item in inspect[0]["Config"]["Env"])
    tiers = json.loads(env["MMO_TIERS_JSON"])
    assert [t["complexity"] for t in tiers] == ["simple", "moderate", "complex"]
    assert tiers[0] == {"name": "tiny-simple", "url": "http://host.docker.internal:8090",
                        "complexity": "simple", "alias": "tiny"}
    assert env["MMO_REDIS_URL_FILE"] == "/etc/mmo-backend/redis_url"
    assert "MMO_LLAMA_API_KEY_FILE" not in env
    assert env["PROMETHEUS_MULTIPROC_DIR"] == "/run/prometheus"
    for replica in inspect:
        assert PASSWORD not in json.dumps(replica["Config"])


def test_secret_file_readable_by_the_app_user_only(host):
    url_file = host.file("/etc/multimodel/backend/redis_url")
    assert (url_file.uid, url_file.gid, url_file.mode) == (10001, 10001, 0o400)
    assert url_file.content_string.strip() == f"redis://:{PASSWORD}@redis:6379/0"
    assert host.file("/etc/multimodel/backend").mode == 0o700


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
])
def test_bad_input_fails_before_any_change(host_json, playbook, extra_vars, message):
    before = state(host_json)
    result = playbook("backend.yml", extra_vars)
    assert result.returncode != 0
    assert message in result.flat, result.stdout[-3000:]
    assert state(host_json) == before
