/* storm: socket errors as fast as the machine allows, from several processes, each counting its own.
 *
 *   storm MODE PROCS SECONDS PREFIX
 *
 * MODE epipe:   each process opens a loopback TCP connection, shuts its own sending side down
 *               (shutdown SHUT_WR) and sends 1 byte with MSG_NOSIGNAL in a loop: every send fails with EPIPE
 *               (errnomon: socket_errors{errno="EPIPE",op="send"}).
 * MODE refused: each process connect()s a fresh socket to a loopback port that is bound but not listening:
 *               every connect fails with ECONNREFUSED (socket_errors{errno="ECONNREFUSED",op="connect"}).
 *
 * Process i names itself PREFIX<i> (prctl PR_SET_NAME, at most 15 characters) before its first error.
 * All start together (after every process is set up) and stop after SECONDS. Each prints one JSON line:
 *   {"comm": "...", "errors": N, "unexpected": M, "seconds": T}
 * errors counts only calls that failed with the expected errno; unexpected counts every other outcome.
 * Bounded: SECONDS <= 600, PROCS <= 64, at most 2e9 calls per process.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what)
{
    fprintf(stderr, "storm: %s: %s\n", what, strerror(errno));
    exit(1);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int listener(struct sockaddr_in *sa, int do_listen)
{
    socklen_t len = sizeof(*sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    memset(sa, 0, sizeof(*sa));
    sa->sin_family = AF_INET;
    sa->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)sa, sizeof(*sa)) || (do_listen && listen(fd, 8)) ||
        getsockname(fd, (struct sockaddr *)sa, &len))
        die("bind");
    return fd;
}

static void child(int idx, const char *mode, double seconds, const char *prefix, int go)
{
    char comm[16];
    struct sockaddr_in sa;
    int epipe = !strcmp(mode, "epipe");
    int fd = -1, lfd, peer = -1;
    unsigned long errors = 0, unexpected = 0, calls = 0;
    char byte = 'x', c;

    snprintf(comm, sizeof(comm), "%s%d", prefix, idx);
    if (prctl(PR_SET_NAME, comm, 0, 0, 0))
        die("prctl");
    lfd = listener(&sa, epipe);
    if (epipe) {
        fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)))
            die("connect");
        peer = accept(lfd, 0, 0);
        if (peer < 0 || shutdown(fd, SHUT_WR))
            die("accept/shutdown");
    }
    /* wait for the start signal: every process is set up */
    if (read(go, &c, 1) != 1)
        die("go");
    double start = now(), end = start + seconds, t;
    if (epipe) {
        while (calls < 2000000000UL) {
            if (send(fd, &byte, 1, MSG_NOSIGNAL) < 0 && errno == EPIPE)
                errors++;
            else
                unexpected++;
            if ((++calls & 255) == 0 && now() >= end)
                break;
        }
    } else {
        while (calls < 2000000000UL) {
            int s = socket(AF_INET, SOCK_STREAM, 0);
            if (s < 0)
                die("socket");
            if (connect(s, (struct sockaddr *)&sa, sizeof(sa)) < 0 && errno == ECONNREFUSED)
                errors++;
            else
                unexpected++;
            close(s);
            if ((++calls & 15) == 0 && now() >= end)
                break;
        }
    }
    t = now() - start;
    printf("{\"comm\": \"%s\", \"errors\": %lu, \"unexpected\": %lu, \"seconds\": %.6f}\n", comm, errors,
           unexpected, t);
    fflush(stdout);
    close(fd);
    close(peer);
    close(lfd);
    _exit(0);
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: storm epipe|refused PROCS SECONDS PREFIX\n");
        return 2;
    }
    const char *mode = argv[1];
    int procs = atoi(argv[2]);
    double seconds = atof(argv[3]);
    const char *prefix = argv[4];
    if ((strcmp(mode, "epipe") && strcmp(mode, "refused")) || procs < 1 || procs > 64 || seconds <= 0 ||
        seconds > 600 || strlen(prefix) > 12) {
        fprintf(stderr, "storm: MODE epipe|refused, PROCS 1..64, SECONDS 0..600, PREFIX <= 12 chars\n");
        return 2;
    }
    int gofds[2];
    if (pipe(gofds))
        die("pipe");
    signal(SIGPIPE, SIG_IGN);
    for (int i = 0; i < procs; i++) {
        pid_t pid = fork();
        if (pid < 0)
            die("fork");
        if (pid == 0) {
            close(gofds[1]);
            child(i, mode, seconds, prefix, gofds[0]);
        }
    }
    close(gofds[0]);
    /* children block on read(go) once set up; give them the signal together */
    usleep(200000);
    for (int i = 0; i < procs; i++)
        if (write(gofds[1], "g", 1) != 1)
            die("write go");
    int status, failed = 0;
    for (int i = 0; i < procs; i++) {
        if (wait(&status) < 0)
            die("wait");
        if (!WIFEXITED(status) || WEXITSTATUS(status))
            failed++;
    }
    return failed ? 1 : 0;
}
