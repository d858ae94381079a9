/*
 * Models the Mozilla nsThread order violation (described in Lu et al.,
 * ASPLOS 2008, Fig. 1 / Mozilla's nsThread::Init): the creating thread
 * stores the result of PR_CreateThread into mThread *after* the new thread
 * has started, and the new thread's Main() reads mThread->state assuming
 * the assignment already happened.  If the child runs first it dereferences
 * NULL: SIGSEGV.
 *
 * usage: mozilla_nsthread_init [threads] [startup_work]
 *   threads:      nsThreads created per run (more = more failures)
 *   startup_work: work the new thread does before reading mThread (more = rarer)
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

struct PRThread { pthread_t tid; int state; };
struct nsThread { struct PRThread *volatile mThread; long ran; };

static pthread_mutex_t list_lock = PTHREAD_MUTEX_INITIALIZER;
static int nthreads = 20, startup_work = 2000;
static long started;

static void spin(long n) { for (volatile long i = 0; i < n; i++) ; }

static void *ns_thread_main(void *arg)
{
    struct nsThread *self = arg;
    spin(startup_work);                         /* sets up its event queue */
    int state = self->mThread->state;           /* RACE */
    pthread_mutex_lock(&list_lock);
    started += state;
    pthread_mutex_unlock(&list_lock);
    self->ran = 1;
    return NULL;
}

static struct PRThread *PR_CreateThread(void *(*fn)(void *), void *arg)
{
    struct PRThread *t = calloc(1, sizeof *t);
    t->state = 1;
    pthread_create(&t->tid, NULL, fn, arg);
    return t;
}

int main(int argc, char **argv)
{
    if (argc > 1) nthreads = atoi(argv[1]);
    if (argc > 2) startup_work = atoi(argv[2]);
    struct nsThread *th = calloc(nthreads, sizeof *th);
    for (int i = 0; i < nthreads; i++) {
        th[i].mThread = PR_CreateThread(ns_thread_main, &th[i]); /* RACE */
        pthread_join(th[i].mThread->tid, NULL);
    }
    printf("started=%ld\n", started);
    return 0;
}
