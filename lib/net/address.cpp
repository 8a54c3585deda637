// SPDX-License-Identifier: MIT
#include <tandem/address.hpp>
#include <tandem/thread.hpp>

#include <arpa/inet.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/un.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstddef>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>

namespace tandem {

namespace {

constexpr std::size_t sun_path_offset = offsetof(sockaddr_un, sun_path);
// One byte of sun_path stays for the NUL (or the abstract marker): the
// portable limit, and what getsockname reports back intact.
constexpr std::size_t max_unix_name = sizeof(sockaddr_un::sun_path) - 1;

// `text` in double quotes, with control bytes, '"' and '\' escaped: what() is a
// C string, so a raw NUL would cut the message short.
std::string quoted(std::string_view text) {
    std::string out = "\"";
    for (char c : text) {
        auto u = static_cast<unsigned char>(c);
        if (u < 0x20 || u == 0x7f) {
            constexpr char hex[] = "0123456789abcdef";
            out.append("\\x").append(1, hex[u >> 4]).append(1, hex[u & 15]);
        } else {
            if (c == '"' || c == '\\') out += '\\';
            out += c;
        }
    }
    return out + '"';
}

[[noreturn]] void bad_text(std::string_view text, std::string_view why) {
    throw std::invalid_argument("tandem: bad address " + quoted(text) + ": " + std::string(why));
}

bool all_digits(std::string_view s) {
    return !s.empty() && s.find_first_not_of("0123456789") == std::string_view::npos;
}

std::uint16_t parse_port(std::string_view text, std::string_view digits) {
    if (digits.empty()) bad_text(text, "missing port");
    if (!all_digits(digits)) bad_text(text, "port is not a decimal number");
    unsigned long value = 0;
    auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
    if (ec == std::errc::result_out_of_range || value > 65535) {
        bad_text(text, "port out of range (0-65535)");
    }
    return static_cast<std::uint16_t>(value);
}

std::uint32_t parse_scope(std::string_view text, std::string_view scope) {
    if (scope.empty()) bad_text(text, "empty scope id after '%'");
    if (all_digits(scope)) {
        std::uint32_t id = 0;
        auto [end, ec] = std::from_chars(scope.data(), scope.data() + scope.size(), id);
        if (ec != std::errc()) bad_text(text, "scope id out of range");
        return id;
    }
    unsigned id = ::if_nametoindex(std::string(scope).c_str());
    if (id == 0) bad_text(text, "no network interface named " + quoted(scope));
    return id;
}

// The name part of an AF_UNIX address: a path (up to its NUL), an abstract
// name (every byte after the leading NUL), or nothing for an unnamed socket.
struct unix_name {
    bool abstract = false;
    std::string_view bytes;
};

unix_name unix_name_of(const sockaddr_storage& ss, socklen_t size) {
    if (size <= sun_path_offset) return {};
    const char* path = reinterpret_cast<const sockaddr_un*>(&ss)->sun_path;
    std::size_t n = size - sun_path_offset;
    if (path[0] == '\0') return {true, std::string_view(path + 1, n - 1)};
    return {false, std::string_view(path, ::strnlen(path, n))};
}

}  // namespace

address::address() noexcept : storage_() {}

address address::parse(std::string_view text) {
    if (text.empty()) bad_text(text, "empty");
    address a;
    if (text.starts_with("unix:")) {
        std::string_view name = text.substr(5);
        bool abstract = name.starts_with('@');
        if (abstract) name.remove_prefix(1);
        if (name.empty() && !abstract) bad_text(text, "empty unix socket path");
        if (!abstract && name.find('\0') != std::string_view::npos) {
            bad_text(text, "unix socket path contains a NUL byte");
        }
        if (name.size() > max_unix_name) {
            bad_text(text, "unix socket name longer than " + std::to_string(max_unix_name) +
                               " bytes (sun_path)");
        }
        auto* un = reinterpret_cast<sockaddr_un*>(&a.storage_);
        un->sun_family = AF_UNIX;
        // Abstract: a leading NUL, then exactly the name. Path: the path and its NUL.
        std::memcpy(un->sun_path + (abstract ? 1 : 0), name.data(), name.size());
        a.size_ = static_cast<socklen_t>(sun_path_offset + 1 + name.size());
        return a;
    }
    // inet_pton and if_nametoindex take C strings: they would stop at a NUL and accept
    // "1.2.3.4\0junk:80" as 1.2.3.4. Only a Unix name (above) may hold one.
    if (text.find('\0') != std::string_view::npos) bad_text(text, "contains a NUL byte");
    if (text.front() == '[') {
        std::size_t close = text.find(']');
        if (close == std::string_view::npos) bad_text(text, "missing ']' after an IPv6 address");
        std::string_view rest = text.substr(close + 1);
        if (rest.empty()) bad_text(text, "missing port");
        if (rest.front() != ':') bad_text(text, "expected ':' and a port after ']'");
        std::uint16_t port = parse_port(text, rest.substr(1));
        std::string_view host = text.substr(1, close - 1);
        std::uint32_t scope = 0;
        if (std::size_t pct = host.find('%'); pct != std::string_view::npos) {
            scope = parse_scope(text, host.substr(pct + 1));
            host = host.substr(0, pct);
        }
        auto* in6 = reinterpret_cast<sockaddr_in6*>(&a.storage_);
        if (::inet_pton(AF_INET6, std::string(host).c_str(), &in6->sin6_addr) != 1) {
            bad_text(text, "not a numeric IPv6 address between '[' and ']'");
        }
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(port);
        in6->sin6_scope_id = scope;
        a.size_ = sizeof(sockaddr_in6);
        return a;
    }
    std::size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) bad_text(text, "missing port");
    std::string_view host = text.substr(0, colon);
    if (host.empty()) bad_text(text, "missing host");
    if (host.find(':') != std::string_view::npos) {
        bad_text(text, "an IPv6 host needs brackets, as in [::1]:80");
    }
    std::uint16_t port = parse_port(text, text.substr(colon + 1));
    in_addr ip{};
    if (::inet_pton(AF_INET, std::string(host).c_str(), &ip) != 1) {
        bad_text(text, "host is not a numeric IPv4 address (resolve() looks names up)");
    }
    a = ipv4(ntohl(ip.s_addr), port);
    return a;
}

address address::from_sockaddr(const sockaddr* sa, socklen_t len) {
    if (sa == nullptr || len < sizeof(sa_family_t)) {
        throw std::invalid_argument("tandem: from_sockaddr: length " + std::to_string(len) +
                                    " holds no address family");
    }
    sa_family_t family = 0;
    std::memcpy(&family, sa, sizeof family);
    std::size_t need = 0;
    switch (family) {
        case AF_INET:
            need = sizeof(sockaddr_in);
            break;
        case AF_INET6:
            need = sizeof(sockaddr_in6);
            break;
        case AF_UNIX:
            need = sizeof(sa_family_t);
            break;
        default:
            throw std::invalid_argument("tandem: from_sockaddr: unsupported address family " +
                                        std::to_string(family));
    }
    if (len < need || len > capacity()) {
        throw std::invalid_argument("tandem: from_sockaddr: length " + std::to_string(len) +
                                    " does not fit address family " + std::to_string(family));
    }
    address a;
    // IPv4/IPv6: a longer length carries nothing more; keep the family's own size.
    a.size_ = family == AF_UNIX ? len : static_cast<socklen_t>(need);
    std::memcpy(&a.storage_, sa, a.size_);
    return a;
}

address address::ipv4(std::uint32_t host_order_ip, std::uint16_t port) noexcept {
    address a;
    auto* in = reinterpret_cast<sockaddr_in*>(&a.storage_);
    in->sin_family = AF_INET;
    in->sin_port = htons(port);
    in->sin_addr.s_addr = htonl(host_order_ip);
    a.size_ = sizeof(sockaddr_in);
    return a;
}

address address::loopback(std::uint16_t port) noexcept {
    return ipv4(INADDR_LOOPBACK, port);
}

std::string address::to_string() const {
    char buf[INET6_ADDRSTRLEN] = {};
    switch (family()) {
        case AF_UNSPEC:
            return "unspecified";
        case AF_INET: {
            auto* in = reinterpret_cast<const sockaddr_in*>(&storage_);
            ::inet_ntop(AF_INET, &in->sin_addr, buf, sizeof buf);
            return std::string(buf) + ':' + std::to_string(port());
        }
        case AF_INET6: {
            auto* in6 = reinterpret_cast<const sockaddr_in6*>(&storage_);
            ::inet_ntop(AF_INET6, &in6->sin6_addr, buf, sizeof buf);
            std::string out = std::string("[") + buf;
            if (std::uint32_t scope = in6->sin6_scope_id; scope != 0) {
                char name[IF_NAMESIZE] = {};
                // A name made of digits would parse back as an index: print the index.
                bool named = ::if_indextoname(scope, name) != nullptr && !all_digits(name);
                out.append("%").append(named ? std::string(name) : std::to_string(scope));
            }
            return out + "]:" + std::to_string(port());
        }
        case AF_UNIX: {
            unix_name n = unix_name_of(storage_, size_);
            return std::string(n.abstract ? "unix:@" : "unix:").append(n.bytes);
        }
        default:
            return "family " + std::to_string(family());
    }
}

std::uint16_t address::port() const noexcept {
    switch (family()) {
        case AF_INET:
            return ntohs(reinterpret_cast<const sockaddr_in*>(&storage_)->sin_port);
        case AF_INET6:
            return ntohs(reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_port);
        default:
            return 0;
    }
}

void address::set_size(socklen_t len) noexcept {
    if (len > capacity()) {
        detail::contract_violation("address::set_size: length larger than sockaddr_storage");
    }
    size_ = len;
}

bool address::operator==(const address& other) const noexcept {
    if (family() != other.family()) return false;
    switch (family()) {
        case AF_UNSPEC:
            return true;
        case AF_INET: {
            auto* a = reinterpret_cast<const sockaddr_in*>(&storage_);
            auto* b = reinterpret_cast<const sockaddr_in*>(&other.storage_);
            return a->sin_port == b->sin_port && a->sin_addr.s_addr == b->sin_addr.s_addr;
        }
        case AF_INET6: {
            auto* a = reinterpret_cast<const sockaddr_in6*>(&storage_);
            auto* b = reinterpret_cast<const sockaddr_in6*>(&other.storage_);
            return a->sin6_port == b->sin6_port && a->sin6_scope_id == b->sin6_scope_id &&
                   std::memcmp(&a->sin6_addr, &b->sin6_addr, sizeof a->sin6_addr) == 0;
        }
        case AF_UNIX: {
            unix_name a = unix_name_of(storage_, size_);
            unix_name b = unix_name_of(other.storage_, other.size_);
            bool a_unnamed = size_ <= sun_path_offset, b_unnamed = other.size_ <= sun_path_offset;
            return a_unnamed == b_unnamed && a.abstract == b.abstract && a.bytes == b.bytes;
        }
        default:
            return size_ == other.size_ && std::memcmp(&storage_, &other.storage_, size_) == 0;
    }
}

namespace {

class getaddrinfo_category_impl final : public std::error_category {
public:
    const char* name() const noexcept override { return "getaddrinfo"; }
    std::string message(int code) const override { return ::gai_strerror(code); }
};

[[noreturn]] void throw_lookup_error(int code, int err, const std::string& host) {
    std::string what = "tandem: resolve " + quoted(host);
    if (code == EAI_SYSTEM && err != 0) throw std::system_error(err, std::system_category(), what);
    throw std::system_error(code, getaddrinfo_category(), what);
}

// Runs on a blocking-call pool thread; exceptions travel back to the caller as they are.
std::vector<address> lookup(std::string host, std::uint16_t port) {
    // c_str() would silently cut the name at a NUL: no host has one.
    if (host.find('\0') != std::string::npos) throw_lookup_error(EAI_NONAME, 0, host);
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    std::string service = std::to_string(port);
    addrinfo* list = nullptr;
    int rc = ::getaddrinfo(host.c_str(), service.c_str(), &hints, &list);
    if (rc != 0) throw_lookup_error(rc, errno, host);
    std::unique_ptr<addrinfo, void (*)(addrinfo*)> owner(list, &::freeaddrinfo);
    std::vector<address> out;
    for (const addrinfo* ai = list; ai != nullptr; ai = ai->ai_next) {
        if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6) continue;
        address a = address::from_sockaddr(ai->ai_addr, ai->ai_addrlen);
        if (std::find(out.begin(), out.end(), a) == out.end()) out.push_back(a);
    }
    if (out.empty()) throw_lookup_error(EAI_NONAME, 0, host);
    return out;
}

}  // namespace

const std::error_category& getaddrinfo_category() noexcept {
    static const getaddrinfo_category_impl category;
    return category;
}

task<std::vector<address>> resolve(std::string_view host, std::uint16_t port) {
    // offload_to_thread's frame owns the copy of the host from here on.
    return offload_to_thread(&lookup, std::string(host), port);
}

}  // namespace tandem
