// SPDX-License-Identifier: MIT
// 01_hello_task: the first rung. Sleeps, runs tasks side by side with
// when_all, bounds one with timeout, and reads a file through io_uring.
// Run: build/examples/01_hello_task [file]   (default: /etc/os-release)
#include <tandem/tandem.hpp>

#include <chrono>
#include <cstdio>
#include <string>

using namespace std::chrono_literals;

tandem::task<int> slow_add(int a, int b, std::chrono::milliseconds delay) {
    co_await tandem::sleep_for(delay);
    co_return a + b;
}

tandem::task<int> hello(std::string path) {
    // Both run at once on this loop: about 50 ms in all, not 80.
    auto [x, y] = co_await tandem::when_all(slow_add(1, 2, 30ms), slow_add(3, 4, 50ms));
    std::printf("when_all: %d %d\n", x, y);

    try {
        co_await tandem::timeout(10ms, tandem::sleep_for(1s));
    } catch (const tandem::timed_out&) {
        std::printf("timeout: the 1 s sleep was cancelled after 10 ms\n");
    }

    std::string text = co_await tandem::read_file(path);
    std::printf("read_file: %zu bytes from %s\n", text.size(), path.c_str());
    co_return 0;
}

int main(int argc, char** argv) {
    std::string path = argc > 1 ? argv[1] : "/etc/os-release";
    try {
        return tandem::run(hello(path));
    } catch (const std::exception& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
}
