/*
 * Models pg_doorman issue #206 ("Prepared statement cache exceeds max_size
 * under concurrent load"): PreparedStatementCache::get_or_insert checks
 * "cache.len() >= max_size", evicts the oldest entry if so, and then
 * inserts the new statement, each step atomic on its own but the three not
 * atomic together.  Two clients that miss at the same time can both see
 * len == max_size - 1 (one of them, or a third, just evicted to make room)
 * and both insert, so the cache holds max_size + 1 entries; with more
 * clients it creeps further past its bound (the report saw 353/300).
 * (The same check-then-add shape: Kryo issue #804 / pull request #805.)
 *
 * Here NWORKERS client threads run `iterations` statements each, over a key
 * space larger than the cache.  As with the DashMap's shard locks, a lookup
 * takes cache_lock for reading, an eviction and an insert take it for
 * writing, and an eviction is logged under log_lock (many lock events over
 * a long run); the "is it full?" check reads cache_len without any lock,
 * and `window` is the work between that check and the insert (Parse sent
 * to the server).  cache_peak, the most
 * entries ever held, is kept under the lock and never goes down, so the
 * invariant "cache_peak <= max_size" (globals only) holds at the start and,
 * once the race has happened, until the end, where main asserts it.
 *
 * usage: pgdoorman_206_bounded_list [iterations] [window]
 */
#include <assert.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#define NWORKERS 3
#define NKEYS 24

struct stmt { long key; struct stmt *next; };

long max_size = 8;                 /* the pool's prepared_statements_cache_size */
volatile long cache_len;           /* entries in the cache (written under cache_lock) */
long cache_peak;                   /* most entries ever held (under cache_lock) */
long hits, misses;                 /* under cache_lock */
long evictions;                    /* under log_lock */
static struct stmt *oldest, *newest;
static pthread_rwlock_t cache_lock = PTHREAD_RWLOCK_INITIALIZER;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static int iterations = 2000, window = 0;

static void spin(long n) { for (volatile long i = 0; i < n; i++) ; }

static struct stmt *find(long key)
{
    for (struct stmt *s = oldest; s; s = s->next)
        if (s->key == key) return s;
    return NULL;
}

static int lookup(long key)
{
    pthread_rwlock_rdlock(&cache_lock);
    int hit = find(key) != NULL;
    pthread_rwlock_unlock(&cache_lock);
    if (hit) __atomic_fetch_add(&hits, 1, __ATOMIC_RELAXED);
    return hit;
}

static void evict_oldest(void)
{
    pthread_rwlock_wrlock(&cache_lock);
    struct stmt *s = oldest;
    if (s) {
        oldest = s->next;
        if (!oldest) newest = NULL;
        cache_len = cache_len - 1;                            /* RACE */
    }
    pthread_rwlock_unlock(&cache_lock);
    if (!s) return;
    pthread_mutex_lock(&log_lock);                            /* "Pool cache eviction: ..." */
    evictions++;
    pthread_mutex_unlock(&log_lock);
    free(s);
}

static void insert(struct stmt *s)
{
    pthread_rwlock_wrlock(&cache_lock);
    misses++;
    if (find(s->key)) {                                       /* another client prepared it */
        pthread_rwlock_unlock(&cache_lock);
        free(s);
        return;
    }
    s->next = NULL;
    if (newest) newest->next = s; else oldest = s;
    newest = s;
    cache_len = cache_len + 1;                                /* RACE */
    if (cache_len > cache_peak) cache_peak = cache_len;
    pthread_rwlock_unlock(&cache_lock);
}

static void get_or_insert(long key)
{
    if (lookup(key)) return;
    struct stmt *s = malloc(sizeof *s);
    if (!s) abort();
    s->key = key;
    if (cache_len >= max_size)                                /* RACE */
        evict_oldest();
    spin(window);                                             /* Parse on the server */
    insert(s);
}

static void *client(void *arg)
{
    unsigned long x = 2654435761UL * (unsigned long)((long)arg + 1);
    for (int i = 0; i < iterations; i++) {
        x = x * 6364136223846793005UL + 1442695040888963407UL;
        get_or_insert((long)((x >> 33) % NKEYS));
        spin(50);                                             /* Bind/Execute */
    }
    return NULL;
}

int main(int argc, char **argv)
{
    pthread_t t[NWORKERS];
    if (argc > 1) iterations = atoi(argv[1]);
    if (argc > 2) window = atoi(argv[2]);
    for (long i = 0; i < NWORKERS; i++) pthread_create(&t[i], NULL, client, (void *)i);
    for (int i = 0; i < NWORKERS; i++) pthread_join(t[i], NULL);
    pthread_rwlock_rdlock(&cache_lock);
    printf("statements=%d hits=%ld misses=%ld evictions=%ld cache_len=%ld max_size=%ld peak=%ld\n",
           NWORKERS * iterations, hits, misses, evictions, cache_len, max_size, cache_peak);
    fflush(stdout);
    assert(cache_peak <= max_size && "prepared statement cache exceeds max_size");
    pthread_rwlock_unlock(&cache_lock);
    return 0;
}
