// SPDX-License-Identifier: MIT
// 08_shared_array: a large array handed to a worker process without copying.
// The parent fills a shared_array (it lives in the pool's shared arena), a
// worker doubles every element in place, and the parent sees the result as
// soon as the job completes. Only the array's address and length travel.
// Run: build/examples/08_shared_array [elements]   (default: 16777216)
#include <tandem/tandem.hpp>

#include <unistd.h>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>

// Runs in a worker: `a` refers to the same memory the parent filled.
int double_in_place(tandem::shared_array<double> a) {
    for (double& x : a) x *= 2;
    return static_cast<int>(::getpid());
}

tandem::task<bool> demo(std::size_t n) {
    auto a = tandem::shared_array<double>::allocate(n);  // zero-filled, in the arena
    for (std::size_t i = 0; i < n; ++i) a[i] = static_cast<double>(i);

    const auto start = std::chrono::steady_clock::now();
    const int worker = co_await tandem::offload_to_process(double_in_place, a);
    const double ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();

    bool ok = true;
    for (std::size_t i = 0; i < n; ++i) ok = ok && a[i] == 2.0 * static_cast<double>(i);
    std::printf("worker %d doubled %zu doubles (%.0f MiB) in place in %.1f ms: %s\n", worker, n,
                static_cast<double>(n * sizeof(double)) / (1 << 20), ms, ok ? "ok" : "WRONG");
    co_return ok;  // `a` is released here, before the runtime goes
}

int main(int argc, char** argv) {
    const std::size_t n = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : std::size_t{1} << 24;
    try {
        tandem::runtime_options options;
        options.processes.arena_bytes = n * sizeof(double) + (std::size_t{16} << 20);
        tandem::runtime rt(options);
        const bool ok = rt.block_on(demo(n));
        std::printf("%s\n", ok ? "ok" : "FAILED");
        return ok ? 0 : 1;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
}
