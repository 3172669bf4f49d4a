"""monitor/abi.py against bpf/errnomon.h as a C compiler lays it out.

gcc compiles a small program that includes the header (userspace build: <linux/types.h>) and prints
sizeof/offsetof of every field; the ctypes mirrors must agree byte for byte. No root, no bcc.
gcc is required: without it these tests fail rather than skip, since the ABI would go unchecked.
"""

import ctypes
import re
import shutil
import subprocess

import pytest

from monitor import abi

# C struct name -> its ctypes mirror.
STRUCTS = {
    "errnomon_key": abi.Key,
    "errnomon_owner": abi.Owner,
    "errnomon_listener": abi.Listener,
    "errnomon_listen_sock": abi.ListenSock,
    "errnomon_settings": abi.Settings,
    "errnomon_unix_path": abi.UnixPath,
    "errnomon_event": abi.Event,
}


def header_fields(struct):
    """Field names of `struct <struct> { ... };` in the header, in order."""
    with open(abi.HEADER) as f:
        text = f.read()
    body = re.search(r"struct\s+%s\s*\{(.*?)\};" % struct, text, re.S)
    assert body, "struct %s not found in %s" % (struct, abi.HEADER)
    body = re.sub(r"/\*.*?\*/", "", body.group(1), flags=re.S)
    return [m.group(1) for m in re.finditer(r"\b(\w+)\s*(?:\[[^\]]*\])?\s*;", body)]


def gcc():
    path = shutil.which("gcc")
    if path is None:
        pytest.fail("gcc is not installed: it is needed to check bpf/errnomon.h against monitor/abi.py "
                    "(apt-get install gcc)")
    return path


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    """{(struct, field or None): (size, offset)} as gcc sees them; field None is the whole struct."""
    lines = ["#include <stdio.h>", "#include <stddef.h>", '#include "errnomon.h"', "int main(void) {"]
    for struct in STRUCTS:
        lines.append('printf("%s - %%zu 0\\n", sizeof(struct %s));' % (struct, struct))
        for field in header_fields(struct):
            lines.append('printf("%s %s %%zu %%zu\\n", sizeof(((struct %s *)0)->%s), offsetof(struct %s, %s));'
                         % (struct, field, struct, field, struct, field))
    lines += ["return 0;", "}"]
    src = tmp_path_factory.mktemp("abi") / "layout.c"
    src.write_text("\n".join(lines) + "\n")
    exe = src.with_suffix("")
    subprocess.run([gcc(), "-Wall", "-Werror", "-I", abi.BPF_DIR, "-o", str(exe), str(src)], check=True,
                   capture_output=True, text=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    result = {}
    for line in out.splitlines():
        struct, field, size, offset = line.split()
        result[(struct, None if field == "-" else field)] = (int(size), int(offset))
    return result


@pytest.mark.parametrize("struct, mirror", STRUCTS.items(), ids=list(STRUCTS))
def test_field_names_and_order(struct, mirror):
    assert [name for name, _ in mirror._fields_] == header_fields(struct)


@pytest.mark.parametrize("struct, mirror", STRUCTS.items(), ids=list(STRUCTS))
def test_struct_size(layout, struct, mirror):
    assert ctypes.sizeof(mirror) == layout[(struct, None)][0]


@pytest.mark.parametrize(
    "struct, field",
    [(s, f) for s in STRUCTS for f in header_fields(s)],
    ids=lambda v: v,
)
def test_field_size_and_offset(layout, struct, field):
    descriptor = getattr(STRUCTS[struct], field)
    assert (descriptor.size, descriptor.offset) == layout[(struct, field)]


def test_known_sizes():
    # Pinned so a change to the map key (which resets every counter's identity) is deliberate.
    assert (ctypes.sizeof(abi.Key), ctypes.sizeof(abi.Owner), ctypes.sizeof(abi.Settings)) == (56, 72, 16)
    assert abi.GEN_OFFSET == 11
    assert ctypes.sizeof(abi.ListenSock) == 88
    assert ctypes.sizeof(abi.Event) == 144


@pytest.mark.parametrize(
    "name, value",
    [
        ("ERRNOMON_COMM_LEN", 16),
        ("OP_SEND", 1), ("OP_RECV", 2), ("OP_CONNECT", 3), ("OP_ACCEPT", 4),
        ("SIGPIPE_IGNORED", 1), ("SIGPIPE_HANDLED", 2), ("SIGPIPE_KILLED", 3),
        ("COUNT_EAGAIN", 1), ("COUNT_EINTR", 2), ("COUNT_EINPROGRESS", 4),
        ("METRIC_SOCKET_ERRORS", 0), ("METRIC_SOCKET_ERROR_REPORTS", 1), ("METRIC_TCP_RESETS_RECEIVED", 2),
        ("METRIC_TCP_RESETS_SENT", 3), ("METRIC_TCP_FINS_SENT", 4), ("METRIC_SIGPIPE", 5),
        ("METRIC_CONNECT_FAILURES", 6), ("METRIC_TCP_FINS_RECEIVED", 7), ("METRIC_LISTEN_DROPS", 8), ("METRIC_TCP_RESET_IDLE", 9), ("METRICS", 10),
        ("RESET_IDLE_BUCKETS", 10), ("RESET_IDLE_SUM", 65534),
        ("LISTEN_SWEEP_BATCH", 12), ("OWNER_CONNECTED", 1), ("OWNER_ACCEPTED", 2),
        ("OWNER_AMBIGUOUS", 4), ("OWNER_ESTABLISHED", 8),
        ("EVENT_SOCKET_ERROR", 1), ("EVENT_RESET_RECEIVED", 2), ("EVENT_RESET_SENT", 3), ("EVENT_CONNECT_FAILED", 4),
        ("EVENT_TCP_FACTS", 1), ("EVENT_BYTES_ACKED", 2), ("EVENT_DROP_RATE_LIMIT", 0), ("EVENT_DROP_RING_FULL", 1),
        ("EVENT_DROP_REASONS", 2), ("EVENTS_RING_PAGES", 128),
    ],
)
def test_defines(name, value):
    assert abi.DEFINES[name] == value


def test_defines_match_the_preprocessor():
    """Every constant abi.DEFINES read is what gcc's preprocessor defines, and none is missed."""
    out = subprocess.run([gcc(), "-dM", "-E", "-I", abi.BPF_DIR, abi.HEADER], check=True, capture_output=True,
                         text=True).stdout
    macros = dict(re.findall(r"^#define (\w+) (\S+)$", out, re.M))
    with open(abi.HEADER) as f:
        own = set(re.findall(r"^#define\s+(\w+)\s+\d+(?:\s|$)", f.read(), re.M))  # not lists (RESET_IDLE_LE)
    assert set(abi.DEFINES) == own
    assert {name: int(macros[name]) for name in own} == abi.DEFINES


def test_derived_tables():
    assert abi.OPS == {1: "send", 2: "recv", 3: "connect", 4: "accept"}
    assert abi.SIGPIPE_ACTIONS == {1: "ignored", 2: "handled", 3: "killed"}
    assert abi.COUNT_FLAGS == {"EAGAIN": 1, "EINTR": 2, "EINPROGRESS": 4}
    assert abi.METRICS == ("socket_errors", "socket_error_reports", "tcp_resets_received", "tcp_resets_sent",
                           "tcp_fins_sent", "sigpipe", "connect_failures", "tcp_fins_received", "listen_drops",
                           "tcp_reset_idle")
    assert abi.RESET_IDLE_LE == (1, 5, 15, 30, 60, 120, 350, 600, 900, 3600)
    assert abi.COMM_LEN == 16
    assert abi.EVENT_KINDS == {1: "socket_error", 2: "reset_received", 3: "reset_sent", 4: "connect_failed"}
    assert abi.EVENT_DROP_REASONS == {"rate_limit": 0, "ring_full": 1}


def test_prog_info_mirrors_the_uapi_header(tmp_path):
    """bpfmap.ProgInfo against struct bpf_prog_info of /usr/include/linux/bpf.h: recursion_misses is read
    at the offset the kernel writes it."""
    from monitor import bpfmap
    fields = [name for name, _ in bpfmap.ProgInfo._fields_]
    src = tmp_path / "info.c"
    src.write_text("#include <stdio.h>\n#include <stddef.h>\n#include <linux/bpf.h>\nint main(void) {\n" + "".join(
        'printf("%s %%zu %%zu\\n", offsetof(struct bpf_prog_info, %s), sizeof(((struct bpf_prog_info *)0)->%s));\n'
        % (f, f, f) for f in fields if f != "gpl_compatible") + "return 0;\n}\n")
    exe = tmp_path / "info"
    subprocess.run([gcc(), "-Wall", "-Werror", "-o", str(exe), str(src)], check=True, capture_output=True, text=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        name, offset, size = line.split()
        descriptor = getattr(bpfmap.ProgInfo, name)
        assert (descriptor.offset, descriptor.size) == (int(offset), int(size)), name
    assert bpfmap.ProgInfo.recursion_misses.offset == 208
