/*
 * Two threads hand work back and forth through flags they poll without
 * sleeping (a spin-wait, as lock-free queues and barriers do): the main
 * thread posts round r in `go` and spins until the worker posts it in
 * `done`; the worker spins for `go`, does its locked work, and posts. No
 * event marks the waits: a replay that lets one thread spin while it holds
 * the baton never lets the other one set the flag.
 *
 * usage: spin_wait [rounds]
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

static volatile int go, done;
static int rounds = 5;
static long total;
static pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;

static void *worker(void *arg)
{
    (void)arg;
    for (int r = 1; r <= rounds; r++) {
        while (go < r)
            ;                               /* spins for the next round */
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
    pthread_create(&t, NULL, worker, NULL);
    for (int r = 1; r <= rounds; r++) {
        go = r;
        while (done < r)
            ;                               /* spins until the round is done */
    }
    pthread_join(t, NULL);
    printf("rounds=%d total=%ld\n", rounds, total);
    return 0;
}
