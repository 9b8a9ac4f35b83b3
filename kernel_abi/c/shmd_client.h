/* shmd_client.h: the C client of a shmd channel (libc, pthread, librt only).
 *
 * shmd_abi.h (generated) holds the wire format; this header adds functions,
 * in two layers:
 *
 *   shmd_channel_*, shmd_sq_*, shmd_cq_*   one attached channel, no policy:
 *       attach (exclusive hold, magic/version checks), submit a batch of
 *       requests, reap responses, wait (spin, then sleep). Errors are
 *       negative SHMD_E* codes with a message.
 *
 *   shmd_client_*                          the channel behind a circuit
 *       breaker: predict one request or a batch; when the daemon is absent,
 *       its channel is corrupt, or an answer misses the caller's deadline,
 *       the caller's rule-based fallback answers instead and the response is
 *       marked SHMD_RESP_FALLBACK. After a cool-down the next call probes the
 *       daemon again (re-attaching by name) and switches back when it answers.
 *
 * Ring protocol (as ringbuf/_core.py): indices are monotonically increasing
 * u64 counters, slot = index & (capacity - 1). Each side keeps its own index
 * privately (cached_*) and only stores it; it validates the peer's index on
 * every load (never backwards, 0 <= tail - head <= capacity). A violation
 * marks the ring corrupt and no slot is touched afterwards.
 *
 * Not thread-safe: one client (or channel) per thread.
 */
#ifndef SHMD_CLIENT_H
#define SHMD_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "shmd_abi.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Error codes: every function that can fail returns one (negative) or >= 0. */
enum shmd_error {
    SHMD_OK = 0,
    SHMD_ENOTFOUND = -1,  /* no segment: the daemon is not serving this channel */
    SHMD_EBUSY = -2,      /* another process (or client of this one) holds the channel */
    SHMD_ELAYOUT = -3,    /* the segment has another magic, ABI version or layout */
    SHMD_ECORRUPT = -4,   /* a peer index or header word went invalid while attached */
    SHMD_EDEAD = -5,      /* daemon_pid is 0 or names no live process, or its heartbeat is stale */
    SHMD_ETIMEDOUT = -6,  /* no answer before the deadline */
    SHMD_ESYS = -7,       /* a system call failed (errno in the message) */
    SHMD_EINVAL = -8,     /* a bad argument (the message names it) */
    SHMD_ENOFALLBACK = -9, /* the daemon could not answer and no fallback was configured */
    SHMD_EUNTRUSTED = -10  /* the segment's owner is not the expected daemon uid (see shmd_channel_attach) */
};

/* SHMD_RESP_FALLBACK (shmd_abi.h, bit 15 of shmd_response.flags) is never set
 * by the daemon: it marks an answer from the client's fallback. */

#define SHMD_MSG_LEN 256

/* ---------------------------------------------------------------- one ring */

/* One ring of an attached channel. shm_* point into shared memory; cached_*
 * are this side's private copies (own index, last accepted peer index). */
struct shmd_ring {
    struct shmd_ring_header *shm_hdr; /* ring header in the segment */
    uint8_t *shm_slots;               /* capacity * slot_size bytes */
    uint32_t capacity;                /* power of two */
    uint32_t mask;                    /* capacity - 1 */
    uint32_t slot_size;
    uint64_t cached_own;  /* producer: our tail; consumer: our head */
    uint64_t cached_peer; /* the peer's index as last validated */
    int corrupt;          /* sticky: no slot is touched once set */
};

/* ------------------------------------------------------------- one channel */

struct shmd_channel {
    struct shmd_channel_header *shm_chan; /* channel header (start of the mapping) */
    void *map;
    size_t map_len;
    int fd;               /* segment fd, holding the record lock on byte 0 */
    struct shmd_ring sq;  /* we produce */
    struct shmd_ring cq;  /* we consume */
    uint64_t wakeups_posted;
    uint64_t sleeps;
    char segment[136];    /* "/{prefix}.{channel}" */
    char msg[SHMD_MSG_LEN]; /* the last error's message */
};

/* Map channel `name` of `prefix`, hold it exclusively (POSIX record lock on
 * byte 0 of the segment, dropped by the kernel when we die) and validate its
 * layout. SHMD_OK, or an error code with ch->msg saying what and why (for
 * SHMD_EBUSY it names the holder's pid). On error nothing stays open.
 * The segment's owner must be the daemon's uid: $SHMD_DAEMON_UID when set,
 * else root, this process's euid or the "shmd" user (SHMD_EUNTRUSTED). */
int shmd_channel_attach(struct shmd_channel *ch, const char *prefix, const char *name);
/* Unlock, unmap, close; safe on a zeroed or already detached channel. */
void shmd_channel_detach(struct shmd_channel *ch);
/* Cheap per-call check: channel and ring magic/version still in place and a
 * daemon pid set. SHMD_OK, SHMD_ECORRUPT or SHMD_EDEAD. */
int shmd_channel_check(struct shmd_channel *ch);
/* Thorough check for slow paths: shmd_channel_check, plus the daemon's pid is
 * a live process and its heartbeat is younger than `stale_ns` (0: skip). */
int shmd_channel_check_daemon(struct shmd_channel *ch, uint64_t stale_ns);

/* Free SQ slots now, or SHMD_ECORRUPT. */
int shmd_sq_space_left(struct shmd_channel *ch);
/* Copy up to n requests into the SQ and publish them with one tail store
 * (waking the daemon if it sleeps: FUTEX_WAKE on the SQ's wake_seq). The number accepted (0 when
 * the ring is full: back-pressure, never an overwrite) or SHMD_ECORRUPT. */
int shmd_sq_submit(struct shmd_channel *ch, const struct shmd_request *reqs, unsigned n);
/* Wake the daemon if it sleeps while our SQ has records pending (after
 * reaping: it stops draining an SQ whose CQ is full). */
void shmd_sq_nudge(struct shmd_channel *ch);
/* Responses published and not yet reaped, or SHMD_ECORRUPT. */
int shmd_cq_ready(struct shmd_channel *ch);
/* Copy up to max responses out and release their slots (one head store);
 * the number copied or SHMD_ECORRUPT. */
int shmd_cq_reap(struct shmd_channel *ch, struct shmd_response *out, unsigned max);
/* Block until a response is ready or CLOCK_MONOTONIC passes deadline_ns:
 * spin up to spin_ns, then set NEED_WAKEUP, fence, re-check and sleep on the
 * CQ's wake_seq (FUTEX_WAIT). The ready count (0: deadline passed) or SHMD_ECORRUPT. */
int shmd_cq_wait(struct shmd_channel *ch, uint64_t spin_ns, uint64_t deadline_ns);

/* ------------------------------------------------- requests, hashing, time */

/* CLOCK_MONOTONIC in ns: the clock of submit_ns and deadline_ns. */
uint64_t shmd_now_ns(void);
/* 64-bit FNV-1a over the bytes of a NUL-terminated UTF-8 string (how agentId
 * and component travel). */
uint64_t shmd_hash_str(const char *s);
/* Zero `req` and set model_id, abi_version and payload_len for `model`.
 * SHMD_OK or SHMD_EINVAL for an unknown model. */
int shmd_request_init(struct shmd_request *req, enum shmd_model_id model);

/* ---------------------------------------------- the client: circuit breaker */

/* Answer `req` without the daemon: fill resp->outputs (and status, default
 * OK). The client sets request_id, model_id and SHMD_RESP_FALLBACK. */
typedef void (*shmd_fallback_fn)(const struct shmd_request *req, struct shmd_response *resp, void *arg);

enum shmd_breaker_state {
    SHMD_BREAKER_CLOSED = 0,   /* the daemon answers */
    SHMD_BREAKER_OPEN = 1,     /* fallback answers until the cool-down ends */
    SHMD_BREAKER_HALF_OPEN = 2 /* the next call probes the daemon */
};

enum shmd_source {
    SHMD_SOURCE_DAEMON = 0,
    SHMD_SOURCE_FALLBACK = 1,
    SHMD_SOURCE_LOCAL = 2 /* the edge cache: a copy of an earlier daemon answer */
};

struct shmd_client_config {
    const char *prefix;        /* required: the daemon's --prefix */
    const char *channel;       /* required: the channel name */
    shmd_fallback_fn fallback; /* optional: without it, calls fail with SHMD_ENOFALLBACK */
    void *fallback_arg;
    uint32_t spin_us;          /* upper bound of the adaptive spin before sleeping on the CQ (default 50) */
    uint32_t timeout_ms;       /* wait bound for requests with deadline_ns == 0 (default 1000) */
    uint32_t cooldown_ms;      /* breaker open time before a probe (default 200) */
    uint32_t heartbeat_stale_ms; /* daemon heartbeat older than this = hung (default 2000; 0: default) */
    uint32_t trip_after;       /* consecutive missed deadlines that open the breaker (default 3) */
    /* Edge cache: keep up to this many of the daemon's fresh answers (rounded up to
     * a power of two, at least 4) and answer an identical shmd_client_predict
     * (same model, same payload bytes) locally, with no round trip, for the TTL the
     * daemon publishes per model in the channel header, and only while the
     * header's cache_generation for the model is unchanged (the daemon changes it
     * when it clears its cache or swaps the model). 0 (default): no edge cache.
     * The daemon never sees a local hit: its metrics count only what reaches it. */
    uint32_t edge_cache_entries;
};

struct shmd_client_stats {
    uint64_t daemon_answers;
    uint64_t fallback_answers;
    uint64_t deadline_misses;
    uint64_t trips;       /* CLOSED -> OPEN transitions */
    uint64_t recoveries;  /* HALF_OPEN -> CLOSED transitions */
    uint64_t dropped;     /* responses for ids not outstanding (late or duplicate) */
    uint64_t local_hits;  /* answered by the edge cache (SHMD_SOURCE_LOCAL) */
    uint64_t local_misses; /* looked up in the edge cache and sent to the daemon */
};

struct shmd_client;

/* A client for cfg->channel. It exists even while the daemon is absent (the
 * breaker starts open and probes at once on the first call). NULL only on a
 * bad config or out of memory (errno set). */
struct shmd_client *shmd_client_new(const struct shmd_client_config *cfg);
void shmd_client_free(struct shmd_client *c);

/* One prediction. Fills the request's header (request_id, abi_version,
 * payload_len, submit_ns); model_id, flags, deadline_ns (absolute
 * CLOCK_MONOTONIC, 0 = cfg timeout, not sent) and payload are the caller's.
 * Returns SHMD_SOURCE_DAEMON, SHMD_SOURCE_FALLBACK (resp->flags then has
 * SHMD_RESP_FALLBACK) or SHMD_SOURCE_LOCAL (edge cache: resp->flags has
 * SHMD_RESP_CACHE_HIT | SHMD_RESP_LOCAL, request_id 0: nothing was sent), or a
 * negative error when no fallback is configured. SHMD_REQ_NO_CACHE skips the
 * edge cache. */
int shmd_client_predict(struct shmd_client *c, struct shmd_request *req, struct shmd_response *resp);
/* n predictions, published together (one tail store per ring-full), answered
 * in order into resps[0..n). The number answered by the fallback (0..n), or
 * a negative error. One shared deadline: the earliest non-zero deadline_ns. */
int shmd_client_predict_batch(struct shmd_client *c, struct shmd_request *reqs, struct shmd_response *resps,
                              unsigned n);

enum shmd_breaker_state shmd_client_state(const struct shmd_client *c);
const struct shmd_client_stats *shmd_client_stats(const struct shmd_client *c);
/* Why the breaker last opened (or the last error), "" if never. */
const char *shmd_client_last_error(const struct shmd_client *c);
/* The last error code (SHMD_OK if none). */
int shmd_client_last_code(const struct shmd_client *c);
const char *shmd_strerror(int code);

#ifdef __cplusplus
}
#endif

#endif /* SHMD_CLIENT_H */
