/*
 * A pre-forking supervisor, as nginx's master or a worker pool's parent
 * runs: forks workers that finish after different times, reaps them with
 * waitpid(-1) as they exit, and tells which worker (by the pid its fork
 * returned) ended with which code, then its own pid.  Replayed, sleeps
 * take no time: the order the workers end in comes from the recording.
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define WORKERS 3

int main(void)
{
    static const int ms[WORKERS] = {60, 10, 30};
    pid_t pids[WORKERS];
    for (int i = 0; i < WORKERS; i++) {
        pids[i] = fork();
        if (pids[i] == 0) {
            struct timespec t = {0, ms[i] * 1000000L};
            nanosleep(&t, NULL);
            _exit(10 + i);
        }
    }
    for (int n = 0; n < WORKERS; n++) {
        int status;
        pid_t p = waitpid(-1, &status, 0);
        int who = -1;
        for (int i = 0; i < WORKERS; i++)
            if (pids[i] == p) who = i;
        printf("worker %d exited with %d\n", who, WEXITSTATUS(status));
    }
    printf("supervisor pid %d done\n", (int)getpid());
    return 0;
}
