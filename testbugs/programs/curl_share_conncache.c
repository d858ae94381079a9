/*
 * Models curl issue #4544 (CURL_LOCK_DATA_CONNECT can cause concurrent
 * access to a connection on multiple threads): easy handles in several
 * threads share one connection cache through the share interface, whose
 * lock callbacks guard the cache.  The lookup chose an idle connection to
 * the wanted host under the lock, but released the lock before the chosen
 * connection was taken out of the cache, so a second thread could choose
 * the same connection in between; the reporter saw three threads reuse one
 * connection at once.  Here the cache is a list of idle connections walked
 * under the share lock; the chosen one is unlinked after the unlock; each
 * transfer claims its connection, counts its request under the stats lock,
 * and checks its claim before it hands the connection back.
 *
 * usage: curl_share_conncache [transfers] [window]
 *   transfers: transfers per thread (more = more failures)
 *   window:    work between releasing the lock and unlinking the choice
 */
#include <assert.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#define NCONNS 6
#define NTHREADS 3
#define NHOSTS 2

struct conn { struct conn *next; int host; volatile long xfer; long requests; };

static struct conn conns[NCONNS];
static struct conn *volatile idle;          /* the shared connection cache */
static pthread_mutex_t share_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t stats_lock = PTHREAD_MUTEX_INITIALIZER;
static long requests_sent;
static int transfers = 100, window = 10;

static void spin(long n) { for (volatile long i = 0; i < n; i++) ; }

/* ConnectionExists: choose an idle connection to host under the share
 * lock, then (after the unlock) take it out of the cache. */
static struct conn *conn_find(int host)
{
    struct conn *volatile *prev = &idle;
    struct conn *c;
    int steps = 0;
    pthread_mutex_lock(&share_lock);
    /* At most NCONNS steps: a cache corrupted by the race may loop. */
    for (c = *prev; c != NULL && steps++ < NCONNS; prev = &c->next, c = *prev)  /* RACE */
        if (c->host == host)
            break;
    pthread_mutex_unlock(&share_lock);
    if (steps > NCONNS)
        c = NULL;
    if (c == NULL)
        return NULL;
    spin(window);                           /* reuse_conn() and friends */
    *prev = c->next;                        /* RACE */
    return c;
}

/* Curl_conncache_return_conn: back to the front of the cache. */
static void conn_return(struct conn *c)
{
    pthread_mutex_lock(&share_lock);
    c->next = idle;                         /* RACE */
    idle = c;                               /* RACE */
    pthread_mutex_unlock(&share_lock);
}

static void *transfer_thread(void *arg)
{
    long me = (long)arg;
    for (int i = 0; i < transfers; i++) {
        int host = (int)((me + i) % NHOSTS);
        struct conn *c = conn_find(host);
        if (c == NULL) { spin(200); continue; }   /* would open a new one */
        c->xfer = me;
        pthread_mutex_lock(&stats_lock);
        requests_sent++;
        pthread_mutex_unlock(&stats_lock);
        c->requests++;
        spin(300);                          /* the request and its response */
        assert(c->xfer == me && "one connection used by two transfers");
        c->xfer = 0;
        conn_return(c);
        spin(200);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    pthread_t t[NTHREADS];
    if (argc > 1) transfers = atoi(argv[1]);
    if (argc > 2) window = atoi(argv[2]);
    for (int i = 0; i < NCONNS; i++) {
        conns[i].host = i % NHOSTS;
        conn_return(&conns[i]);
    }
    for (long i = 0; i < NTHREADS; i++)
        pthread_create(&t[i], NULL, transfer_thread, (void *)(i + 1));
    for (int i = 0; i < NTHREADS; i++)
        pthread_join(t[i], NULL);
    printf("requests=%ld\n", requests_sent);
    return 0;
}
