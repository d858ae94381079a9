/*
 * Models AprilRobotics/apriltag pull request #339 ("Fix spurious wake-ups
 * and worker threads initialization in workerpool", issue #70): a worker
 * waits for work with `while (taskspos == ntasks) wait(startcond)`, but the
 * application adds tasks (workerpool_add_task, which may grow the task
 * array with realloc) without the pool's mutex, before it calls
 * workerpool_run. A worker that checks the predicate while tasks are being
 * added — one that has just started, or is woken spuriously — takes a
 * pointer into the task array, unlocks, and uses it after the next add has
 * moved the array: it reads a task from freed memory ("random segfaults").
 *
 * Here each image gets its own pool of NWORKERS threads; the freed array is
 * poisoned, and a worker asserts that the task it took is a real one.
 *
 * usage: apriltag_339_workerpool [images] [prepare]
 *   prepare: work the application does before adding each task (a longer
 *            one lets a starting worker in between two adds)
 */
#include <assert.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NWORKERS 2
#define NTASKS 12
#define TASK_MAGIC 0x7a5cL

struct task {
    long magic;
    long arg;
};

struct workerpool {
    pthread_mutex_t mutex;
    pthread_cond_t startcond, endcond;
    struct task *tasks;  /* grown by add_task without the mutex */
    int ntasks, alloc;
    int taskspos, end_count, quit;
    long done;
};

static int images = 200, window = 200, prepare = 2000;

static void spin(long n) { for (volatile long i = 0; i < n; i++) ; }

static void add_task(struct workerpool *wp, long arg)
{
    if (wp->ntasks == wp->alloc) {                           /* RACE */
        int alloc = wp->alloc ? 2 * wp->alloc : 1;
        struct task *t = malloc(alloc * sizeof *t);
        memcpy(t, wp->tasks, wp->ntasks * sizeof *t);
        if (wp->tasks)
            memset(wp->tasks, 0xdb, wp->alloc * sizeof *t); /* free() */
        free(wp->tasks);
        wp->tasks = t;                                       /* RACE */
        wp->alloc = alloc;
    }
    wp->tasks[wp->ntasks].magic = TASK_MAGIC;
    wp->tasks[wp->ntasks].arg = arg;
    wp->ntasks++;                                            /* RACE */
}

static void *worker(void *p)
{
    struct workerpool *wp = p;
    for (;;) {
        pthread_mutex_lock(&wp->mutex);
        while (wp->taskspos == wp->ntasks && !wp->quit) {   /* RACE */
            wp->end_count++;
            pthread_cond_broadcast(&wp->endcond);
            pthread_cond_wait(&wp->startcond, &wp->mutex);
        }
        if (wp->taskspos == wp->ntasks) {                       /* RACE */
            pthread_mutex_unlock(&wp->mutex);
            return NULL;
        }
        struct task *task = &wp->tasks[wp->taskspos++];      /* RACE */
        pthread_mutex_unlock(&wp->mutex);
        spin(window);
        assert(task->magic == TASK_MAGIC && "worker ran a task from a freed task array");
        pthread_mutex_lock(&wp->mutex);
        wp->done += task->arg;
        pthread_mutex_unlock(&wp->mutex);
    }
}

/* One image: a pool (workerpool_create), its tasks, one run
 * (workerpool_run), the pool destroyed. */
static long detect(int image)
{
    struct workerpool *wp = calloc(1, sizeof *wp);
    pthread_t t[NWORKERS];
    pthread_mutex_init(&wp->mutex, NULL);
    pthread_cond_init(&wp->startcond, NULL);
    pthread_cond_init(&wp->endcond, NULL);
    for (int i = 0; i < NWORKERS; i++)
        pthread_create(&t[i], NULL, worker, wp);
    for (int i = 0; i < NTASKS; i++) {
        spin(prepare); /* cuts the image into the task's region */
        add_task(wp, image + i);
    }
    pthread_mutex_lock(&wp->mutex);
    wp->end_count = 0;
    pthread_cond_broadcast(&wp->startcond);
    while (wp->end_count < NWORKERS)
        pthread_cond_wait(&wp->endcond, &wp->mutex);
    wp->quit = 1;
    pthread_cond_broadcast(&wp->startcond);
    pthread_mutex_unlock(&wp->mutex);
    for (int i = 0; i < NWORKERS; i++)
        pthread_join(t[i], NULL);
    long done = wp->done;
    free(wp->tasks);
    free(wp);
    return done;
}

int main(int argc, char **argv)
{
    long total = 0;
    if (argc > 1)
        images = atoi(argv[1]);
    if (argc > 2)
        prepare = atoi(argv[2]);
    for (int i = 0; i < images; i++)
        total += detect(i);
    printf("images=%d total=%ld\n", images, total);
    return 0;
}
