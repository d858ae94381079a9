/*
 * Models cellumation/cm_executors issue #5 ("Race condition in
 * ClockConditionalVariable leads to crash when attempting to notify on
 * expired condition variable", fixed by PR #6): the executor's wait for
 * work creates a fresh wake-up object for each wait (clock_ =
 * make_shared<ClockConditionalVariable>()), waits on it with a deadline
 * (condition_variable::wait_until on the steady clock, which libstdc++
 * implements with pthread_cond_clockwait) and drops it after the wait
 * (clock_.reset()), all under pred_mutex_.  A thread that adds work sets
 * the predicate under pred_mutex_ but then tests and uses clock_ after
 * releasing it: `if (clock_) clock_->notify_one();`.  When the executor's
 * wait returns (a timeout, or the previous wake-up) in between, it resets
 * clock_ and the wake-up object is destroyed while the notifier calls into
 * it.  Here the destroyed object is poisoned and notify_one checks it (as
 * a sanitizer would), so the use-after-free is an assertion failure.
 *
 * usage: cm_executors_5_clock_cv [jobs] [window]
 *   window: the notifier's work between its test of clock_ and the call
 *           (larger = more failures)
 */
#include <cassert>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <thread>

static void spin(long n) { for (volatile long i = 0; i < n; i++) ; }

// rclcpp::ClockConditionalVariable: a condition variable and its own lock.
struct ClockConditionalVariable {
    std::mutex m;
    std::condition_variable cv;
    bool notified = false;
    volatile long alive = 0x600d;
    ~ClockConditionalVariable() { alive = 0xdead; }             /* RACE */
    template <class Pred>
    void wait_until(std::unique_lock<std::mutex> &lock, std::chrono::steady_clock::time_point t,
                    Pred pred) {
        cv.wait_until(lock, t, pred);
    }
    void notify_one() {
        assert(alive == 0x600d && "notified a clock condition variable that was already destroyed"); /* RACE */
        {
            std::lock_guard<std::mutex> g(m);
            notified = true;
        }
        cv.notify_one();
    }
};

struct Executor {
    std::mutex pred_mutex_;
    std::shared_ptr<ClockConditionalVariable> clock_;
    ClockConditionalVariable *volatile current = nullptr;   // clock_.get(), as the notifier sees it
    int work_ = 0;
    bool shutdown_ = false;
    long done = 0;

    // The executor thread: waits for work with a deadline, one wake-up
    // object per wait.
    void spin_loop() {
        for (;;) {
            std::unique_lock<std::mutex> lock(pred_mutex_);
            clock_ = std::make_shared<ClockConditionalVariable>();
            current = clock_.get();
            clock_->wait_until(lock, std::chrono::steady_clock::now() + std::chrono::milliseconds(2),
                               [this] { return work_ > 0 || shutdown_; });
            current = nullptr;                                  /* RACE */
            clock_.reset();
            if (work_ == 0 && shutdown_)
                return;
            int n = work_;
            work_ = 0;
            lock.unlock();
            done += n;
            spin(200);                                          // runs the callbacks
        }
    }

    // Another thread adds work and wakes the executor (the non-shutdown
    // case of the issue): the test and the call are outside the lock.
    void add_work(long window) {
        {
            std::lock_guard<std::mutex> g(pred_mutex_);
            work_++;
        }
        ClockConditionalVariable *c = current;                  /* RACE */
        if (c) {
            spin(window);
            c->notify_one();
        }
    }

    void stop() {
        std::lock_guard<std::mutex> g(pred_mutex_);
        shutdown_ = true;
        if (current)
            current->notify_one();
    }
};

int main(int argc, char **argv)
{
    int jobs = argc > 1 ? std::atoi(argv[1]) : 200;
    long window = argc > 2 ? std::atol(argv[2]) : 0;
    Executor ex;
    std::thread executor([&] { ex.spin_loop(); });
    std::thread producer([&] {
        for (int i = 0; i < jobs; i++) {
            ex.add_work(window);
            spin(300);
        }
    });
    producer.join();
    ex.stop();
    executor.join();
    std::printf("jobs=%d done=%ld\n", jobs, ex.done);
    return ex.done == jobs ? 0 : 1;
}
