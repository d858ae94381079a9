/*
 * Models the Mozilla SpiderMonkey property-cache multi-variable atomicity
 * violation (js_PropertyCacheFill / js_FlushPropertyCache; described in Lu
 * et al., "Learning from Mistakes", ASPLOS 2008): an entry is a pair
 * (key, value) and the cache has an `empty` flag; they are written in
 * separate steps and read without the lock.  A lookup that sees the old key
 * and then the value already cleared by a flush takes a NULL property:
 * "property cache hit with a NULL value".
 *
 * usage: mozilla_js_propcache [lookups] [window]
 */
#include <assert.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#define SIZE 16

struct prop { int slot; };
struct entry { volatile long key; struct prop *volatile val; };
struct cache { volatile int empty; struct entry table[SIZE]; };

static struct cache cache = { 1, {{0, NULL}} };
static struct prop props[SIZE];
static pthread_mutex_t gc_lock = PTHREAD_MUTEX_INITIALIZER;
static int lookups = 600, window = 3, running = 1;

static void spin(long n) { for (volatile long i = 0; i < n; i++) ; }

static void fill(long key)
{
    struct entry *e = &cache.table[key % SIZE];
    e->key = key;                               /* RACE */
    e->val = &props[key % SIZE];                /* RACE */
    cache.empty = 0;
}

static void *interpreter(void *arg)
{
    long sum = 0;
    (void)arg;
    for (int i = 0; i < lookups; i++) {
        long key = 1 + (i * 7) % 12;
        struct entry *e = &cache.table[key % SIZE];
        if (!cache.empty && e->key == key) {    /* RACE */
            spin(window);
            struct prop *p = e->val;            /* RACE */
            assert(p != NULL && "property cache hit with a NULL value");
            sum += p->slot;
        } else {
            fill(key);
        }
        spin(100);
    }
    pthread_mutex_lock(&gc_lock);
    running = 0;
    pthread_mutex_unlock(&gc_lock);
    return (void *)sum;
}

static void *gc_thread(void *arg)
{
    (void)arg;
    for (;;) {
        spin(1500);
        pthread_mutex_lock(&gc_lock);           /* js_GC holds the GC lock... */
        if (!running) { pthread_mutex_unlock(&gc_lock); break; }
        for (int j = 0; j < SIZE; j++) {        /* ...js_FlushPropertyCache */
            cache.table[j].val = NULL;          /* RACE */
            cache.table[j].key = 0;             /* RACE */
        }
        cache.empty = 1;
        pthread_mutex_unlock(&gc_lock);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    pthread_t a, g;
    if (argc > 1) lookups = atoi(argv[1]);
    if (argc > 2) window = atoi(argv[2]);
    for (int i = 0; i < SIZE; i++) props[i].slot = i;
    pthread_create(&a, NULL, interpreter, NULL);
    pthread_create(&g, NULL, gc_thread, NULL);
    pthread_join(a, NULL);
    pthread_join(g, NULL);
    printf("lookups=%d\n", lookups);
    return 0;
}
