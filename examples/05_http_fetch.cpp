// SPDX-License-Identifier: MIT
// 05_http_fetch: a coroutine HTTP client. Fetches many URLs at once with one http_client on one
// thread, printing each one's status, size and time, then the total: close to the slowest single
// request, not to their sum. Given no URLs, it starts its own small HTTP/1.1 server on 127.0.0.1
// (a coroutine per connection; /delay/<ms> answers after sleeping that long) and fetches from
// that, so it needs nothing installed.
// Run: build/examples/05_http_fetch [http://host[:port]/path ...]
#include <tandem/tandem.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <span>
#include <string>
#include <variant>
#include <vector>

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

struct fetched {
    int status = 0;  // 0 when there was no response: see error
    std::size_t bytes = 0;
    double ms = 0;
    std::string error;
};

// One GET. A failure is recorded rather than thrown, so that it does not stop the others.
tandem::task<fetched> fetch(tandem::http_client* client, std::string url) {
    fetched f;
    const auto start = clock_type::now();
    try {
        const tandem::http_response r = co_await tandem::timeout(10s, client->get(url));
        f.status = r.status;
        f.bytes = r.body.size();
    } catch (const tandem::operation_cancelled&) {
        throw;  // cancelled from outside: not this URL's failure
    } catch (const std::exception& e) {
        f.error = e.what();
    }
    f.ms = std::chrono::duration<double, std::milli>(clock_type::now() - start).count();
    co_return f;
}

// All requests at once, on this thread; the client keeps connections open per host for reuse.
tandem::task<std::vector<fetched>> fetch_all(std::vector<std::string> urls) {
    tandem::http_client client;
    std::vector<tandem::task<fetched>> requests;
    for (const auto& url : urls) requests.push_back(fetch(&client, url));
    co_return co_await tandem::when_all(std::move(requests));  // in the order of `urls`
}

// ---- a tiny HTTP/1.1 server, so that the example needs nothing else ------------------------

// Serves one connection until the client closes it. Requests are GETs (no body); every response
// has a Content-Length, so the connection stays open for the next request (keep-alive).
tandem::task<> serve_connection(tandem::tcp_stream s) {
    std::string in;
    std::array<char, 4096> buf;
    for (;;) {
        std::size_t end = in.find("\r\n\r\n");
        while (end == std::string::npos) {
            const std::size_t n = co_await s.read_some(std::as_writable_bytes(std::span(buf)));
            if (n == 0) co_return;  // the client closed the connection
            in.append(buf.data(), n);
            end = in.find("\r\n\r\n");
        }
        // "GET /delay/250 HTTP/1.1": sleep for the number after /delay/ in the request line.
        const std::size_t at = in.find("/delay/");
        long ms = at < in.find("\r\n") ? std::strtol(in.c_str() + at + 7, nullptr, 10) : 0;
        ms = std::clamp(ms, 0L, 10'000L);
        in.erase(0, end + 4);
        co_await tandem::sleep_for(std::chrono::milliseconds(ms));
        const std::string body = "slept " + std::to_string(ms) + " ms\n";
        const std::string response =
            "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
        co_await s.write_all(std::as_bytes(std::span(response)));
    }
}

// Accepts until cancelled, a coroutine per connection; then ends them all.
tandem::task<> serve(tandem::tcp_listener* listener) {
    tandem::task_group connections;
    try {
        for (;;) connections.spawn(serve_connection(co_await listener->accept()));
    } catch (const tandem::operation_cancelled&) {
        // the fetches are done (see when_any in demo): stop accepting
    }
    co_await connections.join();  // cancelled too: ends the connections still open
}

// ---- the program ----------------------------------------------------------------------------

tandem::task<bool> demo(std::vector<std::string> urls) {
    const bool own_server = urls.empty();
    tandem::tcp_listener listener;
    if (own_server) {
        listener = tandem::tcp_listener::bind(tandem::address::loopback(0));  // a free port
        const std::string base = "http://" + listener.local_address().to_string() + "/delay/";
        for (int ms : {300, 100, 250, 50, 200, 150, 20, 400})
            urls.push_back(base + std::to_string(ms));
    }
    const auto start = clock_type::now();
    std::vector<fetched> results;
    if (own_server) {
        // The first to finish wins: the fetches. The server is then cancelled and awaited.
        auto first = co_await tandem::when_any(fetch_all(urls), serve(&listener));
        results = std::get<0>(std::move(first));
    } else {
        results = co_await fetch_all(urls);
    }
    const double total =
        std::chrono::duration<double, std::milli>(clock_type::now() - start).count();

    bool ok = true;
    double slowest = 0, sum = 0;
    for (std::size_t i = 0; i < urls.size(); ++i) {
        const fetched& f = results[i];
        if (f.error.empty()) {
            std::printf("%3d %8zu bytes %7.1f ms  %s\n", f.status, f.bytes, f.ms, urls[i].c_str());
        } else {
            std::printf("error after %.1f ms  %s: %s\n", f.ms, urls[i].c_str(), f.error.c_str());
        }
        ok = ok && f.error.empty() && (f.status == 200 || !own_server);
        slowest = std::max(slowest, f.ms);
        sum += f.ms;
    }
    std::printf(
        "%zu requests at once took %.1f ms in all: the slowest alone took %.1f ms, one "
        "after another they would take %.1f ms\n",
        urls.size(), total, slowest, sum);
    co_return ok && (total < sum / 2 || !own_server);
}

int main(int argc, char** argv) {
    try {
        const bool ok = tandem::run(demo(std::vector<std::string>(argv + 1, argv + argc)));
        std::printf("%s\n", ok ? "ok" : "FAILED");
        return ok ? 0 : 1;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
}
