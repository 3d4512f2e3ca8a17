/* The dispatch-gap job for `spool bench`: the smallest process that can say when it ran.
 *
 *   stamp FILE [MS]
 *
 * (MS: milliseconds to sleep between the two stamps, a job's "work"; default 0)
 *
 * appends two lines to FILE (O_APPEND, one write(2) each, so concurrent runs cannot interleave):
 *
 *   S <pid> <CLOCK_MONOTONIC ns> <CLOCK_REALTIME ns>    first thing in main(), right after exec
 *   E <pid> <CLOCK_MONOTONIC ns> <CLOCK_REALTIME ns>    last thing before exit
 *
 * CLOCK_MONOTONIC is one clock for every process on the machine, so E of one job and S of the
 * next are directly comparable; it is the clock Python's time.monotonic_ns() reads. The harness
 * compiles this with `cc -O2` into its scratch directory (no shell, no libraries beyond libc).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static long long ns(clockid_t clock) {
    struct timespec t;
    clock_gettime(clock, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static void stamp(int fd, char kind) {
    long long mono = ns(CLOCK_MONOTONIC), real = ns(CLOCK_REALTIME);
    char line[96];
    int n = snprintf(line, sizeof line, "%c %d %lld %lld\n", kind, (int)getpid(), mono, real);
    if (write(fd, line, (size_t)n) != n) _exit(3);
}

int main(int argc, char **argv) {
    long long mono = ns(CLOCK_MONOTONIC), real = ns(CLOCK_REALTIME);
    if (argc < 2) return 2;
    int fd = open(argv[1], O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return 2;
    char line[96];
    int n = snprintf(line, sizeof line, "S %d %lld %lld\n", (int)getpid(), mono, real);
    if (write(fd, line, (size_t)n) != n) return 3;
    long ms = argc > 2 ? strtol(argv[2], NULL, 10) : 0;
    if (ms > 0) {
        struct timespec pause = {ms / 1000, (ms % 1000) * 1000000L};
        while (nanosleep(&pause, &pause) != 0) {}
    }
    stamp(fd, 'E');
    _exit(0); /* no atexit handlers or stdio flush after the last stamp */
}
