# Copyright (c) 2026, multimodel.orchestration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""module_utils/gguf.py: the shape of real GGUF files (written by the gguf package, and the
tiny test model llama-server runs), read from the header only."""

import io
import os
import sys

import pytest

from ansible_collections.multimodel.orchestration.plugins.module_utils.gguf import GGUFError, read_metadata, shape

from support.gguf_files import header_only

gguf = pytest.importorskip('gguf')
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', '..', 'fixtures'))
import build_tiny_gguf  # noqa: E402  pylint: disable=wrong-import-position


def test_a_real_model_shape(tmp_path):
    # Qwen2.5-7B: 28 layers, 3584 wide, 28 heads of 128, 4 K/V heads: 4 * (128 + 128) * 2 bytes
    # of f16 K/V per token and layer; llama.cpp reports 896 MiB of K/V for 16384 tokens.
    path = header_only(tmp_path / 'q.gguf', size=4_683_073_536)
    with open(path, 'rb') as stream:
        found = shape(stream, os.path.getsize(path))
        assert stream.tell() < 200_000  # the header only, not the 4.7 GB after it
    assert found == {'architecture': 'qwen2', 'size_bytes': 4_683_073_536, 'layers': 28,
                     'kv_bytes_per_token_layer': 2048, 'context_length': 32768}
    assert 16384 * found['kv_bytes_per_token_layer'] * found['layers'] == 896 * 1024 * 1024


def test_the_tiny_test_model(tmp_path):
    path = tmp_path / 'tiny.gguf'
    build_tiny_gguf.write_model(str(path))
    with open(path, 'rb') as stream:
        found = shape(stream, os.path.getsize(path))
    head = build_tiny_gguf.N_EMBD // build_tiny_gguf.N_HEAD
    assert found['architecture'] == 'llama' and found['layers'] == build_tiny_gguf.N_LAYER
    assert found['kv_bytes_per_token_layer'] == build_tiny_gguf.N_HEAD * 2 * head * 2


def test_explicit_key_and_value_lengths_and_missing_kv_heads(tmp_path):
    # No head_count_kv: every head has its own K/V; key and value lengths as the header says.
    path = header_only(tmp_path / 'm.gguf', arch='llama', layers=4, embedding=512, heads=8, heads_kv=None,
                       **{'attention.key_length': 96, 'attention.value_length': 64})
    with open(path, 'rb') as stream:
        assert shape(stream, 1)['kv_bytes_per_token_layer'] == 8 * (96 + 64) * 2


def test_a_stream_that_cannot_seek_is_read_to_the_end_of_the_header(tmp_path):
    path = header_only(tmp_path / 'q.gguf')
    data = path.read_bytes()

    class OneWay(io.RawIOBase):
        def __init__(self):
            self.position = 0

        def readable(self):
            return True

        def read(self, size=-1):  # short reads, as a socket gives
            chunk = data[self.position:self.position + min(size, 1000)]
            self.position += len(chunk)
            return chunk

    stream = OneWay()
    assert shape(stream, 123)['layers'] == 28
    assert stream.position == len(data)  # no tensors: the header is the whole file


@pytest.mark.parametrize('content, message', [
    (b'', 'the file ends at byte 0, inside its GGUF header'),
    (b'<html>not a model</html>', "not a GGUF file (it starts with b'<htm'"),
    (b'GGUF\x01\x00\x00\x00' + b'\x00' * 16, 'GGUF version 1 is not supported'),
    (b'GGUF\x03\x00\x00\x00' + b'\x00' * 8 + b'\x05' + b'\x00' * 7, 'the file ends at byte 24'),
])
def test_what_is_not_a_gguf_model_is_named(content, message):
    with pytest.raises(GGUFError, match='^model file x: ' + message.replace('(', r'\(').replace('[', r'\[')):
        read_metadata(io.BytesIO(content), 'model file x')


def test_a_header_without_what_placement_needs_is_named(tmp_path):
    writer = gguf.GGUFWriter(str(tmp_path / 'n.gguf'), 'llama')
    writer.add_block_count(2)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    with open(tmp_path / 'n.gguf', 'rb') as stream, \
            pytest.raises(GGUFError, match='has no llama.embedding_length, which placement needs'):
        shape(stream, 1, 'model n')
