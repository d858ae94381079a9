/*
 * Models fsevents pull request #290 (random thread hang due to incorrect
 * pthread_cond_wait usage): the watcher thread sets up its run loop, sets a
 * flag and calls pthread_cond_signal without holding the mutex; the main
 * thread checks the flag and then waits on the condition variable, but the
 * check and the wait are not atomic with respect to the signal.  A signal
 * that falls between the check and the wait is lost and the main thread
 * sleeps forever (hang).
 *
 * usage: fsevents_290_lostwakeup [watchers] [window]
 *   watchers: watcher start-ups per run (more = more failures)
 *   window:   work between the flag check and the wait (wider = more failures)
 */
#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>

static pthread_mutex_t mtx = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t started_cond = PTHREAD_COND_INITIALIZER;
static volatile int started;
static sem_t go;
static int watchers = 200, window = 0;

static void spin(long n) { for (volatile long i = 0; i < n; i++) ; }

static void *watcher_thread(void *arg)
{
    unsigned seed = 12345;
    (void)arg;
    for (int i = 0; i < watchers; i++) {
        sem_wait(&go);                               /* fse_instance_create */
        seed = seed * 1103515245 + 12345;
        spin(300 + (seed >> 16) % 300);              /* creates the run loop */
        started = 1;                                 /* RACE */
        pthread_cond_signal(&started_cond);          /* signalled without the mutex */
    }
    return NULL;
}

int main(int argc, char **argv)
{
    pthread_t w;
    unsigned seed = 777;
    if (argc > 1) watchers = atoi(argv[1]);
    if (argc > 2) window = atoi(argv[2]);
    sem_init(&go, 0, 0);
    pthread_create(&w, NULL, watcher_thread, NULL);
    for (int i = 0; i < watchers; i++) {
        sem_post(&go);
        seed = seed * 1103515245 + 12345;
        spin((seed >> 16) % 6000);                   /* registers the paths */
        pthread_mutex_lock(&mtx);
        if (!started) {                              /* RACE */
            spin(window);
            pthread_cond_wait(&started_cond, &mtx);  /* no predicate loop */
        }
        started = 0;                                 /* RACE */
        pthread_mutex_unlock(&mtx);
    }
    pthread_join(w, NULL);
    printf("watchers=%d\n", watchers);
    return 0;
}
