// SPDX-License-Identifier: MIT
// 01_hello_task: the first rung. A task is a coroutine: `co_await sleep_for` suspends it without
// blocking the thread, `when_all` runs tasks side by side and collects their results, and a
// `task_group` waits for tasks started one by one. Everything here runs on one thread.
// Run: build/examples/01_hello_task
#include <tandem/tandem.hpp>

#include <chrono>
#include <cstdio>
#include <exception>

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

tandem::task<int> slow_add(int a, int b, std::chrono::milliseconds delay) {
    co_await tandem::sleep_for(delay);  // other tasks run meanwhile
    co_return a + b;
}

tandem::task<> count_after(std::chrono::milliseconds delay, int* finished) {
    co_await tandem::sleep_for(delay);
    ++*finished;  // the tasks of one loop take turns on one thread: no lock needed
}

tandem::task<bool> hello() {
    // Both sleeps run at once: about 150 ms in all, not 250.
    const auto start = clock_type::now();
    auto [x, y] = co_await tandem::when_all(slow_add(1, 2, 100ms), slow_add(3, 4, 150ms));
    const auto ms = std::chrono::duration<double, std::milli>(clock_type::now() - start).count();
    std::printf("when_all: 1 + 2 = %d and 3 + 4 = %d after %.0f ms (the sleeps overlapped)\n", x, y,
                ms);

    // A task_group: spawn as many tasks as you like, then join waits for every one.
    int finished = 0;
    tandem::task_group group;
    for (int i = 1; i <= 3; ++i) group.spawn(count_after(i * 20ms, &finished));
    co_await group.join();
    std::printf("task_group: %d of 3 spawned tasks had finished when join returned\n", finished);

    co_return x == 3 && y == 7 && ms < 250 && finished == 3;
}

int main() {
    try {
        const bool ok = tandem::run(hello());
        std::printf("%s\n", ok ? "ok" : "FAILED");
        return ok ? 0 : 1;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
}
