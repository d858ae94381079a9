/*
 * Models WiredTiger WT-2706 (wiredtiger/wiredtiger pull request #2803, "Fix
 * lost log writes when switching files"): when the log server switches to a
 * new log file, the routine that opens the file clears the log's file handle
 * pointer first, then searches the connection's handle list (under its own
 * lock) and only afterwards fills the pointer in.  A committing transaction
 * that looks at the handle in that window sees NULL, takes it for "logging
 * not open", and returns without writing its record: the commit succeeded,
 * its log record is gone, and recovery would lose it.
 *
 * Here the committer checks log->log_fh without the slot lock; the switcher
 * clears it under the slot lock, registers the new file under fh_lock, and
 * publishes it after creating the file (a window the knob widens).  At exit
 * the records in the log files are counted against the commits.
 *
 * usage: wiredtiger_2706_log_switch [commits] [switches] [window]
 */
#include <assert.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#define MAX_FILES 64

struct log_file {
    pthread_mutex_t lock;   /* the file handle's own lock */
    int id;
    int records;            /* records written to this file */
};

struct log {
    pthread_mutex_t slot_lock;
    struct log_file *volatile log_fh;   /* NULL while switching */
    int fileid;
};

struct connection {
    pthread_mutex_t fh_lock;            /* the handle list */
    struct log_file *handles[MAX_FILES];
    int nhandles;
};

static struct log log = { PTHREAD_MUTEX_INITIALIZER, NULL, 0 };
static struct connection conn = { PTHREAD_MUTEX_INITIALIZER, { NULL }, 0 };
static int commits = 100, switches = 2, window = 0;
static int committed;
static pthread_barrier_t started;   /* the server and the committer start together */

static void spin(long n) { for (volatile long i = 0; i < n; i++) ; }

/* Finds or creates the handle of log file `id` (under fh_lock). */
static struct log_file *open_handle(int id)
{
    struct log_file *fh = NULL;
    pthread_mutex_lock(&conn.fh_lock);
    for (int i = 0; i < conn.nhandles; i++)
        if (conn.handles[i]->id == id) fh = conn.handles[i];
    if (fh == NULL && conn.nhandles < MAX_FILES) {
        fh = calloc(1, sizeof *fh);
        pthread_mutex_init(&fh->lock, NULL);
        fh->id = id;
        conn.handles[conn.nhandles++] = fh;
    }
    pthread_mutex_unlock(&conn.fh_lock);
    return fh;
}

/* __log_newfile: clears the pointer, opens the next file, publishes it. */
static void log_newfile(void)
{
    pthread_mutex_lock(&log.slot_lock);
    log.log_fh = NULL;                          /* RACE */
    int id = ++log.fileid;
    pthread_mutex_unlock(&log.slot_lock);
    struct log_file *fh = open_handle(id);
    spin(window);                               /* creates and pre-allocates the file */
    log.log_fh = fh;                            /* RACE */
}

static void *log_server(void *arg)
{
    (void)arg;
    free(malloc(64));   /* the thread's malloc arena exists before its first switch */
    pthread_barrier_wait(&started);
    for (int s = 0; s < switches; s++) {
        spin((long)commits * 10000 / (switches + 1));
        log_newfile();
    }
    return NULL;
}

static void *committer(void *arg)
{
    (void)arg;
    pthread_barrier_wait(&started);
    for (int i = 0; i < commits; i++) {
        spin(10000);                            /* the transaction's work */
        __atomic_fetch_add(&committed, 1, __ATOMIC_RELAXED);
        struct log_file *fh = log.log_fh;       /* RACE */
        if (fh == NULL)
            continue;                           /* "logging not open" */
        pthread_mutex_lock(&fh->lock);
        fh->records++;
        pthread_mutex_unlock(&fh->lock);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    pthread_t c, s;
    int logged = 0;
    if (argc > 1) commits = atoi(argv[1]);
    if (argc > 2) switches = atoi(argv[2]);
    if (argc > 3) window = atoi(argv[3]);
    if (switches >= MAX_FILES) switches = MAX_FILES - 1;
    log.log_fh = open_handle(0);
    pthread_barrier_init(&started, NULL, 2);
    pthread_create(&c, NULL, committer, NULL);
    pthread_create(&s, NULL, log_server, NULL);
    pthread_join(c, NULL);
    pthread_join(s, NULL);
    for (int i = 0; i < conn.nhandles; i++) logged += conn.handles[i]->records;
    printf("committed=%d logged=%d files=%d\n", committed, logged, conn.nhandles);
    assert(logged == committed && "a committed transaction's log record was never written");
    return 0;
}
