/* security_monitor: streams threat features to shmd in batches.
 *
 *   security_monitor [PREFIX [CHANNEL [BATCHES [BATCH]]]]   defaults: shmd security 50 32
 *
 * Each batch is one observation window: BATCH agents' behaviour metrics
 * (latency, error rate, resource use, message rate, anomalies) go out as one
 * predict_batch call (one SQ tail store). Each answer is acted on through its
 * recommended action: isolate or terminate the agent, throttle it, or keep
 * monitoring. A rule-based fallback (weighted error rate, resource use and
 * anomalies) answers when the daemon cannot. Prints the actions, the
 * fallback count and the latency per batch and per prediction.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "latency.h"
#include "shmd_client.h"

#define MAX_BATCH 1024

static void threat_rules(const struct shmd_request *req, struct shmd_response *resp, void *arg)
{
    (void)arg;
    const struct shmd_threat_payload *p = &req->payload.threat;
    double anomalies = p->anomaly_count > 10 ? 1.0 : p->anomaly_count / 10.0;
    double score = 0.4 * p->error_rate + 0.3 * p->resource_usage + 0.3 * anomalies;
    resp->outputs[0] = score;
    resp->outputs[1] = score > 0.5 ? SHMD_THREAT_DENIAL_OF_SERVICE : SHMD_THREAT_NONE;
    resp->outputs[2] = 0.3;
    resp->outputs[3] = score > 0.8 ? SHMD_ACTION_ISOLATE : score > 0.5 ? SHMD_ACTION_THROTTLE : SHMD_ACTION_MONITOR;
}

/* Deterministic traffic: every 16th agent is misbehaving, in bursts. */
static void fill_request(struct shmd_request *req, int agent, int window)
{
    shmd_request_init(req, SHMD_MODEL_THREAT);
    struct shmd_threat_payload *p = &req->payload.threat;
    char name[32];
    snprintf(name, sizeof name, "agent-%d", agent);
    int bad = agent % 16 == 3 && window % 4 != 0;
    p->agent_hash = shmd_hash_str(name);
    p->average_latency = bad ? 400.0f : 20.0f + (float)(agent % 7);
    p->error_rate = bad ? 0.35f : 0.01f;
    p->resource_usage = bad ? 0.95f : 0.3f + 0.01f * (float)(agent % 10);
    p->message_frequency = bad ? 900.0f : 50.0f;
    for (int j = 0; j < 10; j++)
        p->historical_threats[j] = bad ? 0.2f + 0.05f * (float)j : 0.0f;
    p->time_since_last_threat = bad ? 100.0f : 86400000.0f;
    p->anomaly_count = bad ? 6 : 0;
    p->severity_counts[SHMD_SEVERITY_HIGH] = bad ? 4 : 0;
    p->severity_counts[SHMD_SEVERITY_CRITICAL] = bad ? 2 : 0;
    p->distinct_anomaly_types = bad ? 3 : 0;
}

int main(int argc, char **argv)
{
    const char *prefix = argc > 1 ? argv[1] : "shmd";
    const char *channel = argc > 2 ? argv[2] : "security";
    int batches = argc > 3 ? atoi(argv[3]) : 50;
    int batch = argc > 4 ? atoi(argv[4]) : 32;
    if (batches <= 0 || batch <= 0 || batch > MAX_BATCH) {
        fprintf(stderr, "usage: security_monitor [PREFIX [CHANNEL [BATCHES [BATCH<=%d]]]]\n", MAX_BATCH);
        return 2;
    }
    struct shmd_client_config cfg = {
        .prefix = prefix, .channel = channel, .fallback = threat_rules, .timeout_ms = 100,
    };
    struct shmd_client *c = shmd_client_new(&cfg);
    if (!c) {
        perror("shmd_client_new");
        return 2;
    }
    if (shmd_client_state(c) != SHMD_BREAKER_CLOSED)
        printf("security_monitor: daemon unavailable at start (%s); using rules until it answers\n",
               shmd_client_last_error(c));
    static struct shmd_request reqs[MAX_BATCH];
    static struct shmd_response resps[MAX_BATCH];
    struct latency per_batch = {0}, per_prediction = {0};
    long actions[5] = {0}, from_rules = 0, errors = 0, flagged = 0;
    for (int w = 0; w < batches; w++) {
        for (int i = 0; i < batch; i++)
            fill_request(&reqs[i], i, w);
        uint64_t t0 = shmd_now_ns();
        int rc = shmd_client_predict_batch(c, reqs, resps, (unsigned)batch);
        uint64_t dt = shmd_now_ns() - t0;
        latency_add(&per_batch, dt);
        latency_add(&per_prediction, dt / (uint64_t)batch);
        if (rc < 0) {
            errors += batch;
            continue;
        }
        from_rules += rc;
        for (int i = 0; i < batch; i++) {
            if (resps[i].status != SHMD_STATUS_OK) {
                errors++;
                continue;
            }
            int action = (int)resps[i].outputs[3];
            if (action < 0 || action > 4)
                action = SHMD_ACTION_MONITOR;
            actions[action]++;
            flagged += resps[i].outputs[0] > 0.5;
        }
    }
    long total = (long)batches * batch;
    printf("security_monitor: %d windows x %d agents = %ld threat predictions on %s/%s\n", batches, batch, total,
           prefix, channel);
    printf("actions: allow=%ld monitor=%ld throttle=%ld isolate=%ld terminate=%ld (score>0.5: %ld) errors=%ld\n",
           actions[0], actions[1], actions[2], actions[3], actions[4], flagged, errors);
    printf("answers: daemon=%ld fallback=%ld (breaker state %d%s%s)\n", total - from_rules - errors, from_rules,
           (int)shmd_client_state(c), from_rules ? ": " : "", from_rules ? shmd_client_last_error(c) : "");
    latency_print(&per_batch, "batch latency");
    latency_print(&per_prediction, "per-prediction latency (batch / size)");
    latency_free(&per_batch);
    latency_free(&per_prediction);
    shmd_client_free(c);
    return errors ? 1 : 0;
}
