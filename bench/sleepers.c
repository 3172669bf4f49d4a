/* A busy node's idle crowd, for bench/busy.py: N processes that only sleep, or N network namespaces that each
 * hold one listening socket (as a node's pods do).
 *
 *   sleepers N proc     N child processes in pause()
 *   sleepers N netns    N children, each in a network namespace of its own (unshare), listening on 0.0.0.0:8080
 *
 * Prints "ready N" once all are in place, then waits until its standard input closes (or SIGTERM) and ends them
 * all: each child also dies with its parent (PR_SET_PDEATHSIG), and a namespace with it. Bounded: N <= 20000. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static int child(int netns, int ready_fd)
{
    char ok = 1;
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    prctl(PR_SET_NAME, netns ? "bench-pod" : "bench-sleeper");
    if (netns) {
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(8080), .sin_addr.s_addr = htonl(INADDR_ANY)};
        int s;
        if (unshare(CLONE_NEWNET) != 0)
            ok = 0;
        s = socket(AF_INET, SOCK_STREAM, 0);
        if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(s, 128) != 0)
            ok = 0;
    }
    if (write(ready_fd, &ok, 1) != 1)
        _exit(1);
    close(ready_fd);
    for (;;)
        pause();
}

int main(int argc, char **argv)
{
    int n, netns, p[2], i, failed = 0;
    pid_t *pids;
    char c;
    if (argc != 3 || (n = atoi(argv[1])) <= 0 || n > 20000 ||
        (strcmp(argv[2], "proc") != 0 && strcmp(argv[2], "netns") != 0)) {
        fprintf(stderr, "usage: sleepers N proc|netns (N from 1 to 20000)\n");
        return 2;
    }
    netns = strcmp(argv[2], "netns") == 0;
    pids = calloc(n, sizeof(*pids));
    if (!pids || pipe(p) != 0)
        return 1;
    for (i = 0; i < n; i++) {
        pids[i] = fork();
        if (pids[i] < 0) {
            perror("fork");
            n = i;
            failed = 1;
            break;
        }
        if (pids[i] == 0) {
            close(p[0]);
            return child(netns, p[1]);
        }
    }
    close(p[1]);
    for (i = 0; i < n; i++) {
        if (read(p[0], &c, 1) != 1 || !c)
            failed = 1;
    }
    if (!failed) {
        printf("ready %d\n", n);
        fflush(stdout);
        while (read(0, &c, 1) > 0)
            ;
    }
    for (i = 0; i < n; i++)
        kill(pids[i], SIGKILL);
    while (wait(NULL) > 0 || errno == EINTR)
        ;
    return failed;
}
