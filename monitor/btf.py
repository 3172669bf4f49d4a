"""A small reader of the kernel's BTF (/sys/kernel/btf/vmlinux): struct layouts and prototypes.

errnomon's programs must not take struct layouts from whatever kernel headers bcc found (they are often
another kernel's). The running kernel describes itself in BTF; this module reads the few facts the loader
passes to the programs as -D flags: member offsets, struct sizes, tracepoint and function prototypes.

Format: include/uapi/linux/btf.h and Documentation/bpf/btf.rst. Every kind is walked by its exact size so
that an unknown detail of one type can never shift the reading of the next; an unknown kind stops the
parse with BTFError rather than guessing.
"""

import logging
import os
import struct
from collections import namedtuple

log = logging.getLogger("errnomon.btf")

# ERRNOMON_KERNEL_BTF: another file (a kernel's BTF extracted elsewhere), or a missing one to run as on a
# kernel without BTF (tests/bpf/test_no_btf.py does).
VMLINUX = os.environ.get("ERRNOMON_KERNEL_BTF", "/sys/kernel/btf/vmlinux")
MAGIC = 0xEB9F

# BTF_KIND_*
INT, PTR, ARRAY, STRUCT, UNION, ENUM, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FUNC_PROTO, VAR, \
    DATASEC, FLOAT, DECL_TAG, TYPE_TAG, ENUM64 = range(1, 20)

# Bytes that follow struct btf_type (12 bytes), per kind: (fixed, per vlen item).
_TRAILER = {
    INT: (4, 0), PTR: (0, 0), ARRAY: (12, 0), STRUCT: (0, 12), UNION: (0, 12), ENUM: (0, 8), FWD: (0, 0),
    TYPEDEF: (0, 0), VOLATILE: (0, 0), CONST: (0, 0), RESTRICT: (0, 0), FUNC: (0, 0), FUNC_PROTO: (0, 8),
    VAR: (4, 0), DATASEC: (0, 12), FLOAT: (0, 0), DECL_TAG: (4, 0), TYPE_TAG: (0, 0), ENUM64: (0, 12),
}
_MODIFIERS = {TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG}
_QUALIFIER_NAMES = {VOLATILE: "volatile", CONST: "const", RESTRICT: "restrict"}

Type = namedtuple("Type", "kind name_off vlen kind_flag size_or_type trailer")
Member = namedtuple("Member", "name type bit_offset bitfield_size")
Param = namedtuple("Param", "name type")


class BTFError(Exception):
    """The blob is not BTF this reader understands."""


class BTF:
    def __init__(self, data):
        data = bytes(data)
        if len(data) < 24:
            raise BTFError("too short for a BTF header")
        magic, version, flags, hdr_len = struct.unpack_from("<HBBI", data, 0)
        endian = "<"
        if magic != MAGIC:
            magic, version, flags, hdr_len = struct.unpack_from(">HBBI", data, 0)
            endian = ">"
            if magic != MAGIC:
                raise BTFError("bad magic 0x%04x" % struct.unpack_from("<H", data, 0)[0])
        if version != 1:
            raise BTFError("unknown BTF version %d" % version)
        type_off, type_len, str_off, str_len = struct.unpack_from(endian + "IIII", data, 8)
        base = hdr_len
        if base + max(type_off + type_len, str_off + str_len) > len(data):
            raise BTFError("sections run past the end of the data")
        self._e = endian
        self._data = data
        self.strings = data[base + str_off: base + str_off + str_len]
        self.types = [None]  # type id 0 is void
        self._parse_types(base + type_off, base + type_off + type_len)
        self._by_name_off = {}
        for tid in range(1, len(self.types)):
            t = self.types[tid]
            if t.name_off:
                self._by_name_off.setdefault(t.name_off, []).append(tid)

    @classmethod
    def load(cls, path=VMLINUX):
        """The BTF at path, or None when there is none or it cannot be read (debug-logged: the caller says
        in one warning what is lost without it)."""
        try:
            with open(path, "rb") as f:
                return cls(f.read())
        except (OSError, BTFError) as e:
            log.debug("kernel BTF unavailable (%s): %s", path, e)
            return None

    def _parse_types(self, pos, end):
        unpack = struct.Struct(self._e + "III").unpack_from
        types = self.types
        while pos < end:
            if pos + 12 > end:
                raise BTFError("truncated type %d" % len(types))
            name_off, info, size_or_type = unpack(self._data, pos)
            kind = (info >> 24) & 0x1F
            vlen = info & 0xFFFF
            trailer = _TRAILER.get(kind)
            if trailer is None:
                raise BTFError("unknown BTF kind %d at type %d" % (kind, len(types)))
            types.append(Type(kind, name_off, vlen, bool(info >> 31), size_or_type, pos + 12))
            pos += 12 + trailer[0] + trailer[1] * vlen
        if pos != end:
            raise BTFError("type section does not end on a type boundary")

    # ---- names ----

    def name(self, tid):
        t = self.types[tid]
        return self._string(t.name_off) if t else ""

    def _string(self, off):
        end = self.strings.find(b"\0", off)
        return self.strings[off:end if end >= 0 else len(self.strings)].decode("utf-8", "replace")

    def find(self, name, kinds):
        """Type ids of the given kinds named `name`, in id order."""
        needle = name.encode()
        found = []
        start = 0
        while True:
            i = self.strings.find(b"\0" + needle + b"\0", start)
            if i < 0:
                break
            found.extend(t for t in self._by_name_off.get(i + 1, ()) if self.types[t].kind in kinds)
            start = i + 1
        if self.strings.startswith(needle + b"\0") and needle:
            found.extend(t for t in self._by_name_off.get(0, ()) if self.types[t].kind in kinds)
        return sorted(set(found))

    # ---- types ----

    def resolve(self, tid):
        """Skip typedefs and qualifiers."""
        while tid and self.types[tid].kind in _MODIFIERS:
            tid = self.types[tid].size_or_type
        return tid

    def type_size(self, tid, depth=0):
        """Size in bytes of a type (pointers: 8, the size of a pointer on errnomon's 64-bit targets)."""
        tid = self.resolve(tid)
        t = self.types[tid]
        if t is None or depth > 16:
            return None
        if t.kind in (INT, ENUM, ENUM64, STRUCT, UNION, FLOAT):
            return t.size_or_type
        if t.kind == PTR:
            return 8
        if t.kind == ARRAY:
            elem, _, nelems = struct.unpack_from(self._e + "III", self._data, t.trailer)
            inner = self.type_size(elem, depth + 1)
            return None if inner is None else inner * nelems
        return None

    def members(self, tid):
        t = self.types[tid]
        if t.kind not in (STRUCT, UNION):
            raise BTFError("type %d is not a struct or union" % tid)
        out = []
        for i in range(t.vlen):
            name_off, mtype, offset = struct.unpack_from(self._e + "III", self._data, t.trailer + 12 * i)
            if t.kind_flag:
                out.append(Member(self._string(name_off), mtype, offset & 0xFFFFFF, offset >> 24))
            else:
                out.append(Member(self._string(name_off), mtype, offset, 0))
        return out

    def params(self, tid):
        t = self.types[tid]
        if t.kind != FUNC_PROTO:
            raise BTFError("type %d is not a function prototype" % tid)
        return [Param(self._string(n), ty) for n, ty in
                (struct.unpack_from(self._e + "II", self._data, t.trailer + 8 * i) for i in range(t.vlen))]

    def _struct(self, name):
        """The complete struct (or union) named `name`, preferring a struct; None if absent."""
        for kinds in ((STRUCT,), (UNION,)):
            for tid in self.find(name, kinds):
                return tid
        return None

    def struct_size(self, name):
        tid = self._struct(name)
        return None if tid is None else self.types[tid].size_or_type

    def member(self, struct_name, path):
        """The Member at a dotted path ("sk_buff.head" is member_offset("sk_buff", "head")), with its
        bit offset from the start of the outer struct; anonymous struct/union members are walked into.
        None when the struct or a field is missing."""
        tid = self._struct(struct_name)
        if tid is None:
            return None
        base = 0
        found = None
        for part in path.split("."):
            if found is not None:
                tid = self.resolve(found.type)
                if self.types[tid].kind not in (STRUCT, UNION):
                    return None
            hit = self._find_member(tid, part)
            if hit is None:
                return None
            found = hit._replace(bit_offset=base + hit.bit_offset)
            base = found.bit_offset
        return found

    def _find_member(self, tid, name, depth=0):
        if depth > 32:
            return None
        for m in self.members(tid):
            if m.name == name:
                return m
            if not m.name:
                inner = self.resolve(m.type)
                if self.types[inner].kind in (STRUCT, UNION):
                    hit = self._find_member(inner, name, depth + 1)
                    if hit is not None:
                        return hit._replace(bit_offset=m.bit_offset + hit.bit_offset)
        return None

    def member_offset(self, struct_name, path):
        """Byte offset of a member, or None if missing. A bitfield not on a byte boundary raises BTFError."""
        m = self.member(struct_name, path)
        if m is None:
            return None
        if m.bit_offset % 8:
            raise BTFError("%s.%s is a bitfield at bit %d, not at a byte" % (struct_name, path, m.bit_offset))
        return m.bit_offset // 8

    def type_name(self, tid, depth=0):
        """C spelling of a type: 'struct sock *', 'const void *', 'int', 'enum sk_rst_reason'."""
        if tid == 0:
            return "void"
        if depth > 16:
            return "?"
        t = self.types[tid]
        if t.kind == PTR:
            inner = self.type_name(t.size_or_type, depth + 1)
            return inner + ("*" if inner.endswith("*") else " *")
        if t.kind in _QUALIFIER_NAMES:
            return "%s %s" % (_QUALIFIER_NAMES[t.kind], self.type_name(t.size_or_type, depth + 1))
        if t.kind == TYPE_TAG:
            return self.type_name(t.size_or_type, depth + 1)
        if t.kind in (STRUCT, UNION, ENUM, ENUM64):
            word = {STRUCT: "struct", UNION: "union"}.get(t.kind, "enum")
            return "%s %s" % (word, self.name(tid) or "(anon)")
        if t.kind == FWD:
            return "%s %s" % ("union" if t.kind_flag else "struct", self.name(tid))
        if t.kind == FUNC_PROTO:
            return "%s (*)(%s)" % (self.type_name(t.size_or_type, depth + 1),
                                   ", ".join(self.type_name(p.type, depth + 1) for p in self.params(tid)))
        if t.kind == ARRAY:
            elem, _, nelems = struct.unpack_from(self._e + "III", self._data, t.trailer)
            return "%s[%d]" % (self.type_name(elem, depth + 1), nelems)
        return self.name(tid)

    def func_proto(self, name):
        """(return type name, [(param name, type name)]) of a kernel function, or None."""
        for tid in self.find(name, (FUNC,)):
            proto = self.types[tid].size_or_type
            return (self.type_name(self.types[proto].size_or_type),
                    [(p.name, self.type_name(p.type)) for p in self.params(proto)])
        return None

    def tracepoint_proto(self, event):
        """Argument type names of a raw tracepoint, as the BPF program sees them in ctx->args (the first
        argument, void *__data, is not passed to the program), or None if the event has no
        btf_trace_<event> typedef."""
        for tid in self.find("btf_trace_" + event, (TYPEDEF,)):
            ptr = self.types[self.types[tid].size_or_type]
            if ptr is None or ptr.kind != PTR:
                return None
            proto = ptr.size_or_type
            if self.types[proto].kind != FUNC_PROTO:
                return None
            return [self.type_name(p.type) for p in self.params(proto)][1:]
        return None
