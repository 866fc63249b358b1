"""Zero-drop deploys: while long queries (POST /api/query) and WebSocket streams run through
Caddy in a loop, a backend change that rolls both replicas and a Caddy change (a reload)
complete with no failed query and no cut stream; playbooks/rolling_update.yml restarts every
model instance and replaces every backend replica with no failed query. The counts and
latencies go to the report tables."""
import os
import statistics
import time
import uuid

import yaml
from conftest import LLAMA_PORTS

DEPLOYS = "Zero-drop deploys: queries and WebSocket streams through Caddy during each deploy"
COLUMNS = ("deploy", "http ok", "http failed", "ws ok", "ws cut", "ws failed", "ws reopened", "deploy s")
# Long answers (the tiny models stop at an end token now and then) on every tier, two streams.
LOAD = {"http": ("simple", "moderate", "complex", "simple"), "ws": ("simple", "moderate"),
        "max_tokens": 768, "timeout": 90}


def deploy_under_load(stack, playbook, extra_vars, tags):
    """Run site.yml with extra_vars and tags while the load runs; (playbook result, seconds,
    the load)."""
    load = stack.load(**LOAD)
    try:
        time.sleep(3)
        start = time.time()
        result = playbook("converge.yml", extra_vars, tags=tags)
        seconds = time.time() - start
        time.sleep(3)
    finally:
        load.stop()
    assert result.returncode == 0, result.stdout[-3000:]
    assert load.during(start, start + seconds, "http") and load.during(start, start + seconds, "ws"), \
        f"no query or stream ran during the deploy: {load.summary()}"
    return result, seconds, load


def row(label, load, seconds):
    return (label, load.count("http", "ok"), load.count("http", "failed"), load.count("ws", "ok"),
            load.count("ws", "cut"), load.count("ws", "failed"), load.count("ws", "reconnected"), f"{seconds:.1f}")


def assert_nothing_dropped(load):
    assert (load.count("http", "failed"), load.count("ws", "cut"), load.count("ws", "failed")) == (0, 0, 0), \
        load.summary()


def test_backend_roll_drops_nothing(stack, playbook, report, host_json):
    before = {c["Name"].lstrip("/"): c["Id"] for c in host_json("docker inspect " + " ".join(stack.backends))}
    dummy, seconds, load = deploy_under_load(stack, playbook, {"backend_cache_ttl": 1800},
                                             "backend_configure,backend_run")
    report(DEPLOYS, COLUMNS, row("backend roll (backend_cache_ttl 3600 -> 1800)", load, seconds))
    after = host_json("docker inspect " + " ".join(stack.backends))
    assert all(c["Id"] != before[c["Name"].lstrip("/")] for c in after), "the replicas were not rolled"
    assert all("MMO_CACHE_TTL=1800" in c["Config"]["Env"] for c in after)
    assert_nothing_dropped(load)


def test_caddy_reload_drops_nothing(stack, playbook, report):
    path = os.path.join(os.environ["MOLECULE_PROJECT_DIRECTORY"], "roles", "caddy", "defaults", "main.yml")
    with open(path, encoding="utf-8") as source:
        headers = yaml.safe_load(source)["caddy_security_headers"]
    marker = uuid.uuid4().hex[:8]
    dummy, seconds, load = deploy_under_load(stack, playbook,
                                             {"caddy_security_headers": dict(headers, **{"X-Deploy-Check": marker})},
                                             "caddy_configure,caddy_run")
    report(DEPLOYS, COLUMNS, row("Caddy reload (a security header added)", load, seconds))
    page = stack.client("get", "/")
    assert {k.lower(): v for k, v in page["headers"].items()}.get("x-deploy-check") == marker, \
        "the Caddy change was not applied"
    assert_nothing_dropped(load)


ROLLING = "playbooks/rolling_update.yml under load: queries through Caddy before and during the update"
ROLLING_COLUMNS = ("window", "queries ok", "failed", "p50 s", "p99 s", "max s")


def latency_row(label, queries):
    ok = sorted(q[2] - q[1] for q in queries if q[3] == "ok")
    failed = sum(1 for q in queries if q[3] != "ok")
    if not ok:
        return (label, 0, failed, "-", "-", "-")
    p99 = ok[min(len(ok) - 1, int(len(ok) * 0.99))]
    return (label, len(ok), failed, f"{statistics.median(ok):.2f}", f"{p99:.2f}", f"{ok[-1]:.2f}")


def test_rolling_update_of_every_instance_and_replica_fails_no_query(stack, playbook, report, host_json):
    """Every model instance restarts (a setting of the template unit changed) and every backend
    replica is replaced (an environment change), one at a time, while queries on every tier run
    through Caddy: none fails. A tier of one instance (Q3_SYNTH, Q4_DEEP) is down while it
    restarts: its queries wait for it (backend_tier_wait) instead of failing."""
    pids = {name: stack.main_pid(name) for name in LLAMA_PORTS}
    inspected = host_json("docker inspect " + " ".join(stack.backends))
    replicas = {c["Name"].lstrip("/"): c["Id"] for c in inspected}
    # Values other than the ones running (an earlier test may have changed them already).
    unit = stack.host.file("/etc/systemd/system/llama-server@.service").content_string
    stop_timeout = 26 if "TimeoutStopSec=25\n" in unit else 25
    cache_ttl = 1700 if "MMO_CACHE_TTL=1800" in inspected[0]["Config"]["Env"] else 1800
    load = stack.load(http=("simple", "moderate", "complex", "simple"), max_tokens=64, timeout=90)
    try:
        time.sleep(15)  # the "before" window
        start = time.time()
        result = playbook("rolling_update.yml", {"llama_cpp_servers_stop_timeout": stop_timeout,
                                                 "backend_cache_ttl": cache_ttl})
        end = time.time()
        time.sleep(3)
    finally:
        load.stop()
    assert result.returncode == 0, result.stdout[-3000:]
    queries = [q for q in load.result["queries"] if q[0] == "http"]
    report(ROLLING, ROLLING_COLUMNS, latency_row("before (15 s)", [q for q in queries if q[2] < start]))
    report(ROLLING, ROLLING_COLUMNS,
           latency_row(f"during ({end - start:.0f} s)", [q for q in queries if q[1] <= end and q[2] >= start]))
    after = {name: stack.main_pid(name) for name in LLAMA_PORTS}
    assert all(after[name] != pids[name] for name in pids), (pids, after)
    now = host_json("docker inspect " + " ".join(stack.backends))
    assert all(c["Id"] != replicas[c["Name"].lstrip("/")] for c in now), "the replicas were not replaced"
    assert all(f"MMO_CACHE_TTL={cache_ttl}" in c["Config"]["Env"] for c in now)
    assert load.during(start, end, "http"), f"no query ran during the update: {load.summary()}"
    assert load.count("http", "failed") == 0, load.summary()
