"""What the loader derives from the running kernel before compiling: BTF offsets, prototypes, port range."""

import struct

import pytest

from monitor import btf, loader

from .test_btf import Builder


@pytest.fixture(scope="module")
def kernel():
    b = btf.BTF.load()
    assert b is not None, "this kernel has no BTF at %s" % btf.VMLINUX
    return b


def flag_values(flags):
    return dict(f[2:].split("=", 1) for f in flags if f.startswith("-D") and "=" in f)


def test_layout_flags_of_this_kernel(kernel):
    flags, lost = loader.layout_flags(kernel)
    assert lost == []
    values = flag_values(flags)
    assert values == {
        "OFF_SOCK_COMMON_SKC_V6_DADDR": str(kernel.member_offset("sock_common", "skc_v6_daddr")),
        "OFF_SOCK_COMMON_SKC_COOKIE": str(kernel.member_offset("sock_common", "skc_cookie")),  # seeded owners
        "OFF_SOCKET_SK": str(kernel.member_offset("socket", "sk")),  # send/recv function hooks (before 6.3)
        # the syscall rung of send/recv: an fd's socket through the task's file table
        "OFF_TASK_STRUCT_FILES": str(kernel.member_offset("task_struct", "files")),
        "OFF_FILES_STRUCT_FDT": str(kernel.member_offset("files_struct", "fdt")),
        "OFF_FDTABLE_MAX_FDS": str(kernel.member_offset("fdtable", "max_fds")),
        "OFF_FDTABLE_FD": str(kernel.member_offset("fdtable", "fd")),
        "OFF_FILE_F_INODE": str(kernel.member_offset("file", "f_inode")),
        "OFF_FILE_PRIVATE_DATA": str(kernel.member_offset("file", "private_data")),
        "OFF_INODE_I_MODE": str(kernel.member_offset("inode", "i_mode")),
        "OFF_SOCK_SK_PROTOCOL": str(kernel.member_offset("sock", "sk_protocol")),
        "SK_PROTOCOL_TYPE": "u16",
        "OFF_SOCK_SK_ERR": str(kernel.member_offset("sock", "sk_err")),
        "OFF_SK_BUFF_HEAD": str(kernel.member_offset("sk_buff", "head")),
        "OFF_SK_BUFF_NETWORK_HEADER": str(kernel.member_offset("sk_buff", "network_header")),
        "OFF_SK_BUFF_TRANSPORT_HEADER": str(kernel.member_offset("sk_buff", "transport_header")),
        "OFF_SOCK_SK_ERR_SOFT": str(kernel.member_offset("sock", "sk_err_soft")),
        "OFF_SOCK_SK_ERROR_QUEUE": str(kernel.member_offset("sock", "sk_error_queue")),
        "OFF_SOCK_SK_ERROR_QUEUE_PREV": str(kernel.member_offset("sock", "sk_error_queue")
                                            + kernel.member_offset("sk_buff_head", "prev")),
        "OFF_SOCK_SK_LOCK_OWNED": str(kernel.member_offset("sock", "sk_lock.owned")),  # socket_lock_t: a typedef
        "OFF_INET_CONNECTION_SOCK_ICSK_PENDING": str(kernel.member_offset("inet_connection_sock", "icsk_pending")),
        "OFF_SK_BUFF_CB": str(kernel.member_offset("sk_buff", "cb")),
        "OFF_SOCK_EXTERR_SKB_EE_EE_ERRNO": str(kernel.member_offset("sock_exterr_skb", "ee")
                                               + kernel.member_offset("sock_extended_err", "ee_errno")),
        "OFF_TASK_STRUCT_SPLICE_PIPE": str(kernel.member_offset("task_struct", "splice_pipe")),
        "OFF_PIPE_INODE_INFO_TAIL": str(kernel.member_offset("pipe_inode_info", "tail")),
        "PIPE_INDEX_TYPE": "u32",  # pipe_index_t on 64-bit kernels, unsigned int before it existed
        "OFF_INET_SOCK_INET_SPORT": str(kernel.member_offset("inet_sock", "inet_sport")),
        # listen drops: the listener's drop counter, and (6.18) its per-NUMA-node part
        "OFF_SOCK_SK_DROPS": str(kernel.member_offset("sock", "sk_drops")),
        "OFF_SOCK_SK_DROP_COUNTERS": str(kernel.member_offset("sock", "sk_drop_counters")),
        "OFF_NUMA_DROP_COUNTERS_DROPS0": str(kernel.member_offset("numa_drop_counters", "drops0")),
        "OFF_NUMA_DROP_COUNTERS_DROPS1": str(kernel.member_offset("numa_drop_counters", "drops1")),
        # unix sockets: the type, and the peer's path (unix_sock->peer->addr->name; name is sockaddr_un[])
        "OFF_SOCK_SK_TYPE": str(kernel.member_offset("sock", "sk_type")),
        "OFF_UNIX_SOCK_PEER": str(kernel.member_offset("unix_sock", "peer")),
        "OFF_UNIX_SOCK_ADDR": str(kernel.member_offset("unix_sock", "addr")),
        "OFF_UNIX_ADDRESS_LEN": "4",
        "OFF_UNIX_ADDRESS_NAME": "8",
        # error events: the local IPv6 address and the tcp_sock's own facts
        "OFF_SOCK_COMMON_SKC_V6_RCV_SADDR": str(kernel.member_offset("sock_common", "skc_v6_rcv_saddr")),
        "OFF_TCP_SOCK_LSNDTIME": str(kernel.member_offset("tcp_sock", "lsndtime")),
        "OFF_TCP_SOCK_RCV_TSTAMP": str(kernel.member_offset("tcp_sock", "rcv_tstamp")),
        "OFF_INET_CONNECTION_SOCK_ICSK_ACK_LRCVTIME": str(kernel.member_offset("inet_connection_sock",
                                                                               "icsk_ack.lrcvtime")),
        "OFF_TCP_SOCK_BYTES_SENT": str(kernel.member_offset("tcp_sock", "bytes_sent")),
        "OFF_TCP_SOCK_BYTES_ACKED": str(kernel.member_offset("tcp_sock", "bytes_acked")),
        "OFF_TCP_SOCK_BYTES_RECEIVED": str(kernel.member_offset("tcp_sock", "bytes_received")),
        "OFF_TCP_SOCK_TOTAL_RETRANS": str(kernel.member_offset("tcp_sock", "total_retrans")),
        "OFF_TCP_SOCK_SRTT_US": str(kernel.member_offset("tcp_sock", "srtt_us")),
    }
    # not what the 6.1 headers bcc compiles with say (sk_err is 544 there): the running kernel's
    assert values["OFF_SOCK_SK_ERR"] != "544"


def test_without_btf_everything_lost_is_named():
    flags, lost = loader.layout_flags(None)
    assert flags == []
    assert len(lost) == 15
    assert any("error events carry no idle times" in line for line in lost)
    assert any("listen drops are read by polling" in line for line in lost)
    assert any("IPv6" in line for line in lost)
    assert any("opened before errnomon started" in line for line in lost)
    assert any("connect failures" in line for line in lost)
    assert any("sendfile()" in line for line in lost)
    assert any("took (SO_ERROR)" in line for line in lost)
    # and the error-report programs, which need sk_err, are not compiled on any rung
    kernel = loader.facts(None, {"sock:inet_sk_error_report": "x"}, None, flags)._replace(kprobes=True)
    chosen, why = loader.choose_hooks(kernel)
    assert "error_reports" not in chosen
    assert why["error_reports"] == "needs OFF_SOCK_SK_ERR from kernel BTF"


def test_pipe_index_type_follows_its_size():
    """pipe_index_t is unsigned short on 32-bit kernels: the program reads the tail at its own width."""
    b = Builder()
    u32 = b.int_("u32", 4)
    u16 = b.int_("u16", 2)
    b.struct_("sock_common", 24, [("skc_daddr", u32, 0), ("skc_dport", u16, 96), ("skc_num", u16, 112),
                                  ("skc_family", u16, 128), ("skc_state", u16, 144)])
    b.struct_("pipe_inode_info", 8, [("head", u16, 0), ("tail", u16, 16)])
    flags, _ = loader.layout_flags(btf.BTF(b.blob()))
    assert flag_values(flags)["OFF_PIPE_INODE_INFO_TAIL"] == "2"
    assert flag_values(flags)["PIPE_INDEX_TYPE"] == "u16"


def test_a_kernel_whose_sock_common_head_moved_is_refused():
    b = Builder()
    u32 = b.int_("u32", 4)
    b.struct_("sock_common", 24, [("skc_daddr", u32, 32), ("skc_dport", u32, 96), ("skc_num", u32, 112),
                                  ("skc_family", u32, 128), ("skc_state", u32, 144)])
    with pytest.raises(loader.LoadError, match="sock_common starts differently"):
        loader.layout_flags(btf.BTF(b.blob()))


def test_prototype_with_too_few_arguments_is_not_attached(kernel):
    b = Builder()
    void_ptr = b.add(btf.PTR, "", 0, 0)
    proto = b.add(btf.FUNC_PROTO, "", 1, 0, struct.pack("<II", b.s("__data"), void_ptr))
    b.add(btf.TYPEDEF, "btf_trace_inet_sock_set_state", 0, b.add(btf.PTR, "", 0, proto))
    small = btf.BTF(b.blob())
    formats = {"sock:inet_sock_set_state": "x", "tcp:tcp_receive_reset": "x"}
    # no prototype known for tcp_receive_reset in this blob: trusted; inet_sock_set_state has 0 args
    chosen, why = loader.choose_hooks(loader.facts(None, formats, small, ()))
    assert set(chosen) == {"resets_received"}
    assert why["socket_states"] == "tracepoint sock:inet_sock_set_state has 0 arguments, 3 needed"
    chosen, _ = loader.choose_hooks(loader.facts(None, formats, kernel, ()))
    assert set(chosen) == {"resets_received", "socket_states"}


def test_pairs_stay_pairs(kernel):
    chosen, why = loader.choose_hooks(loader.facts(None, {"signal:signal_generate": "x"}, kernel, ()))
    assert chosen == {}
    assert why["sigpipe"] == "no tracepoint signal:signal_deliver"


def test_send_reset_reason_from_arity(kernel):
    flags = loader.compile_flags(set(), {}, 100, 100, (), loader.send_reset_arity(kernel))
    assert "-DHAVE_TCP_SEND_RESET_REASON" in flags  # 6.10+
    assert "-DHAVE_TCP_SEND_RESET_REASON" not in loader.compile_flags(set(), {}, 100, 100, (), 2)
    # without BTF the format file decides
    fmt = {"tcp:tcp_send_reset": "\tfield:enum sk_rst_reason reason;\toffset:56;\tsize:4;\tsigned:0;\n"}
    assert "-DHAVE_TCP_SEND_RESET_REASON" in loader.compile_flags(set(), fmt, 100, 100, (), None)


@pytest.mark.parametrize("name,probe", [
    ("raw_tracepoint__tcp_send_reset", "tcp:tcp_send_reset"),
    ("raw_tracepoint__inet_sock_set_state", "sock:inet_sock_set_state"),
    ("tracepoint__syscalls__sys_exit_connect", "syscalls:sys_exit_connect"),
    ("kretfunc__inet_sendmsg", "fexit:inet_sendmsg"),              # bcc 0.18-0.22
    ("kretfunc__vmlinux__inet6_recvmsg", "fexit:inet6_recvmsg"),   # bcc 0.23+
    ("kfunc__vmlinux__tcp_v4_send_reset", "fentry:tcp_v4_send_reset"),
    ("errnomon_return__inet_sendmsg", "kretprobe:inet_sendmsg"),
    ("errnomon_kprobe__sock_def_error_report", "kprobe:sock_def_error_report"),
    ("helper", None),
])
def test_probe_of_function(name, probe):
    assert loader.probe_of_function(name) == probe


def test_every_probe_but_the_syscalls_is_raw():
    assert loader.RAW_TRACEPOINTS == {p for p in loader.PROBES if not p.startswith("syscalls:")}
    assert set(loader.RAW_ARITY) == loader.RAW_TRACEPOINTS


def test_ephemeral_ports(tmp_path, caplog):
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        expected = tuple(int(x) for x in f.read().split())
    assert loader.ephemeral_ports() == expected
    path = tmp_path / "range"
    path.write_text("32768\t60999\n")
    assert loader.ephemeral_ports(str(path)) == (32768, 60999)
    assert loader.ephemeral_ports(str(tmp_path / "missing")) == (0, 0)
    assert "cannot read" in caplog.text
