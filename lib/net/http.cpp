// SPDX-License-Identifier: MIT
//
// The HTTP/1.1 client. A request takes a connection from its host's pool (per
// io thread), sends the request in one write, and feeds what it reads to the
// response parser (http_parse.hpp: llhttp) until the response is complete; the
// connection then goes back to the pool if the response allows it. A lease
// (RAII) returns or closes the connection on every path out, exceptions and
// cancellation included.

#include <tandem/address.hpp>
#include <tandem/http.hpp>
#include <tandem/net.hpp>

#include "../loop.hpp"
#include "../waiter_list.hpp"
#include "http_parse.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <system_error>

namespace tandem {

namespace {

bool iequals(std::string_view a, std::string_view b) noexcept {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i) {
        unsigned char x = static_cast<unsigned char>(a[i]);
        unsigned char y = static_cast<unsigned char>(b[i]);
        if (x >= 'A' && x <= 'Z') x = static_cast<unsigned char>(x + 32);
        if (y >= 'A' && y <= 'Z') y = static_cast<unsigned char>(y + 32);
        if (x != y) return false;
    }
    return true;
}

// ---- URLs -------------------------------------------------------------------------------------

struct parsed_url {
    std::string host;         // without brackets
    std::uint16_t port = 80;  //
    std::string authority;    // for the Host header: host[:port], IPv6 bracketed
    std::string target;       // path and query, at least "/"
};

[[noreturn]] void bad_url(std::string_view url, const char* why) {
    throw std::invalid_argument("tandem: bad URL '" + std::string(url) + "': " + why);
}

parsed_url parse_url(std::string_view url) {
    constexpr std::string_view scheme = "http://";
    if (url.size() < scheme.size() || !iequals(url.substr(0, scheme.size()), scheme)) {
        if (url.size() >= 8 && iequals(url.substr(0, 8), "https://"))
            bad_url(url, "https is not supported (tandem has no TLS)");
        bad_url(url, "it must start with http://");
    }
    std::string_view rest = url.substr(scheme.size());
    const std::size_t end_of_authority = rest.find_first_of("/?#");
    std::string_view authority = rest.substr(0, end_of_authority);
    std::string_view target =
        end_of_authority == std::string_view::npos ? "" : rest.substr(end_of_authority);
    if (const std::size_t hash = target.find('#'); hash != std::string_view::npos)
        target = target.substr(0, hash);  // fragments stay with the client
    if (authority.find('@') != std::string_view::npos) bad_url(url, "user info is not supported");
    if (authority.empty()) bad_url(url, "no host");

    parsed_url out;
    std::string_view host;
    std::string_view port_text;
    if (authority.front() == '[') {
        const std::size_t close = authority.find(']');
        if (close == std::string_view::npos) bad_url(url, "unterminated [IPv6 address]");
        host = authority.substr(1, close - 1);
        std::string_view after = authority.substr(close + 1);
        if (!after.empty()) {
            if (after.front() != ':') bad_url(url, "junk after ]");
            port_text = after.substr(1);
        }
        in6_addr probe{};
        if (::inet_pton(AF_INET6, std::string(host).c_str(), &probe) != 1)
            bad_url(url, "not an IPv6 address between [ ]");
    } else {
        const std::size_t colon = authority.rfind(':');
        host = authority.substr(0, colon);
        if (colon != std::string_view::npos) port_text = authority.substr(colon + 1);
        if (host.empty()) bad_url(url, "no host");
        for (char c : host) {
            const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                            (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_';
            if (!ok) bad_url(url, "bad character in host name");
        }
    }
    if (!port_text.empty() || authority.back() == ':') {
        unsigned port = 0;
        auto [p, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
        if (ec != std::errc() || p != port_text.data() + port_text.size() || port == 0 ||
            port > 65535)
            bad_url(url, "bad port");
        out.port = static_cast<std::uint16_t>(port);
    }
    out.host = std::string(host);
    out.authority = std::string(authority);
    // A target is at least "/"; a bare query gets one in front.
    const bool slash = target.empty() || target.front() == '?';
    out.target.reserve(target.size() + 1);
    if (slash) out.target.push_back('/');
    out.target.append(target.data(), target.size());
    for (char c : out.target) {
        if (static_cast<unsigned char>(c) <= ' ' || c == 0x7f)
            bad_url(url, "spaces and control characters must be percent-encoded");
    }
    return out;
}

/// The addresses to try for `host`: a literal parses directly, a name is resolved.
task<std::vector<address>> addresses_of(const parsed_url& u) {
    in_addr v4{};
    in6_addr v6{};
    if (::inet_pton(AF_INET, u.host.c_str(), &v4) == 1) {
        co_return std::vector<address>{address::parse(u.host + ":" + std::to_string(u.port))};
    }
    if (::inet_pton(AF_INET6, u.host.c_str(), &v6) == 1) {
        co_return std::vector<address>{
            address::parse("[" + u.host + "]:" + std::to_string(u.port))};
    }
    co_return co_await resolve(u.host, u.port);
}

bool is_idempotent(std::string_view method) noexcept {
    for (std::string_view m : {"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"}) {
        if (method == m) return true;
    }
    return false;
}

}  // namespace

std::string_view http_response::header(std::string_view name) const noexcept {
    for (const auto& [n, v] : headers) {
        if (iequals(n, name)) return v;
    }
    return {};
}

// ---- the pools --------------------------------------------------------------------------------

namespace detail {

/// One host's connections on one loop. Touched only on that loop's thread.
struct host_pool {
    std::vector<tcp_stream> idle;  // most recently used last
    std::size_t open = 0;          // idle + in use + being connected
    waiter_list waiting;           // requests for a connection of a full pool
};

/// A request waiting for a connection of a full pool. It is handed either a
/// connection (`stream`) or the right to open one (`stream` stays closed).
struct slot_waiter : waiter {
    tcp_stream stream;
};

/// Gives back a connection (`keep`) or the slot it held. Wakes the first waiter
/// with it if there is one.
void release(host_pool& pool, tcp_stream stream, bool keep) noexcept {
    if (!keep) stream.close();
    if (auto* w = static_cast<slot_waiter*>(pool.waiting.front())) {
        w->stream = std::move(stream);  // closed: the waiter opens its own
        pool.waiting.wake(w);
        return;
    }
    if (keep) {
        pool.idle.push_back(std::move(stream));
    } else {
        --pool.open;
    }
}

class http_pools {
public:
    host_pool& get(loop* l, const std::string& authority) {
        std::lock_guard lock(mutex_);
        host_pool& p = pools_[key{l, authority}];
        p.waiting.owner = l;
        return p;
    }
    std::size_t idle_on(loop* l) const {
        std::lock_guard lock(mutex_);
        std::size_t n = 0;
        for (const auto& [k, p] : pools_) {
            if (k.first == l) n += p.idle.size();
        }
        return n;
    }

private:
    using key = std::pair<loop*, std::string>;
    mutable std::mutex mutex_;
    std::map<key, host_pool> pools_;  // node-based: references stay valid
};

}  // namespace detail

namespace {

/// A connection taken from a pool; gives it back (or closes it) when it goes.
struct lease {
    detail::host_pool* pool = nullptr;
    tcp_stream stream;
    bool reused = false;
    bool keep = false;

    lease() = default;
    lease(const lease&) = delete;
    lease& operator=(const lease&) = delete;
    ~lease() {
        if (pool != nullptr) detail::release(*pool, std::move(stream), keep);
    }
};

task<tcp_stream> connect_to(const parsed_url& u) {
    std::vector<address> candidates = co_await addresses_of(u);
    std::exception_ptr last;
    for (const address& a : candidates) {
        try {
            co_return co_await tcp_stream::connect(a);
        } catch (const operation_cancelled&) {
            throw;
        } catch (const std::system_error&) {
            last = std::current_exception();
        }
    }
    std::rethrow_exception(last);
}

/// Fills `out` with a connection to `u`: an idle one, a new one if the pool has
/// room, or the next one given back. `fresh` skips the idle ones.
task<> acquire(detail::host_pool& pool, const parsed_url& u, std::size_t max, bool fresh,
               lease& out) {
    if (!fresh && !pool.idle.empty()) {
        out.stream = std::move(pool.idle.back());
        pool.idle.pop_back();
        out.pool = &pool;
        out.reused = true;
        co_return;
    }
    if (fresh && !pool.idle.empty() && pool.open >= max) {
        pool.idle.front().close();  // make room by dropping the oldest idle one
        pool.idle.erase(pool.idle.begin());
        --pool.open;
    }
    if (pool.open >= max) {
        detail::slot_waiter w;
        co_await pool.waiting.wait(w);
        if (w.cancelled) throw operation_cancelled();
        out.pool = &pool;  // holds the slot from here on, connected or not
        if (w.stream.is_open()) {
            out.stream = std::move(w.stream);
            out.reused = true;
            co_return;
        }
    } else {
        ++pool.open;
        out.pool = &pool;
    }
    out.stream = co_await connect_to(u);
}

}  // namespace

namespace detail {
struct stream_access {
    /// A receive of a reply: nothing is there yet when it is submitted.
    static task<std::size_t> receive_reply(tcp_stream& s, std::span<std::byte> buffer) {
        return s.receive(buffer, true);
    }
};
}  // namespace detail

namespace {

using detail::parse_status;
using detail::response_parser;

/// Why a request on a reused connection may be tried again.
struct stale_connection {};

std::string peer_name(const tcp_stream& s) {
    return s.peer_address().to_string();
}

[[noreturn]] void malformed(const tcp_stream& s, const std::string& why) {
    throw http_error("tandem: malformed HTTP response from " + peer_name(s) + ": " + why);
}

/// Sends `wire` on `c` and reads the response. Throws stale_connection when a
/// reused connection turns out closed before any byte of the response came.
task<http_response> exchange(lease& c, const std::string& wire, bool head,
                             const http_client_options& options) {
    response_parser parser(options, head);

    try {
        co_await c.stream.write_all(std::as_bytes(std::span(wire)));
    } catch (const std::system_error& e) {
        if (c.reused && (e.code().value() == EPIPE || e.code().value() == ECONNRESET))
            throw stale_connection{};
        throw;
    }

    // Most responses fit in 4 KiB (a waiting request holds no more); one that fills it gets
    // 64 KiB reads from then on.
    std::array<char, 4096> small;
    std::unique_ptr<char[]> large;
    std::span<char> buffer(small);
    std::size_t received = 0;
    for (;;) {
        std::size_t n = 0;
        try {
            // The first read follows the request: wait for the reply without a receive
            // attempt first (the rest of a reply is usually there already).
            // (No co_await inside ?: or a condition: g++ 12 miscompiles some of those.)
            if (received == 0) {
                n = co_await detail::stream_access::receive_reply(c.stream,
                                                                  std::as_writable_bytes(buffer));
            } else {
                n = co_await c.stream.read_some(std::as_writable_bytes(buffer));
            }
        } catch (const std::system_error& e) {
            if (c.reused && received == 0 && e.code().value() == ECONNRESET)
                throw stale_connection{};
            throw;
        }
        parse_status status;
        if (n == 0) {
            if (received == 0) {
                if (c.reused) throw stale_connection{};
                throw http_error("tandem: " + peer_name(c.stream) +
                                 " closed the connection without a response");
            }
            status = parser.finish();  // completes a body that runs to the end of stream
            if (status != parse_status::complete && !parser.over_limit()) {
                throw http_error("tandem: " + peer_name(c.stream) +
                                 " closed the connection after " + std::to_string(received) +
                                 " bytes, before the response was complete");
            }
        } else {
            received += n;
            status = parser.feed(std::string_view(buffer.data(), n));
        }
        if (status == parse_status::complete) {
            // Paused right after the response: bytes beyond it (or a close) end the connection.
            const bool trailing = n != 0 && parser.consumed() != n;
            c.keep = n != 0 && !trailing && parser.keep_alive();
            co_return parser.take();
        }
        if (status == parse_status::failed) {
            c.keep = false;
            malformed(c.stream, parser.error());
        }
        if (n == 0) malformed(c.stream, "the connection ended inside the response");
        if (n == buffer.size() && !large) {
            constexpr std::size_t large_size = 64 << 10;
            large = std::make_unique_for_overwrite<char[]>(large_size);
            buffer = std::span(large.get(), large_size);
        }
    }
}

std::string build_request(std::string_view method, const parsed_url& u, std::string_view body,
                          const http_client_options& options) {
    std::string wire;
    wire.reserve(method.size() + u.target.size() + u.authority.size() + options.user_agent.size() +
                 body.size() + 96);
    wire.append(method).append(" ").append(u.target).append(" HTTP/1.1\r\nHost: ");
    wire.append(u.authority).append("\r\n");
    if (!options.user_agent.empty()) wire.append("User-Agent: ").append(options.user_agent);
    if (!options.user_agent.empty()) wire.append("\r\n");
    if (!body.empty() || method == "POST" || method == "PUT" || method == "PATCH") {
        wire.append("Content-Length: ").append(std::to_string(body.size())).append("\r\n");
    }
    wire.append("\r\n").append(body);
    return wire;
}

void check_method(std::string_view method) {
    if (method.empty()) throw std::invalid_argument("tandem: empty HTTP method");
    for (char c : method) {
        if (c < 'A' || c > 'Z') {
            throw std::invalid_argument("tandem: bad HTTP method '" + std::string(method) +
                                        "' (upper-case letters only)");
        }
    }
}

task<http_response> run_request(detail::http_pools& pools, const http_client_options& options,
                                std::string method, std::string url, std::string body) {
    check_method(method);
    detail::loop& here = detail::require_loop("http_client::request");
    const parsed_url u = parse_url(url);
    const std::string wire = build_request(method, u, body, options);
    body = std::string();  // its copy is in `wire`
    detail::host_pool& pool = pools.get(&here, u.authority);
    const bool retry_allowed = is_idempotent(method);
    for (int attempt = 0;; ++attempt) {
        lease c;
        co_await acquire(pool, u, options.max_connections_per_host, attempt > 0, c);
        try {
            co_return co_await exchange(c, wire, method == "HEAD", options);
        } catch (const stale_connection&) {
            // `c` closes the connection and frees its slot when this iteration ends.
        }
        if (!retry_allowed || attempt > 0) {
            throw http_error("tandem: " + u.authority +
                             " closed a kept-alive connection before responding to " + method +
                             " " + u.target);
        }
    }
}

}  // namespace

http_client::http_client(http_client_options options)
    : options_(std::move(options)), pools_(std::make_unique<detail::http_pools>()) {
    if (options_.max_connections_per_host == 0)
        throw std::invalid_argument("tandem: http_client_options::max_connections_per_host is 0");
}

http_client::~http_client() = default;

task<http_response> http_client::get(std::string_view url) {
    return request("GET", url);
}

task<http_response> http_client::request(std::string_view method, std::string_view url,
                                         std::string_view body) {
    // Not a coroutine itself: the views are copied before the caller can drop them.
    return run_request(*pools_, options_, std::string(method), std::string(url), std::string(body));
}

std::size_t http_client::idle_connections() const {
    return pools_->idle_on(detail::this_thread_loop());
}

}  // namespace tandem
