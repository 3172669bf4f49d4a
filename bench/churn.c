/* churn: short-lived processes and connections on loopback, at a fixed rate, for a fixed time.
 *
 *   churn SECONDS RATE NAMES
 *
 * A server child (comm "churn-srv") accepts on 127.0.0.1:<ephemeral> and closes every other connection with
 * an RST (SO_LINGER {1,0}), the others with a FIN. Every 1/RATE s the main process forks a client that names
 * itself "churn%03d" (cycling over NAMES names: a bounded set of series), then
 *   - connects to the server, sends 32 bytes, reads the reply or the reset, sends again (MSG_NOSIGNAL);
 *   - connects to a loopback port that is bound but not listening (ECONNREFUSED);
 *   - sends on a connection it shut down itself (EPIPE);
 * and exits. Each client runs alone (the main process waits for it), so the load is the same on any machine
 * that keeps up with RATE. Prints one JSON line with the totals.
 * Bounded: SECONDS <= 3600, RATE <= 1000, NAMES <= 1000; every socket call has a 1 s timeout.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what)
{
    fprintf(stderr, "churn: %s: %s\n", what, strerror(errno));
    exit(1);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void timeouts(int fd)
{
    struct timeval tv = {.tv_sec = 1};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

static int bound(struct sockaddr_in *sa, int backlog)
{
    socklen_t len = sizeof(*sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    memset(sa, 0, sizeof(*sa));
    sa->sin_family = AF_INET;
    sa->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)sa, sizeof(*sa)) || (backlog && listen(fd, backlog)) ||
        getsockname(fd, (struct sockaddr *)sa, &len))
        die("bind");
    return fd;
}

static void server(int lfd, double end)
{
    unsigned long n = 0;
    char buf[64];
    prctl(PR_SET_NAME, "churn-srv", 0, 0, 0);
    while (now() < end) {
        struct pollfd p = {.fd = lfd, .events = POLLIN};
        if (poll(&p, 1, 200) <= 0)
            continue;
        int c = accept(lfd, 0, 0);
        if (c < 0)
            continue;
        timeouts(c);
        if (recv(c, buf, sizeof(buf), 0) > 0 && (n & 1) == 0)
            send(c, buf, 8, MSG_NOSIGNAL);
        if (n++ & 1) {
            struct linger lg = {.l_onoff = 1, .l_linger = 0};
            setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        }
        close(c);
    }
    _exit(0);
}

static void client(int idx, const struct sockaddr_in *srv, const struct sockaddr_in *closed)
{
    char comm[16], buf[32] = {0};
    snprintf(comm, sizeof(comm), "churn%03d", idx);
    prctl(PR_SET_NAME, comm, 0, 0, 0);

    int s = socket(AF_INET, SOCK_STREAM, 0);
    timeouts(s);
    if (connect(s, (const struct sockaddr *)srv, sizeof(*srv)) == 0) {
        send(s, buf, sizeof(buf), MSG_NOSIGNAL);
        recv(s, buf, sizeof(buf), 0);
        usleep(1000); /* let the FIN or RST arrive */
        send(s, buf, sizeof(buf), MSG_NOSIGNAL);
        recv(s, buf, sizeof(buf), 0);
    }
    close(s);

    s = socket(AF_INET, SOCK_STREAM, 0);
    connect(s, (const struct sockaddr *)closed, sizeof(*closed)); /* ECONNREFUSED */
    close(s);

    s = socket(AF_INET, SOCK_STREAM, 0);
    timeouts(s);
    if (connect(s, (const struct sockaddr *)srv, sizeof(*srv)) == 0) {
        shutdown(s, SHUT_WR);
        send(s, buf, 1, MSG_NOSIGNAL); /* EPIPE */
    }
    close(s);
    _exit(0);
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: churn SECONDS RATE NAMES\n");
        return 2;
    }
    double seconds = atof(argv[1]);
    int rate = atoi(argv[2]), names = atoi(argv[3]);
    if (seconds <= 0 || seconds > 3600 || rate < 1 || rate > 1000 || names < 1 || names > 1000) {
        fprintf(stderr, "churn: SECONDS 0..3600, RATE 1..1000, NAMES 1..1000\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    prctl(PR_SET_NAME, "churn-main", 0, 0, 0);
    struct sockaddr_in srv, closed;
    int lfd = bound(&srv, 128);
    int cfd = bound(&closed, 0); /* bound, never listening: connects are refused */
    double start = now(), end = start + seconds;
    pid_t spid = fork();
    if (spid < 0)
        die("fork");
    if (spid == 0)
        server(lfd, end + 2);
    close(lfd);

    unsigned long spawned = 0, failed = 0;
    double next = start;
    while (now() < end && spawned < 3600000UL) {
        pid_t pid = fork();
        if (pid < 0)
            die("fork");
        if (pid == 0)
            client((int)(spawned % (unsigned long)names), &srv, &closed);
        int status;
        if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status))
            failed++;
        spawned++;
        next += 1.0 / rate;
        double wait = next - now();
        if (wait > 0)
            usleep((useconds_t)(wait * 1e6));
    }
    double t = now() - start;
    kill(spid, SIGTERM);
    waitpid(spid, 0, 0);
    close(cfd);
    printf("{\"processes\": %lu, \"failed\": %lu, \"seconds\": %.3f, \"rate\": %.1f, \"names\": %d}\n", spawned,
           failed, t, spawned / t, names);
    return 0;
}
