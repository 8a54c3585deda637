// SPDX-License-Identifier: MIT
#pragma once

// The echo servers that bench/echo_bench.cpp compares, each on 127.0.0.1 (a
// free port) with one thread of its own, in a child process of its own:
//
//   tandem  a runtime with one io thread: tcp_listener::accept and one
//           coroutine per connection doing read_some / write_all
//   tandem_epoll  the same code on a runtime made with backend = epoll (the
//           fallback for where io_uring is blocked)
//   raw     a hand-written liburing loop on a ring set up by tandem's own code
//           (lib/ring_setup.cpp, so the same flags): multishot accept, RECV
//           then SEND per connection, one io_uring_submit_and_wait per turn
//   asio    Asio's C++20 coroutines (co_spawn, use_awaitable) on one
//           io_context (its default epoll reactor)
//
// All of them echo whatever one receive returns, into a 4 KiB buffer per
// connection, until the peer closes or resets the connection.
//
// A process each, so that a benchmark can keep two servers with 10,000
// connections apiece open at once under a 20,000-fd limit, and so that no
// server inherits another's heap. The server's cost is the child's CPU clock
// (clock_getcpuclockid): its serving thread plus a main thread that only
// waits for the parent to hang up.

#include <sys/types.h>
#include <time.h>

#include <cstddef>
#include <cstdint>
#include <memory>

namespace echo {

/// Receive buffer per connection, the same for every server.
inline constexpr std::size_t buffer_size = 4096;

enum class server_kind { tandem, raw, asio, tandem_epoll };

/// A server running in a child process of its own.
class server_process {
public:
    /// Forks the server, pinned to `cpu` (-1: not pinned), and returns once it
    /// accepts. Call it while this process has one thread. Throws
    /// std::system_error, or std::runtime_error with the child's reason
    /// (io_uring unavailable, ...).
    server_process(server_kind kind, int cpu);
    /// Hangs up: the child closes its connections and exits; reaps it (kills
    /// it if it has not exited after 10 s).
    ~server_process();
    server_process(const server_process&) = delete;
    server_process& operator=(const server_process&) = delete;

    std::uint16_t port() const noexcept { return port_; }
    /// CPU time the server process has used so far, in ns.
    std::uint64_t cpu_ns() const noexcept;
    /// Times the serving thread has blocked so far (voluntary context
    /// switches: it waited for I/O), or 0 if /proc cannot tell.
    std::uint64_t waits() const noexcept;

private:
    void hang_up() noexcept;  // the destructor's work

    pid_t pid_ = -1;
    int control_ = -1;
    clockid_t clock_{};
    std::uint16_t port_ = 0;
    int tid_ = 0;  // the serving thread
};

namespace detail {

/// A server as its child process runs it. Destroying it stops the server and
/// joins its thread (connections still open are closed).
class server {
public:
    virtual ~server() = default;
    server() = default;
    server(const server&) = delete;
    server& operator=(const server&) = delete;

    std::uint16_t port() const noexcept { return port_; }
    int tid() const noexcept { return tid_; }

protected:
    /// On the serving thread, before it serves: pins it to `cpu` (-1: not
    /// pinned) and records its thread id.
    void attach_thread(int cpu);

    std::uint16_t port_ = 0;
    int tid_ = 0;
};

/// Each starts its server and returns once it accepts. Throw
/// std::system_error (io_uring unavailable, no port, ...).
/// `epoll`: the tandem server on runtime_options::backend = epoll.
std::unique_ptr<server> start_tandem_server(int cpu, bool epoll = false);
std::unique_ptr<server> start_raw_server(int cpu);
std::unique_ptr<server> start_asio_server(int cpu);

}  // namespace detail

}  // namespace echo
