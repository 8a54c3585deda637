// SPDX-License-Identifier: MIT
#pragma once

// The echo benchmark's load generator (bench/echo_bench.cpp): a child process,
// the same code for every server, so that none of its CPU time lands on the
// server's clock. The benchmark runs one per server it compares.
//
//   parent (benchmark)                       child (this client)
//   ──────────────────                       ───────────────────
//   start(port, N, S) ─────────── cmd ──▶    connect N connections in waves
//                                            of 256, each echoing once (so
//                            ◀── reply ────  the server accepted it); idle
//   run() ─────────────────────── cmd ──▶    every connection: send S bytes,
//                            ◀── reply ────  read S back, check them, repeat
//   completed() ◀── shared counter ───────   (counted in shared memory)
//   pause() ───────────────────── cmd ──▶    start no new echo; reply once
//                            ◀── reply ────  the ones under way are done
//   stop() ────────────────────── cmd ──▶    finish the echoes in flight,
//                            ◀── reply ────  reset every connection (RST: no
//                                            TIME_WAIT), report any error
//
// The child runs its own io_uring (tandem's setup flags, 4096 entries) and is
// pinned to a CPU when asked.

#include <sys/types.h>
#include <time.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>

namespace echo {

/// Memory shared with the child: the echoes completed in this session.
/// Written by the child only.
struct client_shared {
    std::atomic<std::uint64_t> completed{0};
};

/// The parent's handle on one load generator process.
class load_client {
public:
    /// Forks the client. Call it while the process has one thread: the child
    /// only runs code that is safe after fork. `cpu` pins the child (-1: not
    /// pinned). Throws std::system_error.
    explicit load_client(int cpu);
    /// Tells the child to exit and reaps it.
    ~load_client();
    load_client(const load_client&) = delete;
    load_client& operator=(const load_client&) = delete;

    /// Opens `conns` connections to 127.0.0.1:`port`, each echoing one
    /// `size`-byte message, and leaves them idle. Returns "" or what went
    /// wrong (the session is over then).
    std::string start(std::uint16_t port, std::size_t conns, std::size_t size);

    /// Runs the ping-pong on every connection. Returns "" or the first error.
    std::string run();

    /// Starts no new echo and returns once the ones under way have finished:
    /// the server is idle then. Returns "" or the first error.
    std::string pause();

    /// Echoes completed in this session (a relaxed read).
    std::uint64_t completed() const noexcept;

    /// CPU time the client process has used so far, in ns.
    std::uint64_t cpu_ns() const noexcept;

    /// Stops sending, waits for the echoes in flight, checks them and resets
    /// every connection. Returns "" or the first error of the session.
    std::string stop();

private:
    std::string exchange(std::uint32_t op, std::uint16_t port = 0, std::size_t conns = 0,
                         std::size_t size = 0);

    pid_t pid_ = -1;
    clockid_t clock_ = CLOCK_PROCESS_CPUTIME_ID;  // the child's
    int control_ = -1;
    client_shared* shared_ = nullptr;
};

/// Raises this process's soft RLIMIT_NOFILE to its hard limit (to 65536 when
/// the hard limit is lower and raising it is allowed); returns the soft limit
/// in force afterwards. Children inherit it: call it before forking.
std::size_t raise_fd_limit() noexcept;

}  // namespace echo
