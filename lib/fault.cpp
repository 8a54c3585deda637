// SPDX-License-Identifier: MIT
// Compiled only into the fault-injection build of the library (lib/fault.hpp).
#include "fault.hpp"

#include <atomic>

#if defined(TANDEM_FAULT_INJECTION)

namespace tandem::detail {

namespace {

struct point_state {
    std::atomic<unsigned long> calls{0};
    std::atomic<unsigned long> nth{0};  // 0: disarmed
    std::atomic<int> err{0};
    std::atomic<bool> fired{false};
};

point_state points[fault_point_count];

point_state& at(fault_point p) noexcept {
    return points[static_cast<unsigned>(p)];
}

}  // namespace

int fault_hit(fault_point p) noexcept {
    point_state& s = at(p);
    const unsigned long n = s.calls.fetch_add(1, std::memory_order_relaxed) + 1;
    if (n != s.nth.load(std::memory_order_relaxed)) return 0;
    s.fired.store(true, std::memory_order_relaxed);
    return s.err.load(std::memory_order_relaxed);
}

void fault_arm(fault_point p, unsigned long nth, int err) noexcept {
    point_state& s = at(p);
    s.nth.store(0, std::memory_order_relaxed);
    s.calls.store(0, std::memory_order_relaxed);
    s.fired.store(false, std::memory_order_relaxed);
    s.err.store(err, std::memory_order_relaxed);
    s.nth.store(nth, std::memory_order_relaxed);
}

unsigned long fault_calls(fault_point p) noexcept {
    return at(p).calls.load(std::memory_order_relaxed);
}

bool fault_fired(fault_point p) noexcept {
    return at(p).fired.load(std::memory_order_relaxed);
}

}  // namespace tandem::detail

#endif
