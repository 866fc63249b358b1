"""Verify llama-server built from the pinned source archive runs the model."""
import json


def test_binary_is_the_cached_build(host):
    current = host.file("/opt/llama.cpp/current")
    assert current.is_symlink
    assert current.linked_to.startswith("/opt/llama.cpp/builds/llama-cpp-python-0.3.36-")
    assert host.file("/opt/llama.cpp/current/bin/llama-server").mode & 0o111
    # The instance's command line lives in its ExecStart= drop-in; it names the build's own
    # directory (a rollback restores the build it ran), and the running process is that build.
    exec_conf = host.file("/etc/systemd/system/llama-server@TINY.service.d/10-exec.conf").content_string
    assert f'"{current.linked_to}/bin/llama-server"' in exec_conf
    pid = host.check_output("systemctl show -p MainPID --value llama-server@TINY")
    built = host.check_output("readlink -f /opt/llama.cpp/current/bin/llama-server")
    assert built.startswith(current.linked_to + "/")
    assert host.check_output(f"readlink -f /proc/{pid}/exe") == built


def test_instance_serves_a_completion(host):
    assert host.service("llama-server@TINY").is_running
    out = host.check_output("curl -fsS http://127.0.0.1:8090/v1/completions -H 'Content-Type: application/json' "
                            "-d '{\"prompt\": \"hello\", \"max_tokens\": 8}'")
    assert json.loads(out)["usage"]["completion_tokens"] > 0
    assert "llamacpp:" in host.check_output("curl -fsS http://127.0.0.1:8090/metrics")


def test_build_is_redone_only_when_its_flags_change(playbook):
    # --check: says what would happen without spending minutes on a second build. Whether the
    # build task changed is read from Ansible's JSON results, not from the console text.
    same = playbook("converge.yml", check=True, as_json=True)
    assert same.returncode == 0, same.stdout[-3000:] + same.stderr[-3000:]
    assert not same.changed("Build llama-server")
    other = playbook("converge.yml", {"llama_cpp_servers_source_cmake_args": ["-DGGML_AVX512=OFF"]}, check=True,
                     as_json=True)
    assert other.returncode == 0, other.stdout[-3000:] + other.stderr[-3000:]
    assert other.changed("Build llama-server")
