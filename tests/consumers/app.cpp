// SPDX-License-Identifier: MIT
// The program every consumer project in tests/consumers builds against an installed (or
// subproject) tandem: tasks side by side with when_all, a sleep, and a plain function
// offloaded to a worker process. Prints "tandem consumer: ok" and exits 0 when all agree.
#include <tandem/tandem.hpp>

#include <unistd.h>
#include <chrono>
#include <cstdio>
#include <exception>

using namespace std::chrono_literals;

// A plain function: the worker process finds it by its address.
long sum_of_squares(long n) {
    long total = 0;
    for (long i = 1; i <= n; ++i) total += i * i;
    return total;
}

long worker_pid(long) {
    return static_cast<long>(::getpid());
}

tandem::task<long> after(std::chrono::milliseconds delay, long value) {
    co_await tandem::sleep_for(delay);
    co_return value;
}

tandem::task<int> consumer() {
    auto [a, b, squares, pid] = co_await tandem::when_all(
        after(20ms, 1), after(10ms, 2), tandem::offload_to_process(sum_of_squares, 100L),
        tandem::offload_to_process(worker_pid, 0L));
    if (a != 1 || b != 2 || squares != 338350 || pid == static_cast<long>(::getpid())) {
        std::printf("tandem consumer: wrong results %ld %ld %ld %ld\n", a, b, squares, pid);
        co_return 1;
    }
    std::printf("tandem consumer: ok\n");
    co_return 0;
}

int main() {
    try {
        tandem::runtime_options options;
        options.processes.workers = 1;
        options.processes.arena_bytes = 16 << 20;
        return tandem::run(consumer(), options);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "tandem consumer: error: %s\n", e.what());
        return 1;
    }
}
