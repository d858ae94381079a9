/*
 * Two threads hand work back and forth through flags they poll without
 * sleeping (a spin-wait, as lock-free queues and barriers do): the main
 * thread posts round r in `go` and spins until the worker posts it in
 * `done`; the worker spins for `go`, does its locked work, and posts. No
 * event marks the waits: a replay that lets one thread spin while it holds
 * the baton never lets the other one set the flag. With `count`, each wait
 * counts its iterations in a register (as a bounded spin before backing
 * off, or a retry statistic, does): the loop's registers change each time.
 * With `yield`, each wait calls sched_yield() each time round (as a spin
 * lock's back-off does).
 *
 * usage: spin_wait [rounds] [count|yield]
 */
#include <sched.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static volatile int go, done;
static int rounds = 5;
static long total;
static pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
static int counting, yielding;
static long spins;          /* iterations spent waiting: varies, not printed */

/* Spins until *flag reaches r. */
static void wait_for(volatile int *flag, int r)
{
    if (yielding) {
        while (*flag < r)
            sched_yield();
        return;
    }
    if (!counting) {
        while (*flag < r)
            ;
        return;
    }
    long n = 0;
    while (*flag < r)
        n++;
    __atomic_fetch_add(&spins, n, __ATOMIC_RELAXED);
}

static void *worker(void *arg)
{
    (void)arg;
    for (int r = 1; r <= rounds; r++) {
        wait_for(&go, r);                   /* spins for the next round */
        for (int i = 0; i < 10; i++) {
            pthread_mutex_lock(&m);
            total += r * i;
            pthread_mutex_unlock(&m);
        }
        done = r;
    }
    return NULL;
}

int main(int argc, char **argv)
{
    pthread_t t;
    if (argc > 1) rounds = atoi(argv[1]);
    counting = argc > 2 && strcmp(argv[2], "count") == 0;
    yielding = argc > 2 && strcmp(argv[2], "yield") == 0;
    pthread_create(&t, NULL, worker, NULL);
    for (int r = 1; r <= rounds; r++) {
        go = r;
        wait_for(&done, r);                 /* spins until the round is done */
    }
    pthread_join(t, NULL);
    printf("rounds=%d total=%ld\n", rounds, total);
    return spins < 0;
}
