/* shmd_bench: C client timings for `python -m bench native`.
 *
 *   shmd_bench PREFIX CHANNEL miss|hit|local N    < request.bin
 *   shmd_bench PREFIX CHANNEL batch N BATCH       < request.bin
 *
 * miss: N single round trips with SHMD_REQ_NO_CACHE (every one is inferred);
 * hit:  N single round trips of the same request (served from the cache);
 * local: N shmd_client_predict calls of the same request with an edge cache
 *        (answered in the client, no round trip);
 * batch: N batches of BATCH requests (NO_CACHE) through predict_batch.
 * Prints one sample per line (ns per round trip, or per batch), then a
 * summary line: "done count=.. total_ns=.. fallbacks=.. cache_hits=..".
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shmd_client.h"

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: shmd_bench PREFIX CHANNEL miss|hit|local|batch N [BATCH] < request.bin\n");
        return 2;
    }
    const char *mode = argv[3];
    long n = atol(argv[4]);
    unsigned batch = strcmp(mode, "batch") == 0 && argc >= 6 ? (unsigned)atoi(argv[5]) : 1;
    struct shmd_request tmpl;
    if (fread(&tmpl, sizeof tmpl, 1, stdin) != 1 || n <= 0 || batch == 0) {
        fprintf(stderr, "shmd_bench: need N > 0, BATCH > 0 and one request record on stdin\n");
        return 2;
    }
    int local = strcmp(mode, "local") == 0;
    if (strcmp(mode, "hit") != 0 && !local)
        tmpl.flags |= SHMD_REQ_NO_CACHE;
    struct shmd_client_config cfg = {
        .prefix = argv[1], .channel = argv[2], .timeout_ms = 5000, .edge_cache_entries = local ? 1024 : 0,
    };
    struct shmd_client *c = shmd_client_new(&cfg);
    if (!c || shmd_client_state(c) != SHMD_BREAKER_CLOSED) {
        fprintf(stderr, "shmd_bench: cannot attach: %s\n", c ? shmd_client_last_error(c) : "bad arguments");
        shmd_client_free(c);
        return 2;
    }
    struct shmd_request *reqs = calloc(batch, sizeof *reqs);
    struct shmd_response *resps = calloc(batch, sizeof *resps);
    uint64_t *samples = calloc((size_t)n, sizeof *samples);
    if (!reqs || !resps || !samples)
        return 2;
    /* Warm-up: fills the cache for `hit`, faults pages in for all modes. */
    for (int i = 0; i < 100; i++) {
        reqs[0] = tmpl;
        shmd_client_predict(c, &reqs[0], &resps[0]);
    }
    long hits = 0, fallbacks = 0;
    uint64_t t_start = shmd_now_ns();
    for (long i = 0; i < n; i++) {
        for (unsigned j = 0; j < batch; j++)
            reqs[j] = tmpl;
        uint64_t t0 = shmd_now_ns();
        int rc = local ? shmd_client_predict(c, reqs, resps) : shmd_client_predict_batch(c, reqs, resps, batch);
        if (local && rc >= 0)
            rc = rc == SHMD_SOURCE_FALLBACK; /* the count of fallback answers, as predict_batch returns */
        samples[i] = shmd_now_ns() - t0;
        if (rc < 0) {
            fprintf(stderr, "shmd_bench: %s: %s\n", shmd_strerror(rc), shmd_client_last_error(c));
            return 1;
        }
        fallbacks += rc;
        for (unsigned j = 0; j < batch; j++)
            hits += (resps[j].flags & SHMD_RESP_CACHE_HIT) != 0;
    }
    uint64_t total = shmd_now_ns() - t_start;
    for (long i = 0; i < n; i++)
        printf("%llu\n", (unsigned long long)samples[i]);
    printf("done count=%ld batch=%u total_ns=%llu fallbacks=%ld cache_hits=%ld\n", n, batch,
           (unsigned long long)total, fallbacks, hits);
    free(reqs);
    free(resps);
    free(samples);
    shmd_client_free(c);
    return fallbacks ? 3 : 0;
}
