// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// Sockets over io_uring: `tcp_stream` (connect, read, write, shutdown, close), `tcp_listener`
/// (bind, multishot accept) and `udp_socket` (send_to, receive_from). Unix-domain stream
/// sockets are a tcp_stream/tcp_listener with a `unix:` address. Addresses and name resolution
/// are in <tandem/address.hpp>.
///
/// Common rules:
/// - Threads: a socket belongs to the loop of the task that made it (connect, accept, bind);
///   use it from tasks on that loop only. Every awaitable resumes its task on that loop.
/// - Buffers: a span passed to read or write must stay valid until the `co_await` returns.
/// - Errors: system call failures are `std::system_error` with the errno (ECONNREFUSED,
///   ECONNRESET, EPIPE, ...). Sends use IORING_OP_SEND with MSG_NOSIGNAL: a vanished peer is an
///   EPIPE or ECONNRESET error, never a SIGPIPE.
/// - Cancellation: every awaitable is a cancellation point (`timeout`, `when_any`, task
///   cancellation): the kernel operation is cancelled and awaited, then `operation_cancelled`
///   is thrown. Bytes already transferred by a cancelled `read_exact`/`write_all` are not
///   reported; the stream is then in an unknown position: close it.

#include <tandem/address.hpp>
#include <tandem/task.hpp>

#include <cstddef>
#include <memory>
#include <span>

namespace tandem {

namespace detail {
struct stream_access;  // the library's own uses of tcp_stream internals (lib/net/)
}

/// A connected TCP (or Unix stream) socket. Move-only; the destructor closes it.
class tcp_stream {
public:
    tcp_stream() noexcept = default;
    /// Adopts `fd`, a connected stream socket (the stream closes it).
    explicit tcp_stream(int fd) noexcept : fd_(fd) {}
    tcp_stream(tcp_stream&& other) noexcept;
    tcp_stream& operator=(tcp_stream&& other) noexcept;
    tcp_stream(const tcp_stream&) = delete;
    tcp_stream& operator=(const tcp_stream&) = delete;
    ~tcp_stream();  // close()

    /// Connects to `to` (IPv4, IPv6 or unix:). Throws std::system_error whose what() names the
    /// target: ECONNREFUSED, ETIMEDOUT, EHOSTUNREACH, ...
    static task<tcp_stream> connect(const address& to);

    /// Reads what is available, up to `buffer.size()` bytes (waiting for at least one); returns
    /// the count, 0 at end of stream (the peer shut down its side).
    task<std::size_t> read_some(std::span<std::byte> buffer);
    /// Fills `buffer` completely; throws end_of_stream if the peer ends the stream first.
    task<> read_exact(std::span<std::byte> buffer);
    /// Sends all of `data`, however many sends that takes.
    task<> write_all(std::span<const std::byte> data);
    /// Sends FIN: the peer reads end of stream; this side can still read.
    task<> shutdown_write();

    /// Closes the socket. Operations of this stream still pending in the kernel (a task waiting
    /// in read_some, say) are cancelled first: they resume with operation_cancelled. Without
    /// that a pending receive would wait forever: close(2) does not end it. Idempotent; call it
    /// on the stream's loop.
    void close() noexcept;

    /// The peer's address (getpeername), "unspecified" if it cannot be had.
    address peer_address() const;
    bool is_open() const noexcept { return fd_ >= 0; }
    int native_handle() const noexcept { return fd_; }

private:
    friend struct detail::stream_access;
    /// read_some; `poll_first` when the caller knows nothing has arrived yet (a reply to what
    /// it just sent): the kernel then waits for data without a receive attempt first.
    task<std::size_t> receive(std::span<std::byte> buffer, bool poll_first);

    int fd_ = -1;
    unsigned pending_ = 0;  // kernel operations in flight on fd_
};

namespace detail {
struct accept_state;  // lib/net/tcp.cpp
}

/// A listening TCP (or Unix stream) socket. Move-only; the destructor closes it.
///
/// Accepting uses one multishot IORING_OP_ACCEPT kept armed on the ring; connections that
/// arrive while no task waits in accept() are held (as fds) until one does. When the kernel
/// ends the multishot (for instance on EMFILE), the next accept() arms it again; on EMFILE or
/// ENFILE accept() waits (1 ms, doubling to 100 ms) for fds to free up instead of failing or
/// spinning.
class tcp_listener {
public:
    tcp_listener() noexcept;
    tcp_listener(tcp_listener&& other) noexcept;
    tcp_listener& operator=(tcp_listener&& other) noexcept;
    tcp_listener(const tcp_listener&) = delete;
    tcp_listener& operator=(const tcp_listener&) = delete;
    ~tcp_listener();  // close()

    /// Binds and listens (SO_REUSEADDR for TCP); port 0 picks a free port (see local_address).
    /// Throws std::system_error naming the address (EADDRINUSE, EACCES, ...). Not a coroutine:
    /// call it anywhere; accept() on a loop thread.
    static tcp_listener bind(const address& at, int backlog = 4096);

    address local_address() const;

    /// The next connection. Tasks waiting together are served in FIFO order. Cancellable.
    /// Every accept() of a listener must come from the same loop (it aborts otherwise).
    task<tcp_stream> accept();

    /// Stops accepting and closes the socket; connections accepted but not handed out are
    /// closed. Best on the loop that accepted; from any other thread (or after the runtime is
    /// gone) it is safe too, and the accepting loop finishes the job on its next turn.
    void close() noexcept;
    bool is_open() const noexcept { return fd_ >= 0; }
    int native_handle() const noexcept { return fd_; }

private:
    int fd_ = -1;
    detail::accept_state* state_ = nullptr;  // made by the first accept()
};

/// A UDP socket. Move-only; the destructor closes it. Datagrams keep their boundaries: a
/// receive returns one datagram (truncated to the buffer if it is larger).
class udp_socket {
public:
    udp_socket() noexcept = default;
    udp_socket(udp_socket&& other) noexcept;
    udp_socket& operator=(udp_socket&& other) noexcept;
    udp_socket(const udp_socket&) = delete;
    udp_socket& operator=(const udp_socket&) = delete;
    ~udp_socket();  // close()

    /// A socket bound to `at` (port 0 picks a free port). Throws std::system_error naming the
    /// address. Not a coroutine: call it anywhere; send and receive on a loop thread.
    static udp_socket bind(const address& at);

    address local_address() const;

    /// Sends one datagram to `to` (IORING_OP_SENDMSG); returns the bytes sent.
    task<std::size_t> send_to(std::span<const std::byte> data, const address& to);
    /// Waits for one datagram (IORING_OP_RECVMSG); stores its sender in `from` and returns its
    /// size, at most `buffer.size()` (the rest of a larger datagram is dropped). `from` must
    /// stay valid until the co_await returns.
    task<std::size_t> receive_from(std::span<std::byte> buffer, address& from);

    /// Closes the socket; pending operations are cancelled first (as tcp_stream::close).
    void close() noexcept;
    int native_handle() const noexcept { return fd_; }

private:
    int fd_ = -1;
    unsigned pending_ = 0;
};

}  // namespace tandem
