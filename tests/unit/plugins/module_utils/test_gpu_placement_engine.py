# Copyright (c) 2026, multimodel.orchestration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""module_utils/gpu_placement.py: the VRAM estimate and the packing, on faked GPUs."""

import pytest

from ansible_collections.multimodel.orchestration.plugins.module_utils.gpu_placement import need, place, table

# Qwen2.5-7B at Q4_K_M (4.36 GiB, 28 layers, 2048 bytes of K/V per token and layer) and a
# 32B at Q4_K_M (18.5 GiB, 64 layers, 8 K/V heads of 128: 4096 bytes).
SEVEN_B = {'size_bytes': 4_683_073_536, 'layers': 28, 'kv_bytes_per_token_layer': 2048}
THIRTY_TWO_B = {'size_bytes': 19_851_336_256, 'layers': 64, 'kv_bytes_per_token_layer': 4096}


def instance(name, shape=None, ctx_size=16384, gpu_layers=999, **environment):
    return {'name': name, 'model': 'm', 'shape': shape or SEVEN_B, 'ctx_size': ctx_size,
            'gpu_layers': gpu_layers, 'environment': environment}


def test_the_estimate_of_a_whole_offload():
    # All 29 layers: the whole file, 896 MiB of K/V (what llama.cpp reports for this model
    # and context), and the overhead.
    assert need(SEVEN_B, 16384, 999, 512) == {'weights_mib': 4467, 'kv_mib': 896, 'overhead_mib': 512,
                                              'need_mib': 4467 + 896 + 512}


def test_a_partial_offload_counts_only_the_offloaded_layers():
    half = need(SEVEN_B, 16384, 14, 512)
    assert half['weights_mib'] == 2157  # 14 of 29 layers' share of the file, rounded up
    assert half['kv_mib'] == 448 and half['overhead_mib'] == 512
    assert need(SEVEN_B, 16384, 0, 512) == {'weights_mib': 0, 'kv_mib': 0, 'overhead_mib': 0, 'need_mib': 0}


def test_replicas_spread_over_the_gpus_largest_first():
    gpus = [{'index': 0, 'name': 'L4', 'memory_mib': 23034}, {'index': 1, 'name': 'L4', 'memory_mib': 23034}]
    instances = [instance('Q2_FAST_1'), instance('Q2_FAST_2'), instance('Q4_DEEP', THIRTY_TWO_B, ctx_size=8192)]
    placement, report, problems = place(instances, gpus, reserve_mib=256, overhead_mib=512)
    assert problems == []
    # The 32B goes first, on GPU 0; the two 7B replicas then both fit only on GPU 1.
    assert placement['Q4_DEEP']['devices'] == '0'
    assert placement['Q2_FAST_1']['devices'] == placement['Q2_FAST_2']['devices'] == '1'
    assert [g['free_mib'] for g in report] == [23034 - 256 - placement['Q4_DEEP']['need_mib'],
                                               23034 - 256 - 2 * placement['Q2_FAST_1']['need_mib']]
    # With room on both, replicas of one size alternate.
    big = [{'index': 0, 'memory_mib': 81559}, {'index': 1, 'memory_mib': 81559}]
    placement, _report, _problems = place([instance('A'), instance('B'), instance('C'), instance('D')], big, 256, 512)
    assert [placement[n]['devices'] for n in 'ABCD'] == ['0', '1', '0', '1']


def test_an_instance_that_fits_nowhere_is_named_with_its_need():
    gpus = [{'index': 0, 'memory_mib': 8192}]
    placement, _report, problems = place([instance('Q4_DEEP', THIRTY_TWO_B, ctx_size=8192), instance('Q2')], gpus,
                                         256, 512)
    assert placement['Q4_DEEP']['devices'] is None and placement['Q2']['devices'] == '0'
    assert problems == [f"instance Q4_DEEP needs {placement['Q4_DEEP']['need_mib']} MiB (weights 18932, K/V 2048, "
                        f"overhead 512); the GPU with the most room left has 7936 MiB"]
    assert 'DOES NOT FIT' in '\n'.join(table(placement, _report))


def test_no_gpus_and_no_offload():
    placement, report, problems = place([instance('CPU', gpu_layers=0)], [], 256, 512)
    assert placement['CPU']['devices'] == '' and report == [] and problems == []
    _placement, _report, problems = place([instance('GPU')], [], 256, 512)
    assert problems == [f"instance GPU needs {4467 + 896 + 512} MiB (weights 4467, K/V 896, overhead 512); the GPU "
                        "with the most room left has 0 MiB"]


def test_a_pinned_instance_stays_and_its_need_counts():
    gpus = [{'index': 0, 'memory_mib': 24576, 'uuid': 'GPU-aaaa'}, {'index': 1, 'memory_mib': 24576}]
    placement, report, problems = place(
        [instance('PINNED', CUDA_VISIBLE_DEVICES='GPU-aaaa'), instance('SPLIT', THIRTY_TWO_B, 8192, CUDA_VISIBLE_DEVICES='0,1'),
         instance('FREE')], gpus, 256, 512)
    assert problems == []
    assert placement['PINNED']['devices'] == 'GPU-aaaa' and placement['SPLIT']['devices'] == '0,1'
    split = -(-placement['SPLIT']['need_mib'] // 2)
    assert report[0]['free_mib'] == 24576 - 256 - placement['PINNED']['need_mib'] - split
    assert placement['FREE']['devices'] == '1'  # the roomier one after the pinned


@pytest.mark.parametrize('pin, message', [
    ('7', "instance P: CUDA_VISIBLE_DEVICES='7' names GPU 7, but this host's GPUs are [0]"),
    ('GPU-zzzz', "instance P: CUDA_VISIBLE_DEVICES='GPU-zzzz' names GPU 'GPU-zzzz', which is neither an index nor the "
                 "UUID of a GPU of this host"),
])
def test_a_pin_to_a_gpu_the_host_does_not_have(pin, message):
    _placement, _report, problems = place([instance('P', CUDA_VISIBLE_DEVICES=pin)], [{'index': 0, 'memory_mib': 8192}],
                                          256, 512)
    assert problems == [message]


def test_pinned_instances_that_overfill_their_gpu():
    _placement, report, problems = place([instance('A', CUDA_VISIBLE_DEVICES='0'), instance('B', CUDA_VISIBLE_DEVICES='0')],
                                         [{'index': 0, 'memory_mib': 8192}], 256, 512)
    assert report[0]['free_mib'] == 8192 - 256 - 2 * (4467 + 896 + 512)
    assert problems == [f"GPU 0 is short of {-report[0]['free_mib']} MiB for the instances pinned to it (A, B)"]


def test_other_backends_pin_with_their_own_variable():
    placement, _report, problems = place([instance('V', HIP_VISIBLE_DEVICES='1')],
                                         [{'index': 0, 'memory_mib': 65536}, {'index': 1, 'memory_mib': 65536}],
                                         256, 512, env_name='HIP_VISIBLE_DEVICES')
    assert problems == [] and placement['V']['devices'] == '1'


def test_the_table():
    placement, report, _problems = place([instance('Q2_FAST_1'), instance('CPU', gpu_layers=0)],
                                         [{'index': 0, 'name': 'L4', 'memory_mib': 23034}], 256, 512)
    assert table(placement, report) == [
        'instance   model  weights MiB  K/V MiB  overhead MiB  needs MiB  CUDA_VISIBLE_DEVICES',
        'Q2_FAST_1  m      4467         896      512           5875       0',
        'CPU        m      0            0        0             0          (no GPU)',
        '',
        'GPU  name  memory MiB  reserve MiB  free after placement MiB',
        '0    L4    23034       256          16903',
    ]


def test_a_reserve_larger_than_the_gpu_leaves_no_room():
    placement, report, problems = place([instance('A')], [{'index': 0, 'memory_mib': 4096}], 8192, 512)
    assert placement['A']['devices'] is None and report[0]['free_mib'] == 4096 - 8192
    assert problems == [f"instance A needs {4467 + 896 + 512} MiB (weights 4467, K/V 896, overhead 512); the GPU with "
                        "the most room left has 0 MiB"]
