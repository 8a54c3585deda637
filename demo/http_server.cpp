// SPDX-License-Identifier: MIT
// The I/O section's HTTP/1.1 server on tandem: see http_server.hpp.
#include "http_server.hpp"
#include "section_util.hpp"

#include <tandem/tandem.hpp>

#include <unistd.h>

#include <cerrno>

#include <algorithm>
#include <array>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <exception>
#include <span>
#include <string>
#include <string_view>
#include <thread>

namespace demo {
namespace {

constexpr std::size_t max_request_head = 16 << 10;
constexpr long max_delay_ms = 60'000;

bool iequals(std::string_view a, std::string_view b) {
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
               return std::tolower(static_cast<unsigned char>(x)) ==
                      std::tolower(static_cast<unsigned char>(y));
           });
}

}  // namespace

std::string_view http_header_value(std::string_view head, std::string_view name) {
    std::size_t at = head.find("\r\n");
    while (at != std::string_view::npos && at + 2 < head.size()) {
        const std::size_t start = at + 2;
        const std::size_t end = std::min(head.find("\r\n", start), head.size());
        const std::string_view line = head.substr(start, end - start);
        const std::size_t colon = line.find(':');
        if (colon != std::string_view::npos && iequals(line.substr(0, colon), name)) {
            std::string_view v = line.substr(colon + 1);
            while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
            while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
            return v;
        }
        at = end;
    }
    return {};
}

namespace {

/// What to do with one request head.
struct request_plan {
    int status = 404;
    long delay_ms = -1;  // >= 0: sleep this long first
    bool keep_alive = false;
};

request_plan plan_request(std::string_view head) {
    request_plan p;
    const std::string_view line = head.substr(0, head.find("\r\n"));
    const std::size_t sp1 = line.find(' ');
    const std::size_t sp2 = line.rfind(' ');
    if (sp1 == std::string_view::npos || sp2 <= sp1) {
        p.status = 400;
        return p;
    }
    const std::string_view method = line.substr(0, sp1);
    const std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
    const std::string_view version = line.substr(sp2 + 1);
    const std::string_view connection = http_header_value(head, "Connection");
    p.keep_alive =
        version == "HTTP/1.1" ? !iequals(connection, "close") : iequals(connection, "keep-alive");
    const std::string_view length = http_header_value(head, "Content-Length");
    if (!length.empty() && length != "0") {  // no request bodies here
        p.status = 400;
        p.keep_alive = false;
        return p;
    }
    constexpr std::string_view prefix = "/delay/";
    if (method != "GET" || target.substr(0, prefix.size()) != prefix) return p;
    long ms = 0;
    const std::string_view digits = target.substr(prefix.size());
    if (digits.empty() || digits.size() > 6) return p;
    for (const char c : digits) {
        if (c < '0' || c > '9') return p;
        ms = ms * 10 + (c - '0');
    }
    p.status = 200;
    p.delay_ms = std::min(ms, max_delay_ms);
    return p;
}

std::string response_for(const request_plan& p) {
    const std::string body = p.status == 200   ? "waited " + std::to_string(p.delay_ms) + " ms\n"
                             : p.status == 400 ? std::string("bad request\n")
                                               : std::string("not found\n");
    const char* reason = p.status == 200 ? "OK" : p.status == 400 ? "Bad Request" : "Not Found";
    return "HTTP/1.1 " + std::to_string(p.status) + " " + reason +
           "\r\nContent-Type: text/plain\r\nContent-Length: " + std::to_string(body.size()) +
           (p.keep_alive ? "\r\n\r\n" : "\r\nConnection: close\r\n\r\n") + body;
}

/// One connection: requests one after another until the client closes or asks to.
tandem::task<> serve_connection(tandem::tcp_stream s) {
    std::string pending;
    std::array<std::byte, 2048> buf;
    try {
        for (;;) {
            std::size_t head_end = pending.find("\r\n\r\n");
            while (head_end == std::string::npos) {
                if (pending.size() > max_request_head) co_return;
                const std::size_t n = co_await s.read_some(buf);
                if (n == 0) co_return;
                pending.append(reinterpret_cast<const char*>(buf.data()), n);
                head_end = pending.find("\r\n\r\n");
            }
            const request_plan plan = plan_request(std::string_view(pending).substr(0, head_end));
            pending.erase(0, head_end + 4);
            if (plan.delay_ms >= 0)
                co_await tandem::sleep_for(std::chrono::milliseconds(plan.delay_ms));
            const std::string response = response_for(plan);
            co_await s.write_all(std::as_bytes(std::span(response)));
            if (!plan.keep_alive) co_return;
        }
    } catch (const tandem::operation_cancelled&) {
        throw;  // the server is stopping
    } catch (const std::exception&) {
        // A client that resets its connection is not the server's problem.
    }
}

tandem::task<> accept_loop(tandem::tcp_listener* listener) {
    tandem::task_group connections;
    for (;;) {
        tandem::tcp_stream s = co_await listener->accept();
        connections.spawn(serve_connection(std::move(s)));
    }
}

/// Ends the process when stdin reaches end of stream: the parent closed its end of the
/// socketpair (or died). A plain blocking read on a thread of its own, so that it works for any
/// stdin (socket, pipe, terminal); nothing needs flushing, hence _exit.
void exit_at_end_of_stdin() {
    std::thread([] {
        char buf[256];
        for (;;) {
            const ssize_t n = ::read(STDIN_FILENO, buf, sizeof buf);
            if (n == 0 || (n < 0 && errno != EINTR)) ::_exit(0);
        }
    }).detach();
}

}  // namespace

int run_http_server() {
    try {
        tandem::runtime_options options = util::base_options();
        options.processes.enabled = false;  // nothing to offload here
        tandem::runtime rt(options);
        tandem::tcp_listener listener = tandem::tcp_listener::bind(tandem::address::loopback(0));
        std::printf("PORT %u\n", static_cast<unsigned>(listener.local_address().port()));
        std::fflush(stdout);
        exit_at_end_of_stdin();
        rt.block_on(accept_loop(&listener));  // ends only with an error
        return 1;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "tandem-demo io-server: %s\n", e.what());
        return 1;
    }
}

}  // namespace demo
