/* shmd_roundtrip: test driver for the C client (used by tests/test_native*.py).
 *
 *   shmd_roundtrip rt PREFIX CHANNEL [batch]   < requests.bin
 *       Reads raw 320-byte shmd_request records from stdin, predicts each one
 *       (or all as one batch) and prints one line per request:
 *         index status flags source out0 out1 out2 out3     (outputs %.17g)
 *       Exit status 0 when the daemon answered every request, 3 otherwise.
 *
 *   shmd_roundtrip watch PREFIX CHANNEL SECONDS   < request.bin
 *       Predicts the one request every 2 ms (deadline 100 ms) for SECONDS and
 *       prints a line whenever the answer's source changes:
 *         source=daemon|fallback state=N code=C error=...
 *       then a final "stats ..." line (also on SIGTERM, which ends it early).
 *       Used by the circuit-breaker and fault tests.
 *
 *   shmd_roundtrip versions PREFIX CHANNEL SECONDS   < request.bin
 *       Predicts the one request (no cache) every 200 us for SECONDS, or until
 *       SIGTERM, and prints one line per answer:  t_us version status lat_us source
 *       (t_us: CLOCK_MONOTONIC at the call; source daemon|fallback), then
 *       "stats calls=N". Used by the model-swap tests.
 *
 *   shmd_roundtrip hold PREFIX CHANNEL...
 *       Attaches every CHANNEL at once (one process holding many), prints
 *       "held N" and detaches; exit 3 if an attach failed (its message on stderr).
 *
 *   shmd_roundtrip edge PREFIX CHANNEL ENTRIES   < request.bin
 *       With an edge cache of ENTRIES, predicts the one request twice, prints
 *       a line per answer, stops itself (SIGSTOP: the test changes the daemon
 *       meanwhile and sends SIGCONT), predicts it twice more and prints:
 *         source=N flags=F status=S out0=X   (source: SHMD_SOURCE_*)
 *       then "stats local_hits=.. local_misses=.. daemon=..".
 *
 *   shmd_roundtrip hash STRING...
 *       Prints shmd_hash_str of each argument in hex, one per line.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "shmd_client.h"

#define MAX_REQS 4096

/* Rule-based fallback: a recognisable marker the tests look for. */
static void marker_fallback(const struct shmd_request *req, struct shmd_response *resp, void *arg)
{
    (void)arg;
    resp->outputs[0] = -1.0;
    resp->outputs[1] = (double)req->model_id;
    resp->outputs[2] = 0.0;
    resp->outputs[3] = 0.0;
}

static int read_requests(struct shmd_request *reqs, unsigned max)
{
    unsigned n = 0;
    while (n < max && fread(&reqs[n], sizeof reqs[n], 1, stdin) == 1)
        n++;
    return (int)n;
}

static struct shmd_client *client_for(const char *prefix, const char *channel, uint32_t cooldown_ms)
{
    struct shmd_client_config cfg = {
        .prefix = prefix, .channel = channel, .fallback = marker_fallback,
        .timeout_ms = 5000, .cooldown_ms = cooldown_ms,
    };
    struct shmd_client *c = shmd_client_new(&cfg);
    if (!c)
        perror("shmd_client_new");
    return c;
}

static int cmd_rt(const char *prefix, const char *channel, int batch)
{
    static struct shmd_request reqs[MAX_REQS];
    static struct shmd_response resps[MAX_REQS];
    int n = read_requests(reqs, MAX_REQS);
    struct shmd_client *c = client_for(prefix, channel, 200);
    if (!c)
        return 2;
    int fallbacks = 0;
    if (batch) {
        int rc = shmd_client_predict_batch(c, reqs, resps, (unsigned)n);
        if (rc < 0) {
            fprintf(stderr, "predict_batch: %s: %s\n", shmd_strerror(rc), shmd_client_last_error(c));
            shmd_client_free(c);
            return 2;
        }
        fallbacks = rc;
    } else {
        for (int i = 0; i < n; i++) {
            int rc = shmd_client_predict(c, &reqs[i], &resps[i]);
            if (rc < 0) {
                fprintf(stderr, "predict: %s: %s\n", shmd_strerror(rc), shmd_client_last_error(c));
                shmd_client_free(c);
                return 2;
            }
            fallbacks += rc == SHMD_SOURCE_FALLBACK;
        }
    }
    for (int i = 0; i < n; i++) {
        const struct shmd_response *r = &resps[i];
        printf("%d %u %u %s %.17g %.17g %.17g %.17g\n", i, r->status, r->flags,
               (r->flags & SHMD_RESP_FALLBACK) ? "fallback" : "daemon", r->outputs[0], r->outputs[1],
               r->outputs[2], r->outputs[3]);
    }
    if (fallbacks)
        fprintf(stderr, "fallback answered %d: %s\n", fallbacks, shmd_client_last_error(c));
    shmd_client_free(c);
    return fallbacks ? 3 : 0;
}

static volatile sig_atomic_t watch_stop;

static void on_term(int sig)
{
    (void)sig;
    watch_stop = 1;
}

static int cmd_watch(const char *prefix, const char *channel, double seconds)
{
    signal(SIGTERM, on_term); /* stop early, still printing the stats line (fault tests) */
    struct shmd_request tmpl;
    if (read_requests(&tmpl, 1) != 1) {
        fprintf(stderr, "watch: expected one request record on stdin\n");
        return 2;
    }
    struct shmd_client *c = client_for(prefix, channel, 100);
    if (!c)
        return 2;
    uint64_t end = shmd_now_ns() + (uint64_t)(seconds * 1e9);
    int last = -1;
    unsigned long calls = 0;
    while (!watch_stop && shmd_now_ns() < end) {
        struct shmd_request req = tmpl;
        struct shmd_response resp;
        req.flags |= SHMD_REQ_NO_CACHE;
        req.deadline_ns = shmd_now_ns() + 100000000ull;
        int rc = shmd_client_predict(c, &req, &resp);
        calls++;
        if (rc < 0) {
            fprintf(stderr, "predict: %s\n", shmd_strerror(rc));
            break;
        }
        if (rc != last) {
            printf("source=%s state=%d code=%d status=%u out0=%.17g error=%s\n",
                   rc == SHMD_SOURCE_DAEMON ? "daemon" : "fallback", (int)shmd_client_state(c),
                   shmd_client_last_code(c), resp.status, resp.outputs[0],
                   rc == SHMD_SOURCE_DAEMON ? "-" : shmd_client_last_error(c));
            fflush(stdout);
            last = rc;
        }
        struct timespec pause = {0, 2000000};
        nanosleep(&pause, NULL);
    }
    const struct shmd_client_stats *s = shmd_client_stats(c);
    printf("stats calls=%lu daemon=%llu fallback=%llu trips=%llu recoveries=%llu misses=%llu dropped=%llu\n", calls,
           (unsigned long long)s->daemon_answers, (unsigned long long)s->fallback_answers,
           (unsigned long long)s->trips, (unsigned long long)s->recoveries, (unsigned long long)s->deadline_misses,
           (unsigned long long)s->dropped);
    fflush(stdout);
    shmd_client_free(c);
    return 0;
}

static int cmd_edge(const char *prefix, const char *channel, uint32_t entries)
{
    struct shmd_request tmpl;
    if (read_requests(&tmpl, 1) != 1) {
        fprintf(stderr, "edge: expected one request record on stdin\n");
        return 2;
    }
    struct shmd_client_config cfg = {
        .prefix = prefix, .channel = channel, .fallback = marker_fallback, .timeout_ms = 5000,
        .edge_cache_entries = entries,
    };
    struct shmd_client *c = shmd_client_new(&cfg);
    if (!c || shmd_client_state(c) != SHMD_BREAKER_CLOSED) {
        fprintf(stderr, "edge: cannot attach: %s\n", c ? shmd_client_last_error(c) : "bad arguments");
        shmd_client_free(c);
        return 2;
    }
    for (int i = 0; i < 4; i++) {
        if (i == 2) {
            fflush(stdout);
            raise(SIGSTOP); /* the test clears the daemon's cache, then SIGCONTs us */
        }
        struct shmd_request req = tmpl;
        struct shmd_response resp;
        int rc = shmd_client_predict(c, &req, &resp);
        printf("source=%d flags=%u status=%u out0=%.17g\n", rc, resp.flags, resp.status, resp.outputs[0]);
    }
    const struct shmd_client_stats *s = shmd_client_stats(c);
    printf("stats local_hits=%llu local_misses=%llu daemon=%llu\n", (unsigned long long)s->local_hits,
           (unsigned long long)s->local_misses, (unsigned long long)s->daemon_answers);
    shmd_client_free(c);
    return 0;
}

static int cmd_versions(const char *prefix, const char *channel, double seconds)
{
    signal(SIGTERM, on_term);
    struct shmd_request tmpl;
    if (read_requests(&tmpl, 1) != 1) {
        fprintf(stderr, "versions: expected one request record on stdin\n");
        return 2;
    }
    struct shmd_client *c = client_for(prefix, channel, 100);
    if (!c)
        return 2;
    uint64_t start = shmd_now_ns(), end = start + (uint64_t)(seconds * 1e9);
    unsigned long calls = 0;
    while (!watch_stop && shmd_now_ns() < end) {
        struct shmd_request req = tmpl;
        struct shmd_response resp;
        req.flags |= SHMD_REQ_NO_CACHE;
        uint64_t t0 = shmd_now_ns();
        int rc = shmd_client_predict(c, &req, &resp);
        uint64_t t1 = shmd_now_ns();
        calls++;
        if (rc < 0) {
            fprintf(stderr, "predict: %s: %s\n", shmd_strerror(rc), shmd_client_last_error(c));
            break;
        }
        printf("%llu %u %u %llu %s\n", (unsigned long long)(t0 / 1000), resp.model_version, resp.status,
               (unsigned long long)((t1 - t0) / 1000), rc == SHMD_SOURCE_DAEMON ? "daemon" : "fallback");
        struct timespec pause = {0, 200000};
        nanosleep(&pause, NULL);
    }
    printf("stats calls=%lu\n", calls);
    fflush(stdout);
    shmd_client_free(c);
    return 0;
}

static int cmd_hold(const char *prefix, char **channels, int n)
{
    struct shmd_channel *chs = calloc((size_t)n, sizeof *chs);
    if (!chs)
        return 2;
    int held = 0, rc = 0;
    for (; held < n; held++) {
        if (shmd_channel_attach(&chs[held], prefix, channels[held]) != SHMD_OK) {
            fprintf(stderr, "attach %s: %s\n", channels[held], chs[held].msg);
            rc = 3;
            break;
        }
    }
    printf("held %d\n", held);
    while (held > 0)
        shmd_channel_detach(&chs[--held]);
    free(chs);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc >= 4 && strcmp(argv[1], "rt") == 0)
        return cmd_rt(argv[2], argv[3], argc >= 5 && strcmp(argv[4], "batch") == 0);
    if (argc >= 2 && strcmp(argv[1], "hash") == 0) {
        for (int i = 2; i < argc; i++)
            printf("%016llx\n", (unsigned long long)shmd_hash_str(argv[i]));
        return 0;
    }
    if (argc >= 4 && strcmp(argv[1], "hold") == 0)
        return cmd_hold(argv[2], argv + 3, argc - 3);
    if (argc >= 5 && strcmp(argv[1], "edge") == 0)
        return cmd_edge(argv[2], argv[3], (uint32_t)atol(argv[4]));
    if (argc >= 5 && strcmp(argv[1], "watch") == 0)
        return cmd_watch(argv[2], argv[3], atof(argv[4]));
    if (argc >= 5 && strcmp(argv[1], "versions") == 0)
        return cmd_versions(argv[2], argv[3], atof(argv[4]));
    fprintf(stderr, "usage: shmd_roundtrip rt PREFIX CHANNEL [batch] < requests.bin\n"
                    "       shmd_roundtrip watch PREFIX CHANNEL SECONDS < request.bin\n"
                    "       shmd_roundtrip edge PREFIX CHANNEL ENTRIES < request.bin\n"
                    "       shmd_roundtrip versions PREFIX CHANNEL SECONDS < request.bin\n"
                    "       shmd_roundtrip hold PREFIX CHANNEL...\n");
    return 2;
}
