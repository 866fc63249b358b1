# Copyright (c) 2026, multimodel.orchestration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Tests of tests/fixtures/build_tiny_gguf.py: reproducible, seed-dependent, well-formed."""

import hashlib
import os
import subprocess
import sys

import pytest

gguf = pytest.importorskip('gguf')

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'fixtures', 'build_tiny_gguf.py')


def build(path, *extra):
    proc = subprocess.run([sys.executable, SCRIPT, str(path)] + list(extra),
                          capture_output=True, text=True, check=True)
    return proc.stdout


def sha256(path):
    with open(path, 'rb') as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def field(reader, key):
    value = reader.fields[key]
    return value.contents()


def test_same_seed_is_byte_identical_and_other_seed_differs(tmp_path):
    first, second, other = tmp_path / 'a.gguf', tmp_path / 'b.gguf', tmp_path / 'c.gguf'
    out = build(first, '--seed', '7')
    build(second, '--seed', '7')
    build(other, '--seed', '8')
    assert first.read_bytes() == second.read_bytes()
    assert sha256(first) != sha256(other)
    # The CLI prints "<sha256>  <path>  (<size> bytes)".
    assert out.split()[0] == sha256(first)
    assert not list(tmp_path.glob('*.tmp-*'))


def test_name_changes_the_file(tmp_path):
    build(tmp_path / 'a.gguf', '--name', 'one')
    build(tmp_path / 'b.gguf', '--name', 'two')
    assert sha256(tmp_path / 'a.gguf') != sha256(tmp_path / 'b.gguf')


def test_model_layout(tmp_path):
    path = tmp_path / 'm.gguf'
    build(path, '--name', 'tiny-x')
    assert 500 * 1024 < path.stat().st_size < 1536 * 1024
    reader = gguf.GGUFReader(str(path))
    assert field(reader, 'general.architecture') == 'llama'
    assert field(reader, 'general.name') == 'tiny-x'
    assert field(reader, 'llama.block_count') == 2
    assert field(reader, 'llama.embedding_length') == 64
    assert field(reader, 'tokenizer.ggml.model') == 'llama'
    tokens = field(reader, 'tokenizer.ggml.tokens')
    assert len(set(tokens)) == len(tokens)
    assert all('<0x%02X>' % b in tokens for b in range(256))
    for special in ('<unk>', '<s>', '</s>', '<|im_start|>', '<|im_end|>'):
        assert special in tokens
    assert tokens[field(reader, 'tokenizer.ggml.bos_token_id')] == '<s>'
    assert tokens[field(reader, 'tokenizer.ggml.eos_token_id')] == '</s>'
    assert '<|im_start|>' in field(reader, 'tokenizer.chat_template')
    names = {t.name for t in reader.tensors}
    assert {'token_embd.weight', 'output.weight', 'blk.1.ffn_down.weight'} <= names
    assert len(names) == 3 + 2 * 9


def test_negative_seed_rejected(tmp_path):
    proc = subprocess.run([sys.executable, SCRIPT, str(tmp_path / 'x.gguf'), '--seed', '-1'],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert '--seed must be >= 0, got -1' in proc.stderr
