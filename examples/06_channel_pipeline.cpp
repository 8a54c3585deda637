// SPDX-License-Identifier: MIT
// 06_channel_pipeline: a pipeline of tasks joined by channels. A producer sends numbers into a
// small `jobs` channel; N workers take them, "process" each (a 1 ms sleep stands for a call to
// some service) and send the result into a `results` channel; a collector adds the results up.
// close() is the end-of-input signal: receivers drain what is queued, then get std::nullopt.
// The jobs channel holds 4 items: when it is full the producer's send waits (backpressure), so
// the producer can never run far ahead of the workers, whatever the number of items.
// Run: build/examples/06_channel_pipeline [items] [workers]   (default: 200 4)
#include <tandem/tandem.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <vector>

using namespace std::chrono_literals;

tandem::task<> produce(tandem::channel<long>* jobs, long items, long* waits) {
    for (long i = 1; i <= items; ++i) {
        if (jobs->size() == jobs->capacity()) ++*waits;  // full: this send will wait
        co_await jobs->send(i);
    }
    jobs->close();  // no more input: workers finish once the channel is drained
}

tandem::task<> work(tandem::channel<long>* jobs, tandem::channel<long>* results) {
    while (auto n = co_await jobs->receive()) {  // std::nullopt: closed and drained
        co_await tandem::sleep_for(1ms);
        co_await results->send(*n * *n);
    }
}

tandem::task<> work_then_close(tandem::channel<long>* jobs, tandem::channel<long>* results,
                               long workers) {
    std::vector<tandem::task<>> all;
    for (long w = 0; w < workers; ++w) all.push_back(work(jobs, results));
    co_await tandem::when_all(std::move(all));
    results->close();  // the last worker is done: no more results
}

tandem::task<long> collect(tandem::channel<long>* results, long* count) {
    long sum = 0;
    while (auto r = co_await results->receive()) {
        sum += *r;
        ++*count;
    }
    co_return sum;
}

tandem::task<bool> pipeline(long items, long workers) {
    tandem::channel<long> jobs(4), results(16);
    long waits = 0, count = 0;
    const auto start = std::chrono::steady_clock::now();
    auto [produced, worked, sum] = co_await tandem::when_all(
        produce(&jobs, items, &waits), work_then_close(&jobs, &results, workers),
        collect(&results, &count));
    const double ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();

    const long expected = items * (items + 1) * (2 * items + 1) / 6;  // 1^2 + 2^2 + ... + n^2
    std::printf("%ld items through %ld workers in %.0f ms (one worker: about %ld ms)\n", count,
                workers, ms, items);
    std::printf("sum of squares: %ld (expected %ld)\n", sum, expected);
    std::printf("backpressure: the producer found the jobs channel full %ld times and waited\n",
                waits);
    const bool ok = count == items && sum == expected && (waits > 0 || items <= 4 + workers);
    co_return ok;
}

int main(int argc, char** argv) {
    const long items = argc > 1 ? std::atol(argv[1]) : 200;
    const long workers = argc > 2 ? std::atol(argv[2]) : 4;
    try {
        const bool ok = tandem::run(pipeline(items, workers));
        std::printf("%s\n", ok ? "ok" : "FAILED");
        return ok ? 0 : 1;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
}
