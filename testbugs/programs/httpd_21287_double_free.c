/*
 * Models Apache httpd bug #21287 (mod_mem_cache double free): in
 * decrement_refcount() the cache object's reference count is decremented
 * and then tested for zero in two separate, unlocked steps.  Two requests
 * finishing with the same object at once can both see zero, and both free
 * the object's buffer: glibc aborts with "double free detected" (SIGABRT).
 *
 * usage: httpd_21287_double_free [requests] [window]
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct cache_object { volatile int refcount; char *buf; long served; };

static struct cache_object objs[4096];
static pthread_barrier_t round_start;
static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static int requests = 60, window = 0;

static void spin(long n) { for (volatile long i = 0; i < n; i++) ; }

static void decrement_refcount(struct cache_object *obj)
{
    obj->refcount--;                        /* RACE */
    spin(window);
    if (obj->refcount == 0)                 /* RACE */
        free(obj->buf);
}

static void *request_thread(void *arg)
{
    unsigned seed = (unsigned)(long)arg;
    for (int i = 0; i < requests; i++) {
        struct cache_object *obj = &objs[i];
        pthread_barrier_wait(&round_start);     /* both requests hit the same URL */
        pthread_mutex_lock(&cache_lock);
        obj->served += (long)strlen(obj->buf);
        pthread_mutex_unlock(&cache_lock);
        seed = seed * 1103515245 + 12345;
        spin((seed >> 16) % 4000);              /* writes the response */
        decrement_refcount(obj);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    pthread_t t[2];
    long served = 0;
    if (argc > 1) requests = atoi(argv[1]);
    if (argc > 2) window = atoi(argv[2]);
    if (requests > 4096) requests = 4096;
    for (int i = 0; i < requests; i++) {
        objs[i].refcount = 2;
        objs[i].buf = malloc(64);
        strcpy(objs[i].buf, "HTTP/1.1 200 OK");
    }
    pthread_barrier_init(&round_start, NULL, 2);
    for (long i = 0; i < 2; i++) pthread_create(&t[i], NULL, request_thread, (void *)(i + 7));
    for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    for (int i = 0; i < requests; i++) served += objs[i].served;
    printf("served=%ld\n", served);
    return 0;
}
