/*
 * Two threads with known call sequences, for the func sketch: a worker
 * that parses, plans and executes a request, and a logger that flushes
 * twice. Built with -finstrument-functions.
 */
#include <pthread.h>
#include <stdio.h>

static volatile long work;

static void parse(void) { work += 1; }
static void plan(void) { work += 2; }
static void execute(void) { work += 3; }
static void flush(void) { work += 4; }

static void *worker(void *arg) { (void)arg; parse(); plan(); execute(); return NULL; }
static void *logger(void *arg) { (void)arg; flush(); flush(); return NULL; }

int main(void)
{
    pthread_t w, l;
    pthread_create(&w, NULL, worker, NULL);
    pthread_join(w, NULL);
    pthread_create(&l, NULL, logger, NULL);
    pthread_join(l, NULL);
    printf("work %ld\n", work);
    return 0;
}
