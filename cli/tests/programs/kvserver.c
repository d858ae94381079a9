#define _GNU_SOURCE
/*
 * A small threaded key-value server, as servers are built: an epoll loop
 * accepts connections on loopback and hands each to a pool of worker
 * threads through a queue; a worker reads "SET key value" / "GET key"
 * lines with recv and answers each with send; SIGTERM ends it (the
 * handler writes to a self-pipe the loop watches), the workers are joined
 * and the totals printed.
 *
 * usage: kvserver PORT   (0: any free port; prints "port N pid P")
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define WORKERS 3
#define KEYS 64
#define QUEUE 64

static int self_pipe[2];
static pthread_mutex_t qlock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t qcond = PTHREAD_COND_INITIALIZER;
static int queue[QUEUE], qhead, qtail, stopping;
static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;
static char keys[KEYS][32], values[KEYS][64];
static long sets, gets, misses;

static volatile sig_atomic_t terminated;

static void on_term(int sig)
{
    (void)sig;
    terminated = 1;
    char c = 1;
    (void)!write(self_pipe[1], &c, 1);
}

static void answer(int fd, const char *line)
{
    char key[32], value[64], out[128];
    int n;
    if (sscanf(line, "SET %31s %63s", key, value) == 2) {
        pthread_mutex_lock(&table_lock);
        int slot = -1;
        for (int i = 0; i < KEYS; i++) {
            if (strcmp(keys[i], key) == 0) { slot = i; break; }
            if (slot < 0 && keys[i][0] == 0) slot = i;
        }
        if (slot >= 0) { strcpy(keys[slot], key); strcpy(values[slot], value); }
        sets++;
        pthread_mutex_unlock(&table_lock);
        n = snprintf(out, sizeof out, slot >= 0 ? "STORED\r\n" : "FULL\r\n");
        send(fd, out, n, MSG_NOSIGNAL);
        return;
    } else if (sscanf(line, "GET %31s", key) == 1) {
        pthread_mutex_lock(&table_lock);
        int found = -1;
        for (int i = 0; i < KEYS; i++) if (strcmp(keys[i], key) == 0) { found = i; break; }
        gets++;
        if (found >= 0) n = snprintf(out, sizeof out, "VALUE %s %s\r\n", key, values[found]);
        else { misses++; n = snprintf(out, sizeof out, "END\r\n"); }
        pthread_mutex_unlock(&table_lock);
    } else {
        n = snprintf(out, sizeof out, "ERROR\r\n");
    }
    (void)!write(fd, out, n);                   /* answers go out with write */
}

static void serve(int fd)
{
    char buf[512];
    size_t have = 0;
    for (;;) {
        ssize_t r = recv(fd, buf + have, sizeof buf - 1 - have, 0);
        if (r <= 0) break;
        have += r;
        buf[have] = 0;
        char *start = buf, *nl;
        while ((nl = strchr(start, '\n'))) {
            *nl = 0;
            answer(fd, start);
            start = nl + 1;
        }
        have = strlen(start);
        memmove(buf, start, have);
    }
    close(fd);
}

static void *worker(void *arg)
{
    (void)arg;
    for (;;) {
        pthread_mutex_lock(&qlock);
        while (qhead == qtail && !stopping) pthread_cond_wait(&qcond, &qlock);
        if (qhead == qtail) { pthread_mutex_unlock(&qlock); return NULL; }
        int fd = queue[qhead++ % QUEUE];
        pthread_mutex_unlock(&qlock);
        serve(fd);
    }
}

int main(int argc, char **argv)
{
    int port = argc > 1 ? atoi(argv[1]) : 0;
    if (pipe(self_pipe) != 0) return 2;
    signal(SIGTERM, on_term);
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(ls, (struct sockaddr *)&a, sizeof a) != 0 || listen(ls, 64) != 0) {
        perror("kvserver: bind");
        return 1;
    }
    socklen_t len = sizeof a;
    getsockname(ls, (struct sockaddr *)&a, &len);
    printf("port %d pid %d\n", ntohs(a.sin_port), (int)getpid());
    fflush(stdout);
    pthread_t t[WORKERS];
    for (int i = 0; i < WORKERS; i++) pthread_create(&t[i], NULL, worker, NULL);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = { .events = EPOLLIN, .data.fd = ls };
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
    ev.data.fd = self_pipe[0];
    epoll_ctl(ep, EPOLL_CTL_ADD, self_pipe[0], &ev);
    long connections = 0;
    for (int done = 0; !done;) {
        struct epoll_event got[8];
        int n = epoll_wait(ep, got, 8, -1);
        if (n < 0 && errno == EINTR) continue;
        for (int i = 0; i < n; i++) {
            /* Only the handler's flag ends the loop (a replay runs the
               handler at its recorded place, or never ends). */
            if (got[i].data.fd == self_pipe[0]) { done = terminated; continue; }
            int c = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
            if (c < 0) continue;
            connections++;
            pthread_mutex_lock(&qlock);
            queue[qtail++ % QUEUE] = c;
            pthread_cond_signal(&qcond);
            pthread_mutex_unlock(&qlock);
        }
    }
    pthread_mutex_lock(&qlock);
    stopping = 1;
    pthread_cond_broadcast(&qcond);
    pthread_mutex_unlock(&qlock);
    for (int i = 0; i < WORKERS; i++) pthread_join(t[i], NULL);
    printf("connections %ld sets %ld gets %ld misses %ld\n", connections, sets, gets, misses);
    return 0;
}
