/*
 * Models ecmwf/eckit issue #89 ("Segmentation fault caused by buffer
 * overflow in ChannelBuffer", fixed defensively by pull request #95): the
 * log channel's stream buffer is shared by every thread that logs.  Its
 * put path checks the room left (epptr - pptr) against the length, and
 * only later copies the text at pptr and advances pptr.  A thread whose
 * check passed, but which copies after other threads have advanced pptr
 * meanwhile, writes past the end of the buffer; the next dump of the buffer
 * then finds pptr beyond epptr (the crash in dumpBuffer's write of
 * pbase..pptr).  Whether it happens depends on how full the buffer is when
 * the late copy lands: the other thread's messages advance pptr many times
 * in the window, and only some of those values leave too little room.
 *
 * usage: eckit_89_channelbuffer [jobs] [window]
 */
#include <assert.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CHANNEL_BUFSIZE 1024

/* The stream buffer: pbase..epptr is the buffer; the slack after it only
 * keeps an overrun from corrupting other memory, so that the dump sees it. */
struct channel_buffer {
    char *pbase;
    char *volatile pptr;
    char *epptr;
    char area[CHANNEL_BUFSIZE + 4096];
};

/* The file target the buffer dumps to (a plain write(2) to a file). */
struct file_target {
    int fd;
};

static struct channel_buffer channel;
static struct file_target target = {-1};

static pthread_mutex_t queue_lock = PTHREAD_MUTEX_INITIALIZER;
static int next_job, jobs = 300, window = 0;

static void spin(long n) { for (volatile long i = 0; i < n; i++) ; }

static void target_write(const char *p, size_t n)
{
    if (write(target.fd, p, n) < 0) perror("write");
}

static void dump_buffer(struct channel_buffer *cb)
{
    char *end = cb->pptr;                                     /* RACE */
    assert(end <= cb->epptr && "ChannelBuffer::dumpBuffer: pptr past the end of the buffer");
    if (end > cb->pbase) target_write(cb->pbase, (size_t)(end - cb->pbase));
    cb->pptr = cb->pbase;                                     /* RACE */
}

/* std::streambuf::xsputn as the channel uses it: room is checked first,
 * the copy and the advance come after the text is formatted. */
static void put(struct channel_buffer *cb, const char *s, size_t n)
{
    if ((size_t)(cb->epptr - cb->pptr) < n)                   /* RACE */
        dump_buffer(cb);
    spin(window);
    char *at = cb->pptr;                                      /* RACE */
    memcpy(at, s, n);
    cb->pptr = at + n;                                        /* RACE */
    if (cb->pptr >= cb->epptr) dump_buffer(cb);               /* overflow() */
}

static int take_job(void)
{
    pthread_mutex_lock(&queue_lock);
    int j = next_job < jobs ? next_job++ : -1;
    pthread_mutex_unlock(&queue_lock);
    return j;
}

/* A model step logs what it did; lengths vary with the field it read. */
static void *worker(void *arg)
{
    long id = (long)arg;
    char line[512];
    int j;
    while ((j = take_job()) >= 0) {
        spin(200);
        int fields = 1 + (j * 7 + (int)id) % 23;
        int n = snprintf(line, sizeof line, "[worker %ld] step %d: decoded %d fields", id, j, fields);
        for (int f = 0; f < fields && n < (int)sizeof line - 16; f++)
            n += snprintf(line + n, sizeof line - (size_t)n, " f%02d", f);
        line[n++] = '\n';
        put(&channel, line, (size_t)n);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    pthread_t t[2];
    if (argc > 1) jobs = atoi(argv[1]);
    if (argc > 2) window = atoi(argv[2]);
    channel.pbase = channel.pptr = channel.area;
    channel.epptr = channel.area + CHANNEL_BUFSIZE;
    target.fd = open("/dev/null", O_WRONLY);
    for (long i = 0; i < 2; i++) pthread_create(&t[i], NULL, worker, (void *)i);
    for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    dump_buffer(&channel);
    printf("jobs=%d\n", jobs);
    return 0;
}
