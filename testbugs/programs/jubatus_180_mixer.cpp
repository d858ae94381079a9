/*
 * Models jubatus issue #180 (linear_mixer and server_impl deadlock): the
 * server's update path takes the model write lock and then calls
 * mixer::updated(), which takes the mixer lock; the mixer thread's
 * get_diff/put_diff takes the mixer lock and then the model lock.  The
 * mixer decides to mix by reading the update counter without any lock, so
 * it runs concurrently with updates; when the two acquisitions interleave,
 * both threads wait for each other forever (deadlock / hang).
 *
 * usage: jubatus_180_mixer [updates] [window]
 */
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <thread>

static std::mutex model_mutex;   // JWLOCK__(p)
static std::mutex mixer_mutex;   // linear_mixer::m_
static volatile int counter;     // updates since the last mix, read unlocked
static long model_version;
static int updates = 400, window = 0, threshold = 16;

static void spin(long n) { for (volatile long i = 0; i < n; i++) ; }

struct linear_mixer {
    long mixed = 0;
    void updated() {
        std::lock_guard<std::mutex> g(mixer_mutex);            /* RACE */
        counter = counter + 1;                                 /* RACE */
    }
    void mix() {
        std::lock_guard<std::mutex> g(mixer_mutex);
        spin(window);                                          // collects diffs
        std::lock_guard<std::mutex> m(model_mutex);            /* RACE */
        model_version++;                                       // put_diff
        counter = 0;
        mixed++;
    }
};

static linear_mixer mixer;

static void server_update()
{
    for (int i = 0; i < updates; i++) {
        spin(300);                                             // parses the RPC
        std::lock_guard<std::mutex> m(model_mutex);
        spin(20);                                              // trains the model
        mixer.updated();
    }
}

static void mixer_loop()
{
    for (int i = 0; i < updates; i++) {
        if (counter >= threshold)                              /* RACE */
            mixer.mix();
        spin(300);
    }
}

int main(int argc, char **argv)
{
    if (argc > 1) updates = std::atoi(argv[1]);
    if (argc > 2) window = std::atoi(argv[2]);
    std::thread s(server_update), m(mixer_loop);
    s.join();
    m.join();
    std::printf("model_version=%ld mixes=%ld\n", model_version, mixer.mixed);
    return 0;
}
