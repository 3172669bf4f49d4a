/* The floor of each send/recv rung of errnomon's hook ladder (monitor/loader.py SIGNALS): programs that do
 * nothing, on the same hooks errnomon's programs of that rung use. bench/ladder.py loads this once and
 * attaches one rung's programs at a time; what errnomon costs above them is its own code.
 *
 * Defined by bench/ladder.py for each function the running kernel has:
 *   RAW_TRACEPOINTS       sock:sock_send_length and sock:sock_recv_length (6.3+)
 *   FEXIT_<function>      an fexit program (BPF trampoline)
 *   KRETPROBE_<function>  an entry kprobe and a kretprobe, as errnomon's kretprobe rung has
 * and, for the kprobes, what they do on the success path:
 *   (nothing)      empty: the floor
 *   STASH_LRU      what errnomon's kretprobe rung does there (bpf/errnomon.bpf.c socket_call_entry/_return):
 *                  the entry stores the struct socket by thread id in an LRU hash, the return looks it up and
 *                  deletes it, then returns at once for ret >= 0
 *   STASH_INPLACE  a cheaper way to the same: the entry writes through the pointer lookup() gives when the
 *                  thread has an entry already (update() only for a thread new to the map), the return only
 *                  looks up; entries of threads that are gone age out of the LRU hash
 * Each function is written out: bcc 0.18 registers only the first function of a macro expansion.
 */
#include <uapi/linux/ptrace.h>

#if defined(STASH_LRU) || defined(STASH_INPLACE)
BPF_TABLE("lru_hash", u32, u64, socket_calls, 16384);

static __always_inline int stash_entry(struct pt_regs *ctx)
{
    u32 tid = bpf_get_current_pid_tgid();
    u64 sock = PT_REGS_PARM1(ctx);
#ifdef STASH_INPLACE
    u64 *slot = socket_calls.lookup(&tid);
    if (slot) {
        *slot = sock;
        return 0;
    }
#endif
    socket_calls.update(&tid, &sock);
    return 0;
}

static __always_inline int stash_return(struct pt_regs *ctx)
{
    u32 tid = bpf_get_current_pid_tgid();
    u64 *sock = socket_calls.lookup(&tid), s;
    int ret = (int)PT_REGS_RC(ctx);
    if (!sock)
        return 0;
    s = *sock;
#ifdef STASH_LRU
    socket_calls.delete(&tid);
#endif
    if (ret >= 0)
        return 0;
    return s != 0;  /* errnomon counts the error here */
}
#define ENTRY(ctx) stash_entry(ctx)
#define RETURN(ctx) stash_return(ctx)
#else
#define ENTRY(ctx) 0
#define RETURN(ctx) 0
#endif

#ifdef RAW_TRACEPOINTS
RAW_TRACEPOINT_PROBE(sock_send_length) { return 0; }
RAW_TRACEPOINT_PROBE(sock_recv_length) { return 0; }
#endif

#ifdef FEXIT_inet_sendmsg
KRETFUNC_PROBE(inet_sendmsg, void *sock) { return 0; }
#endif
#ifdef FEXIT_inet6_sendmsg
KRETFUNC_PROBE(inet6_sendmsg, void *sock) { return 0; }
#endif
#ifdef FEXIT_inet_sendpage
KRETFUNC_PROBE(inet_sendpage, void *sock) { return 0; }
#endif
#ifdef FEXIT_inet_recvmsg
KRETFUNC_PROBE(inet_recvmsg, void *sock) { return 0; }
#endif
#ifdef FEXIT_inet6_recvmsg
KRETFUNC_PROBE(inet6_recvmsg, void *sock) { return 0; }
#endif

#ifdef KRETPROBE_inet_sendmsg
int floor_entry__inet_sendmsg(struct pt_regs *ctx) { return ENTRY(ctx); }
int floor_return__inet_sendmsg(struct pt_regs *ctx) { return RETURN(ctx); }
#endif
#ifdef KRETPROBE_inet6_sendmsg
int floor_entry__inet6_sendmsg(struct pt_regs *ctx) { return ENTRY(ctx); }
int floor_return__inet6_sendmsg(struct pt_regs *ctx) { return RETURN(ctx); }
#endif
#ifdef KRETPROBE_inet_sendpage
int floor_entry__inet_sendpage(struct pt_regs *ctx) { return ENTRY(ctx); }
int floor_return__inet_sendpage(struct pt_regs *ctx) { return RETURN(ctx); }
#endif
#ifdef KRETPROBE_inet_recvmsg
int floor_entry__inet_recvmsg(struct pt_regs *ctx) { return ENTRY(ctx); }
int floor_return__inet_recvmsg(struct pt_regs *ctx) { return RETURN(ctx); }
#endif
#ifdef KRETPROBE_inet6_recvmsg
int floor_entry__inet6_recvmsg(struct pt_regs *ctx) { return ENTRY(ctx); }
int floor_return__inet6_recvmsg(struct pt_regs *ctx) { return RETURN(ctx); }
#endif
