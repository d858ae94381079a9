/*
 * Models HAMi-core issue #269 (fixed by PR #282): a process's GPU memory
 * usage slot is published through a seqlock. Its readers are right: wait
 * for an even sequence, read, re-read the sequence, retry if it moved.
 * But two kinds of writers update the slot: the allocator's paths hold the
 * allocator mutex, the context retain/release hooks do not. Each writer
 * bumps the sequence with a bare fetch_add, so a second writer turns it
 * even while the first is still writing, and a reader accepts a snapshot
 * torn across fields: the total no longer equals the sum of its parts.
 *
 * The reader's wait for an even sequence counts its iterations (a retry
 * statistic, kept per reader).
 *
 * usage: hami_269_seqlock_writers [rounds] [window]
 *   window: work between a writer's two field updates
 */
#include <assert.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

struct usage_slot {
    unsigned long seq;          /* odd while a write is in progress */
    volatile long allocated;    /* bytes of the allocator's buffers */
    volatile long context;      /* bytes of retained contexts */
    volatile long total;        /* allocated + context */
};

static struct usage_slot slot;
static pthread_mutex_t alloc_mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t stats_lock = PTHREAD_MUTEX_INITIALIZER;
static int rounds = 200, window = 0;
static long checks, wait_spins;

static void spin(long n) { for (volatile long i = 0; i < n; i++) ; }

static void write_begin(void) { __atomic_fetch_add(&slot.seq, 1, __ATOMIC_ACQ_REL); }
static void write_end(void) { __atomic_fetch_add(&slot.seq, 1, __ATOMIC_ACQ_REL); }

/* The allocator's path: under its mutex, which the context hooks do not take. */
static void add_allocation(long bytes)
{
    pthread_mutex_lock(&alloc_mutex);
    write_begin();
    slot.allocated += bytes;                    /* RACE */
    spin(window);
    slot.total += bytes;                        /* RACE */
    write_end();
    pthread_mutex_unlock(&alloc_mutex);
}

/* cuDevicePrimaryCtxRetain/Release: the same slot, no mutex. */
static void add_context(long bytes)
{
    write_begin();
    slot.context += bytes;                      /* RACE */
    spin(window);
    slot.total += bytes;                        /* RACE */
    write_end();
}

/* get_gpu_memory_usage: a consistent snapshot's total. */
static long read_usage(void)
{
    unsigned long s;
    long allocated, context, total, spins = 0;
    do {
        while ((s = __atomic_load_n(&slot.seq, __ATOMIC_ACQUIRE)) & 1)
            spins++;                            /* a writer is active */
        allocated = slot.allocated;             /* RACE */
        context = slot.context;                 /* RACE */
        total = slot.total;                     /* RACE */
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
    } while (__atomic_load_n(&slot.seq, __ATOMIC_RELAXED) != s);
    assert(total == allocated + context && "torn usage snapshot accepted");
    pthread_mutex_lock(&stats_lock);
    checks++;
    wait_spins += spins;
    pthread_mutex_unlock(&stats_lock);
    return total;
}

static void *allocator(void *arg)
{
    (void)arg;
    for (int i = 0; i < rounds; i++) {
        add_allocation(4096);
        spin(200);
        add_allocation(-4096);
        spin(200);
    }
    return NULL;
}

static void *context_hooks(void *arg)
{
    (void)arg;
    for (int i = 0; i < rounds; i++) {
        add_context(1 << 20);
        pthread_mutex_lock(&stats_lock);        /* the hook's own bookkeeping */
        pthread_mutex_unlock(&stats_lock);
        add_context(-(1 << 20));
        spin(300);
    }
    return NULL;
}

static void *monitor(void *arg)
{
    (void)arg;
    for (int i = 0; i < rounds; i++) {
        read_usage();
        spin(150);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    pthread_t a, c, m;
    if (argc > 1) rounds = atoi(argv[1]);
    if (argc > 2) window = atoi(argv[2]);
    pthread_create(&a, NULL, allocator, NULL);
    pthread_create(&c, NULL, context_hooks, NULL);
    pthread_create(&m, NULL, monitor, NULL);
    pthread_join(a, NULL);
    pthread_join(c, NULL);
    pthread_join(m, NULL);
    printf("usage %ld after %ld checks\n", slot.total, checks);
    return wait_spins < 0;
}
