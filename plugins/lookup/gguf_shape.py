# -*- coding: utf-8 -*-
# Copyright (c) 2026, multimodel.orchestration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: gguf_shape
short_description: The shape of a GGUF model file on the controller (size, layers, K/V bytes per token)
version_added: 0.2.0
description:
  - Reads the GGUF header (only the header) of each model file given, on the controller, and returns what
    M(multimodel.orchestration.gpu_placement) needs to estimate its VRAM use, as the C(shape) of a model in that module's
    C(models).
  - For models the role copies from the controller (C(src)); models on the managed host or behind a URL are read
    by the module itself.
author:
  - multimodel.orchestration contributors (@multimodel)
options:
  _terms:
    description: Paths of GGUF files on the controller.
    required: true
    type: list
    elements: path
"""

EXAMPLES = r"""
- name: Show a model's shape
  ansible.builtin.debug:
    msg: "{{ lookup('multimodel.orchestration.gguf_shape', '/srv/models/qwen2.5-7b-q4_k_m.gguf') }}"
"""

RETURN = r"""
_raw:
  description: One shape per path.
  type: list
  elements: dict
  contains:
    architecture: {description: The model's architecture (general.architecture)., type: str}
    size_bytes: {description: The file's size., type: int}
    layers: {description: Its block count., type: int}
    kv_bytes_per_token_layer: {description: Bytes of f16 K/V cache per token in its largest layer., type: int}
    context_length: {description: The context it was trained for (0 when the header does not say)., type: int}
"""

import os

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase

from ansible_collections.multimodel.orchestration.plugins.module_utils.gguf import GGUFError, shape_of_file


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        self.set_options(var_options=variables, direct=kwargs)
        shapes = []
        for term in terms:
            path = os.path.expanduser(str(term))
            try:
                shapes.append(shape_of_file(path, f"model file {path}"))
            except OSError as exc:
                raise AnsibleLookupError(f"gguf_shape: cannot read {path}: {exc.strerror or exc}") from exc
            except GGUFError as exc:
                raise AnsibleLookupError(f"gguf_shape: {exc}") from exc
        return shapes
