/* CPU-bound multithreaded workload for `reprise bench record` at the func
 * and bb sketches (built with -finstrument-functions or
 * -fsanitize-coverage=trace-pc): THREADS threads each hash ITEMS items
 * through a few small functions (calls and branches, as parsers and
 * compressors have), merging into a shared total under a mutex every 4096
 * items.  Prints the total, which does not depend on the interleaving.
 *
 * usage: cpu [ITEMS [THREADS]]   (defaults: 2000000 items, 2 threads)
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned long total;

/* A few dozen nanoseconds of work per call, as the functions of a parser
 * or a compressor do: the sketches' costs per call and per block are then
 * those of a program, not of a loop of empty calls. */
__attribute__((noinline)) static unsigned long mix(unsigned long h, unsigned long x)
{
    for (int r = 0; r < 16; r++)
        h ^= x + 0x9e3779b97f4a7c15UL + (h << 6) + (h >> 2) + (unsigned long)r;
    return h;
}

__attribute__((noinline)) static unsigned long classify(unsigned long h)
{
    if (h % 3 == 0)
        return h / 3;
    if (h % 5 == 1)
        return h * 5 + 1;
    return h ^ (h >> 7);
}

__attribute__((noinline)) static unsigned long item(unsigned long seed, unsigned long i)
{
    unsigned long h = mix(seed, i);
    for (int k = 0; k < 4; k++)
        h = mix(h, classify(h) & 0xffff);
    return h & 0xff;
}

struct job { unsigned long seed, items; };

static void *worker(void *arg)
{
    struct job *j = arg;
    unsigned long local = 0;
    for (unsigned long i = 0; i < j->items; i++) {
        local += item(j->seed, i);
        if ((i & 4095) == 4095) {
            pthread_mutex_lock(&lock);
            total += local;
            pthread_mutex_unlock(&lock);
            local = 0;
        }
    }
    pthread_mutex_lock(&lock);
    total += local;
    pthread_mutex_unlock(&lock);
    return NULL;
}

int main(int argc, char **argv)
{
    unsigned long items = argc > 1 ? strtoul(argv[1], NULL, 10) : 2000000UL;
    int threads = argc > 2 ? atoi(argv[2]) : 2;
    if (threads < 1 || threads > 64) {
        fprintf(stderr, "cpu: bad thread count\n");
        return 2;
    }
    pthread_t tid[64];
    struct job jobs[64];
    for (int t = 0; t < threads; t++) {
        jobs[t].seed = 1000 + t;
        jobs[t].items = items / threads;
        pthread_create(&tid[t], NULL, worker, &jobs[t]);
    }
    for (int t = 0; t < threads; t++)
        pthread_join(tid[t], NULL);
    printf("%lu\n", total);
    return 0;
}
