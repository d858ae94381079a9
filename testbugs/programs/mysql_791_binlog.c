/*
 * Models MySQL bug #791 (statements missing from the binary log): an
 * INSERT checks mysql_bin_log.is_open() without LOCK_log and then appends to
 * the current log file, while FLUSH LOGS rotates the log in two steps --
 * close() and open() -- each under LOCK_log.  A writer that looks in between
 * sees the log closed (or reads the open flag and the file number of two
 * different states) and silently does not log its statement.  Replication
 * then misses it: the program exits with status 2.
 *
 * usage: mysql_791_binlog [inserts] [rotations] [window]
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#define MAX_FILES 64

struct binlog {
    volatile int open;        /* is_open(): read without LOCK_log */
    volatile int file_no;     /* current log file */
    int events[MAX_FILES];    /* events written to each file */
    int closed[MAX_FILES];
};

static struct binlog binlog = { 1, 0, {0}, {0} };
static pthread_mutex_t LOCK_log = PTHREAD_MUTEX_INITIALIZER;
static int inserts = 300, rotations = 6, window = 30;
static int executed;

static void spin(long n) { for (volatile long i = 0; i < n; i++) ; }

static void *insert_thread(void *arg)
{
    (void)arg;
    for (int i = 0; i < inserts; i++) {
        spin(150);                              /* executes the INSERT */
        __atomic_fetch_add(&executed, 1, __ATOMIC_RELAXED);
        if (binlog.open) {                      /* RACE */
            int f = binlog.file_no;             /* RACE */
            pthread_mutex_lock(&LOCK_log);
            if (!binlog.closed[f]) binlog.events[f]++;
            pthread_mutex_unlock(&LOCK_log);
        }
    }
    return NULL;
}

static void *flush_logs_thread(void *arg)
{
    (void)arg;
    for (int r = 0; r < rotations; r++) {
        spin(inserts * 150 / (rotations + 1));
        pthread_mutex_lock(&LOCK_log);          /* close() */
        binlog.open = 0;                        /* RACE */
        binlog.closed[binlog.file_no] = 1;
        pthread_mutex_unlock(&LOCK_log);
        spin(window);                           /* writes the index file */
        pthread_mutex_lock(&LOCK_log);          /* open() */
        binlog.file_no++;                       /* RACE */
        binlog.open = 1;                        /* RACE */
        pthread_mutex_unlock(&LOCK_log);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    pthread_t w, f;
    int logged = 0;
    if (argc > 1) inserts = atoi(argv[1]);
    if (argc > 2) rotations = atoi(argv[2]);
    if (argc > 3) window = atoi(argv[3]);
    if (rotations >= MAX_FILES) rotations = MAX_FILES - 1;
    pthread_create(&w, NULL, insert_thread, NULL);
    pthread_create(&f, NULL, flush_logs_thread, NULL);
    pthread_join(w, NULL);
    pthread_join(f, NULL);
    for (int i = 0; i < MAX_FILES; i++) logged += binlog.events[i];
    printf("executed=%d logged=%d files=%d\n", executed, logged, binlog.file_no + 1);
    if (logged != executed) {
        fprintf(stderr, "binlog is missing %d statements\n", executed - logged);
        return 2;
    }
    return 0;
}
