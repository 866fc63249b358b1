# Copyright (c) 2026, multimodel.orchestration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests of the systemd quoting filters."""

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.multimodel.orchestration.plugins.filter import systemd


def test_plain_argument_is_double_quoted():
    assert systemd.systemd_quote('--alias') == '"--alias"'


@pytest.mark.parametrize('value, quoted', [
    ('q2 fast', '"q2 fast"'),
    ('{"enable_thinking": false}', '"{\\"enable_thinking\\": false}"'),
    ('C:\\models', '"C:\\\\models"'),
    ('50%', '"50%%"'),
    ('%i', '"%%i"'),
    ('$HOME', '"$$HOME"'),
    ('${HOME}', '"$${HOME}"'),
    ("it's", '"it\'s"'),
    (';', '";"'),
    ('', '""'),
    ('caf\u00e9', '"caf\u00e9"'),
])
def test_special_characters_stay_literal(value, quoted):
    assert systemd.systemd_quote(value) == quoted


def test_numbers_are_written_as_strings():
    assert systemd.systemd_quote(8080) == '"8080"'
    assert systemd.systemd_quote(1.5) == '"1.5"'


@pytest.mark.parametrize('value, char', [
    ('two\nlines', '\\n'),
    ('a\ttab', '\\t'),
    ('nul\x00', '\\x00'),
    ('bell\x07', '\\x07'),
    ('del\x7f', '\\x7f'),
    ('cr\r', '\\r'),
])
def test_control_characters_are_refused_by_name(value, char):
    with pytest.raises(AnsibleFilterError) as error:
        systemd.systemd_quote(value)
    assert repr(value) in str(error.value)
    assert char in str(error.value)
    assert 'control character' in str(error.value)


@pytest.mark.parametrize('value', [True, None, ['a'], {'a': 1}, b'bytes'])
def test_values_that_are_not_one_argument_are_refused(value):
    with pytest.raises(AnsibleFilterError, match='must be a string or a number'):
        systemd.systemd_quote(value)


def test_exec_args_quotes_each_argument_and_keeps_their_order():
    args = ['/usr/bin/llama-server', '--alias', 'q2 fast', '--port', 8080,
            '--chat-template-kwargs', '{"enable_thinking": false}']
    assert systemd.systemd_exec_args(args) == (
        '"/usr/bin/llama-server" "--alias" "q2 fast" "--port" "8080" '
        '"--chat-template-kwargs" "{\\"enable_thinking\\": false}"')


@pytest.mark.parametrize('args', ['--alias q2', {'a': 1}, None, 3])
def test_exec_args_needs_a_list(args):
    with pytest.raises(AnsibleFilterError, match='expected a list of arguments'):
        systemd.systemd_exec_args(args)


def test_exec_args_needs_the_program():
    with pytest.raises(AnsibleFilterError, match='needs at least the program'):
        systemd.systemd_exec_args([])


def test_exec_args_names_the_argument_it_cannot_pass():
    with pytest.raises(AnsibleFilterError, match="'bad\\\\nvalue'"):
        systemd.systemd_exec_args(['/usr/bin/llama-server', 'bad\nvalue'])


def unquote(word):
    """How systemd reads one double-quoted word back (its escapes, %% and $$), for the round trip."""
    assert word[0] == word[-1] == '"'
    out, i, body = [], 0, word[1:-1]
    while i < len(body):
        pair = body[i:i + 2]
        if pair in ('\\\\', '\\"', '%%', '$$'):
            out.append(pair[1])
            i += 2
        else:
            assert body[i] not in '"\\%$', (word, i)
            out.append(body[i])
            i += 1
    return ''.join(out)


@pytest.mark.parametrize('value', ['{"a": "b c"}', '\\"%$', '%%$$\\\\', 'plain', ' lead and trail '])
def test_round_trip(value):
    assert unquote(systemd.systemd_quote(value)) == value


def test_filters_are_registered():
    names = {'systemd_exec_args', 'systemd_quote', 'systemd_show', 'systemd_unquotable'}
    assert set(systemd.FilterModule().filters()) == names


SHOW = """Id=llama-server@Q2_FAST_1.service
ActiveState=active
UnitFileState=enabled
NeedDaemonReload=no

Id=llama-server@Q4_DEEP.service
ActiveState=failed
UnitFileState=disabled
NeedDaemonReload=yes
Description=a=b
"""


def test_show_reads_one_mapping_per_unit():
    assert systemd.systemd_show(SHOW) == {
        'llama-server@Q2_FAST_1.service': {'Id': 'llama-server@Q2_FAST_1.service', 'ActiveState': 'active',
                                           'UnitFileState': 'enabled', 'NeedDaemonReload': 'no'},
        'llama-server@Q4_DEEP.service': {'Id': 'llama-server@Q4_DEEP.service', 'ActiveState': 'failed',
                                         'UnitFileState': 'disabled', 'NeedDaemonReload': 'yes',
                                         'Description': 'a=b'},
    }


def test_show_of_nothing_is_empty():
    assert systemd.systemd_show('') == {}
    assert systemd.systemd_show('\n\n') == {}


def test_show_needs_the_id_of_each_unit():
    with pytest.raises(AnsibleFilterError, match='no Id='):
        systemd.systemd_show('ActiveState=active\n')


def test_show_needs_text():
    with pytest.raises(AnsibleFilterError, match='expected the text'):
        systemd.systemd_show(['Id=x'])


def test_unquotable_lists_what_cannot_be_passed():
    args = ['--chat-template-kwargs', '{"enable_thinking": false}', 'two\nlines', 4, True, None, ['x'], 'tab\t']
    assert systemd.systemd_unquotable(args) == ['two\nlines', True, None, ['x'], 'tab\t']


def test_unquotable_of_passable_arguments_is_empty():
    assert systemd.systemd_unquotable([]) == []
    assert systemd.systemd_unquotable(['--jinja', 'a b', '50%', '$X', 1.5]) == []


@pytest.mark.parametrize('args', ['--jinja --verbose', {'a': 1}, None, 7])
def test_unquotable_refuses_a_value_that_is_not_a_list_whole(args):
    assert systemd.systemd_unquotable(args) == [args]
