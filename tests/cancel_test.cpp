// SPDX-License-Identifier: MIT
// Cancellation: every cancelled operation resumes exactly once, a kernel result
// that won the race is delivered (no byte is lost), with_stop_token carries a
// stop from any thread, and cancellation surfaces as operation_cancelled.
#include <tandem/tandem.hpp>

#include "uring_op.hpp"

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <random>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

static_assert(std::is_base_of_v<tandem::error, tandem::operation_cancelled>);
static_assert(std::is_base_of_v<std::runtime_error, tandem::error>);

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

    /// Bytes waiting in the pipe.
    int available() const {
        int n = -1;
        REQUIRE(::ioctl(read_fd, FIONREAD, &n) == 0);
        return n;
    }
};

double ms_since(steady::time_point start) {
    return std::chrono::duration<double, std::milli>(steady::now() - start).count();
}

/// How one operation ended: the kernel's result, or cancelled.
struct op_result {
    bool cancelled = false;
    int res = 0;
    std::uint8_t byte = 0;
};

/// One read of one byte via uring_op. Stores what the operation itself saw
/// in *out and bumps *resumed once after the co_await, whichever way it ended.
/// Never throws, and reports through *out rather than its value, so nothing is
/// lost when a combinator above discards the result of a loser.
tandem::task<> read_byte(int fd, int* resumed, op_result* out) {
    std::uint8_t byte = 0;
    try {
        out->res = co_await tandem::detail::uring_op(
            [&](io_uring_sqe* sqe) { io_uring_prep_read(sqe, fd, &byte, 1, 0); });
        out->byte = byte;
    } catch (const tandem::operation_cancelled&) {
        out->cancelled = true;
    }
    ++*resumed;
}

/// An IORING_OP_NOP: completes on its own, at once. Reports as read_byte does.
tandem::task<> nop(int* resumed, op_result* out) {
    try {
        out->res =
            co_await tandem::detail::uring_op([](io_uring_sqe* sqe) { io_uring_prep_nop(sqe); });
    } catch (const tandem::operation_cancelled&) {
        out->cancelled = true;
    }
    ++*resumed;
}

/// Finishes without suspending: a when_any partner that wins at once, so the
/// cancellation follows the other child's SQE before the ring is entered.
tandem::task<> at_once() {
    co_return;
}

/// Finishes one loop turn later: the partner's SQE has been submitted by then.
tandem::task<> after_a_turn() {
    co_await tandem::yield();
}

/// Runs the operation `kind` against a cancellation; *out gets what the
/// operation itself saw.
tandem::task<> race_one(int kind, int fd, int* resumed, op_result* out) {
    switch (kind) {
        case 0:  // pipe read, cancelled before the ring is entered
            co_await tandem::when_any(read_byte(fd, resumed, out), at_once());
            break;
        case 1:  // pipe read under a deadline that is already due
            co_await tandem::timeout(0ns, read_byte(fd, resumed, out));
            break;
        case 2:  // pipe read, cancelled after it reached the kernel
            co_await tandem::when_any(read_byte(fd, resumed, out), after_a_turn());
            break;
        case 3:  // NOP racing a cancel submitted right behind it
            co_await tandem::when_any(nop(resumed, out), at_once());
            break;
        default:  // NOP that completed before the cancel was sent
            co_await tandem::when_any(nop(resumed, out), after_a_turn());
            break;
    }
}

}  // namespace

TEST_CASE(
    "an operation cancelled right after submission resumes exactly once in a hundred "
    "thousand rounds",
    "[cancel][race]") {
    constexpr std::size_t total = 100'000;
    constexpr std::size_t batch = 1'000;
    constexpr int kinds = 5;
    test_pipe p;  // stays empty: its reads end only by cancellation
    std::vector<int> resumed(total, 0);
    // What each operation itself reported, whatever when_any did with it.
    std::vector<op_result> seen(total);
    std::vector<int> order(total);
    std::mt19937 rng(20240601);
    for (std::size_t i = 0; i < total; ++i) order[i] = static_cast<int>(rng() % kinds);

    tandem::run([](int fd, std::vector<int>* resumed, std::vector<op_result>* seen,
                   const std::vector<int>* order) -> tandem::task<> {
        for (std::size_t first = 0; first < total; first += batch) {
            std::vector<tandem::task<>> tasks;
            tasks.reserve(batch);
            for (std::size_t i = first; i < first + batch; ++i) {
                tasks.push_back(race_one((*order)[i], fd, &(*resumed)[i], &(*seen)[i]));
            }
            co_await tandem::when_all(std::move(tasks));
        }
    }(p.read_fd, &resumed, &seen, &order));

    std::array<std::size_t, kinds> values{}, cancels{};
    std::size_t not_once = 0, bad_value = 0;
    for (std::size_t i = 0; i < total; ++i) {
        if (resumed[i] != 1) ++not_once;
        const int kind = order[i];
        if (seen[i].cancelled) {
            ++cancels[std::size_t(kind)];
        } else {
            ++values[std::size_t(kind)];
            if (seen[i].res != 0) ++bad_value;  // a NOP gives 0; an empty pipe gives nothing
        }
    }
    CHECK(not_once == 0);
    CHECK(bad_value == 0);
    // Reads of the empty pipe can only end by cancellation.
    CHECK(values[0] == 0);
    CHECK(values[1] == 0);
    CHECK(values[2] == 0);
    // A NOP that completed before the cancel was even sent reports its result.
    CHECK(cancels[4] == 0);
    std::size_t sum = 0;
    for (int k = 0; k < kinds; ++k) sum += values[std::size_t(k)] + cancels[std::size_t(k)];
    CHECK(sum == total);
    // Nothing is still reading the pipe: a byte written now stays there.
    std::uint8_t b = 1;
    REQUIRE(::write(p.write_fd, &b, 1) == 1);
    CHECK(p.available() == 1);
}

TEST_CASE("a read whose data was already there returns the data even when cancelled at once",
          "[cancel]") {
    test_pipe p;
    REQUIRE(::write(p.write_fd, "abc", 3) == 3);
    SECTION("cancel submitted right behind the read") {
        // The read finds its data during submission, before the kernel looks at
        // the cancel that follows it in the same submission.
        int resumed = 0;
        op_result seen;
        tandem::run([](int fd, int* resumed, op_result* seen) -> tandem::task<> {
            auto v = co_await tandem::when_any(read_byte(fd, resumed, seen), at_once());
            CHECK(v.index() == 1);
        }(p.read_fd, &resumed, &seen));
        CHECK(resumed == 1);
        CHECK_FALSE(seen.cancelled);
        CHECK(seen.res == 1);
        CHECK(seen.byte == 'a');
        CHECK(p.available() == 2);
    }
    SECTION("cancel sent after the read completed") {
        int resumed = 0;
        op_result seen;
        tandem::run([](int fd, int* resumed, op_result* seen) -> tandem::task<> {
            // The yield comes back in the turn after the read's completion was
            // reaped: it wins when_any, but the cancel finds nothing to cut short.
            auto v = co_await tandem::when_any(read_byte(fd, resumed, seen), after_a_turn());
            CHECK(v.index() == 1);
        }(p.read_fd, &resumed, &seen));
        CHECK(resumed == 1);
        CHECK_FALSE(seen.cancelled);
        CHECK(seen.res == 1);
        CHECK(seen.byte == 'a');
        CHECK(p.available() == 2);
    }
}

TEST_CASE("reads racing cancellation while another thread writes never lose a byte",
          "[cancel][race]") {
    test_pipe p;
    // Less than the pipe's 64 KiB capacity: the writer never blocks, even if
    // every read were cancelled.
    constexpr int total_bytes = 30'000;
    constexpr std::size_t rounds = 150;
    constexpr std::size_t readers = 256;
    std::array<std::size_t, 256> written{}, read_back{};
    std::atomic<bool> go{false};
    std::atomic<bool> write_failed{false};

    std::thread writer([&] {
        std::mt19937 rng(7);
        while (!go.load(std::memory_order_acquire)) std::this_thread::yield();
        int sent = 0;
        while (sent < total_bytes) {
            std::uint8_t chunk[16];
            int n = std::min<int>(1 + int(rng() % 16), total_bytes - sent);
            for (int k = 0; k < n; ++k) {
                chunk[k] = static_cast<std::uint8_t>(rng());
                ++written[chunk[k]];
            }
            if (::write(p.write_fd, chunk, std::size_t(n)) != n) {
                write_failed = true;  // Catch's macros are not for other threads
                break;
            }
            sent += n;
            if (rng() % 4 == 0) std::this_thread::sleep_for(20us);
        }
    });

    std::vector<op_result> results(rounds * readers);
    std::vector<int> resumed(rounds * readers, 0);
    tandem::run([](int fd, std::atomic<bool>* go, std::vector<op_result>* results,
                   std::vector<int>* resumed) -> tandem::task<> {
        go->store(true, std::memory_order_release);
        for (std::size_t r = 0; r < rounds; ++r) {
            std::vector<tandem::task<>> tasks;
            tasks.reserve(readers);
            for (std::size_t i = 0; i < readers; ++i) {
                std::size_t k = r * readers + i;
                // Kinds 0 and 2: the cancel comes in the same submission as
                // the read, or a turn after it; here the pipe may have data.
                const int kind = k % 2 == 0 ? 0 : 2;
                tasks.push_back(race_one(kind, fd, &(*resumed)[k], &(*results)[k]));
            }
            co_await tandem::when_all(std::move(tasks));
        }
    }(p.read_fd, &go, &results, &resumed));
    writer.join();
    REQUIRE_FALSE(write_failed);

    std::size_t got = 0, cancelled = 0, odd = 0, not_once = 0;
    for (std::size_t k = 0; k < results.size(); ++k) {
        if (resumed[k] != 1) ++not_once;
        if (results[k].cancelled) {
            ++cancelled;
        } else if (results[k].res == 1) {
            ++got;
            ++read_back[results[k].byte];
        } else {
            ++odd;  // neither data nor a cancellation
        }
    }
    // What no read took is still in the pipe.
    int left = p.available();
    std::vector<std::uint8_t> rest(static_cast<std::size_t>(left));
    if (left > 0) REQUIRE(::read(p.read_fd, rest.data(), rest.size()) == left);
    for (std::uint8_t b : rest) ++read_back[b];
    CHECK(not_once == 0);
    CHECK(odd == 0);
    CHECK(got + cancelled == results.size());
    CHECK(got + std::size_t(left) == std::size_t(total_bytes));
    CHECK(read_back == written);
}

namespace {

/// Signals `pending` from a second task once the read's SQE has been
/// submitted (the yield comes back only after the loop entered the ring).
tandem::task<> announce_after_a_turn(std::atomic<bool>* pending) {
    co_await tandem::yield();
    pending->store(true, std::memory_order_release);
}

tandem::task<int> blocking_read(int fd, bool* cancelled) {
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

TEST_CASE("with_stop_token: a stop requested from another thread cancels a pending kernel read",
          "[cancel][stop_token]") {
    test_pipe p;
    std::stop_source src;
    std::atomic<bool> pending{false};
    bool cancelled = false;
    std::thread stopper([&] {
        while (!pending.load(std::memory_order_acquire)) std::this_thread::sleep_for(1ms);
        src.request_stop();
    });
    auto start = steady::now();
    CHECK_THROWS_AS(
        tandem::run(tandem::when_all(
            tandem::with_stop_token(src.get_token(), blocking_read(p.read_fd, &cancelled)),
            announce_after_a_turn(&pending))),
        tandem::operation_cancelled);
    stopper.join();
    CHECK(cancelled);
    CHECK(ms_since(start) < 5000.0);
    CHECK(p.available() == 0);
}

TEST_CASE("with_stop_token: a stop requested before the call cancels at once",
          "[cancel][stop_token]") {
    test_pipe p;
    std::stop_source src;
    src.request_stop();
    bool cancelled = false;
    auto start = steady::now();
    CHECK_THROWS_AS(
        tandem::run(tandem::with_stop_token(src.get_token(), blocking_read(p.read_fd, &cancelled))),
        tandem::operation_cancelled);
    CHECK(cancelled);
    CHECK_THROWS_AS(tandem::run(tandem::with_stop_token(src.get_token(), tandem::sleep_for(10s))),
                    tandem::operation_cancelled);
    CHECK(ms_since(start) < 1000.0);
}

TEST_CASE("with_stop_token: a token that is never stopped changes nothing",
          "[cancel][stop_token]") {
    std::stop_source src;
    auto work = []() -> tandem::task<int> {
        co_await tandem::sleep_for(5ms);
        co_await tandem::yield();
        co_return 42;
    };
    CHECK(tandem::run(tandem::with_stop_token(src.get_token(), work())) == 42);
    // A token without a stop state cannot be stopped at all.
    CHECK(tandem::run(tandem::with_stop_token(std::stop_token{}, work())) == 42);
    // A stop requested after the task finished reaches nothing.
    src.request_stop();
    CHECK(src.stop_requested());
}

TEST_CASE("with_stop_token: the caller's own cancellation still reaches the inner task",
          "[cancel][stop_token]") {
    std::stop_source src;
    test_pipe p;
    bool cancelled = false;
    auto v = tandem::run(tandem::when_any(
        tandem::with_stop_token(src.get_token(), blocking_read(p.read_fd, &cancelled)),
        tandem::sleep_for(10ms)));
    CHECK(v.index() == 1);
    CHECK(cancelled);
}

TEST_CASE("cancelled awaitables throw operation_cancelled which is a tandem::error", "[cancel]") {
    std::stop_source src;
    src.request_stop();
    test_pipe p;
    auto expect_cancelled = [&](tandem::task<> t) {
        try {
            tandem::run(tandem::with_stop_token(src.get_token(), std::move(t)));
            FAIL("no exception");
        } catch (const tandem::error& e) {
            CHECK(dynamic_cast<const tandem::operation_cancelled*>(&e) != nullptr);
            CHECK(std::string(e.what()).find("cancel") != std::string::npos);
        }
    };
    expect_cancelled(tandem::sleep_for(1s));
    expect_cancelled(tandem::sleep_until(steady::now() + 1s));
    expect_cancelled(tandem::yield());
    expect_cancelled([](int fd) -> tandem::task<> {
        char byte = 0;
        co_await tandem::detail::uring_op(
            [&](io_uring_sqe* sqe) { io_uring_prep_read(sqe, fd, &byte, 1, 0); });
    }(p.read_fd));
}

TEST_CASE("yield is a cancellation point", "[cancel][yield]") {
    int spins = 0;
    bool cancelled = false;
    auto v = tandem::run(tandem::when_any(
        [](int* spins, bool* cancelled) -> tandem::task<> {
            try {
                for (;;) {  // never suspends except in yield
                    ++*spins;
                    co_await tandem::yield();
                }
            } catch (const tandem::operation_cancelled&) {
                *cancelled = true;
                throw;
            }
        }(&spins, &cancelled),
        tandem::sleep_for(10ms)));
    CHECK(v.index() == 1);
    CHECK(cancelled);
    CHECK(spins > 0);
}

namespace {

tandem::task<> read_until_cancelled(int fd, std::atomic<int>* cancelled) {
    char byte = 0;
    try {
        co_await tandem::detail::uring_op(
            [&](io_uring_sqe* sqe) { io_uring_prep_read(sqe, fd, &byte, 1, 0); });
    } catch (const tandem::operation_cancelled&) {
        cancelled->fetch_add(1, std::memory_order_relaxed);
    }
}

tandem::task<> spin_with_yields() {
    for (;;) co_await tandem::yield();
}

}  // namespace

// Regression: loop::post (from runtime::~runtime's request_shutdown) could
// still be about to write the loop's eventfd when a busy loop had already
// drained the shutdown item, finished and been deleted by its own thread: a
// use-after-free, and a write to a closed (possibly reused) fd. TSan reported
// it on every runtime destruction; the runtime now deletes its loops only
// after joining their threads.
TEST_CASE("runtime destruction cancels tasks blocked in the kernel even while its loops are busy",
          "[cancel][runtime]") {
    test_pipe p;
    std::atomic<int> cancelled{0};
    constexpr int rounds = 100;
    for (int i = 0; i < rounds; ++i) {
        tandem::runtime rt(tandem::runtime_options{.io_threads = 2});
        // Two blocked reads and two spinning tasks, spread over both loops: the
        // loops are awake when the shutdown request arrives.
        rt.spawn(read_until_cancelled(p.read_fd, &cancelled));
        rt.spawn(read_until_cancelled(p.read_fd, &cancelled));
        rt.spawn(spin_with_yields());
        rt.spawn(spin_with_yields());
        // Make sure both reads started before the runtime goes away.
        std::atomic<bool> reached{false};
        rt.block_on([](std::atomic<bool>* reached) -> tandem::task<> {
            co_await tandem::yield();
            reached->store(true);
        }(&reached));
        CHECK(reached.load());
    }
    // Every read ended by cancellation: a spawn is posted before the shutdown
    // request, so even a read that had not started yet starts, cancelled.
    CHECK(cancelled.load() == 2 * rounds);
    CHECK(p.available() == 0);
}
