// SPDX-License-Identifier: MIT
// when_all, when_any, task_group and yield: results, ordering, exceptions, and
// cancellation of the children (including kernel operations) before returning.
#include <tandem/tandem.hpp>

#include "uring_op.hpp"

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

static_assert(std::is_same_v<decltype(tandem::when_all(std::declval<tandem::task<int>>(),
                                                       std::declval<tandem::task<>>())),
                             tandem::task<std::tuple<int, std::monostate>>>,
              "when_all's tuple form maps void to std::monostate");
static_assert(
    std::is_same_v<decltype(tandem::when_all(std::declval<std::vector<tandem::task<>>>())),
                   tandem::task<std::vector<std::monostate>>>,
    "when_all's vector form maps void to std::monostate");
static_assert(std::is_same_v<decltype(tandem::when_any(std::declval<tandem::task<int>>(),
                                                       std::declval<tandem::task<>>())),
                             tandem::task<std::variant<int, std::monostate>>>,
              "when_any maps void to std::monostate");

namespace {

/// A pipe whose read end nobody writes to: a read on it stays in the kernel
/// until it is cancelled.
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

/// Sets *flag when destroyed: tells whether a coroutine frame is gone.
struct set_on_destroy {
    bool* flag;
    ~set_on_destroy() { *flag = true; }
};

double ms_since(steady::time_point start) {
    return std::chrono::duration<double, std::milli>(steady::now() - start).count();
}

tandem::task<int> int_after(std::chrono::milliseconds d, int v) {
    co_await tandem::sleep_for(d);
    co_return v;
}

tandem::task<std::string> string_after(std::chrono::milliseconds d, std::string s) {
    co_await tandem::sleep_for(d);
    co_return s;
}

tandem::task<> nothing_after(std::chrono::milliseconds d, int* done) {
    co_await tandem::sleep_for(d);
    ++*done;
}

tandem::task<int> throw_after(std::chrono::milliseconds d, std::string what, int* finished) {
    co_await tandem::sleep_for(d);
    ++*finished;
    throw std::runtime_error(what);
}

tandem::task<int> count_after(std::chrono::milliseconds d, int v, int* finished) {
    co_await tandem::sleep_for(d);
    ++*finished;
    co_return v;
}

/// Sleeps for a long time; records that it was cancelled and that its frame died.
tandem::task<int> long_sleeper(bool* cancelled, bool* destroyed) {
    set_on_destroy guard{destroyed};
    try {
        co_await tandem::sleep_for(10s);
    } catch (const tandem::operation_cancelled&) {
        *cancelled = true;
        throw;
    }
    co_return -1;
}

/// Blocks in the kernel on a read of an empty pipe until cancelled.
tandem::task<int> pipe_reader(int fd, bool* cancelled, bool* destroyed) {
    set_on_destroy guard{destroyed};
    char byte = 0;
    try {
        int res = co_await tandem::detail::uring_op(
            [&](io_uring_sqe* sqe) { io_uring_prep_read(sqe, fd, &byte, 1, 0); });
        co_return res;
    } catch (const tandem::operation_cancelled&) {
        *cancelled = true;
        throw;
    }
}

}  // namespace

TEST_CASE("when_all returns the results in argument order and maps void to monostate",
          "[when_all]") {
    int done = 0;
    // The children finish in the reverse of argument order.
    auto [a, b, c] = tandem::run(tandem::when_all(int_after(30ms, 7), nothing_after(15ms, &done),
                                                  string_after(0ms, "last")));
    CHECK(a == 7);
    static_assert(std::is_same_v<decltype(b), std::monostate>);
    CHECK(done == 1);
    CHECK(c == "last");
}

TEST_CASE("when_all of no tasks and of one task completes", "[when_all]") {
    auto empty = tandem::run(tandem::when_all(std::vector<tandem::task<int>>{}));
    CHECK(empty.empty());
    auto [only] = tandem::run(tandem::when_all(int_after(0ms, 3)));
    CHECK(only == 3);
}

TEST_CASE("when_all over a vector of a thousand tasks returns every result in order",
          "[when_all]") {
    auto results = tandem::run([]() -> tandem::task<std::vector<int>> {
        std::vector<tandem::task<int>> tasks;
        for (int i = 0; i < 1000; ++i) {
            // Reverse deadlines: completion order is the opposite of the vector's.
            tasks.push_back(int_after(std::chrono::milliseconds((999 - i) % 20), i));
        }
        co_return co_await tandem::when_all(std::move(tasks));
    }());
    REQUIRE(results.size() == 1000);
    for (int i = 0; i < 1000; ++i) CHECK(results[std::size_t(i)] == i);
}

TEST_CASE(
    "when_all runs every child to completion and then rethrows the first exception in "
    "argument order",
    "[when_all]") {
    int finished = 0;
    auto start = steady::now();
    // "second" throws first in time, but "first" comes first in argument order.
    CHECK_THROWS_WITH(
        tandem::run(tandem::when_all(
            throw_after(20ms, "first", &finished), throw_after(0ms, "second", &finished),
            count_after(40ms, 1, &finished), nothing_after(30ms, &finished))),
        "first");
    CHECK(finished == 4);  // the siblings were not cancelled
    CHECK(ms_since(start) >= 40.0);
}

TEST_CASE("when_all over a vector rethrows the first exception in order after all finish",
          "[when_all]") {
    int finished = 0;
    auto run_it = [&finished] {
        std::vector<tandem::task<int>> tasks;
        tasks.push_back(count_after(30ms, 0, &finished));
        tasks.push_back(throw_after(10ms, "index 1", &finished));
        tasks.push_back(throw_after(0ms, "index 2", &finished));
        tasks.push_back(count_after(20ms, 3, &finished));
        return tandem::run(tandem::when_all(std::move(tasks)));
    };
    CHECK_THROWS_WITH(run_it(), "index 1");
    CHECK(finished == 4);
}

TEST_CASE("when_any returns the index and value of the first task to finish", "[when_any]") {
    auto start = steady::now();
    auto v = tandem::run(
        tandem::when_any(int_after(10s, 1), string_after(10ms, "winner"), int_after(5s, 3)));
    REQUIRE(v.index() == 1);
    CHECK(std::get<1>(v) == "winner");
    CHECK(ms_since(start) < 2000.0);  // the losers were cancelled, not waited out
}

TEST_CASE("when_any with void tasks reports the winner's index", "[when_any]") {
    int done = 0;
    auto v = tandem::run(tandem::when_any(nothing_after(5s, &done), nothing_after(0ms, &done)));
    CHECK(v.index() == 1);
    CHECK(done == 1);
}

TEST_CASE("when_any cancels the losers and awaits them before it returns", "[when_any]") {
    test_pipe p;
    struct flags {
        bool sleeper_cancelled = false, sleeper_destroyed = false;
        bool reader_cancelled = false, reader_destroyed = false;
        bool seen_at_return[4] = {};
    } f;
    auto start = steady::now();
    tandem::run([](flags* f, int fd) -> tandem::task<> {
        auto v = co_await tandem::when_any(
            long_sleeper(&f->sleeper_cancelled, &f->sleeper_destroyed),
            pipe_reader(fd, &f->reader_cancelled, &f->reader_destroyed), int_after(10ms, 2));
        CHECK(v.index() == 2);
        // Read the flags right here, before anything else runs on the loop.
        f->seen_at_return[0] = f->sleeper_cancelled;
        f->seen_at_return[1] = f->sleeper_destroyed;
        f->seen_at_return[2] = f->reader_cancelled;
        f->seen_at_return[3] = f->reader_destroyed;
    }(&f, p.read_fd));
    CHECK(f.seen_at_return[0]);
    CHECK(f.seen_at_return[1]);
    CHECK(f.seen_at_return[2]);  // the kernel read was cancelled, not abandoned
    CHECK(f.seen_at_return[3]);
    CHECK(ms_since(start) < 2000.0);
    // The cancelled read consumed nothing: a byte written now is still there.
    char byte = 'x';
    REQUIRE(::write(p.write_fd, &byte, 1) == 1);
    REQUIRE(::fcntl(p.read_fd, F_SETFL, O_NONBLOCK) == 0);
    char got = 0;
    CHECK(::read(p.read_fd, &got, 1) == 1);
    CHECK(got == 'x');
}

TEST_CASE("when_any rethrows the winner's exception", "[when_any]") {
    int finished = 0;
    bool cancelled = false, destroyed = false;
    auto start = steady::now();
    CHECK_THROWS_WITH(tandem::run(tandem::when_any(long_sleeper(&cancelled, &destroyed),
                                                   throw_after(5ms, "winner threw", &finished))),
                      "winner threw");
    CHECK(cancelled);
    CHECK(destroyed);
    CHECK(ms_since(start) < 2000.0);
}

namespace {

tandem::task<> counted_sleep(std::chrono::milliseconds d, int* done) {
    co_await tandem::sleep_for(d);
    ++*done;
}

/// Spawns one more task into the group while the join is already waiting.
tandem::task<> spawner(tandem::task_group* g, int* done) {
    co_await tandem::sleep_for(5ms);
    g->spawn(counted_sleep(20ms, done));
    ++*done;
}

tandem::task<> cancellable_sleep(int* cancelled) {
    try {
        co_await tandem::sleep_for(10s);
    } catch (const tandem::operation_cancelled&) {
        ++*cancelled;
        throw;
    }
}

tandem::task<> fail_after(std::chrono::milliseconds d, std::string what) {
    co_await tandem::sleep_for(d);
    throw std::runtime_error(what);
}

}  // namespace

TEST_CASE("task_group join waits for every spawned task including ones spawned during the join",
          "[task_group]") {
    int done = 0;
    tandem::run([](int* done) -> tandem::task<> {
        tandem::task_group g;
        for (int i = 0; i < 100; ++i) {
            g.spawn(counted_sleep(std::chrono::milliseconds(i % 17), done));
        }
        g.spawn(spawner(&g, done));
        CHECK(g.running() == 101);
        co_await g.join();
        CHECK(*done == 102);
        CHECK(g.running() == 0);
    }(&done));
    CHECK(done == 102);
}

TEST_CASE("task_group join of an empty group returns at once", "[task_group]") {
    tandem::run([]() -> tandem::task<> {
        tandem::task_group g;
        co_await g.join();
        CHECK(g.running() == 0);
    }());
}

TEST_CASE("task_group's first exception cancels the other children and join rethrows it",
          "[task_group]") {
    int cancelled = 0;
    auto start = steady::now();
    CHECK_THROWS_WITH(tandem::run([](int* cancelled) -> tandem::task<> {
                          tandem::task_group g;
                          for (int i = 0; i < 5; ++i) g.spawn(cancellable_sleep(cancelled));
                          g.spawn(fail_after(10ms, "first failure"));
                          // A later failure is not the one reported.
                          g.spawn(fail_after(20ms, "second failure"));
                          co_await g.join();
                      }(&cancelled)),
                      "first failure");
    CHECK(cancelled == 5);  // the 10 s sleepers ended with operation_cancelled
    CHECK(ms_since(start) < 2000.0);
}

TEST_CASE("task_group destroyed without join cancels its children and the runtime shuts down",
          "[task_group]") {
    int cancelled = 0;
    int started = 0;
    auto start = steady::now();
    auto owner = [](int* cancelled, int* started, bool started_first) -> tandem::task<> {
        tandem::task_group g;
        for (int i = 0; i < 10; ++i) {
            g.spawn([](int* cancelled, int* started) -> tandem::task<> {
                ++*started;
                co_await cancellable_sleep(cancelled);
            }(cancelled, started));
        }
        if (started_first) co_await tandem::yield();  // let the children reach their sleep
        throw std::runtime_error("owner failed");
    };
    SECTION("children already sleeping") {
        CHECK_THROWS_WITH(tandem::run(owner(&cancelled, &started, true)), "owner failed");
        CHECK(started == 10);
        CHECK(cancelled == 10);
    }
    SECTION("children not started yet") {
        CHECK_THROWS_WITH(tandem::run(owner(&cancelled, &started, false)), "owner failed");
        // They start cancelled: the sleep throws at once.
        CHECK(cancelled == started);
    }
    CHECK(ms_since(start) < 2000.0);
}

TEST_CASE("yield lets the other ready tasks run before resuming", "[yield]") {
    std::vector<std::string> order;
    tandem::run([](std::vector<std::string>* order) -> tandem::task<> {
        auto worker = [](std::vector<std::string>* order, std::string name) -> tandem::task<> {
            for (int i = 0; i < 3; ++i) {
                order->push_back(name + std::to_string(i));
                co_await tandem::yield();
            }
        };
        co_await tandem::when_all(worker(order, "a"), worker(order, "b"));
    }(&order));
    CHECK(order == std::vector<std::string>{"a0", "b0", "a1", "b1", "a2", "b2"});
}

TEST_CASE("cancelling the awaiter of when_all cancels every child including kernel reads",
          "[when_all][cancel]") {
    test_pipe p;
    bool sleeper_cancelled = false, sleeper_destroyed = false;
    bool reader_cancelled = false, reader_destroyed = false;
    auto start = steady::now();
    SECTION("through when_any") {
        auto v = tandem::run(tandem::when_any(
            tandem::when_all(long_sleeper(&sleeper_cancelled, &sleeper_destroyed),
                             pipe_reader(p.read_fd, &reader_cancelled, &reader_destroyed)),
            int_after(10ms, 1)));
        CHECK(v.index() == 1);
    }
    SECTION("through timeout") {
        CHECK_THROWS_AS(
            tandem::run(tandem::timeout(
                10ms,
                tandem::when_all(long_sleeper(&sleeper_cancelled, &sleeper_destroyed),
                                 pipe_reader(p.read_fd, &reader_cancelled, &reader_destroyed)))),
            tandem::timed_out);
    }
    CHECK(sleeper_cancelled);
    CHECK(sleeper_destroyed);
    CHECK(reader_cancelled);
    CHECK(reader_destroyed);
    CHECK(ms_since(start) < 2000.0);
}
