// SPDX-License-Identifier: MIT

// The HTTP/1.1 client against scripted servers on 127.0.0.1 (tandem's own
// sockets, sending exactly the bytes a case needs: garbage, truncated bodies,
// interim responses, one byte at a time, a closed keep-alive connection, no
// answer at all) and against a real nginx (in http_nginx_test.cpp).
//
// g++ 12 miscompiles `while (co_await f())`: the coroutine never starts its
// body. Loops here test the awaited value with `if` inside `for (;;)`.

#include <tandem/tandem.hpp>

#include <catch2/catch.hpp>

#include "support.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <exception>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <vector>

namespace {

using namespace std::chrono_literals;

tandem::runtime_options options(unsigned io_threads = 1) {
    tandem::runtime_options o;
    o.io_threads = io_threads;
    o.processes.enabled = false;
    return o;
}

/// A server on 127.0.0.1 whose connections each run a scripted handler.
struct script_server;
using handler = tandem::task<> (*)(tandem::tcp_stream&, script_server&);

struct script_server {
    tandem::tcp_listener listener = tandem::tcp_listener::bind(tandem::address::loopback(0));
    handler on_connection = nullptr;
    int accepted = 0;  // connections so far
    int open_now = 0;  // connections open now
    int max_open = 0;  // most connections open at once
    int requests = 0;  // requests read, over all connections
    std::string last_request;

    std::string url(std::string_view path) const {
        return "http://127.0.0.1:" + std::to_string(listener.local_address().port()) +
               std::string(path);
    }
};

/// Reads one request head (and its Content-Length body); false at end of stream.
tandem::task<bool> read_request(tandem::tcp_stream& s, script_server& srv) {
    std::string got;
    char c;
    while (got.find("\r\n\r\n") == std::string::npos) {
        std::size_t n = 0;
        try {
            n = co_await s.read_some(std::as_writable_bytes(std::span(&c, 1)));
        } catch (const std::system_error&) {
            co_return false;
        }
        if (n == 0) co_return false;
        got.push_back(c);
    }
    const std::size_t cl = got.find("Content-Length: ");
    if (cl != std::string::npos) {
        std::string body(std::stoul(got.substr(cl + 16)), '\0');
        co_await s.read_exact(std::as_writable_bytes(std::span(body)));
        got += body;
    }
    ++srv.requests;
    srv.last_request = got;
    co_return true;
}

tandem::task<> send_text(tandem::tcp_stream& s, std::string_view text) {
    co_await s.write_all(std::as_bytes(std::span(text)));
}

tandem::task<> run_connection(tandem::tcp_stream s, script_server* srv) {
    ++srv->accepted;
    srv->max_open = std::max(srv->max_open, ++srv->open_now);
    try {
        co_await srv->on_connection(s, *srv);
    } catch (const std::exception&) {
        // The client went away: fine for a scripted server.
    }
    --srv->open_now;
}

/// Accepts forever; ended by cancellation (when_any).
tandem::task<> serve(script_server* srv) {
    tandem::task_group group;
    try {
        for (;;) {
            tandem::tcp_stream s = co_await srv->listener.accept();
            group.spawn(run_connection(std::move(s), srv));
        }
    } catch (const tandem::operation_cancelled&) {
    }
    co_await group.join();
}

/// Runs `client` beside the server on one loop; returns the client's result.
template <class T>
T run_with(script_server& srv, tandem::task<T> client, unsigned io_threads = 1) {
    auto both = [](script_server* s, tandem::task<T> c) -> tandem::task<T> {
        auto r = co_await tandem::when_any(std::move(c), serve(s));
        co_return std::get<0>(std::move(r));
    };
    return tandem::run(both(&srv, std::move(client)), options(io_threads));
}

constexpr std::string_view ok_hello =
    "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello";

tandem::task<> keep_alive_hello(tandem::tcp_stream& s, script_server& srv) {
    for (;;) {
        if (const bool got = co_await read_request(s, srv); !got) break;
        co_await send_text(s, ok_hello);
    }
}

tandem::task<tandem::http_response> get_once(tandem::http_client* c, std::string url) {
    co_return co_await c->get(url);
}

template <std::string_view const& Reply>
tandem::task<> reply_and_close(tandem::tcp_stream& s, script_server& srv) {
    if (const bool got = co_await read_request(s, srv); got) co_await send_text(s, Reply);
}

/// `co_await client.get(url)`, expecting an http_error; returns its message.
tandem::task<std::string> error_of(tandem::http_client* c, std::string url) {
    try {
        (void)co_await c->get(url);
    } catch (const tandem::http_error& e) {
        co_return e.what();
    }
    co_return "no error";
}

}  // namespace

TEST_CASE("http: a keep-alive server: one connection serves every request in turn") {
    script_server srv;
    srv.on_connection = &keep_alive_hello;
    tandem::http_client client;
    auto work = [](tandem::http_client* c, std::string url) -> tandem::task<std::size_t> {
        for (int i = 0; i < 20; ++i) {
            tandem::http_response r = co_await c->get(url);
            REQUIRE(r.status == 200);
            REQUIRE(r.body == "hello");
            REQUIRE(r.header("content-type") == "text/plain");
            REQUIRE(r.header("CONTENT-LENGTH") == "5");
            REQUIRE(r.header("X-Missing").empty());
        }
        co_return c->idle_connections();
    };
    const std::size_t idle = run_with(srv, work(&client, srv.url("/a?b=c")));
    CHECK(idle == 1);
    CHECK(srv.accepted == 1);
    CHECK(srv.requests == 20);
    CHECK(srv.last_request.starts_with("GET /a?b=c HTTP/1.1\r\nHost: 127.0.0.1:"));
    CHECK(srv.last_request.find("\r\nUser-Agent: tandem/") != std::string::npos);
}

TEST_CASE("http: at most max_connections_per_host connections; the other requests wait") {
    script_server srv;
    // Each response waits a little so that requests really overlap.
    srv.on_connection = [](tandem::tcp_stream& s, script_server& sv) -> tandem::task<> {
        for (;;) {
            if (const bool got = co_await read_request(s, sv); !got) break;
            co_await tandem::sleep_for(1ms);
            co_await send_text(s, ok_hello);
        }
    };
    tandem::http_client_options o;
    o.max_connections_per_host = 4;
    tandem::http_client client(o);
    auto work = [](tandem::http_client* c, std::string url) -> tandem::task<int> {
        std::vector<tandem::task<tandem::http_response>> all;
        for (int i = 0; i < 60; ++i) all.push_back(get_once(c, url));
        int ok = 0;
        for (auto& r : co_await tandem::when_all(std::move(all))) ok += r.body == "hello" ? 1 : 0;
        co_return ok;
    };
    CHECK(run_with(srv, work(&client, srv.url("/"))) == 60);
    CHECK(srv.max_open == 4);
    CHECK(srv.accepted == 4);
}

TEST_CASE("http: chunked bodies, read-until-close bodies, interim 100 responses, HEAD") {
    static constexpr std::string_view chunked =
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        "5\r\nhello\r\n1;ext=1\r\n,\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\n";
    static constexpr std::string_view until_close =
        "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of this is the body";
    static constexpr std::string_view interim =
        "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok";
    static constexpr std::string_view head_reply =
        "HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n";
    tandem::http_client client;

    SECTION("chunked") {
        script_server srv;
        srv.on_connection = &reply_and_close<chunked>;
        auto r = run_with(srv, get_once(&client, srv.url("/")));
        CHECK(r.status == 200);
        CHECK(r.body == "hello, world");
    }
    SECTION("until close") {
        script_server srv;
        srv.on_connection = &reply_and_close<until_close>;
        auto r = run_with(srv, get_once(&client, srv.url("/")));
        CHECK(r.body == "all of this is the body");
    }
    SECTION("100 Continue first") {
        script_server srv;
        srv.on_connection = &reply_and_close<interim>;
        auto r = run_with(srv, get_once(&client, srv.url("/")));
        CHECK(r.status == 201);
        CHECK(r.body == "ok");
        CHECK(r.header("content-length") == "2");
    }
    SECTION("HEAD: Content-Length without a body, and the connection stays usable") {
        script_server srv;
        srv.on_connection = [](tandem::tcp_stream& s, script_server& sv) -> tandem::task<> {
            for (;;) {
                if (const bool got = co_await read_request(s, sv); !got) break;
                co_await send_text(s, head_reply);
            }
        };
        auto work = [](tandem::http_client* c, std::string url) -> tandem::task<int> {
            int ok = 0;
            for (int i = 0; i < 3; ++i) {
                auto r = co_await c->request("HEAD", url);
                ok += r.status == 200 && r.body.empty() ? 1 : 0;
            }
            co_return ok;
        };
        CHECK(run_with(srv, work(&client, srv.url("/"))) == 3);
        CHECK(srv.accepted == 1);
    }
}

TEST_CASE("http: a response sent one byte at a time parses the same") {
    script_server srv;
    srv.on_connection = [](tandem::tcp_stream& s, script_server& sv) -> tandem::task<> {
        static constexpr std::string_view reply =
            "HTTP/1.1 200 OK\r\nX-Long-Header-Name: a value split everywhere\r\n"
            "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        for (;;) {
            if (const bool got = co_await read_request(s, sv); !got) break;
            for (char c : reply) {
                co_await send_text(s, std::string_view(&c, 1));
                co_await tandem::yield();  // let each byte go out on its own
            }
        }
    };
    tandem::http_client client;
    auto r = run_with(srv, get_once(&client, srv.url("/")));
    CHECK(r.status == 200);
    CHECK(r.body == "abcde");
    CHECK(r.header("x-long-header-name") == "a value split everywhere");
}

TEST_CASE("http: POST sends its body with a Content-Length") {
    script_server srv;
    srv.on_connection = &keep_alive_hello;
    tandem::http_client client;
    auto work = [](tandem::http_client* c, std::string url) -> tandem::task<int> {
        auto r = co_await c->request("POST", url, "name=value&x=1");
        co_return r.status;
    };
    CHECK(run_with(srv, work(&client, srv.url("/form"))) == 200);
    CHECK(srv.last_request.starts_with("POST /form HTTP/1.1\r\n"));
    CHECK(srv.last_request.find("\r\nContent-Length: 14\r\n") != std::string::npos);
    CHECK(srv.last_request.ends_with("\r\n\r\nname=value&x=1"));
}

TEST_CASE("http: malformed responses are http_error naming the server and the reason") {
    static constexpr std::string_view garbage = "HELLO THIS IS NOT HTTP\r\n\r\n";
    static constexpr std::string_view bad_status = "HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n";
    static constexpr std::string_view bad_length =
        "HTTP/1.1 200 OK\r\nContent-Length: 12abc\r\n\r\n";
    static constexpr std::string_view two_lengths =
        "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd";
    static constexpr std::string_view bad_chunk =
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n";
    static constexpr std::string_view truncated =
        "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b";
    static constexpr std::string_view headers_only = "HTTP/1.1 200 OK\r\nContent-Le";
    static constexpr std::string_view nothing = "";
    tandem::http_client client;
    script_server srv;
    const std::string expected_server =
        "127.0.0.1:" + std::to_string(srv.listener.local_address().port());

    SECTION("garbage") {
        srv.on_connection = &reply_and_close<garbage>;
        const std::string what = run_with(srv, error_of(&client, srv.url("/")));
        CHECK(what.find("malformed HTTP response from " + expected_server) != std::string::npos);
    }
    SECTION("bad status") {
        srv.on_connection = &reply_and_close<bad_status>;
        CHECK(run_with(srv, error_of(&client, srv.url("/"))).find("malformed") !=
              std::string::npos);
    }
    SECTION("bad Content-Length") {
        srv.on_connection = &reply_and_close<bad_length>;
        CHECK(run_with(srv, error_of(&client, srv.url("/"))).find("malformed") !=
              std::string::npos);
    }
    SECTION("two Content-Lengths") {
        srv.on_connection = &reply_and_close<two_lengths>;
        CHECK(run_with(srv, error_of(&client, srv.url("/"))).find("malformed") !=
              std::string::npos);
    }
    SECTION("bad chunk size") {
        srv.on_connection = &reply_and_close<bad_chunk>;
        CHECK(run_with(srv, error_of(&client, srv.url("/"))).find("malformed") !=
              std::string::npos);
    }
    SECTION("body cut short") {
        srv.on_connection = &reply_and_close<truncated>;
        const std::string what = run_with(srv, error_of(&client, srv.url("/")));
        CHECK(what.find("before the response was complete") != std::string::npos);
        CHECK(what.find(expected_server) != std::string::npos);
    }
    SECTION("headers cut short") {
        srv.on_connection = &reply_and_close<headers_only>;
        CHECK(run_with(srv, error_of(&client, srv.url("/"))).find("before the response") !=
              std::string::npos);
    }
    SECTION("closed without a byte") {
        srv.on_connection = &reply_and_close<nothing>;
        CHECK(run_with(srv, error_of(&client, srv.url("/"))).find("without a response") !=
              std::string::npos);
    }
    // None of the broken connections went back to the pool.
    CHECK(srv.accepted == 1);
}

TEST_CASE("http: limits on header and body sizes are http_error, not memory exhaustion") {
    static constexpr std::string_view big_length =
        "HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n";
    tandem::http_client_options o;
    o.max_body_bytes = 1000;
    o.max_header_bytes = 200;
    tandem::http_client client(o);
    script_server srv;
    SECTION("declared length beyond max_body_bytes") {
        srv.on_connection = &reply_and_close<big_length>;
        CHECK(run_with(srv, error_of(&client, srv.url("/"))).find("max_body_bytes") !=
              std::string::npos);
    }
    SECTION("chunks beyond max_body_bytes") {
        srv.on_connection = [](tandem::tcp_stream& s, script_server& sv) -> tandem::task<> {
            if (const bool got = co_await read_request(s, sv); !got) co_return;
            co_await send_text(s, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
            const std::string chunk = "100\r\n" + std::string(256, 'x') + "\r\n";
            for (int i = 0; i < 100; ++i) co_await send_text(s, chunk);
        };
        CHECK(run_with(srv, error_of(&client, srv.url("/"))).find("max_body_bytes") !=
              std::string::npos);
    }
    SECTION("headers beyond max_header_bytes") {
        srv.on_connection = [](tandem::tcp_stream& s, script_server& sv) -> tandem::task<> {
            if (const bool got = co_await read_request(s, sv); !got) co_return;
            co_await send_text(s, "HTTP/1.1 200 OK\r\nX-Big: " + std::string(300, 'y') +
                                      "\r\nContent-Length: 0\r\n\r\n");
        };
        CHECK(run_with(srv, error_of(&client, srv.url("/"))).find("max_header_bytes") !=
              std::string::npos);
    }
}

TEST_CASE("http: a kept-alive connection the server closed is retried once for GET, not POST") {
    // Each connection answers one request with keep-alive, then closes.
    static constexpr std::string_view reply = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi";
    script_server srv;
    srv.on_connection = &reply_and_close<reply>;
    tandem::http_client client;
    auto work = [](tandem::http_client* c, std::string url) -> tandem::task<std::string> {
        std::string log;
        for (int i = 0; i < 3; ++i) {
            auto r = co_await c->get(url);
            log += r.body;
            co_await tandem::sleep_for(5ms);  // the server's close reaches us (not required)
        }
        try {
            (void)co_await c->request("POST", url, "x");
            log += ",post ok";
        } catch (const tandem::http_error& e) {
            log += std::string(",post: ") + e.what();
        }
        co_return log;
    };
    const std::string log = run_with(srv, work(&client, srv.url("/")));
    CHECK(log.starts_with("hihihi,post: "));
    CHECK(log.find("closed a kept-alive connection before responding to POST /") !=
          std::string::npos);
    // GET 1 opens connection 1; GETs 2 and 3 find the previous one closed and open 2 and 3;
    // the POST finds 3 closed and fails.
    CHECK(srv.accepted == 3);
}

TEST_CASE("http: timeout(...) cancels a request at once and its connection is closed") {
    script_server srv;
    // Reads the request, never answers, and reports how the client left.
    srv.on_connection = [](tandem::tcp_stream& s, script_server& sv) -> tandem::task<> {
        if (const bool got = co_await read_request(s, sv); !got) co_return;
        std::byte b[16];
        if (co_await s.read_some(b) == 0) sv.last_request = "client closed";
    };
    tandem::http_client_options o;
    o.max_connections_per_host = 1;
    tandem::http_client client(o);
    auto work = [](tandem::http_client* c, std::string url,
                   script_server* sv) -> tandem::task<std::string> {
        try {
            (void)co_await tandem::timeout(50ms, c->get(url));
            co_return "no timeout";
        } catch (const tandem::timed_out&) {
        }
        // The slot was given back: another request can go (and also times out).
        try {
            (void)co_await tandem::timeout(50ms, c->get(url));
        } catch (const tandem::timed_out&) {
        }
        while (sv->open_now > 0) co_await tandem::sleep_for(1ms);
        co_return sv->last_request + ", idle " + std::to_string(c->idle_connections());
    };
    CHECK(run_with(srv, work(&client, srv.url("/"), &srv)) == "client closed, idle 0");
    CHECK(srv.accepted == 2);
}

TEST_CASE("http: a request waiting for a connection can be cancelled") {
    script_server srv;
    srv.on_connection = [](tandem::tcp_stream& s, script_server& sv) -> tandem::task<> {
        for (;;) {
            if (const bool got = co_await read_request(s, sv); !got) break;
            co_await tandem::sleep_for(100ms);
            co_await send_text(s, ok_hello);
        }
    };
    tandem::http_client_options o;
    o.max_connections_per_host = 1;
    tandem::http_client client(o);
    auto work = [](tandem::http_client* c, std::string url) -> tandem::task<std::string> {
        // The first request holds the only connection; the second waits for it and times out.
        auto [first, second] = co_await tandem::when_all(
            get_once(c, url), [](tandem::http_client* cc, std::string u) -> tandem::task<bool> {
                try {
                    (void)co_await tandem::timeout(20ms, cc->get(u));
                } catch (const tandem::timed_out&) {
                    co_return true;
                }
                co_return false;
            }(c, url));
        // A third one gets the connection back.
        auto third = co_await c->get(url);
        co_return first.body + (second ? " timed out " : " ? ") + third.body;
    };
    CHECK(run_with(srv, work(&client, srv.url("/"))) == "hello timed out hello");
    CHECK(srv.accepted == 1);
}

TEST_CASE("http: bad URLs are invalid_argument; connection refused names the address") {
    tandem::http_client client;
    auto bad = [](tandem::http_client* c, std::string url) -> tandem::task<std::string> {
        try {
            (void)co_await c->get(url);
        } catch (const std::invalid_argument& e) {
            co_return e.what();
        }
        co_return "accepted";
    };
    CHECK(tandem::run(bad(&client, "https://example.com/"), options()).find("https") !=
          std::string::npos);
    CHECK(tandem::run(bad(&client, "ftp://x/"), options()).find("http://") != std::string::npos);
    CHECK(tandem::run(bad(&client, "http://:80/"), options()).find("no host") != std::string::npos);
    CHECK(tandem::run(bad(&client, "http://h:99999/"), options()).find("bad port") !=
          std::string::npos);
    CHECK(tandem::run(bad(&client, "http://h/a b"), options()).find("percent") !=
          std::string::npos);
    CHECK(tandem::run(bad(&client, "http://[::1/"), options()).find("IPv6") != std::string::npos);

    // A port nobody listens on: bind one, note it, close it.
    std::uint16_t port = 0;
    {
        auto l = tandem::tcp_listener::bind(tandem::address::loopback(0));
        port = l.local_address().port();
    }
    auto refused = [](tandem::http_client* c, std::string url) -> tandem::task<std::string> {
        try {
            (void)co_await c->get(url);
        } catch (const std::system_error& e) {
            if (e.code().value() == ECONNREFUSED) co_return e.what();
        }
        co_return "no ECONNREFUSED";
    };
    const std::string what =
        tandem::run(refused(&client, "http://127.0.0.1:" + std::to_string(port) + "/"), options());
    CHECK(what.find("127.0.0.1:" + std::to_string(port)) != std::string::npos);
}

namespace {
/// 200 concurrent GETs; notes the thread it ran on.
tandem::task<int> batch(tandem::http_client* c, std::string url, std::thread::id* ran_on) {
    *ran_on = std::this_thread::get_id();
    std::vector<tandem::task<tandem::http_response>> all;
    for (int i = 0; i < 200; ++i) all.push_back(get_once(c, url));
    int ok = 0;
    for (auto& r : co_await tandem::when_all(std::move(all))) ok += r.body == "hello" ? 1 : 0;
    co_return ok;
}

/// Serves until `done` reaches `batches`.
tandem::task<> serve_until(script_server* srv, std::atomic<int>* done, int batches) {
    auto wait = [](std::atomic<int>* d, int n) -> tandem::task<> {
        while (d->load() < n) co_await tandem::sleep_for(1ms);
    };
    (void)co_await tandem::when_any(serve(srv), wait(done, batches));
}

/// batch(), then counts itself done, also when it failed: the server must not wait forever
/// for a batch that threw (the test then fails with the batch's error instead of hanging).
tandem::task<int> batch_then_count(tandem::http_client* c, std::string url, std::thread::id* t,
                                   std::atomic<int>* done) {
    int ok = 0;
    try {
        ok = co_await batch(c, std::move(url), t);
    } catch (...) {
        ++*done;
        throw;
    }
    ++*done;
    co_return ok;
}
}  // namespace

TEST_CASE("http: names resolve; one client shared by tasks on two io threads") {
    script_server srv;
    srv.on_connection = &keep_alive_hello;
    tandem::http_client client;
    const std::string url =
        "http://localhost:" + std::to_string(srv.listener.local_address().port()) + "/";
    tandem::runtime rt(options(2));
    std::atomic<int> done{0};
    std::thread::id first, second;
    int ok_other = 0;
    std::exception_ptr other_failed;
    // The server and one batch on one loop, the other batch on the other loop.
    std::thread other([&] {
        try {
            ok_other = rt.block_on(batch_then_count(&client, url, &second, &done));
        } catch (...) {
            other_failed = std::current_exception();
        }
    });
    auto here = [](script_server* s, tandem::http_client* c, std::string u, std::thread::id* t,
                   std::atomic<int>* d) -> tandem::task<int> {
        auto [ok, served] = co_await tandem::when_all(batch_then_count(c, std::move(u), t, d),
                                                      serve_until(s, d, 2));
        (void)served;
        co_return ok;
    };
    int ok_here = 0;
    try {
        ok_here = rt.block_on(here(&srv, &client, url, &first, &done));
    } catch (...) {
        other.join();
        throw;
    }
    other.join();
    if (other_failed) std::rethrow_exception(other_failed);
    CHECK(ok_here == 200);
    CHECK(ok_other == 200);
    CHECK(first != second);
    // Each loop opened its own connections (the default cap is 16 per host and loop).
    CHECK(srv.accepted > 16);
    CHECK(srv.accepted <= 32);
}
