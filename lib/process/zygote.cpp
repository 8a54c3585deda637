// SPDX-License-Identifier: MIT
#include "zygote.hpp"

#include "../fault.hpp"
#include "../fd_advice.hpp"

#include <fcntl.h>
#include <linux/sched.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <system_error>

namespace tandem::detail {

namespace {

// Where the zygote keeps its fds, so a worker knows what to keep: the read
// end of the "parent alive" pipe at 3, the passed fds from 4 on, then the
// zygote's end of the command socket (set once in the zygote, which has one
// thread).
constexpr int zygote_pipe_fd = 3;
constexpr int first_passed_fd = 4;
int zygote_socket_fd = first_passed_fd;
constexpr int max_tracked_workers = 1024;
constexpr int spawn_reply_timeout_ms = 10'000;
constexpr int worker_exception_status = 70;  // EX_SOFTWARE

// Set in a worker only; read by parent_died_fd().
int worker_parent_died_fd = -1;

struct command {
    std::int32_t op;  // 1: spawn
    std::int32_t index;
};
constexpr std::int32_t op_spawn = 1;
static_assert(sizeof(zygote::reply) == 16);

[[noreturn]] void fail(int err, const std::string& step) {
    throw std::system_error(err, std::system_category(), "zygote: " + step + fd_advice(err));
}

// ---- zygote side: async-signal-safe calls only ----------------------------------
// The zygote is forked from a process that may have threads: until it has
// forked a worker, it makes nothing but system calls (no malloc, no locks).

/// Closes every fd from `first` up; close_range needs Linux 5.9.
void close_from(int first) noexcept {
    if (::syscall(SYS_close_range, static_cast<unsigned>(first), ~0U, 0U) == 0) return;
    rlimit limit{};
    rlim_t end = 65536;
    if (::getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY &&
        limit.rlim_cur < end)
        end = limit.rlim_cur;
    for (rlim_t fd = static_cast<rlim_t>(first); fd < end; ++fd) ::close(static_cast<int>(fd));
}

/// Leaves the zygote with fds 0-2 (opened on /dev/null if they were closed, so
/// that nothing else lands there), the pipe at 3, the passed fds from 4 on and
/// the socket after them.
/// Closes every fd from 3 up except the `n` in `keep`, so that a zygote forked from a parent
/// with a full fd table has room to arrange its own. Async-signal-safe.
void close_all_but(const int* keep, int n) noexcept {
    int sorted[zygote::max_passed_fds + 2];
    for (int i = 0; i < n; ++i) {  // insertion sort: a handful of fds
        int j = i;
        for (; j > 0 && sorted[j - 1] > keep[i]; --j) sorted[j] = sorted[j - 1];
        sorted[j] = keep[i];
    }
    int next = 3;  // the lowest fd not yet dealt with
    for (int i = 0; i < n; ++i) {
        if (sorted[i] > next) {
            ::syscall(SYS_close_range, static_cast<unsigned>(next),
                      static_cast<unsigned>(sorted[i] - 1), 0U);
        }
        if (sorted[i] >= next) next = sorted[i] + 1;
    }
    close_from(next);
}

void arrange_fds(int pipe_read, int socket, const int* passed, int n_passed) noexcept {
    int keep[zygote::max_passed_fds + 2];
    keep[0] = pipe_read;
    keep[1] = socket;
    for (int i = 0; i < n_passed; ++i) keep[2 + i] = passed[i];
    close_all_but(keep, n_passed + 2);
    // Copies above every target first: any of them may sit where another goes. Just above the
    // highest target, not at some large number: F_DUPFD fails with EINVAL at or past
    // RLIMIT_NOFILE, and a pool must start under a low limit too.
    const int high = first_passed_fd + n_passed + 1;
    const int pipe_copy = ::fcntl(pipe_read, F_DUPFD, high);
    const int socket_copy = ::fcntl(socket, F_DUPFD, high);
    if (pipe_copy < 0 || socket_copy < 0) ::_exit(120);
    int copies[zygote::max_passed_fds];
    for (int i = 0; i < n_passed; ++i) {
        copies[i] = ::fcntl(passed[i], F_DUPFD, high);
        if (copies[i] < 0) ::_exit(120);
    }
    zygote_socket_fd = first_passed_fd + n_passed;
    if (::dup2(pipe_copy, zygote_pipe_fd) < 0 || ::dup2(socket_copy, zygote_socket_fd) < 0)
        ::_exit(121);
    for (int i = 0; i < n_passed; ++i) {
        if (::dup2(copies[i], first_passed_fd + i) < 0) ::_exit(121);
    }
    close_from(zygote_socket_fd + 1);
    for (int fd = 0; fd < 3; ++fd) {
        if (::fcntl(fd, F_GETFD) < 0) {
            const int null_fd = ::open("/dev/null", O_RDWR);  // lands on fd: the lowest free
            if (null_fd != fd) ::_exit(122);
        }
    }
}

/// Default actions for every signal (the parent's handlers mean nothing here),
/// SIGINT ignored (the parent decides), an empty mask.
void reset_signals() noexcept {
    struct sigaction action {};
    sigemptyset(&action.sa_mask);
    for (int sig = 1; sig < NSIG; ++sig) {
        if (sig == SIGKILL || sig == SIGSTOP) continue;
        action.sa_handler = sig == SIGINT ? SIG_IGN : SIG_DFL;
        ::sigaction(sig, &action, nullptr);  // fails for the few reserved: harmless
    }
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
}

struct worker_table {
    int pidfds[max_tracked_workers];
    int count = 0;

    /// Forgets the workers that have ended (their pidfd is readable).
    void prune() noexcept {
        for (int i = 0; i < count;) {
            pollfd p{pidfds[i], POLLIN, 0};
            if (::poll(&p, 1, 0) > 0) {
                ::close(pidfds[i]);
                pidfds[i] = pidfds[--count];
            } else {
                ++i;
            }
        }
    }

    /// By pidfd, never by pid: a reaped worker's pid may belong to someone else.
    void kill_all() noexcept {
        for (int i = 0; i < count; ++i)
            ::syscall(SYS_pidfd_send_signal, pidfds[i], SIGKILL, nullptr, 0U);
    }
};

[[noreturn]] void run_worker(zygote::worker_main_fn worker_main, void* arg, int index) {
    close_from(zygote_socket_fd);  // the command socket and the other workers' pidfds
    struct sigaction action {};
    action.sa_handler = SIG_DFL;
    sigemptyset(&action.sa_mask);
    ::sigaction(SIGCHLD, &action, nullptr);  // the zygote ignores it; the worker need not
    ::prctl(PR_SET_NAME, "tandem-worker", 0, 0, 0);
    worker_parent_died_fd = zygote_pipe_fd;
    try {
        worker_main(arg, index);
    } catch (...) {
        // Unwinding further would run the zygote's loop in this process.
        ::_exit(worker_exception_status);
    }
    ::_exit(0);
}

/// Forks worker `index`; returns its pid or -errno.
long spawn_worker(worker_table& table, zygote::worker_main_fn worker_main, void* arg,
                  int index) noexcept {
    table.prune();
    if (table.count == max_tracked_workers) return -EAGAIN;
    int pidfd = -1;
    clone_args args{};
    // CLONE_PARENT: the worker is the pool's parent's child, so the parent can
    // reap it through its pidfd. The kernel requires exit_signal 0 with
    // CLONE_PARENT; the worker then inherits the zygote's own, SIGCHLD.
    args.flags = CLONE_PARENT | CLONE_PIDFD;
    args.pidfd = reinterpret_cast<std::uintptr_t>(&pidfd);
    args.exit_signal = 0;
    // The kernel gives a clone3 child no robust-futex list (glibc's fork()
    // registers one again; a raw clone3 does not): hand the worker the
    // zygote's, which its copy of memory holds at the same address, so a
    // robust mutex a worker holds when it dies is released to the next owner.
    void* robust_head = nullptr;
    std::size_t robust_len = 0;
    ::syscall(SYS_get_robust_list, 0, &robust_head, &robust_len);
    long pid = -1;
    if (const int injected = fault_hit(fault_point::fork)) {
        errno = injected;
    } else {
        pid = ::syscall(SYS_clone3, &args, sizeof args);
    }
    if (pid == 0 && robust_head != nullptr) ::syscall(SYS_set_robust_list, robust_head, robust_len);
    if (pid < 0 && errno == ENOSYS) {
        // Before Linux 5.3: a plain fork; the worker is the zygote's child
        // (auto-reaped: the zygote ignores SIGCHLD) and reap() cannot see it.
        pid = ::fork();
        if (pid > 0) pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0U));
    }
    if (pid < 0) return -errno;
    if (pid == 0) run_worker(worker_main, arg, index);
    if (pidfd >= 0) table.pidfds[table.count++] = pidfd;
    return pid;
}

[[noreturn]] void zygote_main(int pipe_read, int socket, const int* passed, int n_passed,
                              zygote::worker_main_fn worker_main, void* arg) noexcept {
    arrange_fds(pipe_read, socket, passed, n_passed);
    reset_signals();
    struct sigaction ignore {};
    ignore.sa_handler = SIG_IGN;
    sigemptyset(&ignore.sa_mask);
    ::sigaction(SIGCHLD, &ignore, nullptr);
    ::prctl(PR_SET_NAME, "tandem-zygote", 0, 0, 0);

    worker_table table;
    for (;;) {
        pollfd fds[2] = {{zygote_socket_fd, POLLIN, 0}, {zygote_pipe_fd, POLLIN, 0}};
        if (::poll(fds, 2, -1) < 0) {
            if (errno == EINTR) continue;
            break;
        }
        // Nobody writes to the pipe: any event on it is the parent's death.
        if (fds[1].revents != 0) break;
        if (fds[0].revents == 0) continue;
        command cmd{};
        const ssize_t n = ::recv(zygote_socket_fd, &cmd, sizeof cmd, MSG_DONTWAIT);
        if (n == 0) break;  // the parent closed the socket: the zygote object is gone
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN) continue;
            break;
        }
        zygote::reply answer{cmd.index, 0, -EPROTO};
        if (n == sizeof cmd && cmd.op == op_spawn)
            answer.pid_or_error = spawn_worker(table, worker_main, arg, cmd.index);
        if (::send(zygote_socket_fd, &answer, sizeof answer, MSG_NOSIGNAL) < 0) break;
    }
    table.kill_all();
    ::_exit(0);
}

}  // namespace

int parent_died_fd() noexcept {
    return worker_parent_died_fd;
}

zygote::zygote(worker_main_fn worker_main, void* arg, std::span<const int> pass_fds) {
    if (pass_fds.size() > max_passed_fds) fail(EINVAL, "too many fds to pass to the workers");
    int pipe_fds[2];
    if (::pipe2(pipe_fds, O_CLOEXEC) != 0) fail(errno, "pipe2 for the parent-alive pipe");
    int socket_fds[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, socket_fds) != 0) {
        const int err = errno;
        ::close(pipe_fds[0]);
        ::close(pipe_fds[1]);
        fail(err, "socketpair for the command socket");
    }
    // Output the parent buffered must not be written a second time by a copy in the zygote
    // (seen under TSan, whose exit path flushes stdio).
    std::fflush(nullptr);
    pid_t pid = -1;
    if (const int injected = fault_hit(fault_point::fork)) {
        errno = injected;
    } else {
        pid = ::fork();
    }
    if (pid == 0) {
        zygote_main(pipe_fds[0], socket_fds[1], pass_fds.data(), static_cast<int>(pass_fds.size()),
                    worker_main, arg);
    }
    const int err = errno;
    ::close(pipe_fds[0]);
    ::close(socket_fds[1]);
    if (pid < 0) {
        ::close(pipe_fds[1]);
        ::close(socket_fds[0]);
        fail(err, "fork of the zygote");
    }
    pid_ = pid;
    socket_ = socket_fds[0];
    alive_write_ = pipe_fds[1];
}

zygote::~zygote() {
    finish();
}

void zygote::finish() noexcept {
    if (pid_ < 0) return;
    // Half-close: the zygote reads the requests already sent, answers them,
    // then sees end of file, kills every worker it made and exits.
    ::shutdown(socket_, SHUT_WR);
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    pid_ = -1;
    // Answers nobody read name workers that are our children (CLONE_PARENT),
    // killed by the zygote on its way out: reap them, or they stay zombies.
    reply answer{};
    while (::recv(socket_, &answer, sizeof answer, MSG_DONTWAIT) == sizeof answer) {
        if (answer.pid_or_error <= 0) continue;
        while (::waitpid(static_cast<pid_t>(answer.pid_or_error), &status, 0) < 0 &&
               errno == EINTR) {
        }
    }
    ::close(socket_);
    ::close(alive_write_);
}

int zygote::request_spawn(int index) noexcept {
    const command cmd{op_spawn, index};
    if (::send(socket_, &cmd, sizeof cmd, MSG_NOSIGNAL | MSG_DONTWAIT) == sizeof cmd) return 0;
    return errno != 0 ? errno : EPROTO;
}

spawn_result zygote::finish_spawn(const reply& answer) {
    const std::string what = "spawning worker " + std::to_string(answer.index);
    if (answer.pid_or_error < 0)
        fail(static_cast<int>(-answer.pid_or_error), what + ": clone3 in the zygote");
    const auto pid = static_cast<pid_t>(answer.pid_or_error);
    // Race-free: the worker is our child, so its pid stays ours until we reap it.
    const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0U));
    if (pidfd < 0) fail(errno, what + ": pidfd_open");
    return {pid, pidfd};
}

spawn_result zygote::spawn(int index) {
    const std::string what = "spawning worker " + std::to_string(index);
    if (const int err = request_spawn(index); err != 0) fail(err, what + ": send");
    pollfd p{socket_, POLLIN, 0};
    int ready = 0;
    while ((ready = ::poll(&p, 1, spawn_reply_timeout_ms)) < 0 && errno == EINTR) {
    }
    if (ready < 0) fail(errno, what + ": poll");
    if (ready == 0) fail(ETIMEDOUT, what + ": no answer from the zygote");
    reply answer{};
    const ssize_t n = ::recv(socket_, &answer, sizeof answer, 0);
    if (n < 0) fail(errno, what + ": recv");
    if (n == 0) fail(EPIPE, what + ": the zygote is gone");
    if (n != sizeof answer || answer.index != index) fail(EPROTO, what + ": bad answer");
    return finish_spawn(answer);
}

exit_info zygote::reap(int pidfd) {
    siginfo_t info{};
    while (::waitid(P_PIDFD, static_cast<id_t>(pidfd), &info, WEXITED) != 0) {
        if (errno != EINTR) fail(errno, "waitid(P_PIDFD)");
    }
    exit_info result;
    if (info.si_code == CLD_EXITED) {
        result.exit_status = info.si_status;
        result.description = "exited with status " + std::to_string(info.si_status);
    } else {
        result.killed = true;
        result.signal = info.si_status;
        const char* name = ::sigdescr_np(info.si_status);
        result.description = "killed by signal " + std::to_string(info.si_status) + " (" +
                             (name != nullptr ? name : "unknown signal") + ")";
    }
    return result;
}

bool zygote::parent_alive(int pipe_fd) noexcept {
    pollfd p{pipe_fd, POLLIN, 0};
    return ::poll(&p, 1, 0) == 0;
}

}  // namespace tandem::detail
