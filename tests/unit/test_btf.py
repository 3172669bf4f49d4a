"""monitor/btf.py: the running kernel's BTF against bpftool's reading of it, and hand-built blobs."""

import re
import shutil
import struct
import subprocess

import pytest

from monitor import btf

VMLINUX = btf.VMLINUX


# ---- the running kernel ----

@pytest.fixture(scope="module")
def kernel():
    b = btf.BTF.load(VMLINUX)
    assert b is not None, "%s is missing or unreadable: errnomon's CI kernels all have BTF" % VMLINUX
    return b


@pytest.fixture(scope="module")
def bpftool_raw():
    tool = shutil.which("bpftool")
    assert tool, "bpftool is missing: run scripts/setup.sh --test"
    out = subprocess.run([tool, "btf", "dump", "file", VMLINUX, "format", "raw"], check=True,
                         capture_output=True, text=True).stdout
    types = {}  # id -> (kind, name, [(member name, bit offset, bitfield size)])
    current = None
    for line in out.splitlines():
        m = re.match(r"\[(\d+)\] (\w+) '([^']*)'", line)
        if m:
            current = types[int(m.group(1))] = (m.group(2), m.group(3), [])
            continue
        m = re.match(r"\s+'([^']*)' type_id=\d+ bits_offset=(\d+)(?: bitfield_size=(\d+))?", line)
        if m and current:
            current[2].append((m.group(1), int(m.group(2)), int(m.group(3) or 0)))
    return types


KIND_NAMES = {btf.INT: "INT", btf.PTR: "PTR", btf.ARRAY: "ARRAY", btf.STRUCT: "STRUCT", btf.UNION: "UNION",
              btf.ENUM: "ENUM", btf.FWD: "FWD", btf.TYPEDEF: "TYPEDEF", btf.VOLATILE: "VOLATILE",
              btf.CONST: "CONST", btf.RESTRICT: "RESTRICT", btf.FUNC: "FUNC", btf.FUNC_PROTO: "FUNC_PROTO",
              btf.VAR: "VAR", btf.DATASEC: "DATASEC", btf.FLOAT: "FLOAT", btf.DECL_TAG: "DECL_TAG",
              btf.TYPE_TAG: "TYPE_TAG", btf.ENUM64: "ENUM64"}


def test_every_type_matches_bpftool(kernel, bpftool_raw):
    """Same number of types, and every id has bpftool's kind and name: the walk never desyncs."""
    assert len(kernel.types) - 1 == len(bpftool_raw)
    for tid, (kind, name, _) in bpftool_raw.items():
        assert KIND_NAMES[kernel.types[tid].kind] == kind, tid
        assert (kernel.name(tid) or "(anon)") == name, tid


@pytest.mark.parametrize("struct_name", ["sock_common", "sock", "sk_buff", "task_struct", "k_sigaction"])
def test_members_match_bpftool(kernel, bpftool_raw, struct_name):
    tid = kernel.find(struct_name, (btf.STRUCT,))[0]
    ours = [(m.name or "(anon)", m.bit_offset, m.bitfield_size) for m in kernel.members(tid)]
    assert ours == bpftool_raw[tid][2]


def _bpftool_offset(raw, kernel, struct_name, field):
    tid = kernel.find(struct_name, (btf.STRUCT,))[0]
    for name, bits, _ in raw[tid][2]:
        if name == field:
            return bits // 8
    raise AssertionError("%s.%s not in bpftool's dump" % (struct_name, field))


@pytest.mark.parametrize("struct_name,field", [("sock", "sk_err"), ("sock", "sk_protocol"),
                                               ("sock", "sk_type"), ("sock_common", "skc_v6_daddr"),
                                               ("sock_common", "skc_v6_rcv_saddr")])
def test_named_offsets_match_bpftool(kernel, bpftool_raw, struct_name, field):
    assert kernel.member_offset(struct_name, field) == _bpftool_offset(bpftool_raw, kernel, struct_name, field)


def test_stable_head_of_sock_common(kernel):
    head = {"skc_daddr": 0, "skc_rcv_saddr": 4, "skc_dport": 12, "skc_num": 14, "skc_family": 16,
            "skc_state": 18}
    assert {f: kernel.member_offset("sock_common", f) for f in head} == head
    # through struct sock's first member, and through an anonymous union (skc_daddr lives in one)
    assert kernel.member_offset("sock", "__sk_common.skc_dport") == 12


def test_sk_buff_header_offsets_are_inside_the_struct(kernel):
    size = kernel.struct_size("sk_buff")
    for field in ("head", "network_header", "transport_header"):
        off = kernel.member_offset("sk_buff", field)
        assert off is not None and 0 < off < size, field


def test_tracepoint_prototypes_of_this_kernel(kernel):
    assert kernel.tracepoint_proto("tcp_receive_reset") == ["struct sock *"]
    assert kernel.tracepoint_proto("inet_sock_set_state") == ["const struct sock *", "const int", "const int"]
    assert kernel.tracepoint_proto("signal_deliver") == ["int", "struct kernel_siginfo *", "struct k_sigaction *"]
    assert kernel.tracepoint_proto("no_such_event_errnomon") is None
    assert kernel.func_proto("tcp_sendmsg") == ("int", [("sk", "struct sock *"), ("msg", "struct msghdr *"),
                                                        ("size", "size_t")])


def test_missing_or_bad_file_degrades_to_none(tmp_path, caplog):
    assert btf.BTF.load(str(tmp_path / "vmlinux")) is None
    (tmp_path / "bad").write_bytes(b"\0" * 64)
    assert btf.BTF.load(str(tmp_path / "bad")) is None
    # the caller (the loader) says in one warning what is lost; the reader itself stays quiet
    assert [r for r in caplog.records if r.levelname == "WARNING"] == []


# ---- hand-built blobs ----

class Builder:
    """Just enough of a BTF writer for the tests."""

    def __init__(self):
        self.strings = b"\0"
        self.types = b""
        self.count = 0

    def s(self, name):
        if not name:
            return 0
        off = len(self.strings)
        self.strings += name.encode() + b"\0"
        return off

    def add(self, kind, name, vlen, size_or_type, trailer=b"", kind_flag=False):
        info = (kind << 24) | vlen | (1 << 31 if kind_flag else 0)
        self.types += struct.pack("<III", self.s(name), info, size_or_type) + trailer
        self.count += 1
        return self.count

    def int_(self, name, size):
        return self.add(btf.INT, name, 0, size, struct.pack("<I", size * 8))

    def struct_(self, name, size, members, kind=btf.STRUCT, kind_flag=False):
        trailer = b"".join(struct.pack("<III", self.s(n), t, off) for n, t, off in members)
        return self.add(kind, name, len(members), size, trailer, kind_flag)

    def blob(self):
        hdr = struct.pack("<HBBIIIII", btf.MAGIC, 1, 0, 24, 0, len(self.types), len(self.types),
                          len(self.strings))
        return hdr + self.types + self.strings


def sample():
    """Every kind, the odd-sized ones first, then the structs the tests read."""
    b = Builder()
    u32 = b.int_("u32", 4)                                           # 1
    b.add(btf.ENUM64, "big", 2, 8, struct.pack("<III", b.s("A"), 1, 0) + struct.pack("<III", b.s("B"), 2, 0))
    b.add(btf.DECL_TAG, "tag", 0, u32, struct.pack("<I", 0xFFFFFFFF))  # 3
    tagged = b.add(btf.TYPE_TAG, "user", 0, u32)                     # 4
    b.add(btf.ENUM, "small", 1, 4, struct.pack("<Ii", b.s("X"), 7))  # 5
    b.add(btf.ARRAY, "", 0, 0, struct.pack("<III", u32, u32, 4))     # 6
    b.add(btf.VAR, "v", 0, u32, struct.pack("<I", 1))                # 7
    b.add(btf.DATASEC, ".data", 1, 4, struct.pack("<III", 7, 0, 4))  # 8
    b.add(btf.FLOAT, "float", 0, 4)                                  # 9
    b.add(btf.FWD, "fwd", 0, 0)                                      # 10
    anon = b.struct_("", 8, [("a", u32, 0), ("b", tagged, 32)])      # 11: anonymous struct
    union = b.struct_("", 8, [("", anon, 0), ("whole", u32, 0)], kind=btf.UNION)  # 12
    bits = b.struct_("bits", 4, [("lo", u32, (3 << 24) | 0), ("hi", u32, (5 << 24) | 8)], kind_flag=True)  # 13
    td = b.add(btf.TYPEDEF, "bits_t", 0, bits)                       # 14
    const = b.add(btf.CONST, "", 0, td)                              # 15
    outer = b.struct_("outer", 24, [("u", u32, 0), ("", union, 64), ("inner", const, 128)])  # 16
    ptr = b.add(btf.PTR, "", 0, outer)                               # 17
    void_ptr = b.add(btf.PTR, "", 0, 0)                              # 18
    proto = b.add(btf.FUNC_PROTO, "", 2, u32, struct.pack("<IIII", b.s("__data"), void_ptr, 0, ptr))  # 19
    tp_ptr = b.add(btf.PTR, "", 0, proto)                            # 20
    b.add(btf.TYPEDEF, "btf_trace_my_event", 0, tp_ptr)              # 21
    fproto = b.add(btf.FUNC_PROTO, "", 1, u32, struct.pack("<II", b.s("o"), ptr))  # 22
    b.add(btf.FUNC, "my_func", 0, fproto)                            # 23
    b.add(btf.VOLATILE, "", 0, u32)                                  # 24
    b.add(btf.RESTRICT, "", 0, ptr)                                  # 25
    return btf.BTF(b.blob())


@pytest.mark.parametrize("path,offset", [
    ("u", 0),
    ("a", 8),            # outer -> anonymous union -> anonymous struct
    ("b", 12),
    ("whole", 8),        # outer -> anonymous union
    ("inner", 16),       # through a const typedef
    ("inner.hi", 17),    # kind_flag bitfield at bit 8 of inner
    ("missing", None),
    ("u.x", None),       # u is not a struct
])
def test_member_offsets(path, offset):
    assert sample().member_offset("outer", path) == offset


def test_bitfield_not_on_a_byte():
    b = sample()
    assert b.member("bits", "lo").bitfield_size == 3
    assert b.member("bits", "hi") == btf.Member("hi", 1, 8, 5)
    odd = Builder()
    u32 = odd.int_("u32", 4)
    odd.struct_("s", 4, [("x", u32, (1 << 24) | 3)], kind_flag=True)
    with pytest.raises(btf.BTFError, match="bitfield at bit 3"):
        btf.BTF(odd.blob()).member_offset("s", "x")


def test_sizes_and_missing_structs():
    b = sample()
    assert b.struct_size("outer") == 24
    assert b.struct_size("bits") == 4
    assert b.struct_size("nope") is None
    assert b.member_offset("nope", "u") is None


def test_prototypes():
    b = sample()
    assert b.tracepoint_proto("my_event") == ["struct outer *"]
    assert b.func_proto("my_func") == ("u32", [("o", "struct outer *")])
    assert b.func_proto("nope") is None
    assert b.type_name(25) == "restrict struct outer *"
    assert b.type_name(24) == "volatile u32"
    assert b.type_name(6) == "u32[4]"


def test_every_kind_is_walked_to_the_next_type():
    b = sample()
    kinds = [t.kind for t in b.types[1:]]
    assert set(kinds) == set(KIND_NAMES)
    assert b.name(21) == "btf_trace_my_event" and b.name(23) == "my_func"


@pytest.mark.parametrize("mangle,message", [
    (lambda d: b"\0\0" + d[2:], "bad magic"),
    (lambda d: d[:2] + b"\2" + d[3:], "version"),
    (lambda d: d[:10], "too short"),
    (lambda d: d[:-5], "past the end"),
])
def test_malformed_blobs(mangle, message):
    b = Builder()
    b.int_("u32", 4)
    with pytest.raises(btf.BTFError, match=message):
        btf.BTF(mangle(b.blob()))


def test_unknown_kind_stops_the_walk():
    b = Builder()
    b.add(31, "future", 0, 0)
    with pytest.raises(btf.BTFError, match="unknown BTF kind 31"):
        btf.BTF(b.blob())


def test_truncated_type_section():
    b = Builder()
    b.int_("u32", 4)
    data = bytearray(b.blob())
    struct.pack_into("<I", data, 12, len(b.types) - 2)  # type_len cuts the INT's trailer
    with pytest.raises(btf.BTFError):
        btf.BTF(bytes(data))
