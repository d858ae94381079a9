/*
 * Models MySQL bug #3596 (SHOW PROCESSLIST crash): the thread that lists
 * connections reads thd->proc_info, checks it for NULL and then uses it,
 * holding LOCK_thread_count -- which protects the list of connections but
 * not proc_info.  The connection thread sets proc_info to NULL when its
 * statement ends, so between the check and the use the pointer can become
 * NULL: strlen(NULL) crashes with SIGSEGV.
 *
 * usage: mysql_3596_procinfo [statements] [window]
 *   statements: SHOW PROCESSLIST calls (and queries) per run (more = more failures)
 *   window:     work between the NULL check and the use (wider = more failures)
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct thd {
    long query_id;
    const char *volatile proc_info; /* written by its own thread, no lock */
};

static struct thd conn;
static pthread_mutex_t LOCK_thread_count = PTHREAD_MUTEX_INITIALIZER;
static int statements = 40, window = 20;

static void spin(long n) { for (volatile long i = 0; i < n; i++) ; }

static void *connection_thread(void *arg)
{
    (void)arg;
    for (int i = 0; i < statements; i++) {
        pthread_mutex_lock(&LOCK_thread_count);
        conn.query_id++;
        pthread_mutex_unlock(&LOCK_thread_count);
        conn.proc_info = "Sending data"; /* RACE */
        spin(300);                       /* executes the statement */
        conn.proc_info = NULL;           /* RACE */
        spin(300);                       /* idle, reads the next command */
    }
    return NULL;
}

static void *processlist_thread(void *arg)
{
    size_t shown = 0;
    (void)arg;
    for (int i = 0; i < statements; i++) {
        pthread_mutex_lock(&LOCK_thread_count);
        if (conn.proc_info != NULL) {          /* RACE */
            spin(window);                      /* formats the other columns */
            shown += strlen(conn.proc_info);   /* RACE */
        }
        pthread_mutex_unlock(&LOCK_thread_count);
        spin(500);
    }
    return (void *)shown;
}

int main(int argc, char **argv)
{
    pthread_t c, p;
    if (argc > 1) statements = atoi(argv[1]);
    if (argc > 2) window = atoi(argv[2]);
    pthread_create(&c, NULL, connection_thread, NULL);
    pthread_create(&p, NULL, processlist_thread, NULL);
    pthread_join(c, NULL);
    pthread_join(p, NULL);
    printf("queries=%ld\n", conn.query_id);
    return 0;
}
