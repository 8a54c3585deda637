// SPDX-License-Identifier: MIT
// http_load: an HTTP/1.1 load client on tandem. N keep-alive connections, each a coroutine
// sending GETs one after another, on 1 or more io threads; prints requests/s, latency
// percentiles and the client's CPU time per request.
//
// Run: build/examples/http_load --url http://127.0.0.1:8080/index.html --connections 100
//          (--requests 100000 | --duration 5) [--threads 1]
//      build/examples/http_load --url ... --idle 10000    (memory of 10,000 idle connections)
// The last line is machine-readable (bench/http_bench.cpp reads it):
//   RESULT requests=N errors=N seconds=S p50_us=X p99_us=X p999_us=X
#include <tandem/tandem.hpp>

#include <malloc.h>
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

namespace {

using clock_type = std::chrono::steady_clock;

struct settings {
    std::string url;
    unsigned connections = 10;
    long requests = 0;    // total; 0: run for `duration`
    double duration = 0;  // seconds
    unsigned threads = 1;
    unsigned idle = 0;  // --idle N: the memory test instead of the load
};

/// What one io thread measured.
struct tally {
    long ok = 0;
    long errors = 0;
    std::vector<float> latency_us;
};

/// One connection's worth of requests, one after another.
tandem::task<> worker(tandem::http_client* client, const settings* s, std::atomic<long>* budget,
                      clock_type::time_point deadline, tally* t) {
    for (;;) {
        if (s->requests > 0 ? budget->fetch_sub(1, std::memory_order_relaxed) <= 0
                            : clock_type::now() >= deadline)
            co_return;
        const auto start = clock_type::now();
        try {
            tandem::http_response r = co_await client->get(s->url);
            if (r.status == 200) {
                ++t->ok;
                t->latency_us.push_back(
                    std::chrono::duration<float, std::micro>(clock_type::now() - start).count());
            } else {
                ++t->errors;
            }
        } catch (const std::exception& e) {
            if (t->errors++ == 0) std::fprintf(stderr, "http_load: %s\n", e.what());
        }
    }
}

tandem::task<> run_connections(tandem::http_client* client, const settings* s, unsigned count,
                               std::atomic<long>* budget, clock_type::time_point deadline,
                               tally* t) {
    std::vector<tandem::task<>> all;
    for (unsigned i = 0; i < count; ++i) all.push_back(worker(client, s, budget, deadline, t));
    co_await tandem::when_all(std::move(all));
}

long rss_kib() {
    std::ifstream status("/proc/self/status");
    std::string line;
    while (std::getline(status, line)) {
        if (line.rfind("VmRSS:", 0) == 0) return std::atol(line.c_str() + 6);
    }
    return -1;
}

/// Opens `n` connections with one request each, leaves them idle in the client's pool, and
/// reports the resident memory they added.
int idle_test(const settings& s) {
    tandem::runtime_options o;
    o.processes.enabled = false;
    tandem::runtime rt(o);
    tandem::http_client_options co;
    co.max_connections_per_host = s.idle;
    tandem::http_client client(co);
    auto one = [](tandem::http_client* c, const std::string* url) -> tandem::task<int> {
        co_return (co_await c->get(*url)).status;
    };
    auto open_all = [](tandem::http_client* c, const std::string* url, unsigned n,
                       decltype(one) f) -> tandem::task<std::size_t> {
        std::vector<tandem::task<int>> all;
        for (unsigned i = 0; i < n; ++i) all.push_back(f(c, url));
        for (int status : co_await tandem::when_all(std::move(all))) {
            if (status != 200) throw std::runtime_error("status " + std::to_string(status));
        }
        co_return c->idle_connections();
    };
    (void)rt.block_on(one(&client, &s.url));  // warm up: the loop, the pool, the parser
    ::malloc_trim(0);
    const long before = rss_kib();
    const std::size_t idle = rt.block_on(open_all(&client, &s.url, s.idle, one));
    const long peak = rss_kib();
    ::malloc_trim(0);  // what the burst of requests used and gave back is not the idle cost
    const long after = rss_kib();
    std::printf(
        "%zu idle connections: %.0f bytes each (RSS %ld -> %ld KiB; %ld KiB during "
        "the burst of requests)\n",
        idle, (after - before) * 1024.0 / static_cast<double>(idle), before, after, peak);
    std::printf("IDLE connections=%zu rss_before_kb=%ld rss_after_kb=%ld\n", idle, before, after);
    return idle == s.idle ? 0 : 1;
}

double cpu_seconds() {
    rusage u{};
    ::getrusage(RUSAGE_SELF, &u);
    return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
           static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

int load_test(const settings& s) {
    tandem::runtime_options o;
    o.io_threads = s.threads;
    o.processes.enabled = false;
    tandem::runtime rt(o);
    tandem::http_client_options co;
    co.max_connections_per_host = (s.connections + s.threads - 1) / s.threads;  // per io thread
    tandem::http_client client(co);
    std::atomic<long> budget{s.requests};
    std::vector<tally> tallies(s.threads);
    const double cpu_start = cpu_seconds();
    const auto start = clock_type::now();
    const auto deadline = start + std::chrono::duration_cast<clock_type::duration>(
                                      std::chrono::duration<double>(s.duration));
    // One block_on per io thread (each picks the next loop), the connections split evenly.
    std::vector<std::thread> threads;
    for (unsigned i = 0; i < s.threads; ++i) {
        const unsigned count = s.connections / s.threads + (i < s.connections % s.threads);
        threads.emplace_back([&, i, count] {
            rt.block_on(run_connections(&client, &s, count, &budget, deadline, &tallies[i]));
        });
    }
    for (auto& t : threads) t.join();
    const double seconds = std::chrono::duration<double>(clock_type::now() - start).count();
    const double cpu = cpu_seconds() - cpu_start;

    tally all;
    for (auto& t : tallies) {
        all.ok += t.ok;
        all.errors += t.errors;
        all.latency_us.insert(all.latency_us.end(), t.latency_us.begin(), t.latency_us.end());
    }
    auto percentile = [&](double p) -> double {
        if (all.latency_us.empty()) return 0;
        auto at = all.latency_us.begin() +
                  static_cast<long>(p * static_cast<double>(all.latency_us.size() - 1));
        std::nth_element(all.latency_us.begin(), at, all.latency_us.end());
        return *at;
    };
    const double p50 = percentile(0.50), p99 = percentile(0.99), p999 = percentile(0.999);
    std::printf(
        "%ld requests in %.2f s over %u connections on %u io thread%s: %.0f requests/s, "
        "%ld errors\n",
        all.ok, seconds, s.connections, s.threads, s.threads == 1 ? "" : "s",
        static_cast<double>(all.ok) / seconds, all.errors);
    std::printf("latency: p50 %.0f us, p99 %.0f us, p99.9 %.0f us; client CPU %.2f us/request\n",
                p50, p99, p999, all.ok > 0 ? cpu * 1e6 / static_cast<double>(all.ok) : 0.0);
    std::printf(
        "RESULT requests=%ld errors=%ld seconds=%.3f p50_us=%.1f p99_us=%.1f "
        "p999_us=%.1f\n",
        all.ok, all.errors, seconds, p50, p99, p999);
    return all.ok > 0 ? 0 : 1;
}

[[noreturn]] void usage(int status) {
    std::fprintf(status == 0 ? stdout : stderr,
                 "usage: http_load --url http://HOST:PORT/PATH [--connections N] "
                 "(--requests N | --duration SECONDS) [--threads N]\n"
                 "       http_load --url URL --idle N\n");
    std::exit(status);
}

}  // namespace

int main(int argc, char** argv) {
    settings s;
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        if (arg == "-h" || arg == "--help") usage(0);
        if (i + 1 >= argc) usage(2);
        const char* value = argv[++i];
        if (arg == "--url")
            s.url = value;
        else if (arg == "--connections")
            s.connections = static_cast<unsigned>(std::atoi(value));
        else if (arg == "--requests")
            s.requests = std::atol(value);
        else if (arg == "--duration")
            s.duration = std::atof(value);
        else if (arg == "--threads")
            s.threads = static_cast<unsigned>(std::atoi(value));
        else if (arg == "--idle")
            s.idle = static_cast<unsigned>(std::atoi(value));
        else
            usage(2);
    }
    if (s.url.empty() || s.threads == 0) usage(2);
    // Thousands of connections need thousands of fds.
    rlimit limit{};
    ::getrlimit(RLIMIT_NOFILE, &limit);
    limit.rlim_cur = limit.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &limit);
    try {
        if (s.idle > 0) return idle_test(s);
        if (s.connections == 0 || (s.requests <= 0 && s.duration <= 0)) usage(2);
        return load_test(s);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "http_load: %s\n", e.what());
        return 1;
    }
}
