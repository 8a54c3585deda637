// SPDX-License-Identifier: MIT
#pragma once

// What templates in public headers need from the event loop, which itself lives
// in lib/ (public headers never include <liburing.h>). Not part of the API.

#include <chrono>
#include <coroutine>
#include <cstddef>

namespace tandem::detail {

class loop;  // lib/loop.hpp

/// The loop running on this thread, or null off the io threads.
loop* current_loop() noexcept;

/// Aborts with `what` when called off an io thread (a broken precondition).
loop& require_loop(const char* what) noexcept;

/// Queues `h` to run on the current thread's loop. Loop thread only.
void schedule(std::coroutine_handle<> h) noexcept;

/// Work handed to a loop from any thread. The item must stay alive until run()
/// is called on the loop's thread; it is called exactly once.
struct posted_item {
    void (*run)(posted_item*) noexcept = nullptr;
    posted_item* next_ = nullptr;
};

/// Thread-safe: queues `item` on `target` and wakes it if needed.
void post(loop& target, posted_item* item) noexcept;

/// `co_await hop_to{target}` suspends the caller and resumes it on `target`'s
/// thread (posted, so it works from any thread). Internal: user tasks stay on
/// their loop; tandem's cross-loop wake-ups and the benchmarks use this.
struct hop_to : posted_item {
    explicit hop_to(loop* t) noexcept : target(t) {}
    loop* target;
    std::coroutine_handle<> handle;

    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<> h) noexcept {
        handle = h;
        run = [](posted_item* self) noexcept { schedule(static_cast<hop_to*>(self)->handle); };
        post(*target, this);
    }
    void await_resume() const noexcept {}
};

/// A deadline in the loop's timer heap. `fire` runs on the loop thread, not
/// from inside completion processing; like a cancel hook it must not resume
/// a coroutine inline.
struct timer_node {
    std::chrono::steady_clock::time_point deadline{};
    void (*fire)(timer_node*) noexcept = nullptr;
    std::size_t heap_index_ = static_cast<std::size_t>(-1);

    bool armed() const noexcept { return heap_index_ != static_cast<std::size_t>(-1); }
};

/// Arms `t` on the current loop. Loop thread only.
void timer_arm(timer_node* t);
/// Disarms `t` if armed. Loop thread only.
void timer_cancel(timer_node* t) noexcept;

}  // namespace tandem::detail
