/*
 * Models stchang/redis issue #6 (a Racket Redis client: "race condition when
 * returning and then leasing a connection": the second lease of a connection
 * reported another owner; "the pool gave out the connection while it was
 * still cleaning it"). Returning a connection puts it back in the pool under
 * the pool's lock and wakes a waiting client, and only then clears the
 * connection's owner. A client that leases it in between sets itself as the
 * owner first; the late cleanup then erases it, and the new holder finds a
 * connection that is no longer its own.
 *
 * usage: racket_redis_6_lease_cleanup [requests] [window]
 *   requests: leases per client
 *   window:   work between putting the connection back and cleaning it
 */
#include <assert.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#define NCONN 2
#define NCLIENTS 3

struct conn { volatile long owner; long replies; };

static struct conn conns[NCONN];
static struct conn *idle[NCONN];
static int nidle;
static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t returned = PTHREAD_COND_INITIALIZER;
static int requests = 200, window = 0;

static void spin(long n) { for (volatile long i = 0; i < n; i++) ; }

static struct conn *lease(long me)
{
    pthread_mutex_lock(&pool_lock);
    while (nidle == 0)
        pthread_cond_wait(&returned, &pool_lock);
    struct conn *c = idle[--nidle];
    pthread_mutex_unlock(&pool_lock);
    c->owner = me;                          /* RACE */
    return c;
}

/* The bug: the connection is back in the pool before its cleanup. */
static void give_back(struct conn *c)
{
    pthread_mutex_lock(&pool_lock);
    idle[nidle++] = c;
    pthread_cond_signal(&returned);
    pthread_mutex_unlock(&pool_lock);
    spin(window);
    c->owner = 0;                           /* RACE */
}

static void *client(void *arg)
{
    long me = (long)arg;
    for (int i = 0; i < requests; i++) {
        struct conn *c = lease(me);
        spin(200);                          /* send the command, read the reply */
        assert(c->owner == me && "connection leased while its last holder was still cleaning it"); /* RACE */
        c->replies++;
        give_back(c);
        spin(100);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    pthread_t t[NCLIENTS];
    if (argc > 1) requests = atoi(argv[1]);
    if (argc > 2) window = atoi(argv[2]);
    for (int i = 0; i < NCONN; i++) idle[nidle++] = &conns[i];
    for (long i = 0; i < NCLIENTS; i++) pthread_create(&t[i], NULL, client, (void *)(i + 1));
    for (int i = 0; i < NCLIENTS; i++) pthread_join(t[i], NULL);
    long total = 0;
    for (int i = 0; i < NCONN; i++) total += conns[i].replies;
    printf("replies=%ld\n", total);
    return 0;
}
