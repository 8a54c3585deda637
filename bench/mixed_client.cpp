// SPDX-License-Identifier: MIT
// mixed_client: the load generator of the mixed workload (examples/mixed_server.cpp,
// bench/mixed_bench.cpp). Open loop, so that a slow server cannot slow the load down and hide
// its own stalls (coordinated omission): every request has a due time fixed in advance, it is
// sent then whether or not earlier replies have come back, and its latency runs from that due
// time (not from when the client got round to sending it) to the arrival of its reply.
//
// Arrivals are a Poisson process at --rate (exponential gaps from a seeded generator), request
// i going out on connection i mod N. Not evenly spaced: at 4,000 requests/s a request comes
// every 250 us, so a 200 us stall of the server would end before the next one ever arrived
// and inline work would look free (--uniform shows it); independent clients do not take turns
// like that. A seeded generator makes 10 % of the requests heavy (the server hashes a 4 KiB
// block `passes` times: about 200 us); every reply is checked: the cheap answer, or the hash
// of one of 64 seeds whose hashes the client computed at start.
//
// The rate: 4,000 requests/s by default. 10 % heavy at 200 us is 80 ms of CPU work per second,
// and the client costs 15-25 % of a CPU here (it reports its share, client_cpu; most of it is
// the kernel's loopback TCP and sleeping/waking in io_uring_enter): both CPUs of the 2-vCPU
// test machine stay mostly idle, so the cheap requests' p99 shows where the CPU work ran, not
// a saturated machine. Per connection that is 40 requests/s at 100 connections, 4 at 1,000.
//
// Windows: --windows K measures K windows of --duration seconds each (WINDOW lines, then
// RESULT over all of them), after --warmup seconds of unmeasured load. --interleave measures
// in one slot of each pair of --duration slots (--phase 0: the first, 1: the second; with
// --order-seed N the order of each pair is drawn from N instead) from --start-at (a
// CLOCK_MONOTONIC time in ns): two clients started alike against two servers take turns,
// which is how mixed_bench compares a server with the baseline on a shared machine.
//
// Written with tandem: one io thread, two coroutines per connection (a sender sleeping until
// each due time, a receiver matching replies to requests in order).
//
// Run: build/bench/mixed_peers/mixed_client --port P [--connections 100] [--rate 4000]
//          [--duration 2] [--warmup 0.5] [--heavy-percent 10] [--passes N] [--seed 1]
//          [--uniform] [--windows K [--interleave --phase 0|1 --start-at NS [--order-seed N]]]
//      build/bench/mixed_peers/mixed_client --calibrate [--work-us 200]   (prints PASSES n)
// Output lines (mixed_bench reads them; latencies in us, of requests due in the window):
//   WINDOW k cheap=N cheap_p50_us= cheap_p90_us= cheap_p99_us= cheap_p999_us= heavy=N
//            heavy_p50_us= heavy_p99_us= req_per_s= lag_p99_us=     (with --windows > 1)
//   RESULT  the same over all windows, then offered_per_s= client_cpu= wrong=N skipped=N
//           io_errors=N lost=N
// --latency-file PATH: every measured latency, as binary {int16 window, int16 heavy, float us}.
// lag_p99_us: how late the client itself sent (its own share of the latency). skipped: heavy
// requests answered without the hash (right for --mode none). Exit status 1 on any wrong
// reply, I/O error or lost reply.
#include <tandem/tandem.hpp>

#include "../examples/mixed_protocol.hpp"

#include <sys/resource.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <string>
#include <vector>

namespace {

using clock_type = std::chrono::steady_clock;

using namespace mixed;  // the server's protocol and hash (examples/mixed_protocol.hpp)

// ---- settings and the schedule ---------------------------------------------------------------

struct settings {
    std::uint16_t port = 0;
    unsigned connections = 100;
    double rate = 4000;   // requests per second, all connections together
    double duration = 2;  // seconds per measured window
    unsigned windows = 1;
    bool interleave = false;  // windows in every other slot (from `phase`), idle in between
    unsigned phase = 0;
    std::uint64_t order_seed =
        0;  // interleaved: 0 alternates strictly, else draws each pair's order
    std::int64_t start_at_ns = 0;  // steady_clock time of slot 0; 0: just after connecting
    double warmup = 0.5;           // seconds of load before the first window, not measured
    double drain = 2;  // seconds after the last due time before missing replies count as lost
    unsigned heavy_percent = 10;
    std::uint32_t passes = 0;  // 0: calibrate for work_us
    double work_us = 200;
    std::uint64_t seed = 1;
    bool uniform = false;      // evenly spaced arrivals instead of a Poisson process
    std::string latency_file;  // where to write every measured latency (latency_record)
    bool calibrate = false;
};

constexpr std::size_t heavy_seeds = 64;

/// Who sends what when. Time is cut into slots of `duration`; this client measures in slot
/// phase, phase + stride, ... (stride 2 when interleaved with another client), after `warmup`
/// seconds of load just before its first window. Immutable once the load starts.
struct plan {
    settings s;
    clock_type::time_point t0;                 // slot 0
    std::vector<clock_type::time_point> dues;  // request i's due time, in order
    std::vector<int> windows;                  // request i's window; -1: warm-up
    std::array<std::uint64_t, heavy_seeds> seeds{}, hashes{};

    clock_type::duration seconds(double x) const {
        return std::chrono::duration_cast<clock_type::duration>(std::chrono::duration<double>(x));
    }
    clock_type::time_point slot_start(std::uint64_t window) const {
        std::uint64_t slot = window;
        if (s.interleave) {
            // Window k is in slot 2k or 2k + 1. Which client goes first is drawn per pair (the
            // same draw in both): nothing periodic on the machine then favours one of them.
            const std::uint64_t first =
                s.order_seed != 0 ? splitmix64(s.order_seed + window) & 1 : 0;
            slot = 2 * window + (s.phase ^ first);
        }
        return t0 + seconds(static_cast<double>(slot) * s.duration);
    }
};

/// A request sent and not yet answered.
struct in_flight {
    clock_type::time_point due;
    std::uint64_t seed;
    int heavy;   // index into plan::seeds, or -1 for a cheap request
    int window;  // -1: warm-up
};

struct connection {
    tandem::tcp_stream stream;
    std::deque<in_flight> queue;  // in sending order: replies come back in that order
};

/// What one window measured.
struct window_tally {
    std::vector<float> cheap_us, heavy_us, lag_us;
    std::uint64_t answered = 0;
};

/// What the load measured (one io thread: no locking).
struct tally {
    std::vector<window_tally> windows;
    std::uint64_t wrong = 0, skipped = 0, io_errors = 0, lost = 0, sent = 0, received = 0;
    double cpu_s = 0;
};

// ---- the load --------------------------------------------------------------------------------

void check(const plan& p, const in_flight& f, const reply& r, clock_type::time_point now,
           tally* t) {
    const bool right = r.hashed != 0 ? f.heavy >= 0 && r.value == p.hashes[f.heavy]
                                     : r.value == splitmix64(f.seed);
    if (!right) ++t->wrong;
    if (f.heavy >= 0 && r.hashed == 0) ++t->skipped;  // the `none` server answers cheaply
    if (f.window < 0) return;
    window_tally& w = t->windows[f.window];
    ++w.answered;
    const float us = std::chrono::duration<float, std::micro>(now - f.due).count();
    (f.heavy >= 0 ? w.heavy_us : w.cheap_us).push_back(us);
}

tandem::task<> sender(connection* c, std::uint64_t first, const plan* p, tally* t) {
    try {
        for (std::uint64_t i = first; i < p->dues.size(); i += p->s.connections) {
            const clock_type::time_point due = p->dues[i];
            const int window = p->windows[i];
            co_await tandem::sleep_until(due);
            const std::uint64_t u = splitmix64(p->s.seed * 0x100000000 + i);
            const bool heavy = u % 100 < p->s.heavy_percent;
            const int index = heavy ? static_cast<int>((u >> 32) % heavy_seeds) : -1;
            const request rq{heavy ? 1u : 0u, p->s.passes, heavy ? p->seeds[index] : u};
            c->queue.push_back({due, rq.seed, index, window});
            if (window >= 0) {
                t->windows[window].lag_us.push_back(
                    std::chrono::duration<float, std::micro>(clock_type::now() - due).count());
            }
            ++t->sent;
            co_await c->stream.write_all(std::as_bytes(std::span(&rq, 1)));
        }
    } catch (const tandem::operation_cancelled&) {
        // the drain deadline passed: what is missing counts as lost
    } catch (const std::exception&) {
        ++t->io_errors;
    }
}

tandem::task<> receiver(connection* c, std::uint64_t expected, const plan* p, tally* t) {
    std::array<std::byte, 4096> buf;
    std::size_t have = 0;
    try {
        for (std::uint64_t got = 0; got < expected;) {
            const std::size_t n = co_await c->stream.read_some(std::span(buf).subspan(have));
            if (n == 0) throw std::runtime_error("the server closed the connection");
            const clock_type::time_point now = clock_type::now();
            have += n;
            std::size_t used = 0;
            for (; have - used >= sizeof(reply); used += sizeof(reply), ++got) {
                reply r;
                std::memcpy(&r, buf.data() + used, sizeof r);
                if (c->queue.empty()) throw std::runtime_error("a reply to no request");
                check(*p, c->queue.front(), r, now, t);
                c->queue.pop_front();
                ++t->received;
            }
            std::memmove(buf.data(), buf.data() + used, have - used);
            have -= used;
        }
    } catch (const tandem::operation_cancelled&) {
    } catch (const std::exception& e) {
        if (t->io_errors++ == 0) std::fprintf(stderr, "mixed_client: %s\n", e.what());
    }
}

double cpu_seconds() {
    rusage ru{};
    ::getrusage(RUSAGE_SELF, &ru);
    auto s = [](timeval tv) { return static_cast<double>(tv.tv_sec) + tv.tv_usec / 1e6; };
    return s(ru.ru_utime) + s(ru.ru_stime);
}

/// The CPU time from the first window's start to the last one's end.
tandem::task<> sample_cpu(const plan* p, tally* t) {
    co_await tandem::sleep_until(p->slot_start(0));
    const double start = cpu_seconds();
    co_await tandem::sleep_until(p->slot_start(p->s.windows - 1) + p->seconds(p->s.duration));
    t->cpu_s = cpu_seconds() - start;
}

tandem::task<std::vector<std::unique_ptr<connection>>> connect_all(unsigned n, std::uint16_t port) {
    std::vector<tandem::task<tandem::tcp_stream>> connects;
    for (unsigned i = 0; i < n; ++i) {
        connects.push_back(tandem::tcp_stream::connect(tandem::address::loopback(port)));
    }
    std::vector<std::unique_ptr<connection>> all;
    for (tandem::tcp_stream& s : co_await tandem::when_all(std::move(connects))) {
        all.push_back(std::make_unique<connection>());
        all.back()->stream = std::move(s);
    }
    co_return all;
}

/// Appends the arrivals of [from, from + seconds) to the schedule: a Poisson process (gaps
/// drawn from an exponential distribution, seeded), or evenly spaced with --uniform.
void add_arrivals(plan* p, clock_type::time_point from, double seconds, int window) {
    for (double t = 0;;) {
        const std::uint64_t u = splitmix64(p->s.seed * 0x1000000 + 0xa221 + p->dues.size());
        const double uniform = (static_cast<double>(u >> 11) + 1) * 0x1p-53;  // (0, 1]
        t += p->s.uniform ? 1 / p->s.rate : -std::log(uniform) / p->s.rate;
        if (t >= seconds) return;
        p->dues.push_back(from + p->seconds(t));
        p->windows.push_back(window);
    }
}

/// Fixes the schedule once the connections are up.
void make_schedule(plan* p) {
    const settings& s = p->s;
    const auto soon = clock_type::now() + std::chrono::milliseconds(20);
    p->t0 = s.start_at_ns != 0 ? clock_type::time_point(std::chrono::nanoseconds(s.start_at_ns))
                               : soon + p->seconds(s.warmup);
    const clock_type::time_point first = p->slot_start(0) - p->seconds(s.warmup);
    if (first < soon) {
        std::fprintf(stderr, "mixed_client: connecting took too long: starting %.0f ms late\n",
                     std::chrono::duration<double, std::milli>(soon - first).count());
    }
    add_arrivals(p, first, s.warmup, -1);
    for (unsigned k = 0; k < s.windows; ++k) {
        add_arrivals(p, p->slot_start(k), s.duration, static_cast<int>(k));
    }
}

tandem::task<> run_load(plan* p, tally* t) {
    std::vector<std::unique_ptr<connection>> conns =
        co_await connect_all(p->s.connections, p->s.port);
    make_schedule(p);
    t->windows.resize(p->s.windows);
    std::vector<tandem::task<>> parts;
    const std::uint64_t n = p->s.connections;
    for (std::uint64_t c = 0; c < n; ++c) {
        const std::uint64_t total = p->dues.size();
        const std::uint64_t expected = c < total ? (total - c + n - 1) / n : 0;
        parts.push_back(sender(conns[c].get(), c, p, t));
        parts.push_back(receiver(conns[c].get(), expected, p, t));
    }
    parts.push_back(sample_cpu(p, t));
    const auto end = p->slot_start(p->s.windows - 1) + p->seconds(p->s.duration + p->s.drain);
    try {
        co_await tandem::timeout(end - clock_type::now(), tandem::when_all(std::move(parts)));
    } catch (const tandem::timed_out&) {
    }
    t->lost = t->sent - t->received;
    for (auto& c : conns) c->stream.close();
}

// ---- reporting -------------------------------------------------------------------------------

/// The q-quantile (nearest rank) of v, 0 if empty; v must be sorted.
double quantile(const std::vector<float>& v, double q) {
    if (v.empty()) return 0;
    const auto rank = static_cast<std::size_t>(std::ceil(q * static_cast<double>(v.size())));
    return v[std::clamp<std::size_t>(rank, 1, v.size()) - 1];
}

/// "cheap=N cheap_p50_us=X ... lag_p99_us=X" for a window (or all of them merged).
void print_window(const char* tag, window_tally& w, double seconds) {
    for (auto* v : {&w.cheap_us, &w.heavy_us, &w.lag_us}) std::sort(v->begin(), v->end());
    std::printf(
        "%s cheap=%zu cheap_p50_us=%.1f cheap_p90_us=%.1f cheap_p99_us=%.1f "
        "cheap_p999_us=%.1f heavy=%zu "
        "heavy_p50_us=%.1f heavy_p99_us=%.1f req_per_s=%.1f lag_p99_us=%.1f",
        tag, w.cheap_us.size(), quantile(w.cheap_us, 0.5), quantile(w.cheap_us, 0.9),
        quantile(w.cheap_us, 0.99), quantile(w.cheap_us, 0.999), w.heavy_us.size(),
        quantile(w.heavy_us, 0.5), quantile(w.heavy_us, 0.99),
        static_cast<double>(w.answered) / seconds, quantile(w.lag_us, 0.99));
}

void report(const plan& p, tally& t) {
    window_tally all;
    for (std::size_t k = 0; k < t.windows.size(); ++k) {
        window_tally& w = t.windows[k];
        for (auto [from, to] : {std::pair{&w.cheap_us, &all.cheap_us},
                                {&w.heavy_us, &all.heavy_us},
                                {&w.lag_us, &all.lag_us}}) {
            to->insert(to->end(), from->begin(), from->end());
        }
        all.answered += w.answered;
        if (t.windows.size() > 1) {
            print_window(("WINDOW " + std::to_string(k)).c_str(), w, p.s.duration);
            std::printf("\n");
        }
    }
    const double seconds = p.s.duration * static_cast<double>(p.s.windows);
    std::printf("# %u connections, %.0f requests/s, %u %% heavy (%u passes), %u x %.2f s%s\n",
                p.s.connections, p.s.rate, p.s.heavy_percent, p.s.passes, p.s.windows, p.s.duration,
                p.s.interleave ? " (every other slot)" : "");
    print_window("RESULT", all, seconds);
    std::printf(
        " offered_per_s=%.1f client_cpu=%.4f wrong=%llu skipped=%llu io_errors=%llu "
        "lost=%llu\n",
        p.s.rate, t.cpu_s / seconds, static_cast<unsigned long long>(t.wrong),
        static_cast<unsigned long long>(t.skipped), static_cast<unsigned long long>(t.io_errors),
        static_cast<unsigned long long>(t.lost));
}

/// One measured request in the --latency-file, so that mixed_bench can pool windows.
struct latency_record {
    std::int16_t window;
    std::int16_t heavy;
    float us;
};

bool write_latencies(const std::string& path, const tally& t) {
    std::FILE* f = std::fopen(path.c_str(), "wb");
    if (f == nullptr) return false;
    bool ok = true;
    for (std::size_t k = 0; k < t.windows.size(); ++k) {
        for (int heavy = 0; heavy < 2; ++heavy) {
            for (float us : heavy != 0 ? t.windows[k].heavy_us : t.windows[k].cheap_us) {
                const latency_record r{static_cast<std::int16_t>(k),
                                       static_cast<std::int16_t>(heavy), us};
                ok = ok && std::fwrite(&r, sizeof r, 1, f) == 1;
            }
        }
    }
    return std::fclose(f) == 0 && ok;
}

// ---- main ------------------------------------------------------------------------------------

/// Passes of heavy_hash that take `work_us` on this machine (the median of 15 timings).
std::uint32_t calibrate(double work_us) {
    constexpr std::uint32_t probe = 100;
    std::vector<double> us;
    std::uint64_t sink = 0;
    for (int i = 0; i < 15; ++i) {
        const auto start = clock_type::now();
        sink += heavy_hash(static_cast<std::uint64_t>(i), probe);
        us.push_back(std::chrono::duration<double, std::micro>(clock_type::now() - start).count());
    }
    std::nth_element(us.begin(), us.begin() + 7, us.end());
    const double per_pass = us[7] / probe + static_cast<double>(sink & 1) * 1e-12;
    return std::max<std::uint32_t>(1, static_cast<std::uint32_t>(std::lround(work_us / per_pass)));
}

void usage(std::FILE* to) {
    std::fprintf(to,
                 "usage: mixed_client --port P [--connections N] [--rate R] [--duration S]\n"
                 "                    [--warmup S] [--heavy-percent P] [--passes N | --work-us U]\n"
                 "                    [--seed N] [--uniform] [--latency-file PATH]\n"
                 "                    [--windows K [--interleave --phase 0|1 --start-at NS\n"
                 "                    [--order-seed N]]]\n"
                 "       mixed_client --calibrate [--work-us 200]   (prints PASSES n)\n");
}

/// Parses argv into *s; returns -1 to go on, else the exit status.
int parse(int argc, char** argv, settings* s) {
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--help" || a == "-h") return usage(stdout), 0;
        if (a == "--calibrate" || a == "--interleave" || a == "--uniform") {
            (a == "--calibrate" ? s->calibrate
             : a == "--uniform" ? s->uniform
                                : s->interleave) = true;
            continue;
        }
        if (i + 1 >= argc) return usage(stderr), 2;
        const char* text = argv[++i];
        const double v = std::atof(text);
        if (a == "--port")
            s->port = static_cast<std::uint16_t>(v);
        else if (a == "--connections")
            s->connections = std::max(1u, static_cast<unsigned>(v));
        else if (a == "--rate")
            s->rate = std::max(1.0, v);
        else if (a == "--duration")
            s->duration = std::max(0.01, v);
        else if (a == "--windows")
            s->windows = std::max(1u, static_cast<unsigned>(v));
        else if (a == "--order-seed")
            s->order_seed = std::strtoull(text, nullptr, 10);
        else if (a == "--phase")
            s->phase = static_cast<unsigned>(v) % 2;
        else if (a == "--start-at")
            s->start_at_ns = std::strtoll(text, nullptr, 10);
        else if (a == "--warmup")
            s->warmup = std::max(0.0, v);
        else if (a == "--heavy-percent")
            s->heavy_percent = std::min(100u, static_cast<unsigned>(v));
        else if (a == "--passes")
            s->passes = static_cast<std::uint32_t>(v);
        else if (a == "--work-us")
            s->work_us = v;
        else if (a == "--latency-file")
            s->latency_file = text;
        else if (a == "--seed")
            s->seed = static_cast<std::uint64_t>(v);
        else
            return usage(stderr), 2;
    }
    if (!s->calibrate && s->port == 0) return usage(stderr), 2;
    return -1;
}

}  // namespace

int main(int argc, char** argv) {
    auto p = std::make_unique<plan>();
    if (const int status = parse(argc, argv, &p->s); status >= 0) return status;
    if (p->s.passes == 0) p->s.passes = calibrate(p->s.work_us);
    if (p->s.calibrate) {
        std::printf("PASSES %u\n", p->s.passes);
        return 0;
    }
    for (std::size_t k = 0; k < heavy_seeds; ++k) {
        p->seeds[k] = splitmix64(p->s.seed ^ (0xabcdef0000 + k));
        p->hashes[k] = heavy_hash(p->seeds[k], p->s.passes);
    }
    rlimit files{};
    ::getrlimit(RLIMIT_NOFILE, &files);
    files.rlim_cur = files.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &files);
    tally t;
    try {
        tandem::runtime_options o;
        o.processes.enabled = false;
        tandem::run(run_load(p.get(), &t), o);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "mixed_client: %s\n", e.what());
        return 1;
    }
    if (!p->s.latency_file.empty() && !write_latencies(p->s.latency_file, t)) {
        std::fprintf(stderr, "mixed_client: cannot write %s\n", p->s.latency_file.c_str());
        return 1;
    }
    report(*p, t);
    return t.wrong + t.io_errors + t.lost == 0 ? 0 : 1;
}
