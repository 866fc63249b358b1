"""A fleet of four hosts on a private network (molecule.yml): the model tier split over two
model hosts, the app tier and its backups on the third, monitoring on the fourth. What only a
fleet shows: a query through Caddy answered by a model on another host, Prometheus scraping
every host (the app tier through Caddy's published metrics port), a backup, and the fast tier
answering from the other model host while one is down.

The suite runs on the app host (testinfra_hosts); the other hosts are reached with docker exec,
each platform being a container of that name. Its files run in name order; the host stop is
the last test of the last file.
"""
import json
import os
import shlex
import subprocess
import time
import urllib.parse
import uuid

import pytest

testinfra_hosts = ["multihost-app"]

APP = "multihost-app"
MON = "multihost-mon"
# host_vars/multihost-app.yml: Caddy's metrics port, published on the app host's address.
APP_METRICS = "10.77.0.20:9180"
# molecule.yml's platforms and host_vars/: each model host's address and instances.
MODEL_HOSTS = {
    "multihost-gpu1": {"address": "10.77.0.11", "instances": {"Q2_FAST_1": 8080, "Q3_SYNTH": 8082}},
    "multihost-gpu2": {"address": "10.77.0.12", "instances": {"Q2_FAST_2": 8081, "Q4_DEEP": 8083}},
}
INSTANCE_HOST = {name: host for host, spec in MODEL_HOSTS.items() for name in spec["instances"]}
# The app tier's HTTPS client (the app_tier suite's): it runs on the app host and talks to Caddy
# at https://localhost with the site's key, printing one JSON document.
CLIENT_SOURCE = os.path.join(os.path.dirname(__file__), "..", "..", "app_tier", "tests", "stack_client.py")
CLIENT = "/usr/local/lib/mmo-stack-client.py"


def on(host, command, check=True):
    """Run a shell command on a fleet host (its container); the CompletedProcess."""
    return subprocess.run(["docker", "exec", host, "sh", "-c", command], check=check, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture(scope="module")
def query():
    """query(mode): POST /api/query through Caddy on the app host, a fresh text each time (the
    cache answers no test); the client's JSON ({status, json, ...})."""
    subprocess.run(["docker", "cp", CLIENT_SOURCE, f"{APP}:{CLIENT}"], check=True)

    def ask(mode, timeout=60):
        body = json.dumps({"query": f"fleet probe {uuid.uuid4().hex[:8]}", "mode": mode, "max_tokens": 8})
        result = on(APP, f"STACK_TIMEOUT={timeout} python3 {CLIENT} post /api/query {shlex.quote(body)}", check=False)
        assert result.returncode == 0, result.stderr[-2000:]
        return json.loads(result.stdout)
    return ask


def served_by(query, mode, wanted, tries=30):
    """Ask in `mode` until every instance in `wanted` has answered (or `tries` queries); the
    instances that answered, each query's status checked."""
    seen = set()
    for dummy in range(tries):
        answer = query(mode)
        assert answer["status"] == 200, answer
        seen.add(answer["json"]["instance"])
        if wanted <= seen:
            break
    return seen


def test_each_model_host_runs_its_own_instances():
    """Each model host runs its instances of the tier, and only those, on its private address."""
    for host, spec in MODEL_HOSTS.items():
        units = on(host, "systemctl list-units --no-legend --plain 'llama-server@*.service' | cut -d' ' -f1").stdout
        assert sorted(units.split()) == sorted(f"llama-server@{name}.service" for name in spec["instances"]), units
        listening = on(host, "ss -Hltn").stdout
        for port in spec["instances"].values():
            assert f"{spec['address']}:{port} " in listening, f"{host}: nothing on {spec['address']}:{port}\n{listening}"


def test_a_query_through_caddy_is_answered_by_a_model_on_another_host(query):
    """Through Caddy on the app host, each tier is answered by its instance on a model host:
    both fast replicas (one on each model host) take queries."""
    assert served_by(query, "simple", {"Q2_FAST_1", "Q2_FAST_2"}) == {"Q2_FAST_1", "Q2_FAST_2"}
    assert served_by(query, "moderate", {"Q3_SYNTH"}, tries=1) == {"Q3_SYNTH"}
    assert served_by(query, "complex", {"Q4_DEEP"}, tries=1) == {"Q4_DEEP"}


def prometheus(path, **params):
    """GET Prometheus' API from inside its container on the monitoring host: the decoded `data`."""
    url = "http://127.0.0.1:9090" + path + ("?" + urllib.parse.urlencode(params) if params else "")
    answer = json.loads(on(MON, f"docker exec mmo-prometheus wget -q -O - {shlex.quote(url)}").stdout)
    assert answer["status"] == "success", answer
    return answer["data"]


def test_prometheus_scrapes_targets_on_every_host():
    """Every target up, on every host: the model servers at their hosts' private addresses,
    node_exporter on each host, and the app host's backend replicas, Caddy and Redis through
    Caddy's published metrics port, each at its own path."""
    expected = {("llama", f"{spec['address']}:{port}")
                for spec in MODEL_HOSTS.values() for port in spec["instances"].values()}
    expected |= {("node", f"{spec['address']}:9100") for spec in MODEL_HOSTS.values()}
    expected |= {("node", "10.77.0.20:9100")} | {(job, APP_METRICS) for job in ("backend", "caddy", "redis")}
    deadline = time.time() + 90
    while True:
        active = prometheus("/api/v1/targets", state="active")["activeTargets"]
        found = {(t["labels"]["job"], urllib.parse.urlsplit(t["scrapeUrl"]).netloc): t for t in active}
        down = {key: found.get(key, {}).get("lastError", "not a target") for key in expected
                if found.get(key, {}).get("health") != "up"}
        down.update({key: t["lastError"] for key, t in found.items() if t["health"] != "up"})
        if not down:
            break
        assert time.time() < deadline, f"targets not up within 90 s: {down}"
        time.sleep(2)
    assert {t["labels"]["host"] for t in active} == {APP, MON, *MODEL_HOSTS}
    assert {t["labels"]["instance"]: t["labels"]["host"] for t in active if t["labels"]["job"] == "llama"} == INSTANCE_HOST
    assert {t["labels"]["host"] for t in active if t["labels"]["job"] == "node"} == {APP, MON, *MODEL_HOSTS}
    # The app tier from the monitoring host: both replicas and Redis, each scraped at its path
    # (their own metrics, not Caddy's), all labelled with the app host.
    app_tier = {(t["labels"]["job"], t["labels"]["instance"]): urllib.parse.urlsplit(t["scrapeUrl"]).path
                for t in active if t["labels"]["host"] == APP and t["labels"]["job"] != "node"}
    assert app_tier == {("backend", "mmo-backend-1"): "/mmo-backend-1/metrics",
                        ("backend", "mmo-backend-2"): "/mmo-backend-2/metrics",
                        ("caddy", "mmo-caddy"): "/metrics", ("redis", "redis"): "/redis-exporter/metrics"}
    assert prometheus("/api/v1/query", query='redis_up{job="redis"}')["result"][0]["value"][1] == "1"
    replicas = prometheus("/api/v1/query", query="mmo_cache_misses_total")["result"]
    assert {r["metric"]["instance"] for r in replicas} == {"mmo-backend-1", "mmo-backend-2"}, replicas


def test_a_backup_is_taken_and_verified():
    """The timer's job on the app host takes a verified backup of Redis and the FAISS indexes."""
    started = int(time.time())
    result = on(APP, "systemctl start mmo-backup.service", check=False)
    assert result.returncode == 0, on(APP, "journalctl -u mmo-backup.service -n 30 --no-pager", check=False).stdout
    metrics = dict(line.split() for line in on(APP, "cat /var/lib/node_exporter/textfile_collector/mmo_backup.prom")
                   .stdout.splitlines() if line and not line.startswith("#"))
    assert float(metrics["mmo_backup_last_run_ok"]) == 1 and float(metrics["mmo_backup_verify_ok"]) == 1, metrics
    assert float(metrics["mmo_backup_last_success_timestamp_seconds"]) >= started, metrics
    sets = on(APP, "ls /var/backups/multimodel").stdout.split()
    assert sets, "no backup set in /var/backups/multimodel"


def test_one_model_host_stopped_its_fast_replica_on_the_other_answers(query):
    """With gpu1 down, every fast query is answered by Q2_FAST_2 on gpu2; started again, gpu1
    boots its instances and Q2_FAST_1 takes queries again."""
    subprocess.run(["docker", "stop", "--time", "20", "multihost-gpu1"], check=True, capture_output=True)
    try:
        answers = [query("simple") for dummy in range(8)]
        assert [a["status"] for a in answers] == [200] * 8, answers
        assert {a["json"]["instance"] for a in answers} == {"Q2_FAST_2"}, answers
    finally:
        subprocess.run(["docker", "start", "multihost-gpu1"], check=True, capture_output=True)
    deadline = time.time() + 180
    while on("multihost-gpu1", "systemctl is-active llama-server@Q2_FAST_1", check=False).stdout.strip() != "active":
        assert time.time() < deadline, "llama-server@Q2_FAST_1 not active within 180 s of gpu1's start"
        time.sleep(2)
    assert "Q2_FAST_1" in served_by(query, "simple", {"Q2_FAST_1"}, tries=40)
