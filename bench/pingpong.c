/* pingpong: the per-call hot path of every process on the host.
 *
 * One thread, one real loopback TCP connection (127.0.0.1), both ends in this thread:
 * send on A, recv on B, send on B, recv on A = one iteration (4 socket calls, all succeeding).
 * Pinned to one CPU, runs for a fixed time, prints one JSON line with iterations per second.
 *
 *   pingpong SIZE SECONDS CPU
 *
 * Bounded: stops after SECONDS (checked every 64 iterations) or 1e9 iterations.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what)
{
    fprintf(stderr, "pingpong: %s: %s\n", what, strerror(errno));
    exit(1);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void send_all(int fd, const char *buf, size_t n)
{
    while (n) {
        ssize_t r = send(fd, buf, n, 0);
        if (r < 0)
            die("send");
        buf += r;
        n -= (size_t)r;
    }
}

static void recv_all(int fd, char *buf, size_t n)
{
    while (n) {
        ssize_t r = recv(fd, buf, n, 0);
        if (r <= 0)
            die("recv");
        buf += r;
        n -= (size_t)r;
    }
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: pingpong SIZE SECONDS CPU\n");
        return 2;
    }
    size_t size = strtoul(argv[1], 0, 10);
    double seconds = atof(argv[2]);
    int cpu = atoi(argv[3]);
    if (size < 1 || size > (1 << 20) || seconds <= 0 || seconds > 600) {
        fprintf(stderr, "pingpong: SIZE 1..1048576, SECONDS 0..600\n");
        return 2;
    }

    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof(set), &set))
        die("sched_setaffinity");

    int one = 1;
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    if (lfd < 0)
        die("socket");
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    if (bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) || listen(lfd, 1) ||
        getsockname(lfd, (struct sockaddr *)&sa, &len))
        die("listen");
    int a = socket(AF_INET, SOCK_STREAM, 0);
    if (a < 0 || connect(a, (struct sockaddr *)&sa, sizeof(sa)))
        die("connect");
    int b = accept(lfd, 0, 0);
    if (b < 0)
        die("accept");
    close(lfd);
    setsockopt(a, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(b, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

    char *buf = calloc(1, size);
    if (!buf)
        die("calloc");
    /* warm up: caches, socket buffers */
    for (int i = 0; i < 1000; i++) {
        send_all(a, buf, size);
        recv_all(b, buf, size);
        send_all(b, buf, size);
        recv_all(a, buf, size);
    }

    unsigned long iters = 0;
    double start = now(), end = start + seconds, t = start;
    while (iters < 1000000000UL) {
        send_all(a, buf, size);
        recv_all(b, buf, size);
        send_all(b, buf, size);
        recv_all(a, buf, size);
        if ((++iters & 63) == 0 && (t = now()) >= end)
            break;
    }
    t = now();
    printf("{\"size\": %zu, \"seconds\": %.6f, \"iterations\": %lu, \"rate\": %.1f, \"cpu\": %d}\n", size,
           t - start, iters, iters / (t - start), cpu);
    return 0;
}
