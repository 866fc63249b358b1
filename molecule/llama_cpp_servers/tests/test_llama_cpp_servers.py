"""Verify the model tier: four real llama-server instances under systemd."""
import json
import os
import re
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
# systemd-analyze security's overall exposure of llama-server@Q2_FAST_1 in this scenario
# before issue 10's hardening (measured 2026-12-02 on the role at commit abbb869, Debian
# testing's systemd): the unit must stay better (lower) than this.
EXPOSURE_BEFORE = 3.0
# An argument with quotes, spaces and a colon, which the old unquoted $LLAMA_SERVER_ARGS split.
EXTRA_ARGS = ["--chat-template-kwargs", '{"enable_thinking": false}']
# The role's default instances, as converge.yml deploys them.
FOUR = [
    {"name": "Q2_FAST_1", "port": 8080, "model": "q2", "alias": "q2-fast", "ctx_size": 16384, "threads": 6, "complexity": "simple"},
    {"name": "Q2_FAST_2", "port": 8081, "model": "q2", "alias": "q2-fast", "ctx_size": 16384, "threads": 6, "complexity": "simple"},
    {"name": "Q3_SYNTH", "port": 8082, "model": "q3", "alias": "q3-synth", "ctx_size": 24576, "threads": 8, "complexity": "moderate"},
    {"name": "Q4_DEEP", "port": 8083, "model": "q4", "alias": "q4-deep", "ctx_size": 32768, "threads": 10, "complexity": "complex"},
]
# converge.yml's llama_cpp_servers_instance_defaults.
SCENARIO_DEFAULTS = {"parallel": 2, "gpu_layers": 0, "flash_attn": "auto", "batch_size": 512, "ubatch_size": 256,
                     "extra_args": [], "environment": {"LLAMA_LOG_COLORS": "off"}, "cpu_quota": "100%",
                     "memory_max": "512M", "memory_low": "64M"}
# Faked GPUs for placement: a tiny model's instance offloading every layer needs about 520 MiB
# (1 MiB of weights, 8-16 MiB of K/V, 512 MiB of overhead), so two fit on one of these.
FAKE_GPU = {"name": "fake", "memory_mib": 1500}
ON_FAKE_GPUS = {"llama_cpp_servers_gpu_backend": "cuda",
                "llama_cpp_servers_instance_defaults": dict(SCENARIO_DEFAULTS, gpu_layers=999)}


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


def cmdline(host, name):
    """The arguments of the instance's running process (no argument holds a newline)."""
    pid = host.check_output(f"systemctl show -p MainPID --value llama-server@{name}")
    assert pid != "0", f"llama-server@{name} is not running"
    return host.check_output(f"tr '\\0' '\\n' </proc/{pid}/cmdline").splitlines()


def has_args(args, wanted):
    """Whether `wanted` appears in `args` as consecutive arguments."""
    return any(args[i:i + len(wanted)] == wanted for i in range(len(args)))


def config_state(host):
    """sha256 of every file the role writes for the instances, and their main PIDs."""
    return host.check_output("sha256sum /etc/llama-server/*.* /etc/llama-server/last-healthy/*/* "
                             "/etc/systemd/system/llama-server@*.service "
                             "/etc/systemd/system/llama-server@*.service.d/*"), main_pids(host)


def model_file(host, model):
    """The one file of the model on the host: NAME-<its sha256's first 12 digits>.gguf."""
    files = host.check_output(f"ls /var/lib/llama-server/models/{model}-*.gguf").split()
    assert len(files) == 1, files
    return files[0]


def model_sha(host, model):
    path = model_file(host, model)
    sha = host.check_output(f"sha256sum {path}").split()[0]
    assert path.endswith(f"/{model}-{sha[:12]}.gguf"), path
    return sha


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
    more = dict(line.split("=", 1) for line in host.check_output(
        f"systemctl show llama-server@{name} -p RestartUSec -p ProtectProc -p ProcSubset -p RemoveIPC "
        "-p SystemCallErrorNumber -p MemoryDenyWriteExecute -p PrivateUsers").splitlines())
    assert more == {"RestartUSec": "1s", "ProtectProc": "invisible", "ProcSubset": "pid", "RemoveIPC": "yes",
                    "SystemCallErrorNumber": "1", "MemoryDenyWriteExecute": "yes", "PrivateUsers": "yes"}


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
    assert [re.sub(r"-[0-9a-f]{12}[.]gguf$", "", name) for name in models] == ["q2", "q3", "q4"], models
    for name in ("Q2_FAST_1", "Q2_FAST_2"):
        assert has_args(cmdline(host, name), ["--model", model_file(host, "q2")])


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


def test_broken_model_update_is_rolled_back_and_stops_the_play(host, playbook):
    """q2's new file has the sha256 it was given but is cut short. Q2_FAST_1, the first to
    restart on it, never serves it: it is put back on the file it ran before (kept on the host
    until every instance is healthy) and serves again, and the play stops there, so Q2_FAST_2
    and the others were never touched. The next good run removes the broken file."""
    old_file, before = model_file(host, "q2"), main_pids(host)
    cut = host.run("head -c 65536 /srv/model-mirror/tiny-4.gguf > /srv/model-mirror/broken.gguf")
    assert cut.rc == 0, cut.stderr
    broken_sha = host.check_output("sha256sum /srv/model-mirror/broken.gguf").split()[0]
    try:
        result = playbook("converge.yml", {"test_q2_url": "http://127.0.0.1:8999/broken.gguf",
                                           "test_q2_sha256": broken_sha, "llama_cpp_servers_health_timeout": 15})
        assert result.returncode != 0
        assert "llama-server@Q2_FAST_1 did not become healthy after the update" in result.flat, result.stdout[-3000:]
        assert ("It was rolled back to the model, build and settings it last became healthy with, and serves its "
                "model again. The play stops here") in result.flat, result.stdout[-3000:]
        assert host.file(f"/var/lib/llama-server/models/q2-{broken_sha[:12]}.gguf").exists
        after = main_pids(host)
        assert after["Q2_FAST_1"] != before["Q2_FAST_1"]
        assert {name: after[name] for name in after if name != "Q2_FAST_1"} == \
            {name: before[name] for name in before if name != "Q2_FAST_1"}
        for name in ("Q2_FAST_1", "Q2_FAST_2"):
            assert has_args(cmdline(host, name), ["--model", old_file]), name
        status, body = curl(host, "/v1/completions", 8080, data={"prompt": "hello", "max_tokens": 4})
        assert status == 200 and json.loads(body)["usage"]["completion_tokens"] > 0, body
    finally:
        host.run("rm -f /srv/model-mirror/broken.gguf")
        restore = playbook("converge.yml")
        assert restore.returncode == 0, restore.stdout[-3000:]
    assert model_file(host, "q2") == old_file
    assert main_pids(host)["Q2_FAST_2"] == before["Q2_FAST_2"]


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
    three = FOUR[:3]
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


def test_security_exposure_is_better_than_before(host, capsys):
    report = host.check_output("systemd-analyze security --no-pager llama-server@Q2_FAST_1.service")
    found = re.search(r"Overall exposure level for llama-server@Q2_FAST_1.service: ([0-9.]+)", report)
    assert found, report[-2000:]
    exposure = float(found.group(1))
    with capsys.disabled():
        print(f"\nsystemd-analyze security llama-server@Q2_FAST_1: exposure {exposure} (before: {EXPOSURE_BEFORE})")
    assert exposure < EXPOSURE_BEFORE, report


def test_killed_instance_is_back_and_serving_within_10_seconds(host, capsys):
    """kill -9 of one fast replica: systemd restarts it (RestartSec) and it serves its model."""
    old_pid = main_pids(host)["Q2_FAST_2"]
    # Timed on the instance: kill, then poll the model list with the key until it answers.
    probe = host.run(
        "python3 -c 'import os, signal, sys, time, urllib.request\n"
        f"start = time.monotonic(); os.kill({old_pid}, signal.SIGKILL)\n"
        "request = urllib.request.Request(\"http://127.0.0.1:8081/v1/models\", "
        f"headers={{\"Authorization\": \"Bearer {KEY}\"}})\n"
        "while time.monotonic() - start < 60:\n"
        "    try:\n"
        "        if urllib.request.urlopen(request, timeout=1).status == 200:\n"
        "            print(round(time.monotonic() - start, 2)); sys.exit(0)\n"
        "    except Exception:\n"
        "        pass\n"
        "    time.sleep(0.1)\n"
        "sys.exit(1)'")
    assert probe.rc == 0, f"llama-server@Q2_FAST_2 did not come back within 60 s: {probe.stderr}"
    seconds = float(probe.stdout)
    with capsys.disabled():
        print(f"\nkill -9 llama-server@Q2_FAST_2: serving again after {seconds} s")
    assert main_pids(host)["Q2_FAST_2"] != old_pid
    assert seconds <= 10, f"back after {seconds} s"
    assert curl(host, "/health", 8081, key=None)[0] == 200


def test_interrupted_rollout_finishes_on_the_next_run(host, playbook):
    """Every instance's arguments change and the first health gate fails (its port is taken):
    the play fails there; once the port is free, a re-run with nothing else changed restarts
    every instance onto the new arguments, the quoted argument intact, and a third run
    changes nothing."""
    new = {"test_extra_args": EXTRA_ARGS, "llama_cpp_servers_health_timeout": 10}
    for name in INSTANCES:
        assert not has_args(cmdline(host, name), EXTRA_ARGS)
    host.run("systemctl stop port-holder 2>/dev/null; systemctl reset-failed port-holder 2>/dev/null")
    try:
        assert host.run("systemctl stop llama-server@Q2_FAST_1").rc == 0
        held = host.run("systemd-run --unit=port-holder /usr/bin/python3 -c 'import socket, time\n"
                        "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
                        "s.bind((\"127.0.0.1\", 8080)); s.listen(); time.sleep(900)'")
        assert held.rc == 0, held.stderr
        # SO_REUSEADDR: the earlier tests' connections to the port may linger in TIME_WAIT.
        listening = host.run("for i in $(seq 1 50); do ss -ltnpH 'sport = :8080' | grep -q python3 && exit 0; "
                             "sleep 0.1; done; exit 1")
        assert listening.rc == 0, host.run("journalctl -u port-holder --no-pager | tail -5").stdout
        failed = playbook("converge.yml", new)
        assert failed.returncode != 0
        assert "Q2_FAST_1" in failed.stdout[-5000:], failed.stdout[-3000:]
        # The roll-out stopped at the first instance: the others still run the old arguments.
        for name in ("Q2_FAST_2", "Q3_SYNTH", "Q4_DEEP"):
            assert not has_args(cmdline(host, name), EXTRA_ARGS), name
        assert host.run("systemctl stop port-holder").rc == 0

        rerun = playbook("converge.yml", new)
        assert rerun.returncode == 0, rerun.stdout[-3000:]
        for name in INSTANCES:
            args = cmdline(host, name)
            assert has_args(args, EXTRA_ARGS), (name, args)
            assert curl(host, "/health", INSTANCES[name][0], key=None)[0] == 200
        again = playbook("converge.yml", new, as_json=True)
        assert again.returncode == 0, again.stderr[-3000:]
        assert again.stats["changed"] == 0, again.stats
    finally:
        host.run("systemctl stop port-holder")
        restore = playbook("converge.yml")
        assert restore.returncode == 0, restore.stdout[-3000:]
    for name in INSTANCES:
        assert not has_args(cmdline(host, name), EXTRA_ARGS), name


@pytest.mark.parametrize("extra_vars, message", [
    ({"llama_cpp_servers_instances": [dict(FOUR[0], alias="q2 fast")] + FOUR[1:]},
     "instance 'Q2_FAST_1' is not valid: alias must start with a letter or digit"),
    ({"test_extra_args": ["--chat-template-kwargs", "{\"a\":\n 1}"]},
     "extra_args must be a list of strings without control characters"),
    ({"llama_cpp_servers_bind_address": "0.0.0.0", "llama_cpp_servers_api_key": ""},
     "llama_cpp_servers_api_key is empty, but instance 'Q2_FAST_1' listens on"),
    ({"llama_cpp_servers_instance_defaults": {"memory_max": "12 GB"}},
     "memory_max must be empty, bytes with an optional K, M, G, T, P or E suffix"),
    ({"llama_cpp_servers_journal_max_use": "2 GB"},
     "llama_cpp_servers_journal_max_use must be bytes with an optional K, M, G or T suffix (base 1024), e.g. 2G"),
])
def test_value_that_cannot_work_is_refused_before_any_change(host, playbook, extra_vars, message):
    before = config_state(host)
    defaults = extra_vars.get("llama_cpp_servers_instance_defaults")
    if defaults is not None:  # over the scenario's own defaults
        extra_vars = dict(extra_vars, llama_cpp_servers_instance_defaults=dict(SCENARIO_DEFAULTS, **defaults))
    result = playbook("converge.yml", extra_vars)
    assert result.returncode != 0
    assert message in result.flat, result.stdout[-3000:]
    assert config_state(host) == before


def test_gpu_placement_in_check_mode_on_faked_gpus(host, playbook):
    before = config_state(host)
    two_gpus = [dict(FAKE_GPU, index=0), dict(FAKE_GPU, index=1)]
    result = playbook("converge.yml", dict(ON_FAKE_GPUS, llama_cpp_servers_gpus=two_gpus),
                      check=True, diff=True, as_json=True)
    assert result.returncode == 0, result.stderr[-3000:]
    placement = result.result("Place the instances on this host's GPUs")
    assert placement["changed"] is False
    devices = {name: entry["devices"] for name, entry in placement["placement"].items()}
    # Largest first, each on the roomier GPU: the two fast replicas end on different GPUs.
    assert sorted(devices.values()) == ["0", "0", "1", "1"] and devices["Q2_FAST_1"] != devices["Q2_FAST_2"]
    assert placement["models"]["q2"]["architecture"] == "llama"  # read from the HTTP mirror, q3 on the controller
    # The environment files a real run would write.
    for item in result.result("Write each instance's environment file")["results"]:
        diffs = item["diff"] if isinstance(item["diff"], list) else [item["diff"]]
        after = "".join(d.get("after", "") for d in diffs)
        assert f'CUDA_VISIBLE_DEVICES="{devices[item["_instance"]["name"]]}"' in after, diffs
    assert config_state(host) == before


def test_instances_that_do_not_fit_the_gpus_are_refused_before_any_change(host, playbook):
    before = config_state(host)
    result = playbook("converge.yml", dict(ON_FAKE_GPUS, llama_cpp_servers_gpus=[dict(FAKE_GPU, index=0)]))
    assert result.returncode != 0
    # Q4_DEEP and Q3_SYNTH (the largest) fit on the one GPU; the replicas do not.
    assert "The instances do not fit on this host's GPUs: instance Q2_FAST_1 needs" in result.flat, result.stdout[-3000:]
    assert "instance Q2_FAST_2 needs" in result.flat and "DOES NOT FIT" in result.flat
    assert config_state(host) == before


def test_the_journal_is_persistent_and_bounded(host):
    conf = host.file("/etc/systemd/journald.conf.d/50-multimodel.conf").content_string
    assert "Storage=persistent" in conf and "SystemMaxUse=256M" in conf and "SystemKeepFree=64M" in conf
    # journald runs with it: the journal is on disk, and its own report names the cap.
    assert host.file("/var/log/journal").is_directory
    report = host.check_output("journalctl -b -u systemd-journald --no-pager -o cat | grep 'System Journal' | tail -1")
    assert report.startswith("System Journal (/var/log/journal/"), report
    assert re.search(r", max 256(\.0)?M,", report), report  # systemd writes 256M or 256.0M
    # The instances log there.
    assert host.check_output("journalctl -u llama-server@Q2_FAST_1 -q --no-pager -o cat | head -1")


def test_models_that_do_not_fit_the_disk_are_refused_before_any_change(host, playbook):
    """Pointed at an empty model directory, every model is to fetch: preflight adds their sizes
    (read on the controller for q3's src, on the host for q4's file:// url, with a HEAD from the
    HTTP mirror for q2's) and refuses
    when the filesystem would keep less than llama_cpp_servers_disk_reserve_mib free.

    The reserve is 1 GiB above the free space read here: the disk is shared with the scenarios
    running beside this one, and their clean-ups free space between this read and preflight's
    (a reserve of exactly the free space passed when more than the models' few MiB was freed)."""
    before = config_state(host)
    free_mib = int(host.check_output("df -P -B1M /srv | awk 'NR == 2 { print $4 }'"))
    reserve_mib = free_mib + 1024
    result = playbook("converge.yml", {"llama_cpp_servers_model_dir": "/srv/mmo-no-models-yet",
                                       "llama_cpp_servers_disk_reserve_mib": reserve_mib}, check=True)
    assert result.returncode != 0
    found = re.search(r"/srv/mmo-no-models-yet is on (\S+), with (\d+) MiB free; the models to fetch need (\d+) MiB "
                      r"\(([^)]*)\), and llama_cpp_servers_disk_reserve_mib keeps (\d+) MiB free", result.flat)
    assert found, result.stdout[-3000:]
    sizes = dict(item.split(": ") for item in found.group(4).split(", "))
    used = sorted({instance[2] for instance in INSTANCES.values()})
    assert sorted(sizes) == used
    for model, shown in sizes.items():
        size = int(host.check_output(f"stat -c %s {model_file(host, model)}"))
        assert shown == f"{-(-size // 1048576)} MiB", (model, shown, size)
    assert 1 <= int(found.group(3)) <= sum(int(shown.split()[0]) for shown in sizes.values())
    assert int(found.group(5)) == reserve_mib
    assert not host.file("/srv/mmo-no-models-yet").exists
    assert config_state(host) == before
