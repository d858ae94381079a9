/*
 * Models libfabric pull request #928 (prov/psm: a hang in fi_wait): the
 * progress thread is activated through a condition variable, but the
 * activating side can signal before the progress thread has started to
 * wait, and the progress thread waits without checking the actual
 * condition under the mutex.  The wakeup is lost, the completion is never
 * progressed and fi_wait() hangs.
 *
 * usage: libfabric_928_progress [operations] [window]
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

static pthread_mutex_t prog_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t prog_cond = PTHREAD_COND_INITIALIZER;
static pthread_cond_t done_cond = PTHREAD_COND_INITIALIZER;
static volatile int pending;         /* operations waiting for progress */
static int completed;
static int operations = 150, window = 0;

static void spin(long n) { for (volatile long i = 0; i < n; i++) ; }

static void *progress_thread(void *arg)
{
    unsigned seed = 4242;
    (void)arg;
    for (int i = 0; i < operations; i++) {
        seed = seed * 1103515245 + 12345;
        spin((seed >> 16) % 6000);                   /* polls the other endpoints */
        if (pending == 0) {                          /* RACE */
            spin(window);
            pthread_mutex_lock(&prog_lock);
            pthread_cond_wait(&prog_cond, &prog_lock);
            pthread_mutex_unlock(&prog_lock);
        }
        spin(100);                                   /* psm_mq_ipeek / progress */
        pthread_mutex_lock(&prog_lock);
        pending = pending - 1;                       /* RACE */
        completed++;
        pthread_cond_signal(&done_cond);
        pthread_mutex_unlock(&prog_lock);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    pthread_t p;
    unsigned seed = 99;
    if (argc > 1) operations = atoi(argv[1]);
    if (argc > 2) window = atoi(argv[2]);
    pthread_create(&p, NULL, progress_thread, NULL);
    for (int i = 0; i < operations; i++) {
        seed = seed * 1103515245 + 12345;
        spin(200 + (seed >> 16) % 300);              /* posts a send */
        pthread_mutex_lock(&prog_lock);
        pending = pending + 1;                       /* RACE */
        pthread_cond_signal(&prog_cond);             /* wakes the progress thread */
        while (completed <= i)                       /* fi_wait */
            pthread_cond_wait(&done_cond, &prog_lock);
        pthread_mutex_unlock(&prog_lock);
    }
    pthread_join(p, NULL);
    printf("completed=%d\n", completed);
    return 0;
}
