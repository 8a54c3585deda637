// SPDX-License-Identifier: MIT
#pragma once

// Helpers of soak_test.cpp: its settings (TANDEM_SOAK_SECONDS, the fd limit), the counters its
// tasks keep and the audit reads, roots started on a chosen loop and awaited with a deadline,
// and what the audit measures of the process (RSS, fds, threads, children, /dev/shm).

#include <tandem/tandem.hpp>

#include "support.hpp"

#include <malloc.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <mutex>
#include <set>
#include <string>
#include <vector>

namespace soak_support {

/// The soak's length: TANDEM_SOAK_SECONDS (default 60, at least 1).
inline double soak_seconds() {
    const char* text = std::getenv("TANDEM_SOAK_SECONDS");
    if (text == nullptr || *text == '\0') return 60.0;
    char* end = nullptr;
    const double v = std::strtod(text, &end);
    if (end == text || *end != '\0' || !(v >= 1.0) || v > 86400.0) {
        std::fprintf(stderr, "soak: ignoring TANDEM_SOAK_SECONDS=\"%s\", using 60 s\n", text);
        return 60.0;
    }
    return v;
}

/// Raises the soft fd limit to the hard one for the soak's life, then puts it back.
class fd_limit {
public:
    fd_limit() {
        ::getrlimit(RLIMIT_NOFILE, &saved_);
        rlimit raised = saved_;
        raised.rlim_cur = saved_.rlim_max;
        if (::setrlimit(RLIMIT_NOFILE, &raised) == 0)
            current_ = raised.rlim_cur;
        else
            current_ = saved_.rlim_cur;
    }
    ~fd_limit() { ::setrlimit(RLIMIT_NOFILE, &saved_); }
    fd_limit(const fd_limit&) = delete;
    fd_limit& operator=(const fd_limit&) = delete;

    rlim_t soft() const noexcept { return current_; }

private:
    rlimit saved_{};
    rlim_t current_ = 0;
};

// ---- counters -------------------------------------------------------------------------------

using counter = std::atomic<std::uint64_t>;

/// How an operation is exposed to cancellation: not at all, a random short `timeout`, a stop
/// token that a plain thread stops at a random moment, or a when_any race against a random
/// sleep.
enum class cancel_mode : unsigned { none, deadline, stop_token, race };
constexpr unsigned cancel_modes = 4;
inline const char* mode_name(unsigned m) {
    static const char* const names[] = {"none", "timeout", "stop_token", "when_any"};
    return names[m];
}

/// One kind of operation: how many started, under which cancellation plan, and how each ended.
/// `done` is the expected result of the kind (a checked echo, a checked response, a value, the
/// injected worker_crashed, timed_out or remote_error); `cancelled[m]` the right cancellation
/// error of plan m (timed_out for a timeout, operation_cancelled for a stop token, the sleep
/// winning a when_any); `unexpected` anything else.
struct tally {
    const char* name = "";
    counter started{0};
    counter done{0};
    counter unexpected{0};
    std::array<counter, cancel_modes> planned{};
    std::array<counter, cancel_modes> cancelled{};
    std::array<counter, cancel_modes> survived{};  // planned, but the operation finished first

    std::uint64_t cancelled_total() const {
        std::uint64_t n = 0;
        for (const auto& c : cancelled) n += c.load();
        return n;
    }
    std::uint64_t survived_total() const {
        std::uint64_t n = 0;
        for (const auto& c : survived) n += c.load();
        return n;
    }
    std::uint64_t planned_cancellations() const {
        std::uint64_t n = 0;
        for (unsigned m = 1; m < cancel_modes; ++m) n += planned[m].load();
        return n;
    }
};

/// The first few unexpected errors, with what was being done; and how many there were.
class error_log {
public:
    void add(tally& t, const std::string& what) {
        t.unexpected.fetch_add(1);
        std::lock_guard lock(mutex_);
        if (messages_.size() < 20) messages_.push_back(std::string(t.name) + ": " + what);
    }
    std::vector<std::string> messages() const {
        std::lock_guard lock(mutex_);
        return messages_;
    }

private:
    mutable std::mutex mutex_;
    std::vector<std::string> messages_;
};

// ---- roots ----------------------------------------------------------------------------------

/// Tasks started on chosen loops, which the test's thread waits for with a deadline.
/// Declare it before the runtime: a root that the runtime cancels still reports here.
class root_set {
public:
    void start(tandem::runtime& rt, unsigned loop_index, tandem::task<> t) {
        {
            std::lock_guard lock(mutex_);
            ++running_;
        }
        tandem::detail::start_root(*tandem::detail_loop_of(rt, loop_index),
                                   root(std::move(t), this));
    }

    /// True once every root has finished; false if some still run after `limit`.
    bool wait_for(std::chrono::steady_clock::duration limit) {
        std::unique_lock lock(mutex_);
        return cv_.wait_for(lock, limit, [this] { return running_ == 0; });
    }

    /// What escaped the roots (their tasks catch everything, so nothing should).
    std::vector<std::string> escaped() const {
        std::lock_guard lock(mutex_);
        return escaped_;
    }

private:
    static tandem::detail::root_task root(tandem::task<> t, root_set* set) {
        std::string error;
        try {
            co_await std::move(t);
        } catch (const std::exception& e) {
            error = e.what();
        } catch (...) {
            error = "a non-standard exception";
        }
        set->finished(std::move(error));
    }

    void finished(std::string error) {
        // Notify under the lock: the waiter may go on to destroy *this once it can take it.
        std::lock_guard lock(mutex_);
        if (!error.empty()) escaped_.push_back(std::move(error));
        --running_;
        cv_.notify_all();
    }

    mutable std::mutex mutex_;
    std::condition_variable cv_;
    unsigned running_ = 0;
    std::vector<std::string> escaped_;
};

// ---- what the process holds -----------------------------------------------------------------

/// A line of /proc/self/status ("VmRSS", "VmHWM") in KiB; 0 if absent.
inline std::uint64_t status_kib(const std::string& field) {
    std::ifstream in("/proc/self/status");
    std::string line;
    while (std::getline(in, line)) {
        if (line.rfind(field + ":", 0) == 0)
            return std::strtoull(line.c_str() + field.size() + 1, nullptr, 10);
    }
    return 0;
}

/// True when this process has no child at all, exited or not: waitpid says ECHILD.
inline bool no_children_at_all() {
    siginfo_t info{};
    return ::waitid(P_ALL, 0, &info, WEXITED | WNOHANG | WNOWAIT) == -1 && errno == ECHILD;
}

/// What the audit compares before and after.
struct footprint {
    std::set<std::string> fds;
    std::set<std::string> shm;
    std::size_t threads = 0;
    std::uint64_t rss_kib = 0;          // VmRSS as it is
    std::uint64_t trimmed_rss_kib = 0;  // VmRSS once malloc_trim gave free heap pages back
    std::uint64_t heap_kib = 0;         // malloc's bytes in use (0 under a sanitizer's malloc)

    static footprint now() {
        footprint f{dir_entries("/proc/self/fd"), dir_entries("/dev/shm"),
                    dir_entries("/proc/self/task").size(), status_kib("VmRSS")};
        ::malloc_trim(0);
        f.trimmed_rss_kib = status_kib("VmRSS");
        const struct mallinfo2 m = ::mallinfo2();
        f.heap_kib = (m.uordblks + m.hblkhd) / 1024;
        return f;
    }
};

/// "a b c" for a set, at most `max` names.
inline std::string names_of(const std::set<std::string>& s, std::size_t max = 20) {
    std::string out;
    std::size_t n = 0;
    for (const auto& name : s) {
        if (n++ == max) return out + "...";
        out += name + " ";
    }
    return out;
}

/// Names in `a` that are not in `b`.
inline std::set<std::string> minus(const std::set<std::string>& a, const std::set<std::string>& b) {
    std::set<std::string> out;
    for (const auto& n : a) {
        if (!b.contains(n)) out.insert(n);
    }
    return out;
}

/// What /proc/self/fd/<name> points at, for a message about a leaked fd.
inline std::string fd_target(const std::string& name) {
    char buf[256];
    const std::string path = "/proc/self/fd/" + name;
    const ssize_t n = ::readlink(path.c_str(), buf, sizeof buf - 1);
    return n > 0 ? std::string(buf, std::size_t(n)) : "?";
}

}  // namespace soak_support
