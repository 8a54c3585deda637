// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// Socket addresses (IPv4, IPv6, Unix) as values, their text form, and name
/// resolution (getaddrinfo on the blocking-call pool, see <tandem/thread.hpp>).
///
/// Text forms, accepted by `address::parse` and produced by `to_string`:
/// `127.0.0.1:8080`, `[::1]:8080`, `[fe80::1%lo]:80` (scope by interface name
/// or number), `unix:/path/to/sock` (or a relative path), `unix:@name` (a Linux
/// abstract socket). Hosts are numeric only: names go through `resolve`.

#include <tandem/task.hpp>

#include <sys/socket.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace tandem {

/// A socket address: a `sockaddr_storage` and the length that is in use.
///
/// A plain value: copyable, no resources, no thread affinity; a const object
/// may be read from any number of threads. A default-constructed address is
/// empty: `family()` is AF_UNSPEC, `size()` is 0, `to_string()` "unspecified".
class address {
public:
    /// The empty address (AF_UNSPEC, size 0); all bytes zero.
    address() noexcept;

    /// Parses one of the text forms above. Throws `std::invalid_argument` whose
    /// what() quotes `text` (control bytes, quotes and backslashes escaped as in
    /// C) and says what is wrong: empty text, a missing or bad port (not 0..65535
    /// in decimal), a host that is not a numeric IPv4 or a bracketed IPv6
    /// address, an unknown scope interface, an empty Unix path, a NUL byte in
    /// a path name or anywhere outside an abstract Unix name (`unix:@...`), or a
    /// name too long for `sun_path` (107 bytes at most). Calls
    /// if_nametoindex(3) for a scope given by name; otherwise no system calls.
    static address parse(std::string_view text);

    /// Copies `len` bytes of a kernel address (from accept, getsockname,
    /// getaddrinfo, ...). Throws `std::invalid_argument` for a family other
    /// than AF_INET, AF_INET6 and AF_UNIX, or a length too short for its family
    /// or longer than `sockaddr_storage`.
    static address from_sockaddr(const sockaddr* sa, socklen_t len);

    /// The IPv4 address `host_order_ip` (e.g. INADDR_ANY, 0x7f000001), `port`.
    static address ipv4(std::uint32_t host_order_ip, std::uint16_t port) noexcept;

    /// 127.0.0.1:`port`. Port 0 in `tcp_listener::bind` picks a free port.
    static address loopback(std::uint16_t port) noexcept;

    /// The inverse of `parse`: `parse(a.to_string()) == a` for every IPv4,
    /// IPv6 and named Unix address. A scope id prints as its interface name
    /// (if_indextoname(3)), or as a number when no interface has it. Other
    /// forms, which `parse` rejects: "unspecified" (empty address), "unix:" (an
    /// unnamed Unix socket, e.g. an accepted peer that did not bind) and
    /// "family N" (N another family, after `set_size` on foreign data).
    std::string to_string() const;

    /// The port in host order; 0 for Unix and empty addresses.
    std::uint16_t port() const noexcept;

    /// AF_INET, AF_INET6, AF_UNIX, or AF_UNSPEC when empty.
    int family() const noexcept { return storage_.ss_family; }

    /// The bytes to pass to bind(2), connect(2), sendto(2): `size()` of them.
    const sockaddr* data() const noexcept { return reinterpret_cast<const sockaddr*>(&storage_); }
    /// The length in use: sizeof(sockaddr_in) or sizeof(sockaddr_in6) for IP,
    /// the kernel's length (family + name) for Unix, 0 when empty.
    socklen_t size() const noexcept { return size_; }

    /// For the kernel to fill in (accept, getsockname, recvfrom): pass `data()`
    /// and a length initialised to `capacity()`, then call `set_size` with the
    /// length the kernel returned. The family is read from the bytes.
    sockaddr* data() noexcept { return reinterpret_cast<sockaddr*>(&storage_); }
    /// sizeof(sockaddr_storage): room for any family.
    static constexpr socklen_t capacity() noexcept { return sizeof(sockaddr_storage); }

    /// Sets the length in use. `len > capacity()` is a precondition violation:
    /// it aborts with a message in every build mode.
    void set_size(socklen_t len) noexcept;

    /// Same family and same meaningful bytes: address and port for IPv4;
    /// address, port and scope id for IPv6 (flow info is ignored); the path for
    /// named Unix sockets (trailing NULs after it ignored), the exact name for
    /// abstract ones. Two empty addresses are equal.
    bool operator==(const address& other) const noexcept;

private:
    sockaddr_storage storage_;
    socklen_t size_ = 0;
};

/// The category of `resolve`'s errors: the codes are getaddrinfo's EAI_*
/// values (EAI_NONAME, EAI_AGAIN, ...), `message()` is gai_strerror(3) and
/// `name()` is "getaddrinfo". A static object: usable from any thread.
const std::error_category& getaddrinfo_category() noexcept;

/// Looks `host` up with getaddrinfo(3) (SOCK_STREAM, AF_UNSPEC, no
/// AI_ADDRCONFIG, so loopback names resolve on machines with no global
/// address) and returns its addresses with `port`, duplicates removed, in the
/// resolver's order (which follows RFC 6724 and /etc/gai.conf). Never empty. A
/// numeric host ("127.0.0.1", "::1", "fe80::1%lo") is converted without a
/// lookup; brackets are not accepted here.
///
/// - Lifetime: `host` is copied before the first suspension; the caller's
///   string may be gone as soon as `resolve` returns the task.
/// - Threads: getaddrinfo blocks, so it runs through `offload_to_thread` on
///   the runtime's blocking-call pool; the task resumes on its own loop. Loop
///   threads only (aborts with a message elsewhere).
/// - Errors: `std::system_error` whose what() names the host: with
///   `getaddrinfo_category()` and the EAI_* code (EAI_NONAME for an unknown
///   name or a host containing a NUL byte), or with `std::system_category()`
///   and errno when getaddrinfo reports EAI_SYSTEM.
/// - Cancellation: cancelling the task while the call waits for a pool
///   thread throws `operation_cancelled` and skips the lookup; a lookup that
///   has started runs to its end (bounded by the resolver's own timeouts,
///   resolv.conf `timeout`/`attempts`) and its result is delivered, so
///   `timeout(d, resolve(...))` may return late.
task<std::vector<address>> resolve(std::string_view host, std::uint16_t port);

}  // namespace tandem
