/*
 * Models memcached issue #127 (item refcount race): the item reference
 * count is incremented and decremented with plain, non-atomic read-modify-
 * write outside the cache lock.  Two worker threads fetching the same hot
 * item can lose an increment; the count then reaches zero while a worker
 * still uses the item, item_free() recycles it, and the next access finds
 * a dead item: "item used after free".
 *
 * usage: memcached_127_refcount [gets] [window]
 */
#include <assert.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ITEM_LIVE 0x1177
#define ITEM_DEAD 0xdead

struct item { volatile int magic; volatile int refcount; char data[48]; };

static struct item *volatile hot;           /* the linked item (holds one reference) */
static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static int gets = 300, window = 0;
static long hits;

static void spin(long n) { for (volatile long i = 0; i < n; i++) ; }

static void item_free(struct item *it)
{
    it->magic = ITEM_DEAD;                  /* slabs_free() */
}

static void item_release(struct item *it)
{
    int r = it->refcount - 1;               /* RACE */
    it->refcount = r;                       /* RACE */
    if (r == 0) item_free(it);
}

static void *worker(void *arg)
{
    (void)arg;
    for (int i = 0; i < gets; i++) {
        pthread_mutex_lock(&cache_lock);    /* assoc_find under the cache lock */
        struct item *it = hot;
        pthread_mutex_unlock(&cache_lock);
        int r = it->refcount;               /* RACE */
        spin(window);
        it->refcount = r + 1;               /* RACE */
        spin(300);                          /* builds the response */
        assert(it->magic == ITEM_LIVE && "item used after free");
        pthread_mutex_lock(&cache_lock);
        hits += (long)strlen(it->data);
        pthread_mutex_unlock(&cache_lock);
        item_release(it);
        spin(200);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    pthread_t t[2];
    if (argc > 1) gets = atoi(argv[1]);
    if (argc > 2) window = atoi(argv[2]);
    hot = calloc(1, sizeof *hot);
    hot->magic = ITEM_LIVE;
    hot->refcount = 1;
    strcpy(hot->data, "VALUE hot 0 5");
    for (int i = 0; i < 2; i++) pthread_create(&t[i], NULL, worker, NULL);
    for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    printf("hits=%ld\n", hits);
    return 0;
}
