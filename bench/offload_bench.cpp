// SPDX-License-Identifier: MIT
// CPU offload benchmarks: what handing a job to another process costs with
// offload_to_process, next to peers doing the same (offload_peers.hpp): raw_ring
// (the design floor: one child, SPSC rings in shared memory, spin then futex),
// raw_ring_nospin (every hand-off wakes a sleeping CPU), pipe_pool (prefork over
// pipes, 2 workers), std_async (a thread per job), memcpy (the bandwidth
// ceiling), sequential (count_primes here), and python (asyncio +
// ProcessPoolExecutor, read from the file bench/python_pool.py --out writes).
//
// Names are "<who>/<what>". After the usual output a summary pairs tandem/<what>
// with every peer of that <what>, prints the ratio and judges the issue's
// targets; a missing tandem entry prints n/a. Everything is timed in real time
// (the work happens in another process, which the caller's CPU time would leave
// out); peers are made before the timed loop, once per benchmark run.
//
// tandem_epoll/<what> (round_trip, throughput_200k) is tandem with its loop on
// the epoll backend (runtime_options::backend; the workers' completion eventfd
// is read through epoll instead of the ring); a second table sets it against
// tandem on io_uring and the peers.

#include "offload_peers.hpp"

#include <tandem/tandem.hpp>

#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <unistd.h>

using namespace std::chrono_literals;
namespace peers = offload_peers;

namespace {

// ---- shared parameters (the tandem section uses the same) ------------------------------------

constexpr std::size_t throughput_jobs = 200'000;
// Jobs in flight for throughput runs. The raw ring has a single child, so at
// depth 256 it shows the floor of the mechanism itself (batched hand-offs),
// not a pool; the pipe pool splits the same depth over its 2 workers.
constexpr std::size_t pipeline_depth = 256;
constexpr unsigned pool_workers = 2;

struct payload_case {
    const char* what;
    std::size_t bytes;
};
constexpr payload_case payload_cases[] = {
    {"payload_4k", std::size_t{4} << 10},
    {"payload_1m", std::size_t{1} << 20},
    {"payload_64m", std::size_t{64} << 20},
};

constexpr long primes_hi = 1'000'000;
constexpr long primes_chunk = 10'000;
constexpr long primes_expected = 78'498;  // pi(10^6)

void set_throughput_counters(benchmark::State& state) {
    state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(throughput_jobs));
}

/// Bytes per second for the payload; `copies` is how many times the path copies
/// it, so the summary can judge bandwidth per copy against one memcpy.
void set_payload_counters(benchmark::State& state, std::size_t bytes, int copies) {
    state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(bytes));
    state.counters["copies"] = copies;
}

// ---- raw ring -----------------------------------------------------------------------------------

void raw_round_trip(benchmark::State& state, std::chrono::nanoseconds spin) {
    peers::raw_ring ring({.spin = spin, .max_payload = 0});
    ring.round_trip();  // the child is up and has touched the rings
    for (auto _ : state) ring.round_trip();
}

void raw_throughput(benchmark::State& state, std::chrono::nanoseconds spin) {
    peers::raw_ring ring({.spin = spin, .max_payload = 0});
    ring.pipelined(pipeline_depth, pipeline_depth);
    for (auto _ : state) ring.pipelined(throughput_jobs, pipeline_depth);
    set_throughput_counters(state);
}

void raw_payload(benchmark::State& state, std::size_t bytes) {
    peers::raw_ring ring({.spin = 50us, .max_payload = bytes});
    ring.payload(bytes);  // faults in the shared areas and both private buffers
    for (auto _ : state) ring.payload(bytes);
    set_payload_counters(state, bytes, 4);
    if (!ring.payload_ok(bytes)) state.SkipWithError("raw_ring returned a different payload");
}

// ---- pipe pool, std::async, memcpy, sequential --------------------------------------------------

void pipe_round_trip(benchmark::State& state) {
    peers::pipe_pool pool(pool_workers);
    for (unsigned i = 0; i < pool_workers; ++i) pool.round_trip();
    for (auto _ : state) pool.round_trip();
}

void pipe_throughput(benchmark::State& state) {
    peers::pipe_pool pool(pool_workers);
    pool.pipelined(pipeline_depth, pipeline_depth);
    for (auto _ : state) pool.pipelined(throughput_jobs, pipeline_depth);
    set_throughput_counters(state);
}

void pipe_payload(benchmark::State& state, std::size_t bytes) {
    peers::pipe_pool pool(pool_workers);
    for (unsigned i = 0; i < pool_workers; ++i) pool.payload(bytes);
    for (auto _ : state) pool.payload(bytes);
    // write into the pipe, worker reads, worker writes, parent reads.
    set_payload_counters(state, bytes, 4);
    if (!pool.payload_ok(bytes)) state.SkipWithError("pipe_pool returned a different payload");
}

void async_round_trip(benchmark::State& state) {
    for (auto _ : state) peers::async_round_trip();
}

void async_throughput(benchmark::State& state) {
    for (auto _ : state) peers::async_pipelined(throughput_jobs, pipeline_depth);
    set_throughput_counters(state);
}

void memcpy_payload(benchmark::State& state, std::size_t bytes) {
    peers::memcpy_peer m(bytes);
    for (auto _ : state) {
        m.copy();
        benchmark::ClobberMemory();
    }
    set_payload_counters(state, bytes, 1);
    if (!m.ok()) state.SkipWithError("memcpy copied something else");
}

void sequential_primes(benchmark::State& state) {
    long n = 0;
    for (auto _ : state) n = peers::count_primes_reference(0, primes_hi, primes_chunk);
    if (n != primes_expected) state.SkipWithError("count_primes is wrong");
}

// ---- tandem (filled in by the offload_to_process work) ----
//
// Register "tandem/<what>" with the same <what> as the peers and it joins the
// summary; nothing else needs to change:
//   tandem/round_trip        one empty offload_to_process, awaited; ->UseRealTime()
//   tandem/throughput_200k   throughput_jobs empty jobs (in flight: all of them
//                            or pipeline_depth); set_throughput_counters(state)
//   tandem/payload_4k|1m|64m payload_cases[i].bytes of std::byte sent and
//                            returned; set_payload_counters(state, bytes, copies)
//                            with the copies the path makes (the target is
//                            judged per copy against one memcpy)
//   tandem/primes_1m         count_primes over [0, primes_hi) in primes_chunk
//                            pieces spread over the pool; check primes_expected
// Use ->UseRealTime() on all of them, make the runtime before the timed loop
// (iterate the State inside the coroutine, as core_bench does), and keep each
// run short enough for --benchmark_min_time=0.01 (the 200k and 64 MiB cases
// run one iteration there).

/// Arenas as small as each case allows: a large one is pre-faulted in the background for a
/// while after the runtime starts, which would disturb the first timings.
tandem::runtime_options tandem_options(std::size_t arena = std::size_t{16} << 20,
                                       tandem::io_backend backend = tandem::io_backend::io_uring) {
    tandem::runtime_options o;
    o.io_threads = 1;
    o.backend = backend;
    o.processes.workers = pool_workers;
    o.processes.arena_bytes = arena;
    return o;
}

int empty_job() {
    return 0;
}

std::vector<std::byte> echo_job(std::vector<std::byte> v) {
    return v;
}

std::size_t touch_job(tandem::shared_array<std::byte> a) {
    // The first and last bytes: the worker sees the whole array, nothing is copied, and the
    // job's own work does not grow with the size (reading every page would).
    return static_cast<std::size_t>(a[0]) + static_cast<std::size_t>(a[a.size() - 1]);
}

long primes_job(long lo, long hi) {
    return peers::count_primes(lo, hi);
}

tandem::task<> tandem_round_trip_loop(benchmark::State& state) {
    co_await tandem::offload_to_process(empty_job);  // workers up and warm
    for (auto _ : state) benchmark::DoNotOptimize(co_await tandem::offload_to_process(empty_job));
}

void tandem_round_trip(benchmark::State& state, tandem::io_backend backend) {
    tandem::runtime rt(tandem_options(std::size_t{16} << 20, backend));
    rt.block_on(tandem_round_trip_loop(state));
}

tandem::task<std::size_t> many_empty_jobs(std::size_t n) {
    std::vector<tandem::task<int>> jobs;
    jobs.reserve(n);
    for (std::size_t i = 0; i < n; ++i) jobs.push_back(tandem::offload_to_process(empty_job));
    std::size_t done = 0;
    for (int v : co_await tandem::when_all(std::move(jobs))) done += v == 0 ? 1 : 0;
    co_return done;
}

tandem::task<> tandem_throughput_loop(benchmark::State& state) {
    co_await many_empty_jobs(pipeline_depth);
    for (auto _ : state) {
        if (co_await many_empty_jobs(throughput_jobs) != throughput_jobs) {
            state.SkipWithError("a job was lost");
        }
    }
}

void tandem_throughput(benchmark::State& state, tandem::io_backend backend) {
    tandem::runtime rt(tandem_options(std::size_t{16} << 20, backend));
    rt.block_on(tandem_throughput_loop(state));
    set_throughput_counters(state);
}

tandem::task<> tandem_payload_loop(benchmark::State& state, std::size_t bytes) {
    std::vector<std::byte> payload(bytes, std::byte{42});
    auto back = co_await tandem::offload_to_process(echo_job, payload);  // fault in the pages
    for (auto _ : state) {
        back = co_await tandem::offload_to_process(echo_job, payload);
        benchmark::DoNotOptimize(back.data());
    }
    if (back != payload) state.SkipWithError("payload came back changed");
}

void tandem_payload(benchmark::State& state, std::size_t bytes) {
    tandem::runtime rt(tandem_options(2 * bytes + (std::size_t{16} << 20)));
    rt.block_on(tandem_payload_loop(state, bytes));
    // Encode, decode in the worker, encode the result, decode it here.
    set_payload_counters(state, bytes, 4);
}

tandem::task<> tandem_shared_loop(benchmark::State& state, std::size_t bytes) {
    auto array = tandem::shared_array<std::byte>::allocate(bytes);
    (void)co_await tandem::offload_to_process(touch_job, array);
    for (auto _ : state) {
        benchmark::DoNotOptimize(co_await tandem::offload_to_process(touch_job, array));
    }
}

void tandem_shared_payload(benchmark::State& state, std::size_t bytes) {
    tandem::runtime rt(tandem_options(bytes + (std::size_t{16} << 20)));
    rt.block_on(tandem_shared_loop(state, bytes));
    state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(bytes));
}

constexpr long primes_10m = 10'000'000;
constexpr long primes_10m_chunk = 250'000;
constexpr long primes_10m_expected = 664'579;  // pi(10^7)

void sequential_primes_10m(benchmark::State& state) {
    long n = 0;
    for (auto _ : state) n = peers::count_primes_reference(0, primes_10m, primes_10m_chunk);
    if (n != primes_10m_expected) state.SkipWithError("count_primes is wrong");
}

/// Ticks every millisecond on the same loop until *stop; records each tick's lateness.
tandem::task<> ticker(const bool* stop, std::vector<double>* late_us) {
    while (!*stop) {
        const auto due = std::chrono::steady_clock::now() + 1ms;
        co_await tandem::sleep_until(due);
        late_us->push_back(
            std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - due)
                .count());
    }
}

tandem::task<long> primes_offloaded() {
    std::vector<tandem::task<long>> parts;
    for (long lo = 0; lo < primes_10m; lo += primes_10m_chunk) {
        parts.push_back(tandem::offload_to_process(primes_job, lo, lo + primes_10m_chunk));
    }
    long total = 0;
    for (long v : co_await tandem::when_all(std::move(parts))) total += v;
    co_return total;
}

tandem::task<> tandem_primes_loop(benchmark::State& state) {
    std::vector<double> late_us;
    long n = 0;
    for (auto _ : state) {
        bool stop = false;
        auto [total, none] = co_await tandem::when_all(
            [](bool* done) -> tandem::task<long> {
                const long t = co_await primes_offloaded();
                *done = true;
                co_return t;
            }(&stop),
            ticker(&stop, &late_us));
        (void)none;
        n = total;
    }
    if (n != primes_10m_expected) state.SkipWithError("count_primes is wrong");
    std::sort(late_us.begin(), late_us.end());
    if (!late_us.empty()) {
        state.counters["timer_late_p99_us"] = late_us[late_us.size() * 99 / 100];
        state.counters["timer_late_max_us"] = late_us.back();
    }
}

void tandem_primes(benchmark::State& state) {
    tandem::runtime rt(tandem_options());
    rt.block_on(tandem_primes_loop(state));
}

void register_tandem() {
    auto add = [](const std::string& name, auto... fn_and_args) {
        return benchmark::RegisterBenchmark(name.c_str(), fn_and_args...)->UseRealTime();
    };
    const auto ms = benchmark::kMillisecond;
    const auto us = benchmark::kMicrosecond;
    const auto uring = tandem::io_backend::io_uring;
    const auto epoll = tandem::io_backend::epoll;
    add("tandem/round_trip", tandem_round_trip, uring)->Unit(us);
    add("tandem_epoll/round_trip", tandem_round_trip, epoll)->Unit(us);
    add("tandem/throughput_200k", tandem_throughput, uring)->Unit(ms);
    add("tandem_epoll/throughput_200k", tandem_throughput, epoll)->Unit(ms);
    for (const payload_case& c : payload_cases) {
        add(std::string("tandem/") + c.what, tandem_payload, c.bytes)->Unit(us);
        add(std::string("tandem_shared_array/") + c.what, tandem_shared_payload, c.bytes)->Unit(us);
    }
    add("sequential/primes_10m", sequential_primes_10m)->Unit(ms);
    add("tandem/primes_10m", tandem_primes)->Unit(ms);
}

// ---- registration -------------------------------------------------------------------------------

void register_peers() {
    // Every offload benchmark runs in real time: see the top of the file.
    auto add = [](const std::string& name, auto... fn_and_args) {
        return benchmark::RegisterBenchmark(name.c_str(), fn_and_args...)->UseRealTime();
    };
    const auto ms = benchmark::kMillisecond;
    const auto us = benchmark::kMicrosecond;
    add("raw_ring/round_trip", raw_round_trip, 50us)->Unit(us);
    add("raw_ring_nospin/round_trip", raw_round_trip, 0ns)->Unit(us);
    add("pipe_pool/round_trip", pipe_round_trip)->Unit(us);
    add("std_async/round_trip", async_round_trip)->Unit(us);

    // Fixed iterations would not help: one run of these takes 10 ms to 4 s, and
    // --benchmark_min_time=0.01 already stops after the first.
    add("raw_ring/throughput_200k", raw_throughput, 50us)->Unit(ms);
    add("raw_ring_nospin/throughput_200k", raw_throughput, 0ns)->Unit(ms);
    add("pipe_pool/throughput_200k", pipe_throughput)->Unit(ms);
    add("std_async/throughput_200k", async_throughput)->Unit(ms);

    for (const payload_case& c : payload_cases) {
        add(std::string("raw_ring/") + c.what, raw_payload, c.bytes)->Unit(us);
        add(std::string("pipe_pool/") + c.what, pipe_payload, c.bytes)->Unit(us);
        add(std::string("memcpy/") + c.what, memcpy_payload, c.bytes)->Unit(us);
    }
    add("sequential/primes_1m", sequential_primes)->Unit(ms);
}

// ---- summary ------------------------------------------------------------------------------------

// What a row compares: 't' a time in ns (lower is better), 'r' items/s, 'b' payload GB/s.
char kind_of(const std::string& what) {
    return what.rfind("throughput", 0) == 0 ? 'r' : what.rfind("payload", 0) == 0 ? 'b' : 't';
}

double bytes_of(const std::string& what) {
    for (const payload_case& c : payload_cases)
        if (what == c.what) return static_cast<double>(c.bytes);
    return 0;
}

struct value {
    double v = 0;       // as kind_of says
    double copies = 1;  // how often the path copies the payload
};

/// Python's numbers as rows "python/<what>", from what bench/python_pool.py --out wrote:
/// $TANDEM_PYTHON_RESULT, else bench/python_pool_result.txt from the repository root, the
/// build directory or next to this file (__FILE__ is relative to the build directory).
std::map<std::string, value> read_python_result(std::string* path) {
    std::string here = __FILE__;
    here = here.substr(0, here.find_last_of('/') + 1);
    std::vector<std::string> candidates = {"bench/python_pool_result.txt",
                                           "../bench/python_pool_result.txt",
                                           here + "python_pool_result.txt"};
    if (const char* env = std::getenv("TANDEM_PYTHON_RESULT"))
        candidates.insert(candidates.begin(), env);
    std::map<std::string, value> rows;
    for (const std::string& c : candidates) {
        std::ifstream in(c);
        std::string key;
        double v;
        while (in >> key >> v) {
            *path = c;
            if (key == "round_trip_us") rows["python/round_trip"] = {v * 1e3};
            if (key == "jobs_per_s") rows["python/throughput_200k"] = {v};
            if (key == "payload_64m_ms")
                rows["python/payload_64m"] = {bytes_of("payload_64m") / (v * 1e6)};
        }
        if (!path->empty()) break;
    }
    return rows;
}

std::string show(const value* x, char kind) {
    char buf[32] = "n/a";
    if (x == nullptr) return buf;
    if (kind == 'r') std::snprintf(buf, sizeof buf, "%.3f M/s", x->v / 1e6);
    if (kind == 'b') std::snprintf(buf, sizeof buf, "%.2f GB/s", x->v);
    if (kind == 't' && x->v < 1e3) std::snprintf(buf, sizeof buf, "%.0f ns", x->v);
    if (kind == 't' && x->v >= 1e3) std::snprintf(buf, sizeof buf, "%.2f us", x->v / 1e3);
    if (kind == 't' && x->v >= 1e6) std::snprintf(buf, sizeof buf, "%.2f ms", x->v / 1e6);
    return buf;
}

/// The target for tandem against this peer, "" where it sets none.
std::string target(const std::string& what, const std::string& who, const value* t,
                   const value* p) {
    double r = t != nullptr && p != nullptr ? t->v / p->v : 0;
    const char* text = nullptr;
    bool met = false;
    if (what == "round_trip" && who == "raw_ring") text = "tandem <= 3x raw_ring", met = r <= 3;
    if (what == "round_trip" && who == "python")
        text = ">= 200x faster than Python", met = r > 0 && r <= 1.0 / 200, r = r > 0 ? 1 / r : 0;
    if (what == "primes_10m" && who == "sequential")
        text = "speed-up >= 1.8x on 2 workers", met = r > 0 && 1 / r >= 1.8, r = r > 0 ? 1 / r : 0;
    if (what == "throughput_200k" && who == "raw_ring")
        text = "tandem >= 0.25x raw_ring items/s", met = r >= 0.25;
    if (kind_of(what) == 'b' && who == "memcpy") {
        // Judged per copy: a path that copies the payload k times moves k times the bytes.
        r *= t != nullptr ? t->copies : 1;
        text = "copying path >= 0.8x memcpy bandwidth (per copy)", met = r >= 0.8;
    }
    char buf[128] = "";
    if (text != nullptr && r == 0) std::snprintf(buf, sizeof buf, "%s: n/a", text);
    if (text != nullptr && r != 0)
        std::snprintf(buf, sizeof buf, "%s: %s (%.2fx)", text, met ? "met" : "MISSED", r);
    if (text == nullptr && p != nullptr && p->copies > 1)  // how near a copying path can come
        std::snprintf(buf, sizeof buf, "(peer: %.0f copies, %.2f GB/s per copy)", p->copies,
                      p->v * p->copies);
    return buf;
}

/// The console reporter, plus a table pairing tandem/<what> with each peer of the same <what>.
class summary_reporter : public benchmark::ConsoleReporter {
public:
    explicit summary_reporter(bool color) : ConsoleReporter(color ? OO_ColorTabular : OO_Tabular) {}

    void ReportRuns(const std::vector<Run>& runs) override {
        for (const Run& r : runs) {
            // Iterations, or only the median with --benchmark_report_aggregates_only.
            bool median = r.run_type == Run::RT_Aggregate && r.aggregate_name == "median";
            if ((r.run_type != Run::RT_Iteration && !median) || r.error_occurred) continue;
            const std::string& name = r.run_name.function_name;  // without "/real_time"
            const std::string what = name.substr(name.find('/') + 1);
            if (std::find(whats_.begin(), whats_.end(), what) == whats_.end())
                whats_.push_back(what);
            double ns =
                r.GetAdjustedRealTime() * 1e9 / benchmark::GetTimeUnitMultiplier(r.time_unit);
            double copies = counter(r, "copies");
            value x{ns, copies > 0 ? copies : 1};
            if (kind_of(what) == 'r') x.v = counter(r, "items_per_second");
            if (kind_of(what) == 'b') x.v = bytes_of(what) / ns;
            (median ? medians_ : samples_)[name].push_back(x);
        }
        ConsoleReporter::ReportRuns(runs);
    }

    void print_summary() const {
        std::string py_path;
        std::map<std::string, value> rows = read_python_result(&py_path);
        for (const auto* m : {&medians_, &samples_})
            for (const auto& [name, v] : *m) rows[name] = median(v);
        std::printf("\nSummary (real time; median over repetitions; ratio = tandem/peer)\n");
        std::printf("%-16s %-16s %12s %12s %7s  %s\n", "what", "peer", "tandem", "peer", "ratio",
                    "target");
        for (const std::string& what : whats_) {
            auto t_it = rows.find("tandem/" + what);
            const value* t = t_it == rows.end() ? nullptr : &t_it->second;
            for (const auto& [name, p] : rows) {
                const std::string who = name.substr(0, name.find('/'));
                if (who == "tandem" || who == "tandem_epoll") continue;
                if (name.substr(who.size() + 1) != what) continue;
                char ratio[16] = "n/a";
                if (t != nullptr) std::snprintf(ratio, sizeof ratio, "%.2f", t->v / p.v);
                std::printf("%-16s %-16s %12s %12s %7s  %s\n", what.c_str(), who.c_str(),
                            show(t, kind_of(what)).c_str(), show(&p, kind_of(what)).c_str(), ratio,
                            target(what, who, t, &p).c_str());
            }
            if (what == "round_trip" && py_path.empty())
                std::printf(
                    "%-16s %-16s %12s %12s %7s  >= 200x faster than Python: run "
                    "bench/python_pool.py --out bench/python_pool_result.txt\n",
                    what.c_str(), "python", show(t, 't').c_str(), "n/a", "n/a");
        }
        if (!py_path.empty()) std::printf("(python: %s)\n", py_path.c_str());
        print_epoll_summary(rows);
        std::fflush(stdout);
    }

    /// tandem_epoll/<what> against tandem/<what> (io_uring) and every peer of that <what>.
    void print_epoll_summary(const std::map<std::string, value>& rows) const {
        std::printf("\nThe epoll backend (ratio = tandem_epoll/peer, as above)\n");
        std::printf("%-16s %-16s %12s %12s %7s\n", "what", "peer", "tandem_epoll", "peer", "ratio");
        for (const std::string& what : whats_) {
            auto e_it = rows.find("tandem_epoll/" + what);
            if (e_it == rows.end()) continue;
            const value& e = e_it->second;
            for (const auto& [name, p] : rows) {
                const std::string who = name.substr(0, name.find('/'));
                if (who == "tandem_epoll" || name.substr(who.size() + 1) != what) continue;
                std::printf("%-16s %-16s %12s %12s %7.2f\n", what.c_str(), who.c_str(),
                            show(&e, kind_of(what)).c_str(), show(&p, kind_of(what)).c_str(),
                            e.v / p.v);
            }
        }
    }

private:
    static double counter(const Run& r, const char* name) {
        auto it = r.counters.find(name);
        return it == r.counters.end() ? 0 : it->second.value;
    }
    static value median(std::vector<value> v) {
        std::sort(v.begin(), v.end(), [](const value& a, const value& b) { return a.v < b.v; });
        return v[v.size() / 2];
    }

    std::vector<std::string> whats_;  // in the order they ran
    std::map<std::string, std::vector<value>> samples_, medians_;
};

}  // namespace

int main(int argc, char** argv) {
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    benchmark::AddCustomContext("offload peers",
                                "raw_ring spin 50 us; pipe_pool 2 workers; depth 256");
    register_peers();
    register_tandem();
    summary_reporter reporter(isatty(STDOUT_FILENO) != 0);
    benchmark::RunSpecifiedBenchmarks(&reporter);
    reporter.print_summary();
    benchmark::Shutdown();
    return 0;
}
