# Copyright (c) 2026, multimodel.orchestration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests of the container_problems filter (the container policy's setting checks)."""

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.multimodel.orchestration.plugins.filter.container import container_problems


def redis(**changes):
    """The Redis role's container settings (a published port on a second, non-internal network)."""
    settings = {
        'name': 'mmo-redis', 'image': 'redis:7.4.2-alpine', 'image_source': 'pull', 'image_archive': {},
        'image_build': {}, 'user': '999:1000', 'command': ['redis-server'], 'cpus': '0.5', 'cpu_shares': 1024,
        'memory': '256m', 'memory_reservation': '64m', 'tmpfs': ['/tmp:rw,noexec,nosuid,size=16m'],
        'capabilities': [], 'env': {'TZ': 'UTC'}, 'health_timeout': 60, 'log_max_size': '10m', 'log_max_file': 3,
        'stop_timeout': 10, 'stop_signal': '', 'etc_hosts': {'host.docker.internal': 'host-gateway'},
        'healthcheck': {'test': ['CMD-SHELL', 'redis-cli ping'], 'interval': '5s', 'timeout': '5s',
                        'start_period': '30s', 'retries': 3},
        'networks': [{'name': 'mmo-internal', 'internal': True, 'aliases': ['redis']},
                     {'name': 'mmo-host', 'internal': False}],
        'published_ports': ['127.0.0.1:6379:6379'], 'ports_variable': 'redis_host_port',
        'volumes': ['mmo-redis-data:/data', '/etc/multimodel/redis:/etc/redis:ro'],
        'config_files': ['/etc/multimodel/redis/redis.conf'],
    }
    settings.update(changes)
    return settings


def test_good_settings_have_no_problem():
    assert container_problems(redis()) == []
    assert container_problems(redis(image='redis@sha256:' + 'a' * 64, stop_signal='SIGQUIT', memory='1G')) == []


@pytest.mark.parametrize('changes, message', [
    ({'user': '0'}, "container mmo-redis: container_service_user is '0'; set it to the image's unprivileged"),
    ({'user': 'root:root'}, "container_service_user is 'root:root'"),
    ({'user': ''}, "container_service_user is ''"),
    ({'image': 'redis:latest'}, "container_service_image 'redis:latest' is not pinned"),
    ({'image': 'redis'}, "container_service_image 'redis' is not pinned"),
    ({'image_source': 'archive', 'image_archive': {'sha256': 'x'}},
     "the archive source needs container_service_image_archive with src"),
    ({'image_source': 'build', 'image_build': {'path': 'ctx'}}, "needs container_service_image_build.path"),
    ({'networks': [], 'published_ports': []}, 'container_service_networks is empty'),
    ({'networks': [{'name': 'a'}, {'name': 'a'}]}, "names a network more than once (got ['a', 'a'])"),
    ({'networks': [{'name': 'a', 'internal': True}]}, 'every network in container_service_networks is internal'),
    ({'memory': '1 GB'}, "container_service_memory is '1 GB'; set a size like 512m or 2g."),
    ({'memory_reservation': 'lots'}, "container_service_memory_reservation is 'lots'"),
    ({'memory': '64m', 'memory_reservation': '1g'},
     "container_service_memory_reservation ('1g') is larger than container_service_memory ('64m')"),
    ({'healthcheck': {'interval': '5s'}}, 'container_service_healthcheck needs test'),
    ({'volumes': ['data:relative']}, "container_service_volumes item 'data:relative' is not SOURCE:TARGET"),
    ({'name': '-redis'}, "container_service_name is '-redis'; Docker names start with a letter or digit"),
    ({'env': {'1BAD': 'x', 'GOOD': 'y'}}, "container_service_env has the names ['1BAD']"),
    ({'cpus': '0'}, 'container_service_cpus is 0; set the limit in cores'),
    ({'cpus': 'half'}, 'container_service_cpus is half'),
    ({'cpus': 'nan'}, 'container_service_cpus is nan'),
    ({'health_timeout': 'inf'}, 'container_service_health_timeout is inf'),
    ({'cpu_shares': 1}, 'container_service_cpu_shares is 1; set at least 2'),
    ({'tmpfs': ['tmp:rw']}, "container_service_tmpfs has ['tmp:rw']"),
    ({'capabilities': ['NET BIND']}, "container_service_capabilities has ['NET BIND']"),
    ({'healthcheck': {'test': ['CMD', 'true'], 'interval': '5 seconds'}},
     "container_service_healthcheck has {'interval': '5 seconds'}; set interval, timeout and start_period"),
    ({'health_timeout': 0}, 'container_service_health_timeout is 0'),
    ({'log_max_size': '10M'}, "container_service_log_max_size is '10M'"),
    ({'log_max_file': 0}, 'container_service_log_max_file is 0; keep at least 1 file.'),
    ({'stop_timeout': -1}, 'container_service_stop_timeout is -1'),
    ({'stop_signal': 'sigterm'}, "container_service_stop_signal is 'sigterm'"),
    ({'networks': [{'name': 'mmo-host', 'aliases': ['bad alias']}]},
     "container_service_networks has the names or aliases ['bad alias']"),
    ({'etc_hosts': {'db': 'not-an-address'}}, "container_service_etc_hosts has {'db': 'not-an-address'}"),
    ({'config_files': ['redis.conf']}, "container_service_config_files has ['redis.conf']"),
    ({'published_ports': ['6379']}, "redis_host_port gives the published ports ['6379'], not [ADDRESS:]HOST_PORT"),
])
def test_each_broken_rule_is_named(changes, message):
    problems = container_problems(redis(**changes))
    assert len(problems) == 1, problems
    assert message in problems[0]


def test_every_broken_rule_is_reported_at_once():
    problems = container_problems(redis(user='0', image='redis:latest', memory='huge', log_max_file=0))
    assert [problem.split(': ', 1)[1].split(' ', 1)[0] for problem in problems] == [
        'container_service_image', 'container_service_user', 'container_service_memory', 'container_service_log_max_file']


def test_the_image_scope_checks_the_image_alone():
    assert container_problems({'name': 'x', 'image': 'x:1'}, 'image') == []
    assert container_problems({'name': 'x', 'image': 'x:latest', 'user': '0'}, 'image') == [
        "container x: container_service_image 'x:latest' is not pinned; name a tag other than \"latest\" "
        "(for example redis:7.4.2-alpine) or a digest (NAME@sha256:...)."]


@pytest.mark.parametrize('settings, scope, message', [
    (['mmo-redis'], 'all', 'expects a dict of container settings'),
    ({}, 'images', "scope is 'images'"),
])
def test_bad_input_says_what_is_wrong(settings, scope, message):
    with pytest.raises(AnsibleFilterError, match=message):
        container_problems(settings, scope)
