/*
 * Models CPython issue 6721 (locks in the standard library are not
 * sanitised on fork): a logging thread updates a record under its handler
 * lock while the main thread forks worker processes.  fork() copies the
 * record in whatever state it is, and the child -- "single-threaded now" --
 * reads it without the lock.  If the fork happened inside the update, the
 * child finds a half-written record and aborts; the parent sees its worker
 * die and exits with status 3.
 *
 * usage: python_6721_fork [forks] [window]
 */
#include <assert.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

struct record { volatile int len; volatile unsigned sum; char text[64]; };

static struct record rec = { 0, 7, "" };
static pthread_mutex_t handler_lock = PTHREAD_MUTEX_INITIALIZER;
static volatile int stop;
static int forks = 10, window = 0;

static void spin(long n) { for (volatile long i = 0; i < n; i++) ; }

static unsigned checksum(const char *s, int n)
{
    unsigned h = 7;
    for (int i = 0; i < n; i++) h = h * 31 + (unsigned char)s[i];
    return h;
}

static void *logging_thread(void *arg)
{
    static const char *msgs[2] = { "INFO worker started", "DEBUG queue drained, 0 jobs left" };
    (void)arg;
    for (int i = 0; !stop; i++) {
        const char *m = msgs[i & 1];
        int n = (int)strlen(m);
        pthread_mutex_lock(&handler_lock);          /* Handler.acquire() */
        rec.len = n;                                /* RACE */
        spin(window);
        memcpy(rec.text, m, (size_t)n + 1);
        rec.sum = checksum(m, n);                   /* RACE */
        pthread_mutex_unlock(&handler_lock);
        spin(2000);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    pthread_t lt;
    int status = 0;
    if (argc > 1) forks = atoi(argv[1]);
    if (argc > 2) window = atoi(argv[2]);
    pthread_create(&lt, NULL, logging_thread, NULL);
    for (int i = 0; i < forks; i++) {
        spin(3000);
        pid_t pid = fork();                         /* no pthread_atfork handler */
        if (pid == 0) {
            /* child: only this thread exists now, so no lock is taken */
            assert(rec.sum == checksum(rec.text, rec.len) /* RACE */
                   && "child inherited a half-written log record");
            _exit(0);
        }
        if (waitpid(pid, &status, 0) < 0) { perror("waitpid"); return 1; }
        if (WIFSIGNALED(status)) {
            fprintf(stderr, "worker %d died with signal %d\n", (int)pid, WTERMSIG(status));
            stop = 1;
            pthread_join(lt, NULL);
            return 3;
        }
    }
    stop = 1;
    pthread_join(lt, NULL);
    printf("workers=%d\n", forks);
    return 0;
}
