/*
 * Modelled on Apache Traffic Server pull request #2195 ("Fix race condition in
 * thread startup"): Thread::start() stored the thread's handle as the return
 * value of ink_thread_create(), but the new thread's start-up code already
 * uses that member; a thread that starts before the assignment finds the
 * default value. FRRouting #15699 is the same bug (frr_pthread_run: the new
 * thread names itself with pthread_setname_np(fpt->thread) before the
 * creator stored it, and crashes on a NULL handle).
 *
 * Each event thread names itself through its own Thread object (as
 * ink_set_thread_name did), then runs its share of the events. The creator's
 * wrapper sets up the attributes, creates the thread, cleans up and returns
 * the handle, which start() then stores. A new thread that runs its first
 * lines before that store passes a null handle to pthread_setname_np, which
 * reads the thread descriptor at address 0: SIGSEGV.
 *
 * usage: trafficserver_2195_thread_tid [threads] [startup]
 *   startup: the new thread's work before it names itself (sets up its
 *   event queue); the larger, the rarer the failure
 */
#include <pthread.h>

#include <cstdio>
#include <cstdlib>

static void spin(long n) { for (volatile long i = 0; i < n; i++) ; }

static pthread_mutex_t queue_lock = PTHREAD_MUTEX_INITIALIZER;
static long queued = 4000;
static long startup = 0;

typedef void *(*ThreadFunction)(void *);

/* ink_thread_create: the handle comes back as the return value. */
static pthread_t ink_thread_create(ThreadFunction f, void *arg)
{
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    if (pthread_create(&t, &attr, f, arg) != 0) {
        perror("pthread_create");
        std::exit(1);
    }
    pthread_attr_destroy(&attr);
    return t;
}

class Thread {
public:
    pthread_t tid = 0;
    char name[16] = {0};
    long handled = 0;

    virtual ~Thread() = default;
    virtual void execute() = 0;

    void start(const char *n)
    {
        std::snprintf(name, sizeof name, "%s", n);
        tid = ink_thread_create(spawn_thread_internal, this);   /* RACE */
    }

private:
    static void *spawn_thread_internal(void *a)
    {
        Thread *self = static_cast<Thread *>(a);
        spin(startup);                          /* sets up its event queue */
        pthread_setname_np(self->tid, self->name);              /* RACE */
        self->execute();
        return nullptr;
    }
};

class EThread : public Thread {
public:
    void execute() override
    {
        for (;;) {
            pthread_mutex_lock(&queue_lock);
            bool got = queued > 0;
            if (got) queued--;
            pthread_mutex_unlock(&queue_lock);
            if (!got) return;
            spin(200);                          /* handles the event */
            handled++;
        }
    }
};

int main(int argc, char **argv)
{
    int threads = argc > 1 ? std::atoi(argv[1]) : 4;
    startup = argc > 2 ? std::atol(argv[2]) : 0;
    EThread *ets = new EThread[threads];
    long total = queued;
    for (int i = 0; i < threads; i++) {
        char n[16];
        std::snprintf(n, sizeof n, "[ET_NET %d]", i);
        ets[i].start(n);
    }
    long handled = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(ets[i].tid, nullptr);
        handled += ets[i].handled;
    }
    std::printf("threads=%d events=%ld of %ld\n", threads, handled, total);
    delete[] ets;
    return handled == total ? 0 : 1;
}
