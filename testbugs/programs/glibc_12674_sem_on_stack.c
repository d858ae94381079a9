/*
 * Models glibc bug 12674 ("sem_post/sem_wait race causing sem_post to
 * return EINVAL"): nptl's sem_post added one to the semaphore's value and
 * then read the semaphore again (its count of sleeping waiters) to decide
 * whether to wake one. A waiter that found the value positive took it and
 * returned from sem_wait at once; the caller then destroyed the semaphore,
 * which it kept on its stack, and went on. sem_post's second read came after
 * that: it read a dead semaphore (the futex wake failed with EINVAL, or woke
 * whatever the stack held by then).
 *
 * Here a client thread (main) sends requests to a worker; each request
 * carries a semaphore on the client's stack, which the client waits on
 * (polling with sched_yield, as a futex wait would sleep) and destroys as
 * soon as it has the answer. The worker's post validates the semaphore
 * after its increment, as the kernel's futex call did.
 *
 * usage: glibc_12674_sem_on_stack [requests] [window]
 *   window: work the poster does between its increment and its second
 *           read of the semaphore (larger = more failures)
 */
#include <assert.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>

#define SEM_LIVE 0x5e3a
#define SEM_DEAD 0xdead

struct sem {
    volatile int value;
    volatile int nwaiters;
    volatile int state;
};

struct request {
    long input, output;
    struct sem *done;
};

static pthread_mutex_t queue_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t queue_cond = PTHREAD_COND_INITIALIZER;
static struct request *queued;  /* a one-slot queue, under queue_lock */
static int requests = 400, window = 0;

static void spin(long n) { for (volatile long i = 0; i < n; i++) ; }

static void sem_post_(struct sem *s)
{
    __atomic_fetch_add(&s->value, 1, __ATOMIC_SEQ_CST);     /* RACE */
    spin(window);
    /* lll_futex_wake(&s->value, ...) when nwaiters > 0: the kernel
       checks the futex word's semaphore is still there. */
    assert(s->state == SEM_LIVE && "sem_post used a semaphore its waiter had destroyed"); /* RACE */
    if (s->nwaiters > 0)
        sched_yield();
}

static void sem_wait_(struct sem *s)
{
    for (;;) {
        int v = s->value;                                      /* RACE */
        if (v > 0 && __atomic_compare_exchange_n(&s->value, &v, v - 1, 0,
                                                 __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
            return;
        __atomic_fetch_add(&s->nwaiters, 1, __ATOMIC_SEQ_CST);
        while (s->value == 0)
            sched_yield();                                     /* futex wait */
        __atomic_fetch_sub(&s->nwaiters, 1, __ATOMIC_SEQ_CST);
    }
}

static void *worker(void *arg)
{
    (void)arg;
    for (;;) {
        pthread_mutex_lock(&queue_lock);
        while (queued == NULL)
            pthread_cond_wait(&queue_cond, &queue_lock);
        struct request *r = queued;
        queued = NULL;
        pthread_mutex_unlock(&queue_lock);
        if (r->input < 0) {
            sem_post_(r->done);
            return NULL;
        }
        r->output = r->input * r->input;
        sem_post_(r->done);
    }
}

/* One call: the request and its semaphore live in this frame. */
static long call(long input)
{
    struct sem done = { 0, 0, SEM_LIVE };                     /* sem_init */
    struct request r = { input, 0, &done };
    pthread_mutex_lock(&queue_lock);
    while (queued != NULL) {
        pthread_mutex_unlock(&queue_lock);
        sched_yield();
        pthread_mutex_lock(&queue_lock);
    }
    queued = &r;
    pthread_cond_signal(&queue_cond);
    pthread_mutex_unlock(&queue_lock);
    sem_wait_(&done);
    done.state = SEM_DEAD;                                     /* RACE */ /* sem_destroy */
    return r.output;
}

int main(int argc, char **argv)
{
    pthread_t t;
    long sum = 0;
    if (argc > 1) requests = atoi(argv[1]);
    if (argc > 2) window = atoi(argv[2]);
    pthread_create(&t, NULL, worker, NULL);
    for (int i = 0; i < requests; i++)
        sum += call(i);
    call(-1);
    pthread_join(t, NULL);
    printf("sum=%ld\n", sum);
    return 0;
}
