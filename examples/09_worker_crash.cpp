// SPDX-License-Identifier: MIT
// 09_worker_crash: a worker process that dies takes only its own job with it. Eight jobs go to
// a pool of two workers: one kills its worker on the spot (SIGKILL stands for any fatal bug: a
// segfault, abort(), the OOM killer), one runs past its `timeout`. Exactly those two fail, with
// worker_crashed (naming the signal) and timed_out (its worker is killed); the other six
// complete. The pool replaces both workers, and new jobs run as before.
// Run: build/examples/09_worker_crash
#include <tandem/tandem.hpp>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

using namespace std::chrono_literals;

// The jobs, plain functions run in a worker process.
long square(long x) {
    return x * x;
}
long kill_my_worker(long x) {
    std::raise(SIGKILL);  // this process ends here
    return x;
}
long spin_for_ms(long ms) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
    long spins = 0;
    while (std::chrono::steady_clock::now() < until) ++spins;
    return spins;
}

enum class ended { value, crashed, timed_out };
struct outcome {
    ended how;
    std::string text;
};

// Awaits one job and says how it ended.
tandem::task<outcome> outcome_of(tandem::task<long> job) {
    try {
        const long v = co_await std::move(job);
        co_return outcome{ended::value, "returned " + std::to_string(v)};
    } catch (const tandem::worker_crashed& e) {
        co_return outcome{ended::crashed, std::string("worker_crashed: ") + e.what()};
    } catch (const tandem::timed_out& e) {
        co_return outcome{ended::timed_out, std::string("timed_out: ") + e.what()};
    }
}

void print_stats(const char* when, const tandem::process_pool_stats& s) {
    std::printf("%s: %u of %u workers alive, %llu crashes, %llu killed, %llu replacements\n", when,
                s.workers_alive, s.workers, static_cast<unsigned long long>(s.crashes),
                static_cast<unsigned long long>(s.kills),
                static_cast<unsigned long long>(s.replacements));
}

tandem::task<bool> demo(tandem::runtime* rt) {
    std::vector<tandem::task<outcome>> jobs;
    for (long i = 0; i < 8; ++i) {
        if (i == 2) {
            jobs.push_back(outcome_of(tandem::offload_to_process(kill_my_worker, i)));
        } else if (i == 5) {  // ten seconds of CPU, but only 200 ms allowed
            jobs.push_back(outcome_of(
                tandem::timeout(200ms, tandem::offload_to_process(spin_for_ms, 10'000L))));
        } else {
            jobs.push_back(outcome_of(tandem::offload_to_process(square, i)));
        }
    }
    const std::vector<outcome> ends = co_await tandem::when_all(std::move(jobs));
    bool ok = true;
    for (std::size_t i = 0; i < ends.size(); ++i) {
        std::printf("job %zu: %s\n", i, ends[i].text.c_str());
        const ended expected = i == 2 ? ended::crashed : i == 5 ? ended::timed_out : ended::value;
        ok = ok && ends[i].how == expected;
    }
    ok = ok && ends[2].text.find("signal 9") != std::string::npos;
    print_stats("after the jobs", rt->processes().stats());

    // Replacements start in the background; wait (up to 5 s) until both are running.
    for (int i = 0; i < 500 && rt->processes().stats().replacements < 2; ++i) {
        co_await tandem::sleep_for(10ms);
    }
    const tandem::process_pool_stats s = rt->processes().stats();
    print_stats("a moment later", s);
    ok = ok && s.crashes == 1 && s.kills == 1 && s.replacements == 2 && s.workers_alive == 2;

    std::vector<tandem::task<long>> more;
    for (long i = 0; i < 20; ++i) more.push_back(tandem::offload_to_process(square, i));
    long sum = 0;
    for (long v : co_await tandem::when_all(std::move(more))) sum += v;
    std::printf("20 new jobs after that: all returned (sum of squares 0..19 = %ld)\n", sum);
    ok = ok && sum == 2470;
    co_return ok;
}

int main() {
    try {
        tandem::runtime_options options;
        options.processes.workers = 2;
        tandem::runtime rt(options);
        const bool ok = rt.block_on(demo(&rt));
        std::printf("%s\n", ok ? "ok" : "FAILED");
        return ok ? 0 : 1;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
}
