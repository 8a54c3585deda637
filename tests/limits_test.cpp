// SPDX-License-Identifier: MIT

// Resource limits: RLIMIT_NOFILE low (connect fails with EMFILE and works once fds are free;
// a listener serves every client of a burst larger than the fd table; a runtime that cannot
// get its fds throws a std::system_error naming the fd limit, leaks none, and comes up once fds
// are free; a process pool starts under RLIMIT_NOFILE 64), RLIMIT_MEMLOCK 0 (tandem registers no
// buffers or files with io_uring, so nothing needs locked memory: a runtime with a process
// pool and sockets works), and a full offload arena (jobs from two io threads, some under
// timeouts that expire while they wait, all end with their result or timed_out).
//
// A limit set by a test must not reach the other tests: each limit case runs in a fresh copy
// of this binary (start_self), a hidden test case that reports through its exit status and
// what it prints.

#include <tandem/tandem.hpp>

#include <catch2/catch.hpp>

#include "support.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

namespace {

using namespace std::chrono_literals;

constexpr const char* child_env = "TANDEM_LIMITS_CHILD";

tandem::runtime_options no_pool() {
    tandem::runtime_options o;
    o.io_threads = 1;
    o.processes.enabled = false;
    return o;
}

tandem::runtime_options small_pool() {
    tandem::runtime_options o;
    o.io_threads = 1;
    o.processes.workers = 2;
    o.processes.arena_bytes = 16 << 20;
    return o;
}

std::size_t open_fds() {
    return dir_entries("/proc/self/fd").size();
}

/// Lowers the soft RLIMIT_NOFILE to `n` fds.
void set_fd_limit(std::size_t n) {
    rlimit limit{};
    ::getrlimit(RLIMIT_NOFILE, &limit);
    limit.rlim_cur = n;
    if (::setrlimit(RLIMIT_NOFILE, &limit) != 0) std::_Exit(90);
}

/// Opens /dev/null until the table is full; the fds are in `filler`. Exits if the limit is
/// not EMFILE.
///
/// Under UBSan a child with a full table prints many "invalid vptr ... memory cannot be
/// printed" reports: the vptr check probes memory through a pipe, which it cannot open then.
/// They are false positives, and they do not stop the child (not even with halt_on_error=1,
/// as test.sh sets it); they only show in a failing case's output.
void fill_fd_table(std::vector<int>* filler) {
    for (int fd; (fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0;) filler->push_back(fd);
    if (errno != EMFILE) std::_Exit(91);
}

void free_fds(std::vector<int>* filler, std::size_t n) {
    for (std::size_t i = 0; i < n && !filler->empty(); ++i) {
        ::close(filler->back());
        filler->pop_back();
    }
}

/// Prints a line for the parent (stdout is its pipe) and flushes it.
void say(const std::string& line) {
    std::printf("%s\n", line.c_str());
    std::fflush(stdout);
}

/// Starts the hidden case `what` in a fresh copy of this binary; `out` gets what it printed.
/// Returns the wait status. `to_child`, if not null, gets a pipe to its stdin.
pid_t start_child(const char* what, int* from_child, int* to_child = nullptr) {
    int out[2], in[2] = {-1, -1};
    REQUIRE(::pipe2(out, O_CLOEXEC) == 0);
    if (to_child != nullptr) REQUIRE(::pipe2(in, O_CLOEXEC) == 0);
    const std::string marker = std::string(child_env) + "=" + what;
    const pid_t pid = start_self("[.limits_child]", marker.c_str(), in[0], out[1]);
    ::close(out[1]);
    if (in[0] >= 0) ::close(in[0]);
    REQUIRE(pid > 0);
    *from_child = out[0];
    if (to_child != nullptr) *to_child = in[1];
    return pid;
}

std::string read_all(int fd) {
    std::string text;
    char buf[4096];
    for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;) text.append(buf, std::size_t(n));
    return text;
}

/// Runs the hidden case `what` to its end; returns its exit code (-signal if killed).
int run_child(const char* what, std::string* output) {
    int from_child = -1;
    const pid_t pid = start_child(what, &from_child);
    *output = read_all(from_child);
    ::close(from_child);
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

// ---- the child cases
// -----------------------------------------------------------------------------

/// connect with no fd left: EMFILE naming the target; with two fds freed (the client's socket
/// and the accepted one) a connection is made and carries a byte.
tandem::task<int> connect_out_of_fds(tandem::tcp_listener* listener, std::vector<int>* filler) {
    const tandem::address at = listener->local_address();
    int code = 0;
    try {
        (void)co_await tandem::tcp_stream::connect(at);
    } catch (const std::system_error& e) {
        code = e.code().value();
        say(std::string("first connect: ") + e.what());
        if (std::string(e.what()).find(at.to_string()) == std::string::npos) co_return 11;
    }
    if (code != EMFILE) co_return 10;
    free_fds(filler, 2);
    auto [client, server] =
        co_await tandem::when_all(tandem::tcp_stream::connect(at), listener->accept());
    const std::byte one[1] = {std::byte{42}};
    co_await client.write_all(one);
    std::byte got[1];
    co_await server.read_exact(got);
    co_return got[0] == std::byte{42} ? 0 : 12;
}

void child_connect_emfile() {
    tandem::runtime rt(no_pool());
    auto listener = tandem::tcp_listener::bind(tandem::address::loopback(0));
    set_fd_limit(open_fds() + 16);
    std::vector<int> filler;
    fill_fd_table(&filler);
    std::_Exit(rt.block_on(connect_out_of_fds(&listener, &filler)));
}

/// Reads the client's byte, answers, then holds the connection until the client closes it.
tandem::task<> hold_until_closed(tandem::tcp_stream s, int* open_now, int* max_open) {
    *max_open = std::max(*max_open, ++*open_now);
    try {
        std::byte b[1];
        co_await s.read_exact(b);
        co_await s.write_all(b);
        for (;;) {
            const std::size_t n = co_await s.read_some(b);  // g++ 12: not in the condition
            if (n == 0) break;
        }
    } catch (const std::exception& e) {
        say(std::string("connection: ") + e.what());
    }
    --*open_now;
}

tandem::task<int> serve_n(tandem::tcp_listener* listener, int n) {
    int open_now = 0, max_open = 0;
    tandem::task_group group;
    for (int i = 0; i < n; ++i) {
        tandem::tcp_stream s = co_await tandem::timeout(20s, listener->accept());
        group.spawn(hold_until_closed(std::move(s), &open_now, &max_open));
    }
    co_await group.join();
    say("served " + std::to_string(n) + ", at most " + std::to_string(max_open) + " at once");
    co_return max_open;
}

constexpr int burst_clients = 40;
constexpr int burst_room = 6;  // fds free for connections in the server

void child_accept_burst() {
    tandem::runtime rt(no_pool());
    auto listener = tandem::tcp_listener::bind(tandem::address::loopback(0));
    set_fd_limit(open_fds() + burst_room);
    say(std::to_string(listener.local_address().port()));
    const int max_open = rt.block_on(serve_n(&listener, burst_clients));
    // The fd table, not the clients, bounded how many were open at once: unbounded, all of
    // them would be (the parent closes none before every one has connected and been answered
    // or queued). RLIMIT_NOFILE bounds fd numbers, so holes below the limit add a little room.
    std::_Exit(max_open < burst_clients ? 0 : 20);
}

/// Tries to build a runtime (and run a task on it) with 0, 1, 2, ... fds free until one comes
/// up. Every failure must be a std::system_error that leaks no fd. Prints a line per attempt:
/// "free <k>: <what>" or "free <k>: up". Exit status 0 if every failure was EMFILE, 37 if some
/// had another errno (the pool's zygote, see the RLIMIT_NOFILE 64 test), others for failures.
void child_runtime_fd_sweep(bool pool) {
    // Above the zygote's fixed fd numbers (see the RLIMIT_NOFILE 64 test) when there is a pool.
    set_fd_limit(pool ? 1100 : open_fds() + 64);
    std::vector<int> filler;
    fill_fd_table(&filler);
    auto one = []() -> tandem::task<int> { co_return 1; };
    bool other_errno = false;
    for (std::size_t k = 0; !filler.empty(); ++k, free_fds(&filler, 1)) {
        const std::size_t fds = open_fds();
        try {
            tandem::runtime rt(pool ? small_pool() : no_pool());
            if (rt.block_on(one()) != 1) std::_Exit(34);
            say("free " + std::to_string(k) + ": up");
            if (k == 0) std::_Exit(30);  // it needed no fd at all?
            std::_Exit(other_errno ? 37 : 0);
        } catch (const std::system_error& e) {
            say("free " + std::to_string(k) + ": " + e.what());
            other_errno = other_errno || e.code().value() != EMFILE;
        } catch (const std::exception& e) {
            say("free " + std::to_string(k) + ": not a system_error: " + e.what());
            std::_Exit(33);
        }
        if (open_fds() != fds) {
            say("the failed constructor leaked " + std::to_string(open_fds() - fds) + " fds");
            std::_Exit(35);
        }
    }
    std::_Exit(36);
}

/// An echo of `bytes` over TCP and an offloaded job, side by side.
tandem::task<int> sockets_and_offload(std::size_t bytes) {
    auto listener = tandem::tcp_listener::bind(tandem::address::loopback(0));
    auto [client, server] = co_await tandem::when_all(
        tandem::tcp_stream::connect(listener.local_address()), listener.accept());
    std::vector<std::byte> sent(bytes, std::byte{7}), back(bytes);
    auto echo = [](tandem::tcp_stream* s, std::size_t n) -> tandem::task<> {
        std::vector<std::byte> buf(n);
        co_await s->read_exact(buf);
        co_await s->write_all(buf);
    };
    auto [primes, echoed, got] =
        co_await tandem::when_all(tandem::offload_to_process(count_primes, 0L, 100'000L),
                                  echo(&server, bytes), client.write_all(sent));
    (void)echoed;
    (void)got;
    co_await client.read_exact(back);
    co_return primes == 9592 && back == sent ? 0 : 41;
}

void child_memlock_zero() {
    const rlimit zero{0, 0};
    if (::setrlimit(RLIMIT_MEMLOCK, &zero) != 0) std::_Exit(40);
    tandem::runtime rt(small_pool());
    if (!rt.processes().enabled()) std::_Exit(42);
    std::_Exit(rt.block_on(sockets_and_offload(1 << 20)));
}

void child_pool_low_nofile() {
    const char* n = std::getenv("TANDEM_LIMITS_NOFILE");  // for bisecting by hand
    set_fd_limit(n != nullptr ? std::strtoul(n, nullptr, 10) : 64);
    int status = 0;
    try {
        tandem::runtime rt(small_pool());
        status = rt.block_on(sockets_and_offload(64 << 10));
    } catch (const std::exception& e) {
        say(std::string("pool under a low RLIMIT_NOFILE: ") + e.what());
        status = 50;
    }
    std::_Exit(status);
}

}  // namespace

TEST_CASE("child: runs one limit case", "[.limits_child]") {
    const char* what = std::getenv(child_env);
    if (what == nullptr) return;
    ::dup2(STDOUT_FILENO, STDERR_FILENO);
    const std::string w = what;
    if (w == "connect_emfile") child_connect_emfile();
    if (w == "accept_burst") child_accept_burst();
    if (w == "runtime_fd_sweep") child_runtime_fd_sweep(false);
    if (w == "runtime_fd_sweep_pool") child_runtime_fd_sweep(true);
    if (w == "memlock_zero") child_memlock_zero();
    if (w == "pool_low_nofile") child_pool_low_nofile();
    std::_Exit(99);
}

// ---- RLIMIT_NOFILE
// --------------------------------------------------------------------------------

TEST_CASE(
    "limits: connect with no fd left throws EMFILE naming the address, and works once "
    "fds are freed",
    "[limits]") {
    std::string out;
    const int code = run_child("connect_emfile", &out);
    INFO(out);
    CHECK(code == 0);
    CHECK_THAT(out, Catch::Contains("first connect: ") && Catch::Contains("127.0.0.1:"));
}

TEST_CASE("limits: a burst of clients larger than the fd table is served in full as fds free up",
          "[limits]") {
    int from_child = -1;
    const pid_t pid = start_child("accept_burst", &from_child);
    std::string first;
    char c = 0;
    // The port, after the line a child on the epoll backend prints first (./test.sh
    // --block-io-uring).
    do {
        first.clear();
        while (::read(from_child, &c, 1) == 1 && c != '\n') first.push_back(c);
    } while (first.starts_with("tandem: using the epoll backend"));
    const int port = std::atoi(first.c_str());
    int served = 0;
    std::string problem;
    if (port > 0) {
        // Every client queued in the backlog before the server accepts any of them.
        std::vector<int> clients;
        for (int i = 0; i < burst_clients; ++i) {
            const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
            sockaddr_in to{};
            to.sin_family = AF_INET;
            to.sin_port = htons(static_cast<std::uint16_t>(port));
            to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            if (fd < 0 || ::connect(fd, reinterpret_cast<const sockaddr*>(&to), sizeof to) != 0 ||
                ::send(fd, "x", 1, MSG_NOSIGNAL) != 1) {
                problem = "client " + std::to_string(i) + ": " + std::strerror(errno);
                if (fd >= 0) ::close(fd);
                break;
            }
            clients.push_back(fd);
        }
        // In order: client i is accepted once enough clients before it closed.
        for (int fd : clients) {
            pollfd p{fd, POLLIN, 0};
            char reply = 0;
            if (problem.empty() && ::poll(&p, 1, 20'000) == 1 && ::recv(fd, &reply, 1, 0) == 1 &&
                reply == 'x') {
                ++served;
            } else if (problem.empty()) {
                problem = "client " + std::to_string(served) + " got no answer";
            }
            ::close(fd);
        }
    } else {
        problem = "no port from the child";
    }
    if (!problem.empty()) ::kill(pid, SIGKILL);
    const std::string rest = read_all(from_child);
    ::close(from_child);
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    INFO(problem << "\nchild said: " << first << "\n" << rest);
    CHECK(served == burst_clients);
    REQUIRE(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    CHECK_THAT(rest, Catch::Contains("served 40"));
}

TEST_CASE(
    "limits: a runtime short of fds throws a system_error, leaks no fd, and comes up once "
    "fds are free",
    "[limits]") {
    std::string out;
    SECTION("without a process pool: EMFILE each time") {
        const int code = run_child("runtime_fd_sweep", &out);
        INFO(out);
        CHECK(code == 0);
    }
    SECTION("with a process pool") {
        const int code = run_child("runtime_fd_sweep_pool", &out);
        INFO(out);
        CHECK(code == 0);  // 37 would be a failure with another errno than EMFILE
    }
}

// Whichever fd a runtime fails to get (an eventfd, the arena's memfd, the zygote's pipe or
// socket, or the zygote's own room to arrange its fds), the error says the process is out of
// fds and how to raise the limit. (Before: bare "Too many open files" messages, and a zygote
// that died in a full fd table, reported as "recv: Connection reset by peer".)
TEST_CASE("limits: every error of a runtime short of fds is EMFILE and names the fd limit",
          "[limits]") {
    for (const char* what : {"runtime_fd_sweep", "runtime_fd_sweep_pool"}) {
        std::string out;
        const int code = run_child(what, &out);
        INFO(what << ":\n" << out);
        CHECK(code == 0);
        std::size_t at = 0;
        for (std::size_t end; (end = out.find('\n', at)) != std::string::npos; at = end + 1) {
            const std::string line = out.substr(at, end - at);
            if (line.rfind("free ", 0) != 0 || line.ends_with(": up")) continue;
            INFO(line);
            CHECK((line.find("ulimit -n") != std::string::npos ||
                   line.find("RLIMIT_NOFILE") != std::string::npos));
        }
    }
}

// A runtime with a process pool could not start under RLIMIT_NOFILE 1003 or lower (systemd's
// LimitNOFILE= or a container often sets less than 1024): the zygote moved its fds to numbers
// from 1000 up, F_DUPFD failed with EINVAL past the limit, and the zygote died.
TEST_CASE("limits: a runtime with a process pool works under RLIMIT_NOFILE 64", "[limits]") {
    std::string out;
    const int code = run_child("pool_low_nofile", &out);
    INFO(out);
    CHECK(code == 0);
}

// ---- RLIMIT_MEMLOCK
// ------------------------------------------------------------------------------

// tandem registers no buffers and no files with io_uring (the only io_uring_register call is
// io_uring_register_sync_cancel, which pins nothing), and the arena is a plain memfd mapping:
// there is no registered-buffer path to fall back from. What can be tested is that nothing
// needs locked memory: with RLIMIT_MEMLOCK 0 a runtime with a process pool and sockets works.
// (On kernels before 5.12 the rings themselves count against RLIMIT_MEMLOCK; there the runtime
// throws ENOMEM with a message naming the limit, see ring_setup.cpp.)
TEST_CASE("limits: with RLIMIT_MEMLOCK 0 a runtime with a process pool and sockets works",
          "[limits]") {
    std::string out;
    const int code = run_child("memlock_zero", &out);
    INFO(out);
    CHECK(code == 0);
}

// ---- a full arena
// --------------------------------------------------------------------------------

namespace {

constexpr std::size_t mib = std::size_t{1} << 20;

std::vector<char> slow_echo(std::vector<char> v) {
    ::usleep(5000);
    return v;
}

/// Runs `t` on io thread `i` of `rt` and waits for it (block_on picks a loop itself).
template <class T>
T run_on(tandem::runtime& rt, unsigned i, tandem::task<T> t) {
    tandem::detail::blocking_result<T> result;
    tandem::detail::start_root(*tandem::detail_loop_of(rt, i),
                               tandem::detail::blocking_root(std::move(t), &result));
    return result.wait();
}

struct arena_outcome {
    int untimed_ok = 0, timed_ok = 0, timed_out = 0;
    std::vector<std::string> bad;
};

/// 1 MiB job `i`; "" if its result came back intact.
tandem::task<std::string> big_job(int i, std::chrono::milliseconds limit) {
    const std::vector<char> sent(mib, char('a' + i % 26));
    std::vector<char> back;
    if (limit.count() > 0) {
        back = co_await tandem::timeout(limit, tandem::offload_to_process(slow_echo, sent));
    } else {
        back = co_await tandem::offload_to_process(slow_echo, sent);
    }
    co_return back == sent ? "" : "job " + std::to_string(i) + ": wrong result";
}

tandem::task<> record_job(int i, std::chrono::milliseconds limit, arena_outcome* out) {
    try {
        const std::string wrong = co_await big_job(i, limit);
        if (!wrong.empty()) {
            out->bad.push_back(wrong);
        } else {
            ++(limit.count() > 0 ? out->timed_ok : out->untimed_ok);
        }
    } catch (const tandem::timed_out&) {
        if (limit.count() > 0) {
            ++out->timed_out;
        } else {
            out->bad.push_back("job " + std::to_string(i) + ": timed_out without a timeout");
        }
    } catch (const std::exception& e) {
        out->bad.push_back("job " + std::to_string(i) + ": " + e.what());
    }
}

/// 16 jobs without a timeout, then 12 whose timeouts (1 to 199 ms) expire while they wait for
/// arena room, while they run (the worker is killed and replaced) or never; then 8 more jobs
/// once the storm is over.
tandem::task<arena_outcome> arena_storm(int first) {
    arena_outcome out;
    std::vector<tandem::task<>> jobs;
    for (int i = 0; i < 16; ++i) jobs.push_back(record_job(first + i, 0ms, &out));
    for (int i = 0; i < 12; ++i) {
        jobs.push_back(record_job(first + 16 + i, std::chrono::milliseconds(1 + 18 * i), &out));
    }
    co_await tandem::when_all(std::move(jobs));
    std::vector<tandem::task<>> after;
    for (int i = 0; i < 8; ++i) after.push_back(record_job(first + 100 + i, 0ms, &out));
    co_await tandem::when_all(std::move(after));
    co_return out;
}

}  // namespace

// process_test.cpp's "when slots or arena run out, jobs wait their turn and all complete" covers
// one io thread with no timeouts; this is two io threads filling one small arena at once, with
// timeouts firing at every stage of a waiting or running job.
TEST_CASE(
    "limits: a full arena shared by two io threads with timeouts firing: every job ends "
    "with its result or timed_out, and the pool works after",
    "[limits]") {
    tandem::runtime_options o;
    o.io_threads = 2;
    o.processes.workers = 2;
    o.processes.arena_bytes = 4 * mib;  // about three 1 MiB jobs at a time
    tandem::runtime rt(o);
    arena_outcome second;
    std::thread other([&] { second = run_on(rt, 1, arena_storm(1000)); });
    const arena_outcome first = run_on(rt, 0, arena_storm(0));
    other.join();
    const arena_outcome* both[] = {&first, &second};
    for (const arena_outcome* out : both) {
        INFO("untimed ok " << out->untimed_ok << ", timed ok " << out->timed_ok << ", timed out "
                           << out->timed_out << (out->bad.empty() ? "" : "; ")
                           << (out->bad.empty() ? "" : out->bad.front()));
        CHECK(out->bad.empty());
        CHECK(out->untimed_ok == 16 + 8);  // backpressure, not failure
        CHECK(out->timed_ok + out->timed_out == 12);
        CHECK(out->timed_out > 0);  // a 1 ms limit behind 16 jobs of 5 ms each always expires
    }
}
