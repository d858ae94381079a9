/*
 * Models Uros issue #377 (libpthreads: the free_stacks list is pushed and
 * popped without a lock): when threads are created and destroyed on two
 * cores at once, the unlocked pop in allocate_stack can hand the same stack
 * to two threads, whose frames then overwrite each other.  Here each thread
 * "creation" pops a stack, stamps it with its owner and checks the stamp
 * before giving it back; a stack handed out twice fails the assertion.
 *
 * usage: uros_377_freestacks [creations] [window]
 *   creations: stack allocations per thread (more = more failures)
 *   window:    work between reading the list head and unlinking it
 */
#include <assert.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

struct stack { struct stack *next; volatile long owner; char frame[64]; };

static struct stack stacks[8];
static struct stack *volatile free_stacks;
static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER; /* guards `created` only */
static long created;
static int creations = 200, window = 10;

static void spin(long n) { for (volatile long i = 0; i < n; i++) ; }

static struct stack *allocate_stack(void)
{
    struct stack *s = free_stacks;     /* RACE */
    if (s == NULL) return NULL;
    spin(window);
    free_stacks = s->next;             /* RACE */
    return s;
}

static void free_stack(struct stack *s)
{
    s->next = free_stacks;             /* RACE */
    free_stacks = s;                   /* RACE */
}

static void *creator(void *arg)
{
    long me = (long)arg;
    for (int i = 0; i < creations; i++) {
        struct stack *s = allocate_stack();
        if (s == NULL) continue;
        s->owner = me;
        pthread_mutex_lock(&pool_lock);
        created++;
        pthread_mutex_unlock(&pool_lock);
        spin(200);                      /* the new thread runs on its stack */
        assert(s->owner == me && "allocate_stack handed one stack to two threads");
        s->owner = 0;
        free_stack(s);
        spin(400);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    pthread_t t[2];
    if (argc > 1) creations = atoi(argv[1]);
    if (argc > 2) window = atoi(argv[2]);
    for (int i = 0; i < 8; i++) free_stack(&stacks[i]);
    for (long i = 0; i < 2; i++) pthread_create(&t[i], NULL, creator, (void *)(i + 1));
    for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    printf("created=%ld\n", created);
    return 0;
}
