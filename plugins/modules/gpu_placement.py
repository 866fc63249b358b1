#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) 2026, multimodel.orchestration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations


DOCUMENTATION = r"""
module: gpu_placement

short_description: Place llama-server instances on a host's GPUs by their estimated VRAM need, or say why they do not fit

version_added: 0.2.0

description:
  - Estimates the VRAM each C(llama-server) instance needs from its model's shape (read from the GGUF header), its context
    size and how many layers it offloads, then assigns each instance to one of the host's GPUs, the one with the most room
    left, largest instance first. The result is the value of O(env_name) (C(CUDA_VISIBLE_DEVICES)) for each instance.
  - 'The estimate: weights C(size * n / (layers + 1)) for C(n = min(gpu_layers, layers + 1)) offloaded layers, plus the f16
    K/V cache C(ctx_size * bytes per token and layer * offloaded layers), plus O(overhead_mib) per instance that offloads
    anything. It errs on the side of room.'
  - An instance whose C(environment) already sets O(env_name) is pinned to those GPUs (its need is split
    evenly over them). An instance that offloads nothing (C(gpu_layers=0)) gets an empty value, so it sees no GPU.
  - Fails, before anything changes, when an instance fits on no GPU, or the instances pinned to a GPU need more than it
    has, with a table of what needs how much.
  - The module only reads (the models' headers, C(nvidia-smi)); it never changes anything on the target.
  - A model's header is read from a file on the target, or streamed from an C(http(s)) URL and cut off once the header
    is read (a few MiB, whatever the model's size), or given as C(shape) in O(models) (the
    P(multimodel.orchestration.gguf_shape#lookup) lookup reads a model on the controller).

author:
  - multimodel.orchestration contributors (@multimodel)

extends_documentation_fragment:
  - multimodel.orchestration.read_only

options:
  instances:
    description:
      - 'The instances to place, each a dict with C(name) (unique), C(model) (a key of O(models)), C(ctx_size) (tokens,
        shared by its slots), C(gpu_layers) (layers offloaded; 999 or anything over the model''s layer count means all) and
        optionally C(environment) (a O(env_name) set there pins the instance).'
      - Other keys are ignored, so the llama_cpp_servers role's resolved instances can be passed as they are.
    type: list
    elements: dict
    required: true
  models:
    description:
      - Where to read each model's GGUF header, by model key. Each value has one of C(path), C(url) or C(shape).
      - 'Each value is a dict: C(path) (a file on the target), C(url) (C(file://), C(http://) or C(https://)), or C(shape)
        (C(size_bytes), C(layers), C(kv_bytes_per_token_layer), as the P(multimodel.orchestration.gguf_shape#lookup) lookup
        returns).'
    type: dict
    required: true
  gpus:
    description:
      - The target's GPUs, each C(index) (as CUDA numbers it), C(memory_mib) (total memory) and optionally C(name) and C(uuid).
      - When omitted, they are read from C(nvidia-smi --query-gpu=index,uuid,name,memory.total).
    type: list
    elements: dict
  overhead_mib:
    description: MiB each instance that offloads anything needs beyond weights and K/V cache (CUDA context, compute buffers).
    type: int
    default: 512
  reserve_mib:
    description: MiB left free on every GPU (the driver, the display, other processes).
    type: int
    default: 256
  env_name:
    description:
      - The variable that selects the GPUs an instance sees.
      - C(CUDA_VISIBLE_DEVICES) for CUDA, C(HIP_VISIBLE_DEVICES) for ROCm, C(GGML_VK_VISIBLE_DEVICES) for Vulkan.
    type: str
    default: CUDA_VISIBLE_DEVICES
  timeout:
    description: Seconds to wait for an C(http(s)) model server while reading a header.
    type: float
    default: 60
  validate_certs:
    description: Verify the TLS certificate of C(https) model URLs.
    type: bool
    default: true
"""

EXAMPLES = r"""
- name: Place the model tier on this host's GPUs (fails with a table when it does not fit)
  multimodel.orchestration.gpu_placement:
    instances:
      - {name: Q2_FAST_1, model: q2, ctx_size: 16384, gpu_layers: 999}
      - {name: Q4_DEEP, model: q4, ctx_size: 32768, gpu_layers: 999}
    models:
      q2: {url: "https://models.internal/qwen2.5-7b-q2_k.gguf"}
      q4: {shape: "{{ lookup('multimodel.orchestration.gguf_shape', '/srv/models/qwen2.5-32b-q4_k_m.gguf') }}"}
  register: placement

- name: Faked GPUs (tests, or a host whose driver is not installed yet)
  multimodel.orchestration.gpu_placement:
    instances: "{{ my_instances }}"
    models: {q2: {path: /var/lib/llama-server/models/q2.gguf}}
    gpus:
      - {index: 0, name: L40S, memory_mib: 46068}
      - {index: 1, name: L40S, memory_mib: 46068}
"""

RETURN = r"""
placement:
  description: Each instance's estimate and the value of O(env_name) it gets (V('') for no GPU).
  returned: always
  type: dict
  sample:
    Q2_FAST_1: {model: q2, weights_mib: 2890, kv_mib: 896, overhead_mib: 512, need_mib: 4298, devices: "1"}
gpus:
  description: The GPUs and the MiB left free on each after placement.
  returned: always
  type: list
  elements: dict
  sample: [{index: 0, name: L40S, memory_mib: 46068, reserve_mib: 256, free_mib: 21000}]
models:
  description: Each model's shape as read from its header.
  returned: always
  type: dict
  sample: {q2: {architecture: qwen2, size_bytes: 3015938400, layers: 28, kv_bytes_per_token_layer: 2048, context_length: 32768}}
table:
  description: The placement as readable lines (one row per instance, then one per GPU).
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.urls import open_url

from ansible_collections.multimodel.orchestration.plugins.module_utils.gguf import GGUFError, shape, shape_of_file
from ansible_collections.multimodel.orchestration.plugins.module_utils.gpu_placement import place, table

SHAPE_KEYS = ("size_bytes", "layers", "kv_bytes_per_token_layer")


def read_shape(module, key, source):
    what = f"model {key!r}"
    given = [name for name in ("path", "url", "shape") if source.get(name)]
    if len(given) != 1:
        module.fail_json(msg=f"models[{key!r}] needs exactly one of path, url or shape; got {sorted(source) or 'none'}")
    if given == ["shape"]:
        missing = [name for name in SHAPE_KEYS if not isinstance(source["shape"].get(name), int)]
        if missing:
            module.fail_json(msg=f"models[{key!r}].shape needs the whole numbers {', '.join(SHAPE_KEYS)}; "
                                 f"{', '.join(missing)} missing or not a number in {source['shape']!r}")
        return dict(source["shape"])
    location = source.get("path") or source["url"]
    if location.startswith("file://") or "://" not in location:
        path = location[len("file://"):] if location.startswith("file://") else location
        try:
            return shape_of_file(path, f"{what} ({path})")
        except OSError as exc:
            module.fail_json(msg=f"{what}: cannot read {path} for its GGUF header: {exc.strerror or exc}")
    if not location.startswith(("http://", "https://")):
        module.fail_json(msg=f"{what}: url must be file://, http:// or https://; got {location!r}")
    try:
        response = open_url(location, timeout=module.params["timeout"], validate_certs=module.params["validate_certs"],
                            http_agent="multimodel.orchestration gpu_placement")
    except Exception as exc:  # pylint: disable=broad-exception-caught
        module.fail_json(msg=f"{what}: cannot read the GGUF header from {location}: {exc}")
    try:
        length = response.headers.get("Content-Length")
        if not (length or "").isdigit():
            module.fail_json(msg=f"{what}: {location} sends no Content-Length, so the model's size is unknown; give "
                                 "the model as shape (the gguf_shape lookup) or a path instead")
        # Only the header is read; closing the response drops the rest of the download.
        return shape(response, int(length), f"{what} ({location})")
    finally:
        response.close()


def discover_gpus(module):
    nvidia_smi = module.get_bin_path("nvidia-smi")
    if not nvidia_smi:
        module.fail_json(msg="no GPUs given and nvidia-smi is not on this host: install the NVIDIA driver, "
                             "or list the GPUs in gpus (llama_cpp_servers_gpus)")
    rc, out, err = module.run_command([nvidia_smi, "--query-gpu=index,uuid,name,memory.total",
                                       "--format=csv,noheader,nounits"])
    if rc != 0:
        module.fail_json(msg=f"nvidia-smi failed (exit {rc}): {(err or out).strip()}")
    gpus = []
    for line in out.splitlines():
        fields = [field.strip() for field in line.split(",")]
        if len(fields) == 4 and fields[0].isdigit() and fields[3].isdigit():
            gpus.append({"index": int(fields[0]), "uuid": fields[1], "name": fields[2], "memory_mib": int(fields[3])})
    return gpus


def check_instances(module, instances, models):
    """The instances' name, model, ctx_size, gpu_layers and environment (numbers may come as strings)."""
    checked = []
    for position, instance in enumerate(instances):
        name, model = str(instance.get("name") or ""), str(instance.get("model") or "")
        ctx_size, gpu_layers = str(instance.get("ctx_size", "")).strip(), str(instance.get("gpu_layers", "")).strip()
        if not name:
            module.fail_json(msg=f"instances[{position}] has no name; got {instance!r}")
        if not ctx_size.isdigit() or int(ctx_size) < 1 or not gpu_layers.isdigit():
            module.fail_json(msg=f"instance {name!r}: ctx_size must be at least 1 and gpu_layers at least 0; got "
                                 f"{instance.get('ctx_size')!r} and {instance.get('gpu_layers')!r}")
        if model not in models:
            module.fail_json(msg=f"instance {name!r}: its model {model!r} is not in models ({', '.join(sorted(models)) or 'none'})")
        if any(other["name"] == name for other in checked):
            module.fail_json(msg=f"instances: name {name!r} is used more than once")
        environment = instance.get("environment") or {}
        if not isinstance(environment, dict):
            module.fail_json(msg=f"instance {name!r}: environment must be a dict; got {environment!r}")
        checked.append({"name": name, "model": model, "ctx_size": int(ctx_size), "gpu_layers": int(gpu_layers),
                        "environment": environment})
    return checked


def check_gpus(module, gpus):
    """The GPUs with whole-number index and memory_mib (an inventory may write them as strings)."""
    checked, seen = [], set()
    for position, gpu in enumerate(gpus):
        index, memory = str(gpu.get("index", "")).strip(), str(gpu.get("memory_mib", "")).strip()
        if not index.isdigit() or not memory.isdigit() or int(memory) == 0:
            module.fail_json(msg=f"gpus[{position}] needs index (a whole number, 0 or more) and memory_mib (MiB, more "
                                 f"than 0); got {gpu!r}")
        if int(index) in seen:
            module.fail_json(msg=f"gpus: index {index} is listed twice")
        seen.add(int(index))
        checked.append(dict(gpu, index=int(index), memory_mib=int(memory), name=str(gpu.get("name") or "")))
    return checked


def main():
    module = AnsibleModule(
        argument_spec=dict(
            instances=dict(type="list", elements="dict", required=True),
            models=dict(type="dict", required=True),
            gpus=dict(type="list", elements="dict"),
            overhead_mib=dict(type="int", default=512),
            reserve_mib=dict(type="int", default=256),
            env_name=dict(type="str", default="CUDA_VISIBLE_DEVICES"),
            timeout=dict(type="float", default=60),
            validate_certs=dict(type="bool", default=True),
        ),
        supports_check_mode=True,
    )
    params = module.params
    instances = check_instances(module, params["instances"], params["models"])
    for name in ("overhead_mib", "reserve_mib"):
        if params[name] < 0:
            module.fail_json(msg=f"{name} must be 0 or more; got {params[name]}")

    gpus = check_gpus(module, params["gpus"] if params["gpus"] is not None else discover_gpus(module))
    used = sorted({i["model"] for i in instances})
    shapes = {}
    for key in used:
        source = params["models"][key]
        if not isinstance(source, dict):
            module.fail_json(msg=f"models[{key!r}] must be a dict with path, url or shape; got {source!r}")
        try:
            shapes[key] = read_shape(module, key, source)
        except GGUFError as exc:
            module.fail_json(msg=f"cannot place the instances: {exc}")

    placement, report, problems = place(
        [dict(i, shape=shapes[i["model"]]) for i in instances], gpus,
        params["reserve_mib"], params["overhead_mib"], params["env_name"])
    lines = table(placement, report, params["env_name"])
    result = dict(changed=False, placement=placement, gpus=report, models=shapes, table=lines)
    if problems:
        module.fail_json(msg="The instances do not fit on this host's GPUs: " + "; ".join(problems)
                         + ". Lower gpu_layers or ctx_size, use a smaller model, or move instances to another host."
                         + "\n" + "\n".join(lines), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
