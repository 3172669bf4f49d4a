/* Structures shared between the BPF programs and the daemon.
 * Mirrored once, in monitor/abi.py; tests/unit/test_abi.py compiles this header and compares offsets. */
#ifndef ERRNOMON_H
#define ERRNOMON_H

#ifndef __KERNEL__
#include <linux/types.h>
#endif

#define ERRNOMON_COMM_LEN 16

/* op label of errnomon_socket_errors_total */
#define OP_SEND 1
#define OP_RECV 2
#define OP_CONNECT 3
#define OP_ACCEPT 4

/* action label of errnomon_sigpipe_total */
#define SIGPIPE_IGNORED 1
#define SIGPIPE_HANDLED 2
#define SIGPIPE_KILLED 3

/* code of errnomon_tcp_resets_sent_total where the kernel names no reason (before 6.10) but errnomon knows it:
 * decoded to the names 6.10 gives these resets. Far above the kernel's enum sk_rst_reason. */
#define RESET_REASON_NO_SOCKET 65281
#define RESET_REASON_TIMEWAIT_SOCKET 65282

/* errno of a connect failure whose error the kernel no longer holds (the program took it with SO_ERROR before
 * errnomon could read it, and only its cause is known to be an ICMP error): errno="unknown". Above any errno. */
#define ERRNO_UNKNOWN 65535

/* The key of the counting map; fields a metric does not use stay zero.
 * gen is the drain generation: the daemon only reads and deletes keys of the generation
 * the programs stopped writing one drain interval earlier, so no increment is lost. */
struct errnomon_key {
    __u32 tgid;
    __u16 port;      /* service port, host order; 0 = unknown */
    __u16 code;      /* errno, reset reason or SIGPIPE action, by metric */
    __u8 op;         /* OP_* */
    __u8 state;      /* TCP state (include/net/tcp_states.h numbering) */
    __u8 family;     /* AF_INET / AF_INET6 / AF_UNIX of remote; 0 = remote unknown */
    __u8 gen;
    __u8 metric;     /* METRIC_*: which counter this key feeds */
    __u8 pad[3];
    __u64 cgroup;    /* cgroup v2 id of the owner; 0 = unknown */
    __u8 remote[16]; /* IPv4 in the first 4 bytes; AF_UNIX: the path's hash (u64, unix_paths) in the first 8 */
    char comm[ERRNOMON_COMM_LEN];
};

/* The socket path of a unix socket's peer, by its hash (the remote of a key of family AF_UNIX; 0: the peer has
 * no address, remote="unnamed"). len: the bytes of sun_path the kernel holds (a pathname's trailing NUL
 * included); an abstract name starts with a NUL byte. UNIX_PATHS entries, LRU: the daemon reads it when it
 * decodes a key, and a path evicted by then is remote="unknown". */
#define UNIX_PATH_LEN 108 /* sizeof(sockaddr_un.sun_path) */
#define UNIX_PATH_WORDS 14 /* path[] hashed as u64 words, zero past len */
#define UNIX_PATHS 4096
#define UNIX_HASH_UNNAMED 0

struct errnomon_unix_path {
    __u32 len;
    __u32 pad;
    char path[UNIX_PATH_WORDS * 8];
};

/* Who owns a socket and whom it talks to, filled in process context. */
#define OWNER_CONNECTED 1 /* this host opened it: service port is the peer's */
#define OWNER_ACCEPTED 2  /* accepted from a listener: service port is ours */
#define OWNER_AMBIGUOUS 4 /* listeners of several programs share the port */
#define OWNER_ESTABLISHED 8 /* the handshake completed: later errors are not connect failures */
#define OWNER_CONNECT_FAILED 16 /* this connection attempt's failure is counted already */

struct errnomon_owner {
    __u32 tgid;
    __u16 port;
    __u8 family;
    __u8 flags;
    __u64 cgroup;
    __u8 remote[16];
    char comm[ERRNOMON_COMM_LEN];
    /* bpf_ktime_get_ns() when the connection became ESTABLISHED and when the peer's FIN arrived (it entered
     * CLOSE_WAIT or CLOSING); 0: not seen. Set from inet_sock_set_state, read only by error events. */
    __u64 established_ns;
    __u64 fin_ns;
    /* the IP TTL / IPv6 hop limit of the segment that completed the handshake and of the reset the connection
     * received; 0: not seen. Set by the kprobes on tcp_init_transfer and tcp_reset, read only by error events. */
    __u8 peer_ttl;
    __u8 rst_ttl;
    __u8 pad[6];
};

/* Who listens on a local port (key: the port, host order). count: listening sockets on the port.
 * Written by listen() in the programs and, for listeners that existed before errnomon started, by the daemon. */
struct errnomon_listener {
    struct errnomon_owner owner;
    __u32 count;
};

/* A listening socket the programs follow (listen_socks, keyed by socket pointer), from listen() to its close. */
struct errnomon_listen_sock {
    struct errnomon_owner owner; /* port: the listening port */
    __u32 drops;                 /* its drop counter when last read */
    __u32 pad;
    __u64 cookie;                /* its socket cookie as of the last sweep; 0 while it has none */
};

/* Written by the daemon; read by the programs on error paths only. */
#define COUNT_EAGAIN 1
#define COUNT_EINTR 2
#define COUNT_EINPROGRESS 4

struct errnomon_settings {
    __u32 gen;
    __u32 count_flags; /* COUNT_*: errnos that are normally dropped in the kernel */
    __u16 ephemeral_low;  /* net.ipv4.ip_local_port_range: ports the kernel hands out to clients, */
    __u16 ephemeral_high; /* never a service port */
    __u32 event_interval_ns; /* events.rate as ns between events (1e9 / rate); 0: no error events */
};

/* metric field of the key; also the index into the drops array (counts lost to a full map). */
#define METRIC_SOCKET_ERRORS 0
#define METRIC_SOCKET_ERROR_REPORTS 1
#define METRIC_TCP_RESETS_RECEIVED 2
#define METRIC_TCP_RESETS_SENT 3
#define METRIC_TCP_FINS_SENT 4
#define METRIC_SIGPIPE 5
#define METRIC_CONNECT_FAILURES 6
#define METRIC_TCP_FINS_RECEIVED 7
#define METRIC_LISTEN_DROPS 8 /* added in the kernel by the listener's drop counter's increase (bpf: listen_socks) */
#define METRIC_TCP_RESET_IDLE 9 /* a histogram: code is the bucket's index, or RESET_IDLE_SUM (n: milliseconds) */
#define METRICS 10

/* errnomon_tcp_reset_idle_seconds: buckets at common idle timeouts, in seconds (le), then +Inf */
#define RESET_IDLE_BUCKETS 10
#define RESET_IDLE_LE 1, 5, 15, 30, 60, 120, 350, 600, 900, 3600
#define RESET_IDLE_INF RESET_IDLE_BUCKETS
#define RESET_IDLE_SUM 65534

/* Listening sockets the programs follow (listen_socks), and how many of them sweep_listeners reads per run
 * (BPF_PROG_TEST_RUN passes at most 12 u64 arguments to a raw tracepoint program). */
#define LISTEN_SOCKETS 16384
#define LISTEN_SWEEP_BATCH 12

/* Error events: one record a socket error, reset or failed connect, on the `events` ring buffer, for the
 * daemon's GET /errors. Counting never depends on them. */
#define EVENT_SOCKET_ERROR 1   /* an error a socket call returned to the application (op: send, recv) */
#define EVENT_RESET_RECEIVED 2
#define EVENT_RESET_SENT 3
#define EVENT_CONNECT_FAILED 4

/* flags of errnomon_event */
#define EVENT_TCP_FACTS 1     /* jiffies, lsndtime, lrcvtime, bytes, total_retrans, srtt_us read from the tcp_sock */
#define EVENT_BYTES_ACKED 2   /* bytes_sent holds tcp_sock.bytes_acked (the kernel has no bytes_sent) */

/* reason of errnomon_events_dropped_total: index into the event_drops per-CPU array */
#define EVENT_DROP_RATE_LIMIT 0
#define EVENT_DROP_RING_FULL 1
#define EVENT_DROP_REASONS 2

/* pages of the events ring (a power of 2): 512 KiB, some 3,600 events between two reads of the daemon */
#define EVENTS_RING_PAGES 128

struct errnomon_event {
    __u64 ktime_ns;       /* bpf_ktime_get_ns() */
    __u64 cgroup;
    __u64 established_ns; /* from the owner entry; 0 unknown */
    __u64 fin_ns;         /* the peer's FIN, from the owner entry; 0 none seen */
    __u64 bytes_sent;     /* tcp_sock.bytes_sent (or bytes_acked, EVENT_BYTES_ACKED) */
    __u64 bytes_received; /* tcp_sock.bytes_received */
    __u32 tgid;
    __u32 tid;            /* 0 for kernel-side events (the owner's thread is not known) */
    __u32 jiffies;        /* (u32) bpf_jiffies64(): the clock of lsndtime and lrcvtime */
    __u32 lsndtime;       /* tcp_sock.lsndtime: jiffies of the last data sent */
    __u32 lrcvtime;       /* icsk_ack.lrcvtime: jiffies of the last data received */
    __u32 total_retrans;
    __u32 srtt_us;        /* smoothed RTT in us (tcp_sock.srtt_us >> 3) */
    __u16 code;           /* errno (socket error, connect failure) or reset reason (reset sent) */
    __u16 local_port;
    __u16 remote_port;
    __u16 port;           /* service port; 0 unknown */
    __u8 kind;            /* EVENT_* */
    __u8 op;              /* OP_* */
    __u8 family;          /* AF_INET / AF_INET6; 0 unknown */
    __u8 state;           /* TCP state at the event */
    __u8 flags;           /* EVENT_TCP_FACTS, ... */
    __u8 rst_ttl;         /* TTL / hop limit of the reset the connection received; 0 unknown (kprobe tcp_reset) */
    __u8 peer_ttl;        /* ... of the peer's last handshake segment; 0 unknown (kprobe tcp_init_transfer) */
    __u8 pad;
    __u8 local[16];       /* IPv4 in the first 4 bytes */
    __u8 remote[16];
    char comm[ERRNOMON_COMM_LEN];
};

#endif
