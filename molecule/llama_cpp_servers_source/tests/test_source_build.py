"""Verify llama-server built from the pinned source archive runs the model."""
import json


def test_binary_is_the_cached_build(host):
    current = host.file("/opt/llama.cpp/current")
    assert current.is_symlink
    assert current.linked_to.startswith("/opt/llama.cpp/builds/llama-cpp-python-0.3.36-")
    assert host.file("/opt/llama.cpp/current/bin/llama-server").mode & 0o111
    assert "/opt/llama.cpp/current/bin/llama-server" in host.file("/etc/systemd/system/llama-server@.service").content_string


def test_instance_serves_a_completion(host):
    assert host.service("llama-server@TINY").is_running
    out = host.check_output("curl -fsS http://127.0.0.1:8090/v1/completions -H 'Content-Type: application/json' "
                            "-d '{\"prompt\": \"hello\", \"max_tokens\": 8}'")
    assert json.loads(out)["usage"]["completion_tokens"] > 0
    assert "llamacpp:" in host.check_output("curl -fsS http://127.0.0.1:8090/metrics")


def _task_changed(output, task):
    """Whether the named task reported 'changed' in a playbook's output."""
    block = output.split(f": {task}]", 1)
    return len(block) == 2 and "changed:" in block[1].split("TASK [", 1)[0]


def test_build_is_redone_only_when_its_flags_change(playbook):
    # --check: says what would happen without spending minutes on a second build.
    same = playbook("converge.yml", check=True)
    assert same.returncode == 0, same.stdout[-3000:]
    assert not _task_changed(same.stdout, "Build llama-server")
    other = playbook("converge.yml", {"llama_cpp_servers_source_cmake_args": ["-DGGML_AVX512=OFF"]}, check=True)
    assert other.returncode == 0, other.stdout[-3000:]
    assert _task_changed(other.stdout, "Build llama-server")
