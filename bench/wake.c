/* What this machine charges a thread for one wake-up from a sleep of a given length, doing nothing else.
 *
 * usage: wake <sleep microseconds> <count>
 * Sleeps <count> times with nanosleep() and prints, as JSON, the CPU time (CLOCK_THREAD_CPUTIME_ID) each
 * sleep-and-return cost: the scheduler's switch out and in, the timer, and whatever the machine adds to a
 * vCPU coming back from idle. footprint.py reports it beside the idle daemon's cost per wake-up. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static long long now(clockid_t c)
{
    struct timespec t;
    clock_gettime(c, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
    long long x = *(const long long *)a, y = *(const long long *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: wake <sleep microseconds> <count>\n");
        return 2;
    }
    long us = atol(argv[1]);
    int n = atoi(argv[2]);
    if (us <= 0 || n <= 0 || n > 100000) {
        fprintf(stderr, "wake: a positive sleep and a count of 1..100000\n");
        return 2;
    }
    long long *cpu = calloc(n, sizeof(*cpu));
    if (!cpu)
        return 1;
    struct timespec d = {us / 1000000, (us % 1000000) * 1000};
    long long total = 0;
    for (int i = 0; i < n; i++) {
        long long t0 = now(CLOCK_THREAD_CPUTIME_ID);
        nanosleep(&d, NULL);
        cpu[i] = now(CLOCK_THREAD_CPUTIME_ID) - t0;
        total += cpu[i];
    }
    qsort(cpu, n, sizeof(*cpu), cmp);
    printf("{\"sleep_us\": %ld, \"n\": %d, \"cpu_us_median\": %.1f, \"cpu_us_mean\": %.1f, \"cpu_us_max\": %.1f}\n",
           us, n, cpu[n / 2] / 1e3, total / 1e3 / n, cpu[n - 1] / 1e3);
    free(cpu);
    return 0;
}
