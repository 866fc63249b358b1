"""Verify the redis role and the container policy it runs under (container_service), on a
real engine inside each instance: docker inspect, redis-cli in the container, persistence
across a recreate, and the failures that must leave everything as it was."""
import uuid

import pytest

NAME = "mmo-redis"
IMAGE = "mmo/redis-test:7"
PASSWORD = "molecule-redis-Secret-7f3a9c"  # the inventory's redis_password (molecule.yml)
NETWORK = "mmo-internal"
CONFIG_DIR = "/etc/multimodel/redis"
DATA_DIR = "/var/lib/multimodel/redis"
# The role's default ids: outside the host's own accounts (the image's redis user is 999:1000).
UID = GID = 10379
CS_NAME = "mmo-cs-test"


@pytest.fixture
def inspect(host_json):
    return host_json(f"docker inspect {NAME}")[0]


def redis_cli(host, *args, auth=True, password=PASSWORD):
    """Run redis-cli inside the container; the password goes in through REDISCLI_AUTH."""
    env = f"-e REDISCLI_AUTH={password} " if auth else ""
    return host.run(f"docker exec {env}{NAME} redis-cli " + " ".join(args))


def files_and_container(host, host_json):
    """What a run that fails before any change must leave as it was."""
    container = host_json(f"docker inspect {NAME}")[0]
    return ([host.file(f"{CONFIG_DIR}/{name}").sha256sum for name in ("redis.conf", "password")],
            container["Id"], container["State"]["StartedAt"])


def config_get(host, key):
    out = redis_cli(host, "CONFIG", "GET", key)
    assert out.rc == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == key, out.stdout
    return lines[1]


def test_running_and_healthy(inspect):
    assert inspect["State"]["Running"] is True
    assert inspect["State"]["Health"]["Status"] == "healthy"
    assert inspect["Config"]["Image"] == IMAGE
    assert inspect["Config"]["Healthcheck"]["Test"][0] == "CMD-SHELL"


def test_runs_as_non_root(host, inspect):
    assert inspect["Config"]["User"] == f"{UID}:{GID}"
    assert host.check_output(f"docker exec {NAME} id -u") == str(UID)
    # The server process itself, as the instance sees it.
    pid = host.check_output(f"docker inspect --format '{{{{.State.Pid}}}}' {NAME}")
    assert host.check_output(f"ps -o uid= -o comm= -p {pid}").split() == [str(UID), "redis-server"]
    # No account of the host has that id: the secret files are nobody else's.
    assert host.run(f"getent passwd {UID}").rc != 0


def test_hardening_limits_and_operations_settings(host, inspect, assert_hardened):
    assert_hardened(
        inspect, host, user=f"{UID}:{GID}",
        limits={"Memory": 256 * 1024 * 1024, "MemoryReservation": 64 * 1024 * 1024, "NanoCpus": 500_000_000,
                "CpuShares": 512},
        log_options={"max-size": "5m", "max-file": "3"}, stop_timeout=30, labels={"org.multimodel.test": "redis"},
        networks=[NETWORK], aliases={NETWORK: "redis"})


def test_internal_network_only(host, host_json):
    assert host_json(f"docker network inspect {NETWORK}")[0]["Internal"] is True
    assert host.check_output(f"docker port {NAME}") == ""
    assert not host.socket("tcp://0.0.0.0:6379").is_listening


def test_auth_required(host):
    anonymous = redis_cli(host, "ping", auth=False)
    assert "NOAUTH" in anonymous.stdout + anonymous.stderr
    assert redis_cli(host, "ping").stdout.strip() == "PONG"


def test_memory_and_persistence_settings(host):
    assert config_get(host, "maxmemory") == str(64 * 1024 * 1024)
    assert config_get(host, "maxmemory-policy") == "volatile-lru"
    assert config_get(host, "appendonly") == "yes"
    assert config_get(host, "appendfsync") == "everysec"
    assert config_get(host, "save") == "3600 1 300 100 60 10000"
    assert config_get(host, "dir") == "/data"


def test_password_never_exposed(host, inspect):
    raw = host.check_output(f"docker inspect {NAME}")
    assert PASSWORD not in raw
    assert not any(var.startswith(("REDISCLI_AUTH=", "REDIS_PASSWORD=")) for var in inspect["Config"]["Env"])
    processes = host.check_output("ps -eo args")
    assert "redis-server" in processes
    assert PASSWORD not in processes


def test_config_and_data_readable_by_the_container_user_only(host):
    for name in ("redis.conf", "password"):
        config = host.file(f"{CONFIG_DIR}/{name}")
        assert (config.uid, config.gid) == (UID, GID)
        assert config.mode == 0o400
    for directory in (CONFIG_DIR, DATA_DIR):
        assert (host.file(directory).uid, host.file(directory).gid, host.file(directory).mode) == (UID, GID, 0o700)
    # Redis writes its AOF there as that user.
    assert host.file(f"{DATA_DIR}/appendonlydir").uid == UID


def test_data_survives_recreate(host, host_json, playbook):
    value = uuid.uuid4().hex
    assert redis_cli(host, "SET", "verify:survivor", value).stdout.strip() == "OK"
    old_id = host_json(f"docker inspect {NAME}")[0]["Id"]
    assert host.run(f"docker rm -f {NAME}").rc == 0
    result = playbook("converge.yml")
    assert result.returncode == 0, result.stdout[-3000:]
    assert PASSWORD not in result.stdout
    new = host_json(f"docker inspect {NAME}")[0]
    assert new["Id"] != old_id
    assert new["State"]["Health"]["Status"] == "healthy"
    assert redis_cli(host, "GET", "verify:survivor").stdout.strip() == value
    assert [(m["Type"], m["Source"]) for m in new["Mounts"] if m["Destination"] == "/data"] == [("bind", DATA_DIR)]


def test_host_port_only_when_asked(host, host_json, playbook):
    """redis_host_port publishes Redis on 127.0.0.1 through a second, non-internal network;
    unset again, the port is gone and the container leaves that network."""
    published = playbook("converge.yml", {"redis_host_port": 16379})
    assert published.returncode == 0, published.stdout[-3000:]
    try:
        container = host_json(f"docker inspect {NAME}")[0]
        assert set(container["NetworkSettings"]["Networks"]) == {NETWORK, "mmo-redis-published"}
        assert host.check_output(f"docker port {NAME}") == "6379/tcp -> 127.0.0.1:16379"
        reply = host.check_output(
            "python3 -c 'import socket; s = socket.create_connection((\"127.0.0.1\", 16379), 5); "
            "s.sendall(b\"PING\\r\\n\"); print(s.recv(100).decode().strip())'")
        assert reply.startswith("-NOAUTH")
    finally:
        restored = playbook("converge.yml")
        assert restored.returncode == 0, restored.stdout[-3000:]
    container = host_json(f"docker inspect {NAME}")[0]
    assert set(container["NetworkSettings"]["Networks"]) == {NETWORK}
    assert host.check_output(f"docker port {NAME}") == ""


def test_missing_password_fails_before_any_change(host, host_json, playbook):
    before = host_json(f"docker inspect {NAME}")[0]
    config_before = host.file(f"{CONFIG_DIR}/redis.conf").sha256sum
    result = playbook("converge.yml", {"redis_password": ""})
    assert result.returncode != 0
    assert "redis_password is not set" in result.flat
    after = host_json(f"docker inspect {NAME}")[0]
    assert (after["Id"], after["State"]["StartedAt"]) == (before["Id"], before["State"]["StartedAt"])
    assert host.file(f"{CONFIG_DIR}/redis.conf").sha256sum == config_before


@pytest.mark.parametrize("extra_vars, message", [
    # Refused by the image's redis-server before either file is written, the new password too.
    ({"redis_config_extra": {"no-such-directive": 5}, "redis_password": "a-new-password-never-written"},
     ">>> the directive no-such-directive"),
    ({"redis_memory_reservation": "lots"}, "{'redis_memory_reservation': 'lots'}: each must be a size"),
    ({"redis_data_volume": "not a volume"}, "redis_data_volume is 'not a volume'"),
    ({"redis_host_port": 16379, "redis_host_address": "localhost"}, "redis_host_address is 'localhost'"),
])
def test_bad_values_fail_before_any_change(host, host_json, playbook, extra_vars, message):
    before = files_and_container(host, host_json)
    result = playbook("redis.yml", extra_vars)
    assert result.returncode != 0
    assert message in result.flat, result.stdout[-3000:]
    assert "a-new-password-never-written" not in result.stdout
    assert files_and_container(host, host_json) == before
    assert redis_cli(host, "ping").stdout.strip() == "PONG"


def test_a_password_written_by_a_failed_run_is_applied_by_the_next_run(host, host_json, playbook):
    """A run that wrote the rotated password and stopped before the container (redis_configure
    alone) leaves Redis on the old one; the next full run, with nothing else changed, finds the
    files differ from what the container started with and recreates it: AUTH with the new
    password works on the running server, and the data is still there."""
    rotated = "molecule-redis-Rotated-" + uuid.uuid4().hex[:12]
    value = uuid.uuid4().hex
    assert redis_cli(host, "SET", "verify:rotation", value).stdout.strip() == "OK"
    before = host_json(f"docker inspect {NAME}")[0]["Id"]
    try:
        written = playbook("redis.yml", {"redis_password": rotated}, tags="redis_configure")
        assert written.returncode == 0, written.stdout[-3000:]
        assert rotated not in written.stdout
        assert host_json(f"docker inspect {NAME}")[0]["Id"] == before
        # Written, not applied: the server still wants the old password.
        assert redis_cli(host, "ping").stdout.strip() == "PONG"
        assert "PONG" not in redis_cli(host, "ping", password=rotated).stdout

        finished = playbook("redis.yml", {"redis_password": rotated})
        assert finished.returncode == 0, finished.stdout[-3000:]
        assert rotated not in finished.stdout
        after = host_json(f"docker inspect {NAME}")[0]
        assert after["Id"] != before
        assert after["State"]["Health"]["Status"] == "healthy"
        assert redis_cli(host, "ping", password=rotated).stdout.strip() == "PONG"
        assert "PONG" not in redis_cli(host, "ping").stdout
        assert redis_cli(host, "GET", "verify:rotation", password=rotated).stdout.strip() == value
    finally:
        restored = playbook("redis.yml")
        assert restored.returncode == 0, restored.stdout[-3000:]
    assert redis_cli(host, "ping").stdout.strip() == "PONG"


def test_container_service_build_source(host, host_json, playbook, assert_hardened):
    """Builds an image from a local context, runs it under the policy, and changes nothing the
    second time."""
    first = playbook("container_service.yml")
    assert first.returncode == 0, first.stdout[-3000:]
    labels = host_json("docker image inspect mmo/cs-test:build-1")[0]["Config"]["Labels"]
    assert labels["org.multimodel.test"] == "container-service-build"
    container = host_json(f"docker container inspect {CS_NAME}")[0]
    assert_hardened(container, host, user="999:1000", cap_add=["CAP_NET_BIND_SERVICE"],
                    limits={"Memory": 64 * 1024 * 1024, "MemoryReservation": 16 * 1024 * 1024, "NanoCpus": 250_000_000},
                    stop_timeout=1, networks=["mmo-cs-test"])
    # The named volume took the image's /data, owned by the container's user.
    assert host.run(f"docker exec {CS_NAME} touch /data/written").rc == 0
    second = playbook("container_service.yml", as_json=True)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert second.stats["changed"] == 0, second.stdout[-3000:]


@pytest.mark.parametrize("extra_vars, message", [
    ({"test_cs_user": "0"}, "container_service_user is '0'"),
    ({"test_cs_user": "root:root"}, "container_service_user is 'root:root'"),
    ({"test_cs_image": "mmo/cs-test:latest"}, "container_service_image 'mmo/cs-test:latest' is not pinned"),
    ({"test_cs_image": "mmo/cs-test"}, "container_service_image 'mmo/cs-test' is not pinned"),
    # The docker role's own archive check, shared.
    ({"test_cs_source": "archive", "test_cs_image": "mmo/redis-test:never-loaded", "test_cs_archive_sha256": "abc"},
     "the image archive for 'mmo/redis-test:never-loaded'"),
])
def test_container_service_refuses_unsafe_settings(host, host_json, playbook, extra_vars, message):
    before = host_json(f"docker container inspect {CS_NAME}")[0]["Id"]
    result = playbook("container_service.yml", extra_vars)
    assert result.returncode != 0
    assert message in result.flat
    assert host_json(f"docker container inspect {CS_NAME}")[0]["Id"] == before


def test_container_service_archive_checked_before_loading(host, playbook):
    bad = "0" * 64
    result = playbook("container_service.yml", {
        "test_cs_source": "archive", "test_cs_image": "mmo/redis-test:never-loaded", "test_cs_archive_sha256": bad})
    assert result.returncode != 0
    assert "the archive for image 'mmo/redis-test:never-loaded'" in result.flat
    assert f"expected {bad}" in result.flat
    assert host.run("docker image inspect mmo/redis-test:never-loaded").rc != 0


def test_container_service_reports_an_unhealthy_container(host, host_json, playbook):
    before = host_json(f"docker container inspect {CS_NAME}")[0]["Id"]
    result = playbook("container_service.yml", {
        "test_cs_health_cmd": "echo probe says not ready >&2; exit 1", "test_cs_health_timeout": 6})
    assert result.returncode != 0
    message = result.flat
    assert f"container {CS_NAME} (mmo/cs-test:build-1) is not healthy 6 s after it was started" in message
    assert "health unhealthy" in message
    assert "probe says not ready" in message
    # The container was healthy before the run: the policy put it back.
    assert (f"The new container failed, so the previous container {CS_NAME} was put back: it runs and is healthy "
            "again.") in message
    after = host_json(f"docker container inspect {CS_NAME}")[0]
    assert (after["Id"], after["State"]["Health"]["Status"]) == (before, "healthy")


def test_container_service_removes_the_container(host, playbook):
    result = playbook("container_service.yml", {"test_cs_state": "absent"})
    assert result.returncode == 0, result.stdout[-3000:]
    assert host.run(f"docker container inspect {CS_NAME}").rc != 0
    assert host.run("docker volume inspect mmo-cs-test-data").rc == 0
