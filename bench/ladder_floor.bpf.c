/* The floor of each send/recv rung of errnomon's hook ladder (monitor/loader.py SIGNALS): programs that do
 * nothing, on the same hooks errnomon's programs of that rung use. bench/ladder.py loads this once and
 * attaches one rung's programs at a time; what errnomon costs above them is its own code.
 *
 * Defined by bench/ladder.py for each function the running kernel has:
 *   RAW_TRACEPOINTS       sock:sock_send_length and sock:sock_recv_length (6.3+)
 *   FEXIT_<function>      an fexit program (BPF trampoline)
 *   KRETPROBE_<function>  an entry kprobe and a kretprobe, as errnomon's kretprobe rung has
 * Each function is written out: bcc 0.18 registers only the first function of a macro expansion.
 */
#include <uapi/linux/ptrace.h>

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
int floor_entry__inet_sendmsg(struct pt_regs *ctx) { return 0; }
int floor_return__inet_sendmsg(struct pt_regs *ctx) { return 0; }
#endif
#ifdef KRETPROBE_inet6_sendmsg
int floor_entry__inet6_sendmsg(struct pt_regs *ctx) { return 0; }
int floor_return__inet6_sendmsg(struct pt_regs *ctx) { return 0; }
#endif
#ifdef KRETPROBE_inet_sendpage
int floor_entry__inet_sendpage(struct pt_regs *ctx) { return 0; }
int floor_return__inet_sendpage(struct pt_regs *ctx) { return 0; }
#endif
#ifdef KRETPROBE_inet_recvmsg
int floor_entry__inet_recvmsg(struct pt_regs *ctx) { return 0; }
int floor_return__inet_recvmsg(struct pt_regs *ctx) { return 0; }
#endif
#ifdef KRETPROBE_inet6_recvmsg
int floor_entry__inet6_recvmsg(struct pt_regs *ctx) { return 0; }
int floor_return__inet6_recvmsg(struct pt_regs *ctx) { return 0; }
#endif
