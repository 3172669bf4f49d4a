/* connloop: loopback TCP connections opened and closed in a loop, one at a time, for a fixed time.
 *
 *   connloop SECONDS
 *
 * One listener on 127.0.0.1:<ephemeral>. Each iteration: socket, connect (blocking), accept, a 1-byte write
 * from the client read by the server, then close of both ends (the client first, a FIN each way: no reset, no
 * error). What a connection costs the kernel's hooks: errnomon's inet_sock_set_state programs at each state
 * change and, where kprobes attach, its TTL kprobes (tcp_init_transfer on both ends). Prints one JSON line:
 * {"connections": N, "seconds": S, "rate": N/S, "failed": F}. Bounded: SECONDS <= 600, and at most 10^7
 * connections. Needs net.ipv4.tcp_tw_reuse (the default, 2, reuses time-wait ports on loopback).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    double seconds = argc > 1 ? atof(argv[1]) : 0;
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(addr);
    long n = 0, failed = 0;
    int ls, one = 1;
    char byte = 'x';
    double start, end;

    if (seconds <= 0 || seconds > 600) {
        fprintf(stderr, "usage: connloop SECONDS (0 < SECONDS <= 600)\n");
        return 2;
    }
    ls = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (ls < 0 || bind(ls, (struct sockaddr *)&addr, sizeof(addr)) || listen(ls, 16) ||
        getsockname(ls, (struct sockaddr *)&addr, &len)) {
        perror("connloop: listener");
        return 1;
    }
    start = now();
    end = start + seconds;
    while (n < 10000000 && now() < end) {
        int c = socket(AF_INET, SOCK_STREAM, 0), a = -1;
        if (c < 0 || connect(c, (struct sockaddr *)&addr, sizeof(addr)) ||
            (a = accept(ls, NULL, NULL)) < 0 || write(c, &byte, 1) != 1 || read(a, &byte, 1) != 1)
            failed++;
        else
            n++;
        if (c >= 0)
            close(c);
        if (a >= 0)
            close(a);
        if (failed > 1000)
            break;
    }
    end = now();
    printf("{\"connections\": %ld, \"seconds\": %.3f, \"rate\": %.1f, \"failed\": %ld}\n", n, end - start,
           n / (end - start), failed);
    return failed > 1000;
}
