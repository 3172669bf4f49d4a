/* errnomon: count the socket errors applications see, in the kernel, from tracepoints only.
 *
 * Rules that keep this correct on any kernel whose headers bcc happens to find:
 *  - every program that counts or keeps attribution is a raw tracepoint: the kernel skips those only on
 *    self-recursion, while perf-event tracepoints are skipped silently whenever another tracing program
 *    runs on the CPU (bpf_prog_active). Arguments come from ctx->args in the tracepoint's prototype order;
 *  - never dereference kernel structs beyond the head of struct sock_common (skc_daddr@0, skc_dport@12,
 *    skc_num@14, skc_family@16, skc_state@18) except at an OFF_* offset the loader read from the running
 *    kernel's BTF (never from the headers bcc found: they may be another kernel's);
 *  - events in softirq/timer context (RST received, error reports) are attributed through the owners map
 *    filled in process context, never to `current`;
 *  - the ret >= 0 path of send/recv returns at once: every process on the host pays for it.
 *
 * HAVE_<category>__<event> is defined by the loader for each tracepoint a signal uses on the running kernel.
 * Where a kernel lacks the tracepoint of a signal, the loader picks the next rung of its hook ladder
 * (monitor/loader.py SIGNALS) and defines FEXIT_<function>=<its argument count> (ctx[n] is the return value),
 * FENTRY_<function>, KRETPROBE_<function> or KPROBE_<function>; the programs for those are at the end.
 * MAP_SIZE, MAX_SOCKETS (owners) and SEEDED_SOCKETS size the maps. OFF_<STRUCT>_<FIELD>: byte offsets from BTF, absent without it.
 */
#include <uapi/linux/ptrace.h>
#include <linux/socket.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <linux/errno.h>

#include "errnomon.h"

#define TCP_ESTABLISHED 1
#define TCP_SYN_SENT 2
#define TCP_SYN_RECV 3
#define TCP_FIN_WAIT1 4
#define TCP_TIME_WAIT 6
#define TCP_CLOSE 7
#define TCP_CLOSING 11
#define TCP_CLOSE_WAIT 8
#define TCP_LAST_ACK 9
#define TCP_LISTEN 10
#define TCP_NEW_SYN_RECV 12
#define IPPROTO_TCP_NUM 6
#define SIGPIPE_NUM 13
#define SIGKILL_NUM 9
#define TRACE_SIGNAL_IGNORED 1
/* signal_generate and the EPIPE send that confirms it happen within one system call */
#define SIGPIPE_WINDOW_NS 10000000ULL
/* kernel-internal restart codes: the application sees EINTR or a restarted call */
#define ERESTARTSYS_NUM 512
#define ERESTART_RESTARTBLOCK_NUM 516

/* All counters, keyed by metric and label set; drained by the daemon. */
BPF_HASH(counts, struct errnomon_key, u64, MAP_SIZE);
BPF_PERCPU_ARRAY(drops, u64, METRICS); /* increments lost to a full counts map, per metric */
BPF_ARRAY(settings, struct errnomon_settings, 1);
/* Wakes a daemon that sleeps while nothing is counted: a byte per key count() makes (once per label set and
 * drain interval), never one per increment. The daemon reads none of it: it only looks whether the ring holds
 * any and empties it. Once full (256 bytes), the ring drops the rest until emptied, which is news enough. */
BPF_RINGBUF_OUTPUT(wakeups, 1);

/* Attribution state. LRU: an entry whose socket died unseen ages out instead of filling the map. */
BPF_TABLE("lru_hash", u64, struct errnomon_owner, owners, MAX_SOCKETS);
BPF_TABLE("lru_hash", u16, struct errnomon_listener, listeners, 4096);
/* Owners of the sockets that existed before errnomon started, by socket cookie: written once at start-up
 * (monitor/seed.py), read only when `owners` has no entry for a socket pointer (see owner_of). */
BPF_TABLE("lru_hash", u64, struct errnomon_owner, seeded, SEEDED_SOCKETS);
BPF_TABLE("lru_hash", u32, u64, connects, 16384);          /* tid -> sockaddr of connect() in flight */
struct generated {
    u64 ns;      /* when: a pipe's SIGPIPE must not be taken for a later socket's */
    u32 result;  /* TRACE_SIGNAL_* */
};
BPF_TABLE("lru_hash", u32, struct generated, sigpipe_generated, 4096); /* tid -> last SIGPIPE raised */
BPF_TABLE("lru_hash", u32, struct errnomon_key, sigpipe_pending, 4096); /* tgid -> SIGPIPE awaiting delivery */

static __always_inline struct errnomon_settings *get_settings(void)
{
    int zero = 0;
    return settings.lookup(&zero);
}

/* Adds n to the key's counter (of this drain generation). */
static __always_inline void count_by(struct errnomon_key *key, int metric, u64 n)
{
    u64 *value;
    int err, m = metric;
    struct errnomon_settings *s = get_settings();

    key->gen = s ? s->gen : 0;
    key->metric = metric;
    value = counts.lookup(key);
    if (value) {
        __sync_fetch_and_add(value, n);
        return;
    }
    err = counts.insert(key, &n);
    if (!err) {
        u8 made = 1;
        wakeups.ringbuf_output(&made, sizeof(made), 0);
    } else if (err == -EEXIST) {
        /* another CPU created it meanwhile */
        value = counts.lookup(key);
        if (value)
            __sync_fetch_and_add(value, n);
    } else if (err) {
        u64 *d = drops.lookup(&m);
        if (d)
            *d += n;
    }
}

static __always_inline void count(struct errnomon_key *key, int metric)
{
    count_by(key, metric, 1);
}

/* Errors that are part of normal non-blocking or interrupted I/O, dropped unless asked for.
 * Returns the errno to count, or 0 to drop. */
static __always_inline int countable(int err)
{
    struct errnomon_settings *s;
    if (err != EAGAIN && err != EINTR && err != EINPROGRESS && err != EALREADY &&
        (err < ERESTARTSYS_NUM || err > ERESTART_RESTARTBLOCK_NUM))
        return err;
    s = get_settings();
    if (!s)
        return 0;
    if (err == EAGAIN && (s->count_flags & COUNT_EAGAIN))
        return err;
    if ((err == EINPROGRESS || err == EALREADY) && (s->count_flags & COUNT_EINPROGRESS))
        return err;
    if ((err == EINTR || err >= ERESTARTSYS_NUM) && (s->count_flags & COUNT_EINTR))
        return EINTR;
    return 0;
}

static __always_inline void key_from_current(struct errnomon_key *key)
{
    key->tgid = bpf_get_current_pid_tgid() >> 32;
    key->cgroup = bpf_get_current_cgroup_id();
    bpf_get_current_comm(&key->comm, sizeof(key->comm));
}

/* The peer of a socket's owner: all an error raised in process context takes from it (key_from_current
 * gives the rest). */
static __always_inline void peer_from_owner(struct errnomon_key *key, struct errnomon_owner *o)
{
    key->port = o->port;
    key->family = o->family;
    __builtin_memcpy(key->remote, o->remote, sizeof(key->remote));
}

static __always_inline void key_from_owner(struct errnomon_key *key, struct errnomon_owner *o)
{
    key->tgid = o->tgid;
    key->cgroup = o->cgroup;
    __builtin_memcpy(key->comm, o->comm, sizeof(key->comm));
    peer_from_owner(key, o);
}

/* A socket that existed before errnomon started: its seeded owner, found by the cookie errnomon's sock_diag
 * dump generated (0 for a socket nobody asked the cookie of), moved into `owners`. */
static __always_inline struct errnomon_owner *seeded_owner(void *sk)
{
#ifdef OFF_SOCK_COMMON_SKC_COOKIE
    u64 cookie = 0, key = (u64)sk;
    struct errnomon_owner *seed, o;

    bpf_probe_read_kernel(&cookie, sizeof(cookie), sk + OFF_SOCK_COMMON_SKC_COOKIE);
    if (!cookie)
        return 0;
    seed = seeded.lookup(&cookie);
    if (!seed)
        return 0;
    o = *seed;
    owners.update(&key, &o);
    seeded.delete(&cookie);
    return owners.lookup(&key);
#else
    return 0;
#endif
}

/* Every lookup of a socket's owner goes through here. */
static __always_inline struct errnomon_owner *owner_of(void *sk)
{
    u64 key = (u64)sk;
    struct errnomon_owner *o = owners.lookup(&key);
    return o ? o : seeded_owner(sk);
}

static __always_inline int ephemeral(struct errnomon_settings *s, u16 port)
{
    return s && port >= s->ephemeral_low && port <= s->ephemeral_high;
}

/* Without an owner entry, the service port is a guess, never a port the kernel hands out to clients:
 * a local port some program listens on; else the side that is not ephemeral; else the lower. */
static __always_inline u16 service_port(u16 local, u16 remote)
{
    struct errnomon_settings *s;
    if (listeners.lookup(&local))
        return local;
    s = get_settings();
    if (ephemeral(s, local))
        return remote;
    if (ephemeral(s, remote))
        return local;
    return remote < local ? remote : local;
}

static __always_inline void copy_remote(u8 *dst, u16 family, const u8 *v4, const u8 *v6)
{
    if (family == AF_INET)
        __builtin_memcpy(dst, v4, 4);
    else
        __builtin_memcpy(dst, v6, 16);
}

/* Remote and service port of a socket without an owner entry: the head of sock_common, and the IPv6
 * address at its BTF offset (without BTF an IPv6 peer stays unknown). */
static __always_inline int sock_remote(u8 *dst, void *sk, u16 family)
{
    if (family == AF_INET) {
        bpf_probe_read_kernel(dst, 4, sk);
        return 1;
    }
#ifdef OFF_SOCK_COMMON_SKC_V6_DADDR
    if (family == AF_INET6) {
        bpf_probe_read_kernel(dst, 16, sk + OFF_SOCK_COMMON_SKC_V6_DADDR);
        return 1;
    }
#endif
    return 0;
}

static __always_inline void peer_from_sock(struct errnomon_key *key, void *sk, u16 family)
{
    u16 dport = 0, lport = 0;
    if (!sock_remote(key->remote, sk, family))
        return;
    bpf_probe_read_kernel(&dport, 2, sk + 12);
    bpf_probe_read_kernel(&lport, 2, sk + 14);
#ifdef OFF_INET_SOCK_INET_SPORT
    if (!lport) {
        /* the bound port already put back (an aborting close: CLOSE, then the reset): the socket's own copy */
        bpf_probe_read_kernel(&lport, 2, sk + OFF_INET_SOCK_INET_SPORT);
        lport = ntohs(lport);
    }
#endif
    key->family = family;
    key->port = service_port(lport, ntohs(dport));
}

static __always_inline u16 sock_family(void *sk)
{
    u16 family = 0;
    bpf_probe_read_kernel(&family, sizeof(family), sk + 16);
    return family;
}

static __always_inline u8 sock_state(void *sk)
{
    u8 state = 0;
    bpf_probe_read_kernel(&state, sizeof(state), sk + 18);
    return state;
}

#ifdef OFF_SOCKET_SK
static __always_inline void *socket_sk(u64 sock)
{
    void *sk = 0;
    if (sock)
        bpf_probe_read_kernel(&sk, sizeof(sk), (void *)sock + OFF_SOCKET_SK);
    return sk;
}
#endif

/* From an fd to its socket through current->files: the syscalls rung of send/recv, and connect() on unix sockets. */
#if defined(OFF_SOCKET_SK) && defined(OFF_TASK_STRUCT_FILES) && defined(OFF_FILES_STRUCT_FDT) && defined(OFF_FDTABLE_MAX_FDS) && \
    defined(OFF_FDTABLE_FD) && defined(OFF_FILE_F_INODE) && defined(OFF_FILE_PRIVATE_DATA) && defined(OFF_INODE_I_MODE)
#define HAVE_FD_SOCK 1
#define S_IFMT_BITS 00170000
#define S_IFSOCK_BITS 0140000

/* the sock of an fd of the current task, or 0 if it is no socket */
static __always_inline void *fd_sock(u32 fd)
{
    void *task = (void *)bpf_get_current_task(), *files = 0, *fdt = 0, *fds = 0, *file = 0, *inode = 0;
    u64 sock = 0;
    u32 max_fds = 0;
    u16 mode = 0;

    bpf_probe_read_kernel(&files, sizeof(files), task + OFF_TASK_STRUCT_FILES);
    if (!files)
        return 0;
    bpf_probe_read_kernel(&fdt, sizeof(fdt), files + OFF_FILES_STRUCT_FDT);
    if (!fdt)
        return 0;
    bpf_probe_read_kernel(&max_fds, sizeof(max_fds), fdt + OFF_FDTABLE_MAX_FDS);
    if (fd >= max_fds)
        return 0;
    bpf_probe_read_kernel(&fds, sizeof(fds), fdt + OFF_FDTABLE_FD);
    if (!fds)
        return 0;
    bpf_probe_read_kernel(&file, sizeof(file), fds + (u64)fd * sizeof(void *));
    if (!file)
        return 0;
    bpf_probe_read_kernel(&inode, sizeof(inode), file + OFF_FILE_F_INODE);
    if (!inode)
        return 0;
    bpf_probe_read_kernel(&mode, sizeof(mode), inode + OFF_INODE_I_MODE);
    if ((mode & S_IFMT_BITS) != S_IFSOCK_BITS)
        return 0;
    bpf_probe_read_kernel(&sock, sizeof(sock), file + OFF_FILE_PRIVATE_DATA);
    return socket_sk(sock);
}
#endif
/* inet_sock_set_state also fires for SCTP and DCCP sockets: only TCP's (and MPTCP subflows') count.
 * Without BTF sk_protocol's place is unknown and every socket is taken for TCP (logged at start). */
static __always_inline int is_tcp(void *sk)
{
#ifdef OFF_SOCK_SK_PROTOCOL
    SK_PROTOCOL_TYPE protocol = 0;
    bpf_probe_read_kernel(&protocol, sizeof(protocol), sk + OFF_SOCK_SK_PROTOCOL);
    return protocol == IPPROTO_TCP_NUM;
#else
    return 1;
#endif
}

/* ---- error events: why, not only how many (GET /errors) ----
 * Built only on error paths, after the count; the count never depends on them. A global token bucket (GCRA:
 * events.rate a second, a burst of as many) bounds them; what it refuses, and what a full ring refuses, is
 * counted in event_drops by reason. */
BPF_RINGBUF_OUTPUT(events, EVENTS_RING_PAGES);
BPF_PERCPU_ARRAY(event_drops, u64, EVENT_DROP_REASONS);
BPF_ARRAY(event_bucket, u64, 1); /* the bucket's theoretical arrival time, ns */
#define NSEC_PER_SEC_NUM 1000000000ULL

static __always_inline void event_dropped(int reason)
{
    u64 *d = event_drops.lookup(&reason);
    if (d)
        *d += 1;
}

/* A record for an event with these labels, or 0 (events off, over the rate, ring full). Every field not
 * set here is zero; event_submit() sends it. */
static __always_inline struct errnomon_event *event_begin(int kind, struct errnomon_key *key)
{
    struct errnomon_settings *s = get_settings();
    struct errnomon_event *e;
    u64 interval, now, t, *tat;
    int zero = 0;

    if (!s || !s->event_interval_ns)
        return 0;
    interval = s->event_interval_ns;
    tat = event_bucket.lookup(&zero);
    if (!tat)
        return 0;
    now = bpf_ktime_get_ns();
    t = *tat;
    if (t < now)
        t = now;
    /* at most a second's worth ahead: a burst of events.rate, then one per interval. Racy across CPUs
     * (two may take the same slot): the rate is approximate, the drop count of what it refused exact. */
    if (t - now > NSEC_PER_SEC_NUM - interval) {
        event_dropped(EVENT_DROP_RATE_LIMIT);
        return 0;
    }
    *tat = t + interval;
    e = events.ringbuf_reserve(sizeof(struct errnomon_event));
    if (!e) {
        event_dropped(EVENT_DROP_RING_FULL);
        return 0;
    }
    __builtin_memset(e, 0, sizeof(*e));
    e->ktime_ns = now;
    e->kind = kind;
    e->tgid = key->tgid;
    e->cgroup = key->cgroup;
    __builtin_memcpy(e->comm, key->comm, sizeof(e->comm));
    e->code = key->code;
    e->op = key->op;
    e->state = key->state;
    e->family = key->family;
    e->port = key->port;
    __builtin_memcpy(e->remote, key->remote, sizeof(e->remote));
    return e;
}

/* The TTL (IPv4) or hop limit (IPv6) of the segments a connection received, in its owner entry: the peer's,
 * from the segment that completed its handshake (tcp_init_transfer(sk, op, skb): the SYN-ACK a client receives,
 * the ACK a server receives; the entry exists from SYN_SENT or SYN_RECV), and the reset's (tcp_reset(sk, skb)).
 * A reset that arrives with another TTL than the peer's segments came another way, as a middlebox's does.
 * Kernel functions without tracepoints: kprobes (monitor/loader.py, signals peer_ttl and reset_ttl); once per
 * connection and per reset, never per segment. */
#if (defined(KPROBE_tcp_init_transfer) || defined(KPROBE_tcp_reset)) && defined(OFF_SK_BUFF_HEAD) && \
    defined(OFF_SK_BUFF_NETWORK_HEADER)
#define HAVE_SEGMENT_TTLS 1
static __always_inline u8 segment_ttl(void *skb)
{
    void *head = 0;
    u16 nh = 0xffff;
    u8 first = 0, ttl = 0;

    bpf_probe_read_kernel(&head, sizeof(head), skb + OFF_SK_BUFF_HEAD);
    bpf_probe_read_kernel(&nh, sizeof(nh), skb + OFF_SK_BUFF_NETWORK_HEADER);
    if (!head || nh == 0xffff)
        return 0;
    bpf_probe_read_kernel(&first, 1, head + nh);
    if (first >> 4 == 4)
        bpf_probe_read_kernel(&ttl, 1, head + nh + 8);  /* iphdr.ttl */
    else if (first >> 4 == 6)
        bpf_probe_read_kernel(&ttl, 1, head + nh + 7);  /* ipv6hdr.hop_limit */
    return ttl;
}
#endif

/* What the socket tells at this moment: its addresses and ports, and for a full TCP socket (not a listener,
 * request or time-wait socket) its idle times, bytes, retransmissions and RTT, from the kernel's own tcp_sock
 * fields at their BTF offsets; the connection's age and the peer's FIN from its owner entry. */
static __always_inline void event_socket(struct errnomon_event *e, void *sk, struct errnomon_owner *o)
{
    u16 family = sock_family(sk), dport = 0, lport = 0;
    u8 state = sock_state(sk);

    if (family != AF_INET && family != AF_INET6)
        return;
    bpf_probe_read_kernel(&dport, 2, sk + 12);
    bpf_probe_read_kernel(&lport, 2, sk + 14);
#ifdef OFF_INET_SOCK_INET_SPORT
    if (!lport && state != TCP_TIME_WAIT && state != TCP_NEW_SYN_RECV) {
        bpf_probe_read_kernel(&lport, 2, sk + OFF_INET_SOCK_INET_SPORT);
        lport = ntohs(lport);
    }
#endif
    if (!e->state)
        e->state = state; /* a socket error's: the state the call found the socket in */
    e->local_port = lport;
    e->remote_port = ntohs(dport);
    if (family == AF_INET) {
        bpf_probe_read_kernel(e->local, 4, sk + 4);
    } else {
#ifdef OFF_SOCK_COMMON_SKC_V6_RCV_SADDR
        bpf_probe_read_kernel(e->local, 16, sk + OFF_SOCK_COMMON_SKC_V6_RCV_SADDR);
#endif
    }
    if (!e->family || e->family != family) {
        __builtin_memset(e->remote, 0, sizeof(e->remote));
        if (sock_remote(e->remote, sk, family))
            e->family = family;
    }
    if (o) {
        e->established_ns = o->established_ns;
        e->fin_ns = o->fin_ns;
        e->peer_ttl = o->peer_ttl;
        e->rst_ttl = o->rst_ttl;
    }
#if defined(OFF_TCP_SOCK_LSNDTIME) && defined(OFF_INET_CONNECTION_SOCK_ICSK_ACK_LRCVTIME) && \
    defined(OFF_TCP_SOCK_BYTES_RECEIVED) && defined(OFF_TCP_SOCK_TOTAL_RETRANS) && defined(OFF_TCP_SOCK_SRTT_US) && \
    (defined(OFF_TCP_SOCK_BYTES_SENT) || defined(OFF_TCP_SOCK_BYTES_ACKED))
    if (state == TCP_LISTEN || state == TCP_TIME_WAIT || state == TCP_NEW_SYN_RECV || !is_tcp(sk))
        return;
    e->jiffies = bpf_jiffies64();
    bpf_probe_read_kernel(&e->lsndtime, 4, sk + OFF_TCP_SOCK_LSNDTIME);
    bpf_probe_read_kernel(&e->lrcvtime, 4, sk + OFF_INET_CONNECTION_SOCK_ICSK_ACK_LRCVTIME);
    bpf_probe_read_kernel(&e->bytes_received, 8, sk + OFF_TCP_SOCK_BYTES_RECEIVED);
    bpf_probe_read_kernel(&e->total_retrans, 4, sk + OFF_TCP_SOCK_TOTAL_RETRANS);
    bpf_probe_read_kernel(&e->srtt_us, 4, sk + OFF_TCP_SOCK_SRTT_US);
    e->srtt_us >>= 3;
#ifdef OFF_TCP_SOCK_BYTES_SENT
    bpf_probe_read_kernel(&e->bytes_sent, 8, sk + OFF_TCP_SOCK_BYTES_SENT);
#else
    bpf_probe_read_kernel(&e->bytes_sent, 8, sk + OFF_TCP_SOCK_BYTES_ACKED);
    e->flags |= EVENT_BYTES_ACKED;
#endif
    e->flags |= EVENT_TCP_FACTS;
#endif
}

static __always_inline void event_submit(struct errnomon_event *e)
{
    events.ringbuf_submit(e, 0);
}

/* An event on a socket: begun, filled from the socket, sent. */
static __always_inline void socket_event(int kind, struct errnomon_key *key, void *sk, struct errnomon_owner *o,
                                         u32 tid)
{
    struct errnomon_event *e = event_begin(kind, key);
    if (!e)
        return;
    e->tid = tid;
    if (sk)
        event_socket(e, sk, o);
    event_submit(e);
}

/* ---- send / recv return paths: the hot path ---- */

static __always_inline void sigpipe_after_epipe(struct errnomon_key *key)
{
    u32 tid = bpf_get_current_pid_tgid();
    struct generated *g = sigpipe_generated.lookup(&tid);
    struct errnomon_key sk = {};
    if (!g)
        return;
    if (bpf_ktime_get_ns() - g->ns > SIGPIPE_WINDOW_NS) {
        sigpipe_generated.delete(&tid);  /* raised by something else, e.g. a pipe */
        return;
    }
    __builtin_memcpy(sk.comm, key->comm, sizeof(sk.comm));
    sk.tgid = key->tgid;
    sk.cgroup = key->cgroup;
    if (g->result == TRACE_SIGNAL_IGNORED) {
        sk.code = SIGPIPE_IGNORED;
        count(&sk, METRIC_SIGPIPE);
    } else {
        /* handled or fatal: signal_deliver tells which */
        sigpipe_pending.update(&sk.tgid, &sk);
    }
    sigpipe_generated.delete(&tid);
}

/* sendfile() sends a file in chunks, one sock_sendmsg (and one sock_send_length) each, through the task's
 * internal pipe (current->splice_pipe, fs/splice.c splice_direct_to_actor). A chunk that fails after one
 * that sent bytes in the same call is not the call's error: the call returns the bytes sent (the
 * application sees the error, or EPIPE, on its next call). The pipe tells: its tail counts the buffers
 * sent in this call and is reset to 0 when every sendfile ends, so outside sendfile it is 0.
 * Runs on the error path only. */
static __always_inline int sent_earlier_in_sendfile(void)
{
#if defined(OFF_TASK_STRUCT_SPLICE_PIPE) && defined(OFF_PIPE_INODE_INFO_TAIL) && defined(PIPE_INDEX_TYPE)
    void *task = (void *)bpf_get_current_task();
    void *pipe = 0;
    PIPE_INDEX_TYPE tail = 0;

    bpf_probe_read_kernel(&pipe, sizeof(pipe), task + OFF_TASK_STRUCT_SPLICE_PIPE);
    if (!pipe)
        return 0;
    bpf_probe_read_kernel(&tail, sizeof(tail), pipe + OFF_PIPE_INODE_INFO_TAIL);
    return tail != 0;
#else
    return 0;
#endif
}

/* ---- unix sockets: the peer's path, hashed into the key's remote, the path itself kept in unix_paths ---- */

#if defined(OFF_UNIX_SOCK_PEER) && defined(OFF_UNIX_SOCK_ADDR) && defined(OFF_UNIX_ADDRESS_LEN) && \
    defined(OFF_UNIX_ADDRESS_NAME) && defined(OFF_SOCK_SK_TYPE)
#define HAVE_UNIX_SOCKETS 1
#define AF_UNIX_NUM 1
#define SOCK_STREAM_NUM 1
#define SOCK_SEQPACKET_NUM 5
BPF_TABLE("lru_hash", u64, struct errnomon_unix_path, unix_paths, UNIX_PATHS);

/* A length the verifier sees within path[]. The barrier keeps clang from folding the clamp into an earlier
 * check of len on another register, which the verifier cannot relate to the one passed. */
static __always_inline u64 unix_path_len(u64 len)
{
    u64 n = len;
    asm volatile("" : "+r"(n));
    if (n > UNIX_PATH_LEN)
        n = UNIX_PATH_LEN;
    return n;
}

/* The hash of p->path (zero past its len bytes) and, for an abstract name (leading NUL, where trailing NULs
 * are part of the name), its length; the path is kept under it. Never UNIX_HASH_UNNAMED. Error paths only. */
static __always_inline u64 unix_path_keep(struct errnomon_unix_path *p)
{
    u64 h = 0xcbf29ce484222325ULL, *w = (u64 *)p->path;
#pragma unroll
    for (int i = 0; i < UNIX_PATH_WORDS; i++) {
        h ^= w[i];
        h *= 0x100000001b3ULL;
        h ^= h >> 29;
    }
    if (p->path[0] == 0)
        h ^= p->len;
    h *= 0x100000001b3ULL;
    h ^= h >> 32;
    if (h == UNIX_HASH_UNNAMED)
        h = 1;
    if (!unix_paths.lookup(&h))
        unix_paths.update(&h, p);
    return h;
}

/* A bound socket's path (struct unix_address: len counts sun_family too), or UNIX_HASH_UNNAMED. */
static __always_inline u64 unix_addr_hash(void *addr)
{
    struct errnomon_unix_path p = {};
    int len = 0;
    u64 n;
    if (!addr)
        return UNIX_HASH_UNNAMED;
    bpf_probe_read_kernel(&len, sizeof(len), addr + OFF_UNIX_ADDRESS_LEN);
    if (len <= 2)
        return UNIX_HASH_UNNAMED;
    n = unix_path_len(len - 2);
    bpf_probe_read_kernel(p.path, n, addr + OFF_UNIX_ADDRESS_NAME + 2);
    p.len = n;
    return unix_path_keep(&p);
}

/* The remote of a unix socket: its peer's path (a client's peer is the listener's child, which has the
 * listener's path); for a peer without one (the client of an accepted socket), the socket's own path, the
 * service it belongs to, as the port of an accepted TCP socket is ours; else unnamed (socketpair). */
static __always_inline void unix_peer_key(struct errnomon_key *key, void *sk)
{
    void *peer = 0, *addr = 0;
    u64 h;
    bpf_probe_read_kernel(&peer, sizeof(peer), sk + OFF_UNIX_SOCK_PEER);
    if (peer)
        bpf_probe_read_kernel(&addr, sizeof(addr), peer + OFF_UNIX_SOCK_ADDR);
    if (!addr)
        bpf_probe_read_kernel(&addr, sizeof(addr), sk + OFF_UNIX_SOCK_ADDR);
    h = unix_addr_hash(addr);
    key->family = AF_UNIX_NUM;
    __builtin_memcpy(key->remote, &h, sizeof(h));
}

/* A socket whose errors count: connection-oriented (stream, seqpacket); datagram ones have no peer to lose. */
static __always_inline int unix_connected(void *sk)
{
    u16 type = 0;
    bpf_probe_read_kernel(&type, sizeof(type), sk + OFF_SOCK_SK_TYPE);
    return type == SOCK_STREAM_NUM || type == SOCK_SEQPACKET_NUM;
}
#endif

/* ret: what the socket call returned to its caller, negative */
static __always_inline int io_error(void *sk, int ret, int op)
{
    int err = countable(-ret);
    u16 family;
    struct errnomon_key key = {};
    struct errnomon_owner *o = 0;

    if (!err || !sk)
        return 0;
    family = sock_family(sk);
    if (family == AF_INET || family == AF_INET6) {
        o = owner_of(sk);
        if (o)
            peer_from_owner(&key, o);
        else
            peer_from_sock(&key, sk, family);
#ifdef HAVE_UNIX_SOCKETS
    } else if (family == AF_UNIX_NUM && unix_connected(sk)) {
        unix_peer_key(&key, sk);
#endif
    } else {
        return 0;
    }
    /* the error is the application's: process context */
    key_from_current(&key);
    key.op = op;
    key.code = err;
    if (op != OP_SEND || !sent_earlier_in_sendfile()) {
        count(&key, METRIC_SOCKET_ERRORS);
        socket_event(EVENT_SOCKET_ERROR, &key, sk, o, (u32)bpf_get_current_pid_tgid());
    }
    if (o && (o->flags & OWNER_AMBIGUOUS)) {
        /* now we know which program holds the accepted socket */
        o->tgid = key.tgid;
        o->cgroup = key.cgroup;
        __builtin_memcpy(o->comm, key.comm, sizeof(o->comm));
        o->flags &= ~OWNER_AMBIGUOUS;
    }
    /* a chunk's EPIPE raises a real SIGPIPE even when the call returns bytes: count it either way */
    if (op == OP_SEND && err == EPIPE)
        sigpipe_after_epipe(&key);
    return 0;
}

#ifdef HAVE_sock__sock_send_length
RAW_TRACEPOINT_PROBE(sock_send_length)
{
    if ((int)ctx->args[1] >= 0)
        return 0;
    return io_error((void *)ctx->args[0], (int)ctx->args[1], OP_SEND);
}
#endif

#ifdef HAVE_sock__sock_recv_length
RAW_TRACEPOINT_PROBE(sock_recv_length)
{
    if ((int)ctx->args[1] >= 0)
        return 0;
    return io_error((void *)ctx->args[0], (int)ctx->args[1], OP_RECV);
}
#endif

/* ---- connect / accept ---- */

#if defined(HAVE_syscalls__sys_enter_connect) && defined(HAVE_syscalls__sys_exit_connect)
#if defined(HAVE_UNIX_SOCKETS) && defined(HAVE_FD_SOCK)
/* connect() on a unix stream or seqpacket socket in flight: the address the program passed */
struct unix_connect {
    u64 addr;
    u32 len;
    u32 pad;
};
BPF_TABLE("lru_hash", u32, struct unix_connect, unix_connects, 4096); /* tid -> its connect() in flight */

static __always_inline void unix_connect_entered(u64 fd, u64 addr, u64 addrlen)
{
    u32 tid = bpf_get_current_pid_tgid();
    void *sk = fd_sock(fd);
    struct unix_connect c = {.addr = addr, .len = addrlen};
    if (sk && unix_connected(sk))
        unix_connects.update(&tid, &c);
}

/* Every errno counts, EAGAIN too: a unix connect() returns it for a listener whose backlog is full (a TCP one
 * answers EINPROGRESS), never as part of ordinary non-blocking I/O. */
static __always_inline void unix_connect_exited(long ret)
{
    u32 tid = bpf_get_current_pid_tgid();
    struct unix_connect *c = unix_connects.lookup(&tid);
    struct errnomon_unix_path p = {};
    struct errnomon_key key = {};
    u64 addr, h;
    int err, len;

    if (!c)
        return;
    addr = c->addr;
    len = c->len - 2; /* sun_family */
    unix_connects.delete(&tid);
    if (ret >= 0 || len <= 0)
        return;
    err = -ret == EAGAIN ? EAGAIN : countable(-ret);
    if (!err)
        return;
    bpf_probe_read_user(p.path, 1, (void *)addr + 2);
    if (p.path[0] == 0) {
        /* abstract: every byte of addrlen is the name */
        u64 n = unix_path_len(len);
        bpf_probe_read_user(p.path, n, (void *)addr + 2);
        p.len = n;
    } else {
        /* a pathname ends at its NUL (or at addrlen); as the kernel keeps it, with the NUL */
        int n = bpf_probe_read_user_str(p.path, unix_path_len(len) + 1, (void *)addr + 2);
        if (n <= 0)
            return;
        p.len = n;
    }
    h = unix_path_keep(&p);
    key_from_current(&key);
    key.op = OP_CONNECT;
    key.code = err;
    key.family = AF_UNIX_NUM;
    __builtin_memcpy(key.remote, &h, sizeof(h));
    count(&key, METRIC_SOCKET_ERRORS);
}
#endif

TRACEPOINT_PROBE(syscalls, sys_enter_connect)
{
    u32 tid = bpf_get_current_pid_tgid();
    u64 addr = (u64)args->uservaddr;
    u16 family = 0;
    bpf_probe_read_user(&family, sizeof(family), (void *)addr);
    if (family == AF_INET || family == AF_INET6)
        connects.update(&tid, &addr);
#if defined(HAVE_UNIX_SOCKETS) && defined(HAVE_FD_SOCK)
    else if (family == AF_UNIX_NUM)
        unix_connect_entered(args->fd, addr, args->addrlen);
#endif
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_connect)
{
    u32 tid = bpf_get_current_pid_tgid();
    u64 *addrp = connects.lookup(&tid);
    struct errnomon_key key = {};
    struct sockaddr_in6 sa = {};
    int err;

    if (!addrp) {
#if defined(HAVE_UNIX_SOCKETS) && defined(HAVE_FD_SOCK)
        unix_connect_exited(args->ret);
#endif
        return 0;
    }
    bpf_probe_read_user(&sa, sizeof(sa), (void *)*addrp);
    connects.delete(&tid);
    if (args->ret >= 0)
        return 0;
    err = countable(-args->ret);
    if (!err)
        return 0;
    key_from_current(&key);
    key.op = OP_CONNECT;
    key.code = err;
    key.family = sa.sin6_family;
    key.port = ntohs(sa.sin6_port);
    if (sa.sin6_family == AF_INET)
        __builtin_memcpy(key.remote, &((struct sockaddr_in *)&sa)->sin_addr, 4);
    else
        __builtin_memcpy(key.remote, &sa.sin6_addr, 16);
    count(&key, METRIC_SOCKET_ERRORS);
    return 0;
}
#endif

static __always_inline int accept_error(long ret)
{
    struct errnomon_key key = {};
    int err;
    if (ret >= 0)
        return 0;
    err = countable(-ret);
    if (!err)
        return 0;
    key_from_current(&key);
    key.op = OP_ACCEPT;
    key.code = err;
    count(&key, METRIC_SOCKET_ERRORS);
    return 0;
}

#ifdef HAVE_syscalls__sys_exit_accept4
TRACEPOINT_PROBE(syscalls, sys_exit_accept4)
{
    return accept_error(args->ret);
}
#endif

#ifdef HAVE_syscalls__sys_exit_accept
TRACEPOINT_PROBE(syscalls, sys_exit_accept)
{
    return accept_error(args->ret);
}
#endif

/* ---- TCP state: owners, listeners, FINs ---- */

#ifdef HAVE_sock__inet_sock_set_state
static __always_inline void owner_from_current(struct errnomon_owner *o)
{
    o->tgid = bpf_get_current_pid_tgid() >> 32;
    o->cgroup = bpf_get_current_cgroup_id();
    bpf_get_current_comm(&o->comm, sizeof(o->comm));
}

static __always_inline void listener_add(u16 port)
{
    struct errnomon_listener *l = listeners.lookup(&port);
    struct errnomon_listener n = {};
    owner_from_current(&n.owner);
    n.count = 1;
    if (!l) {
        listeners.update(&port, &n);
        return;
    }
    /* Same port, another program: another network namespace or SO_REUSEPORT. Keep the comm only if all agree. */
    if (l->owner.tgid != n.owner.tgid) {
        u64 *a = (u64 *)l->owner.comm, *b = (u64 *)n.owner.comm;
        if (a[0] != b[0] || a[1] != b[1]) {
            /* unattributed until the program holding an accepted socket makes a call that fails */
            l->owner.flags |= OWNER_AMBIGUOUS;
            a[0] = 0;
            a[1] = 0;
        }
        l->owner.tgid = 0;
    }
    l->count += 1;
}

static __always_inline void listener_remove(u16 port)
{
    struct errnomon_listener *l = listeners.lookup(&port);
    if (!l)
        return;
    if (l->count <= 1)
        listeners.delete(&port);
    else
        l->count -= 1;
}

#ifdef OFF_SOCK_SK_DROPS
/* Listen-queue drops, from the listener's own drop counter (what ss -ltm shows as d<N>: the kernel bumps it where
 * it drops a SYN or the handshake's last ACK for a full queue, and no tracepoint fires there). Every listening
 * socket is in listen_socks from listen() (CLOSE -> LISTEN) to its close (LISTEN -> CLOSE), with its owner and
 * the counter's value when last read. The increase is counted at the close, so that a listener's last drops
 * (and all of a short-lived one's) are not lost with it, and whenever the daemon runs sweep_listeners on it.
 * Not LRU: a listener evicted would lose its drops silently; a full map is counted in drops[]. */
BPF_HASH(listen_socks, u64, struct errnomon_listen_sock, LISTEN_SOCKETS);

/* sk_drops_read(): from 6.18 a socket may keep its drops per NUMA node (sk_drop_counters) as well */
static __always_inline u32 sock_drops(void *sk)
{
    u32 drops = 0;
    bpf_probe_read_kernel(&drops, sizeof(drops), sk + OFF_SOCK_SK_DROPS);
#if defined(OFF_SOCK_SK_DROP_COUNTERS) && defined(OFF_NUMA_DROP_COUNTERS_DROPS0) && \
    defined(OFF_NUMA_DROP_COUNTERS_DROPS1)
    void *numa = 0;
    bpf_probe_read_kernel(&numa, sizeof(numa), sk + OFF_SOCK_SK_DROP_COUNTERS);
    if (numa) {
        u32 d0 = 0, d1 = 0;
        bpf_probe_read_kernel(&d0, sizeof(d0), numa + OFF_NUMA_DROP_COUNTERS_DROPS0);
        bpf_probe_read_kernel(&d1, sizeof(d1), numa + OFF_NUMA_DROP_COUNTERS_DROPS1);
        drops += d0 + d1;
    }
#endif
    return drops;
}

/* Counts what the listener dropped since its counter was last read. */
static __always_inline void listen_drops_read(struct errnomon_listen_sock *l, void *sk)
{
    u32 now = sock_drops(sk), n = now - l->drops;
    if (now == l->drops)
        return;
    if (now < l->drops) /* never for the same socket: the counter only grows */
        n = now;
    l->drops = now;
    struct errnomon_key key = {};
    key_from_owner(&key, &l->owner);
    count_by(&key, METRIC_LISTEN_DROPS, n);
}

static __always_inline void listen_sock_add(void *sk, u16 port)
{
    u64 skp = (u64)sk;
    struct errnomon_listen_sock l = {};
    int m = METRIC_LISTEN_DROPS;
    bpf_get_current_comm(&l.owner.comm, sizeof(l.owner.comm));
    l.owner.tgid = bpf_get_current_pid_tgid() >> 32;
    l.owner.cgroup = bpf_get_current_cgroup_id();
    l.owner.port = port;
    l.drops = sock_drops(sk); /* a socket that listens again keeps its counter: count from here */
    if (listen_socks.update(&skp, &l)) {
        u64 *d = drops.lookup(&m);
        if (d)
            *d += 1;
    }
}

static __always_inline void listen_sock_close(void *sk)
{
    u64 skp = (u64)sk;
    struct errnomon_listen_sock *l = listen_socks.lookup(&skp);
    if (!l)
        return;
    listen_drops_read(l, sk);
    listen_socks.delete(&skp);
}

/* Not attached: the daemon runs it (BPF_PROG_TEST_RUN) with up to LISTEN_SWEEP_BATCH keys of listen_socks in
 * ctx->args, 0 after the last, to count the drops of listeners that are still open. A key whose socket is no
 * longer that listener (its close unseen: a skipped run) is forgotten without counting. */
static __always_inline void sweep_one(u64 skp)
{
    void *sk = (void *)skp;
    u16 num = 0;
    struct errnomon_listen_sock *l;
    if (!skp)
        return;
    l = listen_socks.lookup(&skp);
    if (!l)
        return;
    bpf_probe_read_kernel(&num, sizeof(num), sk + 14);
    if (sock_state(sk) != TCP_LISTEN || num != l->owner.port) {
        listen_socks.delete(&skp);
        return;
    }
#ifdef OFF_SOCK_COMMON_SKC_COOKIE
    /* the daemon's sock_diag dump at start-up gave it one: how the daemon tells these listeners from older ones */
    bpf_probe_read_kernel(&l->cookie, sizeof(l->cookie), sk + OFF_SOCK_COMMON_SKC_COOKIE);
#endif
    listen_drops_read(l, sk);
}

int sweep_listeners(struct bpf_raw_tracepoint_args *ctx)
{
#pragma unroll
    for (int i = 0; i < LISTEN_SWEEP_BATCH; i++)
        sweep_one(ctx->args[i]);
    return 0;
}

/* Listeners older than errnomon: no listen() told the programs about them. The daemon finds them at start-up
 * with sock_diag (cookie, owner, drop counter then) and puts each in listen_adopt, keyed by its cookie; this
 * iterator (bpf_iter tcp, 5.9+: the sockets of the network namespace of whoever creates the iterator), run
 * once in each of their namespaces, moves every one it finds into listen_socks. From there the sweep and the
 * close count their drops like the others', and no namespace has to be polled. An entry left in listen_adopt
 * (listen_socks full, or the socket gone) tells the daemon to keep polling that listener. */
#if defined(HAVE_BPF_ITER_TCP) && defined(OFF_SOCK_COMMON_SKC_COOKIE)
BPF_HASH(listen_adopt, u64, struct errnomon_listen_sock, LISTEN_SOCKETS);

struct errnomon_iter_meta {
    void *seq;
    u64 session_id;
    u64 seq_num;
};
/* the context of the tcp iterator (bpf_iter_tcp's arguments, net/ipv4/tcp_ipv4.c); not in any header */
struct bpf_iter__tcp {
    struct errnomon_iter_meta *meta;
    void *sk_common;
    u32 uid;
};

int bpf_iter__tcp(struct bpf_iter__tcp *ctx)
{
    void *sk = ctx->sk_common;
    u64 cookie = 0, skp = (u64)sk;
    struct errnomon_listen_sock *l;

    if (!sk || sock_state(sk) != TCP_LISTEN)
        return 0;
    bpf_probe_read_kernel(&cookie, sizeof(cookie), sk + OFF_SOCK_COMMON_SKC_COOKIE);
    if (!cookie)
        return 0;
    l = listen_adopt.lookup(&cookie);
    if (!l)
        return 0;
    if (listen_socks.insert(&skp, l) == 0)
        listen_adopt.delete(&cookie);
    return 0;
}
#endif
#endif

/* A connection attempt of this host (CLOSE -> SYN_SENT seen) that neither completed nor failed yet. */
static __always_inline int attempt_pending(struct errnomon_owner *o)
{
    return o && (o->flags & (OWNER_CONNECTED | OWNER_ESTABLISHED | OWNER_CONNECT_FAILED)) == OWNER_CONNECTED;
}

/* Counts the failure of an attempt once, at the first hook that knows its error. */
static __always_inline void connect_failed(void *sk, struct errnomon_owner *o, int err)
{
    struct errnomon_key key = {};
    key_from_owner(&key, o);
    key.code = err;
    count(&key, METRIC_CONNECT_FAILURES);
    o->flags |= OWNER_CONNECT_FAILED;
    key.op = OP_CONNECT;
    key.state = TCP_SYN_SENT; /* the state the attempt failed in, whichever hook saw it */
    socket_event(EVENT_CONNECT_FAILED, &key, sk, o, 0);
}

/* inet_sock_set_state(sk, oldstate, newstate) */
RAW_TRACEPOINT_PROBE(inet_sock_set_state)
{
    void *sk = (void *)ctx->args[0];
    int old = (int)ctx->args[1], new = (int)ctx->args[2], metric = -1;
    u64 skp = (u64)sk;
    u16 family, sport = 0, dport = 0;
    struct errnomon_owner o = {};
    struct errnomon_owner *known;

    if (!is_tcp(sk))
        return 0;
    family = sock_family(sk);
    if (family != AF_INET && family != AF_INET6)
        return 0;
    bpf_probe_read_kernel(&sport, sizeof(sport), sk + 14);
    bpf_probe_read_kernel(&dport, sizeof(dport), sk + 12);
    dport = ntohs(dport);

    if (old == TCP_CLOSE && new == TCP_SYN_SENT) {
        /* inside connect(): current is the owner; the source port is not chosen yet */
        owner_from_current(&o);
        o.flags = OWNER_CONNECTED;
        o.port = dport;
        if (sock_remote(o.remote, sk, family))
            o.family = family;
        owners.update(&skp, &o);
        return 0;
    }
    if (new == TCP_ESTABLISHED) {
        /* from here on an error is one of an established connection, not a failed attempt
         * (SYN_SENT -> ESTABLISHED; SYN_RECV -> ESTABLISHED for accepted and simultaneous opens) */
        known = owner_of(sk);
        if (known) {
            known->flags |= OWNER_ESTABLISHED;
            known->established_ns = bpf_ktime_get_ns();
            /* a child of a listener: before 6.13 or so its peer address is filled in only after
             * LISTEN -> SYN_RECV, where its owner entry was made (seen as 0.0.0.0 on 6.12) */
            if ((known->flags & OWNER_ACCEPTED) && sock_remote(known->remote, sk, family))
                known->family = family;
        }
        return 0;
    }
#ifdef OFF_SOCK_SK_ERR
    if (old == TCP_SYN_SENT && new == TCP_CLOSE) {
        /* A connection attempt that ends here failed, whatever told the program: counted once, here, with the
         * error the kernel recorded, unless counted already (a reset, below; a timer's report before 6.10).
         * An ICMP error that arrived while connect() held the socket lock is only a soft error (and its error
         * report says 0), yet it is what SO_ERROR and the next call return. */
        int err = 0;
        known = owner_of(sk);
        if (!attempt_pending(known))
            return 0;
        bpf_probe_read_kernel(&err, sizeof(err), sk + OFF_SOCK_SK_ERR);
#ifdef OFF_SOCK_SK_ERR_SOFT
        if (err == 0)
            bpf_probe_read_kernel(&err, sizeof(err), sk + OFF_SOCK_SK_ERR_SOFT);
#endif
#if defined(OFF_SOCK_SK_ERROR_QUEUE) && defined(OFF_SOCK_SK_ERROR_QUEUE_PREV) && defined(OFF_SK_BUFF_CB) && \
    defined(OFF_SOCK_EXTERR_SKB_EE_EE_ERRNO)
        if (err == 0) {
            /* the program read the soft error with SO_ERROR (which clears it), then closed: the ICMP error is
             * still queued on the socket (the last skb of sk_error_queue; an empty queue points at itself) */
            void *skb = 0;
            bpf_probe_read_kernel(&skb, sizeof(skb), sk + OFF_SOCK_SK_ERROR_QUEUE_PREV);
            if (skb && skb != sk + OFF_SOCK_SK_ERROR_QUEUE)
                bpf_probe_read_kernel(&err, sizeof(err), skb + OFF_SK_BUFF_CB + OFF_SOCK_EXTERR_SKB_EE_EE_ERRNO);
        }
#endif
#if defined(OFF_SOCK_SK_LOCK_OWNED) && defined(OFF_INET_CONNECTION_SOCK_ICSK_PENDING)
        if (err == 0) {
            /* Nothing recorded. A program closes its attempt only inside a system call holding the socket
             * (close, shutdown, connect(AF_UNSPEC): sk_lock.owned set). Outside one, only the kernel closes
             * it, and only after publishing the error (tcp_done_with_error(): sk_err, then tcp_done()), so the
             * program took that error with SO_ERROR from another CPU in between (tests/bpf/test_connect_races.py:
             * 18 of 30 were lost so). Which error: the retransmission timer's (its timer no longer pending:
             * ETIMEDOUT, as sk_err_soft was 0) or an ICMP error's, whose errno is gone (errno="unknown"). */
            int owned = 0;
            u8 pending = 0;
            bpf_probe_read_kernel(&owned, sizeof(owned), sk + OFF_SOCK_SK_LOCK_OWNED);
            bpf_probe_read_kernel(&pending, sizeof(pending), sk + OFF_INET_CONNECTION_SOCK_ICSK_PENDING);
            if (!owned)
                err = pending ? ERRNO_UNKNOWN : ETIMEDOUT;
        }
#endif
        if (err > 0)  /* none: the program closed the socket before anything failed */
            connect_failed(sk, known, err);
        return 0;
    }
#endif
    if (old == TCP_LISTEN && new == TCP_SYN_RECV) {
        /* a child of a listener, born in softirq: it belongs to whoever listens on the port */
        struct errnomon_listener *l = listeners.lookup(&sport);
        if (l)
            o = l->owner;
        o.flags |= OWNER_ACCEPTED;
        o.port = sport;
        if (sock_remote(o.remote, sk, family))
            o.family = family;
        else
            o.family = 0;
        owners.update(&skp, &o);
        return 0;
    }
    if (old == TCP_CLOSE && new == TCP_LISTEN) {
        listener_add(sport);
#ifdef OFF_SOCK_SK_DROPS
        listen_sock_add(sk, sport);
#endif
        return 0;
    }
    if (old == TCP_LISTEN && new == TCP_CLOSE) {
        listener_remove(sport);
#ifdef OFF_SOCK_SK_DROPS
        listen_sock_close(sk);
#endif
        return 0;
    }
    if ((old == TCP_ESTABLISHED && new == TCP_FIN_WAIT1) || (old == TCP_CLOSE_WAIT && new == TCP_LAST_ACK) ||
        (old == TCP_SYN_RECV && new == TCP_FIN_WAIT1)) {
        /* tcp_send_fin() follows exactly these transitions */
        metric = METRIC_TCP_FINS_SENT;
    } else if ((old == TCP_ESTABLISHED && new == TCP_CLOSE_WAIT) || (old == TCP_FIN_WAIT1 && new == TCP_CLOSING)) {
        /* tcp_fin(): the peer's FIN while our side was open, or crossing ours. (One answering our FIN arrives in
         * FIN_WAIT2, on a time-wait socket once the program has closed: not a transition we can tell.) */
        metric = METRIC_TCP_FINS_RECEIVED;
    }
    if (metric >= 0) {
        struct errnomon_key key = {};
        known = owner_of(sk);
        if (known && metric == METRIC_TCP_FINS_RECEIVED)
            known->fin_ns = bpf_ktime_get_ns(); /* for error events: the peer had closed first */
        if (known)
            key_from_owner(&key, known);
        else
            peer_from_sock(&key, sk, family);
        count(&key, metric);
    }
    return 0;
}
#endif

#ifdef HAVE_tcp__tcp_destroy_sock
/* tcp_destroy_sock(sk) */
RAW_TRACEPOINT_PROBE(tcp_destroy_sock)
{
    /* slab pointers are reused: forget the socket when it is freed */
    u64 sk = ctx->args[0];
    owners.delete(&sk);
    return 0;
}
#endif

/* ---- resets ---- */

/* The labels of a kernel-side event on a socket: its owner's, else what the socket itself tells. */
static __always_inline void key_from_sock(struct errnomon_key *key, void *sk, struct errnomon_owner *o)
{
    if (o)
        key_from_owner(key, o);
    else
        peer_from_sock(key, sk, sock_family(sk));
}

/* errnomon_tcp_reset_idle_seconds: how long the peer had been silent when its reset arrived, the time since
 * the last segment the connection received from it (tcp_sock.rcv_tstamp: the last ACK; icsk_ack.lrcvtime: the
 * last data), in jiffies (KERNEL_HZ a second, from the loader). A connection in use hears from its peer at
 * least every RTT; a long silence before a reset is the mark of an idle timeout somewhere. Only for resets
 * of connections (not in the handshake). By process and service port: a bucket's key, and the sum. */
#if defined(KERNEL_HZ) && defined(OFF_TCP_SOCK_RCV_TSTAMP) && defined(OFF_INET_CONNECTION_SOCK_ICSK_ACK_LRCVTIME)
static __always_inline u16 idle_bucket(u64 ms)
{
    const u32 le[] = {RESET_IDLE_LE};
    u16 bucket = RESET_IDLE_INF;
#pragma unroll
    for (int i = RESET_IDLE_BUCKETS - 1; i >= 0; i--)
        if (ms <= (u64)le[i] * 1000)
            bucket = i;
    return bucket;
}

static __always_inline void reset_idle(struct errnomon_key *from, void *sk)
{
    struct errnomon_key key = {};
    u32 heard = 0, data = 0, idle;
    u64 ms;
    u8 state = from->state;

    if (state == TCP_SYN_SENT || state == TCP_SYN_RECV || state == TCP_NEW_SYN_RECV || state == TCP_LISTEN ||
        state == TCP_CLOSE)
        return;
    bpf_probe_read_kernel(&heard, sizeof(heard), sk + OFF_TCP_SOCK_RCV_TSTAMP);
    bpf_probe_read_kernel(&data, sizeof(data), sk + OFF_INET_CONNECTION_SOCK_ICSK_ACK_LRCVTIME);
    if ((s32)(data - heard) > 0)
        heard = data;
    idle = (u32)bpf_jiffies64() - heard;
    if ((s32)idle < 0)
        idle = 0;
    ms = (u64)idle * 1000 / KERNEL_HZ;
    key.tgid = from->tgid;
    key.cgroup = from->cgroup;
    key.port = from->port;
    __builtin_memcpy(key.comm, from->comm, sizeof(key.comm));
    key.code = idle_bucket(ms);
    count(&key, METRIC_TCP_RESET_IDLE);
    key.code = RESET_IDLE_SUM;
    count_by(&key, METRIC_TCP_RESET_IDLE, ms);
}
#else
static __always_inline void reset_idle(struct errnomon_key *from, void *sk) {}
#endif

#ifdef HAVE_tcp__tcp_receive_reset
/* tcp_receive_reset(sk) */
RAW_TRACEPOINT_PROBE(tcp_receive_reset)
{
    void *sk = (void *)ctx->args[0];
    struct errnomon_key key = {};
    struct errnomon_owner *o = owner_of(sk);

    key_from_sock(&key, sk, o);
    /* fires inside tcp_reset(), before the state changes: this is the state the RST hit */
    key.state = sock_state(sk);
    count(&key, METRIC_TCP_RESETS_RECEIVED);
    reset_idle(&key, sk);
    socket_event(EVENT_RESET_RECEIVED, &key, sk, o, 0);
#ifdef OFF_SOCK_SK_ERR
    /* A reset in SYN_SENT fails the attempt with ECONNREFUSED, always. Counted here, before tcp_reset()
     * publishes the error: the program may take it with SO_ERROR before SYN_SENT -> CLOSE reads it. */
    if (key.state == TCP_SYN_SENT && attempt_pending(o))
        connect_failed(sk, o, ECONNREFUSED);
#endif
    return 0;
}
#endif

#define TCPHDR_RST 0x04
#define TCPHDR_SYN 0x02
#define TCPHDR_ACK 0x10

#if defined(OFF_SK_BUFF_HEAD) && defined(OFF_SK_BUFF_NETWORK_HEADER) && defined(OFF_SK_BUFF_TRANSPORT_HEADER)
/* The segment's buffer and its network and transport header offsets in it; 0 when not set. */
static __always_inline int segment_headers(void *skb, void **head, u16 *nh, u16 *th)
{
    bpf_probe_read_kernel(head, sizeof(*head), skb + OFF_SK_BUFF_HEAD);
    bpf_probe_read_kernel(nh, sizeof(*nh), skb + OFF_SK_BUFF_NETWORK_HEADER);
    bpf_probe_read_kernel(th, sizeof(*th), skb + OFF_SK_BUFF_TRANSPORT_HEADER);
    return *head && *nh != 0xffff && *th != 0xffff;
}
#endif

/* Remote address and service port from the segment a reset answers: skb->head + network/transport header.
 * *tcp_flags: the segment's flags byte. */
static __always_inline int peer_from_segment(struct errnomon_key *key, void *skb, u8 *tcp_flags)
{
#if defined(OFF_SK_BUFF_HEAD) && defined(OFF_SK_BUFF_NETWORK_HEADER) && defined(OFF_SK_BUFF_TRANSPORT_HEADER)
    void *head = 0;
    u16 nh = 0, th = 0, ports[2] = {};
    u8 version = 0, flags = 0;

    if (!segment_headers(skb, &head, &nh, &th))
        return 0;
    bpf_probe_read_kernel(&version, 1, head + nh);
    version >>= 4;
    if (version == 4) {
        bpf_probe_read_kernel(key->remote, 4, head + nh + 12); /* iphdr.saddr */
        key->family = AF_INET;
    } else if (version == 6) {
        bpf_probe_read_kernel(key->remote, 16, head + nh + 8); /* ipv6hdr.saddr */
        key->family = AF_INET6;
    } else {
        return 0;
    }
    bpf_probe_read_kernel(ports, sizeof(ports), head + th);   /* tcphdr.source, dest */
    bpf_probe_read_kernel(&flags, 1, head + th + 13);
    *tcp_flags = flags;
    ports[0] = ntohs(ports[0]);
    ports[1] = ntohs(ports[1]);
    if ((flags & (TCPHDR_SYN | TCPHDR_ACK)) == TCPHDR_SYN)
        key->port = ports[1];  /* a SYN names the port it dials */
    else
        key->port = service_port(ports[1], ports[0]);
    return 1;
#else
    return 0;
#endif
}

/* A reset's event without a full socket to read (a listener's, or for no socket): the connection's addresses
 * and ports from the segment it answers, whose destination is this host, so that the daemon can join the
 * event to the reset its other end receives when that end is on this host too. */
static __always_inline void event_segment(struct errnomon_event *e, void *skb)
{
#if defined(OFF_SK_BUFF_HEAD) && defined(OFF_SK_BUFF_NETWORK_HEADER) && defined(OFF_SK_BUFF_TRANSPORT_HEADER)
    void *head = 0;
    u16 nh = 0, th = 0, ports[2] = {};

    if (!segment_headers(skb, &head, &nh, &th))
        return;
    if (e->family == AF_INET)
        bpf_probe_read_kernel(e->local, 4, head + nh + 16);  /* iphdr.daddr */
    else if (e->family == AF_INET6)
        bpf_probe_read_kernel(e->local, 16, head + nh + 24); /* ipv6hdr.daddr */
    else
        return;
    bpf_probe_read_kernel(ports, sizeof(ports), head + th);   /* tcphdr.source, dest */
    e->remote_port = ntohs(ports[0]);
    e->local_port = ntohs(ports[1]);
#endif
}

/* A reset sent: its facts from the socket when it has a full one, else from the segment it answers. */
static __always_inline void reset_sent_event(struct errnomon_key *key, void *sk, struct errnomon_owner *o,
                                             void *skb)
{
    struct errnomon_event *e = event_begin(EVENT_RESET_SENT, key);
    if (!e)
        return;
    if (sk)
        event_socket(e, sk, o);
    else if (skb)
        event_segment(e, skb);
    event_submit(e);
}

#ifdef HAVE_tcp__tcp_send_reset
/* tcp_send_reset(sk, skb[, reason]): sk is NULL for a segment no socket wanted (6.10+), skb is NULL for
 * a reset the socket sends on its own (abort, linger 0). */
RAW_TRACEPOINT_PROBE(tcp_send_reset)
{
    void *sk = (void *)ctx->args[0];
    void *skb = (void *)ctx->args[1];
    struct errnomon_key key = {};
    struct errnomon_owner *o = 0;
    u8 state = 0, tcp_flags = 0;

    if (sk) {
        o = owner_of(sk);
        state = sock_state(sk);
    }
    if (o) {
        key_from_owner(&key, o);
    } else if (skb && peer_from_segment(&key, skb, &tcp_flags)) {
        /* a listener, or no socket: the peer is the segment's sender, not the listener's 0.0.0.0 */
        if (state == TCP_LISTEN) {
            struct errnomon_listener *l = listeners.lookup(&key.port);
            if (l) {
                key.tgid = l->owner.tgid;
                key.cgroup = l->owner.cgroup;
                __builtin_memcpy(key.comm, l->owner.comm, sizeof(key.comm));
            }
        }
    } else if (sk) {
        peer_from_sock(&key, sk, sock_family(sk));
    }
    key.state = state;
#ifdef HAVE_TCP_SEND_RESET_REASON
    key.code = (u16)ctx->args[2];
#endif
    count(&key, METRIC_TCP_RESETS_SENT);
    /* a listener's or time-wait socket's own addresses are not the connection's: the segment's peer only */
    reset_sent_event(&key, state == TCP_LISTEN ? 0 : sk, o, skb);
    return 0;
}
#endif

/* ---- errors the kernel records on sockets ---- */

#ifdef OFF_SOCK_SK_ERR
/* An error the kernel recorded on a socket (sk->sk_err), reported through sk_error_report().
 * socket_error_reports keeps errors of established or accepted connections (and of sockets whose history is
 * unknown); a socket this host was connecting fails in SYN_SENT -> CLOSE above. */
static __always_inline int error_report(void *sk)
{
    struct errnomon_key key = {};
    struct errnomon_owner *o;
    u16 family, dport = 0;
    int err = 0;

    family = sock_family(sk);
    if (family != AF_INET && family != AF_INET6)
        return 0;
    bpf_probe_read_kernel(&err, sizeof(err), sk + OFF_SOCK_SK_ERR);
    bpf_probe_read_kernel(&dport, sizeof(dport), sk + 12);
    /* spurious reports: error 0 after a failed connect, dport 0 when a SO_LINGER {1,0} socket closes */
    if (err <= 0 || dport == 0)
        return 0;
    o = owner_of(sk);
    if (o && (o->flags & (OWNER_CONNECTED | OWNER_ESTABLISHED)) == OWNER_CONNECTED) {
        /* A failed connection attempt, not an error report. A timer's failure (SYN retries, ETIMEDOUT) is
         * reported while the socket is still in SYN_SENT, before the timer closes it: counted here, while the
         * error is certainly on the socket. The program this report wakes may read it with SO_ERROR, which
         * clears it, before the timer's SYN_SENT -> CLOSE, where it would then read 0 (seen under load: 1-2 of
         * 60). Every other failure is counted when the socket leaves SYN_SENT. */
        if (sock_state(sk) == TCP_SYN_SENT && attempt_pending(o))
            connect_failed(sk, o, err);
        return 0;
    }
    key_from_sock(&key, sk, o);
    key.code = err;
    count(&key, METRIC_SOCKET_ERROR_REPORTS);
    return 0;
}
#endif

#if defined(HAVE_sock__inet_sk_error_report) && defined(OFF_SOCK_SK_ERR)
/* inet_sk_error_report(sk): 5.14+ */
RAW_TRACEPOINT_PROBE(inet_sk_error_report)
{
    return error_report((void *)ctx->args[0]);
}
#endif

/* ---- SIGPIPE ---- */

#if defined(HAVE_signal__signal_generate) && defined(HAVE_signal__signal_deliver)
/* signal_generate(sig, info, task, group, result) */
RAW_TRACEPOINT_PROBE(signal_generate)
{
    u32 tid;
    struct generated g = {};
    if ((int)ctx->args[0] != SIGPIPE_NUM)
        return 0;
    /* a socket write signals the writing thread itself; the EPIPE send that follows confirms it */
    if (ctx->args[2] != bpf_get_current_task())
        return 0;
    tid = bpf_get_current_pid_tgid();
    g.ns = bpf_ktime_get_ns();
    g.result = (u32)ctx->args[4];
    sigpipe_generated.update(&tid, &g);
    return 0;
}

/* signal_deliver(sig, info, ka) */
RAW_TRACEPOINT_PROBE(signal_deliver)
{
    int sig = (int)ctx->args[0];
    u32 tgid;
    u64 handler = 0;
    struct errnomon_key *pending;
    struct errnomon_key key;

    if (sig != SIGPIPE_NUM && sig != SIGKILL_NUM)
        return 0;
    tgid = bpf_get_current_pid_tgid() >> 32;
    pending = sigpipe_pending.lookup(&tgid);
    if (!pending)
        return 0;
    key = *pending;
    sigpipe_pending.delete(&tgid);
    /* ka->sa.sa_handler: the first member of k_sigaction and of sigaction on every architecture */
    bpf_probe_read_kernel(&handler, sizeof(handler), (void *)ctx->args[2]);
    /* a fatal SIGPIPE is turned into a group-wide SIGKILL; a handled one arrives as itself */
    if (sig == SIGPIPE_NUM && handler > 1)
        key.code = SIGPIPE_HANDLED;
    else if (handler == 0)
        key.code = SIGPIPE_KILLED;
    else
        return 0;
    count(&key, METRIC_SIGPIPE);
    return 0;
}
#endif


/* ---- function hooks: the rungs below a missing tracepoint (monitor/loader.py SIGNALS) ---- */

/* send/recv return values before 6.3: what sock->ops->sendmsg/recvmsg (and ->sendpage, before 6.5) return
 * for AF_INET/AF_INET6 and unix stream/seqpacket sockets is what the socket call returns, the value
 * sock_send_length reports. */
#ifdef OFF_SOCKET_SK

/* fexit: ctx[0..n-1] are the arguments, ctx[n] the return value (FEXIT_<fn> = n, from BTF). The success path
 * returns at once, as in the tracepoint programs. */
#define SOCKET_CALL_FEXIT(fn, op)                                   \
    KRETFUNC_PROBE(fn, void *sock)                                  \
    {                                                               \
        int ret = (int)ctx[FEXIT_##fn];                             \
        if (ret >= 0)                                               \
            return 0;                                               \
        return io_error(socket_sk(ctx[0]), ret, op);                \
    }

#ifdef FEXIT_inet_sendmsg
SOCKET_CALL_FEXIT(inet_sendmsg, OP_SEND)
#endif
#ifdef FEXIT_inet6_sendmsg
SOCKET_CALL_FEXIT(inet6_sendmsg, OP_SEND)
#endif
#ifdef FEXIT_inet_sendpage
SOCKET_CALL_FEXIT(inet_sendpage, OP_SEND)
#endif
#ifdef FEXIT_inet_recvmsg
SOCKET_CALL_FEXIT(inet_recvmsg, OP_RECV)
#endif
#ifdef FEXIT_inet6_recvmsg
SOCKET_CALL_FEXIT(inet6_recvmsg, OP_RECV)
#endif
#ifdef FEXIT_unix_stream_sendmsg
SOCKET_CALL_FEXIT(unix_stream_sendmsg, OP_SEND)
#endif
#ifdef FEXIT_unix_seqpacket_sendmsg
SOCKET_CALL_FEXIT(unix_seqpacket_sendmsg, OP_SEND)
#endif
#ifdef FEXIT_unix_stream_recvmsg
SOCKET_CALL_FEXIT(unix_stream_recvmsg, OP_RECV)
#endif
#ifdef FEXIT_unix_seqpacket_recvmsg
SOCKET_CALL_FEXIT(unix_seqpacket_recvmsg, OP_RECV)
#endif

/* kretprobe: the return value only; the entry kprobe keeps the struct socket for it, per thread (a thread
 * is in at most one of these calls; LRU: a return the kernel missed leaves an entry that ages out). */
#if defined(KRETPROBE_inet_sendmsg) || defined(KRETPROBE_inet6_sendmsg) || defined(KRETPROBE_inet_sendpage) || \
    defined(KRETPROBE_inet_recvmsg) || defined(KRETPROBE_inet6_recvmsg) || defined(KRETPROBE_unix_stream_sendmsg) || \
    defined(KRETPROBE_unix_seqpacket_sendmsg) || defined(KRETPROBE_unix_stream_recvmsg) || \
    defined(KRETPROBE_unix_seqpacket_recvmsg)
BPF_TABLE("lru_hash", u32, u64, socket_calls, 16384); /* tid -> struct socket * of the call in flight */

/* Written in place: an update and a delete per call cost some 700 instructions more than a lookup each
 * (measured in the guests, docs/BENCHMARKS.md); a thread's entry stays, zeroed between calls, until LRU
 * eviction. A return whose entry the kernel missed finds 0 and is not counted. */
static __always_inline int socket_call_entry(struct pt_regs *ctx)
{
    u32 tid = bpf_get_current_pid_tgid();
    u64 sock = PT_REGS_PARM1(ctx);
    u64 *slot = socket_calls.lookup(&tid);
    if (slot)
        *slot = sock;
    else
        socket_calls.update(&tid, &sock);
    return 0;
}

static __always_inline int socket_call_return(struct pt_regs *ctx, int op)
{
    u32 tid = bpf_get_current_pid_tgid();
    u64 *slot = socket_calls.lookup(&tid), s;
    int ret = (int)PT_REGS_RC(ctx);
    if (!slot)
        return 0;
    s = *slot;
    *slot = 0;
    if (ret >= 0 || !s)
        return 0;
    return io_error(socket_sk(s), ret, op);
}

/* one program per macro: bcc registers only the first function of an expansion */
#define SOCKET_CALL_ENTRY(fn) \
    int errnomon_entry__##fn(struct pt_regs *ctx) { return socket_call_entry(ctx); }
#define SOCKET_CALL_RETURN(fn, op) \
    int errnomon_return__##fn(struct pt_regs *ctx) { return socket_call_return(ctx, op); }
#endif

#ifdef KRETPROBE_inet_sendmsg
SOCKET_CALL_ENTRY(inet_sendmsg)
SOCKET_CALL_RETURN(inet_sendmsg, OP_SEND)
#endif
#ifdef KRETPROBE_inet6_sendmsg
SOCKET_CALL_ENTRY(inet6_sendmsg)
SOCKET_CALL_RETURN(inet6_sendmsg, OP_SEND)
#endif
#ifdef KRETPROBE_inet_sendpage
SOCKET_CALL_ENTRY(inet_sendpage)
SOCKET_CALL_RETURN(inet_sendpage, OP_SEND)
#endif
#ifdef KRETPROBE_inet_recvmsg
SOCKET_CALL_ENTRY(inet_recvmsg)
SOCKET_CALL_RETURN(inet_recvmsg, OP_RECV)
#endif
#ifdef KRETPROBE_inet6_recvmsg
SOCKET_CALL_ENTRY(inet6_recvmsg)
SOCKET_CALL_RETURN(inet6_recvmsg, OP_RECV)
#endif
#ifdef KRETPROBE_unix_stream_sendmsg
SOCKET_CALL_ENTRY(unix_stream_sendmsg)
SOCKET_CALL_RETURN(unix_stream_sendmsg, OP_SEND)
#endif
#ifdef KRETPROBE_unix_seqpacket_sendmsg
SOCKET_CALL_ENTRY(unix_seqpacket_sendmsg)
SOCKET_CALL_RETURN(unix_seqpacket_sendmsg, OP_SEND)
#endif
#ifdef KRETPROBE_unix_stream_recvmsg
SOCKET_CALL_ENTRY(unix_stream_recvmsg)
SOCKET_CALL_RETURN(unix_stream_recvmsg, OP_RECV)
#endif
#ifdef KRETPROBE_unix_seqpacket_recvmsg
SOCKET_CALL_ENTRY(unix_seqpacket_recvmsg)
SOCKET_CALL_RETURN(unix_seqpacket_recvmsg, OP_RECV)
#endif
#endif /* OFF_SOCKET_SK */

/* error reports before 5.14: TCP sockets report through their sk_error_report callback, sock_def_error_report */
#ifdef OFF_SOCK_SK_ERR
#ifdef FENTRY_sock_def_error_report
KFUNC_PROBE(sock_def_error_report, void *sk)
{
    return error_report((void *)ctx[0]);
}
#endif
#ifdef KPROBE_sock_def_error_report
int errnomon_kprobe__sock_def_error_report(struct pt_regs *ctx)
{
    return error_report((void *)PT_REGS_PARM1(ctx));
}
#endif
#endif

/* Resets sent before 6.10 that tcp:tcp_send_reset does not show: tcp_v{4,6}_send_reset(sk, skb) traces only
 * full sockets, after returning early for a segment that is itself a reset. Here: the others, a segment no
 * socket wanted (sk NULL: NO_SOCKET) and a time-wait socket's (TCP_TIMEWAIT_SOCKET), labelled with the
 * reasons 6.10 gives them. Not seen here (as before 6.10's tracepoint): a socketless segment whose route
 * is not local, and one failing its TCP-MD5 signature; both are dropped without a reset. */
#if defined(OFF_SK_BUFF_HEAD) && defined(OFF_SK_BUFF_NETWORK_HEADER) && defined(OFF_SK_BUFF_TRANSPORT_HEADER)
static __always_inline int reset_without_full_socket(void *sk, void *skb)
{
    struct errnomon_key key = {};
    u8 state = 0, tcp_flags = 0;

    if (sk) {
        state = sock_state(sk);
        if (state != TCP_TIME_WAIT && state != TCP_NEW_SYN_RECV)
            return 0;  /* a full socket: the tracepoint counts it */
    }
    if (!skb || !peer_from_segment(&key, skb, &tcp_flags) || (tcp_flags & TCPHDR_RST))
        return 0;
    key.state = state;
    key.code = !sk ? RESET_REASON_NO_SOCKET : state == TCP_TIME_WAIT ? RESET_REASON_TIMEWAIT_SOCKET : 0;
    count(&key, METRIC_TCP_RESETS_SENT);
    reset_sent_event(&key, sk, 0, skb);
    return 0;
}

#ifdef FENTRY_tcp_v4_send_reset
KFUNC_PROBE(tcp_v4_send_reset, void *sk)
{
    return reset_without_full_socket((void *)ctx[0], (void *)ctx[1]);
}
#endif
#ifdef FENTRY_tcp_v6_send_reset
KFUNC_PROBE(tcp_v6_send_reset, void *sk)
{
    return reset_without_full_socket((void *)ctx[0], (void *)ctx[1]);
}
#endif
#ifdef KPROBE_tcp_v4_send_reset
int errnomon_kprobe__tcp_v4_send_reset(struct pt_regs *ctx)
{
    return reset_without_full_socket((void *)PT_REGS_PARM1(ctx), (void *)PT_REGS_PARM2(ctx));
}
#endif
#ifdef KPROBE_tcp_v6_send_reset
int errnomon_kprobe__tcp_v6_send_reset(struct pt_regs *ctx)
{
    return reset_without_full_socket((void *)PT_REGS_PARM1(ctx), (void *)PT_REGS_PARM2(ctx));
}
#endif
#endif

/* The TTLs of a connection's segments (see segment_ttl): the handshake's last segment, and a reset */
#if defined(HAVE_SEGMENT_TTLS) && defined(KPROBE_tcp_init_transfer)
int errnomon_kprobe__tcp_init_transfer(struct pt_regs *ctx)
{
    struct errnomon_owner *o = owner_of((void *)PT_REGS_PARM1(ctx));
    void *skb = (void *)PT_REGS_PARM3(ctx);
    if (o && skb)
        o->peer_ttl = segment_ttl(skb);
    return 0;
}
#endif
#if defined(HAVE_SEGMENT_TTLS) && defined(KPROBE_tcp_reset)
int errnomon_kprobe__tcp_reset(struct pt_regs *ctx)
{
    struct errnomon_owner *o = owner_of((void *)PT_REGS_PARM1(ctx));
    void *skb = (void *)PT_REGS_PARM2(ctx);
    if (o && skb)
        o->rst_ttl = segment_ttl(skb);
    return 0;
}
#endif

/* The last rung of send/recv, opt-in (kernel.syscall_tracepoints): the system calls' own tracepoints. The
 * enter keeps the fd per thread, the exit finds its socket through current->files (an inode of type socket:
 * read/write/readv/writev on pipes and files are not counted) and reads the return value. Every system call
 * of every process then takes the kernel's traced path: only where no other rung exists. */
#if (defined(SYSCALLS_SEND_ERRORS) || defined(SYSCALLS_RECV_ERRORS)) && defined(HAVE_FD_SOCK)
BPF_TABLE("lru_hash", u32, u32, syscall_fds, 16384); /* tid -> fd of the socket call in flight */

static __always_inline int syscall_entered(u64 fd)
{
    u32 tid = bpf_get_current_pid_tgid(), f = fd;
    syscall_fds.update(&tid, &f);
    return 0;
}

static __always_inline int syscall_exited(long ret, int op)
{
    u32 tid = bpf_get_current_pid_tgid(), fd;
    u32 *fdp = syscall_fds.lookup(&tid);
    if (!fdp)
        return 0;
    fd = *fdp;
    syscall_fds.delete(&tid);
    if (ret >= 0)
        return 0;
    return io_error(fd_sock(fd), (int)ret, op);
}

/* one TRACEPOINT_PROBE each, written out: bcc builds each args struct from the function's own name */
#ifdef SYSCALLS_SEND_ERRORS
#if defined(HAVE_syscalls__sys_enter_sendto) && defined(HAVE_syscalls__sys_exit_sendto)
TRACEPOINT_PROBE(syscalls, sys_enter_sendto) { return syscall_entered(args->fd); }
TRACEPOINT_PROBE(syscalls, sys_exit_sendto) { return syscall_exited(args->ret, OP_SEND); }
#endif
#if defined(HAVE_syscalls__sys_enter_sendmsg) && defined(HAVE_syscalls__sys_exit_sendmsg)
TRACEPOINT_PROBE(syscalls, sys_enter_sendmsg) { return syscall_entered(args->fd); }
TRACEPOINT_PROBE(syscalls, sys_exit_sendmsg) { return syscall_exited(args->ret, OP_SEND); }
#endif
#if defined(HAVE_syscalls__sys_enter_sendmmsg) && defined(HAVE_syscalls__sys_exit_sendmmsg)
TRACEPOINT_PROBE(syscalls, sys_enter_sendmmsg) { return syscall_entered(args->fd); }
TRACEPOINT_PROBE(syscalls, sys_exit_sendmmsg) { return syscall_exited(args->ret, OP_SEND); }
#endif
#if defined(HAVE_syscalls__sys_enter_write) && defined(HAVE_syscalls__sys_exit_write)
TRACEPOINT_PROBE(syscalls, sys_enter_write) { return syscall_entered(args->fd); }
TRACEPOINT_PROBE(syscalls, sys_exit_write) { return syscall_exited(args->ret, OP_SEND); }
#endif
#if defined(HAVE_syscalls__sys_enter_writev) && defined(HAVE_syscalls__sys_exit_writev)
TRACEPOINT_PROBE(syscalls, sys_enter_writev) { return syscall_entered(args->fd); }
TRACEPOINT_PROBE(syscalls, sys_exit_writev) { return syscall_exited(args->ret, OP_SEND); }
#endif
#if defined(HAVE_syscalls__sys_enter_sendfile64) && defined(HAVE_syscalls__sys_exit_sendfile64)
TRACEPOINT_PROBE(syscalls, sys_enter_sendfile64) { return syscall_entered(args->out_fd); }
TRACEPOINT_PROBE(syscalls, sys_exit_sendfile64) { return syscall_exited(args->ret, OP_SEND); }
#endif
#endif /* SYSCALLS_SEND_ERRORS */
#ifdef SYSCALLS_RECV_ERRORS
#if defined(HAVE_syscalls__sys_enter_recvfrom) && defined(HAVE_syscalls__sys_exit_recvfrom)
TRACEPOINT_PROBE(syscalls, sys_enter_recvfrom) { return syscall_entered(args->fd); }
TRACEPOINT_PROBE(syscalls, sys_exit_recvfrom) { return syscall_exited(args->ret, OP_RECV); }
#endif
#if defined(HAVE_syscalls__sys_enter_recvmsg) && defined(HAVE_syscalls__sys_exit_recvmsg)
TRACEPOINT_PROBE(syscalls, sys_enter_recvmsg) { return syscall_entered(args->fd); }
TRACEPOINT_PROBE(syscalls, sys_exit_recvmsg) { return syscall_exited(args->ret, OP_RECV); }
#endif
#if defined(HAVE_syscalls__sys_enter_recvmmsg) && defined(HAVE_syscalls__sys_exit_recvmmsg)
TRACEPOINT_PROBE(syscalls, sys_enter_recvmmsg) { return syscall_entered(args->fd); }
TRACEPOINT_PROBE(syscalls, sys_exit_recvmmsg) { return syscall_exited(args->ret, OP_RECV); }
#endif
#if defined(HAVE_syscalls__sys_enter_read) && defined(HAVE_syscalls__sys_exit_read)
TRACEPOINT_PROBE(syscalls, sys_enter_read) { return syscall_entered(args->fd); }
TRACEPOINT_PROBE(syscalls, sys_exit_read) { return syscall_exited(args->ret, OP_RECV); }
#endif
#if defined(HAVE_syscalls__sys_enter_readv) && defined(HAVE_syscalls__sys_exit_readv)
TRACEPOINT_PROBE(syscalls, sys_enter_readv) { return syscall_entered(args->fd); }
TRACEPOINT_PROBE(syscalls, sys_exit_readv) { return syscall_exited(args->ret, OP_RECV); }
#endif
#endif /* SYSCALLS_RECV_ERRORS */
#endif
