"""Verify the roll-out guarantees of container_service (molecule/redis/container_service.yml
drives it) on the instance's real engine: a host port already taken is refused before any
change, a new container that cannot start gives way to the previous one (the same container,
running and healthy again), a configuration file written by a run that failed afterwards still
recreates the container on the next run, and a roll-out interrupted halfway is finished by the
next run. Each test leaves the test container as container_service.yml's defaults make it."""
import hashlib

import pytest

CS_NAME = "mmo-cs-test"
PREVIOUS = f"{CS_NAME}-previous"
CONFIG = "/srv/cs-config/app.conf"
LABEL = "org.multimodel.config-sha256"


def config_label(content):
    """The label container_service sets for the one configuration file holding `content`."""
    file_sha = hashlib.sha256(content.encode()).hexdigest()
    return hashlib.sha256(f"{CONFIG}={file_sha}".encode()).hexdigest()


def state(host_json, name=CS_NAME):
    container = host_json(f"docker container inspect {name}")[0]
    return {"id": container["Id"], "started": container["State"]["StartedAt"],
            "running": container["State"]["Running"],
            "health": container["State"].get("Health", {}).get("Status"),
            "label": container["Config"]["Labels"].get(LABEL),
            "command": container["Config"]["Cmd"],
            "ports": container["HostConfig"]["PortBindings"] or {}}


def absent(host, name):
    return host.run(f"docker container inspect {name}").rc != 0


def at_defaults(host, host_json):
    """Whether the test container is as container_service.yml's defaults leave it (a run of
    the playbook would change nothing), so that the fixture need not run it."""
    if absent(host, CS_NAME) or not absent(host, PREVIOUS):
        return False
    current = state(host_json)
    return (current["running"] and current["health"] == "healthy" and current["label"] == config_label("v1\n")
            and current["command"] == ["sleep", "infinity"] and current["ports"] == {}
            and host.file(CONFIG).content_string == "v1\n")


@pytest.fixture
def baseline(host, host_json, playbook):
    """The test container as the defaults make it, running and healthy, before and after
    (the playbook runs only when something differs: each run costs seconds)."""
    if not at_defaults(host, host_json):
        result = playbook("container_service.yml")
        assert result.returncode == 0, result.stdout[-3000:]
        assert at_defaults(host, host_json)
    yield state(host_json)
    if not at_defaults(host, host_json):
        result = playbook("container_service.yml")
        assert result.returncode == 0, result.stdout[-3000:]
        assert at_defaults(host, host_json)


@pytest.fixture
def port_holder(host):
    """Hold 127.0.0.1:18080 with another container, or with a host process."""
    holders = []

    def hold(kind):
        if kind == "container":
            out = host.run("docker run -d --name mmo-cs-port-holder -p 127.0.0.1:18080:6379 "
                           "mmo/redis-test:7 sleep infinity")
            holders.append("docker rm -f mmo-cs-port-holder")
        else:
            out = host.run("setsid python3 -m http.server 18080 --bind 127.0.0.1 >/dev/null 2>&1 < /dev/null & "
                           "echo $!; for i in $(seq 50); do python3 -c 'import socket; "
                           "socket.create_connection((\"127.0.0.1\", 18080), 1)' 2>/dev/null && break; sleep 0.1; done")
            holders.append(f"kill {out.stdout.split()[0]}")
        assert out.rc == 0, out.stderr

    yield hold
    for command in holders:
        host.run(command)


@pytest.mark.parametrize("kind, holder", [
    ("container", "is held by container mmo-cs-port-holder (publishes 127.0.0.1:18080/tcp)"),
    ("process", "is held by process python3 (pid "),
])
def test_taken_host_port_fails_before_any_change(host, host_json, playbook, baseline, port_holder, kind, holder):
    port_holder(kind)
    result = playbook("container_service.yml", {"test_cs_ports": ["127.0.0.1:18080:6379"]})
    assert result.returncode != 0
    message = result.flat
    assert (f"container {CS_NAME}: host port 18080/tcp on 127.0.0.1 (from '127.0.0.1:18080:6379') {holder}"
            in message), message[-3000:]
    assert "set test_cs_ports to a free port, or stop what holds it." in message
    assert state(host_json) == baseline
    # Refused in preflight: not even the network for the published port was created.
    assert host.run("docker network inspect mmo-cs-published").rc != 0


def test_port_of_the_container_itself_is_fine(host, host_json, playbook, baseline):
    ports = {"test_cs_ports": ["127.0.0.1:18080:6379"]}
    published = playbook("container_service.yml", ports)
    assert published.returncode == 0, published.stdout[-3000:]
    assert host.check_output(f"docker port {CS_NAME}") == "6379/tcp -> 127.0.0.1:18080"
    again = playbook("container_service.yml", ports, as_json=True)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert again.stats["changed"] == 0


def test_new_container_that_cannot_start_gives_way_to_the_previous(host, host_json, playbook, baseline):
    result = playbook("container_service.yml", {"test_cs_command": ["/no/such/command"]})
    assert result.returncode != 0
    message = result.flat
    assert "/no/such/command" in message, message[-3000:]
    assert (f"The new container failed, so the previous container {CS_NAME} was put back: "
            "it runs and is healthy again.") in message
    after = state(host_json)
    assert after["id"] == baseline["id"]
    assert after["running"] and after["health"] == "healthy"
    assert host.check_output(f"docker inspect --format '{{{{json .Config.Cmd}}}}' {CS_NAME}") == '["sleep","infinity"]'
    assert absent(host, PREVIOUS)


def test_config_written_by_a_failed_run_recreates_on_the_next(host, host_json, playbook, baseline):
    failed = playbook("container_service.yml", {"test_cs_config": "v2", "test_cs_fail_after_config": True})
    assert failed.returncode != 0
    assert "failing on purpose after writing the configuration" in failed.flat
    assert host.file(CONFIG).content_string == "v2\n"
    assert state(host_json) == baseline  # the failed run never reached the container
    rerun = playbook("container_service.yml", {"test_cs_config": "v2"})
    assert rerun.returncode == 0, rerun.stdout[-3000:]
    after = state(host_json)
    assert after["id"] != baseline["id"]
    assert after["label"] == config_label("v2\n")
    assert after["running"] and after["health"] == "healthy"
    assert host.check_output(f"docker exec {CS_NAME} cat /conf/app.conf") == "v2"
    assert absent(host, PREVIOUS)


def test_interrupted_rollout_is_finished_by_the_next_run(host, host_json, playbook, baseline):
    # Killed after the running container was set aside, before the new one was created.
    assert host.run(f"docker rename {CS_NAME} {PREVIOUS} && docker stop --time 1 {PREVIOUS}").rc == 0
    result = playbook("container_service.yml")
    assert result.returncode == 0, result.stdout[-3000:]
    after = state(host_json)
    assert after["id"] == baseline["id"]
    assert after["running"] and after["health"] == "healthy"
    assert absent(host, PREVIOUS)
    # Killed after the new container got healthy, before the previous one was removed.
    assert host.run(f"docker create --name {PREVIOUS} mmo/redis-test:7 sleep infinity").rc == 0
    result = playbook("container_service.yml")
    assert result.returncode == 0, result.stdout[-3000:]
    assert state(host_json)["id"] == baseline["id"]
    assert absent(host, PREVIOUS)
