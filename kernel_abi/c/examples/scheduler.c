/* scheduler: a kernel scheduler loop asking shmd for workload predictions.
 *
 *   scheduler [PREFIX [CHANNEL [AGENTS [ROUNDS]]]]     defaults: shmd scheduler 16 50
 *
 * Every round (a scheduling tick) it asks one workload prediction per agent,
 * then acts on it: an agent predicted above 80% CPU gets a dedicated core,
 * one below 20% is packed onto a shared core, the rest keep their place.
 * When the daemon is unavailable the circuit breaker answers from a
 * rule-based fallback (recent average plus trend), so the loop never stalls.
 * Prints the actions taken, how many answers came from the fallback, and the
 * per-prediction latency (median and p99).
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "latency.h"
#include "shmd_client.h"

/* Fallback rule: mean of the last three CPU samples plus their trend, clamped. */
static void workload_rules(const struct shmd_request *req, struct shmd_response *resp, void *arg)
{
    (void)arg;
    const struct shmd_workload_payload *p = &req->payload.workload;
    double recent = (p->historical_cpu[7] + p->historical_cpu[8] + p->historical_cpu[9]) / 3.0;
    double cpu = recent + (p->historical_cpu[9] - p->historical_cpu[7]) / 2.0;
    cpu = cpu < 0 ? 0 : cpu > 1 ? 1 : cpu;
    resp->outputs[0] = cpu;
    resp->outputs[1] = (double)p->historical_memory[9];
    resp->outputs[2] = p->historical_gpu[9];
    resp->outputs[3] = 0.3; /* the rules are less sure than the model */
}

/* A deterministic load pattern per agent: a few are hot, a few idle, the rest vary. */
static float agent_load(int agent, int t)
{
    int phase = (t + agent * 7) % 20;
    float wave = (float)(phase < 10 ? phase : 20 - phase) / 10.0f; /* triangle 0..1 */
    switch (agent % 4) {
    case 0: return 0.85f + 0.1f * wave; /* hot */
    case 1: return 0.05f + 0.1f * wave; /* idle */
    default: return 0.2f + 0.6f * wave;
    }
}

static void fill_request(struct shmd_request *req, int agent, int round)
{
    shmd_request_init(req, SHMD_MODEL_WORKLOAD);
    struct shmd_workload_payload *p = &req->payload.workload;
    char name[32];
    snprintf(name, sizeof name, "agent-%d", agent);
    p->agent_hash = shmd_hash_str(name);
    for (int j = 0; j < 10; j++) {
        p->historical_cpu[j] = agent_load(agent, round + j);
        p->historical_gpu[j] = agent_load(agent + 1, round + j) / 2;
        p->historical_memory[j] = (uint64_t)(256u << 20) + (uint64_t)(p->historical_cpu[j] * (1u << 30));
    }
    p->current_cpu = p->historical_cpu[9];
    p->current_gpu = p->historical_gpu[9];
    p->current_memory = p->historical_memory[9];
    p->time_of_day = (uint8_t)(round % 24);
    p->day_of_week = (uint8_t)((round / 24) % 7);
}

int main(int argc, char **argv)
{
    const char *prefix = argc > 1 ? argv[1] : "shmd";
    const char *channel = argc > 2 ? argv[2] : "scheduler";
    int agents = argc > 3 ? atoi(argv[3]) : 16;
    int rounds = argc > 4 ? atoi(argv[4]) : 50;
    if (agents <= 0 || rounds <= 0) {
        fprintf(stderr, "usage: scheduler [PREFIX [CHANNEL [AGENTS [ROUNDS]]]]\n");
        return 2;
    }
    struct shmd_client_config cfg = {
        .prefix = prefix, .channel = channel, .fallback = workload_rules, .timeout_ms = 50,
    };
    struct shmd_client *c = shmd_client_new(&cfg);
    if (!c) {
        perror("shmd_client_new");
        return 2;
    }
    if (shmd_client_state(c) != SHMD_BREAKER_CLOSED)
        printf("scheduler: daemon unavailable at start (%s); using rules until it answers\n",
               shmd_client_last_error(c));

    struct latency lat = {0};
    long dedicated = 0, packed = 0, kept = 0, from_rules = 0, model_errors = 0;
    for (int round = 0; round < rounds; round++) {
        for (int a = 0; a < agents; a++) {
            struct shmd_request req;
            struct shmd_response resp;
            fill_request(&req, a, round);
            req.deadline_ns = shmd_now_ns() + 2000000; /* a tick cannot wait longer than 2 ms */
            uint64_t t0 = shmd_now_ns();
            int src = shmd_client_predict(c, &req, &resp);
            latency_add(&lat, shmd_now_ns() - t0);
            if (src < 0 || resp.status != SHMD_STATUS_OK) {
                model_errors++;
                continue;
            }
            from_rules += src == SHMD_SOURCE_FALLBACK;
            double cpu = resp.outputs[0];
            if (cpu > 0.8)
                dedicated++; /* act: pin to a dedicated core */
            else if (cpu < 0.2)
                packed++; /* act: pack onto a shared core */
            else
                kept++;
        }
    }
    long total = (long)agents * rounds;
    printf("scheduler: %d rounds x %d agents = %ld predictions on %s/%s\n", rounds, agents, total, prefix, channel);
    printf("actions: dedicated-core=%ld packed=%ld unchanged=%ld errors=%ld\n", dedicated, packed, kept, model_errors);
    printf("answers: daemon=%ld fallback=%ld (breaker state %d%s%s)\n", total - from_rules - model_errors, from_rules,
           (int)shmd_client_state(c), from_rules ? ": " : "", from_rules ? shmd_client_last_error(c) : "");
    latency_print(&lat, "prediction latency");
    latency_free(&lat);
    shmd_client_free(c);
    return model_errors ? 1 : 0;
}
