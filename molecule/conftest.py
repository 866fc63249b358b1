"""Helpers shared by every scenario's testinfra suite (molecule/<scenario>/tests/).

The suites cannot import this module; they get its helpers as fixtures: `playbook`,
`host_json` and `assert_hardened`.
"""
import json
import os
import subprocess

import pytest

MANAGED_BY = "multimodel.orchestration"


class PlaybookRun(subprocess.CompletedProcess):
    """One ansible-playbook run: returncode, stdout and stderr as subprocess gives them, plus
    what the tests read from them."""

    def __init__(self, completed, hostname, as_json):
        super().__init__(completed.args, completed.returncode, completed.stdout, completed.stderr)
        self.hostname = hostname
        self.as_json = as_json

    @property
    def results(self):
        """What Ansible's JSON callback printed (also when a task failed), decoded."""
        assert self.as_json, "run the playbook with as_json=True to read its results"
        try:
            return json.loads(self.stdout)
        except ValueError as error:
            raise AssertionError(f"no JSON results ({error}); rc={self.returncode}, "
                                 f"stderr: {self.stderr[-3000:]}") from None

    @property
    def flat(self):
        """stdout with every run of whitespace made one space (long messages wrap in the
        console's YAML results)."""
        return " ".join(self.stdout.split())

    @property
    def stats(self):
        """The host's recap counters (ok, changed, failures, skipped, ...), as numbers."""
        return self.results["stats"][self.hostname]

    def result(self, task):
        """This host's result of the first task named `task` (the role's name before it aside)."""
        for play in self.results["plays"]:
            for entry in play["tasks"]:
                if entry["task"]["name"].rsplit(" : ", 1)[-1] == task and self.hostname in entry["hosts"]:
                    return entry["hosts"][self.hostname]
        raise AssertionError(f"no task named {task!r} ran on {self.hostname}")

    def changed(self, task):
        """Whether the task named `task` (the role's name before it aside) reported a change."""
        return any(
            result.get("changed", False)
            for play in self.results["plays"] for entry in play["tasks"]
            if entry["task"]["name"].rsplit(" : ", 1)[-1] == task
            for result in entry["hosts"].values())


def run_playbook(host, playbook, extra_vars=None, check=False, tags=None, as_json=False, diff=False):
    """Run a playbook of the current scenario against one instance from the controller.

    Returns a PlaybookRun. By default stdout is the console output with stderr in it, so a
    test can assert on both the exit status and the message a failure printed. With as_json,
    stdout is the document of Ansible's JSON callback (stderr apart), read through
    PlaybookRun.results, .stats and .changed().
    """
    scenario_dir = os.environ["MOLECULE_SCENARIO_DIRECTORY"]
    hostname = host.backend.get_hostname()
    cmd = [
        "ansible-playbook",
        "-i", os.environ["MOLECULE_INVENTORY_FILE"],
        "--limit", hostname,
        os.path.join(scenario_dir, playbook),
    ]
    if extra_vars:
        cmd += ["--extra-vars", json.dumps(extra_vars)]
    if check:
        cmd.append("--check")
    if diff:
        cmd.append("--diff")
    if tags:
        cmd += ["--tags", tags]
    env = dict(os.environ, ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1")
    if as_json:
        # The JSON callback alone: another one (profile_tasks) would write into its document.
        env.update(ANSIBLE_STDOUT_CALLBACK="ansible.posix.json", ANSIBLE_CALLBACKS_ENABLED="ansible.posix.json")
    completed = subprocess.run(cmd, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE if as_json else subprocess.STDOUT,
                               text=True, timeout=900, check=False)
    return PlaybookRun(completed, hostname, as_json)


def assert_hardened(container, host=None, *, user=None, cap_add=(), limits=None, log_options=None,
                    restart="unless-stopped", stop_timeout=None, labels=None, ports=(), networks=None,
                    aliases=None):
    """Assert the policy container_service runs every container under, on one entry of
    `docker inspect`: healthy; a user that is not root; a read-only root filesystem with a
    /tmp tmpfs; every capability dropped but `cap_add` (as the engine names them: CAP_...);
    no-new-privileges; not privileged; json-file logs; the restart policy; the collection's
    labels; no published port but `ports` ("PORT/PROTO").

    The other keywords are what differs between containers, each checked when given: `user`
    ("UID:GID"), `limits` ({HostConfig key: value}, e.g. Memory, NanoCpus), `log_options` (the
    json-file options), `stop_timeout`, `labels` (these among the container's), `networks`
    (exactly these) and `aliases` ({network: an alias the container has on it}).

    With `host` (testinfra's), also from inside the container: the root filesystem refuses a
    write, the no_new_privs flag is set and, with no capability added, PID 1's bounding set is
    empty (not even root in the container could get a capability back).
    """
    name = container["Name"].lstrip("/")
    config, host_config = container["Config"], container["HostConfig"]
    assert container["State"]["Health"]["Status"] == "healthy", name
    assert config["User"].split(":")[0] not in ("", "0", "root"), f"{name} runs as {config['User']!r}"
    if user is not None:
        assert config["User"] == user, name
    assert host_config["ReadonlyRootfs"] is True, name
    assert "/tmp" in (host_config["Tmpfs"] or {}), name
    assert host_config["CapDrop"] == ["ALL"], name
    assert (host_config["CapAdd"] or []) == list(cap_add), name
    assert host_config["SecurityOpt"] == ["no-new-privileges"], name
    assert host_config["Privileged"] is False, name
    for key, value in (limits or {}).items():
        assert host_config[key] == value, f"{name}: HostConfig.{key}"
    assert host_config["LogConfig"]["Type"] == "json-file", name
    if log_options is not None:
        assert host_config["LogConfig"]["Config"] == log_options, name
    assert host_config["RestartPolicy"]["Name"] == restart, name
    if stop_timeout is not None:
        assert config["StopTimeout"] == stop_timeout, name
    own_labels = {"org.multimodel.service": name, "org.multimodel.managed-by": MANAGED_BY}
    for key, value in {**own_labels, **(labels or {})}.items():
        assert config["Labels"].get(key) == value, f"{name}: label {key}"
    assert sorted(host_config["PortBindings"] or {}) == sorted(ports), name
    attached = container["NetworkSettings"]["Networks"]
    if networks is not None:
        assert set(attached) == set(networks), name
    for network, alias in (aliases or {}).items():
        assert alias in attached[network]["Aliases"], f"{name} on {network}"
    if host is None:
        return
    write = host.run(f"docker exec {name} sh -c 'echo x >/probe'")
    assert write.rc != 0 and "Read-only file system" in write.stderr, name
    assert host.check_output(f"docker exec {name} sh -c 'grep ^NoNewPrivs /proc/self/status'").split()[1] == "1"
    if not cap_add:
        assert host.check_output(
            f"docker exec {name} sh -c 'grep ^CapBnd /proc/1/status'").split()[1] == "0000000000000000", name


@pytest.fixture
def host_json(host):
    """host_json(command) -> the JSON the command printed on this instance, decoded."""
    def _run(command):
        return json.loads(host.check_output(command))
    return _run


@pytest.fixture
def playbook(host):
    """playbook(name, extra_vars=None, check=False, tags=None, as_json=False, diff=False) ->
    PlaybookRun, against this host."""
    def _run(name, extra_vars=None, check=False, tags=None, as_json=False, diff=False):
        return run_playbook(host, name, extra_vars, check, tags, as_json, diff)
    return _run


@pytest.fixture(name="assert_hardened")
def assert_hardened_fixture():
    """assert_hardened(container, host=None, **expected): see the function of that name."""
    return assert_hardened
