/*
 * Takes one branch or the other on the first byte of a file it maps:
 * mmap is not part of any sketch (the mapping runs for real in replay),
 * so changing the file between record and replay changes the path, and a
 * bb replay must stop at the first block off the recorded path.
 * Built with -fsanitize-coverage=trace-pc.
 *
 * usage: branch_on_file FILE
 */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

static volatile long taken;

static void *helper(void *arg) { (void)arg; taken += 10; return NULL; }

int main(int argc, char **argv)
{
    if (argc < 2) return 2;
    int fd = open(argv[1], O_RDONLY);
    if (fd < 0) { perror(argv[1]); return 2; }
    const char *p = mmap(NULL, 1, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) { perror("mmap"); return 2; }
    pthread_t t;
    pthread_create(&t, NULL, helper, NULL);
    pthread_join(t, NULL);
    if (p[0] == 'A')
        taken += 1;     /* the recorded path */
    else
        taken += 2;     /* the other path */
    printf("taken %ld\n", taken);
    return 0;
}
