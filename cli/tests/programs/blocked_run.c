/*
 * A thread that blocks, in a system call no sketch records (a futex wait
 * with a timeout), right after running blocks of its own: its run of block
 * entries is still open when it blocks, and the recorder must take it
 * over while the main thread goes on logging. Built with
 * -fsanitize-coverage=trace-pc.
 */
#include <linux/futex.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static int word;
static volatile long mine, theirs;

static void work(volatile long *sum, int n)
{
    for (int i = 0; i < n; i++) {
        if (i % 3)
            *sum += i;
        else
            *sum -= 1;
    }
}

static void *sleeper(void *arg)
{
    (void)arg;
    for (int r = 0; r < 5; r++) {
        work(&theirs, 100);
        struct timespec ts = {0, 20 * 1000 * 1000};
        syscall(SYS_futex, &word, FUTEX_WAIT, 0, &ts, 0, 0);
    }
    return NULL;
}

int main(void)
{
    pthread_t t;
    pthread_create(&t, NULL, sleeper, NULL);
    work(&mine, 200000);
    pthread_join(t, NULL);
    printf("%ld %ld\n", mine, theirs);
    return 0;
}
