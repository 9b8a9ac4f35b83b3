/* _exchange.c: the HTTP shim's side of its channel, on top of the C client's channel layer.
 *
 * Built with kernel_abi/c/shmd_client.c into one shared library by http_shim/_native.py and
 * called through ctypes, so the shim reaches its channel without importing numba.
 *
 * One exchange at a time, without blocking the event loop: shim_begin (on the loop's thread)
 * stamps and submits the requests an event-loop tick gathered, spins briefly for the answers when
 * the caller asks (a lone request: nothing else for the loop to do), then hands the channel to a
 * reaper thread, which waits for the answers (spin, then sleep on the completion ring), submits
 * what did not fit, notices a daemon that died or hangs, and when every answer is in (or the
 * deadline passed, or the channel failed) hands the channel back and makes the shim's eventfd
 * readable. The event loop waits on that fd with everything else, so it parses and writes other
 * connections' requests while the daemon works. The channel has one owner at a time (the C
 * client is not thread-safe): the loop's thread until shim_begin, the reaper until it signals.
 *
 * Request ids are base_id + index, so an answer finds its slot by subtraction and an answer left
 * over from an earlier exchange (past its deadline) falls outside [base_id, base_id + n) and is
 * dropped.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "shmd_client.h"

#define REAP_CHUNK 64u
#define CHECK_EVERY_NS 50000000ull /* while waiting: how often to look at the daemon's pid and heartbeat */

enum { IDLE = 0, ARMED = 1, STOP = 2 }; /* the reaper's futex word */

struct shim_channel {
    struct shmd_channel ch;
    uint64_t dropped; /* answers for ids not in the current exchange */
    int efd;          /* readable when an exchange is over */
    pthread_t reaper;
    int reaper_started;
    _Atomic uint32_t state; /* IDLE, ARMED (the reaper owns the channel), STOP */
    /* The exchange in flight: written by shim_begin before ARMED, read back after the signal. */
    struct shmd_request *reqs;
    struct shmd_response *out;
    uint8_t *done;
    unsigned n, sent, answered;
    uint64_t base_id, spin_ns, deadline_ns, stale_ns;
    int result; /* answers collected, or a negative SHMD_E* code */
};

static void futex_wait_private(_Atomic uint32_t *word, uint32_t expected)
{
    syscall(SYS_futex, word, FUTEX_WAIT_PRIVATE, expected, NULL, NULL, 0);
}

static void futex_wake_private(_Atomic uint32_t *word)
{
    syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

/* Collect the exchange's answers until all are in, the channel fails, the deadline passes, or
 * (with nothing yet at) until_ns, spinning spin_ns before each sleep. Returns the number answered
 * so far or a negative SHMD_E* code; whoever owns the channel calls it. */
static int collect(struct shim_channel *s, uint64_t until_ns, uint64_t spin_ns)
{
    struct shmd_response got[REAP_CHUNK];
    unsigned n = s->n;
    uint64_t next_check = shmd_now_ns() + CHECK_EVERY_NS;
    if (until_ns > s->deadline_ns)
        until_ns = s->deadline_ns;
    while (s->answered < n) {
        if (atomic_load_explicit(&s->state, memory_order_relaxed) == STOP)
            break;
        if (s->sent < n) {
            int k = shmd_sq_submit(&s->ch, s->reqs + s->sent, n - s->sent);
            if (k < 0)
                return k;
            s->sent += (unsigned)k;
        }
        int ready = shmd_cq_wait(&s->ch, spin_ns, next_check < until_ns ? next_check : until_ns);
        if (ready < 0)
            return ready;
        if (ready == 0) {
            uint64_t now = shmd_now_ns();
            if (now >= until_ns)
                break;
            if (now >= next_check) {
                int rc = shmd_channel_check_daemon(&s->ch, s->stale_ns);
                if (rc != SHMD_OK)
                    return rc;
                next_check = now + CHECK_EVERY_NS;
            }
            continue;
        }
        int k;
        while ((k = shmd_cq_reap(&s->ch, got, REAP_CHUNK)) > 0) {
            for (int j = 0; j < k; j++) {
                uint64_t idx = got[j].request_id - s->base_id;
                if (idx < n && !s->done[idx]) {
                    s->out[idx] = got[j];
                    s->done[idx] = 1;
                    s->answered++;
                } else {
                    s->dropped++;
                }
            }
        }
        if (k < 0)
            return k;
        shmd_sq_nudge(&s->ch); /* the daemon may have stopped draining our SQ for want of CQ room */
    }
    return (int)s->answered;
}

static void *reaper_main(void *arg)
{
    struct shim_channel *s = arg;
    for (;;) {
        uint32_t st = atomic_load_explicit(&s->state, memory_order_acquire);
        if (st == STOP)
            return NULL;
        if (st == IDLE) {
            futex_wait_private(&s->state, IDLE);
            continue;
        }
        s->result = collect(s, s->deadline_ns, s->spin_ns);
        /* Hand the channel back (release: the answers and result are visible to whoever sees IDLE),
         * then wake the loop. A STOP set meanwhile stays. */
        uint32_t armed = ARMED;
        atomic_compare_exchange_strong_explicit(&s->state, &armed, IDLE, memory_order_acq_rel, memory_order_acquire);
        uint64_t one = 1;
        while (write(s->efd, &one, sizeof one) < 0 && errno == EINTR)
            ;
    }
}

/* Attach channel `name` of `prefix` (exclusive hold) and start its reaper. NULL on failure with
 * the reason in msg. */
struct shim_channel *shim_open(const char *prefix, const char *name, char *msg, size_t msg_len)
{
    struct shim_channel *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(msg, msg_len, "out of memory");
        return NULL;
    }
    s->efd = -1;
    int rc = shmd_channel_attach(&s->ch, prefix, name);
    if (rc != SHMD_OK) {
        snprintf(msg, msg_len, "%s", s->ch.msg);
        free(s);
        return NULL;
    }
    s->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (s->efd < 0 || (errno = pthread_create(&s->reaper, NULL, reaper_main, s)) != 0) {
        snprintf(msg, msg_len, "channel %s: cannot start the shim's reaper: %s", name, strerror(errno));
        if (s->efd >= 0)
            close(s->efd);
        shmd_channel_detach(&s->ch);
        free(s);
        return NULL;
    }
    s->reaper_started = 1;
    return s;
}

/* Stop the reaper (an exchange in flight ends within one wait slice), detach, free. */
void shim_close(struct shim_channel *s)
{
    if (!s)
        return;
    if (s->reaper_started) {
        atomic_store_explicit(&s->state, STOP, memory_order_release);
        futex_wake_private(&s->state);
        pthread_join(s->reaper, NULL);
    }
    if (s->efd >= 0)
        close(s->efd);
    shmd_channel_detach(&s->ch);
    free(s);
}

const char *shim_message(const struct shim_channel *s) { return s->ch.msg; }

uint64_t shim_dropped(const struct shim_channel *s) { return s->dropped; }

/* The fd that becomes readable (eventfd: read 8 bytes to reset it) when an exchange is over. */
int shim_fd(const struct shim_channel *s) { return s->efd; }

/* Start an exchange: stamp reqs[i] with request_id = base_id + i and the submit time, and submit
 * them; the answers go to out[i], marking done[i]. First waits for them here, spinning at most
 * inline_ns (0: not at all): 1 when they all came (or the exchange failed: see shim_result), with
 * no reaper involved. Else 0: the reaper waits for the rest (spinning spin_ns before each sleep)
 * and signals shim_fd; the buffers must stay valid until then. A negative SHMD_E* code (the
 * message in shim_message) when the channel is unusable: nothing was sent. */
int shim_begin(struct shim_channel *s, struct shmd_request *reqs, struct shmd_response *out, uint8_t *done,
               unsigned n, uint64_t base_id, uint64_t inline_ns, uint64_t spin_ns, uint64_t deadline_ns,
               uint64_t stale_ns)
{
    if (atomic_load_explicit(&s->state, memory_order_acquire) != IDLE)
        return SHMD_EINVAL; /* one exchange at a time; the caller keeps that rule */
    int rc = shmd_channel_check(&s->ch);
    if (rc != SHMD_OK)
        return rc;
    uint64_t submit = shmd_now_ns();
    for (unsigned i = 0; i < n; i++) {
        reqs[i].request_id = base_id + i;
        reqs[i].submit_ns = submit;
    }
    s->reqs = reqs, s->out = out, s->done = done, s->n = n, s->sent = 0, s->answered = 0;
    s->base_id = base_id, s->spin_ns = spin_ns, s->deadline_ns = deadline_ns, s->stale_ns = stale_ns;
    /* Submitted from this thread either way: the daemon starts at once. */
    s->result = collect(s, submit + inline_ns, inline_ns);
    if (s->result < 0 || s->result == (int)n || shmd_now_ns() >= deadline_ns)
        return 1;
    atomic_store_explicit(&s->state, ARMED, memory_order_release);
    futex_wake_private(&s->state);
    return 0;
}

/* After shim_fd signalled: the answers collected (n unless the deadline passed), or a negative
 * SHMD_E* code with the message in shim_message. */
int shim_result(const struct shim_channel *s) { return s->result; }

/* A request is on its way (it came in and is being parsed): wake the daemon now if it sleeps, so
 * its wake-up (~20-30 us here) overlaps the parse and the request finds it spinning (a wake-up
 * that finds no work makes the daemon's loop spin for its spin window). 1 if it slept, else 0.
 * Only the SQ's shared wake-up word is touched, never the channel's own state: safe from the
 * loop's thread while the reaper owns the channel. */
int shim_prewake(struct shim_channel *s)
{
    struct shmd_ring_header *hdr = s->ch.sq.shm_hdr;
    if (!(atomic_load_explicit((_Atomic uint32_t *)&hdr->flags, memory_order_acquire) & SHMD_RING_NEED_WAKEUP))
        return 0;
    /* As a producer's wake-up (shmd_client.c): bump the word, then wake its sleeper. */
    atomic_fetch_add_explicit((_Atomic uint32_t *)&hdr->wake_seq, 1, memory_order_seq_cst);
    syscall(SYS_futex, &hdr->wake_seq, FUTEX_WAKE, 1, NULL, NULL, 0);
    return 1;
}
