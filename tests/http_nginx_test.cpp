// SPDX-License-Identifier: MIT

// The HTTP/1.1 client against a real nginx (Debian's nginx-light, installed by
// test.sh), started by each test on 127.0.0.1 and a free port: plain files
// over one kept-alive connection, 404 and other statuses, a chunked body
// (nginx's sub_filter makes one), a 32 MiB body, a server that closes after
// every response, a body cut off by timeout(...), and many requests on two io
// threads.

#include <tandem/tandem.hpp>

#include <catch2/catch.hpp>

#include "../bench/nginx_fixture.hpp"

#include <chrono>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace std::chrono_literals;
using nginx_fixture::nginx_options;
using nginx_fixture::nginx_server;

tandem::runtime_options options(unsigned io_threads = 1) {
    tandem::runtime_options o;
    o.io_threads = io_threads;
    o.processes.enabled = false;
    return o;
}

std::string text_of(std::size_t n, unsigned seed) {
    std::string s(n, '\0');
    std::uint32_t x = seed * 2654435761u + 7;
    for (auto& c : s) c = static_cast<char>('a' + ((x = x * 1664525u + 1013904223u) >> 24) % 26);
    return s;
}

std::string binary_of(std::size_t n, unsigned seed) {
    std::string s(n, '\0');
    std::uint32_t x = seed * 2654435761u + 7;
    for (auto& c : s) c = static_cast<char>((x = x * 1664525u + 1013904223u) >> 24);
    return s;
}

/// Fails with a clear message when nginx is not installed (test.sh installs it).
nginx_server start(nginx_options o) {
    INFO("these tests need nginx (Debian: nginx-light; ./test.sh installs it)");
    REQUIRE(nginx_server::available());
    return nginx_server(std::move(o));
}

tandem::task<tandem::http_response> get_once(tandem::http_client* c, std::string url) {
    co_return co_await c->get(url);
}

}  // namespace

TEST_CASE("nginx: plain files over one kept-alive connection") {
    const std::string page = text_of(1024, 1);
    nginx_server web = start({.files = {{"index.html", page}}});
    tandem::http_client client;
    auto work = [](tandem::http_client* c, std::string url,
                   std::string expected) -> tandem::task<std::size_t> {
        for (int i = 0; i < 50; ++i) {
            tandem::http_response r = co_await c->get(url);
            REQUIRE(r.status == 200);
            REQUIRE(r.body == expected);
            REQUIRE(r.header("content-length") == "1024");
            REQUIRE(r.header("server").starts_with("nginx"));
        }
        co_return c->idle_connections();
    };
    CHECK(tandem::run(work(&client, web.url("/index.html"), page), options()) == 1);
}

TEST_CASE("nginx: 404, 204, 500 and 405 are responses, not errors") {
    nginx_server web = start({.files = {{"index.html", "hi"}}});
    tandem::http_client client;
    auto work = [](tandem::http_client* c, nginx_server* w) -> tandem::task<std::string> {
        std::string out;
        auto missing = co_await c->get(w->url("/no/such/file"));
        out += std::to_string(missing.status) + " ";
        REQUIRE(missing.body.find("404 Not Found") != std::string::npos);
        REQUIRE(missing.header("content-type").starts_with("text/html"));
        auto empty = co_await c->get(w->url("/status/204"));
        out += std::to_string(empty.status) + (empty.body.empty() ? " " : "(body) ");
        auto failed = co_await c->get(w->url("/status/500"));
        out += std::to_string(failed.status) + " ";
        auto post = co_await c->request("POST", w->url("/index.html"), "x=1");
        out += std::to_string(post.status);
        co_return out;
    };
    CHECK(tandem::run(work(&client, &web), options()) == "404 204 500 405");
}

TEST_CASE("nginx: a chunked response arrives whole and decoded") {
    const std::string text = text_of(100'000, 2);
    nginx_server web = start({.files = {{"big.txt", text}}, .chunk_bytes = 3000});
    tandem::http_client client;
    auto r = tandem::run(get_once(&client, web.url("/chunked/big.txt")), options());
    CHECK(r.status == 200);
    CHECK(r.header("transfer-encoding") == "chunked");
    CHECK(r.header("content-length").empty());
    CHECK(r.body.size() == text.size());
    CHECK(r.body == text);
}

TEST_CASE("nginx: a 32 MiB body, every byte checked") {
    const std::string blob = binary_of(32 << 20, 3);
    nginx_server web = start({.files = {{"blob.bin", blob}}});
    tandem::http_client client;
    auto work = [](tandem::http_client* c, std::string url) -> tandem::task<std::string> {
        auto first = co_await c->get(url);
        auto second = co_await c->get(url);  // over the same connection
        REQUIRE(first.body == second.body);
        co_return std::move(first.body);
    };
    const std::string body = tandem::run(work(&client, web.url("/blob.bin")), options());
    CHECK(body.size() == blob.size());
    CHECK(body == blob);
}

TEST_CASE("nginx: a server that closes after each response: a new connection each time") {
    nginx_server web = start({.files = {{"a.txt", "alpha"}}});
    tandem::http_client client;
    auto work = [](tandem::http_client* c, std::string url) -> tandem::task<int> {
        int ok = 0;
        for (int i = 0; i < 20; ++i) {
            auto r = co_await c->get(url);
            ok += r.status == 200 && r.body == "alpha" && r.header("connection") == "close";
            REQUIRE(c->idle_connections() == 0);
        }
        co_return ok;
    };
    CHECK(tandem::run(work(&client, web.url("/close/a.txt")), options()) == 20);
}

TEST_CASE("nginx: timeout(...) ends a body that trickles in; the client goes on") {
    nginx_server web = start({.files = {{"slow.txt", text_of(8192, 4)}, {"ok.txt", "fine"}}});
    tandem::http_client client;
    auto work = [](tandem::http_client* c, nginx_server* w) -> tandem::task<std::string> {
        const auto start = std::chrono::steady_clock::now();
        std::string out;
        try {
            (void)co_await tandem::timeout(300ms, c->get(w->url("/slow/slow.txt")));
            out = "finished?";
        } catch (const tandem::timed_out&) {
            out = "timed out";
        }
        // The body would take seconds: the timeout ended it (a generous bound, not a timing
        // assertion: 8 KiB at 1 KiB/s is 7 s).
        REQUIRE(std::chrono::steady_clock::now() - start < 5s);
        auto r = co_await c->get(w->url("/ok.txt"));
        co_return out + ", then " + r.body;
    };
    CHECK(tandem::run(work(&client, &web), options()) == "timed out, then fine");
}

TEST_CASE("nginx: 2,000 requests from one client on two io threads") {
    const std::string page = text_of(4096, 5);
    nginx_server web = start({.files = {{"page.html", page}}});
    tandem::http_client_options o;
    o.max_connections_per_host = 32;
    tandem::http_client client(o);
    auto batch = [](tandem::http_client* c, std::string url, std::string expected,
                    std::thread::id* ran_on) -> tandem::task<int> {
        *ran_on = std::this_thread::get_id();
        std::vector<tandem::task<tandem::http_response>> all;
        for (int i = 0; i < 1000; ++i) all.push_back(get_once(c, url));
        int ok = 0;
        for (auto& r : co_await tandem::when_all(std::move(all))) ok += r.body == expected;
        co_return ok;
    };
    tandem::runtime rt(options(2));
    std::thread::id a, b;
    int ok_other = 0;
    std::thread other(
        [&] { ok_other = rt.block_on(batch(&client, web.url("/page.html"), page, &b)); });
    const int ok_here = rt.block_on(batch(&client, web.url("/page.html"), page, &a));
    other.join();
    CHECK(ok_here == 1000);
    CHECK(ok_other == 1000);
    CHECK(a != b);
}
