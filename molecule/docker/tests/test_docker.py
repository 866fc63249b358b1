"""Verify the docker role on a real engine: service, daemon options, users, image archives."""
import json

import pytest

TEST_IMAGE = "mmo/httpd-test:1"


@pytest.fixture
def info(host_json):
    return host_json("docker info --format '{{json .}}'")


def test_engine_running_and_enabled(host):
    service = host.service("docker")
    assert service.is_running
    assert service.is_enabled


def test_daemon_json_is_the_merged_configuration(host):
    config = json.loads(host.file("/etc/docker/daemon.json").content_string)
    assert config["log-driver"] == "json-file"
    assert config["log-opts"] == {"max-size": "10m", "max-file": "5"}
    assert config["live-restore"] is True
    assert config["labels"] == ["org.multimodel.role=docker-test"]
    assert config["registry-mirrors"] == ["https://registry-mirror.example.internal"]
    assert config["runtimes"]["nvidia"]["path"] == "nvidia-container-runtime"
    assert "default-runtime" not in config


def test_daemon_options_in_effect(info):
    assert info["LoggingDriver"] == "json-file"
    assert info["LiveRestoreEnabled"] is True
    assert "org.multimodel.role=docker-test" in info["Labels"]
    assert "https://registry-mirror.example.internal/" in info["RegistryConfig"]["Mirrors"]
    assert "nvidia" in info["Runtimes"]
    assert info["DefaultRuntime"] == "runc"


def test_operator_in_docker_group(host):
    assert "docker" in host.user("llmops").groups


def test_compose_plugin_where_the_distribution_ships_it(host):
    if host.system_info.codename == "bookworm":
        pytest.skip("Debian 12 ships no Compose v2 plugin (use docker_install_source: upstream)")
    assert host.run("docker compose version").rc == 0


def test_archived_image_loaded_and_staging_cleaned(host):
    assert host.run(f"docker image inspect {TEST_IMAGE}").rc == 0
    assert host.run("ls -A /var/cache/multimodel/images").stdout.strip() == ""


def test_loaded_image_serves_on_a_published_port(host, host_json):
    host.run("docker rm -f verify-httpd")
    run = host.run(f"docker run -d --name verify-httpd -p 127.0.0.1:18080:8080 {TEST_IMAGE}")
    assert run.rc == 0, run.stderr
    try:
        page = host.run("curl -fsS --retry 10 --retry-connrefused --retry-delay 1 http://127.0.0.1:18080/")
        assert page.rc == 0, page.stderr
        assert page.stdout.strip() == "multimodel offline test image"
        log_config = host_json("docker inspect --format '{{json .HostConfig.LogConfig}}' verify-httpd")
        assert log_config["Type"] == "json-file"
    finally:
        host.run("docker rm -f verify-httpd")


def test_wrong_checksum_fails_before_loading(host, playbook):
    bad = "0" * 64
    result = playbook("converge.yml", {"docker_image_archives": [{
        "name": "mmo/httpd-test:never-loaded",
        "src": "/var/cache/mmo-harness/images/httpd-test.tar",
        "sha256": bad,
    }]})
    assert result.returncode != 0
    assert "the archive for image 'mmo/httpd-test:never-loaded'" in result.stdout
    assert f"expected {bad}" in result.stdout
    assert host.run("docker image inspect mmo/httpd-test:never-loaded").rc != 0
    assert host.run("ls -A /var/cache/multimodel/images").stdout.strip() == ""


def test_bad_value_refused_before_any_change(host, playbook):
    before = host.file("/etc/docker/daemon.json").content_string
    result = playbook("converge.yml", {"docker_install_source": "tarball"})
    assert result.returncode != 0
    assert "docker_install_source" in result.stdout and "tarball" in result.stdout
    assert host.file("/etc/docker/daemon.json").content_string == before


def test_reloadable_change_reloads_and_restart_keeps_containers(host, host_json, playbook):
    """A label change is applied by SIGHUP (same dockerd PID); a log option change restarts
    dockerd, and live-restore keeps a running container up through it."""
    host.run("docker rm -f verify-live")
    assert host.run(f"docker run -d --name verify-live {TEST_IMAGE}").rc == 0
    container_pid = host.check_output("docker inspect --format '{{.State.Pid}}' verify-live")
    dockerd_pid = host.check_output("systemctl show -p MainPID --value docker")
    try:
        relabel = playbook("converge.yml", {"docker_daemon_options_extra": {"labels": ["org.multimodel.role=relabelled"]}})
        assert relabel.returncode == 0, relabel.stdout[-3000:]
        assert host.check_output("systemctl show -p MainPID --value docker") == dockerd_pid
        assert "org.multimodel.role=relabelled" in host_json("docker info --format '{{json .Labels}}'")

        relog = playbook("converge.yml", {"docker_daemon_options_extra": {
            "labels": ["org.multimodel.role=docker-test"], "log-opts": {"max-file": "7"}}})
        assert relog.returncode == 0, relog.stdout[-3000:]
        assert host.check_output("systemctl show -p MainPID --value docker") != dockerd_pid
        assert host.check_output("docker inspect --format '{{.State.Pid}}' verify-live") == container_pid
    finally:
        host.run("docker rm -f verify-live")
        restore = playbook("converge.yml")
        assert restore.returncode == 0, restore.stdout[-3000:]


def test_daemon_json_left_pending_is_applied_by_the_next_run(host, host_json, playbook):
    """daemon.json written by a run that stopped before applying it (--tags docker_configure
    here; a failed run alike) is applied by the next run with nothing else changed: dockerd is
    restarted and the running engine reports the new setting. Decided from what dockerd last
    applied, not from what the run changed; check mode predicts it and changes nothing."""
    settings = {"docker_daemon_options_extra": {"labels": ["org.multimodel.role=docker-test"],
                                                "log-driver": "local"}}
    dockerd_pid = host.check_output("systemctl show -p MainPID --value docker")
    daemon_json = host.file("/etc/docker/daemon.json").content_string
    try:
        # Check mode, daemon.json to change: the restart is predicted, nothing changes.
        predicted = playbook("converge.yml", settings, check=True, as_json=True)
        assert predicted.returncode == 0, predicted.stderr[-3000:]
        assert predicted.changed("Write daemon.json")
        assert predicted.changed("Reload or restart the Docker daemon with the new daemon.json")
        assert host.file("/etc/docker/daemon.json").content_string == daemon_json
        assert host.check_output("systemctl show -p MainPID --value docker") == dockerd_pid

        written = playbook("converge.yml", settings, tags="docker_configure")
        assert written.returncode == 0, written.stdout[-3000:]
        assert json.loads(host.file("/etc/docker/daemon.json").content_string)["log-driver"] == "local"
        # Written, not applied: the same dockerd, still on the old log driver.
        assert host.check_output("systemctl show -p MainPID --value docker") == dockerd_pid
        assert host_json("docker info --format '{{json .LoggingDriver}}'") == "json-file"

        # Check mode, daemon.json written but not applied: the restart is predicted.
        predicted = playbook("converge.yml", settings, check=True, as_json=True)
        assert predicted.returncode == 0, predicted.stderr[-3000:]
        assert not predicted.changed("Write daemon.json")
        assert predicted.changed("Reload or restart the Docker daemon with the new daemon.json")
        assert host.check_output("systemctl show -p MainPID --value docker") == dockerd_pid

        applied = playbook("converge.yml", settings, as_json=True)
        assert applied.returncode == 0, applied.stderr[-3000:]
        assert not applied.changed("Write daemon.json")
        assert applied.changed("Reload or restart the Docker daemon with the new daemon.json")
        assert host.check_output("systemctl show -p MainPID --value docker") != dockerd_pid
        assert host_json("docker info --format '{{json .LoggingDriver}}'") == "local"

        again = playbook("converge.yml", settings, as_json=True)
        assert again.returncode == 0, again.stderr[-3000:]
        assert again.stats["changed"] == 0
    finally:
        restore = playbook("converge.yml")
        assert restore.returncode == 0, restore.stdout[-3000:]
        assert host_json("docker info --format '{{json .LoggingDriver}}'") == "json-file"
