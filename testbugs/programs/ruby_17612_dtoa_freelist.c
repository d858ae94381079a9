/*
 * Models Ruby bug #17612 (dtoa's Bigint freelist is not Ractor-safe; the
 * same code copied into bigdecimal crashed with four Ractors converting
 * floats, ruby/bigdecimal issue #527): Balloc takes a Bigint of size class
 * k off freelist[k] by reading the list head and then storing head->next,
 * with no lock (the interpreter lock once made that safe; Ractors convert
 * in parallel). Two threads that read the head before either stores take
 * the same Bigint: each writes its number into it, the divisions of the
 * digit loop interleave, and a conversion returns digits that are not its
 * number's.
 *
 * usage: ruby_17612_dtoa_freelist [conversions] [window]
 *   conversions: floats converted per thread (more = more failures)
 *   window:      work between reading the head and unlinking it
 */
#include <assert.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KMAX 3
#define PER_CLASS 4

typedef struct Bigint {
    struct Bigint *next;
    int k, wds;
    unsigned long x[1 << KMAX];
} Bigint;

static Bigint private_mem[KMAX + 1][PER_CLASS];
static Bigint *freelist[KMAX + 1];
static pthread_mutex_t vm_lock = PTHREAD_MUTEX_INITIALIZER; /* guards `strings` only */
static long strings;
static int conversions = 300, window = 10;

static void spin(long n) { for (volatile long i = 0; i < n; i++) ; }

static Bigint *Balloc(int k)
{
    Bigint *rv = freelist[k];                       /* RACE */
    if (rv == NULL) {
        fprintf(stderr, "Balloc: size class %d exhausted\n", k);
        exit(2);
    }
    spin(window);
    freelist[k] = rv->next;                         /* RACE */
    rv->k = k;
    rv->wds = 0;
    return rv;
}

static void Bfree(Bigint *v)
{
    v->next = freelist[v->k];                       /* RACE */
    freelist[v->k] = v;                             /* RACE */
}

/* The decimal digits of `mantissa` into `out`: b holds the number, S the
 * radix, as dtoa's bigint division loop would. */
static void dtoa_digits(unsigned long mantissa, char *out)
{
    Bigint *b = Balloc(1);
    b->x[0] = mantissa;
    b->wds = 1;
    Bigint *S = Balloc(2);
    S->x[0] = 10;
    S->wds = 1;
    pthread_mutex_lock(&vm_lock);                   /* rb_str_new under the VM lock */
    strings++;
    pthread_mutex_unlock(&vm_lock);
    char tmp[32];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + b->x[0] % S->x[0]);
        b->x[0] /= S->x[0];
        spin(40);
    } while (b->x[0] != 0 && n < 31);
    for (int i = 0; i < n; i++) out[i] = tmp[n - 1 - i];
    out[n] = '\0';
    Bfree(S);
    Bfree(b);
}

static void *ractor(void *arg)
{
    unsigned long mantissa = (unsigned long)arg;
    char expected[32], got[32];
    snprintf(expected, sizeof expected, "%lu", mantissa);
    for (int i = 0; i < conversions; i++) {
        dtoa_digits(mantissa, got);
        assert(strcmp(got, expected) == 0 && "dtoa returned another conversion's digits");
        spin(300);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    static const unsigned long mantissas[2] = {314159265, 271828182};
    pthread_t t[2];
    if (argc > 1) conversions = atoi(argv[1]);
    if (argc > 2) window = atoi(argv[2]);
    for (int k = 0; k <= KMAX; k++)
        for (int i = 0; i < PER_CLASS; i++) {
            private_mem[k][i].k = k;
            Bfree(&private_mem[k][i]);
        }
    for (int i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, ractor, (void *)mantissas[i]);
    for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    printf("strings=%ld\n", strings);
    return 0;
}
