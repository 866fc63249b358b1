# Copyright (c) 2026, multimodel.orchestration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The gpu_placement module: main() with module args, reading real GGUF headers from files
and a real HTTP server, on faked GPUs (given, or from a stand-in nvidia-smi on PATH)."""

import os
import stat
from http.server import BaseHTTPRequestHandler

import pytest


from ansible_collections.multimodel.orchestration.plugins.modules import gpu_placement
from support.modules import run_main
from support.gguf_files import header_only
from support.servers import HTTPServer

SEVEN_B_BYTES = 4_683_073_536
SEVEN_B_NEED = 4467 + 896 + 512  # at 16384 tokens, all layers (module_utils tests)
TWO_L4 = [{'index': 0, 'name': 'L4', 'memory_mib': 23034}, {'index': 1, 'name': 'L4', 'memory_mib': 23034}]


def run_module(capsys, args):
    """Run main() with args; return (exit code, parsed JSON)."""
    return run_main(capsys, gpu_placement.main, args)[:2]


@pytest.fixture
def model(tmp_path):
    return str(header_only(tmp_path / 'seven.gguf', size=SEVEN_B_BYTES))


@pytest.fixture
def model_server(model):
    """Serves the model file (the 4.7 GB sparse file); counts the bytes it managed to send."""
    sent = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (the standard library's name)
            self.send_response(200)
            if self.path != '/no-length.gguf':
                self.send_header('Content-Length', str(SEVEN_B_BYTES))
            self.end_headers()
            total = 0
            with open(model, 'rb') as source:
                try:
                    while True:
                        chunk = source.read(1024 * 1024)
                        if not chunk:
                            break
                        self.wfile.write(chunk)
                        total += len(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client read the header and hung up
            sent.append(total)

        def log_message(self, *args):
            pass

    server = HTTPServer(Handler)
    server.sent = sent
    yield server
    server.close()


def instances(*names, gpu_layers=999):
    return [{'name': name, 'model': 'q', 'ctx_size': 16384, 'gpu_layers': gpu_layers} for name in names]


def test_places_from_a_file_on_the_host(capsys, model):
    # As the role passes its resolved instances: numbers as strings, keys the module does not use.
    role_instances = [dict(i, ctx_size=str(i['ctx_size']), port=8080, alias='q2-fast') for i in instances('A', 'B')]
    code, result = run_module(capsys, {'instances': role_instances, 'models': {'q': {'path': model}}, 'gpus': TWO_L4})
    assert code == 0 and result['changed'] is False
    assert {n: e['devices'] for n, e in result['placement'].items()} == {'A': '0', 'B': '1'}
    assert result['placement']['A']['need_mib'] == SEVEN_B_NEED
    assert result['models']['q']['layers'] == 28 and result['models']['q']['size_bytes'] == SEVEN_B_BYTES
    assert result['table'][0].startswith('instance')


def test_reads_only_the_header_of_a_download(capsys, model_server):
    code, result = run_module(capsys, {'instances': instances('A'), 'gpus': TWO_L4,
                                       'models': {'q': {'url': model_server.url + '/seven.gguf'}}})
    assert code == 0 and result['models']['q']['size_bytes'] == SEVEN_B_BYTES
    model_server.httpd.shutdown()  # waits for the handler to see the hang-up
    assert model_server.sent and model_server.sent[0] < 64 * 1024 * 1024  # not the 4.7 GB


def test_a_download_without_a_length_is_refused_by_name(capsys, model_server):
    code, result = run_module(capsys, {'instances': instances('A'), 'gpus': TWO_L4,
                                       'models': {'q': {'url': model_server.url + '/no-length.gguf'}}})
    assert code == 1 and 'sends no Content-Length' in result['msg'] and '/no-length.gguf' in result['msg']


def test_the_url_file_scheme_and_a_given_shape(capsys, model):
    code, result = run_module(capsys, {'instances': instances('A') + [dict(instances('B')[0], model='r')],
                                       'gpus': TWO_L4,
                                       'models': {'q': {'url': 'file://' + model},
                                                  'r': {'shape': {'size_bytes': SEVEN_B_BYTES, 'layers': 28,
                                                                  'kv_bytes_per_token_layer': 2048}}}})
    assert code == 0
    assert result['placement']['A']['need_mib'] == result['placement']['B']['need_mib'] == SEVEN_B_NEED


def test_what_does_not_fit_fails_with_the_table(capsys, model):
    code, result = run_module(capsys, {'instances': instances('A', 'B', 'C', 'D', 'E', 'F'),
                                       'models': {'q': {'path': model}}, 'gpus': TWO_L4})
    # 22778 MiB usable on each GPU holds three (17625 MiB), not four: six fit, not eight.
    assert code == 0
    code, result = run_module(capsys, {'instances': instances('A', 'B', 'C', 'D', 'E', 'F', 'G', 'H'),
                                       'models': {'q': {'path': model}}, 'gpus': TWO_L4})
    assert code == 1
    assert result['msg'].startswith("The instances do not fit on this host's GPUs: instance G needs 5875 MiB")
    assert 'instance H needs 5875 MiB' in result['msg'] and 'Lower gpu_layers or ctx_size' in result['msg']
    assert 'DOES NOT FIT' in result['msg'] and result['placement']['A']['devices'] in ('0', '1')


def test_gpus_from_nvidia_smi(capsys, model, tmp_path, monkeypatch):
    fake = tmp_path / 'bin' / 'nvidia-smi'
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\n'
                    '[ "$*" = "--query-gpu=index,uuid,name,memory.total --format=csv,noheader,nounits" ] || exit 9\n'
                    'echo "0, GPU-1111, NVIDIA H100 80GB HBM3, 81559"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv('PATH', f"{fake.parent}:{os.environ['PATH']}")
    code, result = run_module(capsys, {'instances': instances('A', 'B'), 'models': {'q': {'path': model}}})
    assert code == 0, result
    assert result['gpus'] == [{'index': 0, 'name': 'NVIDIA H100 80GB HBM3', 'memory_mib': 81559, 'reserve_mib': 256,
                               'free_mib': 81559 - 256 - 2 * SEVEN_B_NEED}]
    fake.write_text('#!/bin/sh\necho "NVIDIA-SMI has failed because it could not communicate with the driver" >&2\nexit 9\n')
    code, result = run_module(capsys, {'instances': instances('A'), 'models': {'q': {'path': model}}})
    assert code == 1 and result['msg'] == ('nvidia-smi failed (exit 9): NVIDIA-SMI has failed because it could not '
                                           'communicate with the driver')


def test_no_nvidia_smi_and_no_gpus_given(capsys, model, tmp_path, monkeypatch):
    monkeypatch.setenv('PATH', str(tmp_path))
    code, result = run_module(capsys, {'instances': instances('A'), 'models': {'q': {'path': model}}})
    assert code == 1 and result['msg'].startswith('no GPUs given and nvidia-smi is not on this host')


@pytest.mark.parametrize('args, message', [
    ({'models': {'q': {}}}, "models['q'] needs exactly one of path, url or shape; got none"),
    ({'models': {'q': {'path': '/a', 'url': 'http://b'}}}, "models['q'] needs exactly one of path, url or shape"),
    ({'models': {'q': {'url': 'ftp://mirror/q.gguf'}}}, "model 'q': url must be file://, http:// or https://; got 'ftp://mirror/q.gguf'"),
    ({'models': {'q': {'path': '/nonexistent/q.gguf'}}}, "model 'q': cannot read /nonexistent/q.gguf for its GGUF header: No such file"),
    ({'models': {'q': {'shape': {'size_bytes': 1, 'layers': 'x'}}}},
     "models['q'].shape needs the whole numbers size_bytes, layers, kv_bytes_per_token_layer; layers, "
     "kv_bytes_per_token_layer missing"),
    ({'models': {'r': {'path': '/x'}}}, "instance 'A': its model 'q' is not in models (r)"),
    ({'gpus': [{'index': 0, 'memory_mib': 0}]}, "gpus[0] needs index (a whole number, 0 or more) and memory_mib (MiB, more than 0)"),
    ({'gpus': [{'index': '1', 'memory_mib': '8192'}, {'index': 1, 'memory_mib': 8192}]}, 'gpus: index 1 is listed twice'),
    ({'instances': instances('A', 'A')}, "instances: name 'A' is used more than once"),
    ({'instances': [dict(instances('A')[0], gpu_layers=-1)]}, "instance 'A': ctx_size must be at least 1 and gpu_layers at least 0; got 16384 and -1"),
    ({'instances': [{'name': 'A', 'model': 'q', 'ctx_size': '4k', 'gpu_layers': 1}]},
     "instance 'A': ctx_size must be at least 1 and gpu_layers at least 0; got '4k' and 1"),
    ({'instances': [{'model': 'q'}]}, "instances[0] has no name"),
    ({'reserve_mib': -5}, 'reserve_mib must be 0 or more; got -5'),
])
def test_bad_input_is_named(capsys, model, args, message):
    code, result = run_module(capsys, dict({'instances': instances('A'), 'models': {'q': {'path': model}},
                                            'gpus': TWO_L4}, **args))
    assert code == 1 and result['msg'].startswith(message), result['msg']


def test_a_file_that_is_not_a_model(capsys, tmp_path):
    (tmp_path / 'x.gguf').write_text('<html>404</html>')
    code, result = run_module(capsys, {'instances': instances('A'), 'models': {'q': {'path': str(tmp_path / 'x.gguf')}},
                                       'gpus': TWO_L4})
    assert code == 1 and result['msg'].startswith(f"cannot place the instances: model 'q' ({tmp_path}/x.gguf): not a GGUF file")


def test_check_mode_places_the_same(capsys, model):
    code, result = run_module(capsys, {'instances': instances('A'), 'models': {'q': {'path': model}}, 'gpus': TWO_L4,
                                       '_ansible_check_mode': True})
    assert code == 0 and result['placement']['A']['devices'] == '0' and result['changed'] is False
