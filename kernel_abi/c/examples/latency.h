/* latency.h: tiny latency bookkeeping shared by the examples and tools:
 * record samples in ns, then print median and p99. Header-only. */
#ifndef SHMD_EXAMPLES_LATENCY_H
#define SHMD_EXAMPLES_LATENCY_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

struct latency {
    uint64_t *ns;
    size_t n, cap;
};

static inline int latency_add(struct latency *l, uint64_t ns)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 1024;
        uint64_t *p = realloc(l->ns, cap * sizeof *p);
        if (!p)
            return -1;
        l->ns = p;
        l->cap = cap;
    }
    l->ns[l->n++] = ns;
    return 0;
}

static inline int latency_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* The q-quantile (0..1) by nearest rank; sorts the samples in place. */
static inline uint64_t latency_quantile(struct latency *l, double q)
{
    if (!l->n)
        return 0;
    qsort(l->ns, l->n, sizeof *l->ns, latency_cmp);
    size_t i = (size_t)(q * (double)(l->n - 1) + 0.5);
    return l->ns[i < l->n ? i : l->n - 1];
}

static inline void latency_print(struct latency *l, const char *what)
{
    printf("%s: n=%zu median=%.2f us p99=%.2f us max=%.2f us\n", what, l->n, latency_quantile(l, 0.5) / 1e3,
           latency_quantile(l, 0.99) / 1e3, latency_quantile(l, 1.0) / 1e3);
}

static inline void latency_free(struct latency *l)
{
    free(l->ns);
    l->ns = NULL;
    l->n = l->cap = 0;
}

#endif
