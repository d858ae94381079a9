/*
 * Models the pbzip2 0.9.4 use-after-free: when the file writer has written
 * the last block, main() calls queueDelete(fifo), which destroys and frees
 * fifo->mut, while a consumer (compressor) thread that produced the last
 * block is still finishing up and comes back to lock fifo->mut.  The
 * deleted mutex pointer (NULL after the cleanup) makes pthread_mutex_lock
 * or pthread_mutex_unlock crash with SIGSEGV.  (Here the mutex memory itself
 * is released only at exit, so that a consumer already holding the old
 * pointer does not turn the crash into a hang on freed memory.)
 *
 * usage: pbzip2_094_fifo [blocks] [tail_work] [close_work]
 *   tail_work:  work a consumer does after handing over a block (more = more failures)
 *   close_work: work main does after the writer finished, before queueDelete
 *               (more = fewer failures)
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#define QSIZE 8
#define NCONSUMERS 2

struct queue {
    int buf[QSIZE];
    int head, tail, count, all_done;
    pthread_mutex_t *volatile mut;
    pthread_cond_t not_empty, not_full;
};

static struct queue *fifo;
static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t out_cond = PTHREAD_COND_INITIALIZER;
static int blocks = 24, tail_work = 2, close_work = 0;
static pthread_mutex_t *deleted_mut;
static int written;
static unsigned long checksum;

static void spin(long n) { for (volatile long i = 0; i < n; i++) ; }

static void *consumer(void *arg)
{
    (void)arg;
    for (;;) {
        pthread_mutex_lock(fifo->mut);                  /* RACE */
        while (fifo->count == 0) {
            if (fifo->all_done) {
                pthread_mutex_unlock(fifo->mut);     /* RACE */
                return NULL;
            }
            pthread_cond_wait(&fifo->not_empty, fifo->mut); /* RACE */
        }
        int b = fifo->buf[fifo->head];
        fifo->head = (fifo->head + 1) % QSIZE;
        fifo->count--;
        pthread_cond_signal(&fifo->not_full);
        pthread_mutex_unlock(fifo->mut);

        unsigned long c = 0;                            /* "compress" the block */
        for (int i = 0; i < 2000; i++) c = c * 31 + (unsigned long)(b + i);
        pthread_mutex_lock(&out_lock);
        checksum += c;
        written++;
        pthread_cond_broadcast(&out_cond);
        pthread_mutex_unlock(&out_lock);
        spin(tail_work);                                /* frees its buffers */
    }
}

static void *file_writer(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&out_lock);
    while (written < blocks) pthread_cond_wait(&out_cond, &out_lock);
    pthread_mutex_unlock(&out_lock);
    return NULL;
}

static void queue_delete(struct queue *q)
{
    pthread_mutex_t *m = q->mut;
    q->mut = NULL;                                      /* RACE */
    pthread_mutex_destroy(m);
    deleted_mut = m;                                    /* free()d at exit */
}

int main(int argc, char **argv)
{
    pthread_t cons[NCONSUMERS], writer;
    if (argc > 1) blocks = atoi(argv[1]);
    if (argc > 2) tail_work = atoi(argv[2]);
    if (argc > 3) close_work = atoi(argv[3]);
    fifo = calloc(1, sizeof *fifo);
    fifo->mut = malloc(sizeof *fifo->mut);
    pthread_mutex_init(fifo->mut, NULL);
    pthread_cond_init(&fifo->not_empty, NULL);
    pthread_cond_init(&fifo->not_full, NULL);
    for (int i = 0; i < NCONSUMERS; i++) pthread_create(&cons[i], NULL, consumer, NULL);
    pthread_create(&writer, NULL, file_writer, NULL);
    for (int b = 0; b < blocks; b++) {                  /* the producer: reads blocks */
        pthread_mutex_lock(fifo->mut);
        while (fifo->count == QSIZE) pthread_cond_wait(&fifo->not_full, fifo->mut);
        fifo->buf[fifo->tail] = b;
        fifo->tail = (fifo->tail + 1) % QSIZE;
        fifo->count++;
        pthread_cond_signal(&fifo->not_empty);
        pthread_mutex_unlock(fifo->mut);
    }
    pthread_mutex_lock(fifo->mut);
    fifo->all_done = 1;
    pthread_cond_broadcast(&fifo->not_empty);
    pthread_mutex_unlock(fifo->mut);
    pthread_join(writer, NULL);                         /* all blocks written */
    spin(close_work);                                   /* closes the output file */
    queue_delete(fifo);                                 /* consumers not joined first */
    for (int i = 0; i < NCONSUMERS; i++) pthread_join(cons[i], NULL);
    free(deleted_mut);
    printf("blocks=%d checksum=%lx\n", written, checksum);
    return 0;
}
