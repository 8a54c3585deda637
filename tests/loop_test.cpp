// SPDX-License-Identifier: MIT
// The loop's internals: the timer heap and the ready queue (lib/loop.hpp), and the epoll
// backend's index of waiting operations (lib/epoll_backend.hpp).
#include "loop.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <random>
#include <unordered_map>
#include <vector>

using tandem::detail::timer_node;
using clock_type = std::chrono::steady_clock;

TEST_CASE("timer heap pops deadlines in order after random pushes and removals", "[loop]") {
    std::mt19937 rng(20261130);
    std::vector<timer_node> nodes(5000);
    tandem::detail::timer_heap heap;
    auto base = clock_type::now();
    for (auto& n : nodes) {
        n.deadline = base + std::chrono::microseconds(rng() % 100000);
        heap.push(&n);
        CHECK(n.armed());
    }
    // Remove a random third, from anywhere in the heap.
    std::vector<timer_node*> kept;
    for (auto& n : nodes) {
        if (rng() % 3 == 0) {
            heap.remove(&n);
            CHECK_FALSE(n.armed());
        } else {
            kept.push_back(&n);
        }
    }
    REQUIRE(heap.size() == kept.size());
    std::vector<clock_type::time_point> popped;
    while (!heap.empty()) {
        timer_node* t = heap.top();
        CHECK(heap.top_deadline() == t->deadline);
        popped.push_back(t->deadline);
        heap.remove(t);
    }
    CHECK(popped.size() == kept.size());
    CHECK(std::is_sorted(popped.begin(), popped.end()));
}

TEST_CASE("ready queue keeps FIFO order while it grows", "[loop]") {
    tandem::detail::ready_queue q;
    std::vector<int> frames(3000);
    auto handle_of = [&](int i) {
        return std::coroutine_handle<>::from_address(&frames[static_cast<std::size_t>(i)]);
    };
    int next_out = 0;
    for (int i = 0; i < 3000; ++i) {
        q.push(handle_of(i));
        if (i % 3 == 0) {  // interleave pops so the ring wraps before it grows
            CHECK(q.pop().address() == handle_of(next_out++).address());
        }
    }
    while (!q.empty()) CHECK(q.pop().address() == handle_of(next_out++).address());
    CHECK(next_out == 3000);
}

TEST_CASE(
    "the epoll backend's op index agrees with a std::unordered_map through 200,000 "
    "random puts, erases and finds",
    "[loop]") {
    std::mt19937_64 rng(20261130);
    tandem::detail::op_index index;
    std::unordered_map<std::uint64_t, tandem::detail::epoll_op*> model;
    // Keys like the backend's: addresses of frames, 16-byte aligned, clustered.
    auto key = [&] { return 0x7f0000000000ull + (rng() % 4096) * 16; };
    for (int step = 0; step < 200'000; ++step) {
        const std::uint64_t k = key();
        switch (rng() % 3) {
            case 0: {
                auto* op = reinterpret_cast<tandem::detail::epoll_op*>(rng() | 8);
                index.put(k, op);
                model[k] = op;
                break;
            }
            case 1:
                index.erase(k);
                model.erase(k);
                break;
            default: {
                const auto it = model.find(k);
                REQUIRE(index.find(k) == (it == model.end() ? nullptr : it->second));
            }
        }
    }
    for (const auto& [k, op] : model) REQUIRE(index.find(k) == op);
}
