/* A correct program that uses what a chaos pause can interrupt: a mutex
 * and a condition variable, a semaphore, a pipe read, a sleep, and a
 * thread that blocks every signal, computes, then takes SIGUSR1 with
 * sigwait and finds no other signal pending (a pause signal blocked
 * there would be). */
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

static pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static long produced, consumed;
static sem_t done;
static int fds[2];
static volatile long sink;

static void *producer(void *arg) {
    (void)arg;
    for (int i = 0; i < 2000; i++) {
        pthread_mutex_lock(&m);
        produced++;
        pthread_cond_signal(&cv);
        pthread_mutex_unlock(&m);
        for (volatile int k = 0; k < 200; k++) sink++;
    }
    if (write(fds[1], "done", 4) != 4) return NULL;
    sem_post(&done);
    return NULL;
}

static void *consumer(void *arg) {
    (void)arg;
    pthread_mutex_lock(&m);
    while (consumed < 2000) {
        while (consumed == produced) pthread_cond_wait(&cv, &m);
        consumed = produced;
    }
    pthread_mutex_unlock(&m);
    return NULL;
}

static void *signal_waiter(void *arg) {
    sigset_t all;
    int sig = 0;
    (void)arg;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    for (volatile long k = 0; k < 30000000; k++) sink++;
    struct timespec now = {0, 0};
    sigwait(&all, &sig);
    int extra = sigtimedwait(&all, NULL, &now);
    return (void *)(long)(extra > 0 ? extra : sig);
}

int main(void) {
    pthread_t p, c, w;
    char buf[8] = {0};
    void *sig;
    struct timespec ts = {0, 2000000};
    sigset_t usr1;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &usr1, NULL);
    sem_init(&done, 0, 0);
    if (pipe(fds) != 0) return 3;
    pthread_create(&w, NULL, signal_waiter, NULL);
    pthread_create(&c, NULL, consumer, NULL);
    pthread_create(&p, NULL, producer, NULL);
    if (read(fds[0], buf, 4) != 4) return 4;
    sem_wait(&done);
    nanosleep(&ts, NULL);
    pthread_join(p, NULL);
    pthread_join(c, NULL);
    pthread_kill(w, SIGUSR1);
    pthread_join(w, &sig);
    printf("%s produced %ld consumed %ld signal %s\n", buf, produced, consumed,
           (long)sig == SIGUSR1 ? "SIGUSR1" : "other");
    return (long)sig == SIGUSR1 ? 0 : 1;
}
