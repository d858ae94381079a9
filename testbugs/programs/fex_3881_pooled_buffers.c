/*
 * Models FEX-Emu pull request #3881 (FixedSizePooledAllocation: "a
 * disowned buffer could be unclaimed or claimed by a different thread in
 * the time between the !IsFree check and locking the allocation mutex").
 * A thread between jobs marks its buffer disowned: idle, so that a thread
 * short of buffers may claim it. When it is done with the buffer it gives
 * it back: it checks that the buffer is still disowned (no other thread
 * claimed it), then takes the allocation lock and frees it. A claim in
 * between frees a buffer the claimer now uses; the next claim hands it out
 * again, and two threads write into one buffer.
 *
 * usage: fex_3881_pooled_buffers [jobs] [window]
 *   window: work between the check and the lock
 */
#include <assert.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#define NBUF 2
#define NWORKERS 3

enum { FLAG_FREE, FLAG_OWNED, FLAG_DISOWNED };

struct buffer { volatile int flag; volatile long user; char data[48]; };

static struct buffer pool[NBUF];
static pthread_mutex_t alloc_lock = PTHREAD_MUTEX_INITIALIZER;
static int jobs = 200, window = 0;
static long claimed_idle;

static void spin(long n) { for (volatile long i = 0; i < n; i++) ; }

/* A free buffer, or else an idle (disowned) one, or none. */
static struct buffer *claim_buffer(long me)
{
    struct buffer *b = NULL;
    pthread_mutex_lock(&alloc_lock);
    for (int i = 0; i < NBUF && b == NULL; i++)
        if (pool[i].flag == FLAG_FREE) b = &pool[i];
    for (int i = 0; i < NBUF && b == NULL; i++)
        if (pool[i].flag == FLAG_DISOWNED) {    /* RACE */
            b = &pool[i];
            claimed_idle++;
        }
    if (b != NULL) {
        b->flag = FLAG_OWNED;                   /* RACE */
        b->user = me;                           /* RACE */
    }
    pthread_mutex_unlock(&alloc_lock);
    return b;
}

/* Gives an idle buffer back unless another thread claimed it: checked
 * without the lock (the bug; the fix checks under it). */
static void unclaim_buffer(struct buffer *b)
{
    if (b->flag != FLAG_DISOWNED)               /* RACE */
        return;
    spin(window);
    pthread_mutex_lock(&alloc_lock);
    b->flag = FLAG_FREE;                        /* RACE */
    pthread_mutex_unlock(&alloc_lock);
}

static void *worker(void *arg)
{
    long me = (long)arg;
    for (int i = 0; i < jobs; i++) {
        struct buffer *b;
        while ((b = claim_buffer(me)) == NULL)  /* all in use: wait */
            spin(100);
        spin(300);                              /* the job fills the buffer */
        assert(b->user == me && "pooled buffer handed to two threads"); /* RACE */
        b->flag = FLAG_DISOWNED;                /* between jobs: idle */
        spin(300);
        unclaim_buffer(b);
        spin(100);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    pthread_t t[NWORKERS];
    if (argc > 1) jobs = atoi(argv[1]);
    if (argc > 2) window = atoi(argv[2]);
    for (long i = 0; i < NWORKERS; i++) pthread_create(&t[i], NULL, worker, (void *)(i + 1));
    for (int i = 0; i < NWORKERS; i++) pthread_join(t[i], NULL);
    printf("jobs done\n");
    return claimed_idle < 0;
}
