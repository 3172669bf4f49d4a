"""Batch reads and deletes on a BPF hash map by file descriptor, through the bpf(2) system call.

bcc's own batch helpers allocate max_entries keys and values on every call; a drain runs twice a second,
so this keeps one buffer per map and reuses it. Falls back to one-by-one iteration on kernels without
batch operations (before 5.6).
"""

import ctypes
import errno
import os
import platform

_NR_BPF = {"x86_64": 321, "aarch64": 280}.get(platform.machine(), 321)
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

_ENOTSUPP = 524  # kernel-internal, returned by maps without batch support
BPF_MAP_LOOKUP_ELEM = 1
BPF_MAP_UPDATE_ELEM = 2
BPF_MAP_DELETE_ELEM = 3
BPF_MAP_GET_NEXT_KEY = 4
BPF_MAP_LOOKUP_BATCH = 24
BPF_MAP_DELETE_BATCH = 27


class _ElemAttr(ctypes.Structure):
    _fields_ = [("map_fd", ctypes.c_uint32), ("pad", ctypes.c_uint32), ("key", ctypes.c_uint64),
                ("value", ctypes.c_uint64), ("flags", ctypes.c_uint64)]


class _BatchAttr(ctypes.Structure):
    _fields_ = [("in_batch", ctypes.c_uint64), ("out_batch", ctypes.c_uint64), ("keys", ctypes.c_uint64),
                ("values", ctypes.c_uint64), ("count", ctypes.c_uint32), ("map_fd", ctypes.c_uint32),
                ("elem_flags", ctypes.c_uint64), ("flags", ctypes.c_uint64)]


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
