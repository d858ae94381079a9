/*
 * Models carbon-c-relay issue #300 ("Segmentation fault (due to race
 * condition) after SIGHUP"): edit the relay's config file, send SIGHUP, and
 * the reload replaces the state built from the old config while the
 * dispatcher threads are still walking it; a dispatcher crashed in
 * dispatch_runner reading listeners[c]->socks of the replaced state.
 * Here the reload is driven by the file itself: a watcher thread polls
 * stat() of the config file and reloads it when its size or mtime changed.
 *
 * The program finds its config from how it was invoked: argv[1], or when
 * that is "-" the file "<argv[0]>.<instance id>.conf" next to the executable
 * (a random instance id keeps concurrent runs of one binary apart).  If access() says the file
 * is missing it writes a default config and prints "created default config";
 * then it reads it with open()/read() and parses it into a struct config.
 * NWORKERS dispatcher threads route metrics: each reads the global config
 * pointer, looks the route up (window) and then uses the config's fields
 * without a lock.  An admin thread, once a quarter of the metrics are
 * routed, rewrites the config as an operator's tool would (a new version
 * with one more cluster, so a different size, written to a temporary file
 * and renamed over the config).  The watcher sees the change, parses the new
 * file, swaps the global pointer and frees the old config -- poisoned first
 * and parked in a graveyard until exit, so that a dispatcher still holding
 * it fails the assertion "config used after reload" instead of reading
 * reused memory.  A passing run prints the total and the final version 2.
 *
 * A clean run removes its config at exit; a failing run leaves it behind,
 * rewritten to version 2, as a crashed server does.  So when a failing run
 * is replayed (same argv[0], same recorded random id, same path) the file is
 * there, with other contents: a replay that asked the file system would
 * not create the default config, would not print that it did, and would
 * load version 2 at start.  The replay must answer access(), stat() and
 * open() as the recorded run's file system did.
 *
 * usage: carbon_300_config_reload [config|-] [metrics] [window]
 *   metrics: metrics routed per dispatcher
 *   window:  work between loading the config pointer and using it
 *            (more = more failures)
 */
#include <assert.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define NWORKERS 4
#define CONFIG_MAGIC 0xc0f1
#define MAXCLUSTERS 8

struct cluster {
    char name[16];
    char host[32];
    int port;
};

struct config {
    int magic;                            /* 0xdead once freed */
    int version;
    int nclusters;
    struct cluster clusters[MAXCLUSTERS];
    struct config *next_dead;
};

static struct config *volatile g_config;  /* read by the dispatchers without a lock */
static struct config *graveyard;          /* freed configs, free()d at exit */
static const char *config_path;
static char tmp_path[4200];
static int metrics = 200, window = 300;

static pthread_mutex_t stats_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t stats_cond = PTHREAD_COND_INITIALIZER;
static long routed, port_sum;
static int stop_watcher;

static void spin(long n) { for (volatile long i = 0; i < n; i++) ; }

static const char default_config[] =
    "# carbon-c-relay routes\n"
    "version 1\n"
    "cluster graphite 127.0.0.1 2003\n"
    "cluster backup 127.0.0.1 2103\n";

static const char rewritten_config[] =
    "# carbon-c-relay routes (rewritten)\n"
    "version 2\n"
    "cluster graphite 127.0.0.1 2003\n"
    "cluster backup 127.0.0.1 2103\n"
    "cluster archive 127.0.0.1 2203\n";

static void write_file(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) { perror(path); exit(1); }
    size_t len = strlen(text);
    if (write(fd, text, len) != (ssize_t)len) { perror(path); exit(1); }
    close(fd);
}

static struct config *load_config(const char *path)
{
    char buf[4096];
    size_t len = 0;
    ssize_t n;
    int fd = open(path, O_RDONLY);
    if (fd < 0) { perror(path); exit(1); }
    while (len < sizeof buf - 1 && (n = read(fd, buf + len, sizeof buf - 1 - len)) > 0)
        len += (size_t)n;
    close(fd);
    buf[len] = 0;
    struct config *c = calloc(1, sizeof *c);
    for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
        struct cluster *cl = &c->clusters[c->nclusters];
        if (sscanf(line, "version %d", &c->version) == 1) continue;
        if (c->nclusters < MAXCLUSTERS && sscanf(line, "cluster %15s %31s %d", cl->name, cl->host, &cl->port) == 3)
            c->nclusters++;
    }
    if (c->version == 0 || c->nclusters == 0) { fprintf(stderr, "%s: bad config\n", path); exit(1); }
    c->magic = CONFIG_MAGIC;
    return c;
}

static void free_config(struct config *c)
{
    c->magic = 0xdead;                    /* RACE */
    c->next_dead = graveyard;             /* free(c), deferred to exit */
    graveyard = c;
}

static int same_file_state(const struct stat *a, const struct stat *b)
{
    return a->st_size == b->st_size && a->st_mtim.tv_sec == b->st_mtim.tv_sec
        && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec && a->st_ino == b->st_ino;
}

static void *watcher(void *arg)
{
    struct stat seen = *(struct stat *)arg, now;
    for (;;) {
        pthread_mutex_lock(&stats_mu);
        int last = stop_watcher;          /* read before the check: a change */
        pthread_mutex_unlock(&stats_mu);  /* made before stop is seen */
        if (stat(config_path, &now) == 0 && !same_file_state(&seen, &now)) {
            seen = now;
            struct config *next = load_config(config_path);
            struct config *old = g_config;
            g_config = next;              /* RACE */
            free_config(old);
        }
        if (last) return NULL;
        struct timespec ts = { 0, 50000 };
        nanosleep(&ts, NULL);
    }
}

static void *admin(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&stats_mu);
    while (routed < (long)NWORKERS * metrics / 4) pthread_cond_wait(&stats_cond, &stats_mu);
    pthread_mutex_unlock(&stats_mu);
    write_file(tmp_path, rewritten_config);   /* the operator edits the config */
    if (rename(tmp_path, config_path) != 0) { perror(config_path); exit(1); }
    return NULL;
}

static void *dispatcher(void *arg)
{
    long id = (long)arg;
    for (int i = 0; i < metrics; i++) {
        spin(2000);                                   /* read a metric */
        struct config *c = g_config;                  /* RACE */
        spin(window);                                 /* match the routes */
        int magic = c->magic;                         /* RACE */
        assert(magic == CONFIG_MAGIC && "config used after reload");
        const struct cluster *cl = &c->clusters[(id + i) % c->nclusters];
        pthread_mutex_lock(&stats_mu);
        port_sum += cl->port / 1000;                  /* sent to cluster */
        if (++routed == (long)NWORKERS * metrics / 4) pthread_cond_signal(&stats_cond);
        pthread_mutex_unlock(&stats_mu);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    static char default_path[4096];
    if (argc > 1 && strcmp(argv[1], "-") != 0) {
        config_path = argv[1];
    } else {
        unsigned long id = 0;                         /* this instance's id */
        if (getrandom(&id, sizeof id, 0) != sizeof id) id = (unsigned long)getpid();
        snprintf(default_path, sizeof default_path, "%s.%016lx.conf", argv[0], id);
        config_path = default_path;
    }
    if (argc > 2) metrics = atoi(argv[2]);
    if (argc > 3) window = atoi(argv[3]);
    snprintf(tmp_path, sizeof tmp_path, "%s.tmp", config_path);

    if (access(config_path, F_OK) != 0) {
        write_file(config_path, default_config);
        printf("created default config\n");
        fflush(stdout);
    }
    struct stat st;
    if (stat(config_path, &st) != 0) { perror(config_path); return 1; }
    g_config = load_config(config_path);

    pthread_t w, a, d[NWORKERS];
    pthread_create(&w, NULL, watcher, &st);
    pthread_create(&a, NULL, admin, NULL);
    for (long i = 0; i < NWORKERS; i++) pthread_create(&d[i], NULL, dispatcher, (void *)i);
    for (int i = 0; i < NWORKERS; i++) pthread_join(d[i], NULL);
    pthread_join(a, NULL);
    pthread_mutex_lock(&stats_mu);
    stop_watcher = 1;
    pthread_mutex_unlock(&stats_mu);
    pthread_join(w, NULL);

    printf("routed %ld metrics, config version %d\n", routed, g_config->version);
    unlink(config_path);                              /* a clean exit */
    while (graveyard) { struct config *c = graveyard; graveyard = c->next_dead; free(c); }
    free(g_config);
    return 0;
}
