/*
 * Models urllib3 pull request #204 ("Fix a race condition between
 * pools.get and pools.set"): PoolManager.connection_from_host looks the
 * host's connection pool up in its RecentlyUsedContainer and, on a miss,
 * creates a pool and stores it. Two threads that miss at once both create
 * one; the second store replaces the first pool, and the container's
 * dispose callback closes the replaced pool -- after the container lock is
 * released -- while the first thread sends its request through the pool it
 * created: the pool is closed under it (ClosedPoolError). The container
 * keeps fewer pools than there are hosts, so pools are evicted, closed and
 * created again all the time.
 *
 * usage: urllib3_204_pool_dispose [requests] [window]
 *   requests: requests per thread
 *   window:   work between getting the pool and taking a connection from it
 */
#include <assert.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#define NHOSTS 6
#define MAXPOOLS 5          /* the container's size: fewer than the hosts */
#define NTHREADS 3
#define NCONN 2

struct queue { pthread_mutex_t lock; int nfree; long conns[NCONN]; };
struct pool {
    int host;
    struct queue *volatile q;   /* NULL once closed, as urllib3's self.pool */
    long requests;
};

/* The container: a host's pool, and when it was last used (LRU). */
static struct { struct pool *pool; long used; } slots[MAXPOOLS];
static long clock_ticks;
static pthread_mutex_t container_lock = PTHREAD_MUTEX_INITIALIZER;
static int requests = 200, window = 0;

static void spin(long n) { for (volatile long i = 0; i < n; i++) ; }

static struct pool *new_pool(int host)
{
    struct pool *p = calloc(1, sizeof *p);
    struct queue *q = calloc(1, sizeof *q);
    pthread_mutex_init(&q->lock, NULL);
    q->nfree = NCONN;
    p->host = host;
    p->q = q;
    return p;
}

/* HTTPConnectionPool.close: the pool forgets its queue, then drains it.
 * Pools and queues are not freed: a late user finds them closed. */
static void dispose(struct pool *p)
{
    struct queue *q = p->q;
    p->q = NULL;                                            /* RACE */
    if (q != NULL) {
        pthread_mutex_lock(&q->lock);
        q->nfree = 0;
        pthread_mutex_unlock(&q->lock);
    }
}

static struct pool *container_get(int host)
{
    struct pool *p = NULL;
    pthread_mutex_lock(&container_lock);
    for (int i = 0; i < MAXPOOLS; i++)
        if (slots[i].pool != NULL && slots[i].pool->host == host) {
            p = slots[i].pool;
            slots[i].used = ++clock_ticks;
        }
    pthread_mutex_unlock(&container_lock);
    return p;
}

/* RecentlyUsedContainer.__setitem__: stores the pool under its host,
 * replacing that host's pool or else the least recently used one, and
 * disposes of what it replaced outside the lock. */
static void container_set(struct pool *p)
{
    int victim = 0;
    pthread_mutex_lock(&container_lock);
    for (int i = 0; i < MAXPOOLS; i++) {
        if (slots[i].pool != NULL && slots[i].pool->host == p->host) { victim = i; break; }
        if (slots[i].used < slots[victim].used) victim = i;
    }
    struct pool *evicted = slots[victim].pool;
    slots[victim].pool = p;
    slots[victim].used = ++clock_ticks;
    pthread_mutex_unlock(&container_lock);
    if (evicted != NULL)
        dispose(evicted);
}

/* The bug: get and set are two critical sections, not one. */
static struct pool *connection_from_host(int host)
{
    struct pool *p = container_get(host);
    if (p == NULL) {
        p = new_pool(host);
        container_set(p);
    }
    return p;
}

/* HTTPConnectionPool.urlopen: builds the request, takes a connection. */
static void urlopen(struct pool *p, long me)
{
    spin(window);                                   /* builds the request */
    struct queue *q = p->q;                                 /* RACE */
    assert(q != NULL && "ClosedPoolError: pool closed under a request");
    pthread_mutex_lock(&q->lock);
    if (q->nfree > 0) q->nfree--;
    pthread_mutex_unlock(&q->lock);
    p->requests += me;
    spin(200);                                      /* the response */
    pthread_mutex_lock(&q->lock);
    if (q->nfree < NCONN) q->nfree++;
    pthread_mutex_unlock(&q->lock);
}

static void *worker(void *arg)
{
    long me = (long)arg;
    unsigned seed = (unsigned)me * 2654435761u;
    for (int i = 0; i < requests; i++) {
        seed = seed * 1103515245 + 12345;
        int host = (seed >> 16) % NHOSTS;
        urlopen(connection_from_host(host), me);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    pthread_t t[NTHREADS];
    if (argc > 1) requests = atoi(argv[1]);
    if (argc > 2) window = atoi(argv[2]);
    for (long i = 0; i < NTHREADS; i++)
        pthread_create(&t[i], NULL, worker, (void *)(i + 1));
    for (int i = 0; i < NTHREADS; i++)
        pthread_join(t[i], NULL);
    printf("requests=%d\n", NTHREADS * requests);
    return 0;
}
