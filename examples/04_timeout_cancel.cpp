// SPDX-License-Identifier: MIT
// 04_timeout_cancel: the three ways to stop a task early. `timeout` cancels a task that takes
// too long and throws timed_out; `when_any` returns the first task to finish after cancelling
// and awaiting the others; `with_stop_token` lets any thread (here a plain std::jthread) cancel a
// task through a std::stop_source. A cancelled task sees tandem::operation_cancelled thrown from
// the co_await it was suspended in: it may clean up, then lets the exception go on.
// Run: build/examples/04_timeout_cancel
#include <tandem/tandem.hpp>

#include <chrono>
#include <cstdio>
#include <exception>
#include <stop_token>
#include <string>
#include <thread>
#include <variant>

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

double ms_since(clock_type::time_point start) {
    return std::chrono::duration<double, std::milli>(clock_type::now() - start).count();
}

// Sleeps, then answers. If it is cancelled meanwhile, it says so, records it and rethrows:
// cancellation is an outcome to pass on, not an error to swallow.
tandem::task<std::string> answer_after(std::chrono::milliseconds delay, std::string answer,
                                       bool* was_cancelled) {
    try {
        co_await tandem::sleep_for(delay);
    } catch (const tandem::operation_cancelled&) {
        std::printf("  (%s: cancelled while sleeping, cleaning up)\n", answer.c_str());
        *was_cancelled = true;
        throw;
    }
    co_return answer;
}

tandem::task<bool> timeout_demo() {
    bool cancelled = false;
    const auto start = clock_type::now();
    try {
        (void)co_await tandem::timeout(50ms, answer_after(10s, "slow", &cancelled));
        co_return false;  // not reached: 10 s is more than 50 ms
    } catch (const tandem::timed_out& e) {
        std::printf("timeout: %s after %.0f ms, not 10 s\n", e.what(), ms_since(start));
    }
    // Within its time, timeout just returns the value.
    bool unused = false;
    const std::string quick = co_await tandem::timeout(1s, answer_after(10ms, "quick", &unused));
    std::printf("timeout: a task that finishes in time returns its value: %s\n", quick.c_str());
    const bool ok = cancelled && quick == "quick" && ms_since(start) < 5000;
    co_return ok;
}

tandem::task<bool> when_any_demo() {
    bool fast_cancelled = false, slow_cancelled = false;
    auto winner = co_await tandem::when_any(answer_after(20ms, "fast", &fast_cancelled),
                                            answer_after(10s, "slow", &slow_cancelled));
    // The loser has been cancelled and has finished: nothing of it runs any more.
    std::printf("when_any: task %zu won with \"%s\"; the loser was cancelled: %s\n", winner.index(),
                std::get<0>(winner).c_str(), slow_cancelled ? "yes" : "no");
    co_return winner.index() == 0 && slow_cancelled && !fast_cancelled;
}

tandem::task<bool> stop_token_demo() {
    std::stop_source stop;
    const auto start = clock_type::now();
    // Any thread may ask: here a std::jthread (a std::thread that joins when it goes out of
    // scope), 50 ms from now. The request reaches the task on its own loop.
    std::jthread canceller([stop]() mutable {
        std::this_thread::sleep_for(50ms);
        stop.request_stop();
    });
    bool cancelled = false;
    try {
        (void)co_await tandem::with_stop_token(stop.get_token(),
                                               answer_after(10s, "sleeper", &cancelled));
        co_return false;  // not reached: the thread stops it long before
    } catch (const tandem::operation_cancelled&) {
        std::printf("with_stop_token: another thread cancelled the task after %.0f ms\n",
                    ms_since(start));
    }
    const bool ok = cancelled && ms_since(start) < 5000;
    co_return ok;
}

tandem::task<bool> all_demos() {
    const bool a = co_await timeout_demo();
    const bool b = co_await when_any_demo();
    const bool c = co_await stop_token_demo();
    const bool ok = a && b && c;
    co_return ok;
}

int main() {
    try {
        const bool ok = tandem::run(all_demos());
        std::printf("%s\n", ok ? "ok" : "FAILED");
        return ok ? 0 : 1;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
}
