/*
 * Models Apache httpd bug #25520 (mod_log_config buffered logging corrupts
 * the log / overruns the buffer with the worker MPM): ap_buffered_log_writer
 * checks "len + buf->outcnt > LOG_BUFSIZE" and then copies the record to
 * &buf->outbuf[buf->outcnt] and advances outcnt, all without a lock.  Two
 * threads logging at once can both pass the check and then append, so the
 * second copy runs past the end of the buffer.  Whether that happens
 * depends on the request lines read from the input: short lines leave room
 * to spare, long ones (long query strings) fill the buffer to its edge.
 *
 * usage: httpd_25520_logbuf [rounds] [window] [access-log-file]  (else stdin)
 */
#include <assert.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LOG_BUFSIZE 4096
#define MAX_LINES 512

struct buffered_log { int fd; volatile size_t outcnt; char outbuf[LOG_BUFSIZE]; };

static struct buffered_log logbuf;
static char *lines[MAX_LINES];
static size_t lens[MAX_LINES];
static int nlines, rounds = 4, window = 0;
static long requests;
static pthread_mutex_t stats_lock = PTHREAD_MUTEX_INITIALIZER;

static void spin(long n) { for (volatile long i = 0; i < n; i++) ; }

static void flush_log(struct buffered_log *buf)
{
    if (buf->outcnt && write(buf->fd, buf->outbuf, buf->outcnt) < 0) perror("write");
    buf->outcnt = 0;                                          /* RACE */
}

static void ap_buffered_log_writer(struct buffered_log *buf, const char *str, size_t len)
{
    if (len + buf->outcnt > LOG_BUFSIZE)                      /* RACE */
        flush_log(buf);
    if (len >= LOG_BUFSIZE) {
        if (write(buf->fd, str, len) < 0) perror("write");
        return;
    }
    spin(window);                                             /* ap_pstrcat of the fields */
    size_t at = buf->outcnt;                                  /* RACE */
    assert(at + len <= LOG_BUFSIZE && "ap_buffered_log_writer: log buffer overrun");
    memcpy(&buf->outbuf[at], str, len);
    buf->outcnt = at + len;                                   /* RACE */
}

static void *worker(void *arg)
{
    long id = (long)arg;
    for (int r = 0; r < rounds; r++)
        for (int i = (int)id; i < nlines; i += 2) {
            spin(100);                                        /* serves the request */
            pthread_mutex_lock(&stats_lock);
            requests++;
            pthread_mutex_unlock(&stats_lock);
            ap_buffered_log_writer(&logbuf, lines[i], lens[i]);
        }
    return NULL;
}

static void read_input(int fd)
{
    static char data[1 << 20];
    size_t n = 0;
    ssize_t k;
    while (n < sizeof data - 1 && (k = read(fd, data + n, sizeof data - 1 - n)) > 0) n += (size_t)k;
    for (char *p = data; p < data + n && nlines < MAX_LINES;) {
        char *nl = memchr(p, '\n', (size_t)(data + n - p));
        char *end = nl ? nl + 1 : data + n;
        lines[nlines] = p;
        lens[nlines++] = (size_t)(end - p);
        p = end;
    }
}

int main(int argc, char **argv)
{
    pthread_t t[2];
    int in = 0;
    if (argc > 1) rounds = atoi(argv[1]);
    if (argc > 2) window = atoi(argv[2]);
    if (argc > 3 && (in = open(argv[3], O_RDONLY)) < 0) { perror(argv[3]); return 1; }
    read_input(in);
    logbuf.fd = open("/dev/null", O_WRONLY);
    for (long i = 0; i < 2; i++) pthread_create(&t[i], NULL, worker, (void *)i);
    for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    flush_log(&logbuf);
    printf("requests=%ld lines=%d\n", requests, nlines);
    return 0;
}
