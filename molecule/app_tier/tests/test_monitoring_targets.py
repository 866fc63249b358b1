"""Monitoring (issue 12): every scrape target Prometheus' configuration was generated with from
the inventory is up in the real Prometheus, with its labels; the model servers' key is a file,
never in the configuration; a broken rule file or scrape config fails the play and Prometheus
keeps serving what it had (same container, same loaded configuration, same rules), and a good
change is reloaded, not restarted."""
import json
import os
import shlex
import time
import urllib.parse

import pytest
import yaml

PROMETHEUS = "mmo-prometheus"
CONFIG = "/etc/multimodel/prometheus/prometheus.yml"
RULES = "/etc/multimodel/prometheus/rules"
KEY_FILE = "/etc/multimodel/prometheus/secrets/llama_api_key"
TAGS = "prometheus_configure,prometheus_run"


def api(host, path, **params):
    """GET Prometheus' API from inside its container: the decoded `data`."""
    url = "http://127.0.0.1:9090" + path + ("?" + urllib.parse.urlencode(params) if params else "")
    out = host.check_output(f"docker exec {PROMETHEUS} wget -q -O - {shlex.quote(url)}")
    answer = json.loads(out)
    assert answer["status"] == "success", answer
    return answer["data"]


def generated_targets(host):
    """(job, address, labels) of every static target in the live prometheus.yml."""
    config = yaml.safe_load(host.file(CONFIG).content_string)
    return [(job["job_name"], target, group.get("labels", {}))
            for job in config["scrape_configs"] for group in job.get("static_configs", [])
            for target in group["targets"]]


def wait_all_up(host, expected, timeout=90):
    """Poll /api/v1/targets until each expected (job, address) is up; the active targets by key."""
    deadline = time.time() + timeout
    while True:
        active = {(t["labels"]["job"], urllib.parse.urlsplit(t["scrapeUrl"]).netloc): t
                  for t in api(host, "/api/v1/targets", state="active")["activeTargets"]}
        down = [key for key in expected if active.get(key, {}).get("health") != "up"]
        if not down:
            return active
        if time.time() > deadline:
            pytest.fail(f"targets not up within {timeout} s: "
                        + "; ".join(f"{key}: {active.get(key, {}).get('lastError', 'not active')}" for key in down))
        time.sleep(2)


def local_instances():
    path = os.path.join(os.environ["MOLECULE_PROJECT_DIRECTORY"], "inventories", "local", "group_vars",
                        "llama_servers.yml")
    with open(path, encoding="utf-8") as source:
        return yaml.safe_load(source)["llama_cpp_servers_instances"]


def served_state(host, host_json):
    """What Prometheus runs: its container (Id, start), the configuration it loaded (time, the
    config text as it reports it), its rule groups and the live files."""
    container = host_json(f"docker inspect {PROMETHEUS}")[0]
    runtime = api(host, "/api/v1/status/runtimeinfo")
    rules = sorted((group["file"], group["name"], tuple(rule["name"] for rule in group["rules"]))
                   for group in api(host, "/api/v1/rules")["groups"])
    files = host.check_output(f"sha256sum {CONFIG} {RULES}/*.yml")
    return {"id": container["Id"], "started": container["State"]["StartedAt"],
            "loaded": runtime["lastConfigTime"], "reload_ok": runtime["reloadConfigSuccess"],
            "config": api(host, "/api/v1/status/config")["yaml"], "rules": rules, "files": files}


def test_every_generated_target_is_up_with_its_labels(host):
    targets = generated_targets(host)
    # Generated from the inventory: one llama target per instance, one per backend replica,
    # and every other job.
    by_job = {}
    for job, address, labels in targets:
        by_job.setdefault(job, []).append((address, labels))
    instances = local_instances()
    assert sorted(labels["instance"] for dummy, labels in by_job["llama"]) == sorted(i["name"] for i in instances)
    assert len(by_job["backend"]) == 2
    assert {"caddy", "redis", "node", "prometheus"} <= set(by_job)
    active = wait_all_up(host, [(job, address) for job, address, dummy in targets])
    hostname = host.backend.get_hostname()
    for job, address, labels in targets:
        seen = active[(job, address)]["labels"]
        assert seen["instance"] == labels["instance"] and seen["host"] == hostname, (job, address, seen)
        if job == "llama":
            instance = next(i for i in instances if i["name"] == labels["instance"])
            assert seen["tier"] == instance["complexity"], seen
            assert seen["alias"] == instance.get("alias", instance["name"].lower()), seen
    # The same through a query: every target's up is 1.
    ups = {(r["metric"]["job"], r["metric"]["instance"]): r["value"][1]
           for r in api(host, "/api/v1/query", query="up")["result"]}
    assert all(ups[(job, labels["instance"])] == "1" for job, dummy, labels in targets), ups
    # redis_exporter reaches Redis with its password file.
    assert api(host, "/api/v1/query", query="redis_up")["result"][0]["value"][1] == "1"


def test_model_servers_key_is_a_file_not_in_the_config(host):
    key = host.file(KEY_FILE)
    assert key.mode == 0o440 and key.user == "root"
    secret = key.content_string.strip()
    assert len(secret) >= 16
    assert secret not in host.file(CONFIG).content_string
    llama = yaml.safe_load(host.file(CONFIG).content_string)["scrape_configs"][0]
    assert llama["authorization"] == {"type": "Bearer", "credentials_file": "/etc/prometheus/secrets/llama_api_key"}
    assert secret not in host.check_output(f"docker inspect {PROMETHEUS}")


def test_containers_hardened_on_the_internal_network(host, host_json, assert_hardened):
    prometheus = host_json(f"docker inspect {PROMETHEUS}")[0]
    assert_hardened(prometheus, host, networks=["mmo-internal", "mmo-monitoring-egress"],
                    aliases={"mmo-internal": "prometheus"})
    assert "--web.enable-lifecycle" not in prometheus["Config"]["Cmd"]
    exporter = host_json("docker inspect mmo-redis-exporter")[0]
    assert_hardened(exporter, host, networks=["mmo-internal"], aliases={"mmo-internal": "redis-exporter"})
    assert not any("PASSWORD" in variable for variable in exporter["Config"]["Env"] or [])


@pytest.mark.parametrize("broken", ["rule", "scrape config"])
def test_a_broken_change_fails_and_prometheus_keeps_what_it_serves(host, host_json, playbook, tmp_path, broken):
    before = served_state(host, host_json)
    if broken == "rule":
        bad = tmp_path / "mmo-broken.yml"
        bad.write_text("groups:\n  - name: broken\n    rules:\n      - alert: Broken\n        expr: up ==\n")
        extra_vars = {"prometheus_rule_files_extra": [str(bad)]}
    else:
        extra_vars = {"prometheus_scrape_configs_extra": [
            {"job_name": "broken", "scrape_interval": "soon", "static_configs": [{"targets": ["localhost:9090"]}]}]}
    result = playbook("converge.yml", extra_vars, tags=TAGS)
    assert result.returncode != 0, result.stdout[-3000:]
    assert "promtool" in result.flat and "refused the new configuration" in result.flat, result.stdout[-3000:]
    after = served_state(host, host_json)
    assert after == before
    assert host.check_output(f"docker inspect --format '{{{{.State.Health.Status}}}}' {PROMETHEUS}") == "healthy"


def test_a_good_change_is_reloaded_not_restarted(host, host_json, playbook):
    before = served_state(host, host_json)
    extra = {"prometheus_scrape_configs_extra": [
        {"job_name": "reload-probe", "static_configs": [{"targets": ["localhost:9090"], "labels": {
            "instance": "reload-probe", "host": host.backend.get_hostname()}}]}]}
    try:
        result = playbook("converge.yml", extra, tags=TAGS)
        assert result.returncode == 0, result.stdout[-3000:]
        after = served_state(host, host_json)
        assert (after["id"], after["started"]) == (before["id"], before["started"])
        assert after["loaded"] != before["loaded"] and after["reload_ok"]
        wait_all_up(host, [("reload-probe", "localhost:9090")])
    finally:
        restored = playbook("converge.yml", tags=TAGS)
    assert restored.returncode == 0, restored.stdout[-3000:]
    assert "reload-probe" not in api(host, "/api/v1/status/config")["yaml"]
    assert served_state(host, host_json)["id"] == before["id"]
