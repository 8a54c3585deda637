// SPDX-License-Identifier: MIT
// child_process: see child_process.hpp.
#include "child_process.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <system_error>
#include <thread>

namespace demo {

child_process::child_process(const std::string& exe, const std::vector<std::string>& args,
                             bool control, bool merge_stderr) {
    int fds[2];  // [0] ours, [1] the child's stdout (and stdin with `control`)
    const int r = control ? ::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds)
                          : ::pipe2(fds, O_CLOEXEC);
    if (r != 0) throw std::system_error(errno, std::system_category(), "tandem-demo: pipe");
    // Everything the child needs is built before fork(): after it, only async-signal-safe
    // calls, since this process may have threads.
    std::vector<const char*> argv;
    argv.push_back(exe.c_str());
    for (const std::string& a : args) argv.push_back(a.c_str());
    argv.push_back(nullptr);
    const pid_t parent = ::getpid();
    pid_ = ::fork();
    if (pid_ == 0) {
        ::prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (::getppid() != parent) ::_exit(127);  // the parent died before prctl
        sigset_t none;
        sigemptyset(&none);
        ::sigprocmask(SIG_SETMASK, &none, nullptr);
        if (control) ::dup2(fds[1], STDIN_FILENO);
        ::dup2(fds[1], STDOUT_FILENO);
        if (merge_stderr) ::dup2(fds[1], STDERR_FILENO);
        ::syscall(SYS_close_range, 3U, ~0U, 0U);  // nothing else of the parent's leaks in
        ::execv(argv[0], const_cast<char* const*>(argv.data()));
        ::_exit(127);
    }
    const int fork_errno = errno;
    ::close(fds[1]);
    if (pid_ < 0) {
        ::close(fds[0]);
        throw std::system_error(fork_errno, std::system_category(), "tandem-demo: fork");
    }
    out_fd_ = fds[0];
}

child_process::~child_process() {
    kill_and_reap();
}

bool child_process::read_all(std::string& out, clock::time_point deadline,
                             const std::function<void()>& tick) {
    out += pending_;
    pending_.clear();
    char buf[4096];
    while (out_fd_ >= 0) {
        const auto left =
            std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now());
        if (left.count() <= 0) return false;
        pollfd p{out_fd_, POLLIN, 0};
        const int ready = ::poll(&p, 1, static_cast<int>(std::min<long>(left.count(), 200)));
        if (ready == 0) {
            if (tick) tick();
            continue;
        }
        if (ready < 0) {
            if (errno == EINTR) continue;
            return true;  // cannot happen with one valid fd; treat as the end
        }
        const ssize_t n = ::read(out_fd_, buf, sizeof buf);
        if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (n <= 0) return true;
        out.append(buf, static_cast<std::size_t>(n));
    }
    return true;
}

bool child_process::read_line(std::string& line, clock::time_point deadline) {
    char buf[512];
    for (;;) {
        if (const std::size_t nl = pending_.find('\n'); nl != std::string::npos) {
            line = pending_.substr(0, nl);
            pending_.erase(0, nl + 1);
            return true;
        }
        const auto left =
            std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now());
        if (out_fd_ < 0 || left.count() <= 0) return false;
        pollfd p{out_fd_, POLLIN, 0};
        const int ready = ::poll(&p, 1, static_cast<int>(left.count()));
        if (ready < 0 && errno == EINTR) continue;
        if (ready <= 0) return false;
        const ssize_t n = ::read(out_fd_, buf, sizeof buf);
        if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (n <= 0) return false;
        pending_.append(buf, static_cast<std::size_t>(n));
    }
}

child_process::exit_info child_process::wait(clock::time_point deadline) {
    exit_info info;
    if (pid_ <= 0) return info;
    for (;;) {
        const pid_t r = ::wait4(pid_, &info.status, WNOHANG, &info.usage);
        if (r == pid_) break;
        if (r < 0 && errno != EINTR) break;  // not our child any more: nothing to reap
        if (clock::now() >= deadline) {
            ::kill(pid_, SIGKILL);
            while (::wait4(pid_, &info.status, 0, &info.usage) < 0 && errno == EINTR) {
            }
            break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    pid_ = -1;
    close_control();
    return info;
}

void child_process::close_control() noexcept {
    if (out_fd_ >= 0) ::close(out_fd_);
    out_fd_ = -1;
}

void child_process::kill_and_reap() noexcept {
    close_control();
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    pid_ = -1;
}

double child_process::exit_info::cpu_ms() const {
    const auto ms = [](const timeval& t) {
        return static_cast<double>(t.tv_sec) * 1e3 + static_cast<double>(t.tv_usec) / 1e3;
    };
    return ms(usage.ru_utime) + ms(usage.ru_stime);
}

double child_process::exit_info::peak_rss_mib() const {
    return static_cast<double>(usage.ru_maxrss) / 1024.0;  // ru_maxrss is in KiB on Linux
}

std::string child_process::exit_info::describe() const {
    if (WIFEXITED(status)) return "exit status " + std::to_string(WEXITSTATUS(status));
    if (WIFSIGNALED(status)) {
        const char* name = ::sigabbrev_np(WTERMSIG(status));
        return std::string("killed by ") + (name != nullptr
                                                ? "SIG" + std::string(name)
                                                : "signal " + std::to_string(WTERMSIG(status)));
    }
    return "status " + std::to_string(status);
}

}  // namespace demo
