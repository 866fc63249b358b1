"""Zero-drop deploys: while long queries (POST /api/query) and WebSocket streams run through
Caddy in a loop, a backend change that rolls both replicas and a Caddy change (a reload)
complete with no failed query and no cut stream. The counts go to the report table."""
import os
import time
import uuid

import yaml

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
