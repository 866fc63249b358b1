# Copyright (c) 2026, multimodel.orchestration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""GGUF files for the placement tests, written by the gguf package (a real writer)."""

import os

import gguf


def header_only(path, arch='qwen2', layers=28, embedding=3584, heads=28, heads_kv=4, size=None, **extra):
    """A GGUF file with a real model's metadata (Qwen2.5-7B's by default, a tokenizer included)
    and no tensors, grown (sparse) to size bytes: the header of a big model without its weights."""
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(layers)
    writer.add_embedding_length(embedding)
    writer.add_head_count(heads)
    if heads_kv is not None:
        writer.add_head_count_kv(heads_kv)
    writer.add_context_length(32768)
    writer.add_tokenizer_model('gpt2')
    writer.add_token_list([f'token{i}' for i in range(5000)])
    writer.add_token_scores([0.5] * 5000)
    for key, value in extra.items():
        writer.add_uint32(f'{arch}.{key}', value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    if size:
        os.truncate(path, size)
    return path
