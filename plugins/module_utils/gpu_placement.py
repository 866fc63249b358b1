# -*- coding: utf-8 -*-
# Copyright (c) 2026, multimodel.orchestration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Which GPU each llama-server instance runs on: its VRAM need, estimated from its model's
shape (module_utils/gguf.py), context and gpu_layers, packed onto the host's GPUs.

The estimate, for an instance offloading n of the model's L + 1 layers (llama.cpp counts the
output layer as one more; gpu_layers 999 means all):
  weights  size_bytes * n / (L + 1)
  K/V      ctx_size * kv_bytes_per_token_layer * min(gpu_layers, L)   (f16 cache, all slots)
  overhead overhead_mib (the CUDA context and compute buffers), when n > 0
It is an estimate: it errs on the side of room (the largest layer's K/V for every layer), and
overhead_mib and each GPU's reserve_mib are the knobs for what it does not model.
"""

from __future__ import annotations

import math
import re

MIB = 1024 * 1024


class PlacementError(ValueError):
    """Input placement cannot work with (the message names the value)."""


def need(shape, ctx_size, gpu_layers, overhead_mib):
    """VRAM one instance needs, in MiB: {weights_mib, kv_mib, overhead_mib, need_mib}."""
    layers = int(shape["layers"])
    offloaded = max(0, min(int(gpu_layers), layers + 1))
    weights = shape["size_bytes"] * offloaded / (layers + 1) if layers >= 0 else 0
    kv = int(ctx_size) * shape["kv_bytes_per_token_layer"] * min(offloaded, layers)
    result = {
        "weights_mib": math.ceil(weights / MIB),
        "kv_mib": math.ceil(kv / MIB),
        "overhead_mib": int(overhead_mib) if offloaded else 0,
    }
    result["need_mib"] = sum(result.values())
    return result


def pinned_devices(value, gpus):
    """The GPU indexes a CUDA_VISIBLE_DEVICES-style value names (indexes or GPU UUIDs)."""
    by_uuid = {str(g.get("uuid") or ""): g["index"] for g in gpus if g.get("uuid")}
    indexes = []
    for item in [part.strip() for part in str(value).split(",") if part.strip()]:
        if re.fullmatch(r"[0-9]+", item):
            indexes.append(int(item))
        elif item in by_uuid:
            indexes.append(by_uuid[item])
        else:
            raise PlacementError(f"names GPU {item!r}, which is neither an index nor the UUID of a GPU of this host")
    return indexes


def place(instances, gpus, reserve_mib, overhead_mib, env_name="CUDA_VISIBLE_DEVICES"):
    """Place instances ({name, shape, ctx_size, gpu_layers, environment}) on gpus ({index,
    memory_mib, name, uuid}). An instance whose environment already sets env_name is pinned
    there (its need split evenly over those GPUs); the others go, largest first, each to the
    GPU with the most room left, so replicas spread. An instance offloading nothing gets no GPU.

    Returns (placement, gpus_report, problems): placement maps each instance name to its
    need and devices (the value for env_name, '' for no GPU, None where it does not fit)."""
    free = {}
    for gpu in gpus:
        free[gpu["index"]] = int(gpu["memory_mib"]) - int(reserve_mib)
    placement, problems, pinned, unpinned = {}, [], [], []
    pinned_on = {index: [] for index in free}
    for instance in instances:
        entry = dict(need(instance["shape"], instance["ctx_size"], instance["gpu_layers"], overhead_mib),
                     model=instance.get("model", ""), devices=None)
        placement[instance["name"]] = entry
        own = (instance.get("environment") or {}).get(env_name)
        (pinned if own is not None else unpinned).append((instance, entry, own))

    for instance, entry, own in pinned:
        try:
            devices = pinned_devices(own, gpus)
        except PlacementError as exc:
            problems.append(f"instance {instance['name']}: {env_name}={own!r} {exc}")
            continue
        unknown = [d for d in devices if d not in free]
        if unknown:
            problems.append(f"instance {instance['name']}: {env_name}={own!r} names GPU {unknown[0]}, but this host's "
                            f"GPUs are {sorted(free) or 'none'}")
            continue
        for device in devices:
            free[device] -= math.ceil(entry["need_mib"] / len(devices))
            pinned_on[device].append(instance["name"])
        entry["devices"] = str(own)

    for instance, entry, _own in sorted(unpinned, key=lambda item: (-item[1]["need_mib"], item[0]["name"])):
        if entry["need_mib"] == 0:
            entry["devices"] = ""
            continue
        roomiest = sorted(free, key=lambda index: (-free[index], index))
        if roomiest and free[roomiest[0]] >= entry["need_mib"]:
            free[roomiest[0]] -= entry["need_mib"]
            entry["devices"] = str(roomiest[0])
        else:
            most = free[roomiest[0]] if roomiest else 0
            problems.append(f"instance {instance['name']} needs {entry['need_mib']} MiB (weights {entry['weights_mib']}, "
                            f"K/V {entry['kv_mib']}, overhead {entry['overhead_mib']}); the GPU with the most room "
                            f"left has {max(most, 0)} MiB")

    # Only pinned instances can overfill a GPU (the others go where they fit, or are named above).
    for index, room in free.items():
        if room < 0 and pinned_on[index]:
            problems.append(f"GPU {index} is short of {-room} MiB for the instances pinned to it "
                            f"({', '.join(pinned_on[index])})")

    report = [{"index": g["index"], "name": g.get("name", ""), "memory_mib": int(g["memory_mib"]),
               "reserve_mib": int(reserve_mib), "free_mib": free[g["index"]]} for g in gpus]
    return placement, report, problems


def table(placement, gpus, env_name="CUDA_VISIBLE_DEVICES"):
    """The placement as text lines: one row per instance, then one per GPU."""
    rows = [("instance", "model", "weights MiB", "K/V MiB", "overhead MiB", "needs MiB", env_name)]
    for name, entry in placement.items():
        devices = "DOES NOT FIT" if entry["devices"] is None else (entry["devices"] or "(no GPU)")
        rows.append((name, entry.get("model", ""), entry["weights_mib"], entry["kv_mib"], entry["overhead_mib"],
                     entry["need_mib"], devices))
    lines = _rows(rows)
    if gpus:
        lines.append("")
        lines.extend(_rows([("GPU", "name", "memory MiB", "reserve MiB", "free after placement MiB")]
                           + [(g["index"], g["name"], g["memory_mib"], g["reserve_mib"], g["free_mib"]) for g in gpus]))
    return lines


def _rows(rows):
    rows = [[str(cell) for cell in row] for row in rows]
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
