// SPDX-License-Identifier: MIT
// tandem-demo, CPU-bound: counting the primes below N by trial division, in chunks, three ways
// on one runtime:
//   sequential, on the event loop   the chunks one after another in a task: what an async
//                                   program gets if it simply calls the function
//   offload_to_thread               the chunks spread over a pool of threads, one per core
//   offload_to_process              the chunks spread over tandem's worker processes, one per core
// All along, a 1 ms timer ticks on the same event loop; its worst lateness says whether the loop
// stayed free to serve its other tasks (on the loop, the count holds it for the whole run). The
// count must come out the same every way (and equal to pi(N) where the demo knows it).
//
// Also other_child_main: the `--child` entry points of the mixed and failure sections.
#include <tandem/tandem.hpp>

#include "demo.hpp"
#include "section_util.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <exception>
#include <string>
#include <string_view>
#include <vector>

namespace demo {
namespace {

using clock_type = std::chrono::steady_clock;
using namespace std::chrono_literals;

enum class way { sequential, thread, process };
constexpr way ways[] = {way::sequential, way::thread, way::process};
constexpr const char* way_names[] = {"sequential, on the event loop", "offload_to_thread",
                                     "offload_to_process"};

struct settings {
    long limit = 0;   // count the primes below this
    long chunks = 0;  // in this many ranges of equal width
    unsigned cores = 1;
    int rounds = 1;  // each way runs this many times, the ways in turn
};

/// One run of one way.
struct measured {
    long primes = 0;
    double ms = 0;       // the count, start to finish
    double late_ms = 0;  // the 1 ms timer's worst lateness meanwhile
};

long chunk_start(const settings& s, long i) {
    return s.limit / s.chunks * i + std::min(i, s.limit % s.chunks);
}

tandem::task<long> count_on_loop(settings s) {
    long total = 0;
    for (long i = 0; i < s.chunks; ++i) {
        total += util::count_primes(chunk_start(s, i), chunk_start(s, i + 1));
    }
    co_return total;
}

tandem::task<long> count_offloaded(settings s, way w) {
    std::vector<tandem::task<long>> parts;
    for (long i = 0; i < s.chunks; ++i) {
        const long lo = chunk_start(s, i), hi = chunk_start(s, i + 1);
        if (w == way::process) {
            parts.push_back(tandem::offload_to_process(util::count_primes, lo, hi));
        } else {
            parts.push_back(tandem::offload_to_thread(util::count_primes, lo, hi));
        }
    }
    const std::vector<long> counts = co_await tandem::when_all(std::move(parts));
    long total = 0;
    for (long n : counts) total += n;
    co_return total;
}

/// The count, one way; sets *done when it has finished and *ms to how long it took.
tandem::task<long> count(settings s, way w, bool* done, double* ms) {
    co_await tandem::yield();  // the ticker arms its first timer before the count takes the loop
    const auto start = clock_type::now();
    long primes = 0;
    if (w == way::sequential) {
        primes = co_await count_on_loop(s);
    } else {
        primes = co_await count_offloaded(s, w);
    }
    *ms = std::chrono::duration<double, std::milli>(clock_type::now() - start).count();
    *done = true;
    co_return primes;
}

/// Sleeps 1 ms at a time on this loop until *done, noting how late each wake-up came.
tandem::task<> ticker(const bool* done, double* worst_ms) {
    while (!*done) {
        const auto due = clock_type::now() + 1ms;
        co_await tandem::sleep_until(due);
        const double late =
            std::chrono::duration<double, std::milli>(clock_type::now() - due).count();
        *worst_ms = std::max(*worst_ms, late);
    }
}

tandem::task<measured> measure(settings s, way w) {
    bool done = false;
    measured m;
    auto [primes, ticked] =
        co_await tandem::when_all(count(s, w, &done, &m.ms), ticker(&done, &m.late_ms));
    (void)ticked;
    m.primes = primes;
    co_return m;
}

/// The rows, the takeaway and the problems, from every run of every way.
void report(const settings& s, const std::vector<measured> (&runs)[3], section* out) {
    double ms[3] = {}, late[3] = {};
    const long expected = util::known_prime_count(s.limit);
    for (int w = 0; w < 3; ++w) {
        std::vector<double> times;
        row r;
        r.mode = way_names[w];
        for (const measured& m : runs[w]) {
            times.push_back(m.ms);
            late[w] = std::max(late[w], m.late_ms);
            const long want = expected != 0 ? expected : runs[0].front().primes;
            if (m.primes != want) {
                ++r.errors;
                out->problems.push_back(
                    util::format("cpu: %s counted %ld primes below %ld, not %ld", way_names[w],
                                 m.primes, s.limit, want));
            }
        }
        ms[w] = util::median(times);
        const double speedup = ms[w] > 0 ? ms[0] / ms[w] : 0;
        const unsigned used =
            w == 0 ? 1 : std::min<unsigned>(s.cores, static_cast<unsigned>(s.chunks));
        r.cells = {{"time", ms[w], "ms"},
                   {"speed-up", speedup, "x"},
                   {"per core", speedup / used, "x"},
                   {"timer late max", late[w], "ms"}};
        r.note = w == 0 ? "1 core; the loop serves nothing else meanwhile"
                        : util::format("%u %s", used, w == 1 ? "threads" : "worker processes");
        out->rows.push_back(std::move(r));
    }
    const double sp_thread = ms[1] > 0 ? ms[0] / ms[1] : 0;
    const double sp_process = ms[2] > 0 ? ms[0] / ms[2] : 0;
    out->takeaway = util::format(
        "offload_to_process: %.2fx the sequential speed on %u cores (%.2fx per core), and the 1 ms "
        "timer on the loop was at most %.1f ms late, against %.0f ms with the count on the loop "
        "(offload_to_thread: %.2fx, %.1f ms)",
        sp_process, s.cores, sp_process / s.cores, late[2], late[0], sp_thread, late[1]);
}

}  // namespace

section run_cpu(const config& cfg) {
    section out;
    out.id = "cpu";
    out.chart = "speed-up";
    out.higher_is_better = true;
    settings s;
    s.limit = cfg.quick ? 2'000'000 : 5'000'000;
    s.chunks = 40;
    s.cores = static_cast<unsigned>(util::usable_cpus().size());
    s.rounds = 3;  // medians: a shared machine's neighbours take a CPU now and then
    out.title = "CPU-bound: counting the primes below " + util::grouped(s.limit);
    out.work = util::format(
        "primes below %s by trial division in %ld chunks, %u cores (the speed-up is bounded by "
        "the cores); median of %d runs each, the ways in turns; a 1 ms timer ticks on the same "
        "event loop",
        util::grouped(s.limit).c_str(), s.chunks, s.cores, s.rounds);

    std::vector<measured> runs[3];
    try {
        progress("cpu: starting a runtime with " + std::to_string(s.cores) + " worker processes");
        tandem::runtime_options o = util::base_options();
        o.io_threads = 1;
        o.blocking_threads = s.cores;
        o.processes.workers = s.cores;
        o.processes.arena_bytes = std::size_t{16} << 20;  // small jobs: no need for 256 MiB
        tandem::runtime rt(o);
        for (int round = 0; round < s.rounds; ++round) {
            for (int k = 0; k < 3; ++k) {  // each round starts with another way
                const int i = (round + k) % 3;
                const way w = ways[i];
                progress(util::format("cpu: %s (run %d of %d)", way_names[i], round + 1, s.rounds));
                runs[i].push_back(rt.block_on(measure(s, w)));
            }
        }
    } catch (const std::exception& e) {
        out.problems.push_back(std::string("cpu: ") + e.what());
        return out;
    }
    report(s, runs, &out);
    return out;
}

int other_child_main(int argc, char** argv) {
    const std::string_view name = argc > 0 ? argv[0] : "";
    if (name == "mixed-server") return util::mixed_server_main(argc, argv);
    std::fprintf(stderr, "tandem-demo: no child called \"%.*s\"\n", static_cast<int>(name.size()),
                 name.data());
    return 2;
}

}  // namespace demo
