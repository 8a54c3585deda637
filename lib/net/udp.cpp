// SPDX-License-Identifier: MIT
#include <tandem/net.hpp>

#include "../uring_op.hpp"
#include "cancel_fd.hpp"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <system_error>
#include <utility>

namespace tandem {

namespace {

[[noreturn]] void fail(int err, const std::string& what) {
    throw std::system_error(err, std::system_category(), "tandem: " + what);
}

}  // namespace

udp_socket::udp_socket(udp_socket&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)), pending_(std::exchange(other.pending_, 0)) {}

udp_socket& udp_socket::operator=(udp_socket&& other) noexcept {
    if (this != &other) {
        close();
        fd_ = std::exchange(other.fd_, -1);
        pending_ = std::exchange(other.pending_, 0);
    }
    return *this;
}

udp_socket::~udp_socket() {
    close();
}

void udp_socket::close() noexcept {
    if (fd_ < 0) return;
    if (pending_ > 0) detail::cancel_all_on(fd_);
    ::close(fd_);
    fd_ = -1;
}

udp_socket udp_socket::bind(const address& at) {
    udp_socket s;
    s.fd_ = ::socket(at.family(), SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s.fd_ < 0) fail(errno, "socket for " + at.to_string());
    if (::bind(s.fd_, at.data(), at.size()) != 0) fail(errno, "bind to " + at.to_string());
    return s;
}

address udp_socket::local_address() const {
    address a;
    socklen_t len = address::capacity();
    if (fd_ < 0 || ::getsockname(fd_, a.data(), &len) != 0) return {};
    a.set_size(len);
    return a;
}

task<std::size_t> udp_socket::send_to(std::span<const std::byte> data, const address& to) {
    if (fd_ < 0) fail(EBADF, "send_to on a closed socket");
    const detail::pending_op guard(pending_);
    const address target = to;  // the frame's copy: the kernel reads it after we suspend
    iovec iov{const_cast<std::byte*>(data.data()), data.size()};
    msghdr msg{};
    msg.msg_name = const_cast<sockaddr*>(target.data());
    msg.msg_namelen = target.size();
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    const int fd = fd_;
    const int r = co_await detail::uring_op(
        [&](io_uring_sqe* sqe) { io_uring_prep_sendmsg(sqe, fd, &msg, MSG_NOSIGNAL); });
    if (r == -ECANCELED) throw operation_cancelled();
    if (r < 0) fail(-r, "send_to " + target.to_string());
    co_return static_cast<std::size_t>(r);
}

task<std::size_t> udp_socket::receive_from(std::span<std::byte> buffer, address& from) {
    if (fd_ < 0) fail(EBADF, "receive_from on a closed socket");
    const detail::pending_op guard(pending_);
    address sender;
    iovec iov{buffer.data(), buffer.size()};
    msghdr msg{};
    msg.msg_name = sender.data();
    msg.msg_namelen = address::capacity();
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    const int fd = fd_;
    const int r = co_await detail::uring_op(
        [&](io_uring_sqe* sqe) { io_uring_prep_recvmsg(sqe, fd, &msg, 0); });
    if (r == -ECANCELED) throw operation_cancelled();
    if (r < 0) fail(-r, "receive_from");
    sender.set_size(msg.msg_namelen);
    from = sender;
    co_return static_cast<std::size_t>(r);
}

}  // namespace tandem
