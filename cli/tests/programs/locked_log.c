/*
 * Processes that share a log file and take turns with POSIX record locks,
 * as a pre-forked server's workers serialise their accept() or their log
 * (Apache's fcntl accept mutex, a lock file): each worker first tries the
 * lock without waiting, counts the times it was busy, then waits for it.
 * How often each found it busy depends on how the processes interleaved.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#define WORKERS 3
#define ROUNDS 200

static int lock(int fd, int cmd, short type)
{
    struct flock l = {.l_type = type, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
    return fcntl(fd, cmd, &l);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s LOGFILE\n", argv[0]);
        return 2;
    }
    int fd = open(argv[1], O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        perror(argv[1]);
        return 1;
    }
    for (int w = 0; w < WORKERS; w++) {
        if (fork() == 0) {
            int busy = 0;
            for (int i = 0; i < ROUNDS; i++) {
                if (lock(fd, F_SETLK, F_WRLCK) != 0) {
                    busy++;
                    lock(fd, F_SETLKW, F_WRLCK);
                }
                char line[64];
                int n = snprintf(line, sizeof line, "worker %d round %d\n", w, i);
                lseek(fd, 0, SEEK_END);
                if (write(fd, line, n) != n) _exit(1);
                lock(fd, F_SETLK, F_UNLCK);
            }
            printf("worker %d found the lock busy %d times\n", w, busy);
            fflush(stdout);
            _exit(0);
        }
    }
    while (wait(NULL) > 0)
        ;
    return 0;
}
