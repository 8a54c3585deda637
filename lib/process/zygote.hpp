// SPDX-License-Identifier: MIT
#pragma once

// The zygote: a small single-threaded process, forked once when the pool is
// created, that forks the workers on request. Forking from it rather than from
// the (multi-threaded) parent means a crashed worker can be replaced at any
// time without copying the parent's threads' locks, rings or fds.
//
//   parent ──"spawn i"──▶ zygote (SOCK_SEQPACKET) ──clone3(CLONE_PARENT)──▶ worker i
//     ▲                      │                                               │
//     └──── pid (or -errno) ─┘          worker is the PARENT's child ────────┘
//   parent holds the write end of the "parent alive" pipe; the zygote and every
//   worker hold the read end: when the parent dies, it reports hangup.
//
// Parent death: the zygote SIGKILLs every worker it spawned and exits as soon
// as the pipe (or the command socket) reports hangup; workers can also poll
// parent_died_fd() themselves. PR_SET_PDEATHSIG is not used: it follows the
// thread that forked, not the process, so a pool made on a short-lived thread
// would lose its zygote when that thread ends.

#include <sys/types.h>

#include <cstdint>
#include <span>
#include <string>

namespace tandem::detail {

/// In a worker: the read end of the "parent alive" pipe, which reports
/// POLLHUP (readable, EOF) once the parent process has died. -1 elsewhere.
int parent_died_fd() noexcept;

/// The outcome of a worker reaped by zygote::reap.
struct exit_info {
    bool killed = false;  ///< true: ended by a signal; false: exited
    int exit_status = 0;  ///< the _exit status, when !killed
    int signal = 0;       ///< the signal number, when killed
    /// "exited with status 3" or "killed by signal 11 (Segmentation fault)".
    std::string description;
};

/// A worker just spawned. The caller owns `pidfd` (O_CLOEXEC) and closes it.
struct spawn_result {
    pid_t pid = -1;
    int pidfd = -1;
};

/// Owns the zygote process. Not copyable, not movable (the pool holds it in
/// place). Its member functions are not thread-safe: one caller at a time.
///
/// Create it early, before threads that hold fds the workers must not see
/// (it forks; the zygote then closes every fd but its own two and stdin/out/err).
/// `worker_main` and `arg` are used in the zygote's copy of memory as it was at
/// construction: `arg` should point into a shared_arena created before, or to
/// data that does not change afterwards.
///
/// Workers are forked with clone3(CLONE_PARENT), so they are children of THIS
/// process: reap them with reap() (the parent must not waitpid(-1) them away).
/// If the kernel lacks clone3 (ENOSYS, before Linux 5.3) the zygote falls back to
/// fork(): the workers are then the zygote's children, and reap() fails with
/// ECHILD. Each worker starts with every signal at its default action except
/// SIGINT, which is ignored (the parent decides), an empty signal mask, and only
/// fds 0, 1, 2, parent_died_fd() (3) and the passed fds (4, 5, ...) open; it runs worker_main(arg,
/// index) and
/// `_exit(0)`s when that returns.
///
/// Known limit (README, "Pitfalls"): a worker made by a raw clone3 keeps
/// glibc's cached thread id of the zygote's thread; glibc's own fork() would
/// refresh it. raise()/abort()/gettid() ask the kernel and are fine, and the
/// robust-futex list is registered again (see spawn_worker). What trusts the
/// cached id is the owner field of glibc's mutexes: a PI, robust, recursive or
/// error-checking pthread mutex placed in memory shared between workers sees
/// every worker as the same owner. Process-private mutexes are unaffected (one
/// process, one consistent id).
class zygote {
public:
    using worker_main_fn = void (*)(void* arg, int worker_index);
    static constexpr std::size_t max_passed_fds = 64;

    /// The zygote's answer to a spawn request, as received on socket().
    struct reply {
        std::int32_t index;
        std::int32_t pad;
        std::int64_t pid_or_error;  // a pid, or -errno
    };

    /// Forks the zygote. `pass_fds` (at most max_passed_fds) are handed to
    /// every worker as fds 4, 5, ... in order (the parent keeps its own).
    /// Throws std::system_error naming the failed step (pipe2, socketpair, fork).
    zygote(worker_main_fn worker_main, void* arg, std::span<const int> pass_fds = {});
    zygote(const zygote&) = delete;
    zygote& operator=(const zygote&) = delete;
    /// finish().
    ~zygote();

    /// Ends the zygote: it answers the requests already sent, SIGKILLs every
    /// worker it made and exits; this reaps it, reaps the workers whose
    /// answers were never read, and closes the pipe's write end. The other
    /// workers are this process's children: their pidfds become readable;
    /// reap them with reap(). Idempotent.
    void finish() noexcept;

    /// Asks the zygote for worker `index` and waits for the answer (blocking,
    /// up to 10 s; a later step makes this an asynchronous exchange on the ring).
    /// Throws std::system_error: the zygote's errno from clone3, EPIPE if the
    /// zygote is gone, ETIMEDOUT, or pidfd_open's errno.
    spawn_result spawn(int index);

    /// The asynchronous form, in two halves: request_spawn sends the request
    /// without blocking (0, or the errno); the zygote's `reply` then arrives on
    /// socket(), and finish_spawn turns it into a spawn_result (or throws
    /// std::system_error as spawn does).
    int request_spawn(int index) noexcept;
    static spawn_result finish_spawn(const reply& answer);
    int socket() const noexcept { return socket_; }

    /// Waits for the child behind `pidfd` to end and reaps it (blocking;
    /// returns at once if it has ended). Does not close `pidfd`. Throws
    /// std::system_error from waitid (ECHILD: not our child, or already reaped).
    static exit_info reap(int pidfd);

    /// Polls `pipe_fd` without blocking: false once it reports hangup or EOF,
    /// that is once the parent has died.
    static bool parent_alive(int pipe_fd) noexcept;

    /// The zygote's pid (a child of this process).
    pid_t pid() const noexcept { return pid_; }

private:
    pid_t pid_ = -1;
    int socket_ = -1;       // our end of the command socketpair
    int alive_write_ = -1;  // the write end of the "parent alive" pipe
};

}  // namespace tandem::detail
