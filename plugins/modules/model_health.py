#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) 2026, multimodel.orchestration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations


DOCUMENTATION = r"""
module: model_health

short_description: Wait for llama.cpp llama-server endpoints to be healthy and serve the expected model

version_added: 0.1.0

description:
  - Probes one or more llama.cpp C(llama-server) endpoints concurrently, so N endpoints take about as long as the slowest one.
  - Each endpoint passes when C(GET /health) answers 200 and C(GET /v1/models) lists the expected model O(endpoints[].alias).
  - Optionally runs a short generation (C(POST /v1/completions)) to measure latency and tokens per second, and reads C(GET /slots)
    to report how many slots are busy.
  - C(llama-server) answers 503 on every endpoint while it loads the model. That, refused connections, timeouts and 5xx answers
    (and 408, 429) are retried every O(interval) seconds until O(timeout) runs out. A wrong API key (401), a wrong model,
    redirects, other 4xx answers and TLS errors cannot fix themselves and are reported at once.
  - The module only reads; it never changes anything on the target, so RV(ignore:changed) is always V(false).
  - Requires nothing but the Python standard library on the target.

author:
  - multimodel.orchestration contributors (@multimodel)

extends_documentation_fragment:
  - multimodel.orchestration.read_only

options:
  endpoints:
    description:
      - The C(llama-server) instances to probe.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description:
          - Name of the instance, used in results and messages. Must be unique.
          - Defaults to O(endpoints[].url).
        type: str
      url:
        description:
          - Base URL of the server, for example V(http://127.0.0.1:8080).
          - Must use V(http) or V(https). A path prefix (a reverse proxy location) is allowed; query strings are not.
        type: str
        required: true
      alias:
        description:
          - Model alias the server must list in C(GET /v1/models), that is one of the values of C(llama-server --alias)
            (C(--alias a,b) serves both V(a) and V(b)).
          - When omitted any served model is accepted. Without C(--alias), C(llama-server) lists the model path.
        type: str
      api_key:
        description:
          - API key for this endpoint (C(llama-server --api-key)), overriding O(api_key).
        type: str
  api_key:
    description:
      - 'API key sent as C(Authorization: Bearer <key>) to every endpoint that has no O(endpoints[].api_key).'
      - C(llama-server) leaves C(/health) open with C(--api-key) but answers 401 on the other endpoints without the key.
    type: str
  timeout:
    description:
      - Total seconds to wait for all endpoints to become healthy. One deadline, O(timeout) seconds from the start of the
        task, holds for every endpoint; the endpoints are probed in parallel (up to 256 at once; one past those whose turn
        comes after the deadline is tried once).
      - The last request before the deadline may run up to half a second past it, so that it reports the server's real state.
      - Must be greater than 0.
    type: float
    default: 120
  interval:
    description:
      - Seconds to wait between two attempts on one endpoint.
    type: float
    default: 1
  request_timeout:
    description:
      - Seconds one HTTP request may take, including the generation when O(generate=true).
      - Requests are also cut short by O(timeout).
      - Must be greater than 0.
    type: float
    default: 30
  generate:
    description:
      - Also run a short generation of O(max_tokens) tokens and report RV(endpoints[].latency_ms) and
        RV(endpoints[].tokens_per_second).
      - The generation ignores the end-of-sequence token, so it always produces O(max_tokens) tokens on C(llama-server).
    type: bool
    default: false
  prompt:
    description:
      - Prompt of the test generation.
    type: str
    default: Hello
  max_tokens:
    description:
      - Number of tokens the test generation asks for. Must be at least 1.
    type: int
    default: 8
  check_slots:
    description:
      - Read C(GET /slots) and report RV(endpoints[].slots_total) and RV(endpoints[].slots_busy).
      - When the server has slot monitoring switched off (C(--no-slots)) the counts stay V(null) and the endpoint is still healthy.
    type: bool
    default: false
  fail_on_unhealthy:
    description:
      - Fail when at least one endpoint is unhealthy at the end of O(timeout).
      - With V(false) the module succeeds and reports the unhealthy endpoints in RV(unhealthy).
    type: bool
    default: true
  validate_certs:
    description:
      - Verify TLS certificates of V(https) endpoints.
    type: bool
    default: true
  use_proxy:
    description:
      - Use the proxy from the C(http_proxy)/C(https_proxy) environment variables (honouring C(no_proxy)), where it cannot
        be handed the API key.
      - A loopback endpoint (C(localhost), C(127.0.0.0/8), C(::1)) is always reached directly.
      - An V(http) endpoint that is sent an API key (O(api_key) or O(endpoints[].api_key)) is always reached directly, since
        a proxy reads every header of a plain http request and so would be handed the bearer key.
      - An V(https) endpoint may go through the proxy, as a C(CONNECT) tunnel with the key inside TLS, end to end.
      - Set to V(false) to always connect directly.
    type: bool
    default: true

notes:
  - The failure reasons in RV(endpoints[].reason) are V(refused) (nothing listens), V(timeout) (no answer in time),
    V(connection_error) (other network or TLS errors), V(unauthorized) (401, wrong or missing API key), V(wrong_model)
    (the alias is not served), V(loading) (still 503 at the deadline), V(http_<code>) (any other HTTP status) and
    V(bad_response) (not the JSON a llama-server sends).

seealso:
  - name: llama.cpp server documentation
    description: The HTTP API of C(llama-server).
    link: https://github.com/ggml-org/llama.cpp/blob/master/tools/server/README.md
"""

EXAMPLES = r"""
- name: Wait for the four instances to load their models
  multimodel.orchestration.model_health:
    endpoints:
      - name: Q3_SYNTH
        url: http://127.0.0.1:8082
        alias: q3
      - name: Q4_DEEP
        url: http://127.0.0.1:8083
        alias: q4
    api_key: "{{ llama_api_key }}"
    timeout: 300

- name: Measure generation speed and slot usage without failing the play
  multimodel.orchestration.model_health:
    endpoints:
      - name: Q3_SYNTH
        url: http://127.0.0.1:8082
      - name: Q4_DEEP
        url: https://llm.example.com/q4
        api_key: "{{ q4_api_key }}"
    generate: true
    max_tokens: 16
    check_slots: true
    fail_on_unhealthy: false
  register: llama_health

- name: Show the speed and load of each healthy instance
  ansible.builtin.debug:
    msg: "{{ item.name }}: {{ item.tokens_per_second }} tokens/s, {{ item.slots_busy }}/{{ item.slots_total }} slots busy"
  loop: "{{ llama_health.endpoints }}"
  when: item.healthy
"""

RETURN = r"""
msg:
  description: Summary, naming every unhealthy endpoint and why.
  returned: always
  type: str
  sample: "1 of 2 llama-server endpoints unhealthy: Q4_DEEP (http://127.0.0.1:8083): wrong_model (expected 'q4', served ['other'])"
healthy:
  description: Names of the healthy endpoints, in input order.
  returned: always
  type: list
  elements: str
  sample: [Q3_SYNTH]
unhealthy:
  description: Names of the unhealthy endpoints, in input order.
  returned: always
  type: list
  elements: str
  sample: [Q4_DEEP]
endpoints:
  description: One result per endpoint, in input order.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Name of the endpoint.
      type: str
      returned: always
      sample: Q3_SYNTH
    url:
      description: Base URL that was probed, without a trailing slash.
      type: str
      returned: always
      sample: http://127.0.0.1:8082
    alias:
      description: The expected model alias, V(null) when none was given.
      type: str
      returned: always
      sample: q3
    healthy:
      description: Whether the endpoint passed every check.
      type: bool
      returned: always
      sample: true
    status:
      description:
        - V(ok) when healthy, V(loading) when still loading at the deadline, V(unreachable) when nothing answered
          (refused, timeout, connection error), V(error) otherwise.
      type: str
      returned: always
      sample: ok
    reason:
      description: Short failure reason (see the notes), V(null) when healthy.
      type: str
      returned: always
      sample: wrong_model
    detail:
      description: Human readable detail of the failure, or a remark on a healthy endpoint; V(null) when there is none.
      type: str
      returned: always
      sample: "expected 'q4', served ['other']"
    models:
      description: Model ids listed by C(GET /v1/models), V(null) when it was not reached.
      type: list
      elements: str
      returned: always
      sample: [q3]
    latency_ms:
      description: Wall-clock time of the test generation in milliseconds; V(null) without O(generate).
      type: float
      returned: always
      sample: 21.4
    tokens_per_second:
      description:
        - Generation speed reported by the server (C(timings.predicted_per_second)), or tokens divided by latency when the
          server reports no timings; V(null) without O(generate).
      type: float
      returned: always
      sample: 812.5
    tokens_generated:
      description: Number of tokens the test generation produced; V(null) without O(generate).
      type: int
      returned: always
      sample: 8
    slots_total:
      description: Number of slots (parallel sequences) of the server; V(null) without O(check_slots).
      type: int
      returned: always
      sample: 4
    slots_busy:
      description: Number of slots processing a request at the time of the probe; V(null) without O(check_slots).
      type: int
      returned: always
      sample: 1
    elapsed_s:
      description: Seconds spent on this endpoint, retries included.
      type: float
      returned: always
      sample: 3.207
    attempts:
      description: Number of probe attempts made.
      type: int
      returned: always
      sample: 4
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.multimodel.orchestration.plugins.module_utils.llama_server import (
    ProbeOptions,
    failure_summary,
    normalize_endpoints,
    probe_endpoints,
)


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            endpoints=dict(
                type='list',
                elements='dict',
                required=True,
                options=dict(
                    name=dict(type='str'),
                    url=dict(type='str', required=True),
                    alias=dict(type='str'),
                    api_key=dict(type='str', no_log=True),
                ),
            ),
            api_key=dict(type='str', no_log=True),
            timeout=dict(type='float', default=120),
            interval=dict(type='float', default=1),
            request_timeout=dict(type='float', default=30),
            generate=dict(type='bool', default=False),
            prompt=dict(type='str', default='Hello'),
            # Not a secret: a number of tokens (silences the no-log-needed sanity check).
            max_tokens=dict(type='int', default=8, no_log=False),
            check_slots=dict(type='bool', default=False),
            fail_on_unhealthy=dict(type='bool', default=True),
            validate_certs=dict(type='bool', default=True),
            use_proxy=dict(type='bool', default=True),
        ),
        # Probing only reads, so check mode does exactly the same work.
        supports_check_mode=True,
    )
    params = module.params

    for option in ('timeout', 'request_timeout'):
        if params[option] <= 0:
            module.fail_json(msg='%s must be greater than 0, got %s' % (option, params[option]))
    if params['interval'] < 0:
        module.fail_json(msg='interval must not be negative, got %s' % params['interval'])
    if params['max_tokens'] < 1:
        module.fail_json(msg='max_tokens must be at least 1, got %s' % params['max_tokens'])
    try:
        endpoints = normalize_endpoints(params['endpoints'])
    except ValueError as exc:
        module.fail_json(msg=str(exc))

    options = ProbeOptions(
        api_key=params['api_key'],
        request_timeout=params['request_timeout'],
        interval=params['interval'],
        generate=params['generate'],
        prompt=params['prompt'],
        max_tokens=params['max_tokens'],
        check_slots=params['check_slots'],
        validate_certs=params['validate_certs'],
        use_proxy=params['use_proxy'],
    )
    results = probe_endpoints(endpoints, options, params['timeout'])

    healthy = [r['name'] for r in results if r['healthy']]
    unhealthy = [r for r in results if not r['healthy']]
    if unhealthy:
        msg = '%d of %d llama-server endpoints unhealthy: %s' % (
            len(unhealthy), len(results), '; '.join(failure_summary(r) for r in unhealthy))
    else:
        msg = 'all %d llama-server endpoints healthy' % len(results)
    outcome = dict(
        changed=False,
        msg=msg,
        endpoints=results,
        healthy=healthy,
        unhealthy=[r['name'] for r in unhealthy],
    )
    if unhealthy and params['fail_on_unhealthy']:
        module.fail_json(**outcome)
    module.exit_json(**outcome)


if __name__ == '__main__':
    main()
