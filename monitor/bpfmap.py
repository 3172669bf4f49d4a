"""Batch reads and deletes on a BPF hash map by file descriptor, through the bpf(2) system call; the
kernel's run statistics of a program (bpf_prog_info); running a program that is not attached (BPF_PROG_TEST_RUN);
and emptying a BPF ring buffer that only wakes the daemon.

bcc's own batch helpers allocate max_entries keys and values on every call; a drain runs twice a second,
so this keeps one buffer per map and reuses it. Falls back to one-by-one iteration on kernels without
batch operations (before 5.6).
"""

import ctypes
import errno
import mmap
import os
import platform
import struct

_NR_BPF = {"x86_64": 321, "aarch64": 280}.get(platform.machine(), 321)
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

_ENOTSUPP = 524  # kernel-internal, returned by maps without batch support
BPF_MAP_LOOKUP_ELEM = 1
BPF_MAP_UPDATE_ELEM = 2
BPF_MAP_DELETE_ELEM = 3
BPF_MAP_GET_NEXT_KEY = 4
BPF_PROG_TEST_RUN = 10
BPF_OBJ_GET_INFO_BY_FD = 15
BPF_MAP_LOOKUP_BATCH = 24
BPF_MAP_DELETE_BATCH = 27
BPF_ITER_CREATE = 33


class _ElemAttr(ctypes.Structure):
    _fields_ = [("map_fd", ctypes.c_uint32), ("pad", ctypes.c_uint32), ("key", ctypes.c_uint64),
                ("value", ctypes.c_uint64), ("flags", ctypes.c_uint64)]


class _BatchAttr(ctypes.Structure):
    _fields_ = [("in_batch", ctypes.c_uint64), ("out_batch", ctypes.c_uint64), ("keys", ctypes.c_uint64),
                ("values", ctypes.c_uint64), ("count", ctypes.c_uint32), ("map_fd", ctypes.c_uint32),
                ("elem_flags", ctypes.c_uint64), ("flags", ctypes.c_uint64)]


class _TestRunAttr(ctypes.Structure):
    """The test member of union bpf_attr (BPF_PROG_TEST_RUN) up to batch_size."""
    _fields_ = [("prog_fd", ctypes.c_uint32), ("retval", ctypes.c_uint32), ("data_size_in", ctypes.c_uint32),
                ("data_size_out", ctypes.c_uint32), ("data_in", ctypes.c_uint64), ("data_out", ctypes.c_uint64),
                ("repeat", ctypes.c_uint32), ("duration", ctypes.c_uint32), ("ctx_size_in", ctypes.c_uint32),
                ("ctx_size_out", ctypes.c_uint32), ("ctx_in", ctypes.c_uint64), ("ctx_out", ctypes.c_uint64),
                ("flags", ctypes.c_uint32), ("cpu", ctypes.c_uint32), ("batch_size", ctypes.c_uint32),
                ("pad", ctypes.c_uint32)]


class _InfoAttr(ctypes.Structure):
    _fields_ = [("bpf_fd", ctypes.c_uint32), ("info_len", ctypes.c_uint32), ("info", ctypes.c_uint64)]


class ProgInfo(ctypes.Structure):
    """struct bpf_prog_info of include/uapi/linux/bpf.h up to recursion_misses (Linux 5.12). The kernel
    fills only as much as it knows and as info_len allows; tests/unit/test_abi.py checks the offsets."""
    _fields_ = [
        ("type", ctypes.c_uint32), ("id", ctypes.c_uint32), ("tag", ctypes.c_uint8 * 8),
        ("jited_prog_len", ctypes.c_uint32), ("xlated_prog_len", ctypes.c_uint32),
        ("jited_prog_insns", ctypes.c_uint64), ("xlated_prog_insns", ctypes.c_uint64),
        ("load_time", ctypes.c_uint64), ("created_by_uid", ctypes.c_uint32), ("nr_map_ids", ctypes.c_uint32),
        ("map_ids", ctypes.c_uint64), ("name", ctypes.c_char * 16), ("ifindex", ctypes.c_uint32),
        ("gpl_compatible", ctypes.c_uint32), ("netns_dev", ctypes.c_uint64), ("netns_ino", ctypes.c_uint64),
        ("nr_jited_ksyms", ctypes.c_uint32), ("nr_jited_func_lens", ctypes.c_uint32),
        ("jited_ksyms", ctypes.c_uint64), ("jited_func_lens", ctypes.c_uint64), ("btf_id", ctypes.c_uint32),
        ("func_info_rec_size", ctypes.c_uint32), ("func_info", ctypes.c_uint64),
        ("nr_func_info", ctypes.c_uint32), ("nr_line_info", ctypes.c_uint32), ("line_info", ctypes.c_uint64),
        ("jited_line_info", ctypes.c_uint64), ("nr_jited_line_info", ctypes.c_uint32),
        ("line_info_rec_size", ctypes.c_uint32), ("jited_line_info_rec_size", ctypes.c_uint32),
        ("nr_prog_tags", ctypes.c_uint32), ("prog_tags", ctypes.c_uint64), ("run_time_ns", ctypes.c_uint64),
        ("run_cnt", ctypes.c_uint64), ("recursion_misses", ctypes.c_uint64),
    ]


def prog_info(fd):
    """The kernel's bpf_prog_info of a program fd, and how many bytes of it the kernel filled."""
    info = ProgInfo()
    attr = _InfoAttr(bpf_fd=fd, info_len=ctypes.sizeof(info), info=ctypes.addressof(info))
    err = _bpf(BPF_OBJ_GET_INFO_BY_FD, attr)
    if err:
        raise OSError(err, "BPF_OBJ_GET_INFO_BY_FD: " + os.strerror(err))
    return info, attr.info_len


def recursion_misses(fd):
    """Runs of the program the kernel skipped because it would have nested (None before Linux 5.12)."""
    info, filled = prog_info(fd)
    if filled < ProgInfo.recursion_misses.offset + 8:
        return None
    return info.recursion_misses


def run_raw_tracepoint(prog_fd, args):
    """Run a raw tracepoint program once with ctx->args = args (u64s, at most 12), in the calling thread
    (BPF_PROG_TEST_RUN, Linux 5.10+). Returns its return value; raises OSError where the kernel refuses."""
    ctx = (ctypes.c_uint64 * len(args))(*args)
    attr = _TestRunAttr(prog_fd=prog_fd, ctx_in=ctypes.addressof(ctx), ctx_size_in=ctypes.sizeof(ctx))
    err = _bpf(BPF_PROG_TEST_RUN, attr)
    if err:
        raise OSError(err, "BPF_PROG_TEST_RUN: " + os.strerror(err))
    return attr.retval


class _IterCreateAttr(ctypes.Structure):
    _fields_ = [("link_fd", ctypes.c_uint32), ("flags", ctypes.c_uint32)]


def run_iterator(link_fd, chunk=1 << 16):
    """Run a BPF iterator once: create it from its link (BPF_ITER_CREATE: in the calling thread's network
    namespace, for the namespaced ones) and read it to the end. Raises OSError where the kernel refuses."""
    ret = _libc.syscall(_NR_BPF, BPF_ITER_CREATE, ctypes.byref(_IterCreateAttr(link_fd=link_fd)),
                        ctypes.sizeof(_IterCreateAttr))
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, "BPF_ITER_CREATE: " + os.strerror(err))
    try:
        while os.read(ret, chunk):
            pass
    finally:
        os.close(ret)


def keys(fd, key_size, most):
    """The keys (bytes) of a hash map of at most `most` entries, one BPF_MAP_GET_NEXT_KEY a key. A key deleted
    meanwhile makes the kernel start over from the first: bounded, and each key listed once."""
    out = {}
    key = ctypes.create_string_buffer(key_size)
    nxt = ctypes.create_string_buffer(key_size)
    attr = _ElemAttr(map_fd=fd, key=0, value=ctypes.addressof(nxt))
    for _ in range(2 * most):
        if _bpf(BPF_MAP_GET_NEXT_KEY, attr) != 0:
            break
        out[nxt.raw] = None
        ctypes.memmove(key, nxt, key_size)
        attr.key = ctypes.addressof(key)
    return list(out)


def _bpf(cmd, attr):
    ret = _libc.syscall(_NR_BPF, cmd, ctypes.byref(attr), ctypes.sizeof(attr))
    return 0 if ret >= 0 else ctypes.get_errno()


def possible_cpus(path="/sys/devices/system/cpu/possible"):
    """How many values a per-CPU map holds per key: the kernel's possible CPUs ('0-3', '0,2-5')."""
    with open(path) as f:
        text = f.read().strip()
    top = 0
    for part in text.split(","):
        top = max(top, int(part.split("-")[-1]))
    return top + 1


def lookup(fd, key, value_size):
    """The value (bytes) stored under key (bytes), or None."""
    kb = ctypes.create_string_buffer(key, len(key))
    vb = ctypes.create_string_buffer(value_size)
    err = _bpf(BPF_MAP_LOOKUP_ELEM, _ElemAttr(map_fd=fd, key=ctypes.addressof(kb), value=ctypes.addressof(vb)))
    return None if err else vb.raw


def delete(fd, key):
    """Delete key (bytes); False if it was not there."""
    kb = ctypes.create_string_buffer(key, len(key))
    return _bpf(BPF_MAP_DELETE_ELEM, _ElemAttr(map_fd=fd, key=ctypes.addressof(kb))) == 0


def update(fd, key, value, flags=0):
    """flags: BPF_ANY (0), BPF_NOEXIST (1: fail with EEXIST if the key is there), BPF_EXIST (2)."""
    kb = ctypes.create_string_buffer(key, len(key))
    vb = ctypes.create_string_buffer(value, len(value))
    err = _bpf(BPF_MAP_UPDATE_ELEM, _ElemAttr(map_fd=fd, key=ctypes.addressof(kb), value=ctypes.addressof(vb),
                                              flags=flags))
    if err:
        raise OSError(err, "BPF_MAP_UPDATE_ELEM: " + os.strerror(err))


class HashMap:
    """A BPF hash map of fixed-size keys and u64 values."""

    def __init__(self, fd, key_size, chunk=1024):
        self.fd = fd
        self.key_size = key_size
        self.chunk = chunk
        self._keys = ctypes.create_string_buffer(key_size * chunk)
        self._values = (ctypes.c_uint64 * chunk)()
        self._token = ctypes.create_string_buffer(key_size)  # hash maps use a u32 bucket index; room to spare
        self.batch = True

    def items(self):
        """All (key bytes, value) pairs. Entries added meanwhile may or may not be seen."""
        if self.batch:
            try:
                return self._items_batch()
            except OSError as e:
                if e.errno not in (errno.EINVAL, errno.EOPNOTSUPP, _ENOTSUPP):
                    raise
                self.batch = False
        return self._items_iter()

    def _items_batch(self):
        out = []
        attr = _BatchAttr(map_fd=self.fd, out_batch=ctypes.addressof(self._token),
                          keys=ctypes.addressof(self._keys), values=ctypes.addressof(self._values))
        first = True
        while True:
            attr.in_batch = 0 if first else ctypes.addressof(self._token)
            attr.count = self.chunk
            err = _bpf(BPF_MAP_LOOKUP_BATCH, attr)
            if err not in (0, errno.ENOENT):
                raise OSError(err, "BPF_MAP_LOOKUP_BATCH: " + os.strerror(err))
            raw = self._keys.raw
            for i in range(attr.count):
                out.append((raw[i * self.key_size:(i + 1) * self.key_size], self._values[i]))
            if err == errno.ENOENT:
                return out
            first = False

    def _items_iter(self):
        out = []
        key = ctypes.create_string_buffer(self.key_size)
        nxt = ctypes.create_string_buffer(self.key_size)
        value = ctypes.c_uint64()
        attr = _ElemAttr(map_fd=self.fd, key=0, value=ctypes.addressof(nxt))
        while _bpf(BPF_MAP_GET_NEXT_KEY, attr) == 0:
            ctypes.memmove(key, nxt, self.key_size)
            get = _ElemAttr(map_fd=self.fd, key=ctypes.addressof(key), value=ctypes.addressof(value))
            if _bpf(BPF_MAP_LOOKUP_ELEM, get) == 0:
                out.append((key.raw, value.value))
            attr.key = ctypes.addressof(key)
        return out

    def delete(self, keys):
        """Delete the given keys (bytes). Keys already gone are ignored."""
        for start in range(0, len(keys), self.chunk):
            part = keys[start:start + self.chunk]
            buf = ctypes.create_string_buffer(b"".join(part), self.key_size * len(part))
            if self.batch:
                attr = _BatchAttr(map_fd=self.fd, keys=ctypes.addressof(buf), count=len(part))
                err = _bpf(BPF_MAP_DELETE_BATCH, attr)
                if err == 0:
                    continue
                # ENOENT stops the batch at a missing key: finish one by one
                part = part[attr.count:]
            for k in part:
                kb = ctypes.create_string_buffer(k, self.key_size)
                _bpf(BPF_MAP_DELETE_ELEM, _ElemAttr(map_fd=self.fd, key=ctypes.addressof(kb)))


class WakeRing:
    """A BPF ring buffer (BPF_MAP_TYPE_RINGBUF) whose records are never read: that it holds any is the news.

    The kernel maps its consumer position read-write at page 0 and its producer position read-only at page 1.
    fileno() polls readable while the producer is ahead of the consumer; discard() moves the consumer up to the
    producer, and the next record made after that wakes a poller again (the kernel notifies when a record
    lands in an empty ring)."""

    def __init__(self, fd):
        self.fd = fd
        page = mmap.PAGESIZE
        self._consumer = mmap.mmap(fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self._producer = mmap.mmap(fd, page, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)

    def fileno(self):
        return self.fd

    def pending(self):
        """True if records were made since the last discard()."""
        return struct.unpack_from("Q", self._producer, 0)[0] != struct.unpack_from("Q", self._consumer, 0)[0]

    def discard(self):
        struct.pack_into("Q", self._consumer, 0, struct.unpack_from("Q", self._producer, 0)[0])


class EventRing:
    """A BPF ring buffer (BPF_MAP_TYPE_RINGBUF) of fixed-size records, read without bcc, by mmap.

    Layout (kernel/bpf/ringbuf.c): the consumer position read-write at page 0; the producer position and, from
    the next page on, the data pages mapped twice in a row, read-only, so a record that wraps is contiguous.
    Each record starts with an 8-byte header: its length with BUSY (bit 31: still being written) and DISCARD
    (bit 30) flags, then the page offset; records are 8-byte aligned. fileno() polls readable while records wait."""

    BUSY, DISCARD = 1 << 31, 1 << 30

    def __init__(self, fd, size):
        self.fd = fd
        self.size = size  # bytes of data, a power of 2 pages
        page = mmap.PAGESIZE
        self._consumer = mmap.mmap(fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self._data = mmap.mmap(fd, page + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
        self._page = page

    def fileno(self):
        return self.fd

    def read(self, most=None):
        """The records (bytes) written since the last read, oldest first, up to `most`; frees their room."""
        out = []
        consumer = struct.unpack_from("Q", self._consumer, 0)[0]
        producer = struct.unpack_from("Q", self._data, 0)[0]
        mask = self.size - 1
        while consumer < producer and (most is None or len(out) < most):
            at = self._page + (consumer & mask)
            header = struct.unpack_from("I", self._data, at)[0]
            if header & self.BUSY:  # reserved, not yet submitted: the next read takes it
                break
            length = header & ~(self.BUSY | self.DISCARD)
            if not header & self.DISCARD:
                out.append(self._data[at + 8:at + 8 + length])
            consumer += (length + 8 + 7) & ~7
        struct.pack_into("Q", self._consumer, 0, consumer)
        return out

    def close(self):
        self._consumer.close()
        self._data.close()
