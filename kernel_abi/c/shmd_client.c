/* shmd_client.c: the C client of a shmd channel. See shmd_client.h.
 *
 * Mirrors ringbuf/_core.py (ring protocol), ringbuf/_ends.py (wake-ups),
 * ringbuf/_segment.py (names, layout checks), shmd/_lock.py (exclusive hold)
 * and shmd/client.py (random id base, dropping ids not outstanding).
 */
#define _GNU_SOURCE
#include "shmd_client.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define NAME_MAX_LEN SHMD_NAME_MAX
#define WAIT_SLICE_NS 20000000ull /* re-check the daemon's liveness this often while sleeping */

/* ------------------------------------------------------------ small helpers */

static int fail(struct shmd_channel *ch, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(struct shmd_channel *ch, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ch->msg, sizeof ch->msg, fmt, ap);
    va_end(ap);
    return code;
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* One wait of a spin loop that has spun spun_ns so far: pause for the first
 * SPIN_YIELD_AFTER_NS (an answer back to back comes within a microsecond),
 * then yield the CPU between looks. The daemon we wait for is often woken
 * onto our CPU (the scheduler places a woken task near its waker); a spinner
 * that is not preempted would keep it off for the whole window. As
 * ringbuf._atomics.spin_pause. */
#define SPIN_YIELD_AFTER_NS 2000u
static inline void spin_pause(uint64_t spun_ns)
{
    if (spun_ns < SPIN_YIELD_AFTER_NS)
        cpu_relax();
    else
        sched_yield();
}

/* Shared index loads and stores: real atomics, so the compiler can neither
 * hoist a load out of a spin loop nor reorder a store with the slot copies. */
static inline uint64_t load_acquire_u64(const uint64_t *shm_word)
{
    return atomic_load_explicit((_Atomic uint64_t *)shm_word, memory_order_acquire);
}

static inline void store_release_u64(uint64_t *shm_word, uint64_t value)
{
    atomic_store_explicit((_Atomic uint64_t *)shm_word, value, memory_order_release);
}

static inline uint32_t load_acquire_u32(const uint32_t *shm_word)
{
    return atomic_load_explicit((_Atomic uint32_t *)shm_word, memory_order_acquire);
}

static inline void store_release_u32(uint32_t *shm_word, uint32_t value)
{
    atomic_store_explicit((_Atomic uint32_t *)shm_word, value, memory_order_release);
}

static inline uint64_t load_relaxed_u64(const uint64_t *shm_word)
{
    return atomic_load_explicit((_Atomic uint64_t *)shm_word, memory_order_relaxed);
}

/* A statistics counter we alone write (the daemon only reads it). */
static inline void counter_add(uint64_t *shm_counter, uint64_t n)
{
    _Atomic uint64_t *p = (_Atomic uint64_t *)shm_counter;
    atomic_store_explicit(p, atomic_load_explicit(p, memory_order_relaxed) + n, memory_order_relaxed);
}

/* Wake-up words: shared futexes (never FUTEX_PRIVATE_FLAG: the word is mapped
 * by the daemon too). See the wake-up protocol in shmd_abi.h. */
static void futex_wake_word(uint32_t *shm_word)
{
    atomic_fetch_add_explicit((_Atomic uint32_t *)shm_word, 1, memory_order_seq_cst);
    syscall(SYS_futex, shm_word, FUTEX_WAKE, 1, NULL, NULL, 0);
}

/* Sleep while *shm_word == expected, until CLOCK_MONOTONIC deadline_ns. */
static void futex_wait_word(uint32_t *shm_word, uint32_t expected, uint64_t deadline_ns)
{
    /* FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC time (FUTEX_WAIT a relative one). */
    struct timespec ts = {.tv_sec = (time_t)(deadline_ns / 1000000000ull),
                          .tv_nsec = (long)(deadline_ns % 1000000000ull)};
    syscall(SYS_futex, shm_word, FUTEX_WAIT_BITSET, expected, &ts, NULL, FUTEX_BITSET_MATCH_ANY);
}

uint64_t shmd_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t shmd_hash_str(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a 64 offset basis */
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        h ^= *p;
        h *= 0x100000001b3ull; /* FNV-1a 64 prime; u64 wrap-around is the hash's modulus */
    }
    return h;
}

static uint32_t payload_size(unsigned model)
{
    switch (model) {
    case SHMD_MODEL_WORKLOAD: return sizeof(struct shmd_workload_payload);
    case SHMD_MODEL_THREAT: return sizeof(struct shmd_threat_payload);
    case SHMD_MODEL_FAILURE: return sizeof(struct shmd_failure_payload);
    case SHMD_MODEL_MEMORY: return sizeof(struct shmd_memory_payload);
    default: return 0;
    }
}

int shmd_request_init(struct shmd_request *req, enum shmd_model_id model)
{
    memset(req, 0, sizeof *req);
    if (!payload_size((unsigned)model))
        return SHMD_EINVAL;
    req->model_id = (uint16_t)model;
    req->abi_version = SHMD_ABI_VERSION;
    req->payload_len = payload_size((unsigned)model);
    return SHMD_OK;
}

const char *shmd_strerror(int code)
{
    switch (code) {
    case SHMD_OK: return "ok";
    case SHMD_ENOTFOUND: return "channel not found (daemon not serving it)";
    case SHMD_EBUSY: return "channel held by another client";
    case SHMD_ELAYOUT: return "segment layout, magic or ABI version mismatch";
    case SHMD_ECORRUPT: return "channel corrupt";
    case SHMD_EDEAD: return "daemon dead or hung";
    case SHMD_ETIMEDOUT: return "no answer before the deadline";
    case SHMD_ESYS: return "system call failed";
    case SHMD_EINVAL: return "invalid argument";
    case SHMD_ENOFALLBACK: return "daemon unavailable and no fallback configured";
    case SHMD_EUNTRUSTED: return "segment not owned by the expected daemon uid";
    default: return "unknown error";
    }
}

static int valid_name(const char *s)
{
    size_t n = 0;
    if (!s)
        return 0;
    for (; s[n]; n++) {
        if (!strchr(SHMD_NAME_CHARS, s[n]))
            return 0;
    }
    return n >= 1 && n <= NAME_MAX_LEN;
}

/* --------------------------------------------- holds within this process */

/* POSIX record locks never conflict within one process, so (like the Python
 * client's _held set) segments held here are also remembered here, in an
 * array that grows as needed (a process may hold any number of channels). */
#define HELD_NAME_LEN 136
static pthread_mutex_t held_lock = PTHREAD_MUTEX_INITIALIZER;
static char (*held)[HELD_NAME_LEN];
static size_t held_cap;

/* 1 if added, 0 if already held here, -1 out of memory. */
static int held_add(const char *segment)
{
    int rc = 1;
    pthread_mutex_lock(&held_lock);
    size_t free_slot = held_cap;
    for (size_t i = 0; i < held_cap; i++) {
        if (held[i][0] && strcmp(held[i], segment) == 0) {
            rc = 0;
            goto out;
        }
        if (!held[i][0] && free_slot == held_cap)
            free_slot = i;
    }
    if (free_slot == held_cap) {
        size_t cap = held_cap ? 2 * held_cap : 16;
        char (*p)[HELD_NAME_LEN] = realloc(held, cap * sizeof *held);
        if (!p) {
            rc = -1;
            goto out;
        }
        memset(p + held_cap, 0, (cap - held_cap) * sizeof *p);
        held = p;
        held_cap = cap;
    }
    snprintf(held[free_slot], sizeof held[free_slot], "%s", segment);
out:
    pthread_mutex_unlock(&held_lock);
    return rc;
}

static void held_remove(const char *segment)
{
    pthread_mutex_lock(&held_lock);
    for (size_t i = 0; i < held_cap; i++)
        if (held[i][0] && strcmp(held[i], segment) == 0)
            held[i][0] = '\0';
    pthread_mutex_unlock(&held_lock);
}

/* Exclusive write lock on byte 0: 0 on success, else the holder's pid (-1 if
 * the kernel would not say). */
static pid_t try_lock(int fd)
{
    for (int attempt = 0; attempt < 3; attempt++) {
        struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = SHMD_LOCK_OFFSET, .l_len = SHMD_LOCK_LEN};
        if (fcntl(fd, F_SETLK, &fl) == 0)
            return 0;
        struct flock probe = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = SHMD_LOCK_OFFSET, .l_len = SHMD_LOCK_LEN};
        if (fcntl(fd, F_GETLK, &probe) != 0)
            return -1;
        if (probe.l_type != F_UNLCK)
            return probe.l_pid;
        /* released between our two calls: try again */
    }
    return -1;
}

/* ------------------------------------------------------------------ attach */

/* Anyone can create /dev/shm/<prefix>.<channel> first: trust only a segment
 * owned by the daemon's uid (the same rule as ringbuf.Trust.daemon). */
static int owner_trusted(uid_t owner)
{
    const char *want = getenv("SHMD_DAEMON_UID");
    if (want && *want)
        return owner == (uid_t)strtoul(want, NULL, 10);
    struct passwd pw, *found = NULL;
    char buf[1024];
    return owner == 0 || owner == geteuid() ||
           (getpwnam_r("shmd", &pw, buf, sizeof buf, &found) == 0 && found && owner == found->pw_uid);
}

static int ring_layout_ok(const struct shmd_ring_header *shm_hdr)
{
    /* Block 0 is written once at creation; re-checked because a live segment
     * can still be scribbled on. Relaxed loads: no ordering is implied. */
    return load_relaxed_u64(&shm_hdr->magic) == SHMD_RING_MAGIC &&
           atomic_load_explicit((_Atomic uint32_t *)&shm_hdr->abi_version, memory_order_relaxed) ==
               SHMD_ABI_VERSION;
}

static int map_ring(struct shmd_channel *ch, struct shmd_ring *r, uint32_t offset, uint32_t kind,
                    uint32_t slot_size, const char *what)
{
    size_t size = ch->map_len;
    if ((size_t)offset + SHMD_RING_HEADER_SIZE > size || offset % 8)
        return fail(ch, SHMD_ELAYOUT, "segment %s has an impossible %s offset: offset=%u, size=%zu", ch->segment,
                    what, offset, size);
    struct shmd_ring_header *h = (struct shmd_ring_header *)((uint8_t *)ch->map + offset);
    if (h->magic != SHMD_RING_MAGIC)
        return fail(ch, SHMD_ELAYOUT, "segment %s is not a shmd channel: %s magic=%#llx found, %#llx expected",
                    ch->segment, what, (unsigned long long)h->magic, (unsigned long long)SHMD_RING_MAGIC);
    if (h->abi_version != SHMD_ABI_VERSION)
        return fail(ch, SHMD_ELAYOUT, "segment %s speaks another ABI: %s abi_version=%u found, %u expected",
                    ch->segment, what, h->abi_version, SHMD_ABI_VERSION);
    if (h->kind != kind || h->slot_size != slot_size)
        return fail(ch, SHMD_ELAYOUT, "segment %s: %s kind=%u slot_size=%u found, kind=%u slot_size=%u expected",
                    ch->segment, what, h->kind, h->slot_size, kind, slot_size);
    uint32_t cap = h->capacity;
    if (cap < 2 || (cap & (cap - 1)) ||
        (size_t)offset + SHMD_RING_HEADER_SIZE + (size_t)cap * slot_size > size)
        return fail(ch, SHMD_ELAYOUT, "segment %s has an impossible %s capacity: capacity=%u, size=%zu", ch->segment,
                    what, cap, size);
    r->shm_hdr = h;
    r->shm_slots = (uint8_t *)h + SHMD_RING_HEADER_SIZE;
    r->capacity = cap;
    r->mask = cap - 1;
    r->slot_size = slot_size;
    r->corrupt = 0;
    return SHMD_OK;
}

int shmd_channel_attach(struct shmd_channel *ch, const char *prefix, const char *name)
{
    memset(ch, 0, sizeof *ch);
    ch->fd = -1;
    if (!valid_name(prefix))
        return fail(ch, SHMD_EINVAL, "prefix must be 1-64 of [A-Za-z0-9_-]: prefix=\"%s\"", prefix ? prefix : "(null)");
    if (!valid_name(name))
        return fail(ch, SHMD_EINVAL, "channel must be 1-64 of [A-Za-z0-9_-]: channel=\"%s\"", name ? name : "(null)");
    snprintf(ch->segment, sizeof ch->segment, SHMD_SEGMENT_NAME_FMT, prefix, name);

    /* Exclusive hold within this process first, before opening any fd: POSIX
     * drops all of a process's record locks on a file when *any* of its fds
     * for that file is closed, so a refused second attach must never open one. */
    int added = held_add(ch->segment);
    if (added < 0)
        return fail(ch, SHMD_ESYS, "out of memory recording the hold of %s", ch->segment);
    if (!added)
        return fail(ch, SHMD_EBUSY, "channel '%s' (prefix '%s') is held by this process; detach there first or "
                    "pick another channel", name, prefix);
    ch->fd = shm_open(ch->segment, O_RDWR, 0);
    if (ch->fd < 0) {
        int e = errno;
        held_remove(ch->segment);
        if (e == ENOENT)
            return fail(ch, SHMD_ENOTFOUND, "no channel segment %s: is `shmd serve --prefix %s` running with channel '%s'?",
                        ch->segment, prefix, name);
        struct stat st;
        char path[160];
        snprintf(path, sizeof path, "/dev/shm%s", ch->segment);
        if (e == EACCES && stat(path, &st) == 0)
            return fail(ch, SHMD_ESYS, "cannot open %s as uid %u: owner uid=%u gid=%u mode=%04o; run as uid %u or as a "
                        "member of gid %u (the daemon's --group)", ch->segment, (unsigned)geteuid(), (unsigned)st.st_uid,
                        (unsigned)st.st_gid, (unsigned)(st.st_mode & 07777), (unsigned)st.st_uid, (unsigned)st.st_gid);
        return fail(ch, SHMD_ESYS, "shm_open(%s) failed: %s", ch->segment, strerror(e));
    }
    int rc;
    struct stat st;
    if (fstat(ch->fd, &st) != 0) {
        rc = fail(ch, SHMD_ESYS, "fstat(%s) failed: %s", ch->segment, strerror(errno));
        goto out_close;
    }
    if (!owner_trusted(st.st_uid)) {
        rc = fail(ch, SHMD_EUNTRUSTED, "segment %s is not trusted: owner uid=%u mode=%04o found, the daemon's uid "
                  "expected; set SHMD_DAEMON_UID to its uid if that is expected", ch->segment, (unsigned)st.st_uid,
                  (unsigned)(st.st_mode & 07777));
        goto out_close;
    }
    if ((size_t)st.st_size < sizeof(struct shmd_channel_header)) {
        rc = fail(ch, SHMD_ELAYOUT, "segment %s is too small for a channel: size=%lld found, >= %zu expected",
                  ch->segment, (long long)st.st_size, sizeof(struct shmd_channel_header));
        goto out_close;
    }
    ch->map_len = (size_t)st.st_size;
    ch->map = mmap(NULL, ch->map_len, PROT_READ | PROT_WRITE, MAP_SHARED, ch->fd, 0);
    if (ch->map == MAP_FAILED) {
        ch->map = NULL;
        rc = fail(ch, SHMD_ESYS, "mmap(%s) failed: %s", ch->segment, strerror(errno));
        goto out_close;
    }
    ch->shm_chan = (struct shmd_channel_header *)ch->map;
    const struct shmd_channel_header *h = ch->shm_chan;
    if (h->magic != SHMD_CHANNEL_MAGIC) {
        rc = fail(ch, SHMD_ELAYOUT, "segment %s is not a shmd channel: magic=%#llx found, %#llx expected", ch->segment,
                  (unsigned long long)h->magic, (unsigned long long)SHMD_CHANNEL_MAGIC);
        goto out_unmap;
    }
    if (h->abi_version != SHMD_ABI_VERSION) {
        rc = fail(ch, SHMD_ELAYOUT,
                  "segment %s speaks another ABI: abi_version=%u found, %u expected; rebuild against the daemon's "
                  "shmd_abi.h",
                  ch->segment, h->abi_version, SHMD_ABI_VERSION);
        goto out_unmap;
    }
    if (h->segment_size != ch->map_len) {
        rc = fail(ch, SHMD_ELAYOUT, "segment %s: segment_size=%u found, %zu expected", ch->segment, h->segment_size,
                  ch->map_len);
        goto out_unmap;
    }
    if ((rc = map_ring(ch, &ch->sq, h->sq_offset, SHMD_RING_SUBMISSION, SHMD_REQUEST_SLOT_SIZE, "submission")) ||
        (rc = map_ring(ch, &ch->cq, h->cq_offset, SHMD_RING_COMPLETION, SHMD_RESPONSE_SLOT_SIZE, "completion")))
        goto out_unmap;

    /* Exclusive hold across processes: the kernel drops the lock when we die. */
    pid_t holder = try_lock(ch->fd);
    if (holder != 0) {
        if (holder > 0)
            rc = fail(ch, SHMD_EBUSY, "channel '%s' (prefix '%s') is held by pid %d; detach there first or pick "
                      "another channel", name, prefix, (int)holder);
        else
            rc = fail(ch, SHMD_EBUSY, "channel '%s' (prefix '%s') is held by another process; detach there first or "
                      "pick another channel", name, prefix);
        goto out_unmap;
    }

    /* Resume where the rings stand (as ringbuf's Producer/Consumer do): the
     * SQ from its tail, the CQ from its head; what a previous holder left in
     * the CQ is reaped and dropped by id. */
    uint64_t sq_head = load_acquire_u64(&ch->sq.shm_hdr->head);
    uint64_t sq_tail = load_acquire_u64(&ch->sq.shm_hdr->tail);
    uint64_t cq_head = load_acquire_u64(&ch->cq.shm_hdr->head);
    if (sq_tail - sq_head > ch->sq.capacity) {
        rc = fail(ch, SHMD_ECORRUPT, "segment %s: submission indices invalid: head=%llu tail=%llu capacity=%u",
                  ch->segment, (unsigned long long)sq_head, (unsigned long long)sq_tail, ch->sq.capacity);
        goto out_unmap;
    }
    ch->sq.cached_own = sq_tail;
    ch->sq.cached_peer = sq_head;
    ch->cq.cached_own = cq_head;
    ch->cq.cached_peer = cq_head;
    ch->msg[0] = '\0';
    return SHMD_OK;

out_unmap:
    munmap(ch->map, ch->map_len);
    ch->map = NULL;
    ch->shm_chan = NULL;
out_close:
    held_remove(ch->segment);
    close(ch->fd); /* also drops our record lock, if taken */
    ch->fd = -1;
    return rc;
}

void shmd_channel_detach(struct shmd_channel *ch)
{
    if (ch->map) {
        munmap(ch->map, ch->map_len);
        ch->map = NULL;
        held_remove(ch->segment);
    }
    ch->shm_chan = NULL;
    ch->sq.shm_hdr = ch->cq.shm_hdr = NULL;
    if (ch->fd >= 0)
        close(ch->fd); /* the kernel drops the record lock with the last fd */
    ch->fd = -1;
}

int shmd_channel_check(struct shmd_channel *ch)
{
    if (!ch->map)
        return fail(ch, SHMD_ENOTFOUND, "channel %s is not attached", ch->segment);
    const struct shmd_channel_header *h = ch->shm_chan;
    uint64_t magic = load_relaxed_u64(&h->magic);
    if (magic != SHMD_CHANNEL_MAGIC)
        return fail(ch, SHMD_ECORRUPT, "channel %s header overwritten: magic=%#llx found, %#llx expected", ch->segment,
                    (unsigned long long)magic, (unsigned long long)SHMD_CHANNEL_MAGIC);
    if (!ring_layout_ok(ch->sq.shm_hdr) || !ring_layout_ok(ch->cq.shm_hdr))
        return fail(ch, SHMD_ECORRUPT, "channel %s ring header overwritten (magic or abi_version)", ch->segment);
    uint32_t pid = atomic_load_explicit((_Atomic uint32_t *)&h->daemon_pid, memory_order_relaxed);
    if (pid == 0)
        return fail(ch, SHMD_EDEAD, "channel %s has no daemon (daemon_pid=0): it stopped", ch->segment);
    return SHMD_OK;
}

int shmd_channel_check_daemon(struct shmd_channel *ch, uint64_t stale_ns)
{
    int rc = shmd_channel_check(ch);
    if (rc)
        return rc;
    const struct shmd_channel_header *h = ch->shm_chan;
    uint32_t pid = atomic_load_explicit((_Atomic uint32_t *)&h->daemon_pid, memory_order_relaxed);
    if (kill((pid_t)pid, 0) != 0 && errno == ESRCH)
        return fail(ch, SHMD_EDEAD, "channel %s: daemon pid %u is not running", ch->segment, pid);
    uint64_t beat = load_relaxed_u64(&h->daemon_heartbeat_ns);
    uint64_t now = shmd_now_ns();
    /* 0: the daemon has not done its first housekeeping yet. */
    if (stale_ns && beat && now > beat && now - beat > stale_ns)
        return fail(ch, SHMD_EDEAD, "channel %s: daemon pid %u is hung: heartbeat %.0f ms old (limit %.0f ms)",
                    ch->segment, pid, (double)(now - beat) / 1e6, (double)stale_ns / 1e6);
    return SHMD_OK;
}

/* -------------------------------------------------------- the rings: SQ side */

/* Producer: free slots, or SHMD_ECORRUPT. Like ring_space. */
int shmd_sq_space_left(struct shmd_channel *ch)
{
    struct shmd_ring *r = &ch->sq;
    if (r->corrupt)
        return SHMD_ECORRUPT;
    /* Pairs with the daemon's release store of head: its reads of those slots
     * are finished before we see the head that lets us overwrite them. */
    uint64_t head = load_acquire_u64(&r->shm_hdr->head);
    uint64_t tail = r->cached_own;
    if (head < r->cached_peer || tail - head > r->capacity) {
        /* corrupt_events sits in the consumer's block: the verdict stays private. */
        r->corrupt = 1;
        fail(ch, SHMD_ECORRUPT, "submission ring of %s is corrupt: head=%llu (last %llu), tail=%llu, capacity=%u",
             ch->segment, (unsigned long long)head, (unsigned long long)r->cached_peer, (unsigned long long)tail,
             r->capacity);
        return SHMD_ECORRUPT;
    }
    r->cached_peer = head;
    return (int)(r->capacity - (uint32_t)(tail - head));
}

static void sq_wake_if_sleeping(struct shmd_channel *ch)
{
    /* Pairs with the daemon's fence between setting NEED_WAKEUP and
     * re-reading our tail: at least one of us sees the other's store. */
    atomic_thread_fence(memory_order_seq_cst);
    if (load_acquire_u32(&ch->sq.shm_hdr->flags) & SHMD_RING_NEED_WAKEUP) {
        futex_wake_word(&ch->sq.shm_hdr->wake_seq);
        ch->wakeups_posted++;
    }
}

static void sq_publish(struct shmd_channel *ch, unsigned n)
{
    struct shmd_ring *r = &ch->sq;
    r->cached_own += n;
    /* The daemon must see the slot contents before it sees the tail. */
    store_release_u64(&r->shm_hdr->tail, r->cached_own);
    counter_add(&r->shm_hdr->produced, n);
    sq_wake_if_sleeping(ch);
}

int shmd_sq_submit(struct shmd_channel *ch, const struct shmd_request *reqs, unsigned n)
{
    struct shmd_ring *r = &ch->sq;
    if (r->corrupt)
        return SHMD_ECORRUPT;
    /* The head the daemon released last time we looked is a lower bound: only
     * when it leaves too little room is the shared head loaded (the daemon
     * stores it on every pass, so each load is a cache miss on the caller's
     * path, as io_uring's cached consumer index avoids). */
    int space = (int)(r->capacity - (uint32_t)(r->cached_own - r->cached_peer));
    if ((unsigned)space < n && (space = shmd_sq_space_left(ch)) < 0)
        return space;
    unsigned k = n < (unsigned)space ? n : (unsigned)space;
    if (k == 0) {
        if (n)
            counter_add(&ch->sq.shm_hdr->full_events, 1);
        return 0;
    }
    for (unsigned j = 0; j < k; j++)
        memcpy(r->shm_slots + (size_t)((r->cached_own + j) & r->mask) * r->slot_size, &reqs[j], sizeof reqs[j]);
    sq_publish(ch, k);
    return (int)k;
}

void shmd_sq_nudge(struct shmd_channel *ch)
{
    if (ch->sq.corrupt)
        return;
    if (ch->sq.cached_own != load_acquire_u64(&ch->sq.shm_hdr->head))
        sq_wake_if_sleeping(ch);
}

/* -------------------------------------------------------- the rings: CQ side */

static int cq_mark_corrupt(struct shmd_channel *ch, const char *why, uint64_t tail)
{
    ch->cq.corrupt = 1;
    counter_add(&ch->cq.shm_hdr->corrupt_events, 1); /* consumer block: ours to write */
    return fail(ch, SHMD_ECORRUPT, "completion ring of %s is corrupt (%s): tail=%llu (last %llu), head=%llu, capacity=%u",
                ch->segment, why, (unsigned long long)tail, (unsigned long long)ch->cq.cached_peer,
                (unsigned long long)ch->cq.cached_own, ch->cq.capacity);
}

/* Consumer: like ring_ready. */
int shmd_cq_ready(struct shmd_channel *ch)
{
    struct shmd_ring *r = &ch->cq;
    if (r->corrupt)
        return SHMD_ECORRUPT;
    if (!ring_layout_ok(r->shm_hdr))
        return cq_mark_corrupt(ch, "header magic or abi_version overwritten", 0);
    /* Pairs with the daemon's release store of tail: the response slots are
     * written before we see the tail that covers them. */
    uint64_t tail = load_acquire_u64(&r->shm_hdr->tail);
    if (tail < r->cached_peer || tail - r->cached_own > r->capacity)
        return cq_mark_corrupt(ch, "tail moved backwards or past capacity", tail);
    r->cached_peer = tail;
    return (int)(tail - r->cached_own);
}

int shmd_cq_reap(struct shmd_channel *ch, struct shmd_response *out, unsigned max)
{
    int n = shmd_cq_ready(ch);
    if (n <= 0)
        return n;
    struct shmd_ring *r = &ch->cq;
    unsigned k = (unsigned)n < max ? (unsigned)n : max;
    for (unsigned j = 0; j < k; j++)
        memcpy(&out[j], r->shm_slots + (size_t)((r->cached_own + j) & r->mask) * r->slot_size, sizeof out[j]);
    r->cached_own += k;
    /* The daemon must see our reads of those slots finished before it sees
     * the head that lets it overwrite them. */
    store_release_u64(&r->shm_hdr->head, r->cached_own);
    counter_add(&r->shm_hdr->consumed, k);
    return (int)k;
}

static void cq_end_sleep(struct shmd_channel *ch)
{
    uint32_t *shm_flags = &ch->cq.shm_hdr->flags;
    store_release_u32(shm_flags, load_acquire_u32(shm_flags) & ~(uint32_t)SHMD_RING_NEED_WAKEUP);
}

/* Announce sleep, then re-check; sleep on *seq only if this returns 0. The
 * wake word is loaded before the flag is set: a daemon that sees the flag
 * bumps the word after our load, so the FUTEX_WAIT cannot miss it. */
static int cq_prepare_sleep(struct shmd_channel *ch, uint32_t *seq)
{
    uint32_t *shm_flags = &ch->cq.shm_hdr->flags;
    *seq = load_acquire_u32(&ch->cq.shm_hdr->wake_seq);
    store_release_u32(shm_flags, load_acquire_u32(shm_flags) | SHMD_RING_NEED_WAKEUP);
    /* Pairs with the daemon's fence after publishing the CQ tail: either it
     * sees NEED_WAKEUP (and posts) or we see its tail in the re-check. */
    atomic_thread_fence(memory_order_seq_cst);
    return shmd_cq_ready(ch);
}

int shmd_cq_wait(struct shmd_channel *ch, uint64_t spin_ns, uint64_t deadline_ns)
{
    int n = shmd_cq_ready(ch);
    if (n != 0)
        return n;
    uint64_t start = shmd_now_ns(), now = start;
    uint64_t spin_end = start + spin_ns < deadline_ns ? start + spin_ns : deadline_ns;
    /* Bounded spin: a reply within the window costs no wake-up (~20 us each way). */
    while (now < spin_end) {
        spin_pause(now - start);
        if ((n = shmd_cq_ready(ch)) != 0)
            return n;
        now = shmd_now_ns();
    }
    for (;;) {
        uint32_t seq;
        n = cq_prepare_sleep(ch, &seq);
        if (n == 0) {
            if (shmd_now_ns() >= deadline_ns) {
                cq_end_sleep(ch);
                return 0;
            }
            ch->sleeps++;
            futex_wait_word(&ch->cq.shm_hdr->wake_seq, seq, deadline_ns); /* woken, changed, timeout or EINTR: the re-check decides */
            n = shmd_cq_ready(ch);
        }
        cq_end_sleep(ch);
        if (n != 0)
            return n;
    }
}

/* ============================================================ the client */

/* One edge cache entry: a daemon answer, the key of its request, and what it was stored under. */
struct edge_entry {
    uint64_t key;        /* edge_key() of the request; 0 = empty */
    uint64_t generation; /* the header's cache_generation[model] loaded before the request was sent */
    uint64_t expiry_ns;  /* send time + the TTL the header published then */
    struct shmd_response resp;
};

static int edge_new(struct shmd_client *c);

struct shmd_client {
    struct shmd_client_config cfg;
    char prefix[NAME_MAX_LEN + 1];
    char channel[NAME_MAX_LEN + 1];
    struct shmd_channel ch;
    int attached;
    enum shmd_breaker_state state;
    uint64_t open_until_ns;
    uint32_t misses; /* consecutive missed deadlines */
    uint64_t next_id;
    struct shmd_client_stats stats;
    int last_code;
    char last_msg[SHMD_MSG_LEN];
    struct shmd_response *reaped; /* cq capacity entries */
    unsigned reaped_cap;
    uint8_t *done; /* per request of the current call */
    unsigned done_cap;
    uint64_t answer_ns; /* learnt time from submit to answer (EWMA): sizes the spin window */
    uint64_t spin_max_ns; /* cfg.spin_us, or 0 when this process may run on one CPU only */
    struct edge_entry *edge; /* the edge cache, edge_mask + 1 entries; NULL: none */
    uint64_t edge_mask;
};

/* How long to spin for an answer before sleeping: spinning pays only when the
 * answer comes sooner than a wake-up of ours would cost, so spin for twice the
 * answer time learnt (at most the bound), and not at all once answers take
 * more than twice the bound (the daemon wakes us then). The learning goes on
 * either way; an answer measured after a sleep includes our own wake-up, hence
 * the slack of 2 before giving up on spinning. */
static uint64_t spin_window(const struct shmd_client *c)
{
    if (c->answer_ns > 2 * c->spin_max_ns)
        return 0;
    return 2 * c->answer_ns < c->spin_max_ns ? 2 * c->answer_ns : c->spin_max_ns;
}

static void learn_answer_time(struct shmd_client *c, uint64_t sample_ns)
{
    if (sample_ns > 4 * c->spin_max_ns)
        sample_ns = 4 * c->spin_max_ns; /* one preemption must not rule the next calls */
    c->answer_ns = c->answer_ns - c->answer_ns / 8 + sample_ns / 8;
}

static uint64_t random_id_base(void)
{
    uint64_t x = 0;
    if (getrandom(&x, sizeof x, 0) != (ssize_t)sizeof x)
        x = shmd_now_ns() ^ ((uint64_t)getpid() << 32);
    /* 63 bits like the Python client: a fresh base per attach, so answers
     * meant for an earlier holder (or re-sent after a daemon restart) carry
     * ids this client does not have outstanding. */
    return (x & 0x7fffffffffffffffull) | 1;
}

static void note(struct shmd_client *c, int code, const char *msg)
{
    c->last_code = code;
    snprintf(c->last_msg, sizeof c->last_msg, "%s", msg);
}

static void detach(struct shmd_client *c)
{
    if (c->attached)
        shmd_channel_detach(&c->ch);
    c->attached = 0;
}

static int attach(struct shmd_client *c)
{
    detach(c);
    int rc = shmd_channel_attach(&c->ch, c->prefix, c->channel);
    if (rc == SHMD_OK)
        rc = shmd_channel_check_daemon(&c->ch, (uint64_t)c->cfg.heartbeat_stale_ms * 1000000ull);
    if (rc != SHMD_OK) {
        note(c, rc, c->ch.msg);
        if (c->ch.map)
            shmd_channel_detach(&c->ch);
        return rc;
    }
    c->attached = 1;
    c->next_id = random_id_base();
    if (c->reaped_cap < c->ch.cq.capacity) {
        struct shmd_response *p = realloc(c->reaped, sizeof *p * c->ch.cq.capacity);
        if (!p) {
            note(c, SHMD_ESYS, "out of memory for the reap buffer");
            detach(c);
            return SHMD_ESYS;
        }
        c->reaped = p;
        c->reaped_cap = c->ch.cq.capacity;
    }
    return SHMD_OK;
}

/* Open the breaker: fallback answers until the cool-down ends. */
static void trip(struct shmd_client *c, int code, const char *msg)
{
    if (c->state != SHMD_BREAKER_OPEN)
        c->stats.trips++;
    c->state = SHMD_BREAKER_OPEN;
    c->open_until_ns = shmd_now_ns() + (uint64_t)c->cfg.cooldown_ms * 1000000ull;
    c->misses = 0;
    if (msg != c->last_msg)
        note(c, code, msg);
    c->last_code = code;
    /* A corrupt or orphaned mapping is of no further use; the probe re-attaches by name. */
    if (code == SHMD_ECORRUPT || code == SHMD_EDEAD || code == SHMD_ENOTFOUND)
        detach(c);
}

struct shmd_client *shmd_client_new(const struct shmd_client_config *cfg)
{
    if (!cfg || !valid_name(cfg->prefix) || !valid_name(cfg->channel)) {
        errno = EINVAL;
        return NULL;
    }
    struct shmd_client *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->cfg = *cfg;
    snprintf(c->prefix, sizeof c->prefix, "%s", cfg->prefix);
    snprintf(c->channel, sizeof c->channel, "%s", cfg->channel);
    c->cfg.prefix = c->prefix;
    c->cfg.channel = c->channel;
    if (!c->cfg.spin_us)
        c->cfg.spin_us = 50;
    /* With one CPU to run on, spinning would only keep the daemon we wait for off it. */
    cpu_set_t cpus;
    int one_cpu = sched_getaffinity(0, sizeof cpus, &cpus) == 0 && CPU_COUNT(&cpus) < 2;
    c->spin_max_ns = one_cpu ? 0 : (uint64_t)c->cfg.spin_us * 1000ull;
    c->answer_ns = c->spin_max_ns / 2;
    if (!c->cfg.timeout_ms)
        c->cfg.timeout_ms = 1000;
    if (!c->cfg.cooldown_ms)
        c->cfg.cooldown_ms = 200;
    if (!c->cfg.heartbeat_stale_ms)
        c->cfg.heartbeat_stale_ms = 2000;
    if (!c->cfg.trip_after)
        c->cfg.trip_after = 3;
    c->ch.fd = -1;
    if (edge_new(c) != SHMD_OK) {
        free(c);
        errno = ENOMEM;
        return NULL;
    }
    int rc = attach(c);
    if (rc == SHMD_OK) {
        c->state = SHMD_BREAKER_CLOSED;
    } else {
        /* Start open with the cool-down already over: the first call probes. */
        c->state = SHMD_BREAKER_OPEN;
        c->open_until_ns = 0;
        c->stats.trips++;
    }
    return c;
}

void shmd_client_free(struct shmd_client *c)
{
    if (!c)
        return;
    free(c->edge);
    detach(c);
    free(c->reaped);
    free(c->done);
    free(c);
}

enum shmd_breaker_state shmd_client_state(const struct shmd_client *c) { return c->state; }
const struct shmd_client_stats *shmd_client_stats(const struct shmd_client *c) { return &c->stats; }
const char *shmd_client_last_error(const struct shmd_client *c) { return c->last_msg; }
int shmd_client_last_code(const struct shmd_client *c) { return c->last_code; }

/* Answer reqs[i] by the fallback; SHMD_ENOFALLBACK without one. */
static int fall_back(struct shmd_client *c, const struct shmd_request *req, struct shmd_response *resp)
{
    memset(resp, 0, sizeof *resp);
    resp->request_id = req->request_id;
    resp->model_id = req->model_id;
    resp->flags = SHMD_RESP_FALLBACK;
    if (!c->cfg.fallback) {
        resp->status = SHMD_STATUS_INTERNAL;
        return SHMD_ENOFALLBACK;
    }
    resp->status = SHMD_STATUS_OK;
    c->cfg.fallback(req, resp, c->cfg.fallback_arg);
    resp->flags |= SHMD_RESP_FALLBACK;
    c->stats.fallback_answers++;
    return SHMD_OK;
}

/* Submit all requests (as space allows) and collect their answers until the
 * deadline. Returns how many were answered (< n: the deadline passed) or a
 * negative error (corrupt channel, dead daemon). */
static int exchange(struct shmd_client *c, struct shmd_request *reqs, struct shmd_response *resps, unsigned n,
                    uint64_t deadline_ns)
{
    struct shmd_channel *ch = &c->ch;
    uint64_t first = c->next_id;
    c->next_id += n;
    uint64_t now = shmd_now_ns();
    for (unsigned i = 0; i < n; i++) {
        reqs[i].request_id = first + i;
        reqs[i].abi_version = SHMD_ABI_VERSION;
        reqs[i].payload_len = payload_size(reqs[i].model_id);
        reqs[i].submit_ns = now;
    }
    memset(c->done, 0, n);
    unsigned sent = 0, got = 0;
    uint64_t spin_ns = spin_window(c);
    uint64_t submitted = now;
    for (;;) {
        if (sent < n) {
            int k = shmd_sq_submit(ch, reqs + sent, n - sent);
            if (k < 0)
                return k;
            sent += (unsigned)k;
        }
        int r = shmd_cq_reap(ch, c->reaped, c->reaped_cap);
        if (r < 0)
            return r;
        for (int j = 0; j < r; j++) {
            uint64_t idx = c->reaped[j].request_id - first; /* u64: ids below first wrap to huge */
            if (idx < n && !c->done[idx]) {
                resps[idx] = c->reaped[j];
                c->done[idx] = 1;
                got++;
            } else {
                c->stats.dropped++; /* late answer to an earlier call, or a duplicate after a restart */
            }
        }
        if (got == n) {
            if (n <= 4) /* a big batch's time says nothing about the next single answer */
                learn_answer_time(c, shmd_now_ns() - submitted);
            return (int)n;
        }
        /* The daemon may have stopped draining our SQ for want of CQ room. Not
         * once every answer is in: an older call's leftovers are woken for by the
         * next submit, and the load of the SQ head is a cache miss per call. */
        if (r > 0)
            shmd_sq_nudge(ch);
        now = shmd_now_ns();
        if (now >= deadline_ns)
            return (int)got;
        uint64_t until = now + WAIT_SLICE_NS < deadline_ns ? now + WAIT_SLICE_NS : deadline_ns;
        int w = shmd_cq_wait(ch, spin_ns, until);
        if (w < 0)
            return w;
        if (w == 0) {
            /* A whole slice without an answer: is the daemon still there? */
            int rc = shmd_channel_check_daemon(ch, (uint64_t)c->cfg.heartbeat_stale_ms * 1000000ull);
            if (rc)
                return rc;
        }
    }
}

static int ensure_done(struct shmd_client *c, unsigned n)
{
    if (c->done_cap >= n)
        return SHMD_OK;
    uint8_t *p = realloc(c->done, n);
    if (!p)
        return SHMD_ESYS;
    c->done = p;
    c->done_cap = n;
    return SHMD_OK;
}

/* Fallback for every request not answered; the count, or SHMD_ENOFALLBACK. */
static int fall_back_rest(struct shmd_client *c, struct shmd_request *reqs, struct shmd_response *resps, unsigned n,
                          const uint8_t *answered)
{
    int count = 0, rc = SHMD_OK;
    for (unsigned i = 0; i < n; i++) {
        if (answered && answered[i])
            continue;
        if (fall_back(c, &reqs[i], &resps[i]) != SHMD_OK)
            rc = SHMD_ENOFALLBACK;
        count++;
    }
    return rc ? rc : count;
}

int shmd_client_predict_batch(struct shmd_client *c, struct shmd_request *reqs, struct shmd_response *resps,
                              unsigned n)
{
    if (!c || (n && (!reqs || !resps)))
        return SHMD_EINVAL;
    if (n == 0)
        return 0;
    if (ensure_done(c, n) != SHMD_OK)
        return SHMD_ESYS;
    uint64_t now = shmd_now_ns();
    uint64_t deadline = 0;
    for (unsigned i = 0; i < n; i++)
        if (reqs[i].deadline_ns && (!deadline || reqs[i].deadline_ns < deadline))
            deadline = reqs[i].deadline_ns;
    if (!deadline)
        deadline = now + (uint64_t)c->cfg.timeout_ms * 1000000ull;

    if (c->state == SHMD_BREAKER_OPEN) {
        if (now < c->open_until_ns) {
            for (unsigned i = 0; i < n; i++)
                reqs[i].request_id = 0; /* never sent */
            return fall_back_rest(c, reqs, resps, n, NULL);
        }
        c->state = SHMD_BREAKER_HALF_OPEN; /* cool-down over: this call probes */
    }
    if (c->state == SHMD_BREAKER_HALF_OPEN || !c->attached) {
        int rc = attach(c);
        if (rc != SHMD_OK) {
            trip(c, rc, c->last_msg);
            return fall_back_rest(c, reqs, resps, n, NULL);
        }
    }
    int rc = shmd_channel_check(&c->ch);
    if (rc != SHMD_OK) {
        trip(c, rc, c->ch.msg);
        return fall_back_rest(c, reqs, resps, n, NULL);
    }

    int got = exchange(c, reqs, resps, n, deadline);
    if (got < 0) {
        /* Corrupt or dead: what did arrive is still a valid answer. */
        trip(c, got, c->ch.msg);
        return fall_back_rest(c, reqs, resps, n, c->done);
    }
    /* The daemon's own "too late / could not" answers go to the fallback too;
     * caller mistakes (INVALID_INPUT, UNKNOWN_MODEL, BAD_VERSION) stand. */
    unsigned late = (unsigned)n - (unsigned)got;
    for (unsigned i = 0; i < n; i++) {
        if (!c->done[i])
            continue;
        uint16_t st = resps[i].status;
        if (st == SHMD_STATUS_DEADLINE_EXCEEDED || st == SHMD_STATUS_OVERLOADED || st == SHMD_STATUS_INTERNAL) {
            c->done[i] = 0;
            late += st == SHMD_STATUS_DEADLINE_EXCEEDED;
        } else {
            c->stats.daemon_answers++;
        }
    }
    if (late) {
        c->stats.deadline_misses++;
        char msg[SHMD_MSG_LEN];
        snprintf(msg, sizeof msg, "%u of %u answers missed the deadline on channel %s", late, n, c->ch.segment);
        if (c->state == SHMD_BREAKER_HALF_OPEN || ++c->misses >= c->cfg.trip_after)
            trip(c, SHMD_ETIMEDOUT, msg);
        else
            note(c, SHMD_ETIMEDOUT, msg);
    } else {
        if (c->state == SHMD_BREAKER_HALF_OPEN)
            c->stats.recoveries++;
        c->state = SHMD_BREAKER_CLOSED;
        c->misses = 0;
    }
    return fall_back_rest(c, reqs, resps, n, c->done);
}

/* ------------------------------------------------------------ edge cache */

#define EDGE_PROBE 4 /* entries examined per lookup, as the daemon's cache */

static int edge_new(struct shmd_client *c)
{
    if (!c->cfg.edge_cache_entries)
        return SHMD_OK;
    uint64_t n = EDGE_PROBE;
    while (n < c->cfg.edge_cache_entries && n < (1u << 24))
        n <<= 1;
    c->edge = calloc(n, sizeof *c->edge);
    if (!c->edge)
        return SHMD_ESYS;
    c->edge_mask = n - 1;
    return SHMD_OK;
}

static inline uint64_t edge_round(uint64_t h, uint64_t word)
{
    h = (h ^ word) * 0x9e3779b97f4a7c15ull;
    return h ^ (h >> 32);
}

/* A 64-bit key of the model and payload bytes, never 0: multiply-xorshift per
 * 8-byte word in four independent lanes, then splitmix64's finaliser (the
 * daemon's feature_key, over bytes). Two requests sharing a key would answer
 * one with the other's prediction: a ~2**-64 event per lookup. */
static uint64_t edge_key(const struct shmd_request *req, uint32_t len)
{
    const uint8_t *p = (const uint8_t *)&req->payload;
    uint64_t h0 = 0x243f6a8885a308d3ull ^ req->model_id, h1 = h0 ^ 1, h2 = h0 ^ 2, h3 = h0 ^ 3, w[4];
    uint32_t i = 0;
    for (; i + 32 <= len; i += 32) {
        memcpy(w, p + i, 32);
        h0 = edge_round(h0, w[0]);
        h1 = edge_round(h1, w[1]);
        h2 = edge_round(h2, w[2]);
        h3 = edge_round(h3, w[3]);
    }
    for (; i < len; i += 8) {
        uint64_t t = 0;
        memcpy(&t, p + i, len - i < 8 ? len - i : 8);
        h0 = edge_round(h0, t);
    }
    uint64_t h = edge_round(edge_round(edge_round(h0, h1), h2), h3) ^ len;
    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebull;
    h ^= h >> 31;
    return h ? h : 1;
}

/* The entry answering `key` under `generation` at `now`, or NULL. */
static struct edge_entry *edge_find(struct shmd_client *c, uint64_t key, uint64_t generation, uint64_t now)
{
    for (uint64_t p = 0; p < EDGE_PROBE; p++) {
        struct edge_entry *e = &c->edge[(key + p) & c->edge_mask];
        if (e->key == key && e->generation == generation && e->expiry_ns > now)
            return e;
    }
    return NULL;
}

/* Where to store `key`: its own entry, an empty or expired one, else the one expiring first. */
static struct edge_entry *edge_slot(struct shmd_client *c, uint64_t key, uint64_t now)
{
    struct edge_entry *victim = &c->edge[key & c->edge_mask];
    for (uint64_t p = 0; p < EDGE_PROBE; p++) {
        struct edge_entry *e = &c->edge[(key + p) & c->edge_mask];
        if (e->key == key || e->key == 0 || e->expiry_ns <= now)
            return e;
        if (e->expiry_ns < victim->expiry_ns)
            victim = e;
    }
    return victim;
}

int shmd_client_predict(struct shmd_client *c, struct shmd_request *req, struct shmd_response *resp)
{
    uint32_t len = c && req ? payload_size(req->model_id) : 0;
    /* The edge cache needs the daemon's header words: only while attached. */
    if (!c || !c->edge || !c->attached || !len || (req->flags & SHMD_REQ_NO_CACHE)) {
        int rc = shmd_client_predict_batch(c, req, resp, 1);
        return rc < 0 ? rc : (rc ? SHMD_SOURCE_FALLBACK : SHMD_SOURCE_DAEMON);
    }
    struct shmd_channel_header *h = c->ch.shm_chan;
    uint64_t key = edge_key(req, len);
    /* Loaded before the request goes out: an answer computed before a clear is
     * stored under the generation the clear replaced, and never served after it. */
    uint64_t generation = load_acquire_u64(&h->cache_generation[req->model_id]);
    uint64_t ttl = load_relaxed_u64(&h->cache_ttl_ns[req->model_id]);
    uint64_t now = shmd_now_ns();
    struct edge_entry *e = edge_find(c, key, generation, now);
    if (e) {
        *resp = e->resp;
        resp->request_id = req->request_id = 0; /* nothing was sent */
        resp->flags = SHMD_RESP_CACHE_HIT | SHMD_RESP_LOCAL;
        resp->service_ns = 0;
        c->stats.local_hits++;
        return SHMD_SOURCE_LOCAL;
    }
    c->stats.local_misses++;
    int rc = shmd_client_predict_batch(c, req, resp, 1);
    if (rc < 0)
        return rc;
    if (rc)
        return SHMD_SOURCE_FALLBACK;
    /* Only fresh answers: a daemon cache hit's age is unknown, so keeping it
     * could serve an answer older than the TTL. */
    if (ttl && resp->status == SHMD_STATUS_OK && !(resp->flags & SHMD_RESP_CACHE_HIT)) {
        e = edge_slot(c, key, now);
        e->key = key;
        e->generation = generation;
        e->expiry_ns = now + ttl > now ? now + ttl : UINT64_MAX;
        e->resp = *resp;
    }
    return SHMD_SOURCE_DAEMON;
}
