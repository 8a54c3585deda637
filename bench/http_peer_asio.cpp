// SPDX-License-Identifier: MIT
// http_peer_asio: the HTTP load peer of http_bench written with Asio's C++20 coroutines
// (asio::awaitable, co_spawn, as_tuple(use_awaitable): no exceptions on the request path).
// Command line, workload and output: http_peer_common.hpp. Built twice from this file:
//
//   http_peer_asio_epoll   Asio's default Linux backend (epoll reactor)
//   http_peer_asio_uring   -DASIO_HAS_IO_URING -DASIO_DISABLE_EPOLL: io_uring for sockets and
//                          timers too (Asio 1.22 "io_uring as the default backend")
//
// --threads T (default 1): T io_contexts with concurrency hint 1, each run by its own thread;
// connection i belongs to context i % T. One coroutine per connection; its receive buffer
// (recv_buffer_bytes) and parser live in the connection, next to the socket.
// Phases: connect all N (one coroutine each), then the load phase (one loop coroutine each).
// --idle N: see http_peer_common.hpp; the connections wait in async_read_some.

#include "http_peer_common.hpp"

// Asio 1.22 turns co_await on for clang only when it finds libc++'s
// <experimental/coroutine>; clang with libstdc++'s <coroutine> works as well.
#if defined(__clang__) && !defined(ASIO_HAS_CO_AWAIT) && __has_include(<coroutine>)
#define ASIO_HAS_CO_AWAIT 1
#endif
#include <asio.hpp>
#include <asio/experimental/as_tuple.hpp>

#include <malloc.h>

#include <array>
#include <atomic>
#include <cstdio>
#include <memory>
#include <thread>
#include <vector>

namespace {

using asio::ip::tcp;
using http_peer::load_state;
using http_peer::peer_args;
using http_peer::response_parser;

constexpr auto use_tuple = asio::experimental::as_tuple(asio::use_awaitable);

struct connection {
    explicit connection(asio::io_context& ctx) : socket(ctx) {}
    tcp::socket socket;
    response_parser parser;
    std::array<char, http_peer::recv_buffer_bytes> buf;
};

/// Shared by every coroutine; outlives all io_context runs (a local of main).
struct run_state {
    const peer_args* args;
    tcp::endpoint endpoint;
    load_state* load;
    std::atomic<int> idle_finished{0}, idle_ok{0};
    long rss_before_kb = 0;
    std::vector<std::unique_ptr<asio::io_context>>* contexts;
};

// Coroutine parameters are pointers to objects that outlive the io_context runs (main's
// locals), never references to temporaries (STYLE.md, "Avoid").
// g++ 12 miscompiles a co_await inside a condition (`if (co_await f())`, `a && co_await f()`:
// here a segfault once it runs; with tandem::task, `if (!co_await f())` and
// `while (co_await f())` never start the coroutine's body; clang is fine), so results go to a
// variable first.

asio::awaitable<bool> connect(connection* c, run_state* rs) {
    asio::error_code ignored;
    c->socket.close(ignored);
    auto [e] = co_await c->socket.async_connect(rs->endpoint, use_tuple);
    if (e) {
        c->socket.close(ignored);
        co_return false;
    }
    c->socket.set_option(tcp::no_delay(true), ignored);
    c->parser.reset();
    co_return true;
}

asio::awaitable<void> open_connection(connection* c, run_state* rs) {
    const bool ok = co_await connect(c, rs);
    if (!ok) rs->load->error();
}

/// One request on c: true if a response arrived (ok or not), false if the connection failed
/// (it is closed then; the caller reconnects).
asio::awaitable<bool> one_request(connection* c, run_state* rs) {
    load_state& st = *rs->load;
    bool open = c->socket.is_open();
    if (!open) open = co_await connect(c, rs);
    if (!open) {
        st.error();
        asio::steady_timer pause(c->socket.get_executor(), std::chrono::milliseconds(10));
        co_await pause.async_wait(use_tuple);  // no busy loop against a refusing server
        co_return false;
    }
    const std::int64_t start = http_peer::now_ns();
    auto [we, wn] =
        co_await asio::async_write(c->socket, asio::buffer(rs->args->request), use_tuple);
    (void)wn;
    bool failed = static_cast<bool>(we);
    while (!failed) {
        auto [re, n] = co_await c->socket.async_read_some(asio::buffer(c->buf), use_tuple);
        const auto got = !re                      ? c->parser.feed(c->buf.data(), n)
                         : re == asio::error::eof ? c->parser.finish()
                                                  : response_parser::outcome::bad;
        if (got == response_parser::outcome::more) continue;
        if (got == response_parser::outcome::bad) break;
        if (c->parser.status() == 200) {
            st.ok(http_peer::now_ns() - start);
        } else {
            st.error();
        }
        if (re || !c->parser.keep_alive()) {
            asio::error_code ignored;
            c->socket.close(ignored);
        }
        co_return true;
    }
    st.error();
    asio::error_code ignored;
    c->socket.close(ignored);
    co_return false;
}

asio::awaitable<void> request_loop(connection* c, run_state* rs) {
    while (rs->load->next()) co_await one_request(c, rs);
}

/// --idle: one request, then wait in a read the server never answers. The last connection
/// to get here measures and prints, then stops every io_context.
asio::awaitable<void> idle_connection(connection* c, run_state* rs) {
    bool ok = c->socket.is_open();
    if (ok) ok = co_await one_request(c, rs);
    ok = ok && c->socket.is_open();
    if (ok) rs->idle_ok.fetch_add(1);
    if (rs->idle_finished.fetch_add(1) + 1 == rs->args->idle) {
        ::malloc_trim(0);  // as before rss_before_kb: only what the connections hold counts
        http_peer::print_idle(rs->idle_ok.load(), rs->rss_before_kb, http_peer::rss_kb());
        for (auto& ctx : *rs->contexts) ctx->stop();
        co_return;
    }
    if (ok) {
        auto [e, n] = co_await c->socket.async_read_some(asio::buffer(c->buf), use_tuple);
        (void)e;
        (void)n;
    }
}

/// Runs every context until it has no work, one thread each (the first on this thread).
void run_all(std::vector<std::unique_ptr<asio::io_context>>& contexts) {
    std::vector<std::thread> others;
    for (std::size_t i = 1; i < contexts.size(); ++i)
        others.emplace_back([ctx = contexts[i].get()] { ctx->run(); });
    contexts[0]->run();
    for (std::thread& t : others) t.join();
    for (auto& ctx : contexts) ctx->restart();
}

}  // namespace

int main(int argc, char** argv) {
    const peer_args a = http_peer::parse_args(argc, argv);
    if (!a.mode.empty()) http_peer::usage(argv[0], "--mode is not used by this peer");
    http_peer::raise_fd_limit();
    load_state st(a);
    const int threads = a.threads > 0 ? a.threads : 1;
    std::vector<std::unique_ptr<asio::io_context>> contexts;
    for (int i = 0; i < threads; ++i) contexts.push_back(std::make_unique<asio::io_context>(1));
    run_state rs{&a,
                 tcp::endpoint(asio::ip::make_address_v4(ntohl(a.address.sin_addr.s_addr)), a.port),
                 &st,
                 {},
                 {},
                 0,
                 &contexts};
    // Asio makes its services (the epoll reactor, or the io_uring ring of 16,384 entries) on
    // first use: make them now, so their fixed cost is not counted per idle connection.
    for (auto& ctx : contexts) tcp::socket(*ctx).open(tcp::v4());
    ::malloc_trim(0);
    rs.rss_before_kb = http_peer::rss_kb();

    const int n = a.idle > 0 ? a.idle : a.connections;
    std::vector<std::unique_ptr<connection>> conns;
    conns.reserve(static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i) {
        asio::io_context& ctx = *contexts[static_cast<std::size_t>(i % threads)];
        conns.push_back(std::make_unique<connection>(ctx));
        asio::co_spawn(ctx, open_connection(conns.back().get(), &rs), asio::detached);
    }
    run_all(contexts);

    for (int i = 0; i < n; ++i) {
        asio::io_context& ctx = *contexts[static_cast<std::size_t>(i % threads)];
        connection* c = conns[static_cast<std::size_t>(i)].get();
        if (a.idle > 0) {
            asio::co_spawn(ctx, idle_connection(c, &rs), asio::detached);
        } else {
            asio::co_spawn(ctx, request_loop(c, &rs), asio::detached);
        }
    }
    st.start();
    run_all(contexts);
    st.stop();
    if (a.idle == 0) st.print_result();
    return 0;
}
