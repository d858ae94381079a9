/*
 * C11 threads (<threads.h>): two workers add to a counter under an mtx_t
 * after one initialisation through call_once and return their results
 * through thrd_exit and return; a third thread holds the mutex while the
 * main thread's trylock is refused and its timed lock times out, then is
 * let go through a cnd_t; a timed wait on the condition times out.
 * Prints each result; the output does not depend on timing.
 */
#include <stdio.h>
#include <threads.h>
#include <time.h>

static mtx_t m, g;
static cnd_t cv;
static once_flag once = ONCE_FLAG_INIT;
static int counter, inits, holding, release_it;

static void init(void) { inits++; }

static struct timespec in_ms(long ms)
{
    struct timespec t;
    timespec_get(&t, TIME_UTC);
    t.tv_nsec += ms * 1000000L;
    t.tv_sec += t.tv_nsec / 1000000000L;
    t.tv_nsec %= 1000000000L;
    return t;
}

static int adder(void *arg)
{
    call_once(&once, init);
    for (int i = 0; i < 1000; i++) {
        mtx_lock(&m);
        counter++;
        mtx_unlock(&m);
        if (i % 100 == 0)
            thrd_yield();
    }
    if (arg)
        thrd_exit(11);
    return 22;
}

/* Holds m until told, through g and cv, to let it go. */
static int holder(void *arg)
{
    (void)arg;
    mtx_lock(&m);
    mtx_lock(&g);
    holding = 1;
    cnd_broadcast(&cv);
    while (!release_it)
        cnd_wait(&cv, &g);
    mtx_unlock(&g);
    mtx_unlock(&m);
    return 0;
}

int main(void)
{
    thrd_t a, b, h;
    int ra = 0, rb = 0;
    mtx_init(&m, mtx_timed);
    mtx_init(&g, mtx_plain);
    cnd_init(&cv);
    thrd_create(&a, adder, &m);
    thrd_create(&b, adder, NULL);
    thrd_join(a, &ra);
    thrd_join(b, &rb);
    printf("counter %d inits %d results %d %d\n", counter, inits, ra, rb);

    thrd_create(&h, holder, NULL);
    mtx_lock(&g);
    while (!holding)
        cnd_wait(&cv, &g);
    mtx_unlock(&g);
    printf("trylock held: %d\n", mtx_trylock(&m));
    struct timespec t = in_ms(5);
    printf("timedlock held: %d\n", mtx_timedlock(&m, &t));
    mtx_lock(&g);
    t = in_ms(5);
    printf("cnd_timedwait: %d\n", cnd_timedwait(&cv, &g, &t));
    release_it = 1;
    cnd_broadcast(&cv);
    mtx_unlock(&g);
    t = in_ms(10000);
    printf("timedlock released: %d\n", mtx_timedlock(&m, &t));
    mtx_unlock(&m);
    thrd_join(h, NULL);
    return 0;
}
