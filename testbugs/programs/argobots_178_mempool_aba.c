/*
 * Models Argobots issue #178 ("Naive lock-free stack in mempool causes an
 * ABA problem"): the memory pool of thread descriptors is a lock-free stack
 * whose pop reads the top `A`, then `A->next` (`B`), and swaps the top from
 * A to B with a compare-and-swap. If, in between, other execution streams
 * take A, take B, and give A back (whose next is now another descriptor),
 * the swap still succeeds: B becomes the top while an execution stream is
 * using it, and the next pop hands B out a second time.
 *
 * Unlike httpd_44402 (a compare-and-swap built on a mutex), the swap here is
 * one atomic instruction: popping and pushing make no sketch event at all.
 * Each use of a descriptor updates the pool's statistics under a mutex (a
 * sketch event per iteration); the stream that pops with a stale `next` was
 * descheduled between its reads and its swap, so its stretch between two
 * statistics updates is long in the sketch.
 *
 * usage: argobots_178_mempool_aba [iterations] [one_in]
 *   one_in: a pop yields between its reads and its swap once in one_in
 *           times (smaller = more failures)
 */
#include <assert.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>

#define NDESC 4
#define NSTREAMS 3

struct desc {
    struct desc *next;
    volatile long owner;
    long uses;
};

static struct desc descs[NDESC];
static struct desc *top; /* the pool: a lock-free stack */
static pthread_mutex_t stats_lock = PTHREAD_MUTEX_INITIALIZER;
static long created, used;
static int iterations = 300, window = 40;

static void spin(long n) { for (volatile long i = 0; i < n; i++) ; }

static struct desc *pool_pop(unsigned *seed)
{
    struct desc *a, *next;
    do {
        a = __atomic_load_n(&top, __ATOMIC_ACQUIRE);          /* RACE */
        if (a == NULL)
            return NULL;
        next = a->next;                                       /* RACE */
        *seed = *seed * 1103515245 + 12345;
        if ((*seed >> 16) % window == 0)  /* now and then the stream */
            sched_yield();                /* loses its CPU right here */
    } while (!__atomic_compare_exchange_n(&top, &a, next, 0, /* RACE */
                                          __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE));
    return a;
}

static void pool_push(struct desc *d)
{
    struct desc *old = __atomic_load_n(&top, __ATOMIC_ACQUIRE);
    do {
        d->next = old;                                        /* RACE */
    } while (!__atomic_compare_exchange_n(&top, &old, d, 0,
                                          __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE));
}

static void *stream(void *arg)
{
    long me = (long)arg;
    unsigned seed = (unsigned)me * 2654435761u;
    for (int i = 0; i < iterations; i++) {
        struct desc *d = pool_pop(&seed);
        if (d == NULL) { /* empty pool: a real stream would allocate one */
            pthread_mutex_lock(&stats_lock);
            created++;
            pthread_mutex_unlock(&stats_lock);
            continue;
        }
        assert(d->owner == 0 && "mempool handed one descriptor to two execution streams");
        d->owner = me;
        spin(200); /* runs the work unit */
        pthread_mutex_lock(&stats_lock);
        d->uses++;
        used++;
        pthread_mutex_unlock(&stats_lock);
        assert(d->owner == me && "mempool handed one descriptor to two execution streams");
        d->owner = 0;
        pool_push(d);
        spin(100); /* back in the scheduler loop */
    }
    return NULL;
}

int main(int argc, char **argv)
{
    pthread_t t[NSTREAMS];
    if (argc > 1)
        iterations = atoi(argv[1]);
    if (argc > 2)
        window = atoi(argv[2]);
    if (window < 1)
        window = 1;
    for (int i = 0; i < NDESC; i++)
        pool_push(&descs[i]);
    for (long i = 0; i < NSTREAMS; i++)
        pthread_create(&t[i], NULL, stream, (void *)(i + 1));
    for (int i = 0; i < NSTREAMS; i++)
        pthread_join(t[i], NULL);
    printf("descriptors=%d used=%ld\n", NDESC, used);
    return 0;
}
