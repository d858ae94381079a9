/*
 * Models glog issue #363 ("static google::log_mutex destroyed on exit, while
 * other still existing threads want to log"): a program starts threads that
 * LOG() and lets main() return without stopping them.  exit() runs the
 * registered exit handlers (glog's static destructors, registered through
 * __cxa_atexit), which tear the logging state down while a thread is still
 * inside LOG(): its lock of the destroyed log_mutex fails with EINVAL and
 * glog aborts.  (Janus issue #1904 is the same shape with a plain atexit()
 * handler, janus_termination_handler -> janus_log_destroy.)
 *
 * Here the logging library registers log_shutdown() with atexit() when it is
 * initialised; it marks the log closed under the log mutex.  main() starts
 * NWORKERS request threads that log a line every ~50 us and returns without
 * joining them.  The application registered report_usage() earlier, so exit()
 * runs it after the shutdown: it computes (report_work iterations, no
 * output).  A worker that logs in between takes the mutex, finds the log
 * closed and the assertion "log written after shutdown" fails, unless
 * exit_group kills it first.  Otherwise the run passes with its start line
 * printed.  In a replay, main's exit is held at its recorded place: a
 * replay that let main exit as soon as it got there would end the process
 * before the worker's recorded lock, and never fail.
 *
 * usage: glog_363_exit_logger [lines_per_worker] [report_work]
 *   lines_per_worker: lines each worker logs (~50 us apart); under ~10 they are
 *                     all done before main returns and the run cannot fail
 *   report_work:      work of the later exit handler (more = more failures)
 */
#include <assert.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#define NWORKERS 4
#define LOGBUF 4096

struct log_state {
    pthread_mutex_t mutex;                 /* google::log_mutex */
    int open;
    char buf[LOGBUF];
    size_t len;
    long lines;
    unsigned long usage;
};

static struct log_state *g_log;
static int lines_per_worker = 200, report_work = 10000;

static void spin(long n) { for (volatile long i = 0; i < n; i++) ; }

/* The library's exit handler: flush and close the log. */
static void log_shutdown(void)
{
    pthread_mutex_lock(&g_log->mutex);
    g_log->len = 0;                        /* "flushed" */
    g_log->open = 0;                       /* RACE */
    pthread_mutex_unlock(&g_log->mutex);
}

static void log_init(void)
{
    g_log = calloc(1, sizeof *g_log);
    pthread_mutex_init(&g_log->mutex, NULL);
    g_log->open = 1;
    atexit(log_shutdown);                  /* like a static destructor */
}

static void log_line(long id, int i)
{
    pthread_mutex_lock(&g_log->mutex);
    assert(g_log->open && "log written after shutdown");   /* RACE */
    int n = snprintf(g_log->buf + g_log->len, LOGBUF - g_log->len, "I worker %ld: step %d\n", id, i);
    g_log->len = (g_log->len + (size_t)n) % (LOGBUF / 2);
    g_log->lines++;
    pthread_mutex_unlock(&g_log->mutex);
}

/*
 * The application's exit handler, registered before the log existed: it
 * computes a usage record (no output) from the log's line count, read
 * without the lock as the process is going away anyway.  Then exit()
 * calls exit_group: a worker that is half-way through a failing log line
 * either aborts first (the failure) or is killed with the process.
 */
static void report_usage(void)
{
    unsigned long d = 0;
    for (long i = 0; i < report_work; i++) d = d * 31 + (unsigned long)i;
    g_log->usage = d ^ (unsigned long)g_log->lines;
}

static void *worker(void *arg)
{
    long id = (long)arg;
    for (int i = 0; i < lines_per_worker; i++) {
        spin(20000);                       /* serve a request */
        log_line(id, i);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc > 1) lines_per_worker = atoi(argv[1]);
    if (argc > 2) report_work = atoi(argv[2]);
    atexit(report_usage);
    log_init();
    printf("started %d workers\n", NWORKERS);
    fflush(stdout);                        /* the start banner, at once */
    pthread_t t;
    for (long i = 0; i < NWORKERS; i++) pthread_create(&t, NULL, worker, (void *)i);
    spin(200000);                          /* main's own work */
    return 0;                              /* workers not joined */
}
