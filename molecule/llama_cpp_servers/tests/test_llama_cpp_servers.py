"""Verify the model tier: four real llama-server instances under systemd."""
import json
import os
import time

import pytest

KEY = "molecule-test-key"
INSTANCES = {  # name: (port, alias, model)
    "Q2_FAST_1": (8080, "q2-fast", "q2"),
    "Q2_FAST_2": (8081, "q2-fast", "q2"),
    "Q3_SYNTH": (8082, "q3-synth", "q3"),
    "Q4_DEEP": (8083, "q4-deep", "q4"),
}
MODELS_DIR = os.path.join(os.environ.get("MMO_CACHE", "/var/cache/mmo-harness"), "models")


def curl(host, path, port, key=KEY, data=None):
    """(status, body) of an HTTP request made on the instance."""
    cmd = f"curl -s -o /tmp/curl.out -w '%{{http_code}}' http://127.0.0.1:{port}{path}"
    if key:
        cmd += f" -H 'Authorization: Bearer {key}'"
    if data is not None:
        cmd += f" -H 'Content-Type: application/json' -d '{json.dumps(data)}'"
    status = host.check_output(cmd)
    return int(status), host.file("/tmp/curl.out").content_string


def main_pids(host):
    return {name: host.check_output(f"systemctl show -p MainPID --value llama-server@{name}") for name in INSTANCES}


def model_sha(host, model):
    return host.check_output(f"sha256sum /var/lib/llama-server/models/{model}.gguf").split()[0]


@pytest.mark.parametrize("name", INSTANCES)
def test_unit_active_with_limits_and_hardening(host, name):
    service = host.service(f"llama-server@{name}")
    assert service.is_running and service.is_enabled
    props = dict(line.split("=", 1) for line in host.check_output(
        f"systemctl show llama-server@{name} -p User -p CPUQuotaPerSecUSec -p MemoryMax -p MemoryLow "
        "-p NoNewPrivileges -p ProtectSystem -p PrivateDevices -p PrivateTmp -p Restart -p TimeoutStopUSec").splitlines())
    assert props["User"] == "llama"
    assert props["CPUQuotaPerSecUSec"] == "1s"  # 100%
    assert props["MemoryMax"] == str(512 * 1024 * 1024)
    assert props["MemoryLow"] == str(64 * 1024 * 1024)
    assert props["NoNewPrivileges"] == "yes"
    assert props["ProtectSystem"] == "strict"
    assert props["PrivateDevices"] == "yes"
    assert props["PrivateTmp"] == "yes"
    assert props["Restart"] == "on-failure"
    assert props["TimeoutStopUSec"] == "30s"


@pytest.mark.parametrize("name", INSTANCES)
def test_instance_serves_its_model(host, name):
    port, alias = INSTANCES[name][:2]
    assert curl(host, "/health", port, key=None)[0] == 200
    status, body = curl(host, "/v1/models", port)
    assert status == 200
    assert json.loads(body)["data"][0]["id"] == alias
    status, body = curl(host, "/v1/completions", port, data={"prompt": "hello", "max_tokens": 8})
    assert status == 200
    assert json.loads(body)["usage"]["completion_tokens"] > 0
    status, body = curl(host, "/metrics", port)
    assert status == 200
    assert "llamacpp:prompt_tokens_total" in body


def test_api_key_required_and_kept_off_the_command_line(host):
    assert curl(host, "/v1/models", 8080, key=None)[0] == 401
    assert curl(host, "/v1/models", 8080, key="wrong")[0] == 401
    assert KEY not in host.check_output("ps -eo args")
    assert host.file("/etc/llama-server/api-key.env").mode == 0o640


def test_replicas_share_one_model_file(host):
    models = sorted(host.check_output("ls /var/lib/llama-server/models").split())
    assert models == ["q2.gguf", "q3.gguf", "q4.gguf"]
    for name in ("Q2_FAST_1", "Q2_FAST_2"):
        assert "/var/lib/llama-server/models/q2.gguf" in host.file(f"/etc/llama-server/{name}.env").content_string


def test_model_health_module_probes_all_four(host, playbook):
    result = playbook("verify_health.yml")
    assert result.returncode == 0, result.stdout[-3000:]
    probe = json.loads(host.file("/tmp/model-health.json").content_string)
    assert probe["changed"] is False
    assert sorted(probe["healthy"]) == sorted(INSTANCES) and probe["unhealthy"] == []
    for endpoint in probe["endpoints"]:
        assert endpoint["healthy"] and endpoint["status"] == "ok"
        assert INSTANCES[endpoint["name"]][1] in endpoint["models"]
        assert endpoint["tokens_generated"] > 0 and endpoint["tokens_per_second"] > 0
        assert endpoint["slots_total"] == 2
    assert "molecule-test-key" not in result.stdout


def test_wrong_checksum_fails_and_keeps_the_old_model(host, playbook):
    before_sha, before_pids = model_sha(host, "q3"), main_pids(host)
    result = playbook("converge.yml", {"test_q3_file": "tiny-4.gguf"})
    assert result.returncode != 0
    assert "Model 'q3' (used by Q3_SYNTH)" in result.stdout
    assert "expected" in result.stdout
    assert model_sha(host, "q3") == before_sha
    assert main_pids(host) == before_pids


def test_unreachable_model_url_fails_and_keeps_the_old_model(host, playbook):
    before_sha, before_pids = model_sha(host, "q2"), main_pids(host)
    new_sha = host.check_output("sha256sum /srv/model-mirror/tiny-4.gguf").split()[0]
    result = playbook("converge.yml", {"test_q2_url": "http://127.0.0.1:9/tiny-4.gguf", "test_q2_sha256": new_sha})
    assert result.returncode != 0
    assert "Could not fetch model 'q2' (used by Q2_FAST_1, Q2_FAST_2) from http://127.0.0.1:9/tiny-4.gguf" in result.stdout
    assert model_sha(host, "q2") == before_sha
    assert main_pids(host) == before_pids


def test_new_model_restarts_only_its_instance(host, playbook):
    before = main_pids(host)
    new_sha = host.check_output("sha256sum /srv/model-mirror/tiny-4.gguf").split()[0]
    try:
        result = playbook("converge.yml", {"test_q4_file": "tiny-4.gguf", "test_q4_sha256": new_sha})
        assert result.returncode == 0, result.stdout[-3000:]
        assert model_sha(host, "q4") == new_sha
        after = main_pids(host)
        assert after["Q4_DEEP"] != before["Q4_DEEP"]
        assert {n: after[n] for n in after if n != "Q4_DEEP"} == {n: before[n] for n in before if n != "Q4_DEEP"}
    finally:
        restore = playbook("converge.yml")
        assert restore.returncode == 0, restore.stdout[-3000:]


def test_rolling_restart_under_load_loses_no_request(host, playbook):
    host.run("rm -f /tmp/replica-load.json /tmp/replica-load.stop; systemctl reset-failed replica-load 2>/dev/null")
    script = os.path.join(os.environ["MOLECULE_SCENARIO_DIRECTORY"], "files", "replica_load.py")
    copied = host.ansible("copy", f"src={script} dest=/tmp/replica_load.py mode=0755", check=False)
    assert not copied.get("failed"), copied
    before = main_pids(host)
    start = host.run("systemd-run --unit=replica-load /usr/bin/python3 /tmp/replica_load.py --key "
                     f"{KEY} --out /tmp/replica-load.json --stop-file /tmp/replica-load.stop "
                     "http://127.0.0.1:8080 http://127.0.0.1:8081")
    assert start.rc == 0, start.stderr
    try:
        time.sleep(2)
        result = playbook("converge.yml", {"test_ubatch_size": 128})  # every instance's settings change
        assert result.returncode == 0, result.stdout[-3000:]
        time.sleep(2)
    finally:
        host.run("touch /tmp/replica-load.stop")
        host.run("for i in $(seq 1 30); do test -f /tmp/replica-load.json && break; sleep 1; done")
    stats = json.loads(host.file("/tmp/replica-load.json").content_string)
    after = main_pids(host)
    try:
        assert all(after[name] != before[name] for name in INSTANCES), (before, after)
        assert stats["lost"] == 0, stats
        assert stats["succeeded"] == stats["requests"] > 20, stats
        assert all(count > 0 for count in stats["served_by"].values()), stats
        # One at a time: the second replica went down only after the first was back.
        first_up = int(host.check_output("systemctl show -p ExecMainStartTimestampMonotonic --value llama-server@Q2_FAST_1"))
        second_up = int(host.check_output("systemctl show -p ExecMainStartTimestampMonotonic --value llama-server@Q2_FAST_2"))
        assert first_up < second_up
    finally:
        restore = playbook("converge.yml")
        assert restore.returncode == 0, restore.stdout[-3000:]


def test_instance_removed_from_the_list_is_stopped_and_removed(host, playbook):
    three = [
        {"name": "Q2_FAST_1", "port": 8080, "model": "q2", "alias": "q2-fast", "ctx_size": 16384, "threads": 6, "complexity": "simple"},
        {"name": "Q2_FAST_2", "port": 8081, "model": "q2", "alias": "q2-fast", "ctx_size": 16384, "threads": 6, "complexity": "simple"},
        {"name": "Q3_SYNTH", "port": 8082, "model": "q3", "alias": "q3-synth", "ctx_size": 24576, "threads": 8, "complexity": "moderate"},
    ]
    try:
        result = playbook("converge.yml", {"llama_cpp_servers_instances": three})
        assert result.returncode == 0, result.stdout[-3000:]
        assert not host.service("llama-server@Q4_DEEP").is_running
        assert not host.service("llama-server@Q4_DEEP").is_enabled
        assert not host.file("/etc/llama-server/Q4_DEEP.env").exists
        assert not host.file("/etc/systemd/system/llama-server@Q4_DEEP.service.d").exists
        assert host.service("llama-server@Q3_SYNTH").is_running
    finally:
        restore = playbook("converge.yml")
        assert restore.returncode == 0, restore.stdout[-3000:]
    assert host.service("llama-server@Q4_DEEP").is_running


def test_bad_instance_refused_before_any_change(host, playbook):
    before = main_pids(host)
    bad = [{"name": "Q2_FAST_1", "port": 8080, "model": "missing", "ctx_size": 1024, "threads": 1, "complexity": "simple"}]
    result = playbook("converge.yml", {"llama_cpp_servers_instances": bad})
    assert result.returncode != 0
    assert "instance 'Q2_FAST_1' is not valid" in result.stdout and "got 'missing'" in result.stdout
    assert main_pids(host) == before
    assert host.file("/etc/llama-server/Q4_DEEP.env").exists
