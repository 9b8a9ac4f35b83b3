/* pace: paced round trips for `python -m bench pace`.
 *
 *   pace shmd PREFIX CHANNEL hit|miss GAP_NS N BUDGET_MS DAEMON_PID < request.bin
 *   pace mq|sock|spin|futex|futexv GAP_NS N BUDGET_MS
 *
 * shmd: one shmd_client_predict per round trip (the public C client API only);
 *       hit repeats one request (served from the cache after the first),
 *       miss sets SHMD_REQ_NO_CACHE (every request is inferred).
 * mq:   POSIX message-queue echo with a forked child, both sides blocking in
 *       mq_receive (request-sized message out, response-sized back).
 * sock: UNIX stream socket echo with a forked child, both sides blocking in read.
 * spin: the raw floor: a forked child and this process ping-pong one 64-bit
 *       word each on shared memory, both spinning (no system call at all).
 * futex: shmd's own wake-up mechanism, bare: a forked child and this process
 *       ping-pong one 32-bit word each on shared memory, both blocking
 *       (FUTEX_WAKE after every store, FUTEX_WAIT while the word is unchanged).
 * futexv: as futex, but the child sleeps as the daemon does, with futex_waitv
 *       on its word and FUTEXV_IDLE more (each in its own page, like one SQ
 *       word per channel segment): what a single doorbell word would save.
 *
 * Pacing is open loop on an absolute schedule: request i goes at the first slot
 * start + k * GAP_NS (CLOCK_MONOTONIC, clock_nanosleep TIMER_ABSTIME) not earlier
 * than the end of the previous round trip; slots missed because a round trip
 * overran are skipped and counted, as a periodic tick would. GAP_NS 0 is back to
 * back. WARMUP unmeasured round trips go first (0.25 s at most). The run stops after N measured
 * round trips or BUDGET_MS, whichever comes first.
 *
 * Output: one line per measured round trip (ns, from just before the send to just
 * after the answer), then a summary line:
 *   done n=.. wall_ns=.. client_cpu_ns=.. peer_cpu_ns=.. skipped=.. hits=.. fallbacks=..
 * client_cpu_ns is this process's getrusage over the measured loop; peer_cpu_ns
 * is the peer's (daemon's or echo child's) CPU time over the same loop, all its
 * threads (clock_getcpuclockid: ns resolution, no /proc parsing).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <mqueue.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <linux/futex.h>

#include "shmd_client.h"

#ifndef SYS_futex_waitv
#define SYS_futex_waitv 449 /* x86-64, Linux 5.16 */
#endif

#define WARMUP 200                /* unmeasured round trips first ... */
#define WARMUP_MAX_NS 250000000u  /* ... for at most 0.25 s (a spin peer descheduled on a busy host) */
#define REQ_SIZE sizeof(struct shmd_request)
#define RESP_SIZE sizeof(struct shmd_response)
#define CHILD_IDLE_S 10 /* an echo child gives up after this long without a request */
#define FUTEXV_IDLE 2   /* futexv: words the child also sleeps on (the daemon's other channels) */
#define PAGE 4096

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static void die(const char *what)
{
    perror(what);
    exit(2);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t rusage_cpu_ns(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000u +
           (uint64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000u;
}

/* CPU time (all threads) of process `pid` so far; 0 when pid is 0 or gone. */
static uint64_t process_cpu_ns(pid_t pid)
{
    clockid_t clk;
    struct timespec ts;
    if (pid <= 0 || clock_getcpuclockid(pid, &clk) != 0 || clock_gettime(clk, &ts) != 0)
        return 0;
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ------------------------------------------------------------- transports */

/* One round trip; returns 0, or -1 on an error (message printed). */
struct transport {
    int (*roundtrip)(struct transport *t);
    pid_t peer;
    /* shmd */
    struct shmd_client *client;
    struct shmd_request tmpl;
    long hits, fallbacks;
    /* mq / sock */
    mqd_t to_child, from_child;
    int fd;
    /* spin: ping at [0], pong at [8] (separate cache lines) */
    _Atomic uint64_t *words;
    /* futex, futexv: ping word in page 0, pong word in page 1, idle words in pages 2.. */
    _Atomic uint32_t *fwords;
    uint64_t seq;
    char buf[REQ_SIZE > RESP_SIZE ? REQ_SIZE : RESP_SIZE];
};

static int shmd_rt(struct transport *t)
{
    struct shmd_request req = t->tmpl;
    struct shmd_response resp;
    int src = shmd_client_predict(t->client, &req, &resp);
    if (src < 0) {
        fprintf(stderr, "pace: shmd_client_predict: %s: %s\n", shmd_strerror(src),
                shmd_client_last_error(t->client));
        return -1;
    }
    t->fallbacks += src == SHMD_SOURCE_FALLBACK;
    t->hits += (resp.flags & SHMD_RESP_CACHE_HIT) != 0;
    return 0;
}

static int mq_rt(struct transport *t)
{
    if (mq_send(t->to_child, t->buf, REQ_SIZE, 0) != 0 || mq_receive(t->from_child, t->buf, sizeof t->buf, NULL) < 0) {
        perror("pace: mq round trip");
        return -1;
    }
    return 0;
}

static int full_io(int fd, char *buf, size_t len, int writing)
{
    for (size_t done = 0; done < len;) {
        ssize_t k = writing ? write(fd, buf + done, len - done) : read(fd, buf + done, len - done);
        if (k <= 0) {
            if (k < 0 && errno == EINTR)
                continue;
            return -1;
        }
        done += (size_t)k;
    }
    return 0;
}

static int sock_rt(struct transport *t)
{
    if (full_io(t->fd, t->buf, REQ_SIZE, 1) || full_io(t->fd, t->buf, RESP_SIZE, 0)) {
        perror("pace: socket round trip");
        return -1;
    }
    return 0;
}

static int spin_rt(struct transport *t)
{
    uint64_t s = ++t->seq;
    atomic_store_explicit(&t->words[0], s, memory_order_release);
    uint64_t deadline = 0;
    for (unsigned spins = 1; atomic_load_explicit(&t->words[8], memory_order_acquire) != s; spins++) {
        cpu_relax();
        if ((spins & 0xFFFF) == 0) { /* the child died or hangs: do not spin forever */
            uint64_t now = now_ns();
            if (!deadline)
                deadline = now + 2000000000u;
            else if (now > deadline) {
                fprintf(stderr, "pace: spin peer stopped answering\n");
                return -1;
            }
        }
    }
    return 0;
}

/* Shared (not FUTEX_PRIVATE_FLAG) futex calls, as the daemon's and the clients'. */
static void fx_wake(_Atomic uint32_t *w) { syscall(SYS_futex, w, FUTEX_WAKE, 1, NULL, NULL, 0); }

/* Sleep while *w == seen, at most timeout_s; the word's value after. */
static uint32_t fx_wait(_Atomic uint32_t *w, uint32_t seen, time_t timeout_s)
{
    struct timespec ts = {.tv_sec = timeout_s};
    uint32_t v;
    while ((v = atomic_load_explicit(w, memory_order_acquire)) == seen) {
        if (syscall(SYS_futex, w, FUTEX_WAIT, seen, &ts, NULL, 0) != 0 && errno == ETIMEDOUT)
            return atomic_load_explicit(w, memory_order_acquire);
    }
    return v;
}

#define FWORD(t, page) ((_Atomic uint32_t *)((char *)(t)->fwords + (size_t)(page) * PAGE))

static int futex_rt(struct transport *t)
{
    uint32_t s = (uint32_t)++t->seq;
    atomic_store_explicit(FWORD(t, 0), s, memory_order_seq_cst);
    fx_wake(FWORD(t, 0));
    if (fx_wait(FWORD(t, 1), s - 1, 2) != s) {
        fprintf(stderr, "pace: futex peer stopped answering\n");
        return -1;
    }
    return 0;
}

/* Answer each new ping word with the same value in the pong word; waits with
 * futex_waitv on the ping word and `idle` other words when idle > 0. */
static void futex_child(struct transport *t, int idle)
{
    uint32_t seen = 0;
    struct futex_waitv wv[1 + FUTEXV_IDLE];
    for (int i = 0; i <= idle; i++)
        wv[i] = (struct futex_waitv){.uaddr = (uint64_t)(uintptr_t)FWORD(t, i ? i + 1 : 0), .flags = FUTEX_32};
    for (;;) {
        uint32_t v = atomic_load_explicit(FWORD(t, 0), memory_order_acquire);
        if (v == seen) {
            struct timespec dl;
            clock_gettime(CLOCK_MONOTONIC, &dl);
            dl.tv_sec += CHILD_IDLE_S;
            long rc;
            if (idle) {
                wv[0].val = seen;
                rc = syscall(SYS_futex_waitv, wv, (unsigned)(1 + idle), 0, &dl, CLOCK_MONOTONIC);
            } else {
                struct timespec rel = {.tv_sec = CHILD_IDLE_S};
                rc = syscall(SYS_futex, FWORD(t, 0), FUTEX_WAIT, seen, &rel, NULL, 0);
            }
            if (rc < 0 && errno == ETIMEDOUT)
                _exit(0);
            continue;
        }
        if (v == UINT32_MAX)
            _exit(0);
        seen = v;
        atomic_store_explicit(FWORD(t, 1), v, memory_order_seq_cst);
        fx_wake(FWORD(t, 1));
    }
}

/* The echo children: answer until told to stop, the parent goes, or CHILD_IDLE_S passes. */
static void mq_child(mqd_t in, mqd_t out)
{
    char buf[REQ_SIZE];
    for (;;) {
        struct timespec dl;
        clock_gettime(CLOCK_REALTIME, &dl);
        dl.tv_sec += CHILD_IDLE_S;
        ssize_t k = mq_timedreceive(in, buf, sizeof buf, NULL, &dl);
        if (k <= 0 || mq_send(out, buf, RESP_SIZE, 0) != 0)
            _exit(0);
    }
}

static void sock_child(int fd)
{
    char buf[REQ_SIZE];
    struct timeval idle = {.tv_sec = CHILD_IDLE_S};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &idle, sizeof idle);
    while (full_io(fd, buf, REQ_SIZE, 0) == 0 && full_io(fd, buf, RESP_SIZE, 1) == 0)
        ;
    _exit(0);
}

static void spin_child(_Atomic uint64_t *words)
{
    uint64_t seen = 0, idle_since = now_ns();
    for (unsigned spins = 1;; spins++) {
        uint64_t s = atomic_load_explicit(&words[0], memory_order_acquire);
        if (s == UINT64_MAX)
            _exit(0);
        if (s != seen) {
            seen = s;
            atomic_store_explicit(&words[8], s, memory_order_release);
            idle_since = 0;
            continue;
        }
        cpu_relax();
        if ((spins & 0xFFFF) == 0) {
            uint64_t now = now_ns();
            if (!idle_since)
                idle_since = now;
            else if (now - idle_since > CHILD_IDLE_S * 1000000000ull || getppid() == 1)
                _exit(0);
        }
    }
}

static pid_t fork_or_die(void)
{
    pid_t pid = fork();
    if (pid < 0)
        die("pace: fork");
    return pid;
}

static void open_echo(struct transport *t, const char *kind)
{
    if (strcmp(kind, "mq") == 0) {
        struct mq_attr attr = {.mq_maxmsg = 4, .mq_msgsize = REQ_SIZE};
        char names[2][64];
        mqd_t q[2];
        for (int i = 0; i < 2; i++) {
            snprintf(names[i], sizeof names[i], "/pace.%d.%d", (int)getpid(), i);
            q[i] = mq_open(names[i], O_RDWR | O_CREAT | O_EXCL, 0600, &attr);
            if (q[i] == (mqd_t)-1)
                die("pace: mq_open");
            mq_unlink(names[i]); /* nothing is left behind, whatever happens next */
        }
        t->peer = fork_or_die();
        if (t->peer == 0)
            mq_child(q[0], q[1]);
        t->to_child = q[0];
        t->from_child = q[1];
        t->roundtrip = mq_rt;
    } else if (strcmp(kind, "sock") == 0) {
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
            die("pace: socketpair");
        t->peer = fork_or_die();
        if (t->peer == 0) {
            close(sv[0]);
            sock_child(sv[1]);
        }
        close(sv[1]);
        t->fd = sv[0];
        t->roundtrip = sock_rt;
    } else if (strcmp(kind, "futex") == 0 || strcmp(kind, "futexv") == 0) {
        t->fwords = mmap(NULL, (2 + FUTEXV_IDLE) * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (t->fwords == MAP_FAILED)
            die("pace: mmap");
        t->peer = fork_or_die();
        if (t->peer == 0)
            futex_child(t, kind[5] == 'v' ? FUTEXV_IDLE : 0);
        t->roundtrip = futex_rt;
    } else {
        t->words = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (t->words == MAP_FAILED)
            die("pace: mmap");
        t->peer = fork_or_die();
        if (t->peer == 0)
            spin_child(t->words);
        t->roundtrip = spin_rt;
    }
}

static void close_echo(struct transport *t)
{
    if (t->roundtrip == spin_rt)
        atomic_store_explicit(&t->words[0], UINT64_MAX, memory_order_release);
    else if (t->roundtrip == sock_rt)
        close(t->fd); /* the child reads EOF */
    else if (t->roundtrip == futex_rt) {
        atomic_store_explicit(FWORD(t, 0), UINT32_MAX, memory_order_seq_cst);
        fx_wake(FWORD(t, 0));
    }
    else
        kill(t->peer, SIGTERM); /* a blocked mq_timedreceive would wait CHILD_IDLE_S */
    waitpid(t->peer, NULL, 0);
}

/* ------------------------------------------------------------------ main */

static int usage(void)
{
    fprintf(stderr, "usage: pace shmd PREFIX CHANNEL hit|miss GAP_NS N BUDGET_MS DAEMON_PID < request.bin\n"
                    "       pace mq|sock|spin|futex|futexv GAP_NS N BUDGET_MS\n");
    return 2;
}

int main(int argc, char **argv)
{
    struct transport t = {0};
    int shmd = argc == 9 && strcmp(argv[1], "shmd") == 0;
    int echo = argc == 5 && (!strcmp(argv[1], "mq") || !strcmp(argv[1], "sock") || !strcmp(argv[1], "spin") ||
                             !strcmp(argv[1], "futex") || !strcmp(argv[1], "futexv"));
    if (!shmd && !echo)
        return usage();
    char **rest = argv + (shmd ? 5 : 2);
    uint64_t gap = strtoull(rest[0], NULL, 10);
    long n = atol(rest[1]);
    uint64_t budget = strtoull(rest[2], NULL, 10) * 1000000u;
    if (n <= 0 || budget == 0)
        return usage();
    uint64_t *samples = calloc((size_t)n, sizeof *samples);
    if (!samples)
        die("pace: calloc");

    if (shmd) {
        if (fread(&t.tmpl, sizeof t.tmpl, 1, stdin) != 1)
            return usage();
        if (strcmp(argv[4], "miss") == 0)
            t.tmpl.flags |= SHMD_REQ_NO_CACHE;
        else if (strcmp(argv[4], "hit") != 0)
            return usage();
        struct shmd_client_config cfg = {.prefix = argv[2], .channel = argv[3], .timeout_ms = 5000};
        t.client = shmd_client_new(&cfg);
        if (!t.client || shmd_client_state(t.client) != SHMD_BREAKER_CLOSED) {
            fprintf(stderr, "pace: cannot attach %s/%s: %s\n", argv[2], argv[3],
                    t.client ? shmd_client_last_error(t.client) : "bad arguments");
            return 2;
        }
        t.peer = (pid_t)atol(argv[8]);
        t.roundtrip = shmd_rt;
    } else {
        open_echo(&t, argv[1]);
    }

    int rc = 0;
    uint64_t warm_end = now_ns() + WARMUP_MAX_NS;
    for (int i = 0; i < WARMUP && rc == 0 && now_ns() < warm_end; i++)
        rc = t.roundtrip(&t);
    t.hits = t.fallbacks = 0;
    long done = 0, skipped = 0;
    uint64_t cpu0 = rusage_cpu_ns(), peer0 = process_cpu_ns(t.peer);
    uint64_t start = now_ns(), end = start + budget, slot = 0;
    while (done < n && rc == 0) {
        uint64_t t0 = now_ns();
        if (t0 > end)
            break;
        if (gap) {
            uint64_t k = (t0 - start + gap - 1) / gap; /* first slot not in the past */
            if (k < slot)
                k = slot;
            skipped += (long)(k - slot);
            slot = k + 1;
            uint64_t at = start + k * gap;
            struct timespec ts = {.tv_sec = (time_t)(at / 1000000000u), .tv_nsec = (long)(at % 1000000000u)};
            while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
                ;
            t0 = now_ns();
        }
        rc = t.roundtrip(&t);
        if (rc == 0)
            samples[done++] = now_ns() - t0;
    }
    uint64_t wall = now_ns() - start;
    uint64_t cpu = rusage_cpu_ns() - cpu0, peer = process_cpu_ns(t.peer) - peer0;

    if (shmd)
        shmd_client_free(t.client);
    else
        close_echo(&t);
    for (long i = 0; i < done; i++)
        printf("%llu\n", (unsigned long long)samples[i]);
    printf("done n=%ld wall_ns=%llu client_cpu_ns=%llu peer_cpu_ns=%llu skipped=%ld hits=%ld fallbacks=%ld\n", done,
           (unsigned long long)wall, (unsigned long long)cpu, (unsigned long long)peer, skipped, t.hits, t.fallbacks);
    free(samples);
    return rc ? 1 : 0;
}
