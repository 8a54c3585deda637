// SPDX-License-Identifier: MIT
// 07_offload_primes: CPU work on other cores without stalling the event loop.
// Counts the primes below N sequentially, then again split into chunks that
// offload_to_process spreads over the worker processes, while a timer on the
// same loop keeps ticking every millisecond (its worst lateness is printed).
// Run: build/examples/07_offload_primes [N]   (default: 10000000)
#include <tandem/tandem.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <vector>

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

// A plain function: it runs in a worker process, found there by its address.
long count_primes(long lo, long hi) {
    long n = 0;
    for (long x = std::max(lo, 2L); x < hi; ++x) {
        bool prime = x == 2 || x % 2 != 0;
        for (long d = 3; prime && d * d <= x; d += 2) prime = x % d != 0;
        n += prime ? 1 : 0;
    }
    return n;
}

// One job per chunk, all at once: the workers count in parallel, the loop stays free.
tandem::task<long> offloaded(long limit, long chunk) {
    std::vector<tandem::task<long>> parts;
    for (long lo = 0; lo < limit; lo += chunk) {
        parts.push_back(tandem::offload_to_process(count_primes, lo, std::min(lo + chunk, limit)));
    }
    long total = 0;
    for (long n : co_await tandem::when_all(std::move(parts))) total += n;
    co_return total;
}

// Ticks every millisecond until *done: the loop stays free while workers compute.
tandem::task<> ticker(const bool* done, double* worst_ms) {
    while (!*done) {
        const auto due = clock_type::now() + 1ms;
        co_await tandem::sleep_until(due);
        *worst_ms = std::max(
            *worst_ms, std::chrono::duration<double, std::milli>(clock_type::now() - due).count());
    }
}

tandem::task<long> offloaded_while_ticking(long limit, double* worst_ms) {
    bool done = false;
    auto work = [](long n, bool* flag) -> tandem::task<long> {
        const long total = co_await offloaded(n, 250'000);
        *flag = true;
        co_return total;
    };
    auto [total, ticks] = co_await tandem::when_all(work(limit, &done), ticker(&done, worst_ms));
    (void)ticks;
    co_return total;
}

int main(int argc, char** argv) {
    const long limit = argc > 1 ? std::atol(argv[1]) : 10'000'000;
    try {
        tandem::runtime rt;  // one io thread, one worker process per core

        auto start = clock_type::now();
        const long sequential = count_primes(0, limit);
        const double seq_ms =
            std::chrono::duration<double, std::milli>(clock_type::now() - start).count();

        double worst_ms = 0;
        start = clock_type::now();
        const long parallel = rt.block_on(offloaded_while_ticking(limit, &worst_ms));
        const double par_ms =
            std::chrono::duration<double, std::milli>(clock_type::now() - start).count();

        std::printf("primes below %ld: %ld sequentially, %ld offloaded\n", limit, sequential,
                    parallel);
        std::printf("sequential:         %8.1f ms\n", seq_ms);
        std::printf(
            "offload_to_process: %8.1f ms  (%.2fx, %u workers; timer late by %.2f ms at worst)\n",
            par_ms, seq_ms / par_ms, rt.processes().stats().workers, worst_ms);
        std::printf("%s\n", sequential == parallel ? "ok" : "FAILED");
        return sequential == parallel ? 0 : 1;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
}
