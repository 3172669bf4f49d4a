"""The hook ladder (monitor/loader.py SIGNALS, choose_hooks): which hook each signal takes on a kernel.

The kernels are described as the loader sees them (Facts); their shapes are those of the kernel-matrix guests'
own BTF and tracefs (Debian 11's 5.10, Debian 12's 6.1, this host's 6.18), where tests/kernels/ runs them."""

import logging

import pytest

from monitor import loader

ALL_TRACEPOINTS = set(loader.PROBES)
# arguments of the raw tracepoints on 6.10+, and of the kernel functions on 5.10-6.4 (BTF)
ARGS = dict(loader.RAW_ARITY, **{"tcp:tcp_send_reset": 3})
FUNCTIONS = {"inet_sendmsg": 3, "inet6_sendmsg": 3, "inet_sendpage": 5, "inet_recvmsg": 4, "inet6_recvmsg": 4,
             "tcp_v4_send_reset": 2, "tcp_v6_send_reset": 2, "sock_def_error_report": 1}
LAYOUT = {"OFF_SOCKET_SK", "OFF_SOCK_SK_ERR", "OFF_SK_BUFF_HEAD", "OFF_SK_BUFF_NETWORK_HEADER",
          "OFF_SK_BUFF_TRANSPORT_HEADER"} | {loader.layout_name(*m) for m in loader.FD_LAYOUT}


def kernel(missing=(), args=None, functions=None, btf=True, kprobes=True, layout=LAYOUT):
    tracepoints = ALL_TRACEPOINTS - set(missing)
    return loader.Facts(tracepoints, {p: n for p, n in (args or ARGS).items() if p in tracepoints},
                        FUNCTIONS if functions is None else functions, btf, kprobes, set(layout))


V6_18 = kernel()
V6_1 = kernel(missing={"sock:sock_send_length", "sock:sock_recv_length"}, args=dict(ARGS, **{"tcp:tcp_send_reset": 2}))
V5_10 = V6_1._replace(tracepoints=V6_1.tracepoints - {"sock:inet_sk_error_report"})


def hooks(chosen):
    return {signal: [loader.hook_label(hook.kind, t) for t in targets] for signal, (hook, targets) in chosen.items()}


def test_a_kernel_with_every_tracepoint_uses_only_tracepoints():
    chosen, why = loader.choose_hooks(V6_18, syscalls=True)
    assert set(chosen) == set(loader.SIGNAL_NAMES) - loader.EVENT_FACTS  # FUNCTIONS has no TTL function
    assert all(hook.kind == loader.TRACEPOINT for hook, _ in chosen.values())
    assert hooks(chosen)["resets_sent_without_socket"] == ["tcp:tcp_send_reset"]
    assert why == {"peer_ttl": "no function tcp_init_transfer", "reset_ttl": "no function tcp_reset"}
    assert loader.hook_flags(chosen, V6_18) == []


# the TTL functions' arguments on 5.12+ (tcp_reset(sk, skb)) and on 5.10 (tcp_reset(sk))
TTL_FUNCTIONS = {"tcp_init_transfer": 3, "tcp_reset": 2}


def test_event_ttls_come_from_kprobes_only_once_per_connection_and_reset():
    with_ttl = V6_18._replace(functions=dict(FUNCTIONS, **TTL_FUNCTIONS))
    chosen, why = loader.choose_hooks(with_ttl)
    assert hooks(chosen)["peer_ttl"] == ["kprobe:tcp_init_transfer"]
    assert hooks(chosen)["reset_ttl"] == ["kprobe:tcp_reset"]
    assert loader.hook_flags(chosen, with_ttl) == ["-DKPROBE_tcp_init_transfer=1", "-DKPROBE_tcp_reset=1"]
    # 5.10: tcp_reset has no segment; a kernel without kprobes (this project's CI host): neither, told not warned
    chosen, why = loader.choose_hooks(V5_10._replace(functions=dict(FUNCTIONS, tcp_init_transfer=3, tcp_reset=1)))
    assert hooks(chosen)["peer_ttl"] == ["kprobe:tcp_init_transfer"] and "reset_ttl" not in chosen
    assert why["reset_ttl"] == "function tcp_reset has 1 arguments, 2 needed"
    chosen, why = loader.choose_hooks(with_ttl._replace(kprobes=False))
    assert not loader.EVENT_FACTS & set(chosen)
    assert why["peer_ttl"] == why["reset_ttl"] == "no kprobes in this kernel (CONFIG_KPROBES)"
    lines = dict((text.split(":")[0], level) for level, text in loader.describe_choice(chosen, why))
    assert lines["peer_ttl"] == lines["reset_ttl"] == logging.INFO
    chosen, why = loader.choose_hooks(with_ttl._replace(layout=LAYOUT - {"OFF_SK_BUFF_NETWORK_HEADER"}))
    assert why["reset_ttl"] == "kprobe needs sk_buff.network_header from kernel BTF"


def test_6_1_uses_fexit_for_send_and_recv_and_fentry_for_socketless_resets():
    chosen, why = loader.choose_hooks(V6_1)
    h = hooks(chosen)
    assert h["send_errors"] == ["fexit:inet_sendmsg", "fexit:inet6_sendmsg", "fexit:inet_sendpage"]
    assert h["recv_errors"] == ["fexit:inet_recvmsg", "fexit:inet6_recvmsg"]
    assert h["resets_sent_without_socket"] == ["fentry:tcp_v4_send_reset", "fentry:tcp_v6_send_reset"]
    assert h["error_reports"] == ["sock:inet_sk_error_report"]
    assert h["resets_sent"] == ["tcp:tcp_send_reset"]  # full sockets: the tracepoint, as before
    assert why["send_errors"] == "no tracepoint sock:sock_send_length"
    assert why["resets_sent_without_socket"] == "tracepoint tcp:tcp_send_reset has 2 arguments, 3 needed"
    # the fexit programs read the return value at ctx[arguments]
    assert loader.hook_flags(chosen, V6_1) == [
        "-DFENTRY_tcp_v4_send_reset=1", "-DFENTRY_tcp_v6_send_reset=1", "-DFEXIT_inet6_recvmsg=4",
        "-DFEXIT_inet6_sendmsg=3", "-DFEXIT_inet_recvmsg=4", "-DFEXIT_inet_sendmsg=3", "-DFEXIT_inet_sendpage=5"]
    assert "connect_errors" not in chosen and "connect_errors" not in why  # opt-in, not asked for


def test_5_10_reports_errors_through_sock_def_error_report():
    chosen, why = loader.choose_hooks(V5_10)
    assert hooks(chosen)["error_reports"] == ["fentry:sock_def_error_report"]
    assert why["error_reports"] == "no tracepoint sock:inet_sk_error_report"


def test_kprobes_only():
    chosen, why = loader.choose_hooks(V5_10, families=("kprobe",))
    h = hooks(chosen)
    assert h["send_errors"] == ["kretprobe:inet_sendmsg", "kretprobe:inet6_sendmsg", "kretprobe:inet_sendpage"]
    assert h["error_reports"] == ["kprobe:sock_def_error_report"]
    assert h["resets_sent_without_socket"] == ["kprobe:tcp_v4_send_reset", "kprobe:tcp_v6_send_reset"]
    assert why["send_errors"] == "no tracepoint sock:sock_send_length; fentry hooks not allowed (kernel.function_hooks)"
    assert "-DKRETPROBE_inet_sendmsg=1" in loader.hook_flags(chosen, V5_10)


def test_no_rung_left_names_every_reason_and_what_is_lost():
    chosen, why = loader.choose_hooks(V5_10._replace(kprobes=False), families=("kprobe",))
    assert "send_errors" not in chosen
    assert why["send_errors"] == ("no tracepoint sock:sock_send_length; fentry hooks not allowed "
                                  "(kernel.function_hooks); no kprobes in this kernel (CONFIG_KPROBES); "
                                  "syscall tracepoints off (kernel.syscall_tracepoints)")
    lines = dict((text.split(":")[0], (level, text)) for level, text in loader.describe_choice(chosen, why))
    level, text = lines["send_errors"]
    assert level == logging.WARNING
    assert "errors returned by send/write/sendfile (op=send) and socket SIGPIPE are not counted" in text
    report = loader.attachment_report(chosen, syscalls=False)
    assert report["send_errors"] == [("sock:sock_send_length", False)]
    assert report["recv_errors"] == [("sock:sock_recv_length", False)]
    assert "connect_errors" not in report


def test_fexit_needs_btf_and_kretprobe_does_not():
    no_btf = V6_1._replace(btf=False, functions={name: None for name in FUNCTIONS})
    chosen, why = loader.choose_hooks(no_btf)
    assert hooks(chosen)["send_errors"][0] == "kretprobe:inet_sendmsg"
    assert why["send_errors"] == "no tracepoint sock:sock_send_length; fexit needs kernel BTF"


def test_function_hooks_need_their_offsets():
    chosen, why = loader.choose_hooks(V6_1._replace(layout=LAYOUT - {"OFF_SOCKET_SK"}))
    assert "send_errors" not in chosen
    assert "fexit needs socket.sk from kernel BTF" in why["send_errors"]


def test_an_optional_function_may_be_missing_a_required_one_may_not():
    after_6_5 = dict(FUNCTIONS)
    del after_6_5["inet_sendpage"]  # sendpage is gone from 6.5
    chosen, _ = loader.choose_hooks(V6_1._replace(functions=after_6_5))
    assert hooks(chosen)["send_errors"] == ["fexit:inet_sendmsg", "fexit:inet6_sendmsg"]
    no_v6 = dict(FUNCTIONS)
    del no_v6["inet6_recvmsg"]
    chosen, why = loader.choose_hooks(V6_1._replace(functions=no_v6))
    assert "recv_errors" not in chosen  # an IPv4-only hook would count half the errors
    assert why["recv_errors"] == ("no tracepoint sock:sock_recv_length; no function inet6_recvmsg; "
                                  "no function inet6_recvmsg; syscall tracepoints off (kernel.syscall_tracepoints)")


def test_a_function_with_fewer_arguments_is_not_hooked():
    chosen, why = loader.choose_hooks(V6_1._replace(functions=dict(FUNCTIONS, inet_recvmsg=3)), families=("fentry",))
    assert "recv_errors" not in chosen
    assert why["recv_errors"] == ("no tracepoint sock:sock_recv_length; function inet_recvmsg has 3 arguments, "
                                  "4 needed; kprobe hooks not allowed (kernel.function_hooks); syscall tracepoints "
                                  "off (kernel.syscall_tracepoints)")


@pytest.mark.parametrize("signal", loader.SIGNALS, ids=lambda s: s.name)
def test_every_rung_is_a_known_kind_with_known_targets(signal):
    for hook in signal.rungs:
        assert hook.kind in (loader.TRACEPOINT,) + tuple(loader.FAMILY)
        for target in hook.targets:
            if hook.kind in (loader.TRACEPOINT, loader.SYSCALLS):
                assert loader.bare(target) in loader.PROBES
            else:
                assert loader.bare(target) in loader.FUNCTION_ARITY
    # a tracepoint first: the cheapest, the stable interface; event facts have none on any kernel
    assert signal.rungs[0].kind == (loader.KPROBE if signal.name in loader.EVENT_FACTS else loader.TRACEPOINT)


def test_the_syscall_rung_is_the_last_and_opt_in():
    no_functions = V6_1._replace(kprobes=False, btf=False, functions={})
    chosen, why = loader.choose_hooks(no_functions, syscalls=True)
    assert hooks(chosen)["send_errors"] == ["syscalls:sys_%s_%s" % (edge, call) for call in loader.SEND_SYSCALLS
                                            for edge in ("enter", "exit")]
    assert "-DSYSCALLS_SEND_ERRORS=1" in loader.hook_flags(chosen, no_functions)
    assert "syscalls:sys_exit_recvfrom" in loader.chosen_tracepoints(chosen)
    lines = [text for _, text in loader.describe_choice(chosen, why)]
    assert ("send_errors: syscalls:sys_enter_*/sys_exit_* of sendto, sendmsg, sendmmsg, write, writev, sendfile64 "
            "(no tracepoint sock:sock_send_length; fexit needs kernel BTF; no kprobes in this kernel "
            "(CONFIG_KPROBES))") in lines
    # it needs the file-table offsets to tell sockets from pipes
    chosen, why = loader.choose_hooks(no_functions._replace(layout=LAYOUT - {"OFF_INODE_I_MODE"}), syscalls=True)
    assert "send_errors" not in chosen
    assert why["send_errors"].endswith("syscall tracepoints need OFF_INODE_I_MODE from kernel BTF")
    # a kernel with fexit never takes it
    chosen, _ = loader.choose_hooks(V6_1, syscalls=True)
    assert hooks(chosen)["send_errors"][0] == "fexit:inet_sendmsg"


@pytest.mark.parametrize("version,old", [("0.18.0+ds-2", False), ("0.31.0", False), ("0.12.0-2", True),
                                         ("0.9.0", True), ("unknown", False), (None, False)])
def test_bcc_older_than_the_oldest_tested_is_named(version, old):
    assert loader.bcc_too_old(version) is old
