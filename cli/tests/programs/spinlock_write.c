/*
 * Three threads write one line each per iteration under a spinlock of the
 * program's own (an xchg loop): a lock the sketch does not record, held
 * across an event it does (the write). A replay cannot follow it yet (see
 * the README): the thread whose write is next polls the lock another thread
 * took early and holds while it waits for its own turn.
 *
 * usage: spinlock_write [iterations]
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static volatile int lock_word;
static int iterations = 100;
static pthread_barrier_t start;

static void spin_lock(void)
{
    while (__atomic_exchange_n(&lock_word, 1, __ATOMIC_ACQUIRE))
        while (lock_word)
            __builtin_ia32_pause();
}

static void spin_unlock(void) { __atomic_store_n(&lock_word, 0, __ATOMIC_RELEASE); }

static void *worker(void *arg)
{
    long id = (long)arg;
    char line[64];
    pthread_barrier_wait(&start);
    for (int i = 0; i < iterations; i++) {
        spin_lock();
        int n = snprintf(line, sizeof line, "thread %ld line %d\n", id, i);
        write(1, line, n);
        spin_unlock();
        for (volatile int k = 0; k < 2000; k++)
            ;
    }
    return NULL;
}

int main(int argc, char **argv)
{
    pthread_t t[3];
    if (argc > 1) iterations = atoi(argv[1]);
    pthread_barrier_init(&start, NULL, 3);
    for (long i = 0; i < 3; i++) pthread_create(&t[i], NULL, worker, (void *)i);
    for (int i = 0; i < 3; i++) pthread_join(t[i], NULL);
    return 0;
}
