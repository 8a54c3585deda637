// SPDX-License-Identifier: MIT
// Echo-server benchmark: the server CPU time one echoed request costs with
// tandem (tcp_listener::accept, a coroutine per connection doing read_some /
// write_all), against a raw liburing loop with tandem's ring flags (the floor)
// and against Asio's C++20 coroutines. The target: tandem's server
// CPU per request at most 1.05x the raw loop's. tandem_epoll is the same
// tandem server on runtime_options::backend = epoll (the fallback where
// io_uring is blocked); its fair peer is Asio, whose reactor is epoll too.
//
//   <server>/<S>B/<N>conns   S in {64, 512} bytes, N in {1, 10, 100, 1000,
//                            10000} connections; server in {tandem, raw,
//                            asio, tandem_epoll}
//
// How one benchmark runs (echo_servers.hpp, echo_client.hpp):
//
//   CPU 0: server process A (the one named)   server process B (a raw peer)
//            ▲ N connections                      ▲ N connections
//   CPU 1: client process A                     client process B
//
// Every process is a child of this one. Each client opens N connections to
// its server; then the two sides take turns, in windows of 20 ms + 10 us per
// connection: one client pauses (its echoes in flight finish), the other
// runs ping-pong on all its connections (send S bytes, read S back, check
// them, repeat), settles for a moment, and the server's CPU clock
// (clock_getcpuclockid of its process) and the client's count of echoes are
// read around the window. An iteration is one window of each side, the order
// flipping every iteration; short alternating windows make whatever else the
// machine runs disturb both servers alike. Counters of the server named:
//   server_ns_per_req  server CPU ns / echoes (what the target is about)
//   req_per_s          echoes per second of wall time (all connections)
//   server_cpu         the server's share of one CPU (1: it was the
//                      bottleneck; below 1: it waited for the client)
//   client_cpu         the load generator's share of one CPU
//   req_per_wait       echoes per time the serving thread blocked (voluntary
//                      context switches): how much work each wake-up found
//   raw_ns_per_req     the same for the raw peer
//   vs_raw             median over iterations of (this server's ns/req in its
//                      window / the raw peer's in the window next to it)
// The reported time is the named server's windows (manual time). After the
// normal output a table prints, per configuration, ns/req of the three and
// their vs_raw ratios (raw against raw shows the method's noise), and whether
// tandem met 1.05x (medians when --benchmark_repetitions is given); a second
// table puts tandem_epoll against tandem on io_uring and against Asio (ratios
// of their vs_raw ratios: each was measured against the same raw loop).
//
// Every process needs N + a few fds (10,000 connections fit under a 20,000
// limit). Iterations: windows for 3 x --benchmark_min_time per server, at
// least 16 (a full run takes about three minutes). With --benchmark_min_time
// below 0.1 s (CI passes 0.01) it is a smoke test of a few seconds: one
// iteration, 1, 100 and 1,000 connections.

#include "echo_client.hpp"
#include "echo_servers.hpp"
#include "ring_setup.hpp"

#include <benchmark/benchmark.h>
#include <liburing.h>

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace std::chrono_literals;

using kind = echo::server_kind;
constexpr kind kinds[] = {kind::tandem, kind::raw, kind::asio, kind::tandem_epoll};
constexpr std::size_t n_kinds = std::size(kinds);
constexpr std::size_t sizes[] = {64, 512};

const char* name_of(kind k) {
    switch (k) {
        case kind::tandem:
            return "tandem";
        case kind::raw:
            return "raw";
        case kind::asio:
            return "asio";
        case kind::tandem_epoll:
            return "tandem_epoll";
    }
    return "?";
}

/// What every benchmark shares, set up in main().
struct setup {
    echo::load_client* clients[2] = {};  // one per side
    std::size_t fd_limit = 0;
    int server_cpu = -1;
    double min_time = 0.5;  // --benchmark_min_time
    // Windows are short so that the two sides alternate often. Both grow with
    // the connections: with 10,000 one round of echoes takes ~100 ms, and the
    // first rounds after a switch are a burst.
    std::chrono::microseconds window_base{20'000};
    std::chrono::microseconds settle_base{5'000};
    std::chrono::microseconds per_conn{10};
    benchmark::IterationCount min_iterations = 16;
    std::vector<std::size_t> conn_counts{1, 10, 100, 1000, 10000};
};
setup cfg;

// Beyond one per connection: the ring, the listener, eventfds, stdio.
constexpr std::size_t spare_fds = 32;

std::chrono::microseconds window_for(std::size_t conns) {
    return cfg.window_base + cfg.per_conn * static_cast<long>(conns);
}
std::chrono::microseconds settle_for(std::size_t conns) {
    return cfg.settle_base + cfg.per_conn * static_cast<long>(conns);
}

std::string config_name(kind k, std::size_t size, std::size_t conns) {
    return std::string(name_of(k)) + "/" + std::to_string(size) + "B/" + std::to_string(conns) +
           "conns";
}

/// One server, its client, and its share of the measured windows.
struct side {
    std::unique_ptr<echo::server_process> srv;
    echo::load_client* client = nullptr;
    bool started = false;  // the client has a session with this server
    double cpu_ns = 0;
    double echoes = 0;
    double wall_s = 0;
    double waits = 0;
    double client_cpu_ns = 0;
};

/// One benchmark run: the server named (sides[0]) and its raw peer (sides[1]).
struct run_state {
    side sides[2];
    std::size_t conns = 0;
    int running = -1;            // the side whose client runs
    std::vector<double> ratios;  // per iteration: sides[0] ns/req over sides[1]'s
};

/// One window's deltas.
struct window_result {
    double wall_s = 0;
    double cpu_ns = 0;
    double echoes = 0;
};

/// Lets side `s` settle, then reads the server's and the client's counters
/// around one window and adds them to `s`.
window_result sample(side& s, std::size_t conns) {
    std::this_thread::sleep_for(settle_for(conns));
    const auto t0 = std::chrono::steady_clock::now();
    const std::uint64_t w0 = s.srv->waits();
    const std::uint64_t c0 = s.srv->cpu_ns();
    const std::uint64_t e0 = s.client->completed();
    const std::uint64_t k0 = s.client->cpu_ns();
    std::this_thread::sleep_for(window_for(conns));
    const std::uint64_t k1 = s.client->cpu_ns();
    const std::uint64_t e1 = s.client->completed();
    const std::uint64_t c1 = s.srv->cpu_ns();
    const std::uint64_t w1 = s.srv->waits();
    const std::chrono::duration<double> wall = std::chrono::steady_clock::now() - t0;
    const window_result w{wall.count(), static_cast<double>(c1 - c0), static_cast<double>(e1 - e0)};
    s.cpu_ns += w.cpu_ns;
    s.echoes += w.echoes;
    s.wall_s += w.wall_s;
    s.waits += static_cast<double>(w1 - w0);
    s.client_cpu_ns += static_cast<double>(k1 - k0);
    return w;
}

/// Switches the load to side `s` (the other pauses first) and samples it.
window_result window(run_state& r, int s, std::string* err) {
    if (r.running != s) {
        if (r.running >= 0) *err = r.sides[r.running].client->pause();
        if (err->empty()) *err = r.sides[s].client->run();
        if (!err->empty()) return {};
        r.running = s;
    }
    return sample(r.sides[s], r.conns);
}

/// Windows of the server named alternate with windows of its raw peer, the
/// order flipping every iteration.
std::string measure(benchmark::State& state, run_state& r) {
    std::string err;
    int round = 0;
    for (auto _ : state) {
        window_result w[2];
        for (int j = 0; j < 2 && err.empty(); ++j) {
            const int s = round % 2 == 0 ? j : 1 - j;
            w[s] = window(r, s, &err);
        }
        if (!err.empty()) break;
        state.SetIterationTime(w[0].wall_s);
        if (w[0].echoes > 0 && w[1].echoes > 0 && w[1].cpu_ns > 0) {
            r.ratios.push_back((w[0].cpu_ns / w[0].echoes) / (w[1].cpu_ns / w[1].echoes));
        }
        ++round;
    }
    return err.empty() ? err : "client: " + err;
}

double median(std::vector<double> v) {
    if (v.empty()) return std::nan("");
    auto mid = v.begin() + static_cast<std::ptrdiff_t>(v.size() / 2);
    std::nth_element(v.begin(), mid, v.end());
    return *mid;
}

void report(benchmark::State& state, const run_state& r) {
    const side& own = r.sides[0];
    const side& peer = r.sides[1];
    if (own.echoes == 0 || peer.echoes == 0) {
        state.SkipWithError("no echo completed in the measured windows");
        return;
    }
    state.counters["server_ns_per_req"] = own.cpu_ns / own.echoes;
    state.counters["req_per_s"] = own.echoes / own.wall_s;
    state.counters["server_cpu"] = own.cpu_ns / 1e9 / own.wall_s;
    state.counters["client_cpu"] = own.client_cpu_ns / 1e9 / own.wall_s;
    state.counters["req_per_wait"] = own.waits > 0 ? own.echoes / own.waits : 0;
    state.counters["raw_ns_per_req"] = peer.cpu_ns / peer.echoes;
    // The median: a window that another process disturbed does not move it.
    state.counters["vs_raw"] = median(r.ratios);
}

/// Starts both servers and connects both clients; returns "" or the error.
std::string set_up(run_state& r, kind k, std::size_t size) {
    try {
        r.sides[0].srv = std::make_unique<echo::server_process>(k, cfg.server_cpu);
        r.sides[1].srv = std::make_unique<echo::server_process>(kind::raw, cfg.server_cpu);
    } catch (const std::exception& e) {
        return e.what();
    }
    for (int s = 0; s < 2; ++s) {
        side& d = r.sides[s];
        d.client = cfg.clients[s];
        if (std::string e = d.client->start(d.srv->port(), r.conns, size); !e.empty()) {
            return "client: " + e;
        }
        d.started = true;
    }
    return {};
}

void run_echo(benchmark::State& state, kind k, std::size_t size, std::size_t conns) {
    // Every process holds one fd per connection of its own, and a few more.
    if (conns + spare_fds > cfg.fd_limit) {
        const std::string why = "needs " + std::to_string(conns + spare_fds) +
                                " fds per process; RLIMIT_NOFILE is " +
                                std::to_string(cfg.fd_limit);
        state.SkipWithError(why.c_str());
        return;
    }
    run_state r;
    r.conns = conns;
    std::string err = set_up(r, k, size);
    if (err.empty()) err = measure(state, r);
    for (side& d : r.sides) {
        if (!d.started) continue;
        if (std::string e = d.client->stop(); err.empty() && !e.empty()) err = "client: " + e;
    }
    for (side& d : r.sides) d.srv.reset();
    if (!err.empty()) {
        state.SkipWithError(err.c_str());
        return;
    }
    report(state, r);
}

/// Iterations: windows for 3 x --benchmark_min_time per server (1.5 s by
/// default), and at least min_iterations. Per-window ratios scatter by several
/// per cent on a shared machine; their median needs dozens of them.
benchmark::IterationCount iterations_for(std::size_t conns) {
    const double window_s = std::chrono::duration<double>(window_for(conns)).count();
    return std::max<benchmark::IterationCount>(
        cfg.min_iterations,
        static_cast<benchmark::IterationCount>(std::llround(3 * cfg.min_time / window_s)));
}

void register_all() {
    // The servers of a configuration run back to back.
    for (std::size_t size : sizes) {
        for (std::size_t conns : cfg.conn_counts) {
            for (kind k : kinds) {
                benchmark::RegisterBenchmark(
                    config_name(k, size, conns).c_str(),
                    [k, size, conns](benchmark::State& st) { run_echo(st, k, size, conns); })
                    ->UseManualTime()
                    ->Iterations(iterations_for(conns))
                    ->Unit(benchmark::kMillisecond);
            }
        }
    }
}

// ---- summary -----------------------------------------------------------------------------

constexpr double target_ratio = 1.05;

/// v with `decimals` decimals, "-" for NaN.
std::string cell(double v, int decimals) {
    if (std::isnan(v)) return "-";
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
    return buf;
}

/// The console reporter, plus the ratio table.
class summary_reporter : public benchmark::ConsoleReporter {
public:
    explicit summary_reporter(bool color) : ConsoleReporter(color ? OO_ColorTabular : OO_Tabular) {}

    void ReportRuns(const std::vector<Run>& runs) override {
        for (const Run& r : runs) {
            if (r.run_type != Run::RT_Iteration || r.error_occurred) continue;
            series& s = results_[r.run_name.function_name];
            for (const char* c : {"server_ns_per_req", "req_per_s", "vs_raw"}) {
                if (auto it = r.counters.find(c); it != r.counters.end()) {
                    s[c].push_back(it->second.value);
                }
            }
        }
        ConsoleReporter::ReportRuns(runs);
    }

    void print_summary() const;

private:
    /// One configuration's medians, indexed by server_kind.
    struct row {
        double ns[n_kinds];
        double rate[n_kinds];
        double ratio[n_kinds];  // vs_raw
    };
    row row_of(std::size_t size, std::size_t conns) const;
    double print_row(std::size_t size, std::size_t conns) const;
    void print_epoll_summary() const;

    using series = std::map<std::string, std::vector<double>>;

    /// Median of counter `c` of benchmark `name` over repetitions; NaN if none.
    double median(const std::string& name, const char* c) const {
        auto it = results_.find(name);
        if (it == results_.end()) return std::nan("");
        auto v_it = it->second.find(c);
        if (v_it == it->second.end() || v_it->second.empty()) return std::nan("");
        std::vector<double> v = v_it->second;
        auto mid = v.begin() + static_cast<std::ptrdiff_t>(v.size() / 2);
        std::nth_element(v.begin(), mid, v.end());
        return *mid;
    }

    std::map<std::string, series> results_;
};

summary_reporter::row summary_reporter::row_of(std::size_t size, std::size_t conns) const {
    row r;
    for (kind k : kinds) {
        const auto i = static_cast<std::size_t>(k);
        const std::string name = config_name(k, size, conns);
        r.ns[i] = median(name, "server_ns_per_req");
        r.rate[i] = median(name, "req_per_s");
        r.ratio[i] = median(name, "vs_raw");
    }
    return r;
}

/// Prints one configuration's row; returns tandem/raw (NaN if not run).
double summary_reporter::print_row(std::size_t size, std::size_t conns) const {
    const auto [ns, rate, ratio] = row_of(size, conns);
    if (std::isnan(ns[0]) && std::isnan(ns[1]) && std::isnan(ns[2])) return ns[0];  // filtered out
    const char* verdict = std::isnan(ratio[0])       ? "not run"
                          : ratio[0] <= target_ratio ? "met"
                                                     : "missed";
    std::printf("%5zu %6zu %8s %8s %8s %11s %9s %8s %11s %11s %11s  %s\n", size, conns,
                cell(ns[0], 0).c_str(), cell(ns[1], 0).c_str(), cell(ns[2], 0).c_str(),
                cell(ratio[0], 3).c_str(), cell(ratio[2], 3).c_str(), cell(ratio[1], 3).c_str(),
                cell(rate[0], 0).c_str(), cell(rate[1], 0).c_str(), cell(rate[2], 0).c_str(),
                verdict);
    return ratio[0];
}

void summary_reporter::print_summary() const {
    std::printf(
        "\nServer CPU ns per echoed request (server process CPU time / echoes), median over "
        "repetitions.\nRatios: each server against a raw liburing peer in alternating windows of "
        "the same benchmark\n(median of the per-window ratios; raw/raw shows the method's "
        "noise).\n");
    std::printf("%5s %6s %8s %8s %8s %11s %9s %8s %11s %11s %11s  %s\n", "size", "conns", "tandem",
                "raw", "asio", "tandem/raw", "asio/raw", "raw/raw", "tandem r/s", "raw r/s",
                "asio r/s", "target: tandem/raw <= 1.05");
    int met = 0;
    int judged = 0;
    double log_sum = 0;
    for (std::size_t size : sizes) {
        for (std::size_t conns : cfg.conn_counts) {
            const double r = print_row(size, conns);
            if (std::isnan(r)) continue;
            met += r <= target_ratio ? 1 : 0;
            ++judged;
            log_sum += std::log(r);
        }
    }
    if (judged > 0) {
        std::printf("tandem/raw <= %.2f met in %d of %d configurations (geometric mean %.3f)\n",
                    target_ratio, met, judged, std::exp(log_sum / judged));
    }
    if (cfg.min_iterations == 1) {
        std::printf(
            "(smoke run: too few windows for these ratios to mean anything; run without "
            "--benchmark_min_time for numbers)\n");
    }
    print_epoll_summary();
    std::fflush(stdout);
}

/// tandem_epoll against tandem on io_uring and against Asio (epoll as well): the ratio of
/// their vs_raw medians, so each side of a ratio had the raw loop as its peer.
void summary_reporter::print_epoll_summary() const {
    constexpr auto t = static_cast<std::size_t>(kind::tandem);
    constexpr auto a = static_cast<std::size_t>(kind::asio);
    constexpr auto e = static_cast<std::size_t>(kind::tandem_epoll);
    std::printf(
        "\nThe epoll backend (tandem_epoll: the tandem server on backend = epoll). Ratios of "
        "the vs_raw medians.\n");
    std::printf("%5s %6s %8s %11s %13s %11s %11s\n", "size", "conns", "epoll", "epoll/raw",
                "epoll/tandem", "epoll/asio", "epoll r/s");
    int n_uring = 0, n_asio = 0;
    double log_uring = 0, log_asio = 0;
    for (std::size_t size : sizes) {
        for (std::size_t conns : cfg.conn_counts) {
            const row r = row_of(size, conns);
            if (std::isnan(r.ns[e])) continue;  // filtered out, or failed
            const double vs_uring = r.ratio[e] / r.ratio[t];
            const double vs_asio = r.ratio[e] / r.ratio[a];
            std::printf("%5zu %6zu %8s %11s %13s %11s %11s\n", size, conns,
                        cell(r.ns[e], 0).c_str(), cell(r.ratio[e], 3).c_str(),
                        cell(vs_uring, 3).c_str(), cell(vs_asio, 3).c_str(),
                        cell(r.rate[e], 0).c_str());
            if (!std::isnan(vs_uring)) {
                log_uring += std::log(vs_uring);
                ++n_uring;
            }
            if (!std::isnan(vs_asio)) {
                log_asio += std::log(vs_asio);
                ++n_asio;
            }
        }
    }
    if (n_uring > 0)
        std::printf("epoll/tandem (io_uring) geometric mean %.3f over %d configurations\n",
                    std::exp(log_uring / n_uring), n_uring);
    if (n_asio > 0)
        std::printf("epoll/asio geometric mean %.3f over %d configurations\n",
                    std::exp(log_asio / n_asio), n_asio);
}

/// --benchmark_min_time as given (gbench 1.7 takes seconds; 1.8 may add "s").
double min_time_arg(int argc, char** argv) {
    constexpr const char* flag = "--benchmark_min_time=";
    double t = 0.5;  // Google Benchmark's default
    for (int i = 1; i < argc; ++i) {
        if (std::strncmp(argv[i], flag, std::strlen(flag)) == 0) {
            t = std::strtod(argv[i] + std::strlen(flag), nullptr);
        }
    }
    return t;
}

/// The first two CPUs this process may run on: {server, client}, or -1s.
std::pair<int, int> pick_cpus() {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (::sched_getaffinity(0, sizeof set, &set) != 0) return {-1, -1};
    int found[2] = {-1, -1};
    int n = 0;
    for (int c = 0; c < CPU_SETSIZE && n < 2; ++c) {
        if (CPU_ISSET(c, &set)) found[n++] = c;
    }
    if (n < 2) return {-1, -1};
    return {found[0], found[1]};
}

}  // namespace

int main(int argc, char** argv) {
    cfg.min_time = min_time_arg(argc, argv);
    if (cfg.min_time < 0.1) {  // CI: a smoke test
        cfg.min_iterations = 1;
        cfg.conn_counts = {1, 100, 1000};
    }
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    std::string flags;
    try {
        io_uring probe{};
        flags = tandem::detail::setup_ring(&probe, 1024).description;
        io_uring_queue_exit(&probe);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "echo_bench: %s\n", e.what());
        return 77;  // skipped: no io_uring here
    }
    benchmark::AddCustomContext("io_uring setup", flags);
    cfg.fd_limit = echo::raise_fd_limit();
    benchmark::AddCustomContext("fds per process", std::to_string(cfg.fd_limit));
    const auto [server_cpu, client_cpu] = pick_cpus();
    cfg.server_cpu = server_cpu;
    benchmark::AddCustomContext("server cpu / client cpu",
                                std::to_string(server_cpu) + " / " + std::to_string(client_cpu));
    // Forked while this process has one thread (so are the servers, later).
    echo::load_client client_a(client_cpu);
    echo::load_client client_b(client_cpu);
    cfg.clients[0] = &client_a;
    cfg.clients[1] = &client_b;
    register_all();
    summary_reporter reporter(isatty(STDOUT_FILENO) != 0);
    benchmark::RunSpecifiedBenchmarks(&reporter);
    reporter.print_summary();
    benchmark::Shutdown();
    return 0;
}
