/*
 * Models EZLippi/Tinyhttpd pull request #9 ("fix thread conflict when
 * passing local arg as pointer"): the server's accept loop in main keeps
 * each accepted socket in a local variable, client_sock, and starts the
 * connection's thread with pthread_create(..., accept_request,
 * &client_sock); accept_request reads the socket through the pointer. If
 * the next accept() returns before the new thread has read it, main has
 * already overwritten client_sock: the thread serves the newer connection,
 * which is then served twice, and its own is never served.
 *
 * No network: a client thread "connects" by writing the connection's number
 * (4 bytes) into a pipe, one every `gap` of spinning; main's accept is a
 * blocking read() of the pipe. Each handler first registers itself under a
 * mutex and sets up its buffers (spins `setup`), then reads its socket and
 * records under a mutex which connection it served. main joins all the
 * handlers and checks that every connection was served exactly once.
 * (With a short setup the late handlers are those not yet started when the
 * next accept returns; with one about half the gap, those that registered
 * before it and read their socket after it.)
 *
 * usage: tinyhttpd_9_stackarg [connections] [gap] [setup]
 *   gap:   spinning between two connections (smaller = more failures)
 *   setup: spinning a handler does after registering, before it reads its
 *          socket (larger = more failures)
 */
#include <assert.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static int connections = 10, gap = 20000000, setup = 10000000;
static int listen_fd[2];                 /* the "listening socket": a pipe */
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t served_lock = PTHREAD_MUTEX_INITIALIZER;
static int active_handlers;
static int *served;                      /* per connection, under served_lock */

static void spin(long n) { for (volatile long i = 0; i < n; i++) ; }

/* The clients: connection i arrives `gap` after connection i-1. */
static void *clients(void *arg)
{
    (void)arg;
    for (int i = 0; i < connections; i++) {
        spin(gap);
        if (write(listen_fd[1], &i, sizeof i) != sizeof i) abort();
    }
    return NULL;
}

/* accept(): blocks until a client connects, returns its socket. */
static __attribute__((noinline)) int accept_connection(int fd)
{
    int sock;
    if (read(fd, &sock, sizeof sock) != sizeof sock) return -1;
    return sock;
}

static void *accept_request(void *arg)
{
    pthread_mutex_lock(&registry_lock);
    active_handlers++;
    pthread_mutex_unlock(&registry_lock);
    spin(setup);                                     /* sets up its buffers */
    int client = *(int *)arg;                        /* RACE */
    pthread_mutex_lock(&served_lock);
    served[client]++;                                /* serves the request */
    pthread_mutex_unlock(&served_lock);
    pthread_mutex_lock(&registry_lock);
    active_handlers--;
    pthread_mutex_unlock(&registry_lock);
    return NULL;
}

int main(int argc, char **argv)
{
    pthread_t client_thread;
    int client_sock;
    if (argc > 1) connections = atoi(argv[1]);
    if (argc > 2) gap = atoi(argv[2]);
    if (argc > 3) setup = atoi(argv[3]);
    if (connections < 1) connections = 1;
    pthread_t *t = calloc(connections, sizeof *t);
    served = calloc(connections, sizeof *served);
    if (t == NULL || served == NULL || pipe(listen_fd) != 0) return 1;
    pthread_create(&client_thread, NULL, clients, NULL);
    for (int i = 0; i < connections; i++) {
        client_sock = accept_connection(listen_fd[0]); /* RACE */
        if (client_sock == -1) return 1;
        pthread_create(&t[i], NULL, accept_request, &client_sock);
    }
    pthread_join(client_thread, NULL);
    for (int i = 0; i < connections; i++) pthread_join(t[i], NULL);
    for (int i = 0; i < connections; i++)
        assert(served[i] == 1 && "a connection was served twice and another never");
    printf("served=%d\n", connections);
    return 0;
}
