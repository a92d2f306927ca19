/*
 * Servers a test started do not outlive it. redis-server, PostgreSQL and
 * nginx daemonize, so they are not our children and a parent-death signal
 * cannot reach them; an atexit hook does not run when the test dies by
 * abort(), a sanitizer report (which ends with _exit), alarm() or SIGKILL
 * (CTest's timeout). So the first reaper_watch forks a small watchdog that
 * holds the read end of a pipe whose write end only this process has
 * (close-on-exec). However this process ends, the kernel closes that end;
 * the watchdog reads EOF and sends each pid still watched its signal (then
 * SIGCONT, for a server the test had SIGSTOPped), unless the pid now names
 * another process (its start time differs), and exits.
 *
 *     redis_start();
 *     reaper_watch(redis_pid, SIGTERM);
 *     ...
 *     reaper_forget(redis_pid);   // before or after stopping it
 *
 * Everything is static so any test may include it. Best effort: if the
 * watchdog cannot be started the test runs as before.
 */
#ifndef NT_TEST_REAPER_H
#define NT_TEST_REAPER_H

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#define REAPER_MAX 32

static int reaper_fd = -1; /* the write end; -1 before the first watch */

struct reaper_rec {
    int32_t pid;
    int32_t sig; /* 0: forget */
    uint64_t start;
};

/* The start time of pid (field 22 of /proc/PID/stat), 0 if none. Only
 * async-signal-safe calls: the watchdog runs it in a fork of a process
 * that may have threads. */
static inline uint64_t reaper__start_time(pid_t pid)
{
    char path[40], buf[512], num[16];
    int n = 0;
    uint64_t v = (uint64_t)pid;
    do {
        num[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    memcpy(path, "/proc/", 6);
    int len = 6;
    while (n)
        path[len++] = num[--n];
    memcpy(path + len, "/stat", 6);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    ssize_t got = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (got <= 0) return 0;
    buf[got] = '\0';
    /* After "pid (comm)": the command may hold spaces and parentheses. */
    char *p = strrchr(buf, ')');
    if (!p) return 0;
    for (int field = 2; field < 22 && *p; p++)
        if (*p == ' ') field++;
    uint64_t t = 0;
    while (*p >= '0' && *p <= '9')
        t = t * 10 + (uint64_t)(*p++ - '0');
    return t;
}

static inline void reaper__run(int rd)
{
    struct reaper_rec live[REAPER_MAX];
    int n = 0;
    for (int s = 1; s < NSIG; s++)
        if (s != SIGKILL && s != SIGSTOP) signal(s, SIG_IGN); /* Ctrl-C hits the group */
    for (;;) {
        struct reaper_rec r;
        ssize_t got = read(rd, &r, sizeof r);
        if (got < 0 && errno == EINTR) continue;
        if (got != (ssize_t)sizeof r) break; /* EOF: the test is gone */
        for (int i = 0; i < n; i++) {
            if (live[i].pid == r.pid) {
                live[i] = live[--n];
                break;
            }
        }
        if (r.sig != 0 && n < REAPER_MAX) live[n++] = r;
    }
    for (int i = 0; i < n; i++) {
        if (reaper__start_time(live[i].pid) != live[i].start) continue;
        kill(live[i].pid, live[i].sig);
        kill(live[i].pid, SIGCONT);
    }
    _exit(0);
}

static inline int reaper__send(pid_t pid, int sig, uint64_t start)
{
    struct reaper_rec r = {.pid = (int32_t)pid, .sig = sig, .start = start};
    return write(reaper_fd, &r, sizeof r) == (ssize_t)sizeof r ? 0 : -1;
}

/* Kills pid with sig (then SIGCONT) when this process ends, however it
 * ends, unless reaper_forget(pid) came first. 0, or -1 (not watched). */
static inline int reaper_watch(pid_t pid, int sig)
{
    if (pid <= 0 || sig <= 0) return -1;
    if (reaper_fd < 0) {
        int fds[2];
        if (pipe2(fds, O_CLOEXEC) != 0) return -1;
        fflush(NULL);
        pid_t w = fork();
        if (w < 0) {
            close(fds[0]);
            close(fds[1]);
            return -1;
        }
        if (w == 0) {
            /* Keep only the read end: no copy of the write end (or of
             * CTest's output pipe) may outlive the test here. */
            int null = open("/dev/null", O_RDWR);
            for (int fd = 0; fd < 3; fd++)
                if (null >= 0) dup2(null, fd);
            for (int fd = 3; fd < 1024; fd++)
                if (fd != fds[0]) close(fd);
            reaper__run(fds[0]);
        }
        close(fds[0]);
        reaper_fd = fds[1];
    }
    uint64_t start = reaper__start_time(pid);
    if (!start) return -1;
    return reaper__send(pid, sig, start);
}

/* pid is stopped (or about to be) by the test itself: no longer watched. */
static inline void reaper_forget(pid_t pid)
{
    if (reaper_fd >= 0 && pid > 0) reaper__send(pid, 0, 0);
}

#endif
