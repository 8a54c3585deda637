// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// An HTTP/1.1 client over tandem's TCP streams: `http_client::get` and `request`, with
/// keep-alive connections pooled per host. Responses are parsed by llhttp (Node.js's parser).
///
///     tandem::http_client client;
///     tandem::http_response r = co_await client.get("http://127.0.0.1:8080/index.html");
///     if (r.status == 200) use(r.body);
///
/// What it does:
/// - `http://` URLs only (no TLS): `http://host[:port][/path][?query]`; host is a name
///   (resolved with `resolve`), an IPv4 address or a bracketed IPv6 address. Anything else
///   is std::invalid_argument.
/// - Bodies: Content-Length, chunked, and read-until-close; the body arrives whole in
///   `http_response::body` (decoded from chunks). 1xx interim responses are skipped.
/// - Connections: after a complete response a connection goes back to the pool of its host,
///   unless the server said `Connection: close` (or spoke HTTP/1.0 without keep-alive) or
///   bytes follow the response. At most `max_connections_per_host` connections per host and
///   io thread exist at once (in use or idle); a request beyond that waits (FIFO) for one.
///   A request on a pooled connection that the server had closed meanwhile is retried once
///   on a new connection if its method is idempotent (GET, HEAD, PUT, DELETE, OPTIONS, TRACE)
///   and no byte of the response had arrived.
/// - Timeouts: wrap a call in `timeout(d, client.get(url))`; cancellation is immediate, and
///   the connection in use is closed (its state is unknown), never reused.
/// - Errors: a response that is not valid HTTP/1.1 (or larger than the limits below) is
///   `http_error` naming the server and llhttp's reason; a connection that ends before the
///   response is complete is `end_of_stream`; socket failures are std::system_error (e.g.
///   ECONNREFUSED naming the address); a name that does not resolve is std::system_error in
///   getaddrinfo_category(). Status codes are not errors: a 404 is a response.
/// - Threads: the client may be shared by tasks on several io threads (its pool map is
///   locked); each io thread gets its own connections, because a socket belongs to the loop
///   that made it. The client must outlive the requests made with it. Destroying it closes
///   its idle connections.

#include <tandem/error.hpp>
#include <tandem/task.hpp>

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tandem {

/// A response that is not valid HTTP/1.1, or one beyond the client's limits.
class http_error : public error {
public:
    using error::error;
};

struct http_response {
    int status = 0;
    /// In the order received, names as the server spelled them.
    std::vector<std::pair<std::string, std::string>> headers;
    std::string body;

    /// The value of the first header named `name` (ASCII case-insensitive); empty if absent.
    std::string_view header(std::string_view name) const noexcept;
};

struct http_client_options {
    /// Connections per host (and io thread), idle ones included.
    std::size_t max_connections_per_host = 16;
    /// Larger response headers (all lines together) are an http_error.
    std::size_t max_header_bytes = 64 << 10;
    /// A larger response body is an http_error (the connection is closed).
    std::size_t max_body_bytes = std::size_t{256} << 20;
    /// Sent as User-Agent; empty sends none.
    std::string user_agent = "tandem/0.1";
};

namespace detail {
class http_pools;  // lib/net/http.cpp
}

class http_client {
public:
    explicit http_client(http_client_options options = {});
    ~http_client();
    http_client(const http_client&) = delete;
    http_client& operator=(const http_client&) = delete;

    /// `request("GET", url)`.
    task<http_response> get(std::string_view url);
    /// Sends `method url` with `body` (a Content-Length header is added when the body is not
    /// empty, or for POST/PUT/PATCH). `url` and `body` are copied before the task first
    /// suspends: they need not outlive the call.
    task<http_response> request(std::string_view method, std::string_view url,
                                std::string_view body = {});

    /// Idle connections pooled on the calling io thread, over all hosts (for tests/metrics).
    std::size_t idle_connections() const;

private:
    http_client_options options_;
    std::unique_ptr<detail::http_pools> pools_;
};

}  // namespace tandem
