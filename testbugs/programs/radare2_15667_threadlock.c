/*
 * Models radare2 pull request #15667 (RThreadLock.refs is decremented after
 * the mutex is released): r_th_lock_leave() unlocks the mutex and then does
 * refs--, racing with r_th_lock_enter() of another thread, which does
 * refs++ under the mutex.  Updates are lost and the lock's reference count
 * no longer returns to zero; the program prints the final count, which is
 * wrong ("refs=-1" or "refs=1") instead of "refs=0".
 *
 * usage: radare2_15667_threadlock [enters] [window]
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

struct r_th_lock { pthread_mutex_t lock; volatile int refs; };

static struct r_th_lock th_lock = { PTHREAD_MUTEX_INITIALIZER, 0 };
static long work_done;
static int enters = 300, window = 0;

static void spin(long n) { for (volatile long i = 0; i < n; i++) ; }

static void r_th_lock_enter(struct r_th_lock *t)
{
    pthread_mutex_lock(&t->lock);
    t->refs = t->refs + 1;                           /* RACE */
}

static void r_th_lock_leave(struct r_th_lock *t)
{
    pthread_mutex_unlock(&t->lock);
    int r = t->refs;                                 /* RACE */
    spin(window);
    t->refs = r - 1;                                 /* RACE */
}

static void *task(void *arg)
{
    (void)arg;
    for (int i = 0; i < enters; i++) {
        r_th_lock_enter(&th_lock);
        work_done++;
        spin(30);
        r_th_lock_leave(&th_lock);
        spin(400);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    pthread_t t[2];
    if (argc > 1) enters = atoi(argv[1]);
    if (argc > 2) window = atoi(argv[2]);
    for (int i = 0; i < 2; i++) pthread_create(&t[i], NULL, task, NULL);
    for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    printf("work=%ld\n", work_done);
    printf("refs=%d\n", th_lock.refs);
    return 0;
}
