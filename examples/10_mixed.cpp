// SPDX-License-Identifier: MIT
// 10_mixed: I/O and CPU work in one server. Most requests are cheap and answered at once; some
// need CPU (counting the primes below n: tens of milliseconds). A client sends a cheap request
// every 2 ms while another sends four CPU-heavy ones, and the cheap requests' worst delay (from
// when each was due) is measured twice: with the CPU work done inline on the event loop, which
// serves nothing else meanwhile, and with it offloaded by offload_to_process to a worker
// process, which keeps the loop free. (examples/mixed_server.cpp is the full-size version.)
// Run: build/examples/10_mixed [n]   (default: 2000000)
#include <tandem/tandem.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <span>

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

struct request {
    std::uint32_t heavy;  // 0: cheap (answer 2n), 1: count the primes below n
    std::uint32_t n;
};

// The CPU work: a plain function, so that a worker process can run it.
long count_primes_below(long n) {
    long count = 0;
    for (long x = 2; x < n; ++x) {
        bool prime = x == 2 || x % 2 != 0;
        for (long d = 3; prime && d * d <= x; d += 2) prime = x % d != 0;
        count += prime ? 1 : 0;
    }
    return count;
}

// ---- the server -----------------------------------------------------------------------------

tandem::task<long> handle(request rq, bool offload) {
    if (rq.heavy == 0) co_return 2L * rq.n;  // cheap: answered on the loop at once
    if (offload) co_return co_await tandem::offload_to_process(count_primes_below, long{rq.n});
    co_return count_primes_below(rq.n);  // inline: the loop computes, every other task waits
}

tandem::task<> serve_connection(tandem::tcp_stream s, bool offload) {
    request rq{};
    const auto bytes = std::as_writable_bytes(std::span(&rq, 1));
    for (;;) {
        const std::size_t got = co_await s.read_some(bytes);
        if (got == 0) co_return;  // the client is done
        if (got < bytes.size()) co_await s.read_exact(bytes.subspan(got));
        const long answer = co_await handle(rq, offload);
        co_await s.write_all(std::as_bytes(std::span(&answer, 1)));
    }
}

tandem::task<> serve(tandem::tcp_listener* listener, int connections, bool offload) {
    tandem::task_group group;
    for (int i = 0; i < connections; ++i) {
        group.spawn(serve_connection(co_await listener->accept(), offload));
    }
    co_await group.join();
}

// ---- the clients ----------------------------------------------------------------------------

tandem::task<long> call(tandem::tcp_stream* s, request rq) {
    co_await s->write_all(std::as_bytes(std::span(&rq, 1)));
    long answer = 0;
    co_await s->read_exact(std::as_writable_bytes(std::span(&answer, 1)));
    co_return answer;
}

tandem::task<bool> heavy_client(tandem::address server, long n, long expected, bool* done) {
    tandem::tcp_stream s = co_await tandem::tcp_stream::connect(server);
    bool ok = true;
    for (int i = 0; i < 4; ++i) {
        const long answer = co_await call(&s, request{1, static_cast<std::uint32_t>(n)});
        ok = ok && answer == expected;
    }
    *done = true;
    co_return ok;
}

struct cheap_report {
    std::uint32_t sent = 0;
    double worst_ms = 0;  // the longest wait, counted from when the request was due
    bool correct = true;
};

tandem::task<cheap_report> cheap_client(tandem::address server, const bool* done) {
    tandem::tcp_stream s = co_await tandem::tcp_stream::connect(server);
    cheap_report r;
    auto due = clock_type::now();
    while (!*done) {
        due += 2ms;
        co_await tandem::sleep_until(due);
        const long answer = co_await call(&s, request{0, r.sent});
        const std::chrono::duration<double, std::milli> waited = clock_type::now() - due;
        r.worst_ms = std::max(r.worst_ms, waited.count());
        r.correct = r.correct && answer == 2L * r.sent;
        ++r.sent;
    }
    co_return r;
}

tandem::task<cheap_report> run_once(bool offload, long n, long expected) {
    auto listener = tandem::tcp_listener::bind(tandem::address::loopback(0));
    bool done = false;
    auto [served, heavy_ok, cheap] = co_await tandem::when_all(
        serve(&listener, 2, offload), heavy_client(listener.local_address(), n, expected, &done),
        cheap_client(listener.local_address(), &done));
    std::printf(
        "%-20s %4u cheap requests answered while 4 heavy ones ran; the slowest waited %.1f ms\n",
        offload ? "offload_to_process:" : "inline on the loop:", cheap.sent, cheap.worst_ms);
    cheap.correct = cheap.correct && heavy_ok;
    co_return cheap;
}

tandem::task<bool> compare(long n, long expected) {
    const cheap_report inlined = co_await run_once(false, n, expected);
    const cheap_report offloaded = co_await run_once(true, n, expected);
    const bool ok = inlined.correct && offloaded.correct && offloaded.worst_ms < inlined.worst_ms;
    co_return ok;
}

int main(int argc, char** argv) {
    const long n = std::clamp(argc > 1 ? std::atol(argv[1]) : 2'000'000L, 2L, 100'000'000L);
    try {
        const long expected = count_primes_below(n);  // to check the server's answers
        const bool ok = tandem::run(compare(n, expected));
        std::printf("%s\n", ok ? "ok" : "FAILED");
        return ok ? 0 : 1;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
}
