"""monitor/decode.py: errno names, reset reasons from a tracepoint format, peer addresses, key -> Event."""

import ctypes
import ipaddress

import pytest

from monitor import abi
from monitor.decode import (AF_INET, AF_INET6, AF_UNIX, Decoder, Event, UnixAddress, errno_name, remote_address,
                            reset_reasons)

# The print fmt line of events/tcp/tcp_send_reset/format (abridged). Embedded, so the tests do not
# depend on the host's kernel. The state table comes first and must not be mistaken for the reasons.
TCP_SEND_RESET_FORMAT = (
    'print fmt: "skbaddr=%p skaddr=%p src=%pISpc dest=%pISpc state=%s reason=%s", REC->skbaddr, '
    'REC->skaddr, REC->saddr, REC->daddr, REC->state ? __print_symbolic(REC->state, '
    '{ TCP_ESTABLISHED, "TCP_ESTABLISHED" }, { TCP_SYN_SENT, "TCP_SYN_SENT" }) : "UNKNOWN", '
    '__print_symbolic(REC->reason, { 0, "NOT_SPECIFIED" }, { 1, "NO_SOCKET" }, '
    '{ 2, "TCP_INVALID_ACK_SEQUENCE" }, { 14, "TCP_STATE" }, { 25, "MAX" })'
)
FORMAT_FILE = (
    "name: tcp_send_reset\nID: 1234\nformat:\n"
    "\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n"
    "\tfield:enum sk_rst_reason reason;\toffset:68;\tsize:4;\tsigned:0;\n\n"
    + TCP_SEND_RESET_FORMAT + "\n"
)


@pytest.mark.parametrize(
    "code, name",
    [(104, "ECONNRESET"), (32, "EPIPE"), (110, "ETIMEDOUT"), (111, "ECONNREFUSED"), (11, "EAGAIN"),
     (0, "E0"), (9999, "E9999"), (65535, "unknown")],
)
def test_errno_name(code, name):
    assert errno_name(code) == name


@pytest.mark.parametrize("text", [TCP_SEND_RESET_FORMAT, FORMAT_FILE], ids=["print-fmt", "format-file"])
def test_reset_reasons(text):
    reasons = reset_reasons(text)
    assert reasons == {0: "NOT_SPECIFIED", 1: "NO_SOCKET", 2: "TCP_INVALID_ACK_SEQUENCE", 14: "TCP_STATE",
                       25: "MAX"}
    assert (reasons[0], reasons[1], reasons[14]) == ("NOT_SPECIFIED", "NO_SOCKET", "TCP_STATE")
    assert not {"TCP_ESTABLISHED", "TCP_SYN_SENT", "UNKNOWN"} & set(reasons.values())


@pytest.mark.parametrize(
    "text",
    [None, "", 'print fmt: "skbaddr=%p state=%s", REC->skbaddr, __print_symbolic(REC->state, { 1, "X" })'],
    ids=["none", "empty", "kernel-without-reason"],
)
def test_reset_reasons_absent(text):
    assert reset_reasons(text) == {}


def raw16(data):
    return (ctypes.c_uint8 * 16)(*data.ljust(16, b"\0"))


@pytest.mark.parametrize(
    "family, data, expected",
    [
        (AF_INET, bytes([10, 1, 2, 3]), ipaddress.IPv4Address("10.1.2.3")),
        (AF_INET, bytes([10, 1, 2, 3]) + b"\xff" * 12, ipaddress.IPv4Address("10.1.2.3")),
        (AF_INET6, ipaddress.IPv6Address("2001:db8:0:0:1:0:0:1").packed, ipaddress.IPv6Address("2001:db8::1:0:0:1")),
        (AF_INET6, ipaddress.IPv6Address("::1").packed, ipaddress.IPv6Address("::1")),
        (AF_INET6, ipaddress.IPv6Address("::ffff:10.1.2.3").packed, ipaddress.IPv4Address("10.1.2.3")),
        (0, bytes([10, 1, 2, 3]), None),
        (1, bytes(16), None),  # AF_UNIX
    ],
    ids=["ipv4", "ipv4-trailing-bytes", "ipv6", "ipv6-loopback", "v4-mapped", "unknown", "af-unix"],
)
def test_remote_address(family, data, expected):
    assert remote_address(family, raw16(data)) == expected


@pytest.mark.parametrize(
    "text, label",
    [("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"), ("2001:0db8:0000:0000:0000:0000:0002:0001", "2001:db8::2:1"),
     ("::1", "::1"), ("::ffff:10.1.2.3", "10.1.2.3")],
)
def test_remote_address_text_is_rfc5952(text, label):
    assert str(remote_address(AF_INET6, raw16(ipaddress.IPv6Address(text).packed))) == label


def make_key(metric, code=0, op=0, state=0, comm=b"curl", family=AF_INET, remote=bytes([10, 1, 2, 3]),
             port=443, tgid=4242, cgroup=77):
    key = abi.Key()
    key.metric = abi.METRICS.index(metric)
    key.code, key.op, key.state, key.comm, key.family = code, op, state, comm, family
    key.remote = raw16(remote)
    key.port, key.tgid, key.cgroup = port, tgid, cgroup
    return key


REASONS = reset_reasons(TCP_SEND_RESET_FORMAT)
COMMON = dict(comm="curl", remote=ipaddress.IPv4Address("10.1.2.3"), port=443, pid=4242, cgroup=77)
NONE = dict(errno=None, op=None, state=None, reason=None, action=None)


@pytest.mark.parametrize(
    "key_args, fields",
    [
        (dict(metric="socket_errors", code=104, op=1), dict(errno="ECONNRESET", op="send")),
        (dict(metric="socket_errors", code=111, op=3), dict(errno="ECONNREFUSED", op="connect")),
        (dict(metric="socket_errors", code=32, op=2, state=1), dict(errno="EPIPE", op="recv")),
        (dict(metric="socket_errors", code=24, op=4), dict(errno="EMFILE", op="accept")),
        (dict(metric="socket_errors", code=104, op=0), dict(errno="ECONNRESET", op="unknown")),
        (dict(metric="socket_error_reports", code=110, op=1, state=1), dict(errno="ETIMEDOUT")),
        (dict(metric="connect_failures", code=111, op=1, state=2), dict(errno="ECONNREFUSED")),
        (dict(metric="connect_failures", code=113), dict(errno="EHOSTUNREACH")),
        (dict(metric="tcp_resets_received", code=104, op=1, state=1), dict(state="ESTABLISHED")),
        (dict(metric="tcp_resets_received", state=8), dict(state="CLOSE_WAIT")),
        (dict(metric="tcp_resets_received", state=0), dict(state="UNKNOWN")),
        (dict(metric="tcp_resets_received", state=99), dict(state="UNKNOWN")),
        (dict(metric="tcp_resets_sent", code=1, state=1), dict(reason="NO_SOCKET")),
        (dict(metric="tcp_resets_sent", code=14), dict(reason="TCP_STATE")),
        (dict(metric="tcp_resets_sent", code=0), dict(reason="NOT_SPECIFIED")),
        (dict(metric="tcp_resets_sent", code=3), dict(reason="unknown")),
        (dict(metric="tcp_fins_sent", code=5, op=1, state=1), dict()),
        (dict(metric="sigpipe", code=1), dict(action="ignored")),
        (dict(metric="sigpipe", code=2), dict(action="handled")),
        (dict(metric="sigpipe", code=3, op=1), dict(action="killed")),
        (dict(metric="sigpipe", code=0), dict(action="unknown")),
    ],
)
def test_decoder(key_args, fields):
    event = Decoder(REASONS)(make_key(**key_args))
    assert event == Event(metric=key_args["metric"], **dict(COMMON, **dict(NONE, **fields)))


def test_decoder_without_reasons():
    assert Decoder()(make_key("tcp_resets_sent", code=1)).reason == "unknown"


@pytest.mark.parametrize(
    "key_args, fields",
    [
        (dict(family=0), dict(remote=None)),
        (dict(family=AF_INET6, remote=ipaddress.IPv6Address("fd00::7").packed),
         dict(remote=ipaddress.IPv6Address("fd00::7"))),
        (dict(port=0, tgid=0, cgroup=0), dict(port=0, pid=0, cgroup=0)),
        (dict(comm=b""), dict(comm="")),
        (dict(comm=b"a" * 16), dict(comm="a" * 16)),  # no NUL: the whole array
        (dict(comm=b"nginx\xff"), dict(comm="nginx\ufffd")),
        (dict(comm=b"x\0junk"), dict(comm="x")),
    ],
)
def test_decoder_owner_fields(key_args, fields):
    event = Decoder()(make_key("tcp_fins_sent", **key_args))
    assert event == Event(metric="tcp_fins_sent", **dict(COMMON, **dict(NONE, **fields)))


def test_decoder_round_trips_raw_key_bytes():
    """As the drain hands keys over: bytes from the map, through Key.from_buffer_copy."""
    key = make_key("socket_errors", code=104, op=1)
    copy = abi.Key.from_buffer_copy(bytes(key))
    assert Decoder()(copy) == Decoder()(key)


def unix_key(path_hash, **kw):
    return make_key("socket_errors", code=104, op=2, family=AF_UNIX, remote=path_hash.to_bytes(8, "little"),
                    port=0, **kw)


@pytest.mark.parametrize(
    "kept, label",
    [
        (b"/run/php/php-fpm.sock\0", "/run/php/php-fpm.sock"),    # a pathname: up to its NUL
        (b"relative.sock\0", "relative.sock"),
        (b"\0ux-abstract", "@ux-abstract"),                        # abstract: "@" for the leading NUL
        (b"\0a\0b\0", "@a\\x00b\\x00"),                           # every byte of an abstract name counts
        (b"\0tab\there\n", "@tab\\x09here\\x0a"),                  # control characters escaped
        (b"/caf\xc3\xa9.sock\0", "/caf\u00e9.sock"),               # valid UTF-8 kept
        (b"/bad\xff.sock\0", "/bad\\xff.sock"),                   # invalid UTF-8 escaped
        (b"/back\\slash\0", "/back\\\\slash"),                     # a backslash doubled: no two names alike
        (None, "unknown"),                                        # no longer kept in unix_paths
    ],
)
def test_unix_remote(kept, label):
    paths = {0x1234: kept}
    event = Decoder(REASONS, paths.get)(unix_key(0x1234))
    assert (event.remote, event.port, event.errno, event.op) == (label, 0, "ECONNRESET", "recv")
    assert isinstance(event.remote, UnixAddress)


def test_unix_remote_unnamed_is_not_looked_up():
    asked = []
    event = Decoder(REASONS, lambda h: asked.append(h))(unix_key(abi.DEFINES["UNIX_HASH_UNNAMED"]))
    assert (event.remote, asked) == ("unnamed", [])


def test_unix_remote_without_a_paths_map_is_unknown():
    assert Decoder(REASONS)(unix_key(99)).remote == "unknown"
