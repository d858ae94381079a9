/*
 * Models glibc bug 19329 ("dl-tls.c: _dl_allocate_tls_init: Assertion
 * `listp->slotinfo[cnt].gen <= GL(dl_tls_generation)' failed", fixed in
 * glibc 2.34): pthread_create initialises the new thread's TLS by walking
 * the dynamic linker's slotinfo list without the load lock, while dlopen of
 * a module with TLS, under that lock, publishes the module's slotinfo entry
 * with the next generation number first and increments the global
 * generation counter only after relocating the module.  A thread created in
 * between sees an entry newer than the generation and the assertion fails.
 *
 * Here the main thread creates and joins short-lived threads; before each
 * create it runs tls_init(), which walks the slot list and checks every
 * used entry against the global generation.  A loader thread opens modules:
 * under load_lock it fills the next slot (gen = generation + 1), makes it
 * visible, relocates the module (window), then bumps the generation.  Every
 * walk races with every load: a replay can meet the failure at another
 * thread creation than the recording did.
 *
 * usage: glibc_19329_tls_generation [threads] [window]
 *   threads: threads created (and joined) one after the other
 *   window:  work between publishing a slot and bumping the generation
 *            (more = more failures)
 */
#include <assert.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#define MAXSLOTS 64
#define LOADS 24

struct slotinfo {
    volatile unsigned long gen;  /* generation the module was loaded in */
    void *volatile map;          /* the module */
};

static struct slotinfo slots[MAXSLOTS];
static volatile int nslots;                      /* read without load_lock */
static volatile unsigned long generation = 1;    /* GL(dl_tls_generation) */
static pthread_mutex_t load_lock = PTHREAD_MUTEX_INITIALIZER;
static int threads = 200, window = 0;
static volatile int spawning = 1;
static long tls_bytes;

static void spin(long n) { for (volatile long i = 0; i < n; i++) ; }

/* _dl_allocate_tls_init: set up the new thread's blocks of every module. */
static void tls_init(void)
{
    int n = nslots;                                      /* RACE */
    for (int i = 0; i < n; i++) {
        spin(30);                           /* copies the module's TLS image */
        unsigned long g = slots[i].gen;                  /* RACE */
        assert(g <= generation && "slotinfo entry newer than the TLS generation"); /* RACE */
        tls_bytes += 64;
    }
}

/* dlopen of modules that have TLS, spread over the spawner's lifetime. */
static void *loader(void *arg)
{
    (void)arg;
    for (int i = 0; i < LOADS && spawning; i++) {
        spin(threads * 300L);                    /* the application's work */
        pthread_mutex_lock(&load_lock);
        int n = nslots;
        slots[n].gen = generation + 1;                   /* RACE */
        slots[n].map = &slots[n];
        nslots = n + 1;                                  /* RACE */
        spin(window);                            /* relocates the module */
        generation++;                                    /* RACE */
        pthread_mutex_unlock(&load_lock);
    }
    return NULL;
}

static void *worker(void *arg)
{
    (void)arg;
    spin(2000);                                  /* a short request */
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc > 1) threads = atoi(argv[1]);
    if (argc > 2) window = atoi(argv[2]);
    pthread_t l;
    pthread_create(&l, NULL, loader, NULL);
    for (int i = 0; i < threads; i++) {
        pthread_t t;
        tls_init();
        pthread_create(&t, NULL, worker, NULL);
        pthread_join(t, NULL);
    }
    spawning = 0;
    pthread_join(l, NULL);
    printf("created %d threads, %d modules, generation %lu\n", threads, nslots, generation);
    return 0;
}
