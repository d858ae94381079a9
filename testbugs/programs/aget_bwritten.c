/*
 * Models the aget 0.4.1 lost update: each download thread (http_get) adds
 * the size of every chunk it writes to the global counter `bwritten`
 * without holding the bwritten mutex, which only the progress/resume code
 * takes.  Concurrent "bwritten += dw" lose updates and the final report
 * shows fewer bytes than were downloaded.  Nothing crashes: only the
 * printed total is wrong.
 *
 * usage: aget_bwritten [chunks_per_thread] [window]
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NTHREADS 2
#define CHUNK 512

static volatile long bwritten;
static pthread_mutex_t bwritten_mutex = PTHREAD_MUTEX_INITIALIZER;
static char file_image[NTHREADS][CHUNK];
static int chunks = 200, window = 0;

static void spin(long n) { for (volatile long i = 0; i < n; i++) ; }

static void *http_get(void *arg)
{
    long id = (long)arg;
    char rbuf[CHUNK];
    for (int i = 0; i < chunks; i++) {
        memset(rbuf, 'a' + (int)id, sizeof rbuf);     /* recv() a chunk */
        spin(400);
        memcpy(file_image[id], rbuf, CHUNK);          /* pwrite() it */
        long dw = CHUNK;
        long b = bwritten;                            /* RACE */
        spin(window);
        bwritten = b + dw;                            /* RACE */
    }
    return NULL;
}

int main(int argc, char **argv)
{
    pthread_t t[NTHREADS];
    if (argc > 1) chunks = atoi(argv[1]);
    if (argc > 2) window = atoi(argv[2]);
    for (long i = 0; i < NTHREADS; i++) pthread_create(&t[i], NULL, http_get, (void *)i);
    for (int i = 0; i < NTHREADS; i++) pthread_join(t[i], NULL);
    pthread_mutex_lock(&bwritten_mutex);
    printf("Download completed, bytes=%ld\n", bwritten);
    pthread_mutex_unlock(&bwritten_mutex);
    return 0;
}
