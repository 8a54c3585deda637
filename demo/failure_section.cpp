// SPDX-License-Identifier: MIT
// tandem-demo, failure: a pool of worker processes works through 200 offloaded jobs (prime
// counts over ranges below 2,000,000) while two things go wrong on purpose:
//   - a job publishes its worker's pid in a shared_array (the pool's API names no pids, so the
//     job itself tells) and computes; the demo sends that worker SIGKILL from outside, mid-job;
//   - a job that never ends runs under timeout(100 ms).
// What tandem promises (DESIGN.md, CPU offload): exactly the job on the killed worker fails with
// worker_crashed, the one past its timeout with timed_out (its worker is killed), every other
// job completes with the right result, the dead workers are replaced, and a job submitted
// afterwards runs. Every one of those is checked; any deviation is a problem.
#include <tandem/tandem.hpp>

#include "demo.hpp"
#include "section_util.hpp"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace demo {
namespace {

using clock_type = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr long job_count = 200;
constexpr long job_width = 10'000;  // job i counts the primes in [i * width, (i + 1) * width)
constexpr auto hang_timeout = 100ms;
constexpr auto give_up = 10s;  // the longest the victim and the hang may run if nothing stops them

/// A normal job: its worker's pid and the primes in its range.
std::pair<std::int64_t, long> counted_range(long i) {
    return {::getpid(), util::count_primes(i * job_width, (i + 1) * job_width)};
}

/// Spins (a splitmix64 chain) until `until`; returns the chain's value.
std::uint64_t spin_until(clock_type::time_point until) {
    std::uint64_t x = 0;
    while (clock_type::now() < until) {
        for (int i = 0; i < 10'000; ++i) {
            x += 0x9e3779b97f4a7c15;
            x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9;
        }
    }
    return x;
}

/// The victim: says which worker runs it, then computes until it is killed (or gives up).
std::uint64_t victim(tandem::shared_array<std::int64_t> pid_out) {
    // An atomic store into the shared arena: the parent polls it while this job runs.
    std::atomic_ref<std::int64_t>(pid_out[0]).store(::getpid(), std::memory_order_release);
    return spin_until(clock_type::now() + give_up);
}

/// A job that does not end in time (it gives up after give_up, far beyond its timeout).
std::uint64_t hang() {
    return spin_until(clock_type::now() + give_up);
}

enum class fate { ok, worker_crashed, timed_out, other };

struct outcome {
    fate how = fate::other;
    std::int64_t pid = 0;
    long primes = 0;
    std::string what;  // the exception's what(), if any
};

tandem::task<outcome> run_counted(long i) {
    outcome o;
    try {
        auto [pid, primes] = co_await tandem::offload_to_process(counted_range, i);
        o = {fate::ok, pid, primes, {}};
    } catch (const tandem::worker_crashed& e) {
        o = {fate::worker_crashed, 0, 0, e.what()};
    } catch (const std::exception& e) {
        o = {fate::other, 0, 0, e.what()};
    }
    co_return o;
}

tandem::task<outcome> run_victim(tandem::shared_array<std::int64_t> pid_out) {
    outcome o;
    try {
        (void)co_await tandem::offload_to_process(victim, pid_out);
        o = {fate::other, 0, 0, "the victim returned: it was not killed"};
    } catch (const tandem::worker_crashed& e) {
        o = {fate::worker_crashed, 0, 0, e.what()};
    } catch (const std::exception& e) {
        o = {fate::other, 0, 0, e.what()};
    }
    co_return o;
}

tandem::task<outcome> run_hang(clock_type::time_point* ended) {
    outcome o;
    try {
        (void)co_await tandem::timeout(hang_timeout, tandem::offload_to_process(hang));
        o = {fate::other, 0, 0, "the hanging job returned before its timeout"};
    } catch (const tandem::timed_out& e) {
        o = {fate::timed_out, 0, 0, e.what()};
    } catch (const std::exception& e) {
        o = {fate::other, 0, 0, e.what()};
    }
    *ended = clock_type::now();
    co_return o;
}

/// What the killer did.
struct kill_record {
    std::int64_t pid = 0;
    clock_type::time_point at;
    std::string failure;  // why it did not kill, if it did not
};

/// Waits for the victim to publish its worker's pid, lets it compute 5 ms, then SIGKILLs it.
tandem::task<> killer(tandem::shared_array<std::int64_t> pid_in, kill_record* k) {
    const auto deadline = clock_type::now() + give_up;
    std::int64_t pid = 0;
    while (pid == 0 && clock_type::now() < deadline) {
        co_await tandem::sleep_for(1ms);
        pid = std::atomic_ref<std::int64_t>(pid_in[0]).load(std::memory_order_acquire);
    }
    if (pid <= 0 || pid == ::getpid()) {
        k->failure = "the victim job never reported its worker's pid";
        co_return;
    }
    co_await tandem::sleep_for(5ms);  // mid-job
    k->pid = pid;
    k->at = clock_type::now();
    if (::kill(static_cast<pid_t>(pid), SIGKILL) != 0) k->failure = "kill failed";
}

/// Everything the run produced.
struct run_record {
    tandem::process_pool_stats before, after;
    std::vector<outcome> counted;  // job i's outcome at index i
    outcome victim, hang, late;    // late: the job submitted after the recovery
    kill_record kill;
    clock_type::time_point hang_ended;
    bool whole = false;  // the pool was whole again after both deaths, at whole_at
    clock_type::time_point whole_at;
    double recovery_ms = -1;  // from the last kill until the pool was whole again; -1: never
    std::vector<std::string> problems;  // found while running
};

/// Polls the pool's counters every millisecond until it is whole again after both deaths
/// (every worker alive, two replacements made); gives up after 10 s.
tandem::task<> watch_recovery(tandem::process_pool* pool, run_record* r) {
    const auto deadline = clock_type::now() + 10s;
    for (;;) {
        const tandem::process_pool_stats st = pool->stats();
        if (st.workers_alive == st.workers && st.replacements >= r->before.replacements + 2) {
            r->whole_at = clock_type::now();
            r->whole = true;
            co_return;
        }
        if (clock_type::now() > deadline) co_return;
        co_await tandem::sleep_for(1ms);
    }
}

/// The batch: the hang first (it starts at once), 100 jobs, the victim, 100 more, the killer and
/// the watcher.
tandem::task<> run_batch(tandem::process_pool* pool, run_record* r) {
    auto pid_slot = tandem::shared_array<std::int64_t>::allocate(1);
    std::vector<tandem::task<outcome>> first, second;
    for (long i = 0; i < job_count; ++i) {
        (i < job_count / 2 ? first : second).push_back(run_counted(i));
    }
    auto [hang, done1, victim, done2, killed, watched] = co_await tandem::when_all(
        run_hang(&r->hang_ended), tandem::when_all(std::move(first)), run_victim(pid_slot),
        tandem::when_all(std::move(second)), killer(pid_slot, &r->kill), watch_recovery(pool, r));
    (void)killed;
    (void)watched;
    r->hang = std::move(hang);
    r->victim = std::move(victim);
    r->counted = std::move(done1);
    r->counted.insert(r->counted.end(), done2.begin(), done2.end());
}

/// Waits until every worker of a new pool has started; false after 5 s.
tandem::task<bool> wait_for_workers(tandem::process_pool* pool) {
    const auto deadline = clock_type::now() + 5s;
    for (;;) {
        const tandem::process_pool_stats st = pool->stats();
        if (st.workers_alive == st.workers) co_return true;
        if (clock_type::now() > deadline) co_return false;
        co_await tandem::sleep_for(1ms);
    }
}

tandem::task<> run_all(tandem::process_pool* pool, run_record* r) {
    const bool started = co_await wait_for_workers(pool);
    if (!started) r->problems.push_back("the pool's workers did not all start");
    r->before = pool->stats();
    try {
        co_await tandem::timeout(30s, run_batch(pool, r));  // a lost job would hang the batch
    } catch (const tandem::timed_out&) {
        r->problems.push_back("the batch did not finish in 30 s: jobs were lost");
        co_return;
    }
    if (r->whole) {
        const auto last_kill = std::max(r->kill.at, r->hang_ended);
        r->recovery_ms = std::chrono::duration<double, std::milli>(r->whole_at - last_kill).count();
    }
    r->late = co_await run_counted(job_count / 2);
    r->after = pool->stats();
}

struct tally {
    long ok = 0, wrong = 0, crashed = 0, timed_out = 0, other = 0, total_primes = 0;
    std::set<std::int64_t> pids;  // the workers that ran them
    std::string first_failure;
};

/// Checks every counted job against a count made here.
tally check_counted(const run_record& r) {
    tally t;
    for (std::size_t i = 0; i < r.counted.size(); ++i) {
        const outcome& o = r.counted[i];
        const long lo = static_cast<long>(i) * job_width;
        if (o.how == fate::ok && o.primes == util::count_primes(lo, lo + job_width)) {
            ++t.ok;
            t.total_primes += o.primes;
            t.pids.insert(o.pid);
            continue;
        }
        switch (o.how) {
            case fate::ok:
                ++t.wrong;
                break;
            case fate::worker_crashed:
                ++t.crashed;
                break;
            case fate::timed_out:
                ++t.timed_out;
                break;
            case fate::other:
                ++t.other;
                break;
        }
        if (t.first_failure.empty()) {
            t.first_failure =
                "job " + std::to_string(i) + ": " + (o.how == fate::ok ? "a wrong count" : o.what);
        }
    }
    t.other += job_count - static_cast<long>(r.counted.size());  // never came back
    return t;
}

row outcome_row(std::string mode, long got, long expected, std::string note) {
    row r;
    r.mode = std::move(mode);
    r.cells = {{"got", static_cast<double>(got), ""},
               {"expected", static_cast<double>(expected), ""}};
    r.errors = got == expected ? 0 : 1;
    r.note = std::move(note);
    return r;
}

using stat_field = std::uint64_t tandem::process_pool_stats::*;

long grew(const run_record& r, stat_field f) {
    return static_cast<long>(r.after.*f - r.before.*f);
}

/// The job submitted after the recovery: done, with the right count?
bool late_job_correct(const run_record& r) {
    const long lo = job_count / 2 * job_width;
    return r.late.how == fate::ok && r.late.primes == util::count_primes(lo, lo + job_width);
}

void add_rows(const run_record& r, const tally& t, unsigned workers, section* out) {
    const long limit = job_count * job_width;
    const bool late_ok = late_job_correct(r);
    std::string recovered = "never whole again";
    if (r.recovery_ms >= 0) {
        recovered = util::format("whole again %.0f ms after the last kill", r.recovery_ms);
    }
    const long pi = util::known_prime_count(limit);
    const std::string total =
        t.total_primes == pi ? "the known count" : "not the known " + util::grouped(pi);
    out->rows.push_back(outcome_row(
        "jobs completed, result correct", t.ok, job_count,
        util::format("%ld ranges below %s: %s primes in all, %s; on %zu worker pids", job_count,
                     util::grouped(limit).c_str(), util::grouped(t.total_primes).c_str(),
                     total.c_str(), t.pids.size())));
    out->rows.push_back(outcome_row(
        "failed: worker_crashed", (r.victim.how == fate::worker_crashed ? 1 : 0) + t.crashed, 1,
        util::format("the job on pid %lld, SIGKILLed mid-job: \"%s\"",
                     static_cast<long long>(r.kill.pid), r.victim.what.c_str())));
    out->rows.push_back(outcome_row(
        "failed: timed_out", (r.hang.how == fate::timed_out ? 1 : 0) + t.timed_out, 1,
        util::format("a job that never ends, under timeout(%lld ms): \"%s\"",
                     static_cast<long long>(hang_timeout.count()), r.hang.what.c_str())));
    out->rows.push_back(
        outcome_row("lost, wrong or failed otherwise", t.wrong + t.other, 0, t.first_failure));
    out->rows.push_back(outcome_row(
        "workers replaced", grew(r, &tandem::process_pool_stats::replacements), 2,
        util::format("crashes +%ld, kills +%ld; %u of %u alive before, %u after; %s",
                     grew(r, &tandem::process_pool_stats::crashes),
                     grew(r, &tandem::process_pool_stats::kills), r.before.workers_alive, workers,
                     r.after.workers_alive, recovered.c_str())));
    out->rows.push_back(outcome_row(
        "job submitted after, correct", late_ok ? 1 : 0, 1,
        late_ok
            ? util::format("ran on pid %lld; the killed worker was pid %lld",
                           static_cast<long long>(r.late.pid), static_cast<long long>(r.kill.pid))
            : "failed or miscounted: " + r.late.what));
}

/// Every deviation from what tandem promises, as problems.
void add_problems(const run_record& r, const tally& t, unsigned workers, section* out) {
    std::vector<std::string>& p = out->problems;
    for (const std::string& text : r.problems) p.push_back("failure: " + text);
    if (r.victim.how != fate::worker_crashed) {
        p.push_back("failure: the killed job did not fail with worker_crashed: " + r.victim.what);
    }
    if (!r.kill.failure.empty()) p.push_back("failure: " + r.kill.failure);
    if (r.hang.how != fate::timed_out) {
        p.push_back("failure: the job that never ends did not time out: " + r.hang.what);
    }
    if (t.ok != job_count) {
        p.push_back(util::format(
            "failure: %ld of %ld jobs completed correctly (%ld wrong, %ld worker_crashed, %ld "
            "timed_out, %ld other or lost); %s",
            t.ok, job_count, t.wrong, t.crashed, t.timed_out, t.other, t.first_failure.c_str()));
    }
    if (r.recovery_ms < 0 || r.after.workers_alive != workers) {
        p.push_back(util::format("failure: the pool did not recover: %u of %u workers alive",
                                 r.after.workers_alive, workers));
    }
    const long crashes = grew(r, &tandem::process_pool_stats::crashes);
    const long kills = grew(r, &tandem::process_pool_stats::kills);
    const long replaced = grew(r, &tandem::process_pool_stats::replacements);
    if (crashes != 1 || kills != 1 || replaced != 2) {
        p.push_back(util::format(
            "failure: expected 1 crash, 1 kill and 2 replacements; the pool counted %ld, %ld, %ld",
            crashes, kills, replaced));
    }
    const long done = grew(r, &tandem::process_pool_stats::jobs_done);
    if (done != job_count + 1) {
        p.push_back(
            util::format("failure: the pool counted %ld jobs done, not %ld", done, job_count + 1));
    }
    if (!late_job_correct(r)) {
        p.push_back("failure: the job submitted after the recovery failed or miscounted: " +
                    r.late.what);
    }
}

void report(const run_record& r, unsigned workers, section* out) {
    const tally t = check_counted(r);
    add_rows(r, t, workers, out);
    add_problems(r, t, workers, out);
    if (out->problems.empty()) {
        out->takeaway = util::format(
            "a worker SIGKILLed mid-job and a job past its timeout: exactly those 2 of %ld jobs "
            "failed (worker_crashed, timed_out), the other %ld returned correct results, and the "
            "pool was back to %u workers %.0f ms after the last kill",
            job_count + 2, t.ok, workers, r.recovery_ms);
    } else {
        out->takeaway = util::format(
            "%zu deviation(s) from what tandem promises (see the problems): %ld of %ld jobs "
            "correct",
            out->problems.size(), t.ok, job_count);
    }
}

}  // namespace

section run_failure(const config&) {
    section out;
    out.id = "failure";
    out.title = "Failure: a worker killed mid-run";
    out.chart = "";
    const unsigned cores = static_cast<unsigned>(util::usable_cpus().size());
    const unsigned workers = std::clamp(cores, 2u, 8u);
    out.work = util::format(
        "%ld jobs offloaded at once to %u worker processes (%ld prime counts over ranges below "
        "%s, 1 job whose worker the demo SIGKILLs mid-job, 1 job that never ends under "
        "timeout(%lld ms)), then 1 more job",
        job_count + 2, workers, job_count, util::grouped(job_count * job_width).c_str(),
        static_cast<long long>(hang_timeout.count()));
    run_record r;
    try {
        progress("failure: starting a runtime with " + std::to_string(workers) + " workers");
        tandem::runtime_options o = util::base_options();
        o.io_threads = 1;
        o.processes.workers = workers;
        o.processes.arena_bytes = std::size_t{16} << 20;
        tandem::runtime rt(o);
        progress("failure: 202 jobs, one worker killed, one job timed out");
        rt.block_on(run_all(&rt.processes(), &r));
    } catch (const std::exception& e) {
        out.problems.push_back(std::string("failure: ") + e.what());
        return out;
    }
    progress("failure: checking every result");
    report(r, workers, &out);
    return out;
}

}  // namespace demo
