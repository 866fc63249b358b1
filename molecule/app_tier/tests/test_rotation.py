"""Interrupted rotation: a new Redis password written by a run that stops after the configure
phases (redis.conf and the password file, the backend's Redis URL secret: nothing restarted),
then a full run with the same value and nothing else changed. The restart the first run
owed is not lost: the running Redis takes only the new password, and the backend replicas,
restarted with their new secret, are ready (Redis reachable with it).

Last in the suite (Molecule runs the files in name order): the stack stays on the rotated
password, healthy; the scenario is destroyed after verify."""
import secrets


def accepts(stack, password):
    result = stack.redis_cli("PING", password=password)
    return result.stdout.strip() == "PONG"


def test_rotation_finished_by_the_next_run(stack, playbook, host_json):
    old = stack.host.file("/etc/multimodel/redis/password").content_string.strip()
    assert accepts(stack, old)
    new = "rotated-" + secrets.token_hex(16)
    redis_id = host_json("docker inspect mmo-redis")[0]["Id"]

    interrupted = playbook("converge.yml", {"redis_password": new}, tags="redis_configure,backend_configure")
    assert interrupted.returncode == 0, interrupted.stdout[-3000:]
    # The run wrote the new secrets and stopped before the run phases: nothing was restarted.
    assert stack.host.file("/etc/multimodel/redis/password").content_string.strip() == new
    assert host_json("docker inspect mmo-redis")[0]["Id"] == redis_id
    assert accepts(stack, old) and not accepts(stack, new), "the configure-only run restarted Redis"

    finished = playbook("converge.yml", {"redis_password": new})
    assert finished.returncode == 0, finished.stdout[-3000:]
    assert accepts(stack, new), "Redis does not take the new password: its restart was lost"
    assert not accepts(stack, old), "Redis still takes the old password"
    for replica in stack.backends:
        probe = stack.host.run(f"docker exec {replica} python3 -c 'import sys, urllib.request as u; "
                               f"r = u.urlopen(\"http://127.0.0.1:8000/health/ready\", timeout=10); "
                               f"print(r.read().decode())'")
        assert probe.rc == 0, f"{replica} is not ready with the new password: {probe.stdout} {probe.stderr}"
        assert '"redis":"ok"' in probe.stdout.replace(" ", ""), probe.stdout
    # Through the whole stack: an answer is cached (written to and read from Redis).
    text = f"After the rotation {secrets.token_hex(4)}"
    first, second = stack.query(text), stack.query(text)
    assert first["status"] == 200 and second["status"] == 200, (first, second)
    assert second["json"]["cached"] is True
