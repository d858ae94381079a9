/*
 * Models Transmission bug #1818: tr_sessionInit() starts the event thread
 * (tr_eventInit) before it has created session->bandwidth, and the event
 * thread's periodic bandwidth pulse calls tr_bandwidthAllocate() on it.  If
 * the first pulse comes before the main thread finishes initialising,
 * the bandwidth object is NULL and the assertion tr_isBandwidth(b) fails.
 *
 * usage: transmission_1818_bandwidth [sessions] [init_work]
 *   sessions:  sessions initialised per run
 *   init_work: work main does between starting the event thread and
 *              creating the bandwidth object (more = more failures)
 */
#include <assert.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#define BANDWIDTH_MAGIC 99919

struct tr_bandwidth { int magic; long bytes_left; };
struct tr_session {
    struct tr_bandwidth *volatile bandwidth;
    pthread_mutex_t lock;
    int pulses;
};

static int sessions = 20, init_work = 0;

static void spin(long n) { for (volatile long i = 0; i < n; i++) ; }

static int tr_isBandwidth(const struct tr_bandwidth *b)
{
    return b != NULL && b->magic == BANDWIDTH_MAGIC;
}

static void tr_bandwidthAllocate(struct tr_bandwidth *b)
{
    assert(tr_isBandwidth(b) && "tr_isBandwidth( b )"); /* RACE */
    b->bytes_left = 1024;
}

static void *event_thread(void *arg)
{
    struct tr_session *s = arg;
    for (int i = 0; i < 3; i++) {
        spin(800);                              /* libevent loop until the timer fires */
        pthread_mutex_lock(&s->lock);           /* tr_sessionLock */
        tr_bandwidthAllocate(s->bandwidth);     /* RACE */
        s->pulses++;
        pthread_mutex_unlock(&s->lock);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    long pulses = 0;
    if (argc > 1) sessions = atoi(argv[1]);
    if (argc > 2) init_work = atoi(argv[2]);
    for (int i = 0; i < sessions; i++) {
        struct tr_session *s = calloc(1, sizeof *s);
        pthread_t ev;
        pthread_mutex_init(&s->lock, NULL);
        pthread_create(&ev, NULL, event_thread, s);     /* tr_eventInit */
        spin(init_work);                                /* loads settings */
        struct tr_bandwidth *b = malloc(sizeof *b);
        b->magic = BANDWIDTH_MAGIC;                     /* RACE */
        b->bytes_left = 0;
        s->bandwidth = b;                               /* RACE */
        pthread_join(ev, NULL);                         /* tr_sessionClose */
        pulses += s->pulses;
    }
    printf("pulses=%ld\n", pulses);
    return 0;
}
