/*
 * Models rsyslog PR #4191 (issues #3892 and #407): rsyslogd checks for a
 * running instance (checkStartupOK: is there a pid file naming a live
 * rsyslogd?) long before it writes its own pid file (writePidFile, after
 * loading its configuration and modules).  Two instances started at once --
 * an init script's `restart` racing with a `start` -- both find no pid
 * file, both start, and both open the same log.  Each takes an exclusive
 * POSIX record lock on the log before writing to it; the instance that is
 * refused finds another rsyslogd writing its log and aborts.  The init
 * script sees an instance die and exits with status 3.
 *
 * usage: rsyslog_4191_pidfile [startup_work] [stagger]
 *   startup_work: work between the check and the pid file (more = more failures)
 *   stagger:      work of the init script between starting the two instances
 *                 (more = fewer failures)
 */
#include <assert.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/wait.h>
#include <unistd.h>

static char pidfile[64], logfile[64];
static long startup_work = 0;

static void spin(long n) { for (volatile long i = 0; i < n; i++) ; }

/* An input thread, as rsyslogd's imuxsock: it only counts messages here. */
static volatile long received;
static void *input(void *arg) { (void)arg; for (int i = 0; i < 1000; i++) received++; return NULL; }

/* checkStartupOK(): true if no pid file names a running instance. */
static int startup_ok(void)
{
    char buf[32] = {0};
    int fd = open(pidfile, O_RDONLY);                   /* RACE */
    if (fd < 0) return 1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    return n <= 0;
}

static void write_pid_file(int id)
{
    char buf[32];
    int n = snprintf(buf, sizeof buf, "rsyslogd %d\n", id);
    int fd = open(pidfile, O_WRONLY | O_CREAT | O_TRUNC, 0644); /* RACE */
    if (fd >= 0) {
        if (write(fd, buf, n) != n) perror("pid file");
        close(fd);
    }
}

static int instance(int id)
{
    if (!startup_ok()) {
        printf("rsyslogd %d: already running\n", id);
        return 1;
    }
    spin(startup_work);                                 /* config, modules */
    write_pid_file(id);
    pthread_t t;
    pthread_create(&t, NULL, input, NULL);
    int log = open(logfile, O_WRONLY | O_CREAT | O_APPEND, 0644);
    struct flock l = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
    int locked = fcntl(log, F_SETLK, &l) == 0;
    assert(locked && "another rsyslogd instance is writing the log");
    pthread_join(t, NULL);
    char line[64];
    int n = snprintf(line, sizeof line, "rsyslogd %d: %ld messages\n", id, received);
    if (write(log, line, n) != n) perror("log");
    spin(200000 + 2 * startup_work);                    /* runs a while */
    return 0;
}

int main(int argc, char **argv)
{
    const int instances = 2;
    long stagger = 0;
    if (argc > 1) startup_work = atol(argv[1]);
    if (argc > 2) stagger = atol(argv[2]);
    unsigned tag = 0;
    if (getrandom(&tag, sizeof tag, 0) != sizeof tag) tag = (unsigned)getpid();
    snprintf(pidfile, sizeof pidfile, "/tmp/rsyslogd-%08x.pid", tag);
    snprintf(logfile, sizeof logfile, "/tmp/rsyslogd-%08x.log", tag);
    unlink(pidfile);                                    /* no stale pid file */
    for (int i = 0; i < instances; i++) {
        if (i > 0) spin(stagger);                       /* `restart` after `start` */
        if (fork() == 0) _exit(instance(i));
    }
    int died = 0;
    for (int i = 0; i < instances; i++) {
        int st;
        if (wait(&st) > 0 && WIFSIGNALED(st)) died++;
    }
    unlink(pidfile);
    unlink(logfile);
    if (died) {
        printf("init: %d rsyslogd instance(s) died\n", died);
        return 3;
    }
    printf("init: started\n");
    return 0;
}
