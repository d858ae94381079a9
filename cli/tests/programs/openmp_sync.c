/*
 * OpenMP synchronisation that libgomp implements itself: an unnamed and a
 * named critical section, an omp_lock_t (set, unset, test), an atomic
 * update the processor cannot do in one instruction (a long double, which
 * GCC turns into GOMP_atomic_start/end) and an explicit barrier, in a
 * parallel region of four threads.  Prints totals that do not depend on
 * the schedule.
 */
#include <omp.h>
#include <stdio.h>

int main(void)
{
    long unnamed = 0, named = 0, locked = 0, tested = 0, after_barrier = 0;
    long double atomic_sum = 0;
    int arrived = 0;
    omp_lock_t lock;
    omp_init_lock(&lock);
#pragma omp parallel num_threads(4)
    {
        for (int i = 0; i < 50; i++) {
#pragma omp critical
            unnamed++;
#pragma omp critical(tally)
            named += 2;
            omp_set_lock(&lock);
            locked += 3;
            omp_unset_lock(&lock);
#pragma omp atomic
            atomic_sum += 0.5L;
        }
        while (!omp_test_lock(&lock))
            ;
        tested++;
        omp_unset_lock(&lock);
#pragma omp critical
        arrived++;
#pragma omp barrier
        /* Every thread sees all four arrivals after the barrier. */
#pragma omp critical
        after_barrier += arrived;
    }
    omp_destroy_lock(&lock);
    printf("unnamed %ld named %ld locked %ld tested %ld atomic %.1Lf after_barrier %ld\n",
           unnamed, named, locked, tested, atomic_sum, after_barrier);
    return 0;
}
