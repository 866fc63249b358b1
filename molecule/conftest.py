"""Helpers shared by every scenario's testinfra suite (molecule/<scenario>/tests/)."""
import json
import os
import subprocess

import pytest


def run_playbook(host, playbook, extra_vars=None, check=False, tags=None):
    """Run a playbook of the current scenario against one instance from the controller.

    Returns the CompletedProcess (stdout and stderr together), so a test can assert on
    both the exit status and the message a failure printed.
    """
    scenario_dir = os.environ["MOLECULE_SCENARIO_DIRECTORY"]
    cmd = [
        "ansible-playbook",
        "-i", os.environ["MOLECULE_INVENTORY_FILE"],
        "--limit", host.backend.get_hostname(),
        os.path.join(scenario_dir, playbook),
    ]
    if extra_vars:
        cmd += ["--extra-vars", json.dumps(extra_vars)]
    if check:
        cmd.append("--check")
    if tags:
        cmd += ["--tags", tags]
    env = dict(os.environ, ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1")
    return subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=900, check=False)


@pytest.fixture
def host_json(host):
    """host_json(command) -> the JSON the command printed on this instance, decoded."""
    def _run(command):
        return json.loads(host.check_output(command))
    return _run


@pytest.fixture
def playbook(host):
    """playbook(name, extra_vars=None, check=False, tags=None) -> CompletedProcess, against this host."""
    def _run(name, extra_vars=None, check=False, tags=None):
        return run_playbook(host, name, extra_vars, check, tags)
    return _run
