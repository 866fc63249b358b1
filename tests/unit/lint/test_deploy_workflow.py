# Copyright (c) 2026, multimodel.orchestration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""examples/github-actions/deploy.yml, the deploy workflow operators copy: what it promises in
its comments and the README (on a tag: preflight, site, health; the vault password from a
secret, never on a command line; one deploy at a time) is what it does."""

import pathlib
import re

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[3]
WORKFLOW = ROOT / "examples" / "github-actions" / "deploy.yml"


def load():
    return yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))


def steps():
    return load()["jobs"]["deploy"]["steps"]


def test_it_runs_on_a_version_tag_and_by_hand_one_at_a_time():
    workflow = load()
    assert workflow["on"]["push"] == {"tags": ["v*"]}
    assert "workflow_dispatch" in workflow["on"]
    assert workflow["concurrency"]["cancel-in-progress"] is False
    assert workflow["permissions"] == {"contents": "read"}


def test_it_checks_deploys_then_reports_status_with_the_collections_playbooks():
    playbooks = [re.search(r"ansible-playbook .*?(multimodel\.orchestration\.\w+)", step["run"]).group(1)
                 for step in steps() if "ansible-playbook" in step.get("run", "")]
    assert playbooks == ["multimodel.orchestration.preflight", "multimodel.orchestration.site",
                         "multimodel.orchestration.health"]
    for name in ("preflight", "site", "health"):
        assert (ROOT / "playbooks" / f"{name}.yml").is_file()
    status = next(step for step in steps() if "multimodel.orchestration.health" in step.get("run", ""))
    assert "!cancelled()" in status["if"]  # the table also after a failed deploy


def test_secrets_reach_files_through_the_environment_only():
    for step in steps():
        assert "secrets." not in step.get("run", ""), f"{step['name']}: a secret inside a shell command"
    secret_step = next(step for step in steps() if "ANSIBLE_VAULT_PASSWORD" in step.get("env", {}))
    assert secret_step["env"]["ANSIBLE_VAULT_PASSWORD"] == "${{ secrets.ANSIBLE_VAULT_PASSWORD }}"
    assert "umask 077" in secret_step["run"]
    assert "ANSIBLE_VAULT_PASSWORD_FILE=$RUNNER_TEMP/vault-password" in secret_step["run"]
    assert "StrictHostKeyChecking=yes" in secret_step["run"]
    cleanup = steps()[-1]
    assert cleanup["if"] == "${{ always() }}" and "vault-password" in cleanup["run"] and "deploy_key" in cleanup["run"]
