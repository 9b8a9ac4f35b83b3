/* _exchange.c: the HTTP shim's side of its channel, on top of the C client's channel layer.
 *
 * Built with kernel_abi/c/shmd_client.c into one shared library by http_shim/_native.py and
 * called through ctypes, so the shim reaches its channel without importing numba.
 *
 * One call per event-loop tick: shim_exchange submits every request the tick gathered and
 * returns when each has its answer, the deadline passes or the daemon is gone. It stamps
 * request ids base_id + index, so an answer finds its slot by subtraction and an answer left over
 * from an earlier exchange (past its deadline) falls outside [base_id, base_id + n) and is
 * dropped.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shmd_client.h"

#define REAP_CHUNK 64u
#define CHECK_EVERY_NS 50000000ull /* while waiting: how often to look at the daemon's pid and heartbeat */

struct shim_channel {
    struct shmd_channel ch;
    uint64_t dropped; /* answers for ids not in the current exchange */
};

/* Attach channel `name` of `prefix` (exclusive hold). NULL on failure with the reason in msg. */
struct shim_channel *shim_open(const char *prefix, const char *name, char *msg, size_t msg_len)
{
    struct shim_channel *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(msg, msg_len, "out of memory");
        return NULL;
    }
    int rc = shmd_channel_attach(&s->ch, prefix, name);
    if (rc != SHMD_OK) {
        snprintf(msg, msg_len, "%s", s->ch.msg);
        free(s);
        return NULL;
    }
    return s;
}

void shim_close(struct shim_channel *s)
{
    if (!s)
        return;
    shmd_channel_detach(&s->ch);
    free(s);
}

const char *shim_message(const struct shim_channel *s) { return s->ch.msg; }

uint64_t shim_dropped(const struct shim_channel *s) { return s->dropped; }

/* Stamp reqs[i] with request_id = base_id + i and the submit time, submit them and collect
 * their answers into out[i], marking done[i]. Waits by spinning up to spin_ns, then sleeping on the CQ.
 * Returns the number answered (n unless the deadline passed first), or a negative SHMD_E*
 * code (the message in shim_message) when the channel is corrupt or the daemon is gone. */
int shim_exchange(struct shim_channel *s, struct shmd_request *reqs, struct shmd_response *out,
                  uint8_t *done, unsigned n, uint64_t base_id, uint64_t spin_ns, uint64_t deadline_ns,
                  uint64_t stale_ns)
{
    struct shmd_response got[REAP_CHUNK];
    unsigned sent = 0, answered = 0;
    uint64_t next_check = shmd_now_ns() + CHECK_EVERY_NS;
    int rc = shmd_channel_check(&s->ch);
    if (rc != SHMD_OK)
        return rc;
    uint64_t submit = shmd_now_ns();
    for (unsigned i = 0; i < n; i++) {
        reqs[i].request_id = base_id + i;
        reqs[i].submit_ns = submit;
    }
    while (answered < n) {
        if (sent < n) {
            int k = shmd_sq_submit(&s->ch, reqs + sent, n - sent);
            if (k < 0)
                return k;
            sent += (unsigned)k;
        }
        uint64_t until = next_check < deadline_ns ? next_check : deadline_ns;
        int ready = shmd_cq_wait(&s->ch, spin_ns, until);
        if (ready < 0)
            return ready;
        if (ready == 0) {
            uint64_t now = shmd_now_ns();
            if (now >= deadline_ns)
                return (int)answered;
            if (now >= next_check) {
                if ((rc = shmd_channel_check_daemon(&s->ch, stale_ns)) != SHMD_OK)
                    return rc;
                next_check = now + CHECK_EVERY_NS;
            }
            continue;
        }
        int k;
        while ((k = shmd_cq_reap(&s->ch, got, REAP_CHUNK)) > 0) {
            for (int j = 0; j < k; j++) {
                uint64_t idx = got[j].request_id - base_id;
                if (idx < n && !done[idx]) {
                    out[idx] = got[j];
                    done[idx] = 1;
                    answered++;
                } else {
                    s->dropped++;
                }
            }
        }
        if (k < 0)
            return k;
        shmd_sq_nudge(&s->ch); /* the daemon may have stopped draining our SQ for want of CQ room */
    }
    return (int)answered;
}
