/*
 * Models Apache httpd PR 44402 (worker MPM crashes under load): the queue of
 * recycled transaction pools is a lock-free stack updated with a
 * compare-and-swap on its head.  A worker pops by reading head and
 * head->next and then CASing head from `head` to `next`; if, in between,
 * a second worker pops that pool, a third pops the next one, and the second
 * pushes its pool back, the CAS still succeeds (ABA) and installs a pool
 * that the third worker is using as the new head.  The pool is then handed
 * to two workers.  This needs three threads interleaved in that order.
 * (The CAS itself is atomic: it is done under a mutex, like the
 * apr_atomic_casptr it stands for; the reads before it are not.)
 *
 * usage: httpd_44402_recycled [connections] [one_in]
 *   one_in: a pop is preempted between its reads and its CAS once in one_in
 *           times (smaller = more failures)
 */
#include <assert.h>
#include <pthread.h>
#include <stdio.h>
#include <sched.h>
#include <stdlib.h>

#define NPOOLS 4
#define NWORKERS 3

struct pool { struct pool *volatile next; volatile long owner; long requests; };

static struct pool pools[NPOOLS];
static struct pool *volatile recycled_pools;
static pthread_mutex_t cas_lock = PTHREAD_MUTEX_INITIALIZER;
static int connections = 200, window = 50; /* window: the one_in argument */

static void spin(long n) { for (volatile long i = 0; i < n; i++) ; }

static int casptr(struct pool *volatile *mem, struct pool *old, struct pool *new)
{
    pthread_mutex_lock(&cas_lock);
    int ok = *mem == old;
    if (ok) *mem = new;
    pthread_mutex_unlock(&cas_lock);
    return ok;
}

static struct pool *pop_recycled(unsigned *seed)
{
    for (;;) {
        struct pool *first = recycled_pools;        /* RACE */
        if (first == NULL) return NULL;
        struct pool *next = first->next;            /* RACE */
        *seed = *seed * 1103515245 + 12345;
        if ((*seed >> 16) % window == 0)            /* now and then the thread */
            sched_yield();                          /* loses its CPU right here */
        if (casptr(&recycled_pools, first, next)) return first;
    }
}

static void push_recycled(struct pool *p)
{
    for (;;) {
        struct pool *old = recycled_pools;
        p->next = old;                              /* RACE */
        if (casptr(&recycled_pools, old, p)) return;
    }
}

static void *worker(void *arg)
{
    long me = (long)arg;
    unsigned seed = (unsigned)me * 2654435761u;
    for (int i = 0; i < connections; i++) {
        struct pool *p = pop_recycled(&seed);
        if (p == NULL) { spin(100); continue; }    /* would apr_pool_create */
        assert(p->owner == 0 && "recycled pool handed to two workers");
        p->owner = me;
        spin(100);                                  /* processes the connection */
        sched_yield();                              /* ...and waits for the socket */
        p->requests++;
        assert(p->owner == me && "recycled pool handed to two workers");
        p->owner = 0;
        push_recycled(p);
        spin(100);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    pthread_t t[NWORKERS];
    long total = 0;
    if (argc > 1) connections = atoi(argv[1]);
    if (argc > 2) window = atoi(argv[2]);
    if (window < 1) window = 1;
    for (int i = 0; i < NPOOLS; i++) push_recycled(&pools[i]);
    for (long i = 0; i < NWORKERS; i++) pthread_create(&t[i], NULL, worker, (void *)(i + 1));
    for (int i = 0; i < NWORKERS; i++) pthread_join(t[i], NULL);
    for (int i = 0; i < NPOOLS; i++) total += pools[i].requests;
    printf("pools=%d\n", NPOOLS);
    return total > 0 ? 0 : 1;
}
