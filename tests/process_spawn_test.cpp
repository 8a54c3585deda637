// SPDX-License-Identifier: MIT

// The process pool's building blocks, with real processes: the shared arena
// (memfd) and the zygote that forks workers as children of this process.
// Every wait is a poll() on an fd (a pidfd, a pipe) or a shared futex, with an
// explicit, generous deadline.

#include "process/arena.hpp"
#include "process/zygote.hpp"

#include <catch2/catch.hpp>

#include "support.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <climits>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <initializer_list>
#include <new>
#include <set>
#include <sstream>
#include <string>
#include <system_error>
#include <vector>

extern char** environ;

namespace {

using namespace std::chrono_literals;
using tandem::detail::shared_arena;
using tandem::detail::zygote;

constexpr std::size_t mib = std::size_t{1} << 20;

std::set<std::string> open_fds_of(pid_t pid) {
    return dir_entries(("/proc/" + std::to_string(pid) + "/fd").c_str());
}

/// Waits until `fd` reports an event, or `limit` passes. EINTR-safe.
bool readable_within(int fd, std::chrono::milliseconds limit) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    for (;;) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        pollfd p{fd, POLLIN, 0};
        const int ready = ::poll(&p, 1, static_cast<int>(std::max(left.count(), 0L)));
        if (ready > 0) return true;
        if (ready == 0 || errno != EINTR) return false;
    }
}

std::string proc_status_line(pid_t pid, const std::string& key) {
    std::ifstream status("/proc/" + std::to_string(pid) + "/status");
    std::string line;
    while (std::getline(status, line))
        if (line.rfind(key + ":", 0) == 0) return line.substr(key.size() + 1);
    return {};
}

// ---- what the test workers do, steered through the arena ----------------------

enum class behaviour : int { report_then_wait, exit_3, segfault, throws };

struct worker_report {
    int done = 0;  // the futex word: 0, then 1 once the fields below are written
    int ppid = 0;
    int parent_died_fd = 0;
    int fd_count = 0;
    int fds[32] = {};
};

struct control {
    behaviour what[8] = {};
    worker_report reports[8] = {};
};

long futex(int* word, int op, int value, const timespec* timeout) {
    // Not FUTEX_PRIVATE_FLAG: the word is shared between processes.
    return ::syscall(SYS_futex, word, op, value, timeout, nullptr, 0);
}

/// Runs in the worker (a fresh process): plain system calls and libc only.
void report(worker_report& out) {
    out.ppid = ::getppid();
    out.parent_died_fd = tandem::detail::parent_died_fd();
    DIR* dir = ::opendir("/proc/self/fd");
    int count = 0;
    while (dirent* entry = dir != nullptr ? ::readdir(dir) : nullptr) {
        if (entry->d_name[0] == '.') continue;
        const int fd = std::atoi(entry->d_name);
        if (fd != ::dirfd(dir) && count < 32) out.fds[count++] = fd;
    }
    if (dir != nullptr) ::closedir(dir);
    out.fd_count = count;
    __atomic_store_n(&out.done, 1, __ATOMIC_RELEASE);
    futex(&out.done, FUTEX_WAKE, INT_MAX, nullptr);
}

void test_worker_main(void* arg, int index) {
    auto* ctl = static_cast<control*>(arg);
    switch (ctl->what[index]) {
        case behaviour::exit_3:
            ::_exit(3);
        case behaviour::segfault: {
            const rlimit no_core{0, 0};  // no core dump to wait for
            ::setrlimit(RLIMIT_CORE, &no_core);
            ::kill(::getpid(), SIGSEGV);
            ::_exit(99);  // not reached
        }
        case behaviour::throws:
            throw std::runtime_error("thrown out of worker_main");
        case behaviour::report_then_wait:
            report(ctl->reports[index]);
            // The real worker loop polls this fd between futex waits.
            for (;;) {
                pollfd p{tandem::detail::parent_died_fd(), POLLIN, 0};
                if (::poll(&p, 1, -1) > 0) return;  // the parent died
            }
    }
}

/// Waits on the shared futex until the worker has reported, up to `limit`.
bool reported_within(worker_report& report, std::chrono::milliseconds limit) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (__atomic_load_n(&report.done, __ATOMIC_ACQUIRE) == 0) {
        const auto left = deadline - std::chrono::steady_clock::now();
        if (left <= 0ns) return false;
        const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(left).count();
        const timespec timeout{static_cast<time_t>(ns / 1'000'000'000),
                               static_cast<long>(ns % 1'000'000'000)};
        futex(&report.done, FUTEX_WAIT, 0, &timeout);  // EAGAIN/EINTR/ETIMEDOUT: recheck
    }
    return true;
}

std::set<int> fds_of(const worker_report& report) {
    return {report.fds, report.fds + report.fd_count};
}

/// A control block in a fresh arena; the arena outlives the zygote.
struct test_arena {
    shared_arena arena = shared_arena::create(mib);
    control* ctl = new (arena.base()) control{};
};

using spawn_result_list = std::vector<tandem::detail::spawn_result>;

/// Reaps and closes a worker's pidfd once it has ended; returns the outcome.
tandem::detail::exit_info reap_and_close(int pidfd) {
    auto info = zygote::reap(pidfd);
    ::close(pidfd);
    return info;
}

/// Spawns worker `index` and waits (up to 10 s) until it has reported.
tandem::detail::spawn_result spawn_reported(zygote& z, test_arena& shared, int index) {
    auto worker = z.spawn(index);
    REQUIRE(reported_within(shared.ctl->reports[index], 10s));
    return worker;
}

/// SIGKILLs each worker, waits (up to 5 s) for it to end and reaps it.
void kill_and_reap(std::initializer_list<tandem::detail::spawn_result> workers) {
    for (const auto& w : workers) {
        ::kill(w.pid, SIGKILL);
        REQUIRE(readable_within(w.pidfd, 5s));
        reap_and_close(w.pidfd);
    }
}

// ---- the hidden "parent" child, run through fork + exec ----------------------

bool started_as_child() {
    return std::getenv("TANDEM_PROCESS_TEST_CHILD") != nullptr;
}

}  // namespace

// ---- shared_arena ------------------------------------------------------------------

TEST_CASE("an arena is shared with a forked child at the same address", "[arena]") {
    const auto shm_before = dir_entries("/dev/shm");
    auto arena = shared_arena::create(64 * mib);
    REQUIRE(arena.size() == 64 * mib);
    REQUIRE(reinterpret_cast<std::uintptr_t>(arena.base()) % 4096 == 0);
    auto* words = reinterpret_cast<std::uint64_t*>(arena.base());
    const std::size_t count = arena.size() / sizeof(std::uint64_t);
    for (std::size_t i = 0; i < count / 2; ++i) words[i] = i * 2654435761u;

    // The child only reads and writes memory: nothing unsafe after fork in a
    // process that has the watchdog thread.
    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        for (std::size_t i = 0; i < count / 2; ++i)
            if (words[i] != i * 2654435761u) ::_exit(1);
        for (std::size_t i = count / 2; i < count; ++i) words[i] = ~i;
        ::_exit(0);
    }
    int status = 0;
    REQUIRE(::waitpid(child, &status, 0) == child);
    REQUIRE(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    bool child_writes_seen = true;
    for (std::size_t i = count / 2; i < count; ++i) child_writes_seen &= words[i] == ~i;
    CHECK(child_writes_seen);

    CHECK(dir_entries("/dev/shm") == shm_before);  // memfd: nothing named anywhere
}

TEST_CASE("an arena's size is sealed", "[arena]") {
    auto arena = shared_arena::create(mib);
    CHECK(::fcntl(arena.fd(), F_GET_SEALS) == (F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL));
    errno = 0;
    CHECK(::ftruncate(arena.fd(), static_cast<off_t>(2 * mib)) == -1);
    CHECK(errno == EPERM);
    CHECK(::ftruncate(arena.fd(), 0) == -1);
    CHECK(::fcntl(arena.fd(), F_ADD_SEALS, F_SEAL_WRITE) == -1);  // F_SEAL_SEAL
    CHECK((::fcntl(arena.fd(), F_GETFD) & FD_CLOEXEC) != 0);
}

TEST_CASE("an arena's size is rounded up to the page size", "[arena]") {
    const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
    CHECK(shared_arena::create(1).size() == page);
    CHECK(shared_arena::create(page + 1).size() == 2 * page);
}

TEST_CASE("an impossible arena size throws a system_error naming the step and size", "[arena]") {
    try {
        (void)shared_arena::create(std::size_t{1} << 62);
        FAIL("no exception");
    } catch (const std::system_error& e) {
        CHECK(e.code() == std::errc::not_enough_memory);
        CHECK_THAT(e.what(), Catch::Contains(std::to_string(std::size_t{1} << 62)));
    }
    try {
        (void)shared_arena::create(0);
        FAIL("no exception");
    } catch (const std::system_error& e) {
        CHECK(e.code() == std::errc::invalid_argument);
    }
}

TEST_CASE("a moved arena keeps its mapping and the source gives it up", "[arena]") {
    auto first = shared_arena::create(mib);
    std::byte* base = first.base();
    base[0] = std::byte{42};
    shared_arena second = std::move(first);
    CHECK(first.base() == nullptr);
    CHECK(first.fd() == -1);
    CHECK(second.base() == base);
    CHECK(second.base()[0] == std::byte{42});
}

// ---- zygote ------------------------------------------------------------------------

TEST_CASE("zygote workers are children of this process with only their own fds", "[zygote]") {
    test_arena shared;
    zygote z(test_worker_main, shared.ctl);
    auto first = spawn_reported(z, shared, 0);
    auto second = spawn_reported(z, shared, 1);

    for (const auto& report : {shared.ctl->reports[0], shared.ctl->reports[1]}) {
        CHECK(report.ppid == ::getpid());  // CLONE_PARENT
        CHECK(report.parent_died_fd == 3);
        CHECK(fds_of(report) == std::set<int>{0, 1, 2, 3});
    }
    // The zygote: stdin/out/err, the pipe, the socket, a pidfd per live worker.
    CHECK(open_fds_of(z.pid()) == std::set<std::string>{"0", "1", "2", "3", "4", "5", "6"});
    std::ifstream comm("/proc/" + std::to_string(z.pid()) + "/comm");
    std::string name;
    std::getline(comm, name);
    CHECK(name == "tandem-zygote");

    kill_and_reap({first, second});
}

TEST_CASE("a killed worker is reported by signal and replaced", "[zygote]") {
    test_arena shared;
    zygote z(test_worker_main, shared.ctl);
    auto victim = spawn_reported(z, shared, 0);
    auto other = spawn_reported(z, shared, 1);

    REQUIRE(::kill(victim.pid, SIGKILL) == 0);
    REQUIRE(readable_within(victim.pidfd, 5s));
    const auto info = reap_and_close(victim.pidfd);
    CHECK(info.killed);
    CHECK(info.signal == SIGKILL);
    CHECK(info.description == "killed by signal 9 (Killed)");
    CHECK_FALSE(readable_within(other.pidfd, 0ms));  // its neighbour is untouched

    shared.ctl->reports[0] = worker_report{};
    auto replacement = spawn_reported(z, shared, 0);
    CHECK(shared.ctl->reports[0].ppid == ::getpid());
    CHECK(replacement.pid != victim.pid);
    kill_and_reap({replacement, other});
}

TEST_CASE("a worker's exit status and fatal signal are described", "[zygote]") {
    test_arena shared;
    shared.ctl->what[2] = behaviour::exit_3;
    shared.ctl->what[3] = behaviour::segfault;
    zygote z(test_worker_main, shared.ctl);

    auto exiting = z.spawn(2);
    REQUIRE(readable_within(exiting.pidfd, 5s));
    const auto exited = reap_and_close(exiting.pidfd);
    CHECK_FALSE(exited.killed);
    CHECK(exited.exit_status == 3);
    CHECK(exited.description == "exited with status 3");

    auto crashing = z.spawn(3);
    REQUIRE(readable_within(crashing.pidfd, 5s));
    const auto crashed = reap_and_close(crashing.pidfd);
    CHECK(crashed.killed);
    CHECK(crashed.signal == SIGSEGV);
    CHECK(crashed.description == "killed by signal 11 (Segmentation fault)");
}

TEST_CASE("an exception escaping worker_main ends the worker with status 70", "[zygote]") {
    test_arena shared;
    shared.ctl->what[0] = behaviour::throws;
    zygote z(test_worker_main, shared.ctl);
    auto thrower = z.spawn(0);
    REQUIRE(readable_within(thrower.pidfd, 5s));
    CHECK(reap_and_close(thrower.pidfd).description == "exited with status 70");
}

TEST_CASE("workers see the parent-alive pipe hang up even without their zygote", "[zygote]") {
    test_arena shared;
    spawn_result_list workers;
    {
        zygote z(test_worker_main, shared.ctl);
        for (int i = 0; i < 2; ++i) workers.push_back(z.spawn(i));
        REQUIRE(reported_within(shared.ctl->reports[0], 10s));
        REQUIRE(reported_within(shared.ctl->reports[1], 10s));
        REQUIRE(::kill(z.pid(), SIGKILL) == 0);  // nobody left to kill the workers
        const int zygote_pidfd = static_cast<int>(::syscall(SYS_pidfd_open, z.pid(), 0U));
        REQUIRE(zygote_pidfd >= 0);
        REQUIRE(readable_within(zygote_pidfd, 5s));
        ::close(zygote_pidfd);
        try {
            (void)z.spawn(2);
            FAIL("no exception");
        } catch (const std::system_error& e) {
            CHECK(e.code() == std::errc::broken_pipe);
            CHECK_THAT(e.what(), Catch::Contains("spawning worker 2"));
        }
        CHECK_FALSE(readable_within(workers[0].pidfd, 0ms));  // still running
    }
    // The destructor closed the pipe's write end: each worker's poll reports
    // hangup and worker_main returns.
    for (auto w : workers) {
        REQUIRE(readable_within(w.pidfd, 2s));
        CHECK(reap_and_close(w.pidfd).description == "exited with status 0");
    }
}

TEST_CASE("parent_alive turns false when the pipe's write end closes", "[zygote]") {
    int pipe_fds[2];
    REQUIRE(::pipe2(pipe_fds, O_CLOEXEC) == 0);
    CHECK(zygote::parent_alive(pipe_fds[0]));
    ::close(pipe_fds[1]);  // what the parent's death does
    CHECK_FALSE(zygote::parent_alive(pipe_fds[0]));
    ::close(pipe_fds[0]);
}

TEST_CASE("reaping a pidfd that is not our child throws a system_error", "[zygote]") {
    const int self = static_cast<int>(::syscall(SYS_pidfd_open, ::getpid(), 0U));
    REQUIRE(self >= 0);
    CHECK_THROWS_AS(zygote::reap(self), std::system_error);
    ::close(self);
}

TEST_CASE("destroying the zygote ends it and its workers and leaks no fd", "[zygote]") {
    test_arena shared;
    const auto fds_before = open_fds_of(::getpid());
    std::vector<int> worker_pidfds;
    int zygote_pidfd = -1;
    {
        zygote z(test_worker_main, shared.ctl);
        for (int i = 0; i < 2; ++i) worker_pidfds.push_back(z.spawn(i).pidfd);
        REQUIRE(reported_within(shared.ctl->reports[0], 10s));
        REQUIRE(reported_within(shared.ctl->reports[1], 10s));
        zygote_pidfd = static_cast<int>(::syscall(SYS_pidfd_open, z.pid(), 0U));
        REQUIRE(zygote_pidfd >= 0);
    }
    CHECK(readable_within(zygote_pidfd, 2s));  // already reaped by the destructor
    ::close(zygote_pidfd);
    for (int pidfd : worker_pidfds) {
        REQUIRE(readable_within(pidfd, 2s));
        CHECK(reap_and_close(pidfd).signal == SIGKILL);
    }
    CHECK(open_fds_of(::getpid()) == fds_before);
}

TEST_CASE("SIGINT leaves the zygote and its workers running", "[zygote]") {
    test_arena shared;
    zygote z(test_worker_main, shared.ctl);
    auto worker = spawn_reported(z, shared, 0);
    const int zygote_pidfd = static_cast<int>(::syscall(SYS_pidfd_open, z.pid(), 0U));
    REQUIRE(zygote_pidfd >= 0);

    // Ignored signals are discarded when sent: SigIgn shows the disposition.
    for (pid_t pid : {z.pid(), worker.pid}) {
        const auto ignored = std::stoull(proc_status_line(pid, "SigIgn"), nullptr, 16);
        CHECK((ignored & (1ull << (SIGINT - 1))) != 0);
        REQUIRE(::kill(pid, SIGINT) == 0);
    }
    CHECK_FALSE(readable_within(zygote_pidfd, 200ms));
    CHECK_FALSE(readable_within(worker.pidfd, 0ms));
    // The zygote still answers.
    auto second = spawn_reported(z, shared, 1);
    kill_and_reap({worker, second});
    ::close(zygote_pidfd);
}

TEST_CASE("child: a parent holding a zygote and two workers", "[.child_zygote_parent]") {
    if (!started_as_child()) return;
    const int out = std::atoi(std::getenv("TANDEM_PROCESS_TEST_PIPE"));
    test_arena shared;
    zygote z(test_worker_main, shared.ctl);
    const auto a = z.spawn(0);
    const auto b = z.spawn(1);
    // Stopped, the zygote cannot kill the workers: they must notice on their own.
    if (std::getenv("TANDEM_PROCESS_TEST_STOP_ZYGOTE") != nullptr) ::kill(z.pid(), SIGSTOP);
    const pid_t pids[3] = {z.pid(), a.pid, b.pid};
    if (::write(out, pids, sizeof pids) != static_cast<ssize_t>(sizeof pids)) ::_exit(2);
    for (;;) ::pause();  // until the test SIGKILLs us
}

namespace {

/// Starts this binary as a "parent" holding a zygote and two workers, reads
/// their pids, SIGKILLs the parent and checks that the three processes are gone
/// within a second (only the workers when the zygote was stopped).
void kill_a_parent_and_watch(bool stop_zygote) {
    // The orphans are reparented to us rather than to init, so we can reap them
    // and leave no zombie behind.
    REQUIRE(::prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0);
    int pipe_fds[2];
    REQUIRE(::pipe2(pipe_fds, O_CLOEXEC) == 0);
    // The child inherits a copy of the write end at a fixed number, past exec.
    constexpr int child_pipe_fd = 100;
    static char child_marker[] = "TANDEM_PROCESS_TEST_CHILD=1";
    static char stop_marker[] = "TANDEM_PROCESS_TEST_STOP_ZYGOTE=1";
    static std::string pipe_marker;
    pipe_marker = "TANDEM_PROCESS_TEST_PIPE=" + std::to_string(child_pipe_fd);
    std::vector<char*> env;
    for (char** e = environ; *e != nullptr; ++e) env.push_back(*e);
    env.push_back(child_marker);
    env.push_back(pipe_marker.data());
    if (stop_zygote) env.push_back(stop_marker);
    env.push_back(nullptr);
    std::fflush(nullptr);
    // fork + exec: the child starts threads (Catch's watchdog), which TSan
    // supports only in a fresh image.
    const pid_t parent = ::fork();
    REQUIRE(parent >= 0);
    if (parent == 0) {
        if (::dup2(pipe_fds[1], child_pipe_fd) < 0) ::_exit(126);  // clears O_CLOEXEC
        ::execle("/proc/self/exe", "process_spawn_test", "[child_zygote_parent]", "--out",
                 "/dev/null", static_cast<char*>(nullptr), env.data());
        ::_exit(127);
    }
    ::close(pipe_fds[1]);
    pid_t pids[3] = {};
    REQUIRE(readable_within(pipe_fds[0], 20s));
    REQUIRE(::read(pipe_fds[0], pids, sizeof pids) == static_cast<ssize_t>(sizeof pids));
    ::close(pipe_fds[0]);
    std::vector<int> pidfds;
    for (pid_t pid : pids) {
        REQUIRE(pid > 0);
        const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0U));
        if (pidfd < 0) {
            CHECK(errno == ESRCH);  // already gone: fine
        }
        pidfds.push_back(pidfd);
    }

    REQUIRE(::kill(parent, SIGKILL) == 0);
    const auto killed_at = std::chrono::steady_clock::now();
    int status = 0;
    REQUIRE(::waitpid(parent, &status, 0) == parent);
    CHECK(WIFSIGNALED(status));
    for (std::size_t i = 0; i < pidfds.size(); ++i) {
        if (pidfds[i] < 0) continue;
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            killed_at + 1s - std::chrono::steady_clock::now());
        if (stop_zygote && i == 0) {
            CHECK_FALSE(readable_within(pidfds[i], 0ms));  // stopped, still there
            ::syscall(SYS_pidfd_send_signal, pidfds[i], SIGKILL, nullptr, 0U);
        } else {
            CHECK(readable_within(pidfds[i], std::max(left, 0ms)));
        }
        reap_and_close(pidfds[i]);
    }
    ::prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0);
}

}  // namespace

TEST_CASE("when the parent is killed the zygote and its workers exit within a second", "[zygote]") {
    kill_a_parent_and_watch(false);
}

TEST_CASE("when the parent is killed workers exit within a second even if the zygote is stuck",
          "[zygote]") {
    kill_a_parent_and_watch(true);
}
