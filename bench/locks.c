/* Lock-heavy microbenchmark for `reprise bench record`.
 *
 * usage: locks [TOTAL_PAIRS [THREADS]]   (defaults: 10000000 pairs, 4 threads)
 *
 * THREADS threads share one pthread mutex and together perform TOTAL_PAIRS
 * lock/unlock pairs, each incrementing a shared counter inside the critical
 * section.  Prints the final counter, which is TOTAL_PAIRS whatever the
 * interleaving, so the output is the same natively and under record. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned long counter;

struct job { unsigned long pairs; };

static void *worker(void *arg)
{
    unsigned long n = ((struct job *)arg)->pairs;
    for (unsigned long i = 0; i < n; i++) {
        pthread_mutex_lock(&lock);
        counter++;
        pthread_mutex_unlock(&lock);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    unsigned long total = argc > 1 ? strtoul(argv[1], NULL, 10) : 10000000UL;
    int threads = argc > 2 ? atoi(argv[2]) : 4;
    if (threads < 1 || threads > 256) {
        fprintf(stderr, "locks: bad thread count\n");
        return 2;
    }
    pthread_t tid[256];
    struct job jobs[256];
    for (int t = 0; t < threads; t++) {
        jobs[t].pairs = total / threads + ((unsigned long)t < total % threads ? 1 : 0);
        if (pthread_create(&tid[t], NULL, worker, &jobs[t]) != 0) {
            perror("pthread_create");
            return 1;
        }
    }
    for (int t = 0; t < threads; t++)
        pthread_join(tid[t], NULL);
    printf("%lu\n", counter);
    return counter == total ? 0 : 1;
}
