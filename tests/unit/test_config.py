"""Unit tests for monitor.config (no root, no kernel needed)."""

import dataclasses
import ipaddress
import os
import textwrap

import pytest

from monitor import config
from monitor.config import KERNEL_KEYS, Config, ConfigError, Group, load, parse

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLE = os.path.join(REPO_ROOT, "config.example.yaml")
SRC = "config.yaml"


def error_of(text, source=SRC):
    with pytest.raises(ConfigError) as info:
        parse(textwrap.dedent(text), source)
    message = str(info.value)
    assert "\n" not in message and "\r" not in message, message
    assert message.startswith(source + ": "), message
    return message


# ---------------------------------------------------------------------------
# defaults and the example file


@pytest.mark.parametrize("text", ["", "   \n", "# only a comment\n", "{}", "---\n", "null"])
def test_empty_text_gives_defaults(text):
    assert parse(text) == Config()


def test_default_values():
    cfg = Config()
    assert cfg.pid_label is False
    assert cfg.unit_label is False
    assert cfg.pod_labels is False and cfg.pod_host_root == "/"
    assert cfg.groups == ()
    assert cfg.ipv4_prefix == 32
    assert cfg.ipv6_prefix == 128
    assert cfg.budget == 2000
    assert cfg.ttl == 3600.0
    assert cfg.count == frozenset()
    assert cfg.map_size == 16384
    assert cfg.max_sockets == 0  # auto
    assert cfg.drain_interval == 0.5


def test_config_is_frozen_and_hashable():
    cfg = parse("remote: {groups: [{name: lan, cidrs: [10.0.0.0/8]}]}")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.budget = 1  # type: ignore[misc]
    assert hash(cfg) == hash(parse("remote: {groups: [{name: lan, cidrs: [10.0.0.0/8]}]}"))


def test_empty_sections_give_defaults():
    assert parse("labels:\nremote:\nseries:\nkernel:\n") == Config()
    assert parse("remote: {groups: null}\nkernel: {count: null}") == Config()


def test_kernel_keys():
    assert KERNEL_KEYS == ("map_size", "max_sockets", "syscall_tracepoints", "function_hooks")
    names = {f.name for f in dataclasses.fields(Config)}
    assert set(KERNEL_KEYS) <= names


def test_example_file_parses_to_defaults_plus_loopback():
    cfg = load(EXAMPLE)
    loopback = Group(
        name="loopback",
        networks=(ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")),
    )
    assert cfg.groups == (loopback,)
    assert dataclasses.replace(cfg, groups=()) == Config()


def test_example_file_shows_every_key():
    with open(EXAMPLE, encoding="utf-8") as handle:
        text = handle.read()
    for section, keys in config._SECTIONS.items():
        assert "\n%s:" % section in "\n" + text
        for key in keys:
            assert "  %s:" % key in text, key


def test_full_config():
    cfg = parse(
        """
        labels: {pid: true, unit: true}
        remote:
          groups:
            - name: lan
              cidrs: [10.0.0.0/8, 192.168.0.0/16]
            - name: v6
              cidrs: ["fd00::/8"]
          ipv4_prefix: 24
          ipv6_prefix: 64
        series: {budget: 500, ttl: 0}
        kernel:
          count: [EAGAIN, EINTR, EAGAIN]
          map_size: 256
          max_sockets: 4194304
          drain_interval: 2s
        """
    )
    assert cfg.pid_label is True and cfg.unit_label is True
    assert [g.name for g in cfg.groups] == ["lan", "v6"]
    assert cfg.groups[0].networks == (
        ipaddress.IPv4Network("10.0.0.0/8"),
        ipaddress.IPv4Network("192.168.0.0/16"),
    )
    assert cfg.groups[1].networks == (ipaddress.IPv6Network("fd00::/8"),)
    assert isinstance(cfg.groups[0].networks, tuple)
    assert (cfg.ipv4_prefix, cfg.ipv6_prefix) == (24, 64)
    assert (cfg.budget, cfg.ttl) == (500, 0.0)
    assert cfg.count == frozenset({"EAGAIN", "EINTR"})
    assert (cfg.map_size, cfg.max_sockets, cfg.drain_interval) == (256, 4194304, 2.0)


# ---------------------------------------------------------------------------
# durations


@pytest.mark.parametrize(
    "value, seconds",
    [
        ("500ms", 0.5),
        ("1.5s", 1.5),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("30", 30.0),
        ("250 ms", 0.25),
        ("0", 0.0),
        ("0s", 0.0),
        ("90", 90.0),
        ("0.25", 0.25),
        ("'45'", 45.0),
    ],
)
def test_ttl_durations(value, seconds):
    assert parse("series: {ttl: %s}" % value).ttl == pytest.approx(seconds)


@pytest.mark.parametrize(
    "value, seconds",
    [("500ms", 0.5), ("50ms", 0.05), ("10s", 10.0), ("1", 1.0), ("0.1", 0.1), ("2s", 2.0)],
)
def test_drain_interval_durations(value, seconds):
    assert parse("kernel: {drain_interval: %s}" % value).drain_interval == pytest.approx(seconds)


@pytest.mark.parametrize(
    "path, text",
    [
        ("kernel.drain_interval", "kernel: {drain_interval: 5 parsecs}"),
        ("kernel.drain_interval", "kernel: {drain_interval: 1d}"),
        ("kernel.drain_interval", "kernel: {drain_interval: ms}"),
        ("series.ttl", "series: {ttl: 1h30m}"),
        ("series.ttl", "series: {ttl: ''}"),
    ],
)
def test_bad_duration_strings(path, text):
    message = error_of(text)
    assert path + ": " in message
    assert "is not a duration: use e.g. 500ms, 2s, 1m or 1h" in message


def test_bad_duration_exact_message():
    assert error_of("kernel:\n  drain_interval: 5 parsecs\n") == (
        "config.yaml: kernel.drain_interval: '5 parsecs' is not a duration: "
        "use e.g. 500ms, 2s, 1m or 1h"
    )


@pytest.mark.parametrize(
    "path, text, fragment",
    [
        ("kernel.drain_interval", "kernel: {drain_interval: 10ms}", "between 50ms and 10s"),
        ("kernel.drain_interval", "kernel: {drain_interval: 11}", "between 50ms and 10s"),
        ("kernel.drain_interval", "kernel: {drain_interval: 0}", "between 50ms and 10s"),
        ("series.ttl", "series: {ttl: -5}", "0 (keep forever) or a positive duration"),
        ("series.ttl", "series: {ttl: -1m}", "0 (keep forever) or a positive duration"),
        ("series.ttl", "series: {ttl: .inf}", "not a finite duration"),
        ("series.ttl", "series: {ttl: true}", "expected a duration"),
        ("series.ttl", "series: {ttl: [1]}", "expected a duration"),
    ],
)
def test_duration_range_and_type(path, text, fragment):
    message = error_of(text)
    assert path + ": " in message
    assert fragment in message


# ---------------------------------------------------------------------------
# file and YAML errors


def test_missing_file(tmp_path):
    path = str(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError) as info:
        load(path)
    assert str(info.value) == (
        "%s: cannot read config file: No such file or directory: check --config.file" % path
    )


def test_directory_is_unreadable(tmp_path):
    with pytest.raises(ConfigError) as info:
        load(str(tmp_path))
    assert str(info.value) == ("%s: cannot read config file: it is a directory, not a regular file: "
                               "point --config.file at a YAML file" % tmp_path)


def test_not_utf8(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_bytes(b"labels:\n  pid: \xff\n")
    with pytest.raises(ConfigError) as info:
        load(str(path))
    assert str(info.value).startswith(str(path) + ": cannot read config file: not valid UTF-8")


def test_load_uses_path_as_source(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("series:\n  budget: 0\n")
    with pytest.raises(ConfigError) as info:
        load(str(path))
    assert str(info.value) == "%s: series.budget: must be between 1 and 1000000, got 0" % path
    path.write_text("labels: {pid: true}\n")
    assert load(str(path)).pid_label is True


def test_invalid_yaml_line_number():
    text = "labels:\n  pid: false\nremote:\n  groups: a: b\n"
    assert error_of(text) == (
        "config.yaml: line 4: invalid YAML: mapping values are not allowed here"
    )


@pytest.mark.parametrize(
    "text, line",
    [
        ("labels: [1\n", 2),
        ("labels:\n\tpid: true\n", 2),
        ("a: 1\n---\nb: 2\n", 2),
        ("remote:\n  groups: [\"x]\n", 3),
    ],
)
def test_invalid_yaml_is_one_line_with_line_number(text, line):
    message = error_of(text)
    assert message.startswith("config.yaml: line %d: invalid YAML: " % line), message


def test_invalid_yaml_control_character():
    message = error_of("labels: \x01\n")
    assert message.startswith("config.yaml: invalid YAML: ")


@pytest.mark.parametrize("text", ["- labels\n", "42", "hello", "[1, 2]"])
def test_top_level_not_a_mapping(text):
    assert error_of(text) == (
        "config.yaml: the config must be a mapping of sections (labels, remote, series, kernel, events)"
    )


@pytest.mark.parametrize(
    "path, text",
    [
        ("labels", "labels: true"),
        ("remote", "remote: [a]"),
        ("series", "series: 5"),
        ("kernel", "kernel: fast"),
        ("remote.groups[0]", "remote: {groups: [lan]}"),
    ],
)
def test_section_not_a_mapping(path, text):
    message = error_of(text)
    assert message.startswith("config.yaml: %s: expected a" % path), message


# ---------------------------------------------------------------------------
# unknown keys


def test_unknown_key_with_suggestion():
    assert error_of("remote:\n  group: []\n") == (
        "config.yaml: remote.group: unknown key; valid keys here: groups, ipv4_prefix, "
        "ipv6_prefix; did you mean 'groups'?"
    )


@pytest.mark.parametrize(
    "text, path, valid, suggestion",
    [
        ("lables: {}", "lables", "labels, remote, series, kernel, events", "labels"),
        ("bogus: 1", "bogus", "labels, remote, series, kernel, events", None),
        ("labels: {pids: true}", "labels.pids", "pid, unit, pod, pod_host_root", "pid"),
        ("series: {TTL: 1h}", "series.TTL", "budget, ttl", "ttl"),
        ("series: {budgets: 1}", "series.budgets", "budget, ttl", "budget"),
        (
            "kernel: {mapsize: 1}",
            "kernel.mapsize",
            "count, map_size, max_sockets, drain_interval, syscall_tracepoints, function_hooks",
            "map_size",
        ),
        (
            "remote: {groups: [{name: a, cidr: [10.0.0.0/8]}]}",
            "remote.groups[0].cidr",
            "name, cidrs, paths",
            "cidrs",
        ),
        ("remote: {zzz: 1}", "remote.zzz", "groups, ipv4_prefix, ipv6_prefix", None),
        ("1: x", "1", "labels, remote, series, kernel, events", None),
    ],
)
def test_unknown_keys(text, path, valid, suggestion):
    message = error_of(text)
    expected = "config.yaml: %s: unknown key; valid keys here: %s" % (path, valid)
    if suggestion:
        expected += "; did you mean %r?" % suggestion
    assert message == expected


# ---------------------------------------------------------------------------
# wrong types and ranges


def test_bool_wrong_type_exact():
    assert error_of("labels:\n  pid: 'yes'\n") == (
        "config.yaml: labels.pid: expected true or false, got 'yes' (str)"
    )


@pytest.mark.parametrize(
    "path, text, got",
    [
        ("labels.pid", "labels: {pid: 1}", "got 1 (int)"),
        ("labels.pid", "labels: {pid: 'true'}", "got 'true' (str)"),
        ("labels.pid", "labels: {pid: }", "got nothing (null)"),
        ("labels.unit", "labels: {unit: 0}", "got 0 (int)"),
        ("labels.unit", "labels: {unit: [true]}", "got [True] (list)"),
        ("series.budget", "series: {budget: true}", "got True (bool)"),
        ("series.budget", "series: {budget: '2000'}", "got '2000' (str)"),
        ("series.budget", "series: {budget: 2000.0}", "got 2000.0 (float)"),
        ("remote.ipv4_prefix", "remote: {ipv4_prefix: 24.5}", "got 24.5 (float)"),
        ("remote.ipv6_prefix", "remote: {ipv6_prefix: '/64'}", "got '/64' (str)"),
        ("kernel.map_size", "kernel: {map_size: false}", "got False (bool)"),
        ("kernel.max_sockets", "kernel: {max_sockets: {a: 1}}", "got {'a': 1} (mapping)"),
        ("kernel.max_sockets", "kernel: {max_sockets: automatic}", "got 'automatic' (str)"),
    ],
)
def test_wrong_types(path, text, got):
    message = error_of(text)
    assert message.startswith("config.yaml: %s: expected " % path), message
    assert message.endswith(got), message


def test_long_values_are_shortened():
    message = error_of("labels: {pid: '%s'}" % ("x" * 500))
    assert len(message) < 200
    assert "..." in message


def test_out_of_range_exact():
    assert error_of("series:\n  budget: 0\n") == (
        "config.yaml: series.budget: must be between 1 and 1000000, got 0"
    )


@pytest.mark.parametrize(
    "path, text, bounds",
    [
        ("series.budget", "series: {budget: 1000001}", "between 1 and 1000000, got 1000001"),
        ("remote.ipv4_prefix", "remote: {ipv4_prefix: 33}", "between 0 and 32, got 33"),
        ("remote.ipv4_prefix", "remote: {ipv4_prefix: -1}", "between 0 and 32, got -1"),
        ("remote.ipv6_prefix", "remote: {ipv6_prefix: 129}", "between 0 and 128, got 129"),
        ("kernel.map_size", "kernel: {map_size: 255}", "between 256 and 1048576, got 255"),
        ("kernel.map_size", "kernel: {map_size: 1048577}", "between 256 and 1048576"),
        ("kernel.max_sockets", "kernel: {max_sockets: 1023}", "between 1024 and 4194304"),
        ("kernel.max_sockets", "kernel: {max_sockets: 4194305}", "between 1024 and 4194304"),
    ],
)
def test_out_of_range(path, text, bounds):
    message = error_of(text)
    assert message.startswith("config.yaml: %s: must be between " % path)
    assert bounds in message


@pytest.mark.parametrize(
    "text, field, value",
    [
        ("series: {budget: 1}", "budget", 1),
        ("series: {budget: 1000000}", "budget", 1000000),
        ("remote: {ipv4_prefix: 0}", "ipv4_prefix", 0),
        ("remote: {ipv6_prefix: 0}", "ipv6_prefix", 0),
        ("kernel: {map_size: 1048576}", "map_size", 1048576),
        ("kernel: {max_sockets: 1024}", "max_sockets", 1024),
        ("kernel: {max_sockets: auto}", "max_sockets", 0),
        ("kernel: {max_sockets: AUTO}", "max_sockets", 0),
    ],
)
def test_range_bounds_are_inclusive(text, field, value):
    assert getattr(parse(text), field) == value


# ---------------------------------------------------------------------------
# kernel.count


@pytest.mark.parametrize(
    "path, text, fragment",
    [
        ("kernel.count[1]", "kernel: {count: [EAGAIN, ENOENT]}", "'ENOENT' cannot be listed"),
        ("kernel.count[0]", "kernel: {count: [eagain]}", "did you mean 'EAGAIN'?"),
        ("kernel.count[0]", "kernel: {count: [11]}", "got 11 (int)"),
        ("kernel.count", "kernel: {count: EAGAIN}", "expected a list of errno names"),
    ],
)
def test_bad_count(path, text, fragment):
    message = error_of(text)
    assert message.startswith("config.yaml: %s: " % path), message
    assert fragment in message
    for name in ("EAGAIN", "EINTR", "EINPROGRESS"):
        assert name in message


def test_count_all_allowed():
    cfg = parse("kernel: {count: [EINPROGRESS, EINTR, EAGAIN]}")
    assert cfg.count == frozenset({"EAGAIN", "EINTR", "EINPROGRESS"})


# ---------------------------------------------------------------------------
# remote.groups and CIDRs


def test_bad_cidr_exact_prefix():
    message = error_of(
        """
        remote:
          groups:
            - name: lan
              cidrs: [10.0.0.0/8, 10.0.0.0/33]
        """
    )
    assert message.startswith(
        "config.yaml: remote.groups[0].cidrs[1]: '10.0.0.0/33' is not a valid CIDR network: "
    ), message


@pytest.mark.parametrize(
    "cidr",
    ["300.0.0.0/8", "10.0.0.0/x", "lan", "::1/129", "fe80::zz/64", "10.0.0.0/8/8", ""],
)
def test_bad_cidrs(cidr):
    message = error_of('remote: {groups: [{name: a, cidrs: ["%s"]}]}' % cidr)
    assert message.startswith(
        "config.yaml: remote.groups[0].cidrs[0]: %r is not a valid CIDR network: " % cidr
    ), message


@pytest.mark.parametrize(
    "cidr, fixed",
    [
        ("10.0.0.1/8", "10.0.0.0/8"),
        ("192.168.1.77/24", "192.168.1.0/24"),
        ("fe80::1/10", "fe80::/10"),
        ("10.1.2.3/0", "0.0.0.0/0"),
    ],
)
def test_cidr_host_bits_suggestion(cidr, fixed):
    message = error_of('remote: {groups: [{name: a, cidrs: ["%s"]}]}' % cidr)
    assert message == (
        "config.yaml: remote.groups[0].cidrs[0]: %r has host bits set: did you mean %s?"
        % (cidr, fixed)
    )


@pytest.mark.parametrize(
    "cidr, network",
    [
        ("10.0.0.1", "10.0.0.1/32"),
        ("::1", "::1/128"),
        ("10.0.0.0/255.0.0.0", "10.0.0.0/8"),
        (" 10.0.0.0/8 ", "10.0.0.0/8"),
        ("0.0.0.0/0", "0.0.0.0/0"),
        ("::/0", "::/0"),
    ],
)
def test_good_cidrs(cidr, network):
    cfg = parse('remote: {groups: [{name: a, cidrs: ["%s"]}]}' % cidr)
    assert cfg.groups[0].networks == (ipaddress.ip_network(network),)


def test_groups_keep_order():
    cfg = parse(
        """
        remote:
          groups:
            - {name: one, cidrs: [10.1.0.0/16]}
            - {name: two, cidrs: [10.0.0.0/8]}
            - {name: three, cidrs: ["::/0"]}
        """
    )
    assert [g.name for g in cfg.groups] == ["one", "two", "three"]


@pytest.mark.parametrize("name", ["other", ""])
def test_reserved_group_names(name):
    message = error_of('remote: {groups: [{name: "%s", cidrs: [10.0.0.0/8]}]}' % name)
    assert message.startswith("config.yaml: remote.groups[0].name: "), message
    if name:
        assert "'other' is reserved" in message
    else:
        assert "must not be empty" in message


def test_reserved_name_in_later_group():
    message = error_of(
        """
        remote:
          groups:
            - {name: lan, cidrs: [10.0.0.0/8]}
            - {name: other, cidrs: [192.168.0.0/16]}
        """
    )
    assert message.startswith("config.yaml: remote.groups[1].name: 'other' is reserved")


def test_duplicate_group_names():
    message = error_of(
        """
        remote:
          groups:
            - {name: lan, cidrs: [10.0.0.0/8]}
            - {name: wan, cidrs: [1.0.0.0/8]}
            - {name: lan, cidrs: [192.168.0.0/16]}
        """
    )
    assert message.startswith("config.yaml: remote.groups[2].name: duplicate group name 'lan'")
    assert "remote.groups[0]" in message


@pytest.mark.parametrize(
    "path, text, fragment",
    [
        ("remote.groups[0]", "remote: {groups: [{cidrs: [10.0.0.0/8]}]}", "missing 'name'"),
        ("remote.groups[0]", "remote: {groups: [{name: a}]}", "missing 'cidrs'"),
        ("remote.groups[0].name", "remote: {groups: [{name: 5, cidrs: [10.0.0.0/8]}]}",
         "expected a string, got 5 (int)"),
        ("remote.groups[0].name", "remote: {groups: [{name: null, cidrs: [10.0.0.0/8]}]}",
         "expected a string"),
        ("remote.groups[0].cidrs", "remote: {groups: [{name: a, cidrs: []}]}",
         "expected a non-empty list of CIDR networks"),
        ("remote.groups[0].cidrs", "remote: {groups: [{name: a, cidrs: 10.0.0.0/8}]}",
         "expected a non-empty list of CIDR networks"),
        ("remote.groups[0].cidrs", "remote: {groups: [{name: a, cidrs: null}]}",
         "expected a non-empty list of CIDR networks"),
        ("remote.groups[0].cidrs[0]", "remote: {groups: [{name: a, cidrs: [10]}]}",
         "expected a CIDR network string"),
        ("remote.groups", "remote: {groups: {name: a, cidrs: [10.0.0.0/8]}}",
         "expected a list of groups"),
        ("remote.groups[1]", "remote: {groups: [{name: a, cidrs: [10.0.0.0/8]}, 7]}",
         "expected a group with a name and cidrs"),
        ("remote.groups[0].paths", "remote: {groups: [{name: a, paths: []}]}",
         "expected a non-empty list of unix socket path patterns"),
        ("remote.groups[0].paths", "remote: {groups: [{name: a, paths: /run/x.sock}]}",
         "expected a non-empty list of unix socket path patterns"),
        ("remote.groups[0].paths[1]", "remote: {groups: [{name: a, paths: [/run/x.sock, 5]}]}",
         "expected a unix socket path pattern such as /run/php/*.sock"),
        ("remote.groups[0].paths[0]", "remote: {groups: [{name: a, paths: [\"\"]}]}",
         "expected a unix socket path pattern"),
    ],
)
def test_bad_groups(path, text, fragment):
    message = error_of(text)
    assert message.startswith("config.yaml: %s: " % path), message
    assert fragment in message


# ---------------------------------------------------------------------------
# messages


def test_default_source_and_custom_source():
    with pytest.raises(ConfigError) as info:
        parse("series: {budget: 0}")
    assert str(info.value).startswith("<config>: series.budget: ")
    message = error_of("series: {budget: 0}", source="/etc/errnomon/config.yaml")
    assert message.startswith("/etc/errnomon/config.yaml: series.budget: ")


def test_config_error_is_always_one_line():
    assert str(ConfigError("a\nb\r\nc")) == "a b c"
    assert isinstance(ConfigError("x"), Exception)


def test_syscall_tracepoints():
    assert parse("").syscall_tracepoints is False
    assert parse("kernel:\n  syscall_tracepoints: true\n").syscall_tracepoints is True
    with pytest.raises(ConfigError) as e:
        parse("kernel:\n  syscall_tracepoints: 'no'\n", "c.yaml")
    assert "kernel.syscall_tracepoints" in str(e.value)
    assert "syscall_tracepoints" in KERNEL_KEYS


def test_function_hooks():
    assert parse("").function_hooks == ("fentry", "kprobe")
    assert parse("kernel:\n  function_hooks: [kprobe]\n").function_hooks == ("kprobe",)
    # the order is the loader's (cheapest first), whatever the file says
    assert parse("kernel:\n  function_hooks: [kprobe, fentry]\n").function_hooks == ("fentry", "kprobe")
    assert parse("kernel:\n  function_hooks: []\n").function_hooks == ()
    with pytest.raises(ConfigError) as e:
        parse("kernel:\n  function_hooks: [fexit]\n", "c.yaml")
    assert str(e.value) == ("c.yaml: kernel.function_hooks[0]: 'fexit' cannot be listed here: allowed values are "
                            "fentry, kprobe")
    with pytest.raises(ConfigError) as e:
        parse("kernel:\n  function_hooks: [KPROBE]\n", "c.yaml")
    assert "did you mean 'kprobe'?" in str(e.value)
    with pytest.raises(ConfigError) as e:
        parse("kernel:\n  function_hooks: kprobe\n", "c.yaml")
    assert "expected a list of hook familys" not in str(e.value)
    assert "kernel.function_hooks: expected a list of hook families" in str(e.value)


# ---------------------------------------------------------------------------
# hostile but fair files: each is one line naming the problem and the fix, bounded in time and memory

BOMB = ('a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
        + "".join("%s: &%s [%s]\n" % (n, n, ",".join(["*" + p] * 9)) for p, n in zip("abcdefgh", "bcdefghi")))

HOSTILE = [
    ("series: {budget: !!int abc}\n",
     "config.yaml: line 1: 'abc' is not a whole number: remove the !!int tag or write digits"),
    ("labels: {pid: 2001-13-45}\n",
     "config.yaml: line 1: '2001-13-45' looks like a date but is not a valid one: quote it if it is text"),
    ("labels: {pid: !!timestamp abc}\n",
     "config.yaml: line 1: 'abc' looks like a date but is not a valid one: quote it if it is text"),
    ("labels: {pid: !!bool maybe}\n",
     "config.yaml: line 1: 'maybe' is not true or false: remove the !!bool tag or write true or false"),
    ("series: {ttl: !!float x}\n",
     "config.yaml: line 1: 'x' is not a number: remove the !!float tag or write e.g. 1.5"),
    ("series:\n  budget: %s\n" % ("9" * 5000,),
     "config.yaml: line 2: the number '9999999999999999999999...99999999999999999999999' is too long "
     "(more than 32 characters): errnomon's numbers are far smaller"),
    ("series: {ttl: 1%s}\n" % ("0" * 400,),
     "config.yaml: line 1: the number '1000000000000000000000...00000000000000000000000' is too long "
     "(more than 32 characters): errnomon's numbers are far smaller"),
    ("series: {ttl: 1.0e+400}\n",
     "config.yaml: series.ttl: inf is not a finite duration: use e.g. 500ms, 2s, 1m or 1h"),
    ("series: {ttl: 1e400}\n",
     "config.yaml: series.ttl: '1e400' is not a duration: use e.g. 500ms, 2s, 1m or 1h"),
    ("series: {budget: %s}\n" % ":".join(["59"] * 30,),
     "config.yaml: line 1: the number '59:59:59:59:59:59:59:5...59:59:59:59:59:59:59:59' is too long "
     "(more than 32 characters): errnomon's numbers are far smaller"),
    ("series: " + "[" * 5000 + "]" * 5000 + "\n",
     "config.yaml: line 1: nested more than 32 levels deep: a config needs at most 5"),
    ("series: " + "{a: " * 5000 + "1" + "}" * 5000 + "\n",
     "config.yaml: line 1: nested more than 32 levels deep: a config needs at most 5"),
    (BOMB,
     "config.yaml: line 5: more than 50000 values (aliases count as what they repeat): a config needs far "
     "fewer; write it out without the aliases"),
    ("kernel: {count: [" + "EAGAIN," * 60000 + "EAGAIN]}\n",
     "config.yaml: line 1: more than 50000 values (aliases count as what they repeat): a config needs far "
     "fewer; write it out without the aliases"),
    ("series: {budget: 5}\nlabels: {}\nseries: {ttl: 1h}\n",
     "config.yaml: line 3: duplicate key 'series' (first on line 1): keep one of them"),
    ("series:\n  budget: 5\n  budget: 6\n",
     "config.yaml: line 3: duplicate key 'budget' (first on line 2): keep one of them"),
    ("remote: {groups: [{name: lo, cidrs: [::1/128]}]}\n",
     "config.yaml: line 1: invalid YAML: expected the node content, but found ':' (while parsing a flow "
     "node): quote IPv6 addresses inside [...] or {...}, e.g. [\"::1/128\"]"),
    ("labels: {\"p\\x1b[31mid\\u2028\": true}\n",
     "config.yaml: labels.p\\x1b[31mid\\u2028: unknown key; valid keys here: pid, unit, pod, pod_host_root"),
    ("labels: {pid: [%s]}\n" % ",".join(["'%s'" % ("x" * 1000)] * 100),
     "config.yaml: labels.pid: expected true or false, got ['xxxxxxxxxxxxxxxxxxxxxx...xxxxxxxxxxxxxxxxxxxxxxx', "
     "'xxx... (list)"),
]


@pytest.mark.parametrize("text, expected", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_text_is_one_line(text, expected):
    assert error_of(text) == expected


def test_merge_keys_are_not_duplicates():
    # a merged key overridden by the mapping's own is YAML's documented behaviour, not a duplicate
    assert parse("series: {<<: {budget: 7, ttl: 1h}, budget: 8}\n") == Config(budget=8, ttl=3600.0)


def test_aliases_within_the_limit_are_fine():
    text = "remote:\n  groups:\n    - {name: a, cidrs: &nets [10.0.0.0/8]}\n    - {name: b, cidrs: *nets}\n"
    net = ipaddress.ip_network("10.0.0.0/8")
    assert parse(text).groups == (Group("a", (net,)), Group("b", (net,)))


def test_unexpected_exception_is_one_line(monkeypatch):
    def boom(self, data):
        raise ZeroDivisionError("x\ny")
    monkeypatch.setattr(config._Parser, "parse", boom)
    assert error_of("{}") == ("config.yaml: cannot load the config (ZeroDivisionError: 'x\\ny'): "
                              "check the file with --config.check")


def test_fifo_is_refused_without_blocking(tmp_path):
    path = tmp_path / "fifo.yaml"
    os.mkfifo(path)
    with pytest.raises(ConfigError) as info:
        load(str(path))  # would block forever in open() or read() if it were opened like a file
    assert str(info.value) == ("%s: cannot read config file: it is a FIFO, not a regular file: point "
                               "--config.file at a YAML file" % path)


def test_device_is_refused():
    with pytest.raises(ConfigError) as info:
        load("/dev/zero")
    assert str(info.value) == ("/dev/zero: cannot read config file: it is a character device, not a regular "
                               "file: point --config.file at a YAML file")


def test_oversize_file_is_refused(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("# " + "x" * config.MAX_BYTES + "\n")
    with pytest.raises(ConfigError) as info:
        load(str(path))
    assert str(info.value) == ("%s: cannot read config file: %d bytes is over the 1024 KiB limit: a config "
                               "needs a few KiB; check --config.file" % (path, config.MAX_BYTES + 3))


def test_file_at_the_size_limit_loads(tmp_path):
    path = tmp_path / "edge.yaml"
    path.write_text("#" * (config.MAX_BYTES - 1) + "\n")
    assert load(str(path)) == Config()


def test_pod_labels_and_host_root():
    cfg = parse("labels: {pod: true, pod_host_root: /host}")
    assert cfg.pod_labels is True and cfg.pod_host_root == "/host"


@pytest.mark.parametrize("value", ["host", "''", "1", "[/host]"])
def test_pod_host_root_must_be_absolute(value):
    with pytest.raises(ConfigError) as e:
        parse("labels: {pod_host_root: %s}" % value)
    assert str(e.value).startswith("<config>: labels.pod_host_root: expected an absolute path such as / or /host, got ")


def test_path_groups():
    text = "remote: {groups: [{name: php, paths: [/run/php/*.sock, \"@php-*\"]}, " \
           "{name: both, cidrs: [10.0.0.0/8], paths: [/srv/*.sock]}]}"
    net = ipaddress.ip_network("10.0.0.0/8")
    assert parse(text).groups == (Group("php", (), ("/run/php/*.sock", "@php-*")),
                                  Group("both", (net,), ("/srv/*.sock",)))
