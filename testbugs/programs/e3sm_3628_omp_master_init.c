/*
 * Models E3SM issue #3628 (fixed by pull request #3974, "Add omp master to
 * a section of code in init that would otherwise have race condition"):
 * inside an OpenMP parallel region every thread resets a shared count
 * (nlev_tom = 0), then the master thread computes it (an `omp master`
 * block, which makes no runtime call) and a barrier follows.  A thread
 * that lags behind the master runs its reset after the master's store,
 * and after the barrier every thread reads 0.  Here the initialisation runs
 * once per element, the check after the barrier asserts the count, and a
 * second barrier keeps the next element's resets after this element's
 * reads.
 *
 * usage: e3sm_3628_omp_master_init [elements] [master_work]
 *   master_work: the master's work before it stores the count (smaller =
 *                more failures)
 */
#include <assert.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

#define NLEV 72

static int nlev_tom;                 /* shared by the whole team */
static long checked;

static void spin(long n) { for (volatile long i = 0; i < n; i++) ; }

/* The master's part: counts the levels above the tropopause. */
static int count_levels(long work)
{
    spin(work);
    return NLEV;
}

int main(int argc, char **argv)
{
    int elements = argc > 1 ? atoi(argv[1]) : 20;
    long master_work = argc > 2 ? atol(argv[2]) : 20000;
#pragma omp parallel num_threads(3)
    {
        for (int e = 0; e < elements; e++) {
            nlev_tom = 0;                                   /* RACE */
#pragma omp master
            nlev_tom = count_levels(master_work);           /* RACE */
#pragma omp barrier
            int n = nlev_tom;                               /* RACE */
            assert(n == NLEV && "nlev_tom reset by a thread that lagged behind the master");
#pragma omp atomic
            checked++;
#pragma omp barrier
        }
    }
    printf("elements=%d checked=%ld\n", elements, checked);
    return 0;
}
