/*
 * Models Arkime pull request #3974 ("capture: fix race on per-file
 * sessionsStarted/sessionsPresent counters"): the per-input-file counters
 * offlineInfo[readerPos].sessionsStarted/sessionsPresent are shared by all
 * the packet threads that process packets of the same pcap file, and were
 * incremented non-atomically; two threads could lose an increment and the
 * file's reported session count came out short (api-files.t flaked off by
 * one).  The fix was ARKIME_THREAD_INCR.
 *
 * Here NWORKERS (20) packet threads each open() and read() the same capture
 * file (a text rendering of a pcap, one packet per line, under inputs/; in
 * Arkime one reader feeds the packet threads, here each does its own I/O),
 * "dissect" every packet and count the packets locally (added to the total
 * under the mutex at the end: correct), but bump the file's sessionsStarted
 * for every SYN without the mutex (load, create the session, store: lost
 * updates).
 * main joins them all and prints the totals; nothing crashes, only the
 * printed sessionsStarted is short.  With inputs/capture.txt (64 packets,
 * 13 SYNs) the correct line is "packets=1280 sessionsStarted=260".
 *
 * usage: arkime_3974_many_sessions [capture_file] [window]
 *   window: work between reading sessionsStarted and storing it back
 *           (more = more lost updates)
 */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NWORKERS 20
#define MAXFILE 16384

struct offline_info {                 /* one per input file */
    const char *filename;
    long packets;                     /* under lock */
    volatile long sessions_started;   /* should be ARKIME_THREAD_INCR */
    pthread_mutex_t lock;
};

static struct offline_info info = { .lock = PTHREAD_MUTEX_INITIALIZER };
static int window = 10;

static void spin(long n) { for (volatile long i = 0; i < n; i++) ; }

/* Reads the whole capture with read(2) in pcap-buffer-sized pieces. */
static size_t read_capture(const char *path, char *buf)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0) { perror(path); exit(1); }
    size_t len = 0;
    ssize_t n;
    while (len < MAXFILE - 1 && (n = read(fd, buf + len, 512 < MAXFILE - 1 - len ? 512 : MAXFILE - 1 - len)) > 0)
        len += (size_t)n;
    close(fd);
    buf[len] = 0;
    return len;
}

static void *packet_thread(void *arg)
{
    (void)arg;
    char buf[MAXFILE];
    read_capture(info.filename, buf);
    long packets = 0;
    for (char *line = buf, *nl; *line; line = nl + 1) {
        nl = strchr(line, '\n');
        if (!nl) nl = line + strlen(line) - 1;
        char src[64], dst[64], flags[8];
        double ts;
        if (sscanf(line, "%lf %63s > %63s %7s", &ts, src, dst, flags) != 4) continue;
        packets++;
        spin(300);                                    /* dissect the packet */
        if (strcmp(flags, "S") == 0) {                /* a new session */
            long s = info.sessions_started;           /* RACE */
            spin(window);                             /* create the session */
            info.sessions_started = s + 1;            /* RACE */
        }
    }
    pthread_mutex_lock(&info.lock);
    info.packets += packets;
    pthread_mutex_unlock(&info.lock);
    return NULL;
}

int main(int argc, char **argv)
{
    pthread_t t[NWORKERS];
    info.filename = argc > 1 ? argv[1] : "inputs/capture.txt";
    if (argc > 2) window = atoi(argv[2]);
    for (int i = 0; i < NWORKERS; i++) pthread_create(&t[i], NULL, packet_thread, NULL);
    for (int i = 0; i < NWORKERS; i++) pthread_join(t[i], NULL);
    pthread_mutex_lock(&info.lock);
    printf("packets=%ld sessionsStarted=%ld\n", info.packets, info.sessions_started);
    pthread_mutex_unlock(&info.lock);
    return 0;
}
