// SPDX-License-Identifier: MIT
#pragma once

// Helpers of sync_test.cpp and channel_test.cpp: a runtime whose tasks a test starts on a
// chosen io thread and joins from its own thread (Catch2 is not thread-safe: tasks record,
// the test asserts after joining), parking waiters in a known order, counting the tasks
// inside a critical section, seeds (TANDEM_TEST_SEED=<n> replays one), and a plain thread
// that stops tasks at random moments.

#include <tandem/tandem.hpp>

#include "support.hpp"

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <deque>
#include <exception>
#include <latch>
#include <mutex>
#include <random>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

namespace sync_support {

using loop_ptr = tandem::detail::loop*;

inline tandem::runtime_options options(unsigned io_threads) {
    tandem::runtime_options o;
    o.io_threads = io_threads;
    o.processes.enabled = false;
    return o;
}

/// A runtime whose tasks the test starts on a chosen io thread and joins from its own thread.
/// The runtime is the last member: it goes first, cancelling and finishing whatever still
/// runs (a failed REQUIRE), before the results those tasks write to go.
class io_threads {
public:
    explicit io_threads(unsigned n) : rt_(options(n)) {}

    unsigned count() const noexcept { return rt_.io_threads(); }
    loop_ptr loop(unsigned i) noexcept { return tandem::detail_loop_of(rt_, i % count()); }

    /// Starts `t` on io thread `i % count()`; it runs while the test's thread goes on.
    void start(unsigned i, tandem::task<> t) {
        auto& result = results_.emplace_back();
        tandem::detail::start_root(*loop(i), tandem::detail::blocking_root(std::move(t), &result));
    }

    /// Waits for every started task, then rethrows the first failure.
    void join() {
        std::exception_ptr first;
        for (auto& r : results_) {
            try {
                r.wait();
            } catch (...) {
                if (!first) first = std::current_exception();
            }
        }
        results_.clear();
        if (first) std::rethrow_exception(first);
    }

    /// Runs `t` on io thread `i` and waits for it.
    template <class T>
    T run(unsigned i, tandem::task<T> t) {
        tandem::detail::blocking_result<T> result;
        tandem::detail::start_root(*loop(i), tandem::detail::blocking_root(std::move(t), &result));
        return result.wait();
    }

private:
    std::deque<tandem::detail::blocking_result<void>> results_;
    tandem::runtime rt_;
};

/// As the last child of when_all it runs once every earlier child has run up to its first
/// suspension (when_all starts its children in order, each inline).
inline tandem::task<> count_down(std::latch* l) {
    l->count_down();
    co_return;
}

/// Runs `waiters` on the current loop; counts `parked` down once each of them is suspended
/// in its first wait. Each waiter must wait on a primitive before anything else suspends it.
inline tandem::task<> park_all(std::vector<tandem::task<>> waiters, std::latch* parked) {
    waiters.push_back(count_down(parked));
    co_await tandem::when_all(std::move(waiters));
}

/// Runs `tasks` concurrently on the current loop, started in order, each up to its first
/// suspension before the next starts.
inline tandem::task<> run_all(std::vector<tandem::task<>> tasks) {
    co_await tandem::when_all(std::move(tasks));
}

/// Raises `max` to at least `v`.
inline void raise_max(std::atomic<int>* max, int v) {
    int seen = max->load();
    while (seen < v && !max->compare_exchange_weak(seen, v)) {
    }
}

/// Counts the tasks inside a critical section while it lives; notes an overlap.
class occupancy {
public:
    occupancy(std::atomic<int>* inside, std::atomic<int>* max) : inside_(inside) {
        raise_max(max, inside_->fetch_add(1) + 1);
    }
    ~occupancy() { inside_->fetch_sub(1); }
    occupancy(const occupancy&) = delete;
    occupancy& operator=(const occupancy&) = delete;

private:
    std::atomic<int>* inside_;
};

inline std::uint64_t test_seed() {
    if (const char* s = std::getenv("TANDEM_TEST_SEED"); s != nullptr && *s != '\0') {
        return std::strtoull(s, nullptr, 10);
    }
    return std::random_device{}();
}

inline std::chrono::microseconds random_us(std::mt19937& rng, unsigned max_us) {
    return std::chrono::microseconds(rng() % (max_us + 1));
}

/// Requests stops from a plain thread at random moments: cancellation that arrives on a
/// task's loop from outside (with_stop_token posts it there).
class canceller {
public:
    explicit canceller(std::uint64_t seed) : thread_([this, seed] { run(seed); }) {}
    ~canceller() {
        {
            std::lock_guard lock(mutex_);
            done_ = true;
        }
        cv_.notify_one();
        thread_.join();
    }
    canceller(const canceller&) = delete;
    canceller& operator=(const canceller&) = delete;

    /// A token that this thread stops soon, at a moment of its choosing.
    std::stop_token token() {
        std::stop_source source;
        {
            std::lock_guard lock(mutex_);
            pending_.push_back(source);
        }
        cv_.notify_one();
        return source.get_token();
    }

private:
    void run(std::uint64_t seed) {
        std::mt19937 rng(static_cast<std::uint32_t>(seed));
        std::unique_lock lock(mutex_);
        for (;;) {
            cv_.wait(lock, [this] { return done_ || !pending_.empty(); });
            if (done_) return;
            const std::size_t i = rng() % pending_.size();
            std::stop_source source = pending_[i];
            pending_.erase(pending_.begin() + std::ptrdiff_t(i));
            lock.unlock();
            if (rng() % 2 == 0) std::this_thread::sleep_for(random_us(rng, 100));
            source.request_stop();
            lock.lock();
        }
    }

    std::mutex mutex_;
    std::condition_variable cv_;
    std::deque<std::stop_source> pending_;
    bool done_ = false;
    std::thread thread_;
};

/// Runs the hidden test case `tag` in a fresh copy of this binary with `env`=`what` in its
/// environment (a death test: the child commits one programmer error); returns its wait status
/// and what it wrote (the child sends its stderr to its stdout).
inline int run_child_case(const char* tag, const char* env, const char* what, std::string* output) {
    int fds[2];
    REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
    const std::string marker = std::string(env) + "=" + what;
    const pid_t pid = start_self(tag, marker.c_str(), -1, fds[1]);
    ::close(fds[1]);
    REQUIRE(pid > 0);
    char buf[4096];
    for (;;) {
        const ssize_t n = ::read(fds[0], buf, sizeof buf);
        if (n <= 0) break;
        output->append(buf, std::size_t(n));
    }
    ::close(fds[0]);
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    return status;
}

}  // namespace sync_support
