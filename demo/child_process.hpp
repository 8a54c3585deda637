// SPDX-License-Identifier: MIT
#pragma once

// A child process of tandem-demo (usually the demo binary itself, `--child NAME ...`) whose
// stdout the parent reads through a pipe and whose CPU time and peak RSS it takes from
// wait4()'s rusage. The child gets SIGKILL when the thread that started it exits
// (PR_SET_PDEATHSIG), and the destructor kills and reaps it if it still runs: no child outlives
// the demo, whichever way the demo leaves (return, exception, Ctrl-C).
//
// With `control = true` the child's stdin AND stdout are one end of a socketpair: it prints on
// stdout as usual and can watch stdin for end of stream, which it sees when the parent closes
// its end (close_control()) or dies. The I/O section's server stops that way.

#include <sys/resource.h>
#include <sys/types.h>

#include <chrono>
#include <functional>
#include <string>
#include <vector>

namespace demo {

class child_process {
public:
    using clock = std::chrono::steady_clock;

    /// Starts `exe` with `args` (args[0] is the first argument, not the program name); stderr
    /// is the parent's, or goes into the stdout pipe with `merge_stderr`. Throws
    /// std::system_error if the pipe or the fork fails; an exec that fails makes the child exit
    /// with status 127.
    child_process(const std::string& exe, const std::vector<std::string>& args,
                  bool control = false, bool merge_stderr = false);
    ~child_process();  // kill_and_reap()
    child_process(const child_process&) = delete;
    child_process& operator=(const child_process&) = delete;

    /// Reads stdout until end of stream or `deadline`, calling `tick` about every 200 ms;
    /// appends to `out`. Returns false if the deadline passed first.
    bool read_all(std::string& out, clock::time_point deadline,
                  const std::function<void()>& tick = {});
    /// Reads stdout up to and including the first '\n' (returned without it). Returns false at
    /// end of stream or when `deadline` passes first.
    bool read_line(std::string& line, clock::time_point deadline);

    struct exit_info {
        int status = 0;  // as from waitpid
        rusage usage{};
        double cpu_ms() const;
        double peak_rss_mib() const;
        std::string describe() const;  // "exit status 1", "killed by SIGSEGV", ...
    };
    /// Waits for the child to exit (SIGKILL after `deadline`) and reaps it.
    exit_info wait(clock::time_point deadline);

    /// Closes the control socket (the child sees end of stream on stdin).
    void close_control() noexcept;
    /// SIGKILL if still running, then reap; idempotent.
    void kill_and_reap() noexcept;
    pid_t pid() const noexcept { return pid_; }

private:
    pid_t pid_ = -1;
    int out_fd_ = -1;      // our end of the child's stdout (a pipe, or the control socket)
    std::string pending_;  // bytes read past a line by read_line
};

}  // namespace demo
