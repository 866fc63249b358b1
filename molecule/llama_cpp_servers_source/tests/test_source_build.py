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
