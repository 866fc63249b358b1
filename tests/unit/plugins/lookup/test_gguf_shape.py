# Copyright (c) 2026, multimodel.orchestration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The gguf_shape lookup, on files on this (the controller's) disk."""

import pytest

from ansible.errors import AnsibleLookupError

from ansible_collections.multimodel.orchestration.plugins.lookup.gguf_shape import LookupModule
from support.gguf_files import header_only


def test_shapes_of_files_on_the_controller(tmp_path):
    lookup = LookupModule()
    seven = header_only(tmp_path / 'seven.gguf', size=4_683_073_536)
    wide = header_only(tmp_path / 'wide.gguf', arch='llama', layers=80, embedding=8192, heads=64, heads_kv=8)
    first, second = lookup.run([str(seven), str(wide)], variables={})
    assert first == {'architecture': 'qwen2', 'size_bytes': 4_683_073_536, 'layers': 28,
                     'kv_bytes_per_token_layer': 2048, 'context_length': 32768}
    # Llama-3-70B's attention: 8 K/V heads of 128, 4096 bytes per token and layer.
    assert second['layers'] == 80 and second['kv_bytes_per_token_layer'] == 4096


def test_a_missing_file_and_a_file_that_is_not_a_model(tmp_path):
    lookup = LookupModule()
    with pytest.raises(AnsibleLookupError, match=f'gguf_shape: cannot read {tmp_path}/none.gguf: No such file'):
        lookup.run([str(tmp_path / 'none.gguf')], variables={})
    (tmp_path / 'page.gguf').write_text('<html>')
    with pytest.raises(AnsibleLookupError, match=f'gguf_shape: model file {tmp_path}/page.gguf: not a GGUF file'):
        lookup.run([str(tmp_path / 'page.gguf')], variables={})
