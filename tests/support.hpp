// SPDX-License-Identifier: MIT
#pragma once

// Helpers shared by the test binaries; tests/main.cpp is linked into each of them.

#include <tandem/runtime.hpp>

#include <dirent.h>
#include <poll.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <set>
#include <string>
#include <vector>

extern char** environ;

/// True under ./test.sh --block-io-uring (tests/no_io_uring sets it): io_uring is blocked in
/// this process, and a runtime forced onto it would throw.
inline bool io_uring_blocked() {
    return std::getenv("TANDEM_IO_URING_BLOCKED") != nullptr;
}

/// The backends a test can run on here: io_uring (unless blocked) and epoll.
inline std::vector<tandem::io_backend> usable_backends() {
    if (io_uring_blocked()) return {tandem::io_backend::epoll};
    return {tandem::io_backend::io_uring, tandem::io_backend::epoll};
}

/// Reports the whole test binary as skipped and exits with meson's skip code (77).
///
/// Call it when a kernel feature the binary needs is missing (io_uring disabled, an opcode
/// the kernel does not know, ...), typically at the start of a test case, before anything
/// has been asserted. Prints `TANDEM_RESULT passed=0 failed=0 skipped=1` on stdout, which
/// test.sh adds up, and the reason on stdout and stderr. Any result of a test case that ran
/// earlier in the same binary is discarded. Safe to call from the main thread only: it runs
/// std::exit, so static destructors (among them the watchdog's) run.
[[noreturn]] inline void tandem_test_skip_all(const char* why) {
    const char* reason = why != nullptr ? why : "no reason given";
    std::fflush(stdout);
    std::printf("\nskipped: %s\nTANDEM_RESULT passed=0 failed=0 skipped=1\n", reason);
    std::fflush(stdout);
    std::fprintf(stderr, "skipped: %s\n", reason);
    std::exit(77);
}

/// The names in directory `path` (without ".", ".." and the fd reading it): open fds from
/// /proc/self/fd, tasks from /proc/self/task, entries of /dev/shm.
inline std::set<std::string> dir_entries(const char* path) {
    std::set<std::string> names;
    DIR* dir = ::opendir(path);
    if (dir == nullptr) return names;
    while (dirent* entry = ::readdir(dir)) {
        const std::string name = entry->d_name;
        if (name != "." && name != ".." && name != std::to_string(::dirfd(dir))) names.insert(name);
    }
    ::closedir(dir);
    return names;
}

/// Starts this test binary again (fork + exec: TSan supports threads only in a fresh image)
/// running only the hidden test case `tag`, with `env_marker` ("NAME=1") added to the
/// environment so the case knows it is the child. `stdin_fd` / `stdout_fd`, if not -1, become
/// the child's stdin / stdout. Returns the child's pid (-1 if fork failed); the caller waits.
inline pid_t start_self(const char* tag, const char* env_marker, int stdin_fd = -1,
                        int stdout_fd = -1) {
    std::string marker = env_marker;  // built before fork: the child only execs
    std::vector<char*> env;
    for (char** e = environ; *e != nullptr; ++e) env.push_back(*e);
    env.push_back(marker.data());
    env.push_back(nullptr);
    std::fflush(nullptr);  // nothing buffered twice
    const pid_t pid = ::fork();
    if (pid == 0) {
        if (stdin_fd >= 0) ::dup2(stdin_fd, STDIN_FILENO);
        if (stdout_fd >= 0) ::dup2(stdout_fd, STDOUT_FILENO);
        ::execle("/proc/self/exe", "test", tag, "--out", "/dev/null", static_cast<char*>(nullptr),
                 env.data());
        ::_exit(127);
    }
    return pid;
}

/// True if `pid` has exited (or never existed) within `limit`. Not necessarily our child: a
/// worker is the zygote's. An exited but unreaped process counts as gone (it runs nothing).
inline bool exited_within(pid_t pid, std::chrono::milliseconds limit) {
    const int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0U));
    if (fd < 0) return errno == ESRCH;
    pollfd p{fd, POLLIN, 0};
    const int ready = ::poll(&p, 1, static_cast<int>(limit.count()));
    ::close(fd);
    return ready == 1;
}

/// `n` seeded pseudo-random bytes (the same for the same seed): what echo tests send.
inline std::vector<std::byte> pattern(std::size_t n, unsigned seed) {
    std::vector<std::byte> v(n);
    std::uint32_t x = seed * 2654435761u + 1;
    for (auto& b : v) b = static_cast<std::byte>((x = x * 1664525u + 1013904223u) >> 24);
    return v;
}

/// The children of this process, from every thread's /proc children list.
inline std::set<pid_t> children() {
    std::set<pid_t> pids;
    for (const std::string& tid : dir_entries("/proc/self/task")) {
        std::ifstream in("/proc/self/task/" + tid + "/children");
        pid_t pid;
        while (in >> pid) pids.insert(pid);
    }
    return pids;
}

/// The primes in [lo, hi), by trial division: a plain function for worker processes to run.
inline long count_primes(long lo, long hi) {
    long n = 0;
    for (long x = lo < 2 ? 2 : lo; x < hi; ++x) {
        bool prime = true;
        for (long d = 2; d * d <= x; ++d) {
            if (x % d == 0) {
                prime = false;
                break;
            }
        }
        n += prime ? 1 : 0;
    }
    return n;
}
