# -*- coding: utf-8 -*-
# Copyright (c) 2026, multimodel.orchestration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The shape of a GGUF model, read from its header: what a GPU needs to hold it.

A GGUF file starts with its metadata (architecture, layer count, attention heads, the
tokenizer); the tensors follow. Only that first part is read, from any stream (a local file,
an HTTP download cut short), so the shape of a 40 GB model costs a few megabytes of reading.
Standard library only: this runs on the managed host (gpu_placement) and on the controller
(the gguf_shape lookup).
"""

from __future__ import annotations

import os
import struct

MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
# The metadata of real models is a few MiB (mostly the tokenizer); past this it is not a model.
MAX_STRING_BYTES = 64 * 1024 * 1024
MAX_KV_COUNT = 1_000_000

# GGUF value types: fixed sizes (struct format), 8 = string, 9 = array.
_FIXED = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9
# Bytes per cached K or V element: llama-server's default cache type is f16.
KV_CACHE_ELEMENT_BYTES = 2


class GGUFError(ValueError):
    """The stream is not a GGUF model this reader understands (the message says why)."""


class _Reader:
    def __init__(self, stream, what):
        self.stream, self.what, self.offset = stream, what, 0

    def read(self, size):
        data = b""
        while len(data) < size:
            chunk = self.stream.read(size - len(data))
            if not chunk:
                raise GGUFError(f"{self.what}: the file ends at byte {self.offset + len(data)}, inside its GGUF header")
            data += chunk
        self.offset += size
        return data

    def skip(self, size):
        # Streams from HTTP cannot seek: read and drop, a megabyte at a time.
        while size > 0:
            step = min(size, 1024 * 1024)
            self.read(step)
            size -= step

    def fixed(self, code):
        fmt = "<" + _FIXED[code]
        return struct.unpack(fmt, self.read(struct.calcsize(fmt)))[0]

    def string(self, keep=True):
        length = self.fixed(10)
        if length > MAX_STRING_BYTES:
            raise GGUFError(f"{self.what}: a {length}-byte string at byte {self.offset}: not a GGUF model")
        if not keep:
            self.skip(length)
            return None
        return self.read(length).decode("utf-8", errors="replace")

    def value(self, kind, keep):
        if kind in _FIXED:
            return self.fixed(kind)
        if kind == _STRING:
            return self.string(keep)
        if kind == _ARRAY:
            element, count = self.fixed(4), self.fixed(10)
            if element in _FIXED and not keep:  # a tokenizer's scores: skipped in one go
                self.skip(count * struct.calcsize("<" + _FIXED[element]))
                return None
            values = [self.value(element, keep) for _index in range(count)]
            return values if keep else None
        raise GGUFError(f"{self.what}: unknown GGUF value type {kind} at byte {self.offset}: not a GGUF model")


def read_metadata(stream, what="model", wanted=None):
    """The header's key/value metadata, as a dict; only keys for which wanted(key) is true are
    kept (arrays such as the tokenizer's are skipped, not decoded). The stream is read up to
    the end of the metadata and no further."""
    reader = _Reader(stream, what)
    magic = reader.read(4)
    if magic != MAGIC:
        raise GGUFError(f"{what}: not a GGUF file (it starts with {magic!r}, not {MAGIC!r})")
    version = reader.fixed(4)
    if version not in SUPPORTED_VERSIONS:
        raise GGUFError(f"{what}: GGUF version {version} is not supported (only {', '.join(map(str, SUPPORTED_VERSIONS))})")
    _tensors, kv_count = reader.fixed(10), reader.fixed(10)
    if kv_count > MAX_KV_COUNT:
        raise GGUFError(f"{what}: {kv_count} metadata keys: not a GGUF model")
    metadata = {}
    for _index in range(kv_count):
        key = reader.string()
        keep = wanted is None or wanted(key)
        value = reader.value(reader.fixed(4), keep)
        if keep:
            metadata[key] = value
    return metadata


def _per_layer(value, layers):
    """head_count_kv is one number, or one per layer (models that vary it)."""
    if isinstance(value, list):
        return [int(v) for v in value[:layers]] + [0] * max(0, layers - len(value))
    return [int(value)] * layers


def shape(stream, size_bytes, what="model"):
    """What placement needs of a model: its size, its layer count and the bytes its K/V cache
    takes per token in each layer, from the GGUF header on stream."""
    def wanted(key):
        return key == "general.architecture" or (
            key.count(".") >= 1 and key.split(".", 1)[1] in (
                "block_count", "embedding_length", "attention.head_count", "attention.head_count_kv",
                "attention.key_length", "attention.value_length", "context_length"))

    metadata = read_metadata(stream, what, wanted)
    arch = metadata.get("general.architecture")
    if not isinstance(arch, str) or not arch:
        raise GGUFError(f"{what}: the GGUF header has no general.architecture")

    def number(name, default=None):
        value = metadata.get(f"{arch}.{name}", default)
        if value is None:
            raise GGUFError(f"{what}: the GGUF header has no {arch}.{name}, which placement needs")
        return value

    layers = int(number("block_count"))
    embedding = int(number("embedding_length"))
    heads = _per_layer(number("attention.head_count"), layers)
    heads_kv = _per_layer(number("attention.head_count_kv", metadata.get(f"{arch}.attention.head_count")), layers)
    head_size = embedding // max(heads) if heads and max(heads) else 0
    key_length = int(number("attention.key_length", head_size))
    value_length = int(number("attention.value_length", head_size))
    kv_per_layer = [h * (key_length + value_length) * KV_CACHE_ELEMENT_BYTES for h in heads_kv]
    return {
        "architecture": arch,
        "size_bytes": int(size_bytes),
        "layers": layers,
        # The largest layer's, so that an estimate errs on the side of room.
        "kv_bytes_per_token_layer": max(kv_per_layer) if kv_per_layer else 0,
        "context_length": int(metadata.get(f"{arch}.context_length") or 0),
    }


def shape_of_file(path, what):
    """shape() of a model file on this machine (its size from the open file)."""
    with open(path, "rb") as stream:
        return shape(stream, os.fstat(stream.fileno()).st_size, what)
