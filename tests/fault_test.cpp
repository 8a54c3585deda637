// SPDX-License-Identifier: MIT
// fault: the library's fault points (lib/fault.hpp), live only in this binary's build of the
// library (tandem_fault in tests/meson.build). Each test sweeps N: the Nth call at a point
// fails, and the failure must reach the right awaiter (or constructor) as a clear
// std::system_error carrying the injected errno, or be absorbed where the library can retry;
// afterwards no fd, child process or /dev/shm entry may be left, and the next run works.
//
//   sqe     every SQE the loop hands out, on io_uring and on epoll
//   cqe     every awaited operation's result (an fd it made is closed first)
//   memfd   the arena's memfd_create        mmap    the arena's mmap
//   fork    the zygote's fork and each worker's clone3 (at start, and when replacing one)
//   accept  each connection a listener accepts
#include <tandem/tandem.hpp>

#include "fault.hpp"
#include "support.hpp"

#include <catch2/catch.hpp>

#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <set>
#include <string>
#include <system_error>
#include <vector>

using namespace std::chrono_literals;
using tandem::detail::fault_arm;
using tandem::detail::fault_calls;
using tandem::detail::fault_fired;
using tandem::detail::fault_point;

namespace {

// An errno nothing in these workloads produces by itself.
constexpr int injected = ENXIO;

/// What a process holds that a failure could leak.
struct holdings {
    std::size_t fds = 0;
    std::set<pid_t> kids;
    std::set<std::string> shm;

    static holdings now() {
        return {dir_entries("/proc/self/fd").size(), children(), dir_entries("/dev/shm")};
    }
};

void check_nothing_left(const holdings& before, const std::string& when) {
    const holdings after = holdings::now();
    INFO(when);
    CHECK(after.fds == before.fds);
    CHECK(after.kids == before.kids);
    CHECK(after.shm == before.shm);
}

/// Disarms every point when a test case ends, however it ends.
struct disarm_all {
    ~disarm_all() {
        for (unsigned p = 0; p < tandem::detail::fault_point_count; ++p) {
            fault_arm(static_cast<fault_point>(p), 0, 0);
        }
    }
};

// ---- the I/O workload: TCP echo, a file, a timer ---------------------------------------------

tandem::task<bool> echo_client(tandem::address to) {
    tandem::tcp_stream s = co_await tandem::tcp_stream::connect(to);
    const std::string msg = "ping over tcp";
    for (int round = 0; round < 3; ++round) {
        co_await s.write_all(std::as_bytes(std::span(msg)));
        std::string back(msg.size(), '\0');
        co_await s.read_exact(std::as_writable_bytes(std::span(back)));
        if (back != msg) co_return false;
    }
    co_await s.shutdown_write();
    co_return true;
}

tandem::task<bool> echo_server(tandem::tcp_listener* listener) {
    tandem::tcp_stream s = co_await listener->accept();
    std::byte buf[64];
    while (const std::size_t n = co_await s.read_some(buf)) {
        co_await s.write_all(std::span(buf, n));
    }
    co_return true;
}

/// TCP echo, a file written and read back, a timer, a job in a worker process. True when
/// everything worked; throws what failed.
tandem::task<bool> io_workload(std::filesystem::path file) {
    auto listener = tandem::tcp_listener::bind(tandem::address::loopback(0));
    // The server only ends when the client has: when_any cancels it then, or
    // whichever throws first wins and the other is cancelled.
    auto r =
        co_await tandem::when_any(echo_client(listener.local_address()), echo_server(&listener));
    // The server wins when it sees the client's shutdown before the client's last step
    // resumes: it can only see it if the client got that far.
    const bool echoed = r.index() == 0 ? std::get<0>(r) : std::get<1>(r);
    co_await tandem::write_file(file, "written through the loop");
    const std::string back = co_await tandem::read_file(file);
    co_await tandem::sleep_for(1ms);
    const int six = co_await tandem::offload_to_process([](int x) { return x * 3; }, 2);
    co_return echoed&& back == "written through the loop" && six == 6;
}

struct sweep_result {
    int clean_errors = 0;  // the injected errno reached the awaiter
    int absorbed = 0;      // the fault hit an internal call and the workload still worked
    unsigned long points = 0;
};

/// Runs the workload once per N until N passes the calls it makes at `p`.
sweep_result sweep_io(fault_point p, tandem::io_backend backend) {
    disarm_all guard;
    const auto file = std::filesystem::temp_directory_path() /
                      ("tandem-fault-" + std::to_string(::getpid()) + ".txt");
    tandem::runtime_options o;
    o.processes.workers = 1;  // its manager watches the worker's pidfd with an SQE too
    o.backend = backend;
    sweep_result out;
    for (unsigned long n = 1;; ++n) {
        const holdings before = holdings::now();
        std::string outcome;
        {
            tandem::runtime rt(o);
            fault_arm(p, n, injected);
            try {
                outcome = rt.block_on(io_workload(file)) ? "worked" : "wrong result";
            } catch (const std::system_error& e) {
                outcome = e.code().value() == injected ? "clean error"
                                                       : std::string("other error: ") + e.what();
            } catch (const std::exception& e) {
                outcome = std::string("other exception: ") + e.what();
            }
        }
        const bool fired = fault_fired(p);
        const unsigned long calls = fault_calls(p);
        fault_arm(p, 0, 0);
        std::filesystem::remove(file);
        INFO("N = " << n << " of " << calls << " calls, " << tandem::to_string(backend) << ": "
                    << outcome);
        if (!fired) {
            CHECK(outcome == "worked");
            out.points = n - 1;
            break;
        }
        if (outcome == "clean error") {
            ++out.clean_errors;
        } else {
            CHECK(outcome == "worked");
            ++out.absorbed;
        }
        check_nothing_left(before, "after N = " + std::to_string(n));
        REQUIRE(n < 500);  // a workload that never ends the sweep
    }
    std::printf("fault %s on %s: %lu points, %d clean errors, %d absorbed\n",
                p == fault_point::sqe ? "sqe" : "cqe", tandem::to_string(backend), out.points,
                out.clean_errors, out.absorbed);
    return out;
}

}  // namespace

TEST_CASE(
    "fault: a failed SQE acquisition at any point reaches its awaiter as a system_error "
    "and leaks nothing",
    "[fault]") {
    for (const tandem::io_backend backend : usable_backends()) {
        const sweep_result r = sweep_io(fault_point::sqe, backend);
        CHECK(r.points > 10);
        CHECK(r.clean_errors > 0);
    }
}

TEST_CASE(
    "fault: a failed completion at any point reaches its awaiter as a system_error and "
    "leaks nothing",
    "[fault]") {
    for (const tandem::io_backend backend : usable_backends()) {
        const sweep_result r = sweep_io(fault_point::cqe, backend);
        CHECK(r.points > 10);
        CHECK(r.clean_errors > 0);
    }
}

// ---- the process pool's start: memfd_create, mmap, fork, clone3 ------------------------------

namespace {

/// Makes a runtime with a pool of `workers` with `p` failing at call `n`; returns "" when it
/// came up, else what its constructor threw. Checks that nothing is left either way.
std::string start_pool_with_fault(fault_point p, unsigned long n, int err, unsigned workers) {
    disarm_all guard;
    const holdings before = holdings::now();
    std::string what;
    fault_arm(p, n, err);
    try {
        tandem::runtime_options o;
        o.processes.workers = workers;
        tandem::runtime rt(o);
        fault_arm(p, 0, 0);
        const int four = rt.block_on([]() -> tandem::task<int> {
            co_return co_await tandem::offload_to_process([](int x) { return x * 2; }, 2);
        }());
        if (four != 4) what = "the pool computed a wrong result";
    } catch (const std::system_error& e) {
        what = e.what();
        CHECK(e.code().value() == err);
    } catch (const std::exception& e) {
        what = std::string("not a system_error: ") + e.what();
        FAIL(what);
    }
    check_nothing_left(before, "fault at call " + std::to_string(n) + ": " + what);
    return what;
}

}  // namespace

TEST_CASE(
    "fault: memfd_create or mmap failing for the arena fails the runtime's constructor "
    "with that errno and leaks nothing",
    "[fault]") {
    std::string what = start_pool_with_fault(fault_point::memfd, 1, EMFILE, 2);
    CHECK_THAT(what, Catch::Contains("memfd_create"));
    what = start_pool_with_fault(fault_point::mmap, 1, ENOMEM, 2);
    CHECK_THAT(what, Catch::Contains("mmap"));
    CHECK(start_pool_with_fault(fault_point::mmap, 2, ENOMEM, 2).empty());  // only one mmap
}

TEST_CASE(
    "fault: fork or clone3 failing at any point of the pool's start fails the constructor "
    "with that errno and leaves no process",
    "[fault]") {
    // Call 1 is the parent's fork of the zygote; calls 2 and 3 are the zygote's clone3 of
    // workers 0 and 1 (it counts on from its copy of the parent's counter).
    CHECK_THAT(start_pool_with_fault(fault_point::fork, 1, EAGAIN, 2), Catch::Contains("fork"));
    CHECK_THAT(start_pool_with_fault(fault_point::fork, 2, EAGAIN, 2),
               Catch::Contains("worker 0") && Catch::Contains("clone3"));
    CHECK_THAT(start_pool_with_fault(fault_point::fork, 3, EAGAIN, 2),
               Catch::Contains("worker 1") && Catch::Contains("clone3"));
    CHECK(start_pool_with_fault(fault_point::fork, 4, EAGAIN, 2).empty());
}

TEST_CASE(
    "fault: a clone3 failing while a dead worker is replaced is retried, and the pool "
    "recovers",
    "[fault]") {
    disarm_all guard;
    const holdings before = holdings::now();
    {
        // Calls: 1 the zygote's fork, 2 worker 0, 3 its replacement (fails), 4 the retry.
        fault_arm(fault_point::fork, 3, EAGAIN);
        tandem::runtime_options o;
        o.processes.workers = 1;
        tandem::runtime rt(o);
        auto crash = [](int) -> int { std::abort(); };
        CHECK_THROWS_AS(rt.block_on([&]() -> tandem::task<int> {
            co_return co_await tandem::offload_to_process(crash, 1);
        }()),
                        tandem::worker_crashed);
        const int six = rt.block_on([]() -> tandem::task<int> {
            co_return co_await tandem::offload_to_process([](int x) { return x * 3; }, 2);
        }());
        CHECK(six == 6);
        const auto stats = rt.processes().stats();
        CHECK(stats.failed_starts == 1);
        CHECK(stats.replacements >= 1);
    }
    check_nothing_left(before, "after the pool recovered");
}

// ---- accept -----------------------------------------------------------------------------------

namespace {

struct accept_outcome {
    int served = 0;          // clients that got their echo
    int dropped = 0;         // clients whose connection ended without one
    std::string server_end;  // what ended the server early ("" if it served them all)
};

tandem::task<> serve(tandem::tcp_listener* listener, int clients, accept_outcome* out) {
    try {
        for (int i = 0; i < clients; ++i) {
            tandem::tcp_stream s = co_await listener->accept();
            std::byte b[8];
            const std::size_t n = co_await s.read_some(b);
            co_await s.write_all(std::span(b, n));
        }
    } catch (const std::system_error& e) {
        out->server_end = e.what();
        CHECK(e.code().value() == EPERM);
    }
}

tandem::task<> clients_one_by_one(tandem::address to, int clients, accept_outcome* out) {
    for (int i = 0; i < clients; ++i) {
        try {
            auto s = co_await tandem::timeout(2s, tandem::tcp_stream::connect(to));
            co_await s.write_all(std::as_bytes(std::span("hi", 2)));
            std::byte back[2];
            co_await tandem::timeout(2s, s.read_exact(back));
            ++out->served;
        } catch (const tandem::end_of_stream&) {
            ++out->dropped;
        } catch (const std::system_error&) {
            ++out->dropped;  // reset by the server's side, or timed out behind a dead server
        }
    }
}

accept_outcome accept_with_fault(unsigned long n, int err, tandem::io_backend backend) {
    disarm_all guard;
    accept_outcome out;
    constexpr int clients = 4;
    const holdings before = holdings::now();
    {
        tandem::runtime_options o;
        o.processes.enabled = false;
        o.backend = backend;
        tandem::runtime rt(o);
        auto listener = tandem::tcp_listener::bind(tandem::address::loopback(0));
        fault_arm(fault_point::accept, n, err);
        // Whichever ends first ends the run: the clients (the server would wait for a
        // connection that never comes), or a server that accept() failed.
        rt.block_on([&]() -> tandem::task<> {
            co_await tandem::when_any(serve(&listener, clients, &out),
                                      clients_one_by_one(listener.local_address(), clients, &out));
        }());
        CHECK(fault_fired(fault_point::accept));
    }
    check_nothing_left(before, "accept fault at " + std::to_string(n));
    return out;
}

}  // namespace

TEST_CASE("fault: an accept failing with EMFILE costs only that connection; the listener goes on",
          "[fault]") {
    for (const tandem::io_backend backend : usable_backends()) {
        for (unsigned long n = 1; n <= 4; ++n) {
            INFO(tandem::to_string(backend) << ", N = " << n);
            const accept_outcome r = accept_with_fault(n, EMFILE, backend);
            // The nth connection is closed by the fault, and the listener accepts the rest.
            CHECK(r.dropped == 1);
            CHECK(r.served == 3);
        }
    }
}

TEST_CASE(
    "fault: an accept failing with another errno reaches the awaiting accept() as a "
    "system_error",
    "[fault]") {
    for (const tandem::io_backend backend : usable_backends()) {
        INFO(tandem::to_string(backend));
        const accept_outcome r = accept_with_fault(2, EPERM, backend);
        CHECK_THAT(r.server_end, Catch::Contains("accept"));
        CHECK(r.served == 1);
    }
}
