// SPDX-License-Identifier: MIT
// runtime: run/block_on, io threads and which thread a task runs on, cross-loop
// wake-ups, shutdown with work pending, failures of spawned tasks, broken
// preconditions, io_uring blocked by seccomp, and a tiny ring under load.
#include <tandem/tandem.hpp>

#include "block_io_uring.hpp"
#include "support.hpp"
#include "uring_op.hpp"

#include <catch2/catch.hpp>

#include <dirent.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstddef>
#include <cstdlib>
#include <latch>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

using namespace std::chrono_literals;

namespace {

using clock_type = std::chrono::steady_clock;

// ---- helpers ------------------------------------------------------------------

/// Counts live instances: placed in task frames, it shows every frame was
/// destroyed (its cleanup ran).
struct live_guard {
    explicit live_guard(std::atomic<int>* c) noexcept : count(c) { count->fetch_add(1); }
    ~live_guard() { count->fetch_sub(1); }
    live_guard(const live_guard&) = delete;
    live_guard& operator=(const live_guard&) = delete;
    std::atomic<int>* count;
};

tandem::task<int> nop_op() {
    co_return co_await tandem::detail::uring_op([](io_uring_sqe* sqe) { io_uring_prep_nop(sqe); });
}

/// A one-byte read on `fd` (an empty pipe never completes unless cancelled).
tandem::task<int> pipe_read(int fd) {
    char byte = 0;
    co_return co_await tandem::detail::uring_op(
        [&](io_uring_sqe* sqe) { io_uring_prep_read(sqe, fd, &byte, 1, 0); });
}

struct pipe_fds {
    int fds[2] = {-1, -1};
    pipe_fds() { REQUIRE(::pipe2(fds, O_CLOEXEC) == 0); }
    ~pipe_fds() {
        ::close(fds[0]);
        ::close(fds[1]);
    }
    pipe_fds(const pipe_fds&) = delete;
    pipe_fds& operator=(const pipe_fds&) = delete;
    int read_end() const { return fds[0]; }
};

std::size_t count_open_fds() {
    std::size_t n = 0;
    DIR* d = ::opendir("/proc/self/fd");
    REQUIRE(d != nullptr);
    while (dirent* e = ::readdir(d)) {
        if (e->d_name[0] != '.') ++n;
    }
    ::closedir(d);
    return n;
}

/// Runs the hidden test case tagged `child_tag` in a fresh copy of this binary
/// (fork, then exec) and returns its wait status. The exec matters: a child
/// that starts threads straight after fork() in a multi-threaded process is
/// not supported by TSan (its thread registry still holds the parent's
/// threads), and Catch's state and signal handlers would be shared too.
int in_fresh_process(const char* child_tag) {
    // Built before fork: the child may only make async-signal-safe calls.
    static char child_marker[] = "TANDEM_RUNTIME_TEST_CHILD=1";
    std::vector<char*> env;
    for (char** e = environ; *e != nullptr; ++e) env.push_back(*e);
    env.push_back(child_marker);
    env.push_back(nullptr);
    std::fflush(nullptr);  // nothing buffered twice
    pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        ::execle("/proc/self/exe", "runtime_test", child_tag, "--out", "/dev/null",
                 static_cast<char*>(nullptr), env.data());
        ::_exit(127);
    }
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    return status;
}

/// For the hidden child test cases: a fatal signal ends the process plainly
/// (Catch's handler would report a failed test of its own first).
void default_fatal_signals() {
    for (int sig : {SIGABRT, SIGSEGV, SIGILL, SIGFPE, SIGBUS}) std::signal(sig, SIG_DFL);
}

/// The hidden child test cases act only when started by in_fresh_process, so
/// running every hidden test (`[.]`) does not end the binary early.
bool started_as_child() {
    return std::getenv("TANDEM_RUNTIME_TEST_CHILD") != nullptr;
}

/// std::this_thread::get_id() through an opaque pointer: pthread_self is
/// declared `const`, so clang may reuse its value across a co_await that moves
/// the coroutine to another thread. The volatile load forces a fresh call.
std::thread::id (*volatile thread_id_of_caller)() = &std::this_thread::get_id;

std::thread::id current_thread() {
    return thread_id_of_caller();
}

// ---- run / block_on -----------------------------------------------------------

tandem::task<int> add(int a, int b) {
    co_await tandem::yield();
    co_return a + b;
}

tandem::task<std::string> fails() {
    co_await tandem::sleep_for(1ms);
    throw std::runtime_error("failed on purpose");
}

tandem::task<std::thread::id> thread_of_task() {
    co_await tandem::yield();
    co_return current_thread();
}

}  // namespace

TEST_CASE("run returns the task's value", "[runtime]") {
    CHECK(tandem::run(add(40, 2)) == 42);
    CHECK(tandem::run(add(1, 2), tandem::runtime_options{.io_threads = 2}) == 3);
}

TEST_CASE("run rethrows the task's exception", "[runtime]") {
    CHECK_THROWS_WITH(tandem::run(fails()), "failed on purpose");
}

TEST_CASE("block_on works repeatedly on one runtime", "[runtime]") {
    tandem::runtime rt;
    for (int i = 0; i < 200; ++i) REQUIRE(rt.block_on(add(i, 1)) == i + 1);
    CHECK_THROWS_AS(rt.block_on(fails()), std::runtime_error);
    CHECK(rt.block_on(add(2, 3)) == 5);  // still usable after a failure
}

namespace {

struct thread_record {
    std::mutex mutex;
    std::set<std::thread::id> ids;
    void add(std::thread::id id) {
        std::lock_guard lock(mutex);
        ids.insert(id);
    }
};

tandem::task<> record_thread(thread_record* rec, std::latch* done) {
    co_await tandem::yield();
    rec->add(current_thread());
    done->count_down();
}

}  // namespace

TEST_CASE("one io thread runs every task on the same thread, not the caller's", "[runtime]") {
    constexpr int tasks = 16;
    thread_record rec;
    std::latch done(tasks);
    tandem::runtime rt;
    CHECK(rt.io_threads() == 1);
    for (int i = 0; i < tasks; ++i) rt.spawn(record_thread(&rec, &done));
    done.wait();
    std::thread::id block_on_thread = rt.block_on(thread_of_task());
    REQUIRE(rec.ids.size() == 1);
    CHECK(*rec.ids.begin() == block_on_thread);
    CHECK(block_on_thread != std::this_thread::get_id());
}

TEST_CASE("two io threads: tasks spawned from outside land on both loops", "[runtime]") {
    constexpr int tasks = 16;
    thread_record rec;
    std::latch done(tasks);
    tandem::runtime rt(tandem::runtime_options{.io_threads = 2});
    CHECK(rt.io_threads() == 2);
    for (int i = 0; i < tasks; ++i) rt.spawn(record_thread(&rec, &done));
    done.wait();
    CHECK(rec.ids.size() == 2);
    CHECK(rec.ids.count(std::this_thread::get_id()) == 0);
    // block_on uses both loops too
    std::set<std::thread::id> block_on_threads;
    for (int i = 0; i < 4; ++i) block_on_threads.insert(rt.block_on(thread_of_task()));
    CHECK(block_on_threads == rec.ids);
}

// ---- a task stays on its loop -----------------------------------------------

namespace {

struct stay_report {
    std::atomic<int> checked{0};
    std::atomic<int> moved{0};  // a check found the task on another thread
    std::latch done;
    explicit stay_report(std::ptrdiff_t n) : done(n) {}
};

tandem::task<> child_stays(std::thread::id parent_thread, stay_report* rep) {
    auto check = [&] {
        rep->checked.fetch_add(1);
        if (current_thread() != parent_thread) rep->moved.fetch_add(1);
    };
    check();
    co_await tandem::sleep_for(1ms);
    check();
    co_await tandem::yield();
    check();
    int r = co_await nop_op();
    if (r != 0) rep->moved.fetch_add(1000);  // a NOP that fails: reported as a failure too
    check();
    co_await tandem::sleep_for(0ms);
    check();
    rep->done.count_down();
}

tandem::task<> parent_spawns(int children, stay_report* rep) {
    co_await tandem::yield();
    tandem::runtime* rt = tandem::runtime::current();
    if (rt == nullptr) {
        rep->moved.fetch_add(1'000'000);
        for (int i = 0; i < children; ++i) rep->done.count_down();
        co_return;
    }
    for (int i = 0; i < children; ++i) rt->spawn(child_stays(current_thread(), rep));
}

}  // namespace

TEST_CASE("a task spawned from an io thread runs on that thread and stays after every co_await",
          "[runtime]") {
    constexpr int parents = 6;
    constexpr int children = 5;
    stay_report rep(parents * children);
    tandem::runtime rt(tandem::runtime_options{.io_threads = 2});
    CHECK(tandem::runtime::current() == nullptr);  // not on an io thread here
    for (int i = 0; i < parents; ++i) rt.spawn(parent_spawns(children, &rep));
    rep.done.wait();
    CHECK(rep.moved.load() == 0);
    CHECK(rep.checked.load() == parents * children * 5);
}

// ---- cross-loop wake-up ---------------------------------------------------------

namespace {

struct cross_wake {
    tandem::detail::loop* loop0 = nullptr;
    std::atomic<bool> parked{false};
    std::thread::id sleeper_before, sleeper_after, waker_thread;
    std::latch done{2};

    // What the waker posts to loop 0: it runs on loop 0's thread.
    struct resume_item : tandem::detail::posted_item {
        std::coroutine_handle<> handle;
    } item;
};

/// Suspends, publishing its handle; resumed by whoever posts `item`.
struct park {
    cross_wake* w;
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<> h) noexcept {
        w->item.handle = h;
        w->item.run = [](tandem::detail::posted_item* self) noexcept {
            tandem::detail::schedule(static_cast<cross_wake::resume_item*>(self)->handle);
        };
        w->parked.store(true, std::memory_order_release);  // last touch before suspension
    }
    void await_resume() const noexcept {}
};

tandem::task<> sleeper(cross_wake* w) {
    w->sleeper_before = current_thread();
    co_await park{w};
    w->sleeper_after = current_thread();
    w->done.count_down();
}

tandem::task<> waker(cross_wake* w) {
    while (!w->parked.load(std::memory_order_acquire)) co_await tandem::yield();
    w->waker_thread = current_thread();
    tandem::detail::post(*w->loop0, &w->item);
    w->done.count_down();
}

/// Spawns `t` natively on `target` (so it belongs to that loop) and comes back.
tandem::task<> spawn_on(tandem::detail::loop* target, tandem::task<> t) {
    tandem::detail::loop* home = tandem::detail::current_loop();
    co_await tandem::detail::hop_to{target};
    tandem::runtime::current()->spawn(std::move(t));
    co_await tandem::detail::hop_to{home};  // the root must end on its own loop
}

tandem::task<std::thread::id> thread_on(tandem::detail::loop* target) {
    tandem::detail::loop* home = tandem::detail::current_loop();
    co_await tandem::detail::hop_to{target};
    std::thread::id id = current_thread();
    co_await tandem::detail::hop_to{home};
    co_return id;
}

struct hop_result {
    int wrong_thread = 0;
    int round_trips = 0;
};

tandem::task<hop_result> hop_back_and_forth(tandem::detail::loop* l0, tandem::detail::loop* l1,
                                            std::thread::id t0, std::thread::id t1, int times) {
    hop_result r;
    tandem::detail::loop* home = tandem::detail::current_loop();
    for (int i = 0; i < times; ++i) {
        co_await tandem::detail::hop_to{l1};
        if (current_thread() != t1) ++r.wrong_thread;
        co_await tandem::detail::hop_to{l0};
        if (current_thread() != t0) ++r.wrong_thread;
        ++r.round_trips;
    }
    co_await tandem::detail::hop_to{home};
    co_return r;
}

}  // namespace

TEST_CASE("a task woken from another loop resumes on its own loop's thread", "[runtime]") {
    cross_wake w;
    tandem::runtime rt(tandem::runtime_options{.io_threads = 2});
    tandem::detail::loop* l0 = tandem::detail_loop_of(rt, 0);
    tandem::detail::loop* l1 = tandem::detail_loop_of(rt, 1);
    REQUIRE(l0 != nullptr);
    REQUIRE(l1 != nullptr);
    CHECK(tandem::detail_loop_of(rt, 2) == nullptr);
    w.loop0 = l0;
    std::thread::id t0 = rt.block_on(thread_on(l0));
    std::thread::id t1 = rt.block_on(thread_on(l1));
    REQUIRE(t0 != t1);

    rt.block_on(spawn_on(l0, sleeper(&w)));
    rt.block_on(spawn_on(l1, waker(&w)));
    w.done.wait();
    CHECK(w.sleeper_before == t0);
    CHECK(w.waker_thread == t1);
    CHECK(w.sleeper_after == t0);  // resumed by loop 0, not by the waker's thread
}

TEST_CASE("a task hops to the other loop and back ten thousand times", "[runtime]") {
    tandem::runtime rt(tandem::runtime_options{.io_threads = 2});
    tandem::detail::loop* l0 = tandem::detail_loop_of(rt, 0);
    tandem::detail::loop* l1 = tandem::detail_loop_of(rt, 1);
    std::thread::id t0 = rt.block_on(thread_on(l0));
    std::thread::id t1 = rt.block_on(thread_on(l1));
    REQUIRE(t0 != t1);
    hop_result r = rt.block_on(hop_back_and_forth(l0, l1, t0, t1, 10'000));
    CHECK(r.round_trips == 10'000);
    CHECK(r.wrong_thread == 0);
}

// ---- shutdown ---------------------------------------------------------------------

namespace {

struct pending_state {
    std::atomic<int> live{0};
    std::atomic<int> finished_normally{0};
    std::latch started;
    explicit pending_state(std::ptrdiff_t n) : started(n) {}
};

tandem::task<> pending_sleep(pending_state* s) {
    live_guard g(&s->live);
    s->started.count_down();
    co_await tandem::sleep_for(10s);
    s->finished_normally.fetch_add(1);
}

tandem::task<> pending_read(pending_state* s, int fd) {
    live_guard g(&s->live);
    s->started.count_down();
    (void)co_await pipe_read(fd);
    s->finished_normally.fetch_add(1);
}

tandem::task<> spawns_more(pending_state* s, int fd) {
    live_guard g(&s->live);
    tandem::runtime* rt = tandem::runtime::current();
    rt->spawn(pending_sleep(s));
    rt->spawn(pending_read(s, fd));
    s->started.count_down();
    co_await tandem::sleep_for(10s);
    s->finished_normally.fetch_add(1);
}

}  // namespace

TEST_CASE("runtime destruction cancels pending sleeps, reads and spawned tasks promptly",
          "[runtime]") {
    constexpr int each = 20;
    pipe_fds p;
    pending_state s(each * 5);  // sleeps + reads + (spawner + its two children)
    std::optional<tandem::runtime> rt(std::in_place, tandem::runtime_options{.io_threads = 2});
    for (int i = 0; i < each; ++i) {
        rt->spawn(pending_sleep(&s));
        rt->spawn(pending_read(&s, p.read_end()));
        rt->spawn(spawns_more(&s, p.read_end()));
    }
    s.started.wait();
    CHECK(s.live.load() == each * 5);
    auto t0 = clock_type::now();
    rt.reset();
    auto destroy_took = clock_type::now() - t0;
    CHECK(destroy_took < 3s);   // the sleeps were 10 s
    CHECK(s.live.load() == 0);  // every frame was destroyed
    CHECK(s.finished_normally.load() == 0);
}

TEST_CASE("creating and destroying a runtime twenty times leaks no file descriptor", "[runtime]") {
    pipe_fds p;
    std::size_t before = count_open_fds();
    for (int i = 0; i < 20; ++i) {
        pending_state s(2);
        {
            tandem::runtime rt(tandem::runtime_options{.io_threads = 2});
            rt.spawn(pending_sleep(&s));
            rt.spawn(pending_read(&s, p.read_end()));
            CHECK(rt.block_on(nop_op()) == 0);
            s.started.wait();
        }
        REQUIRE(s.live.load() == 0);
    }
    CHECK(count_open_fds() == before);
}

// ---- failures -----------------------------------------------------------------------

namespace {

tandem::task<> throws_detached(std::atomic<int>* ran) {
    co_await tandem::yield();
    ran->fetch_add(1);
    throw std::runtime_error("a spawned task failed on purpose (expected in this test)");
}

}  // namespace

TEST_CASE("a spawned task that throws does not take the runtime down", "[runtime]") {
    std::atomic<int> ran{0};
    tandem::runtime rt(tandem::runtime_options{.io_threads = 2});
    for (int i = 0; i < 4; ++i) rt.spawn(throws_detached(&ran));
    // Each loop finishes what was posted before it, in order: once a later
    // block_on on every loop is done, the throwing tasks have run.
    for (int i = 0; i < 4; ++i) CHECK(rt.block_on(add(i, 1)) == i + 1);
    while (ran.load() < 4) CHECK(rt.block_on(add(0, 0)) == 0);
    CHECK(rt.block_on(nop_op()) == 0);
}

namespace {

tandem::task<int> nested_block_on() {
    // A broken precondition: this must abort rather than deadlock.
    co_return tandem::runtime::current()->block_on(add(1, 1));
}

}  // namespace

TEST_CASE("child: block_on from an io thread", "[.child_nested_block_on]") {
    if (!started_as_child()) return;
    default_fatal_signals();
    tandem::runtime rt;
    (void)rt.block_on(nested_block_on());
    ::_exit(0);  // not reached: the nested block_on aborts
}

TEST_CASE("block_on called from an io thread aborts", "[runtime]") {
    int status = in_fresh_process("[child_nested_block_on]");
    REQUIRE(WIFSIGNALED(status));
    CHECK(WTERMSIG(status) == SIGABRT);
}

// ---- io_uring blocked: the epoll backend --------------------------------------------

namespace {

// Exit codes of the seccomp children: 0 means every check passed.
enum seccomp_child_exit : int {
    child_ok = 0,
    child_seccomp_failed = 11,
    child_no_exception = 12,
    child_wrong_errno = 13,
    child_message_lacks_errno_name = 14,
    child_message_lacks_hint = 15,
    child_message_lacks_fix = 16,
    child_other_exception = 17,
    child_not_x86_64 = 18,  // the filter is written for x86-64 only
    child_wrong_backend = 19,
    child_reason_lacks_cause = 20,
    child_io_failed = 21,
    child_wrong_stderr = 22,
};

/// In a child with io_uring blocked: asking for io_uring throws a system_error
/// whose message names the errno, the likely cause and the fix.
int forced_uring_child(int err, const char* errno_name, const char* hint, const char* fix) {
    if (!tandem_test::block_io_uring(err, tandem_test::uring_calls::setup)) {
        return errno == EINVAL ? child_not_x86_64 : child_seccomp_failed;
    }
    try {
        tandem::runtime rt(tandem::runtime_options{.backend = tandem::io_backend::io_uring});
        return child_no_exception;
    } catch (const std::system_error& e) {
        std::string what = e.what();
        if (e.code().value() != err) return child_wrong_errno;
        if (what.find(errno_name) == std::string::npos) return child_message_lacks_errno_name;
        if (what.find(hint) == std::string::npos) return child_message_lacks_hint;
        if (what.find(fix) == std::string::npos) return child_message_lacks_fix;
        return child_ok;
    } catch (...) {
        return child_other_exception;
    }
}

/// Sleeps, NOPs, a pipe read that completes, one that is cancelled, and a
/// blocking call: the loop works on whatever backend it has.
tandem::task<bool> some_io() {
    co_await tandem::sleep_for(2ms);
    if (co_await nop_op() != 0) co_return false;
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) co_return false;
    if (::write(fds[1], "x", 1) != 1) co_return false;
    const int got = co_await pipe_read(fds[0]);
    auto raced = co_await tandem::when_any(pipe_read(fds[0]), tandem::sleep_for(5ms));
    ::close(fds[0]);
    ::close(fds[1]);
    const int answer = co_await tandem::offload_to_thread([] { return 42; });
    co_return got == 1 && raced.index() == 1 && answer == 42;
}

/// In a child with `which` io_uring calls failing with `err`: the default
/// runtime falls back to epoll with a reason naming `cause`, runs I/O, and says
/// so in exactly one line on stderr although two runtimes are made.
int fallback_child(int err, tandem_test::uring_calls which, const char* cause) {
    char path[] = "/tmp/tandem-fallback-stderr-XXXXXX";
    const int out = ::mkstemp(path);
    if (out < 0) return child_other_exception;
    ::unlink(path);
    ::dup2(out, STDERR_FILENO);
    if (!tandem_test::block_io_uring(err, which)) {
        return errno == EINVAL ? child_not_x86_64 : child_seccomp_failed;
    }
    try {
        for (int round = 0; round < 2; ++round) {
            tandem::runtime rt(tandem::runtime_options{.io_threads = 2});
            if (rt.backend().kind != tandem::io_backend::epoll) return child_wrong_backend;
            if (rt.backend().reason.find(cause) == std::string::npos) {
                return child_reason_lacks_cause;
            }
            if (std::string(rt.ring_features()) != "epoll") return child_wrong_backend;
            if (!rt.block_on(some_io())) return child_io_failed;
        }
    } catch (...) {
        return child_other_exception;
    }
    std::string said(4096, '\0');
    const ssize_t n = ::pread(out, said.data(), said.size(), 0);
    said.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
    const bool one_line = std::count(said.begin(), said.end(), '\n') == 1 &&
                          said.find("using the epoll backend") != std::string::npos &&
                          said.find(cause) != std::string::npos;
    return one_line ? child_ok : child_wrong_stderr;
}

void check_child(const char* tag) {
    const int status = in_fresh_process(tag);
    REQUIRE(WIFEXITED(status));
    if (WEXITSTATUS(status) == child_not_x86_64) {
        WARN("skipped: the seccomp filter in this test is written for x86-64 only");
        return;
    }
    CHECK(WEXITSTATUS(status) == child_ok);
}

}  // namespace

// The children: each installs its filter, makes runtimes and reports through its exit status.
TEST_CASE("child: io_uring forced, io_uring_setup fails with EPERM", "[.child_forced_eperm]") {
    if (!started_as_child()) return;
    ::_exit(forced_uring_child(EPERM, "EPERM", "seccomp", "io_uring_disabled"));
}

TEST_CASE("child: io_uring forced, io_uring_setup fails with ENOSYS", "[.child_forced_enosys]") {
    if (!started_as_child()) return;
    ::_exit(forced_uring_child(ENOSYS, "ENOSYS", "kernel", "seccomp"));
}

TEST_CASE("child: every io_uring call fails with EPERM", "[.child_fallback_eperm]") {
    if (!started_as_child()) return;
    ::_exit(fallback_child(EPERM, tandem_test::uring_calls::all, "EPERM"));
}

TEST_CASE("child: io_uring_setup fails with ENOSYS", "[.child_fallback_enosys]") {
    if (!started_as_child()) return;
    ::_exit(fallback_child(ENOSYS, tandem_test::uring_calls::setup, "ENOSYS"));
}

TEST_CASE("child: a ring can be made but io_uring_enter fails", "[.child_fallback_enter]") {
    if (!started_as_child()) return;
    ::_exit(fallback_child(EPERM, tandem_test::uring_calls::enter, "io_uring_enter"));
}

TEST_CASE(
    "io_uring forced but blocked by seccomp (EPERM) throws a system_error that explains "
    "the fix",
    "[runtime][seccomp]") {
    check_child("[child_forced_eperm]");
}

TEST_CASE("io_uring forced but missing (ENOSYS) throws a system_error that names the kernel",
          "[runtime][seccomp]") {
    check_child("[child_forced_enosys]");
}

TEST_CASE(
    "io_uring blocked as Docker does (EPERM): the runtime falls back to epoll, runs I/O, "
    "and says why in one stderr line",
    "[runtime][seccomp]") {
    check_child("[child_fallback_eperm]");
}

TEST_CASE("io_uring missing (ENOSYS): the runtime falls back to epoll and says the kernel lacks it",
          "[runtime][seccomp]") {
    check_child("[child_fallback_enosys]");
}

TEST_CASE("a ring that can be made but not entered: the NOP probe finds it and epoll runs",
          "[runtime][seccomp]") {
    check_child("[child_fallback_enter]");
}

TEST_CASE("the automatic backend is io_uring where it works, epoll where it is blocked",
          "[runtime]") {
    tandem::runtime rt;
    INFO("reason: " << rt.backend().reason);
    CHECK(rt.backend().kind ==
          (io_uring_blocked() ? tandem::io_backend::epoll : tandem::io_backend::io_uring));
    CHECK_FALSE(rt.backend().reason.empty());
}

TEST_CASE("runtime_options can force the epoll backend, which runs I/O", "[runtime]") {
    tandem::runtime rt(tandem::runtime_options{.backend = tandem::io_backend::epoll});
    CHECK(rt.backend().kind == tandem::io_backend::epoll);
    CHECK(std::string(rt.ring_features()) == "epoll");
    CHECK(std::string(tandem::to_string(rt.backend().kind)) == "epoll");
    CHECK(rt.block_on(some_io()));
}

TEST_CASE("ring_features names the setup flags in force", "[runtime]") {
    if (io_uring_blocked()) return;  // no ring: the epoll cases above cover it
    tandem::runtime rt;
    std::string features = rt.ring_features();
    INFO("ring_features: " << features);
    CHECK(features.find("SINGLE_ISSUER") != std::string::npos);
    CHECK(features.find("DEFER_TASKRUN") != std::string::npos);
    tandem::detail::loop* l = tandem::detail_loop_of(rt, 0);
    CHECK((l->setup_flags() & IORING_SETUP_SINGLE_ISSUER) != 0);
    CHECK((l->setup_flags() & IORING_SETUP_DEFER_TASKRUN) != 0);
}

// ---- a small ring under load ---------------------------------------------------------------

namespace {

tandem::task<std::vector<int>> many_nops(int n) {
    std::vector<tandem::task<int>> ops;
    ops.reserve(static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i) ops.push_back(nop_op());
    co_return co_await tandem::when_all(std::move(ops));
}

struct read_outcomes {
    int resumed = 0;    // every resumption, whatever the outcome
    int cancelled = 0;  // operation_cancelled
    int completed = 0;  // a result arrived instead (must not happen: nobody writes)
};

tandem::task<> cancellable_read(int fd, read_outcomes* out) {
    try {
        (void)co_await pipe_read(fd);
        ++out->resumed;
        ++out->completed;
    } catch (const tandem::operation_cancelled&) {
        ++out->resumed;
        ++out->cancelled;
    }
}

tandem::task<std::size_t> reads_then_cancel(int fd, int n, read_outcomes* out) {
    std::vector<tandem::task<>> reads;
    reads.reserve(static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i) reads.push_back(cancellable_read(fd, out));
    // The sleep wins; when_any cancels the reads and waits for every one.
    auto winner =
        co_await tandem::when_any(tandem::when_all(std::move(reads)), tandem::sleep_for(50ms));
    co_return winner.index();
}

}  // namespace

TEST_CASE("a ring of 8 entries completes 10,000 concurrent NOPs, dropping none", "[runtime]") {
    tandem::runtime rt(tandem::runtime_options{.ring_entries = 8});
    std::vector<int> results = rt.block_on(many_nops(10'000));
    REQUIRE(results.size() == 10'000);
    std::size_t zeros = 0;
    for (int r : results) zeros += (r == 0);
    CHECK(zeros == 10'000);
}

TEST_CASE("a ring of 8 entries cancels 5,000 pending pipe reads, each resuming exactly once",
          "[runtime]") {
    pipe_fds p;
    read_outcomes out;
    tandem::runtime rt(tandem::runtime_options{.ring_entries = 8});
    CHECK(rt.block_on(reads_then_cancel(p.read_end(), 5'000, &out)) == 1);
    CHECK(out.resumed == 5'000);
    CHECK(out.cancelled == 5'000);
    CHECK(out.completed == 0);
}

TEST_CASE(
    "the epoll backend completes 10,000 NOPs and cancels 5,000 pending pipe reads, each "
    "resuming exactly once",
    "[runtime]") {
    pipe_fds p;
    read_outcomes out;
    tandem::runtime rt(tandem::runtime_options{.backend = tandem::io_backend::epoll});
    std::vector<int> results = rt.block_on(many_nops(10'000));
    CHECK(std::count(results.begin(), results.end(), 0) == 10'000);
    CHECK(rt.block_on(reads_then_cancel(p.read_end(), 5'000, &out)) == 1);
    CHECK(out.resumed == 5'000);
    CHECK(out.cancelled == 5'000);
    CHECK(out.completed == 0);
}

namespace {

std::atomic<int> signals_seen{0};
extern "C" void count_signal(int) {
    signals_seen.fetch_add(1, std::memory_order_relaxed);
}

pthread_t (*volatile pthread_self_of_caller)() = &::pthread_self;

tandem::task<pthread_t> io_thread_handle() {
    co_await tandem::yield();
    co_return pthread_self_of_caller();
}

/// 300 sleepers of 1..30 ms and 3,000 NOPs; returns how many finished.
tandem::task<int> sleeps_and_nops() {
    std::vector<tandem::task<int>> work;
    for (int i = 0; i < 300; ++i) {
        work.push_back([](int ms) -> tandem::task<int> {
            co_await tandem::sleep_for(std::chrono::milliseconds(ms));
            co_return 1;
        }(1 + i % 30));
    }
    for (int i = 0; i < 3000; ++i) {
        work.push_back([]() -> tandem::task<int> {
            co_await tandem::sleep_for(std::chrono::milliseconds(1));
            co_return (co_await nop_op()) == 0 ? 1 : 0;
        }());
    }
    int done = 0;
    for (int r : co_await tandem::when_all(std::move(work))) done += r;
    co_return done;
}

}  // namespace

TEST_CASE("signals that interrupt the loop's wait (EINTR) lose no completion and no timer",
          "[runtime]") {
    // No SA_RESTART: io_uring_enter returns -EINTR whenever the signal lands
    // while the io thread waits, and the loop must simply wait again.
    struct sigaction sa {};
    struct sigaction old {};
    sa.sa_handler = &count_signal;
    sigemptyset(&sa.sa_mask);
    REQUIRE(::sigaction(SIGUSR1, &sa, &old) == 0);
    signals_seen = 0;
    {
        tandem::runtime rt;
        pthread_t io = rt.block_on(io_thread_handle());
        std::atomic<bool> stop{false};
        std::thread pest([&] {
            while (!stop.load()) {
                ::pthread_kill(io, SIGUSR1);
                std::this_thread::sleep_for(100us);
            }
        });
        int done = rt.block_on(sleeps_and_nops());
        stop = true;
        pest.join();
        CHECK(done == 3300);
        CHECK(signals_seen.load() > 0);
    }
    ::sigaction(SIGUSR1, &old, nullptr);
}
