// SPDX-License-Identifier: MIT
// offload_to_thread: values, void, move-only results and exceptions come back
// to the caller on its own io thread; the call runs on a bounded pool of other
// threads without stalling the loop; a queued call can be cancelled (it never
// runs), a running one cannot (its value arrives); runtime destruction waits
// for running calls, drops queued ones and leaves no thread behind.
#include <tandem/tandem.hpp>

#include <catch2/catch.hpp>

#include <netdb.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <filesystem>
#include <latch>
#include <memory>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

static_assert(
    std::is_same_v<decltype(tandem::offload_to_thread([] { return 1; })), tandem::task<int>>);
static_assert(std::is_same_v<decltype(tandem::offload_to_thread([] {})), tandem::task<>>);
static_assert(std::is_same_v<decltype(tandem::offload_to_thread(
                                 [](std::unique_ptr<int> p) { return p; }, nullptr)),
                             tandem::task<std::unique_ptr<int>>>);

namespace {

/// Reads the calling thread's id through a volatile pointer: compilers may
/// otherwise reuse a value read before a co_await that moved the coroutine.
std::thread::id (*volatile thread_id_of_caller)() = &std::this_thread::get_id;

std::thread::id current_thread() {
    return thread_id_of_caller();
}

/// Holds pool threads inside a blocking call until opened (once, from any thread).
struct gate {
    std::latch latch{1};
    std::atomic<bool> opened{false};
    std::atomic<int> entered{0};

    void open() {
        if (!opened.exchange(true)) latch.count_down();
    }
    /// The blocking call: announces itself, then waits for open().
    int hold(int value) {
        entered.fetch_add(1);
        latch.wait();
        return value;
    }
};

/// Opens the gate when the scope ends, even by an exception, so a failed check
/// cannot leave pool threads (and the runtime's destructor) waiting forever.
struct opens_at_exit {
    gate* g;
    ~opens_at_exit() { g->open(); }
};

tandem::task<> until_entered(gate* g, int n) {
    while (g->entered.load() < n) co_await tandem::sleep_for(1ms);
}

tandem::task<int> held_call(gate* g, int value) {
    co_return co_await tandem::offload_to_thread([g, value] { return g->hold(value); });
}

// ---- values, void, move-only, exceptions -----------------------------------------

tandem::task<std::string> concatenate(std::string a, int n) {
    // A named callable, moved in: g++ 12 corrupts a closure with a std::string
    // capture that is created inside the co_await expression (see thread.hpp).
    auto repeat = [suffix = std::string("!")](std::string s, int times) {
        std::string out;
        for (int i = 0; i < times; ++i) out += s;
        return out + suffix;
    };
    co_return co_await tandem::offload_to_thread(std::move(repeat), std::move(a), n);
}

int add(int a, int b) {
    return a + b;
}

TEST_CASE("offload_to_thread returns the call's value", "[thread]") {
    CHECK(tandem::run(concatenate("ab", 3)) == "ababab!");
    CHECK(tandem::run([]() -> tandem::task<int> {
              co_return co_await tandem::offload_to_thread(&add, 40, 2);
          }()) == 42);
}

TEST_CASE("offload_to_thread runs a void call to the end before resuming", "[thread]") {
    std::atomic<int> calls{0};
    tandem::run([](std::atomic<int>* c) -> tandem::task<> {
        co_await tandem::offload_to_thread([c] {
            std::this_thread::sleep_for(10ms);
            c->fetch_add(1);
        });
        // The call's side effect is visible once the co_await returns.
        if (c->load() != 1) throw std::logic_error("resumed before the call finished");
    }(&calls));
    CHECK(calls.load() == 1);
}

TEST_CASE("offload_to_thread moves move-only arguments in and results out", "[thread]") {
    auto out = tandem::run([]() -> tandem::task<std::unique_ptr<int>> {
        auto in = std::make_unique<int>(20);
        co_return co_await tandem::offload_to_thread(
            [](std::unique_ptr<int> p, int extra) {
                *p += extra;
                return p;
            },
            std::move(in), 22);
    }());
    REQUIRE(out != nullptr);
    CHECK(*out == 42);
}

struct custom_error : std::runtime_error {
    custom_error(const char* what, int c) : std::runtime_error(what), code(c) {}
    int code;
};

TEST_CASE("an exception thrown by the call reaches the awaiter with its own type", "[thread]") {
    auto failing = []() -> tandem::task<int> {
        co_return co_await tandem::offload_to_thread(
            []() -> int { throw custom_error("from the pool", 7); });
    };
    try {
        tandem::run(failing());
        FAIL("no exception");
    } catch (const custom_error& e) {
        CHECK(e.code == 7);
        CHECK(std::string(e.what()) == "from the pool");
    }
    // A void call's exception too, and the runtime keeps working afterwards.
    tandem::runtime rt;
    CHECK_THROWS_AS(rt.block_on([]() -> tandem::task<> {
        co_await tandem::offload_to_thread([] { throw std::out_of_range("void call"); });
    }()),
                    std::out_of_range);
    CHECK(rt.block_on(concatenate("x", 2)) == "xx!");
}

// ---- threads -----------------------------------------------------------------------

struct thread_report {
    std::thread::id before, call, after;
    bool call_on_io_thread = true;
};

tandem::task<thread_report> where_things_run() {
    thread_report r;
    r.before = current_thread();
    auto [id, on_io] = co_await tandem::offload_to_thread([] {
        bool io =
            tandem::runtime::current() != nullptr || tandem::detail::current_loop() != nullptr;
        return std::pair{std::this_thread::get_id(), io};
    });
    r.call = id;
    r.call_on_io_thread = on_io;
    r.after = current_thread();
    co_return r;
}

TEST_CASE("the call runs off the io threads and the caller resumes on its own io thread",
          "[thread]") {
    tandem::runtime rt(tandem::runtime_options{.io_threads = 2});
    // block_on picks loops round-robin: both io threads get a turn.
    for (int i = 0; i < 4; ++i) {
        thread_report r = rt.block_on(where_things_run());
        CHECK_FALSE(r.call_on_io_thread);
        CHECK(r.call != r.before);
        CHECK(r.call != std::this_thread::get_id());
        CHECK(r.after == r.before);
    }
}

tandem::task<int> tick_until(const bool* done) {
    int ticks = 0;
    while (!*done) {
        co_await tandem::sleep_for(5ms);
        ++ticks;
    }
    co_return ticks;
}

tandem::task<> sleep_in_pool(bool* done) {
    co_await tandem::offload_to_thread([] { std::this_thread::sleep_for(200ms); });
    *done = true;
}

TEST_CASE("a blocking call does not stall the caller's loop", "[thread]") {
    auto start = steady::now();
    auto ticks = tandem::run([]() -> tandem::task<int> {
        bool done = false;
        auto [ignored, n] = co_await tandem::when_all(sleep_in_pool(&done), tick_until(&done));
        (void)ignored;
        co_return n;
    }());
    auto elapsed = steady::now() - start;
    CHECK(elapsed >= 200ms);
    // About 40 ticks of 5 ms fit in 200 ms; a stalled loop would manage 0 or 1.
    CHECK(ticks >= 10);
}

// ---- the pool's bound ----------------------------------------------------------------

struct concurrency {
    std::atomic<int> now{0};
    std::atomic<int> max{0};

    int call(int i) {
        int n = now.fetch_add(1) + 1;
        int seen = max.load();
        while (n > seen && !max.compare_exchange_weak(seen, n)) {
        }
        std::this_thread::sleep_for(200us);
        now.fetch_sub(1);
        return 2 * i;
    }
};

struct many_report {
    long long sum = 0;
    unsigned threads_started = 0;
    unsigned max_threads = 0;
};

tandem::task<many_report> many_calls(concurrency* c, int n) {
    std::vector<tandem::task<int>> calls;
    for (int i = 0; i < n; ++i) {
        calls.push_back(tandem::offload_to_thread([c](int k) { return c->call(k); }, i));
    }
    many_report r;
    for (int v : co_await tandem::when_all(std::move(calls))) r.sum += v;
    r.threads_started = tandem::detail::current_thread_pool().threads_started();
    r.max_threads = tandem::detail::current_thread_pool().max_threads();
    co_return r;
}

TEST_CASE("a thousand concurrent calls all finish, at most pool-size at a time", "[thread]") {
    constexpr int n = 1000;
    concurrency c;
    auto r = tandem::run(many_calls(&c, n), tandem::runtime_options{.blocking_threads = 4});
    CHECK(r.sum == 2LL * (n - 1) * n / 2);
    CHECK(r.max_threads == 4);
    CHECK(r.threads_started <= 4);
    CHECK(c.max.load() <= 4);
    CHECK(c.max.load() > 1);
    CHECK(c.now.load() == 0);
}

TEST_CASE("the default pool has max(2, cores) threads", "[thread]") {
    concurrency c;
    auto r = tandem::run(many_calls(&c, 100));
    unsigned expected = std::max(2U, std::thread::hardware_concurrency());
    CHECK(r.max_threads == expected);
    CHECK(r.threads_started <= expected);
    CHECK(c.max.load() <= static_cast<int>(expected));
}

// ---- cancellation ----------------------------------------------------------------------

struct cancel_report {
    bool cancelled = false;
    bool timed_out = false;
    int value = 0;
    bool gate_was_closed = false;  // the outcome arrived while the pool was still held
};

/// Cancels `*src` once the call under it is surely queued behind the held threads.
tandem::task<> stop_later(std::stop_source* src) {
    co_await tandem::sleep_for(10ms);
    src->request_stop();
}

tandem::task<cancel_report> cancel_queued_call(gate* g, std::atomic<bool>* ran) {
    opens_at_exit guard{g};
    co_await until_entered(g, 2);  // both pool threads are held: the next call queues
    cancel_report r;
    std::stop_source src;
    auto victim = tandem::with_stop_token(src.get_token(),
                                          tandem::offload_to_thread([ran] { ran->store(true); }));
    try {
        co_await tandem::when_all(std::move(victim), stop_later(&src));
    } catch (const tandem::operation_cancelled&) {
        r.cancelled = true;
    }
    r.gate_was_closed = !g->opened.load();
    g->open();
    // FIFO: had the victim stayed queued, it would run before this call.
    r.value = co_await tandem::offload_to_thread([] { return 5; });
    co_return r;
}

TEST_CASE("cancelling a call still queued removes it: it never runs", "[thread]") {
    gate g;
    std::atomic<bool> ran{false};
    auto [a, b, r] = tandem::run(
        [](gate* gp, std::atomic<bool>* ranp) -> tandem::task<std::tuple<int, int, cancel_report>> {
            co_return co_await tandem::when_all(held_call(gp, 1), held_call(gp, 2),
                                                cancel_queued_call(gp, ranp));
        }(&g, &ran),
        tandem::runtime_options{.blocking_threads = 2});
    CHECK(a == 1);
    CHECK(b == 2);
    CHECK(r.cancelled);
    CHECK(r.gate_was_closed);
    CHECK(r.value == 5);
    CHECK_FALSE(ran.load());
}

tandem::task<> release_later(gate* g, std::stop_source* src) {
    opens_at_exit guard{g};
    co_await until_entered(g, 1);  // the call is running
    src->request_stop();
    co_await tandem::sleep_for(20ms);  // the stop has surely reached it by now
}

tandem::task<int> cancel_running_call(gate* g) {
    std::stop_source src;
    auto [value, ignored] = co_await tandem::when_all(
        tandem::with_stop_token(src.get_token(), held_call(g, 42)), release_later(g, &src));
    (void)ignored;
    co_return value;
}

TEST_CASE("cancelling a running call waits for it and delivers its real value", "[thread]") {
    gate g;
    CHECK(tandem::run(cancel_running_call(&g)) == 42);
    CHECK(g.opened.load());
}

tandem::task<cancel_report> time_out_queued_call(gate* g, std::atomic<bool>* ran) {
    opens_at_exit guard{g};
    co_await until_entered(g, 1);  // the only pool thread is held
    cancel_report r;
    auto start = steady::now();
    try {
        co_await tandem::timeout(20ms, tandem::offload_to_thread([ran] { ran->store(true); }));
    } catch (const tandem::timed_out&) {
        r.timed_out = true;
    }
    r.value = static_cast<int>((steady::now() - start) / 1ms);
    r.gate_was_closed = !g->opened.load();
    co_return r;
}

TEST_CASE("timeout around a queued call times out without running it", "[thread]") {
    gate g;
    std::atomic<bool> ran{false};
    auto [held, r] = tandem::run(
        [](gate* gp, std::atomic<bool>* ranp) -> tandem::task<std::tuple<int, cancel_report>> {
            co_return co_await tandem::when_all(held_call(gp, 3), time_out_queued_call(gp, ranp));
        }(&g, &ran),
        tandem::runtime_options{.blocking_threads = 1});
    CHECK(held == 3);
    CHECK(r.timed_out);
    CHECK(r.gate_was_closed);
    CHECK(r.value >= 20);
    CHECK(r.value < 2000);
    CHECK_FALSE(ran.load());
}

TEST_CASE("a task cancelled before it awaits does not start the call", "[thread]") {
    std::atomic<bool> ran{false};
    bool cancelled = tandem::run([](std::atomic<bool>* r) -> tandem::task<bool> {
        std::stop_source src;
        src.request_stop();
        try {
            co_await tandem::with_stop_token(src.get_token(),
                                             tandem::offload_to_thread([r] { r->store(true); }));
        } catch (const tandem::operation_cancelled&) {
            co_return true;
        }
        co_return false;
    }(&ran));
    CHECK(cancelled);
    CHECK_FALSE(ran.load());
}

// ---- a real blocking call -----------------------------------------------------------------

struct lookup {
    int rc = -1;
    std::vector<int> families;
};

tandem::task<lookup> resolve(std::string host) {
    co_return co_await tandem::offload_to_thread(
        [](std::string name) {
            addrinfo hints{};
            hints.ai_family = AF_UNSPEC;
            hints.ai_socktype = SOCK_STREAM;
            addrinfo* res = nullptr;
            lookup out;
            out.rc = ::getaddrinfo(name.c_str(), "80", &hints, &res);
            for (addrinfo* p = res; p != nullptr; p = p->ai_next)
                out.families.push_back(p->ai_family);
            if (res != nullptr) ::freeaddrinfo(res);
            return out;
        },
        std::move(host));
}

TEST_CASE("getaddrinfo of localhost runs through offload_to_thread", "[thread]") {
    lookup l = tandem::run(resolve("localhost"));
    INFO("getaddrinfo: " << ::gai_strerror(l.rc));
    REQUIRE(l.rc == 0);
    REQUIRE_FALSE(l.families.empty());
    for (int f : l.families) CHECK((f == AF_INET || f == AF_INET6));
}

// ---- runtime destruction ---------------------------------------------------------------------

std::size_t thread_count() {
    std::size_t n = 0;
    for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/task"))
        ++n;
    return n;
}

struct shutdown_counts {
    std::atomic<int> delivered{0};  // running calls whose value arrived
    std::atomic<int> cancelled{0};  // queued calls cancelled by shutdown
    std::atomic<int> queued_ran{0};
};

tandem::task<> running_root(gate* g, shutdown_counts* c) {
    int v = co_await held_call(g, 9);
    if (v == 9) c->delivered.fetch_add(1);
}

tandem::task<> queued_root(shutdown_counts* c) {
    try {
        co_await tandem::offload_to_thread([c] { c->queued_ran.fetch_add(1); });
    } catch (const tandem::operation_cancelled&) {
        c->cancelled.fetch_add(1);
        throw;
    }
}

TEST_CASE("destroying the runtime waits for running calls, drops queued ones, leaks no thread",
          "[thread]") {
    const std::size_t threads_before = thread_count();
    gate g;
    shutdown_counts c;
    std::thread releaser;
    {
        // No process pool: its short-lived pre-fault thread would blur the count.
        tandem::runtime rt(tandem::runtime_options{
            .io_threads = 2, .processes = {.enabled = false}, .blocking_threads = 2});
        // One held root per loop: their calls take the two pool threads, so
        // the later calls (on both loops) stay queued.
        rt.spawn(running_root(&g, &c));
        rt.spawn(running_root(&g, &c));
        while (g.entered.load() < 2) std::this_thread::sleep_for(1ms);
        for (int i = 0; i < 5; ++i) rt.spawn(queued_root(&c));
        CHECK(thread_count() == threads_before + 4);  // 2 io threads + 2 pool threads
        // Opens the gate only once shutdown has cancelled every queued call, so
        // the destructor below is blocked on the running ones meanwhile.
        releaser = std::thread([&] {
            while (c.cancelled.load() < 5) std::this_thread::sleep_for(1ms);
            g.open();
        });
    }
    releaser.join();
    CHECK(c.delivered.load() == 2);
    CHECK(c.cancelled.load() == 5);
    CHECK(c.queued_ran.load() == 0);
    CHECK(thread_count() == threads_before);
}

}  // namespace
