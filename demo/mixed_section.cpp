// SPDX-License-Identifier: MIT
// tandem-demo, mixed: a TCP server on 127.0.0.1 where most requests are cheap and 10 % also need
// about 200 us of CPU (a hash), the workload of examples/mixed_server.cpp and
// bench/mixed_bench.cpp (its protocol and hash: examples/mixed_protocol.hpp). Three servers:
//   none      no CPU work at all: heavy requests get the cheap answer (the baseline)
//   inline    the hash on the event loop, which serves no other connection meanwhile
//   process   the hash in offload_to_process's worker processes (tandem's defaults)
// An open-loop client sends each the same schedule: Poisson arrivals at a fixed rate, latency
// counted from each request's due time, so a request queued behind a hash counts in full.
// Reported: the cheap requests' p50 and p99, the heavy ones' p99, and the cheap p99 against the
// baseline's. Every reply is checked; a wrong or missing one is a problem.
//
// Who runs where, and why. Each server is a child process (`tandem-demo --child mixed-server
// MODE CPUS`, re-running this binary; it stops when its stdin ends), confined with its loop and
// its workers to every CPU but the last; the client is a tandem runtime in this process, its io
// thread on the last CPU. So the client's clock is not disturbed by the servers' hashing, a server
// cannot borrow the client's CPU, and each mode gets the same CPUs: on a 2-vCPU machine, one CPU
// for the whole server and one for the client, as in bench/mixed_bench.cpp (README, "The mixed
// workload"). With one CPU nothing is pinned. The three servers run side by side; the client loads
// one at a time, in windows, each round visiting the three in an order drawn per round, so that
// what else the machine does (here a kernel thread holds a CPU for 1-5 ms every half second) lands
// on all alike. The figures are medians over the rounds, after a warm-up that is not counted.
#include <tandem/tandem.hpp>

#include "../examples/mixed_protocol.hpp"
#include "child_process.hpp"
#include "demo.hpp"
#include "section_util.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <exception>
#include <memory>
#include <string>
#include <system_error>
#include <vector>

namespace demo {
namespace {

using clock_type = std::chrono::steady_clock;
using namespace std::chrono_literals;

// The servers, by index.
constexpr std::size_t mode_count = 3, none = 0, inline_hash = 1, process = 2;
constexpr const char* mode_args[mode_count] = {"none", "inline", "process"};
constexpr const char* row_names[mode_count] = {"no CPU work (baseline)",
                                               "CPU work inline on the loop", "offload_to_process"};

// ---- the server (a child process) --------------------------------------------------------------

tandem::task<mixed::reply> answer(mixed::request rq, std::size_t how) {
    if (rq.kind == 0 || how == none) co_return mixed::reply{0, 0, mixed::cheap_answer(rq.seed)};
    const std::uint32_t passes = std::min(rq.passes, mixed::max_passes);
    std::uint64_t h = 0;
    if (how == inline_hash) {
        h = mixed::heavy_hash(rq.seed, passes);
    } else {
        h = co_await tandem::offload_to_process(mixed::heavy_hash, rq.seed, passes);
    }
    co_return mixed::reply{1, 0, h};
}

tandem::task<> serve_connection(tandem::tcp_stream s, std::size_t how) {
    std::array<std::byte, 4096> buf;
    std::size_t have = 0;
    try {
        while (std::size_t n = co_await s.read_some(std::span(buf).subspan(have))) {
            have += n;
            std::size_t used = 0;
            for (; have - used >= sizeof(mixed::request); used += sizeof(mixed::request)) {
                mixed::request rq;
                std::memcpy(&rq, buf.data() + used, sizeof rq);
                const mixed::reply rp = co_await answer(rq, how);
                co_await s.write_all(std::as_bytes(std::span(&rp, 1)));
            }
            std::memmove(buf.data(), buf.data() + used, have - used);
            have -= used;
        }
    } catch (const std::system_error&) {
        // the client reset the connection
    }
}

tandem::task<> accept_connections(tandem::tcp_listener listener, std::size_t how) {
    for (;;) {
        tandem::tcp_stream s = co_await listener.accept();
        const int one = 1;  // replies are single small writes: no Nagle delay
        ::setsockopt(s.native_handle(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        tandem::runtime::current()->spawn(serve_connection(std::move(s), how));
    }
}

// ---- starting and stopping the servers ---------------------------------------------------------

/// "0,2,3" for {0, 2, 3}; "-" for none (the server is not pinned).
std::string cpu_list(const std::vector<int>& cpus) {
    std::string list;
    for (int c : cpus) {
        if (!list.empty()) list += ',';
        list += std::to_string(c);
    }
    return list.empty() ? "-" : list;
}

/// Pins the calling thread, and so every thread and process it makes later, to `list`.
void pin_to(const char* list) {
    if (std::strcmp(list, "-") == 0) return;
    cpu_set_t cpus;
    CPU_ZERO(&cpus);
    for (const char* p = list; *p != '\0';) {
        char* end = nullptr;
        const long c = std::strtol(p, &end, 10);
        if (end == p) break;
        if (c >= 0 && c < CPU_SETSIZE) CPU_SET(static_cast<int>(c), &cpus);
        p = *end == ',' ? end + 1 : end;
    }
    if (CPU_COUNT(&cpus) > 0) ::sched_setaffinity(0, sizeof cpus, &cpus);
}

/// Starts the server in mode m (`--child mixed-server MODE CPUS`) and reads its port; 0 and a
/// problem if it does not say within 10 s.
int start_server(const config& cfg, std::size_t m, const std::string& cpus,
                 std::unique_ptr<child_process>* server, section* out) {
    *server = std::make_unique<child_process>(
        cfg.self_exe, std::vector<std::string>{"--child", "mixed-server", mode_args[m], cpus},
        /*control=*/true);
    std::string line;
    int port = 0;
    if ((*server)->read_line(line, clock_type::now() + 10s) && line.rfind("PORT ", 0) == 0) {
        port = std::atoi(line.c_str() + 5);
    }
    if (port <= 0) {
        out->problems.push_back(util::format("mixed: the %s server did not start", mode_args[m]));
    }
    return port;
}

/// Ends the server's stdin (it stops at end of stream) and reaps it; a problem if it does not
/// exit cleanly within 5 s.
void stop_server(std::size_t m, child_process* server, section* out) {
    server->close_control();
    const child_process::exit_info e = server->wait(clock_type::now() + 5s);
    if (!WIFEXITED(e.status) || WEXITSTATUS(e.status) != 0) {
        out->problems.push_back(
            util::format("mixed: the %s server: %s", mode_args[m], e.describe().c_str()));
    }
}

// ---- the client ------------------------------------------------------------------------------

constexpr std::size_t heavy_seeds = 64;

struct settings {
    double rate = 4000;  // requests per second
    unsigned connections = 100;
    unsigned heavy_percent = 10;
    double work_us = 200;
    double warmup = 0.25;     // seconds of load on each server before round 1, not counted
    double window = 0.5;      // seconds per window
    std::size_t rounds = 11;  // round 0 is the warm-up
    std::uint32_t passes = 0;
    int client_cpu = -1;  // -1: not pinned
};

/// One request of the schedule.
struct planned {
    clock_type::time_point due;
    std::uint64_t seed;
    int heavy;  // index into the heavy seeds, or -1 for a cheap request
    std::size_t round;
};

struct connection {
    tandem::tcp_stream stream;
    std::vector<planned> todo;      // its share of the schedule, in due order
    std::deque<planned> in_flight;  // sent, not yet answered: replies come in this order
};

struct window_tally {
    std::vector<float> cheap_us, heavy_us, lag_us;
};

/// The load on one server and what it measured (the client's one io thread touches it).
struct server_load {
    std::size_t how = none;
    int port = 0;
    std::vector<std::unique_ptr<connection>> conns;
    std::vector<window_tally> rounds;
    std::uint64_t scheduled = 0, sent = 0, received = 0, wrong = 0, io_errors = 0;
    std::string first_error;
};

struct load {
    settings s;
    std::array<std::uint64_t, heavy_seeds> seeds{}, hashes{};
    std::array<server_load, mode_count> servers;
    clock_type::time_point end;  // the last window's end
};

clock_type::duration seconds(double x) {
    return std::chrono::duration_cast<clock_type::duration>(std::chrono::duration<double>(x));
}

/// Poisson arrivals over `duration` seconds drawn from `round` (the same for every server in
/// that round): dues relative to the window's start, kinds and seeds.
std::vector<planned> arrivals(const load& l, std::size_t round, double duration) {
    std::vector<planned> a;
    double t = 0;
    for (std::uint64_t k = 0;; ++k) {
        const std::uint64_t u = mixed::splitmix64((round << 32) + k);
        t += -std::log((static_cast<double>(u >> 11) + 1) * 0x1p-53) / l.s.rate;
        if (t >= duration) return a;
        const std::uint64_t v = mixed::splitmix64(u);
        const bool heavy = v % 100 < l.s.heavy_percent;
        const int index = heavy ? static_cast<int>((v >> 32) % heavy_seeds) : -1;
        a.push_back({clock_type::time_point(seconds(t)),
                     heavy ? l.seeds[static_cast<std::size_t>(index)] : v, index, round});
    }
}

/// Hands `a`, shifted to `start`, to the server's connections in turn.
void assign(const std::vector<planned>& a, clock_type::time_point start, server_load* sv) {
    for (std::size_t j = 0; j < a.size(); ++j) {
        planned p = a[j];
        p.due = start + p.due.time_since_epoch();
        sv->conns[j % sv->conns.size()]->todo.push_back(p);
        ++sv->scheduled;
    }
}

/// Fixes the schedule from `t0`: a warm-up of each server in turn (round 0, not counted), then
/// the rounds 1, 2, ..., each with one window per server in an order drawn from the round.
void make_schedule(load* l, clock_type::time_point t0) {
    constexpr std::size_t orders[6][mode_count] = {{0, 1, 2}, {0, 2, 1}, {1, 0, 2},
                                                   {1, 2, 0}, {2, 0, 1}, {2, 1, 0}};
    const settings& s = l->s;
    for (std::size_t m = 0; m < mode_count; ++m) {
        l->servers[m].rounds.resize(s.rounds);
        assign(arrivals(*l, 0, s.warmup), t0 + seconds(s.warmup * static_cast<double>(m)),
               &l->servers[m]);
    }
    const auto first = t0 + seconds(s.warmup * mode_count);
    for (std::size_t r = 1; r < s.rounds; ++r) {
        const std::vector<planned> a = arrivals(*l, r, s.window);
        const std::size_t* order = orders[mixed::splitmix64(0x0dde5eed + r) % 6];
        for (std::size_t pos = 0; pos < mode_count; ++pos) {
            const double slot = static_cast<double>((r - 1) * mode_count + pos);
            assign(a, first + seconds(s.window * slot), &l->servers[order[pos]]);
        }
    }
    l->end = first + seconds(s.window * static_cast<double>((s.rounds - 1) * mode_count));
}

void check(const load& l, server_load* sv, const planned& p, const mixed::reply& r,
           clock_type::time_point now) {
    bool right = r.zero == 0;
    if (p.heavy < 0 || sv->how == none) {
        right = right && r.hashed == 0 && r.value == mixed::cheap_answer(p.seed);
    } else {
        right = right && r.hashed == 1 && r.value == l.hashes[static_cast<std::size_t>(p.heavy)];
    }
    if (!right) ++sv->wrong;
    if (p.round == 0) return;  // the warm-up
    const float us = std::chrono::duration<float, std::micro>(now - p.due).count();
    window_tally& w = sv->rounds[p.round];
    (p.heavy >= 0 ? w.heavy_us : w.cheap_us).push_back(us);
}

void note_error(server_load* sv, const std::exception& e) {
    if (sv->io_errors++ == 0) sv->first_error = e.what();
}

tandem::task<> sender(connection* c, server_load* sv, const load* l) {
    try {
        for (const planned& p : c->todo) {
            co_await tandem::sleep_until(p.due);
            const mixed::request rq{p.heavy >= 0 ? 1u : 0u, l->s.passes, p.seed};
            c->in_flight.push_back(p);
            if (p.round != 0) {
                const float lag =
                    std::chrono::duration<float, std::micro>(clock_type::now() - p.due).count();
                sv->rounds[p.round].lag_us.push_back(lag);
            }
            ++sv->sent;
            co_await c->stream.write_all(std::as_bytes(std::span(&rq, 1)));
        }
    } catch (const tandem::operation_cancelled&) {
        // the drain deadline passed: what is missing counts as lost
    } catch (const std::exception& e) {
        note_error(sv, e);
    }
}

tandem::task<> receiver(connection* c, server_load* sv, const load* l) {
    std::array<std::byte, 4096> buf;
    std::size_t have = 0;
    try {
        for (std::size_t got = 0; got < c->todo.size();) {
            const std::size_t n = co_await c->stream.read_some(std::span(buf).subspan(have));
            if (n == 0) throw std::runtime_error("the server closed a connection");
            const clock_type::time_point now = clock_type::now();
            have += n;
            std::size_t used = 0;
            for (; have - used >= sizeof(mixed::reply); used += sizeof(mixed::reply), ++got) {
                mixed::reply r;
                std::memcpy(&r, buf.data() + used, sizeof r);
                if (c->in_flight.empty()) throw std::runtime_error("a reply to no request");
                check(*l, sv, c->in_flight.front(), r, now);
                c->in_flight.pop_front();
                ++sv->received;
            }
            std::memmove(buf.data(), buf.data() + used, have - used);
            have -= used;
        }
    } catch (const tandem::operation_cancelled&) {
    } catch (const std::exception& e) {
        note_error(sv, e);
    }
}

tandem::task<> connect_all(server_load* sv, unsigned n) {
    std::vector<tandem::task<tandem::tcp_stream>> connects;
    for (unsigned i = 0; i < n; ++i) {
        connects.push_back(tandem::tcp_stream::connect(
            tandem::address::loopback(static_cast<std::uint16_t>(sv->port))));
    }
    std::vector<tandem::tcp_stream> streams = co_await tandem::when_all(std::move(connects));
    for (tandem::tcp_stream& s : streams) {
        sv->conns.push_back(std::make_unique<connection>());
        sv->conns.back()->stream = std::move(s);
    }
}

tandem::task<> run_load(load* l) {
    if (l->s.client_cpu >= 0) {  // this io thread only
        cpu_set_t cpus;
        CPU_ZERO(&cpus);
        CPU_SET(l->s.client_cpu, &cpus);
        ::sched_setaffinity(0, sizeof cpus, &cpus);
    }
    for (server_load& sv : l->servers) co_await connect_all(&sv, l->s.connections);
    make_schedule(l, clock_type::now() + 50ms);
    std::vector<tandem::task<>> parts;
    for (server_load& sv : l->servers) {
        for (auto& c : sv.conns) {
            parts.push_back(sender(c.get(), &sv, l));
            parts.push_back(receiver(c.get(), &sv, l));
        }
    }
    try {
        co_await tandem::timeout(l->end + 2s - clock_type::now(),
                                 tandem::when_all(std::move(parts)));
    } catch (const tandem::timed_out&) {
        // replies still missing 2 s after the last window: lost (counted below)
    }
    for (server_load& sv : l->servers) {
        for (auto& c : sv.conns) c->stream.close();
    }
}

/// Passes of heavy_hash that take `work_us` here (the median of 15 timings).
std::uint32_t calibrate(double work_us) {
    constexpr std::uint32_t probe = 100;
    std::vector<double> us;
    std::uint64_t sink = 0;
    for (int i = 0; i < 15; ++i) {
        const auto start = clock_type::now();
        sink += mixed::heavy_hash(static_cast<std::uint64_t>(i), probe);
        us.push_back(std::chrono::duration<double, std::micro>(clock_type::now() - start).count());
    }
    const double per_pass = util::median(us) / probe + static_cast<double>(sink & 1) * 1e-12;
    return std::max<std::uint32_t>(1, static_cast<std::uint32_t>(std::lround(work_us / per_pass)));
}

// ---- the report --------------------------------------------------------------------------------

/// Per server and round: cheap p50, cheap p99, heavy p99, the client's own lag p99 (us).
struct window_figures {
    double p50 = 0, p99 = 0, heavy_p99 = 0, lag_p99 = 0;
};

using round_figures = std::array<window_figures, mode_count>;

window_figures figures(window_tally w) {
    for (auto* v : {&w.cheap_us, &w.heavy_us, &w.lag_us}) std::sort(v->begin(), v->end());
    return {util::quantile_sorted(w.cheap_us, 0.5), util::quantile_sorted(w.cheap_us, 0.99),
            util::quantile_sorted(w.heavy_us, 0.99), util::quantile_sorted(w.lag_us, 0.99)};
}

/// The rounds to count: those in which the client itself sent on time (its own p99 lag under
/// 1 ms: else something took its CPU, and that round measured the machine), unless fewer than
/// two are left; then all, and *warning says so.
std::vector<std::size_t> rounds_to_count(const std::vector<round_figures>& rounds,
                                         std::string* remark, std::string* warning) {
    constexpr double max_lag_us = 1000;
    std::vector<std::size_t> kept, all;
    for (std::size_t i = 0; i < rounds.size(); ++i) {
        all.push_back(i);
        const bool on_time =
            std::all_of(rounds[i].begin(), rounds[i].end(),
                        [](const window_figures& f) { return f.lag_p99 <= max_lag_us; });
        if (on_time) kept.push_back(i);
    }
    const std::size_t late = rounds.size() - kept.size();
    if (kept.size() < 2) {
        *warning = util::format(
            " (a busy machine: the client itself sent late in %zu of %zu rounds, all counted)",
            late, rounds.size());
        return all;
    }
    if (late > 0) {
        *remark = util::format("; %zu of %zu rounds left out (the client itself sent late)", late,
                               rounds.size());
    }
    return kept;
}

/// Server m's row: the medians over the rounds counted.
row server_row(const server_load& sv, const std::vector<round_figures>& rounds,
               const std::vector<std::size_t>& counted, section* out) {
    const std::size_t m = sv.how;
    std::vector<double> p50, p99, heavy, ratio;
    for (std::size_t i : counted) {
        const round_figures& f = rounds[i];
        p50.push_back(f[m].p50);
        p99.push_back(f[m].p99);
        heavy.push_back(f[m].heavy_p99);
        if (f[none].p99 > 0) ratio.push_back(f[m].p99 / f[none].p99);
    }
    row r;
    r.mode = row_names[m];
    r.cells = {{"cheap p50", util::median(p50), "us"},
               {"cheap p99", util::median(p99), "us"},
               {"heavy p99", util::median(heavy), "us"},
               {"vs baseline", util::median(ratio), "x"}};
    const std::uint64_t missing = sv.scheduled - sv.received;
    r.errors = sv.wrong + sv.io_errors + missing;
    r.note = util::format("%s replies, every one checked: %llu wrong, %llu missing",
                          util::grouped(static_cast<long long>(sv.received)).c_str(),
                          static_cast<unsigned long long>(sv.wrong),
                          static_cast<unsigned long long>(missing));
    if (m == none) r.note += "; heavy requests answered without the hash";
    if (r.errors != 0) {
        out->problems.push_back(util::format(
            "mixed: %s: %llu wrong replies, %llu missing, %llu I/O errors%s%s", row_names[m],
            static_cast<unsigned long long>(sv.wrong), static_cast<unsigned long long>(missing),
            static_cast<unsigned long long>(sv.io_errors), sv.first_error.empty() ? "" : ": ",
            sv.first_error.c_str()));
    }
    return r;
}

void report(const load& l, section* out) {
    std::vector<round_figures> rounds;  // the measured rounds (1, 2, ...)
    for (std::size_t r = 1; r < l.s.rounds; ++r) {
        round_figures f;
        for (std::size_t m = 0; m < mode_count; ++m) f[m] = figures(l.servers[m].rounds[r]);
        rounds.push_back(f);
    }
    std::string remark, warning;
    const std::vector<std::size_t> counted = rounds_to_count(rounds, &remark, &warning);
    for (const server_load& sv : l.servers) {
        out->rows.push_back(server_row(sv, rounds, counted, out));
    }
    out->work += remark;
    // "vs baseline" is the ratio of the p99s shown, so that the table's columns divide; the
    // median of the per-round ratios (each mode against the baseline in the same round, which
    // cancels a noisy moment of the machine) goes in the note.
    const double base = out->rows[none].cells[1].value;
    for (std::size_t m = 0; m < mode_count && base > 0; ++m) {
        cell& ratio = out->rows[m].cells[3];
        if (m != none) out->rows[m].note += util::format("; paired per round: %.2fx", ratio.value);
        ratio.value = out->rows[m].cells[1].value / base;
    }
    const auto cell = [&](std::size_t m, std::size_t c) { return out->rows[m].cells[c].value; };
    out->takeaway = util::format(
        "cheap-request p99: %.0f us with no CPU work; with the hash inline on the loop %.0f us "
        "(%.2fx), with offload_to_process %.0f us (%.2fx)%s",
        cell(none, 1), cell(inline_hash, 1), cell(inline_hash, 3), cell(process, 1),
        cell(process, 3), warning.c_str());
}

}  // namespace

namespace util {

int mixed_server_main(int argc, char** argv) {
    std::size_t how = mode_count;
    for (std::size_t m = 0; m < mode_count && argc == 3; ++m) {
        if (std::strcmp(argv[1], mode_args[m]) == 0) how = m;
    }
    if (how == mode_count) {
        std::fprintf(stderr, "usage: tandem-demo --child mixed-server none|inline|process CPUS\n");
        return 2;
    }
    pin_to(argv[2]);  // before the runtime: its threads, zygote and workers inherit the mask
    try {
        tandem::runtime_options o = util::base_options();
        o.io_threads = 1;
        o.processes.enabled = how == process;
        o.processes.arena_bytes = std::size_t{4} << 20;  // 16-byte jobs: no need for 256 MiB
        tandem::runtime rt(o);
        auto listener = tandem::tcp_listener::bind(tandem::address::loopback(0));
        std::printf("PORT %u\n", static_cast<unsigned>(listener.local_address().port()));
        std::fflush(stdout);
        rt.spawn(accept_connections(std::move(listener), how));
        // Serve until stdin ends: the demo closed its end of the control socket, or died.
        for (char c;;) {
            const ssize_t n = ::read(STDIN_FILENO, &c, 1);
            if (n == 0 || (n < 0 && errno != EINTR)) break;
        }
    } catch (const std::exception& e) {
        std::fprintf(stderr, "tandem-demo mixed-server: %s\n", e.what());
        return 1;
    }
    return 0;  // ~runtime cancelled the connections and shut the workers down
}

}  // namespace util

namespace {

/// Settings, calibration, the heavy seeds' hashes and the work line; the servers' CPUs.
std::string prepare(const config& cfg, load* l, section* out) {
    settings& s = l->s;
    s.warmup = cfg.quick ? 0.1 : 0.25;
    s.window = cfg.quick ? 0.2 : 0.5;
    s.rounds = cfg.quick ? 7 : 11;
    std::vector<int> cpus = util::usable_cpus();
    std::string pinning = "nothing pinned (1 CPU)";
    if (cpus.size() >= 2) {
        s.client_cpu = cpus.back();
        cpus.pop_back();
        pinning =
            cpus.size() == 1
                ? util::format("server on CPU %d, client on CPU %d", cpus[0], s.client_cpu)
                : util::format("server on %zu CPUs, client on CPU %d", cpus.size(), s.client_cpu);
    } else {
        cpus.clear();
    }
    progress("mixed: calibrating the hash");
    s.passes = calibrate(s.work_us);
    for (std::size_t k = 0; k < heavy_seeds; ++k) {
        l->seeds[k] = mixed::splitmix64(0xabcdef0000 + k);
        l->hashes[k] = mixed::heavy_hash(l->seeds[k], s.passes);
    }
    out->work = util::format(
        "a TCP server on 127.0.0.1; %s requests/s (Poisson), %u connections; %u %% need %.0f us "
        "of CPU (a hash, %u passes); median of %zu windows of %.2f s per mode, taken in turns; "
        "%s",
        util::grouped(static_cast<long long>(s.rate)).c_str(), s.connections, s.heavy_percent,
        s.work_us, s.passes, s.rounds - 1, s.window, pinning.c_str());
    return cpu_list(cpus);
}

/// The load on the three servers, from a runtime of this process; false (and a problem) if it
/// failed.
bool run_client(load* l, section* out) {
    const double seconds =
        (l->s.warmup + l->s.window * static_cast<double>(l->s.rounds - 1)) * mode_count;
    progress(util::format("mixed: %.1f s of load, the three servers in turns", seconds));
    try {
        tandem::runtime_options o = util::base_options();
        o.processes.enabled = false;
        tandem::runtime rt(o);
        rt.block_on(run_load(l));
        return true;
    } catch (const std::exception& e) {
        out->problems.push_back(std::string("mixed: the client: ") + e.what());
        return false;
    }
}

}  // namespace

section run_mixed(const config& cfg) {
    section out;
    out.id = "mixed";
    out.title = "Mixed: cheap requests next to CPU-heavy ones";
    out.chart = "cheap p99";
    out.higher_is_better = false;
    auto l = std::make_unique<load>();
    const std::string server_cpus = prepare(cfg, l.get(), &out);
    std::array<std::unique_ptr<child_process>, mode_count> servers;
    bool ran = true;
    try {
        progress("mixed: starting the three servers");
        for (std::size_t m = 0; m < mode_count; ++m) {
            l->servers[m].how = m;
            l->servers[m].port = start_server(cfg, m, server_cpus, &servers[m], &out);
            ran = ran && l->servers[m].port > 0;
        }
    } catch (const std::exception& e) {
        out.problems.push_back(std::string("mixed: starting a server: ") + e.what());
        ran = false;
    }
    ran = ran && run_client(l.get(), &out);
    for (std::size_t m = 0; m < mode_count; ++m) {
        if (servers[m]) stop_server(m, servers[m].get(), &out);
    }
    if (ran) report(*l, &out);
    return out;
}

}  // namespace demo
