/*
 * One thread creates files that another thread waits for, as a daemon
 * writes its pid file while a second instance or a watcher polls for it:
 * the writer creates file i (O_CREAT) and writes one line; the reader
 * polls open(O_RDONLY) until it succeeds, reads the line, and checks it.
 * The reader's open can find a file while the writer's create is still in
 * the kernel, so a sys trace may log the open before the create.
 *
 * usage: create_race [files]
 */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/random.h>
#include <unistd.h>

static int files = 200;
static unsigned tag;

static void path_of(char *buf, size_t n, int i)
{
    snprintf(buf, n, "/tmp/create-race-%08x-%d", tag, i);
}

static void spin(long n) { for (volatile long i = 0; i < n; i++) ; }

static void *writer(void *arg)
{
    (void)arg;
    for (int i = 0; i < files; i++) {
        char path[64], line[32];
        path_of(path, sizeof path, i);
        spin(20000);
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0) { perror(path); exit(2); }
        int n = snprintf(line, sizeof line, "file %d\n", i);
        if (write(fd, line, n) != n) perror("write");
        close(fd);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc > 1) files = atoi(argv[1]);
    if (getrandom(&tag, sizeof tag, 0) != sizeof tag) tag = (unsigned)getpid();
    pthread_t w;
    pthread_create(&w, NULL, writer, NULL);
    long polls = 0, lines = 0;
    for (int i = 0; i < files; i++) {
        char path[64], buf[32] = {0};
        path_of(path, sizeof path, i);
        int fd;
        while ((fd = open(path, O_RDONLY)) < 0) polls++;
        /* The writer may not have written its line yet. */
        if (read(fd, buf, sizeof buf - 1) > 0) lines++;
        close(fd);
    }
    pthread_join(w, NULL);
    for (int i = 0; i < files; i++) {
        char path[64];
        path_of(path, sizeof path, i);
        unlink(path);
    }
    printf("%d files, %ld with their line\n", files, lines);
    return polls < 0;
}
