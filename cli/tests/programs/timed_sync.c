/*
 * Every timed and clock-based wait of pthreads and semaphores, each once
 * timing out and once succeeding: pthread_mutex_clocklock,
 * pthread_rwlock_{timed,clock}{rd,wr}lock, sem_clockwait and
 * pthread_cond_clockwait (what C++'s wait_for, try_lock_for and
 * try_lock_shared_for call), and the joins that may fail
 * (pthread_tryjoin_np, pthread_timedjoin_np, pthread_clockjoin_np).  A
 * helper thread holds each object while the
 * main thread's short wait times out, then releases it.  Prints each
 * result; the output does not depend on timing.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

static pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
static pthread_rwlock_t rw = PTHREAD_RWLOCK_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static sem_t held, go, tokens, finish;
static int flag;

static struct timespec in_ms(clockid_t clock, long ms)
{
    struct timespec t;
    clock_gettime(clock, &t);
    t.tv_sec += ms / 1000;
    t.tv_nsec += (ms % 1000) * 1000000L;
    if (t.tv_nsec >= 1000000000L) { t.tv_sec++; t.tv_nsec -= 1000000000L; }
    return t;
}

static void *helper(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&m);
    sem_post(&held);
    sem_wait(&go);
    usleep(20000);
    pthread_mutex_unlock(&m);

    pthread_rwlock_wrlock(&rw);
    sem_post(&held);
    sem_wait(&go);
    usleep(20000);
    pthread_rwlock_unlock(&rw);

    sem_wait(&go);
    usleep(20000);
    sem_post(&tokens);

    sem_wait(&go);
    usleep(20000);
    pthread_mutex_lock(&m);
    flag = 1;
    pthread_cond_signal(&cv);
    pthread_mutex_unlock(&m);
    return NULL;
}

static void *sleeper(void *arg)
{
    (void)arg;
    sem_wait(&finish);
    return (void *)7;
}

int main(void)
{
    pthread_t t;
    struct timespec ts;
    sem_init(&held, 0, 0);
    sem_init(&go, 0, 0);
    sem_init(&tokens, 0, 0);
    pthread_create(&t, NULL, helper, NULL);

    sem_wait(&held);
    ts = in_ms(CLOCK_MONOTONIC, 5);
    printf("mutex_clocklock short: %d\n", pthread_mutex_clocklock(&m, CLOCK_MONOTONIC, &ts));
    sem_post(&go);
    ts = in_ms(CLOCK_MONOTONIC, 10000);
    printf("mutex_clocklock long: %d\n", pthread_mutex_clocklock(&m, CLOCK_MONOTONIC, &ts));
    pthread_mutex_unlock(&m);

    sem_wait(&held);
    ts = in_ms(CLOCK_MONOTONIC, 5);
    printf("rwlock_clockrdlock short: %d\n", pthread_rwlock_clockrdlock(&rw, CLOCK_MONOTONIC, &ts));
    ts = in_ms(CLOCK_REALTIME, 5);
    printf("rwlock_timedrdlock short: %d\n", pthread_rwlock_timedrdlock(&rw, &ts));
    ts = in_ms(CLOCK_REALTIME, 5);
    printf("rwlock_timedwrlock short: %d\n", pthread_rwlock_timedwrlock(&rw, &ts));
    sem_post(&go);
    ts = in_ms(CLOCK_MONOTONIC, 10000);
    printf("rwlock_clockwrlock long: %d\n", pthread_rwlock_clockwrlock(&rw, CLOCK_MONOTONIC, &ts));
    pthread_rwlock_unlock(&rw);
    ts = in_ms(CLOCK_REALTIME, 10000);
    printf("rwlock_timedrdlock free: %d\n", pthread_rwlock_timedrdlock(&rw, &ts));
    pthread_rwlock_unlock(&rw);

    ts = in_ms(CLOCK_MONOTONIC, 5);
    int r = sem_clockwait(&tokens, CLOCK_MONOTONIC, &ts);
    printf("sem_clockwait short: %d errno %s\n", r, r ? (errno == ETIMEDOUT ? "ETIMEDOUT" : "other") : "-");
    sem_post(&go);
    ts = in_ms(CLOCK_MONOTONIC, 10000);
    printf("sem_clockwait long: %d\n", sem_clockwait(&tokens, CLOCK_MONOTONIC, &ts));

    pthread_mutex_lock(&m);
    ts = in_ms(CLOCK_MONOTONIC, 5);
    printf("cond_clockwait short: %d\n", pthread_cond_clockwait(&cv, &m, CLOCK_MONOTONIC, &ts));
    sem_post(&go);
    while (!flag) {
        ts = in_ms(CLOCK_MONOTONIC, 10000);
        pthread_cond_clockwait(&cv, &m, CLOCK_MONOTONIC, &ts);
    }
    printf("cond_clockwait long: flag %d\n", flag);
    pthread_mutex_unlock(&m);

    pthread_join(t, NULL);

    void *res = NULL;
    sem_init(&finish, 0, 0);
    pthread_create(&t, NULL, sleeper, NULL);
    printf("tryjoin running: %d\n", pthread_tryjoin_np(t, &res));
    ts = in_ms(CLOCK_REALTIME, 5);
    printf("timedjoin short: %d\n", pthread_timedjoin_np(t, &res, &ts));
    sem_post(&finish);
    ts = in_ms(CLOCK_MONOTONIC, 10000);
    int joined = pthread_clockjoin_np(t, &res, CLOCK_MONOTONIC, &ts);
    printf("clockjoin long: %d result %ld\n", joined, (long)res);
    return 0;
}
