// SPDX-License-Identifier: MIT
// sleep_for, sleep_until and timeout: lower bounds, ordering of many sleepers,
// deadlines that fire and ones that do not, and kernel operations cut short.
#include <tandem/tandem.hpp>

#include "uring_op.hpp"

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <random>
#include <stdexcept>
#include <stop_token>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

namespace {

struct test_pipe {
    int read_fd = -1;
    int write_fd = -1;
    test_pipe() {
        int fds[2];
        REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
        read_fd = fds[0];
        write_fd = fds[1];
    }
    ~test_pipe() {
        ::close(read_fd);
        ::close(write_fd);
    }
    test_pipe(const test_pipe&) = delete;
    test_pipe& operator=(const test_pipe&) = delete;
};

double ms_between(steady::time_point a, steady::time_point b) {
    return std::chrono::duration<double, std::milli>(b - a).count();
}

double ms_since(steady::time_point start) {
    return ms_between(start, steady::now());
}

/// Runs sleep_for(d) and returns how long it took, measured inside the loop.
tandem::task<steady::duration> timed_sleep(std::chrono::nanoseconds d) {
    auto start = steady::now();
    co_await tandem::sleep_for(d);
    co_return steady::now() - start;
}

tandem::task<int> value_after(std::chrono::nanoseconds d, int v) {
    co_await tandem::sleep_for(d);
    co_return v;
}

/// Blocks in the kernel on a read of `fd` until data comes or it is cancelled.
tandem::task<int> pipe_read(int fd, bool* cancelled) {
    char byte = 0;
    try {
        co_return co_await tandem::detail::uring_op(
            [&](io_uring_sqe* sqe) { io_uring_prep_read(sqe, fd, &byte, 1, 0); });
    } catch (const tandem::operation_cancelled&) {
        *cancelled = true;
        throw;
    }
}

}  // namespace

TEST_CASE("sleep_for sleeps at least the requested duration", "[time]") {
    for (auto d : {1ms, 10ms, 30ms}) {
        auto took = tandem::run(timed_sleep(d));
        CHECK(took >= d);
        CHECK(took < d + 1s);
    }
}

TEST_CASE("sleep_for with a zero or negative duration returns promptly", "[time]") {
    auto start = steady::now();
    tandem::run([]() -> tandem::task<> {
        for (int i = 0; i < 1000; ++i) {
            co_await tandem::sleep_for(0ns);
            co_await tandem::sleep_for(-5ms);
        }
    }());
    CHECK(ms_since(start) < 1000.0);
}

TEST_CASE("sleep_until wakes at or after the deadline", "[time]") {
    auto [deadline, woke] =
        tandem::run([]() -> tandem::task<std::pair<steady::time_point, steady::time_point>> {
            auto deadline = steady::now() + 25ms;
            co_await tandem::sleep_until(deadline);
            co_return std::pair{deadline, steady::now()};
        }());
    CHECK(woke >= deadline);
    CHECK(ms_between(deadline, woke) < 1000.0);
}

TEST_CASE("sleep_until a deadline in the past returns promptly", "[time]") {
    auto start = steady::now();
    tandem::run([]() -> tandem::task<> { co_await tandem::sleep_until(steady::now() - 1h); }());
    CHECK(ms_since(start) < 1000.0);
}

namespace {

/// What one sleeper saw. Written by its own task only.
struct wake_record {
    steady::time_point deadline;
    steady::time_point woke;
    const void* loop = nullptr;
};

tandem::task<> sleeper(wake_record* rec, std::vector<std::size_t>* order, std::size_t index) {
    co_await tandem::sleep_until(rec->deadline);
    rec->woke = steady::now();
    rec->loop = tandem::detail::current_loop();
    order->push_back(index);
}

/// `count` sleepers with random deadlines spread over `spread` from now, all on
/// the calling loop. Every timer is armed before the first one can fire: the
/// children start synchronously inside when_all.
tandem::task<> many_sleepers(std::vector<wake_record>* recs, std::vector<std::size_t>* order,
                             std::chrono::milliseconds spread, unsigned seed) {
    std::mt19937 rng(seed);
    std::uniform_int_distribution<long> offset_us(0, std::chrono::microseconds(spread).count());
    auto base = steady::now();
    std::vector<tandem::task<>> tasks;
    tasks.reserve(recs->size());
    for (std::size_t i = 0; i < recs->size(); ++i) {
        (*recs)[i].deadline = base + std::chrono::microseconds(offset_us(rng));
        tasks.push_back(sleeper(&(*recs)[i], order, i));
    }
    co_await tandem::when_all(std::move(tasks));
}

/// Every sleeper woke once, after its deadline, and in deadline order.
void check_wakes(const std::vector<wake_record>& recs, const std::vector<std::size_t>& order) {
    REQUIRE(order.size() == recs.size());
    std::size_t early = 0;
    std::size_t out_of_order = 0;
    std::vector<char> seen(recs.size(), 0);
    for (std::size_t k = 0; k < order.size(); ++k) {
        const auto& r = recs[order[k]];
        if (r.woke < r.deadline) ++early;
        if (k > 0 && r.deadline < recs[order[k - 1]].deadline) ++out_of_order;
        seen[order[k]] += 1;
    }
    CHECK(early == 0);
    CHECK(out_of_order == 0);
    CHECK(std::count(seen.begin(), seen.end(), 1) == static_cast<long>(recs.size()));
}

}  // namespace

TEST_CASE(
    "a hundred thousand sleepers with random deadlines all wake after their deadline "
    "and in deadline order",
    "[time]") {
    std::vector<wake_record> recs(100'000);
    std::vector<std::size_t> order;
    order.reserve(recs.size());
    auto start = steady::now();
    tandem::run(many_sleepers(&recs, &order, 200ms, 12345));
    check_wakes(recs, order);
    CHECK(ms_since(start) >= 150.0);  // the latest deadline is close to 200 ms out
    CHECK(ms_since(start) < 20'000.0);
}

TEST_CASE(
    "sleepers on two io threads wake on their own loop and each loop wakes them in deadline order",
    "[time]") {
    tandem::runtime rt(tandem::runtime_options{.io_threads = 2});
    std::vector<wake_record> recs[2] = {std::vector<wake_record>(20'000),
                                        std::vector<wake_record>(20'000)};
    std::vector<std::size_t> order[2];
    // block_on picks the loops round-robin: two concurrent calls use both.
    std::thread other([&] { rt.block_on(many_sleepers(&recs[1], &order[1], 100ms, 2)); });
    rt.block_on(many_sleepers(&recs[0], &order[0], 100ms, 1));
    other.join();
    for (int t = 0; t < 2; ++t) {
        check_wakes(recs[t], order[t]);
        // Every sleeper of one block_on resumed on the same loop.
        const void* home = recs[t].front().loop;
        CHECK(home != nullptr);
        CHECK(std::all_of(recs[t].begin(), recs[t].end(),
                          [home](const wake_record& r) { return r.loop == home; }));
    }
    CHECK(recs[0].front().loop != recs[1].front().loop);
}

TEST_CASE("timeout that expires cancels the inner task and throws timed_out", "[time][timeout]") {
    auto start = steady::now();
    CHECK_THROWS_AS(tandem::run(tandem::timeout(10ms, value_after(10s, 1))), tandem::timed_out);
    auto took = ms_since(start);
    CHECK(took >= 10.0);
    CHECK(took < 1000.0);
}

TEST_CASE("timed_out is a tandem::error", "[time][timeout]") {
    static_assert(std::is_base_of_v<tandem::error, tandem::timed_out>);
    CHECK_THROWS_AS(tandem::run(tandem::timeout(1ms, tandem::sleep_for(10s))), tandem::error);
}

TEST_CASE("timeout that does not expire returns the value and leaves no timer behind",
          "[time][timeout]") {
    auto start = steady::now();
    // A 10 s deadline: if its timer outlived the timeout, nothing may wait for it.
    CHECK(tandem::run(tandem::timeout(10s, value_after(1ms, 42))) == 42);
    CHECK(ms_since(start) < 1000.0);
    // A deadline that passes while the loop is still busy afterwards: a stale
    // timer would fire into the timeout's dead frame (ASan reports it).
    CHECK(tandem::run([]() -> tandem::task<int> {
              int v = co_await tandem::timeout(5ms, value_after(0ns, 7));
              co_await tandem::sleep_for(30ms);
              co_return v;
          }()) == 7);
}

TEST_CASE("timeout propagates the inner task's own exception", "[time][timeout]") {
    CHECK_THROWS_WITH(tandem::run(tandem::timeout(10s,
                                                  []() -> tandem::task<int> {
                                                      co_await tandem::sleep_for(1ms);
                                                      throw std::runtime_error("inner failed");
                                                  }())),
                      "inner failed");
}

TEST_CASE("timeout of a task blocked in the kernel cancels the kernel operation",
          "[time][timeout]") {
    test_pipe p;
    bool cancelled = false;
    auto start = steady::now();
    CHECK_THROWS_AS(tandem::run(tandem::timeout(10ms, pipe_read(p.read_fd, &cancelled))),
                    tandem::timed_out);
    CHECK(cancelled);
    CHECK(ms_since(start) < 1000.0);
    // The cancelled read took nothing: a byte written afterwards is still there.
    char byte = 'z';
    REQUIRE(::write(p.write_fd, &byte, 1) == 1);
    REQUIRE(::fcntl(p.read_fd, F_SETFL, O_NONBLOCK) == 0);
    char got = 0;
    CHECK(::read(p.read_fd, &got, 1) == 1);
    CHECK(got == 'z');
}

namespace {

/// What the level between the two timeouts saw.
struct nested_outcome {
    bool inner_timed_out = false;
    bool inner_cancelled = false;
};

tandem::task<> middle(std::chrono::nanoseconds inner, nested_outcome* out) {
    try {
        co_await tandem::timeout(inner, tandem::sleep_for(10s));
    } catch (const tandem::timed_out&) {
        out->inner_timed_out = true;
        throw;
    } catch (const tandem::operation_cancelled&) {
        out->inner_cancelled = true;
        throw;
    }
}

}  // namespace

TEST_CASE("nested timeouts throw timed_out at the level whose deadline passed", "[time][timeout]") {
    nested_outcome out;
    auto start = steady::now();
    SECTION("inner deadline shorter") {
        CHECK_THROWS_AS(tandem::run(tandem::timeout(5s, middle(10ms, &out))), tandem::timed_out);
        CHECK(out.inner_timed_out);
        CHECK_FALSE(out.inner_cancelled);
    }
    SECTION("outer deadline shorter") {
        CHECK_THROWS_AS(tandem::run(tandem::timeout(10ms, middle(5s, &out))), tandem::timed_out);
        // The inner timeout was cancelled from above: it is not the one that timed out.
        CHECK_FALSE(out.inner_timed_out);
        CHECK(out.inner_cancelled);
    }
    SECTION("equal deadlines") {
        // The outer deadline is computed first, so it fires first (the inner one
        // may fire in the same turn); the inner level reports a cancellation from
        // above, not a timeout of its own.
        CHECK_THROWS_AS(tandem::run(tandem::timeout(10ms, middle(10ms, &out))), tandem::timed_out);
        CHECK_FALSE(out.inner_timed_out);
        CHECK(out.inner_cancelled);
    }
    CHECK(ms_since(start) < 1000.0);
}

namespace {

enum class caller_saw { nothing, value, timed_out, cancelled };

tandem::task<> timeout_caller(std::chrono::nanoseconds limit, caller_saw* saw) {
    try {
        co_await tandem::timeout(limit, tandem::sleep_for(10s));
        *saw = caller_saw::value;
    } catch (const tandem::timed_out&) {
        *saw = caller_saw::timed_out;
        throw;
    } catch (const tandem::operation_cancelled&) {
        *saw = caller_saw::cancelled;
        throw;
    }
}

}  // namespace

TEST_CASE("cancelling a timeout's caller gives operation_cancelled and not timed_out",
          "[time][timeout][cancel]") {
    caller_saw saw = caller_saw::nothing;
    auto start = steady::now();
    SECTION("cancelled by when_any") {
        auto v = tandem::run(tandem::when_any(timeout_caller(5s, &saw), value_after(10ms, 1)));
        CHECK(v.index() == 1);
    }
    SECTION("cancelled by a stop_token from another thread") {
        std::stop_source src;
        std::jthread stopper([&src] {
            std::this_thread::sleep_for(20ms);
            src.request_stop();
        });
        CHECK_THROWS_AS(
            tandem::run(tandem::with_stop_token(src.get_token(), timeout_caller(5s, &saw))),
            tandem::operation_cancelled);
    }
    SECTION("the caller was cancelled before a zero timeout started") {
        // Cancellation from above wins over a deadline that is already due.
        std::stop_source src;
        src.request_stop();
        CHECK_THROWS_AS(
            tandem::run(tandem::with_stop_token(src.get_token(), timeout_caller(0ns, &saw))),
            tandem::operation_cancelled);
    }
    CHECK(saw == caller_saw::cancelled);
    CHECK(ms_since(start) < 2000.0);
}
