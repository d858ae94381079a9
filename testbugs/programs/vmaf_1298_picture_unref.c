/*
 * Models Netflix vmaf's picture double release (PR #1298, "fix crash when
 * vmaf_picture_unref"; the same test looked at again in PR #1368):
 * vmaf_picture_unref() decremented a picture's reference count with an
 * atomic fetch-and-decrement, then loaded the count again in a separate
 * step and released the picture when it read zero.  Two feature extractors
 * of the thread pool finishing with one picture at once can both read
 * zero, and both release it.
 *
 * Here the main thread reads each frame into a new picture and queues one
 * job per feature extractor for it; two pool threads run the jobs and
 * unref the picture.  Releasing a picture hands its buffer back to the
 * allocator, which checks (as glibc's free does) that the buffer was in
 * use.
 *
 * usage: vmaf_1298_picture_unref [frames] [window]
 */
#include <assert.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#define MAX_FRAMES 4096
#define EXTRACTORS 2
#define QUEUE 8

enum { PIC_FREE, PIC_IN_USE };
struct picture { int ref; int state; int frame; unsigned char data[64]; };
struct job { struct picture *pic; int feature; };

static struct picture pictures[MAX_FRAMES];

static struct job queue[QUEUE];
static int head, count, done;
static pthread_mutex_t queue_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t queue_cond = PTHREAD_COND_INITIALIZER;
static double score[EXTRACTORS];
static int frames = 200, window = 0;

static void spin(long n) { for (volatile long i = 0; i < n; i++) ; }

static struct picture *picture_alloc(int frame)
{
    struct picture *pic = &pictures[frame];
    pic->state = PIC_IN_USE;
    return pic;
}

static void picture_release(struct picture *pic)
{
    int was = __atomic_exchange_n(&pic->state, PIC_FREE, __ATOMIC_ACQ_REL);
    assert(was == PIC_IN_USE && "picture released twice");
}

static void picture_unref(struct picture *pic)
{
    __atomic_fetch_sub(&pic->ref, 1, __ATOMIC_ACQ_REL);       /* RACE */
    spin(window);
    if (__atomic_load_n(&pic->ref, __ATOMIC_ACQUIRE) == 0)    /* RACE */
        picture_release(pic);
}

static void submit(struct picture *pic, int feature)
{
    pthread_mutex_lock(&queue_lock);
    while (count == QUEUE)
        pthread_cond_wait(&queue_cond, &queue_lock);
    queue[(head + count) % QUEUE] = (struct job){ pic, feature };
    count++;
    pthread_cond_broadcast(&queue_cond);
    pthread_mutex_unlock(&queue_lock);
}

static void *extractor_thread(void *arg)
{
    double local[EXTRACTORS] = { 0 };
    (void)arg;
    for (;;) {
        pthread_mutex_lock(&queue_lock);
        while (count == 0 && !done)
            pthread_cond_wait(&queue_cond, &queue_lock);
        if (count == 0) {
            pthread_mutex_unlock(&queue_lock);
            break;
        }
        struct job job = queue[head];
        head = (head + 1) % QUEUE;
        count--;
        pthread_cond_broadcast(&queue_cond);
        pthread_mutex_unlock(&queue_lock);

        /* The feature: a weighted sum over the picture's pixels. */
        long sum = 0;
        for (int k = 0; k < (int)sizeof job.pic->data; k++)
            sum += job.pic->data[k] * (k % 7 + job.feature + 1);
        spin((job.pic->frame * 2654435761u >> 20) % 2000);
        local[job.feature] += (double)sum / sizeof job.pic->data;
        picture_unref(job.pic);
    }
    pthread_mutex_lock(&queue_lock);
    for (int e = 0; e < EXTRACTORS; e++)
        score[e] += local[e];
    pthread_mutex_unlock(&queue_lock);
    return NULL;
}

int main(int argc, char **argv)
{
    pthread_t t[EXTRACTORS];
    if (argc > 1) frames = atoi(argv[1]);
    if (argc > 2) window = atoi(argv[2]);
    if (frames > MAX_FRAMES) frames = MAX_FRAMES;
    for (int e = 0; e < EXTRACTORS; e++)
        pthread_create(&t[e], NULL, extractor_thread, NULL);
    for (int f = 0; f < frames; f++) {
        struct picture *pic = picture_alloc(f);
        pic->frame = f;
        for (int k = 0; k < (int)sizeof pic->data; k++)
            pic->data[k] = (unsigned char)(f * 31 + k * 17);
        pic->ref = EXTRACTORS;
        for (int e = 0; e < EXTRACTORS; e++)
            submit(pic, e);
    }
    pthread_mutex_lock(&queue_lock);
    done = 1;
    pthread_cond_broadcast(&queue_cond);
    pthread_mutex_unlock(&queue_lock);
    for (int e = 0; e < EXTRACTORS; e++)
        pthread_join(t[e], NULL);
    printf("frames=%d vif=%.1f adm=%.1f\n", frames, score[0], score[1]);
    return 0;
}
