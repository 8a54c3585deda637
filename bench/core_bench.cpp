// SPDX-License-Identifier: MIT
// Foundation benchmarks: what tandem's core costs (a task, a resume through the
// loop, when_all, a hop between loops, timers, one io_uring operation) next to
// a peer doing the same thing: Asio's C++20 coroutines, or raw liburing with the
// ring set up exactly as tandem sets up its own (lib/ring_setup.cpp).
//
// Names are "<who>/<what>"; after the normal Google Benchmark output a summary
// pairs each tandem/<what> with its peer and prints the ratio, the difference
// and the target where the issue sets one.
//
// tandem/<what> runs on io_uring (runtime_options::backend = io_uring);
// tandem_epoll/<what> is the same code on the epoll fallback, for what goes
// through the loop: yield, hop_round_trip, sleep_0, sleepers_100k and the NOPs.
// (task_await, when_all_10 and timeout_not_fired never wait on the loop, so
// the backend cannot change them.) The epoll backend interprets a NOP in user
// space, with no system call: its nop_* rows show the loop's own overhead per
// operation, not an I/O path. A second table prints tandem_epoll against
// tandem on io_uring and against Asio, whose reactor is epoll too.
//
// How the tandem numbers are taken: the benchmark function starts a runtime
// and runs one coroutine on an io thread; that coroutine iterates the
// benchmark::State itself, so the timed loop contains only the operation, not
// the cost of reaching the loop. The Asio peers do the same inside co_spawn on
// an io_context run by the benchmark thread.

#include <tandem/combinators.hpp>
#include <tandem/detail/loop_api.hpp>
#include <tandem/runtime.hpp>
#include <tandem/task.hpp>
#include <tandem/time.hpp>

#include "loop.hpp"
#include "ring_setup.hpp"
#include "uring_op.hpp"

// Asio 1.22 turns co_await on for clang only when it finds libc++'s
// <experimental/coroutine>; clang with libstdc++'s <coroutine> works as well.
#if defined(__clang__) && !defined(ASIO_HAS_CO_AWAIT) && __has_include(<coroutine>)
#define ASIO_HAS_CO_AWAIT 1
#endif
#include <benchmark/benchmark.h>
#include <liburing.h>
#include <asio.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/experimental/deferred.hpp>
#include <asio/experimental/parallel_group.hpp>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <map>
#include <new>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <unistd.h>

using namespace std::chrono_literals;

namespace {

// ---- shared helpers -----------------------------------------------------------

using tandem::io_backend;

tandem::runtime_options one_io_thread(io_backend backend = io_backend::io_uring) {
    tandem::runtime_options o;
    o.io_threads = 1;
    o.backend = backend;
    return o;
}

tandem::runtime_options two_io_threads(io_backend backend) {
    tandem::runtime_options o;
    o.io_threads = 2;
    o.backend = backend;
    return o;
}

/// Runs an Asio coroutine to completion on a fresh io_context on this thread.
template <class Awaitable>
void asio_run(Awaitable a) {
    asio::io_context ctx(1);
    asio::co_spawn(ctx, std::move(a), asio::detached);
    ctx.run();
}

/// A ring set up by tandem's own code, so the raw peers use the same flags
/// (SUBMIT_ALL | COOP_TASKRUN | TASKRUN_FLAG | SINGLE_ISSUER | DEFER_TASKRUN,
/// CQ four times the SQ) and the same 1024 SQ entries as runtime_options.
struct raw_ring {
    io_uring ring{};
    std::string features;
    raw_ring() { features = tandem::detail::setup_ring(&ring, 1024).description; }
    ~raw_ring() { io_uring_queue_exit(&ring); }
    raw_ring(const raw_ring&) = delete;
    raw_ring& operator=(const raw_ring&) = delete;

    io_uring_sqe* sqe() {
        for (;;) {
            if (io_uring_sqe* s = io_uring_get_sqe(&ring)) return s;
            io_uring_submit(&ring);
        }
    }

    /// Reaps every CQE that is there; returns how many, and counts results
    /// other than `expected` into *wrong.
    unsigned reap(int expected, std::size_t* wrong) {
        unsigned head;
        unsigned seen = 0;
        io_uring_cqe* cqe;
        io_uring_for_each_cqe(&ring, head, cqe) {
            ++seen;
            if (cqe->res != expected) ++*wrong;
        }
        io_uring_cq_advance(&ring, seen);
        return seen;
    }
};

// ---- 1. task create + await + destroy -------------------------------------------

tandem::task<int> tandem_trivial(int x) {
    co_return x + 1;
}
asio::awaitable<int> asio_trivial(int x) {
    co_return x + 1;
}

void tandem_task_await(benchmark::State& state) {
    tandem::run(
        [](benchmark::State* s) -> tandem::task<> {
            int x = 0;
            for (auto _ : *s) x = co_await tandem_trivial(x);
            benchmark::DoNotOptimize(x);
        }(&state),
        one_io_thread());
}

void asio_task_await(benchmark::State& state) {
    asio_run([](benchmark::State* s) -> asio::awaitable<void> {
        int x = 0;
        for (auto _ : *s) x = co_await asio_trivial(x);
        benchmark::DoNotOptimize(x);
    }(&state));
}

// What one operator new + operator delete of a task frame's size costs here.
void probe_new_delete_frame(benchmark::State& state) {
    const auto n = static_cast<std::size_t>(state.range(0));
    for (auto _ : state) {
        void* p = ::operator new(n);
        benchmark::DoNotOptimize(p);
        ::operator delete(p);
    }
}

// ---- 2. resume through the loop ---------------------------------------------------

void tandem_yield(benchmark::State& state, io_backend backend) {
    tandem::run(
        [](benchmark::State* s) -> tandem::task<> {
            for (auto _ : *s) co_await tandem::yield();
        }(&state),
        one_io_thread(backend));
}

// yield() is an out-of-line task<>: each call also creates and frees a frame.
// This is the awaiter inside it alone (schedule + one loop turn).
void proto_yield_awaiter(benchmark::State& state) {
    tandem::run(
        [](benchmark::State* s) -> tandem::task<> {
            for (auto _ : *s) co_await tandem::detail::yield_awaiter{};
        }(&state),
        one_io_thread());
}

void asio_yield(benchmark::State& state) {
    asio_run([](benchmark::State* s) -> asio::awaitable<void> {
        auto ex = co_await asio::this_coro::executor;
        for (auto _ : *s) co_await asio::post(ex, asio::use_awaitable);
    }(&state));
}

// ---- 3. when_all of 10 trivial tasks ------------------------------------------------

template <std::size_t... I>
tandem::task<int> tandem_when_all_10(std::index_sequence<I...>) {
    auto r = co_await tandem::when_all(tandem_trivial(static_cast<int>(I))...);
    co_return std::get<0>(r);
}

template <std::size_t... I>
asio::awaitable<int> asio_when_all_10(std::index_sequence<I...>) {
    auto ex = co_await asio::this_coro::executor;
    auto r =
        co_await asio::experimental::make_parallel_group(
            asio::co_spawn(ex, asio_trivial(static_cast<int>(I)), asio::experimental::deferred)...)
            .async_wait(asio::experimental::wait_for_all(), asio::use_awaitable);
    co_return std::get<2>(r);  // (order, exception_ptr, int, exception_ptr, int, ...)
}

void tandem_when_all(benchmark::State& state) {
    tandem::run(
        [](benchmark::State* s) -> tandem::task<> {
            int x = 0;
            for (auto _ : *s) x += co_await tandem_when_all_10(std::make_index_sequence<10>{});
            benchmark::DoNotOptimize(x);
        }(&state),
        one_io_thread());
}

void asio_when_all(benchmark::State& state) {
    asio_run([](benchmark::State* s) -> asio::awaitable<void> {
        int x = 0;
        for (auto _ : *s) x += co_await asio_when_all_10(std::make_index_sequence<10>{});
        benchmark::DoNotOptimize(x);
    }(&state));
}

// ---- 4. a hop to the other loop and back ----------------------------------------------

void tandem_hop(benchmark::State& state, io_backend backend) {
    tandem::runtime rt(two_io_threads(backend));
    tandem::detail::loop* a = tandem::detail_loop_of(rt, 0);
    tandem::detail::loop* b = tandem::detail_loop_of(rt, 1);
    rt.block_on([](benchmark::State* s, tandem::detail::loop* a,
                   tandem::detail::loop* b) -> tandem::task<> {
        tandem::detail::loop* home = tandem::detail::current_loop();
        tandem::detail::loop* other = home == a ? b : a;
        for (auto _ : *s) {
            co_await tandem::detail::hop_to{other};
            co_await tandem::detail::hop_to{home};
        }
    }(&state, a, b));
}

// asio::post(other, use_awaitable) runs an empty handler on `other`'s thread,
// then dispatches the completion back to the coroutine's own executor: the
// same round trip between two event loops on two threads.
void asio_hop(benchmark::State& state) {
    asio::io_context home_ctx(1);
    asio::io_context other_ctx(1);
    auto guard = asio::make_work_guard(other_ctx);
    std::thread other_thread([&] { other_ctx.run(); });
    asio::co_spawn(
        home_ctx,
        [](benchmark::State* s, asio::io_context* other) -> asio::awaitable<void> {
            for (auto _ : *s) co_await asio::post(other->get_executor(), asio::use_awaitable);
        }(&state, &other_ctx),
        asio::detached);
    home_ctx.run();
    guard.reset();
    other_thread.join();
}

// ---- 5. timers ------------------------------------------------------------------------

// A deadline that never fires: arm and disarm the heap timer around a task.
void tandem_timeout_not_fired(benchmark::State& state) {
    tandem::run(
        [](benchmark::State* s) -> tandem::task<> {
            int x = 0;
            for (auto _ : *s) x = co_await tandem::timeout(1s, tandem_trivial(x));
            benchmark::DoNotOptimize(x);
        }(&state),
        one_io_thread());
}

// Asio's idiom for the same: race the task against a timer.
void asio_timeout_not_fired(benchmark::State& state) {
    asio_run([](benchmark::State* s) -> asio::awaitable<void> {
        using namespace asio::experimental::awaitable_operators;
        asio::steady_timer timer(co_await asio::this_coro::executor);
        int x = 0;
        for (auto _ : *s) {
            timer.expires_after(1s);
            auto r = co_await (asio_trivial(x) || timer.async_wait(asio::use_awaitable));
            x = std::get<0>(r);
        }
        benchmark::DoNotOptimize(x);
    }(&state));
}

// A timer that is already due: arm, fire at the next loop turn, resume.
void tandem_sleep_0(benchmark::State& state, io_backend backend) {
    tandem::run(
        [](benchmark::State* s) -> tandem::task<> {
            for (auto _ : *s) co_await tandem::sleep_for(0ns);
        }(&state),
        one_io_thread(backend));
}

void asio_sleep_0(benchmark::State& state) {
    asio_run([](benchmark::State* s) -> asio::awaitable<void> {
        asio::steady_timer timer(co_await asio::this_coro::executor);
        for (auto _ : *s) {
            timer.expires_after(0ns);
            co_await timer.async_wait(asio::use_awaitable);
        }
    }(&state));
}

// 100,000 sleepers, each until start + a random 1..50 ms (the same deadlines
// for both): tandem's user-space heap with one wait timeout per loop turn,
// against one IORING_OP_TIMEOUT per sleeper in the kernel.
constexpr std::size_t sleepers = 100'000;

const std::vector<std::chrono::nanoseconds>& sleeper_offsets() {
    static const std::vector<std::chrono::nanoseconds> offsets = [] {
        std::mt19937_64 rng(20240601);
        std::uniform_int_distribution<std::int64_t> ns(1'000'000, 50'000'000);
        std::vector<std::chrono::nanoseconds> v(sleepers);
        for (auto& d : v) d = std::chrono::nanoseconds(ns(rng));
        return v;
    }();
    return offsets;
}

std::chrono::nanoseconds last_deadline() {
    const auto& o = sleeper_offsets();
    return *std::max_element(o.begin(), o.end());
}

double ms_since(std::chrono::steady_clock::time_point t) {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t).count();
}

void tandem_sleepers(benchmark::State& state, io_backend backend) {
    double late_ms = 0;
    tandem::run(
        [](benchmark::State* s, double* late) -> tandem::task<> {
            const auto& offsets = sleeper_offsets();
            for (auto _ : *s) {
                auto start = std::chrono::steady_clock::now();
                std::vector<tandem::task<>> all;
                all.reserve(offsets.size());
                for (auto d : offsets) all.push_back(tandem::sleep_until(start + d));
                co_await tandem::when_all(std::move(all));
                *late += ms_since(start + last_deadline());
            }
        }(&state, &late_ms),
        one_io_thread(backend));
    state.counters["late_ms"] = benchmark::Counter(late_ms, benchmark::Counter::kAvgIterations);
}

void raw_sleepers(benchmark::State& state) {
    raw_ring r;
    const auto& offsets = sleeper_offsets();
    std::vector<__kernel_timespec> when(offsets.size());
    std::size_t wrong = 0;
    double late_ms = 0;
    for (auto _ : state) {
        auto start = std::chrono::steady_clock::now();
        for (std::size_t i = 0; i < offsets.size(); ++i) {
            // steady_clock is CLOCK_MONOTONIC, the clock of IORING_TIMEOUT_ABS.
            auto ns = (start + offsets[i]).time_since_epoch().count();
            when[i].tv_sec = ns / 1'000'000'000;
            when[i].tv_nsec = ns % 1'000'000'000;
            io_uring_sqe* sqe = r.sqe();
            io_uring_prep_timeout(sqe, &when[i], 0, IORING_TIMEOUT_ABS);
            io_uring_sqe_set_data64(sqe, i + 1);
        }
        std::size_t done = 0;
        while (done < offsets.size()) {
            io_uring_submit_and_wait(&r.ring, 1);
            done += r.reap(-ETIME, &wrong);
        }
        late_ms += ms_since(start + last_deadline());
    }
    state.counters["late_ms"] = benchmark::Counter(late_ms, benchmark::Counter::kAvgIterations);
    if (wrong != 0) state.SkipWithError("a timeout completed with a result other than -ETIME");
}

// ---- 6. io_uring NOP: tandem's loop vs raw liburing ---------------------------------------

auto prep_nop = [](io_uring_sqe* sqe) { io_uring_prep_nop(sqe); };

void tandem_nop_batch_1(benchmark::State& state, io_backend backend) {
    tandem::run(
        [](benchmark::State* s) -> tandem::task<> {
            int sum = 0;
            for (auto _ : *s) sum += co_await tandem::detail::uring_op(prep_nop);
            benchmark::DoNotOptimize(sum);
        }(&state),
        one_io_thread(backend));
}

void raw_nop_batch_1(benchmark::State& state) {
    raw_ring r;
    std::size_t wrong = 0;
    for (auto _ : state) {
        io_uring_sqe* sqe = r.sqe();
        io_uring_prep_nop(sqe);
        io_uring_sqe_set_data64(sqe, 1);
        io_uring_submit_and_wait(&r.ring, 1);
        r.reap(0, &wrong);
    }
    if (wrong != 0) state.SkipWithError("a NOP failed");
}

// 32 tasks in flight, each doing `per_task` NOPs back to back; when_all over
// them is paid once per 32 * per_task operations.
constexpr int batch = 32;
constexpr int per_task = 64;

tandem::task<> nop_loop(int n) {
    for (int i = 0; i < n; ++i) {
        int r = co_await tandem::detail::uring_op(prep_nop);
        benchmark::DoNotOptimize(r);
    }
}

void tandem_nop_batch_32(benchmark::State& state, io_backend backend) {
    tandem::run(
        [](benchmark::State* s) -> tandem::task<> {
            while (s->KeepRunningBatch(batch * per_task)) {
                std::vector<tandem::task<>> workers;
                workers.reserve(batch);
                for (int i = 0; i < batch; ++i) workers.push_back(nop_loop(per_task));
                co_await tandem::when_all(std::move(workers));
            }
        }(&state),
        one_io_thread(backend));
}

void raw_nop_batch_32(benchmark::State& state) {
    raw_ring r;
    std::size_t wrong = 0;
    while (state.KeepRunningBatch(batch)) {
        for (int i = 0; i < batch; ++i) {
            io_uring_sqe* sqe = r.sqe();
            io_uring_prep_nop(sqe);
            io_uring_sqe_set_data64(sqe, static_cast<std::uint64_t>(i) + 1);
        }
        io_uring_submit_and_wait(&r.ring, batch);
        unsigned got = 0;
        while (got < batch) {
            got += r.reap(0, &wrong);
            if (got < batch) io_uring_submit_and_wait(&r.ring, batch - got);
        }
    }
    if (wrong != 0) state.SkipWithError("a NOP failed");
}

// ---- registration -------------------------------------------------------------------------

void register_all() {
    using benchmark::RegisterBenchmark;
    RegisterBenchmark("tandem/task_await", tandem_task_await);
    RegisterBenchmark("asio/task_await", asio_task_await);
    RegisterBenchmark("probe/new_delete", probe_new_delete_frame)->Arg(64)->Arg(128);

    const io_backend uring = io_backend::io_uring;
    const io_backend epoll = io_backend::epoll;

    RegisterBenchmark("tandem/yield", tandem_yield, uring);
    RegisterBenchmark("tandem_epoll/yield", tandem_yield, epoll);
    RegisterBenchmark("asio/yield", asio_yield);
    RegisterBenchmark("proto/yield_awaiter_no_frame", proto_yield_awaiter);

    RegisterBenchmark("tandem/when_all_10", tandem_when_all);
    RegisterBenchmark("asio/when_all_10", asio_when_all);

    RegisterBenchmark("tandem/hop_round_trip", tandem_hop, uring)->UseRealTime();
    RegisterBenchmark("tandem_epoll/hop_round_trip", tandem_hop, epoll)->UseRealTime();
    RegisterBenchmark("asio/hop_round_trip", asio_hop)->UseRealTime();

    RegisterBenchmark("tandem/timeout_not_fired", tandem_timeout_not_fired);
    RegisterBenchmark("asio/timeout_not_fired", asio_timeout_not_fired);
    RegisterBenchmark("tandem/sleep_0", tandem_sleep_0, uring);
    RegisterBenchmark("tandem_epoll/sleep_0", tandem_sleep_0, epoll);
    RegisterBenchmark("asio/sleep_0", asio_sleep_0);
    // Fixed iterations: each one is ~50 ms of waiting, so min_time does not apply.
    for (auto [name, backend] : {std::pair{"tandem/sleepers_100k", uring},
                                 std::pair{"tandem_epoll/sleepers_100k", epoll}}) {
        RegisterBenchmark(name, tandem_sleepers, backend)
            ->Iterations(3)
            ->MeasureProcessCPUTime()
            ->UseRealTime()
            ->Unit(benchmark::kMillisecond);
    }
    // One iteration: the kernel's timeouts take seconds for 100k here.
    RegisterBenchmark("raw_uring/sleepers_100k", raw_sleepers)
        ->Iterations(1)
        ->MeasureProcessCPUTime()
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);

    RegisterBenchmark("tandem/nop_batch_1", tandem_nop_batch_1, uring);
    RegisterBenchmark("raw_uring/nop_batch_1", raw_nop_batch_1);
    RegisterBenchmark("tandem/nop_batch_32", tandem_nop_batch_32, uring);
    RegisterBenchmark("raw_uring/nop_batch_32", raw_nop_batch_32);
    // Interpreted in user space by the epoll backend (no system call): the loop's overhead.
    RegisterBenchmark("tandem_epoll/nop_batch_1", tandem_nop_batch_1, epoll);
    RegisterBenchmark("tandem_epoll/nop_batch_32", tandem_nop_batch_32, epoll);
}

// ---- summary -----------------------------------------------------------------------------

/// The console reporter, plus a table pairing tandem/<what> with its peer.
class summary_reporter : public benchmark::ConsoleReporter {
public:
    explicit summary_reporter(bool color) : ConsoleReporter(color ? OO_ColorTabular : OO_Tabular) {}

    void ReportRuns(const std::vector<Run>& runs) override {
        for (const Run& r : runs) {
            if (r.run_type != Run::RT_Iteration || r.error_occurred) continue;
            double ns =
                r.GetAdjustedRealTime() * 1e9 / benchmark::GetTimeUnitMultiplier(r.time_unit);
            double cpu_ns =
                r.GetAdjustedCPUTime() * 1e9 / benchmark::GetTimeUnitMultiplier(r.time_unit);
            results_[r.benchmark_name()].push_back({ns, cpu_ns});
        }
        ConsoleReporter::ReportRuns(runs);
    }

    void print_summary() const {
        struct target {
            const char* what;
            double ns;
            bool on_difference;  // the target bounds tandem - peer, not tandem alone
        };
        const target targets[] = {{"task_await", 60, false}, {"nop_batch_32", 25, true}};
        const char* peers[] = {"asio/", "raw_uring/"};

        // CPU time is the cost of the operation on its own thread; on a busy
        // machine real time also counts the time the thread was preempted.
        // Targets are judged on CPU time (hop_round_trip spans two threads:
        // read its real time).
        std::printf("\nSummary (median over repetitions; ratio and diff on CPU time)\n");
        std::printf("%-26s %10s %10s %10s %10s %7s %9s  %s\n", "benchmark", "tandem real",
                    "peer real", "tandem cpu", "peer cpu", "ratio", "diff", "target");
        for (const auto& [name, samples] : results_) {
            if (name.rfind("tandem/", 0) != 0) continue;
            if (name.find("sleepers_100k") != std::string::npos) continue;
            std::string what = name.substr(7);
            const std::vector<sample>* peer = nullptr;
            std::string peer_name = "-";
            for (const char* p : peers) {
                auto it = results_.find(p + what);
                if (it != results_.end()) {
                    peer = &it->second;
                    peer_name = p;
                    peer_name.pop_back();
                }
            }
            double t_real = median(samples, false);
            double t_cpu = median(samples, true);
            double p_real = peer != nullptr ? median(*peer, false) : 0;
            double p_cpu = peer != nullptr ? median(*peer, true) : 0;
            std::string verdict = "-";
            for (const target& tg : targets) {
                if (what != tg.what || (tg.on_difference && peer == nullptr)) continue;
                double measured = tg.on_difference ? t_cpu - p_cpu : t_cpu;
                char buf[96];
                std::snprintf(buf, sizeof buf, "%s <= %.0f ns: %s",
                              tg.on_difference ? "diff" : "tandem", tg.ns,
                              measured <= tg.ns ? "met" : "MISSED");
                verdict = buf;
            }
            if (peer != nullptr) {
                std::printf("%-26s %10.1f %10.1f %10.1f %10.1f %7.2f %9.1f  %s [vs %s]\n",
                            what.c_str(), t_real, p_real, t_cpu, p_cpu, t_cpu / p_cpu,
                            t_cpu - p_cpu, verdict.c_str(), peer_name.c_str());
            } else {
                std::printf("%-26s %10.1f %10s %10.1f %10s %7s %9s  %s\n", what.c_str(), t_real,
                            "-", t_cpu, "-", "-", "-", verdict.c_str());
            }
        }
        // The sleepers are wall time and CPU time of one whole run, in ms.
        for (const auto& [name, samples] : results_) {
            if (name.find("sleepers_100k") == std::string::npos) continue;
            std::printf("%-60s wall %7.1f ms, CPU %7.1f ms (last deadline at %.1f ms)\n",
                        name.c_str(), median(samples, false) / 1e6, median(samples, true) / 1e6,
                        std::chrono::duration<double, std::milli>(last_deadline()).count());
        }
        print_epoll_summary();
        std::fflush(stdout);
    }

    /// tandem_epoll/<what> against tandem/<what> (io_uring) and asio/<what> (epoll).
    void print_epoll_summary() const {
        std::printf(
            "\nThe epoll backend: tandem_epoll/<what> over tandem/<what> (io_uring) and over "
            "asio/<what> (epoll);\nratios on real and CPU time (hop_round_trip spans two "
            "threads: read real; sleepers_100k: wall and process CPU;\nnop_*: a NOP is "
            "interpreted in user space on epoll, no system call)\n");
        std::printf("%-16s %10s %10s %10s %10s %10s %10s\n", "what", "epoll real", "epoll cpu",
                    "/tandem r", "/tandem c", "/asio r", "/asio c");
        for (const auto& [name, samples] : results_) {
            if (name.rfind("tandem_epoll/", 0) != 0) continue;
            const std::string what = name.substr(13);  // with gbench's "/real_time" etc.
            const std::string shown = what.substr(0, what.find('/'));
            const double e_real = median(samples, false);
            const double e_cpu = median(samples, true);
            auto ratio = [&](const char* peer, bool cpu) {
                auto it = results_.find(peer + what);
                if (it == results_.end()) return std::string("-");
                char buf[16];
                std::snprintf(buf, sizeof buf, "%.2f",
                              (cpu ? e_cpu : e_real) / median(it->second, cpu));
                return std::string(buf);
            };
            std::printf("%-16s %10s %10s %10s %10s %10s %10s\n", shown.c_str(),
                        time_text(e_real).c_str(), time_text(e_cpu).c_str(),
                        ratio("tandem/", false).c_str(), ratio("tandem/", true).c_str(),
                        ratio("asio/", false).c_str(), ratio("asio/", true).c_str());
        }
    }

private:
    /// "337.4 ns", "8.69 us", "55.1 ms".
    static std::string time_text(double ns) {
        char buf[32];
        if (ns < 1e4) {
            std::snprintf(buf, sizeof buf, "%.1f ns", ns);
        } else if (ns < 1e7) {
            std::snprintf(buf, sizeof buf, "%.2f us", ns / 1e3);
        } else {
            std::snprintf(buf, sizeof buf, "%.1f ms", ns / 1e6);
        }
        return buf;
    }

    struct sample {
        double real_ns;
        double cpu_ns;
    };
    static double median(std::vector<sample> v, bool cpu) {
        auto key = [cpu](const sample& s) { return cpu ? s.cpu_ns : s.real_ns; };
        std::sort(v.begin(), v.end(),
                  [&](const sample& a, const sample& b) { return key(a) < key(b); });
        return key(v[v.size() / 2]);
    }
    std::map<std::string, std::vector<sample>> results_;
};

}  // namespace

int main(int argc, char** argv) {
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    {
        raw_ring probe;
        benchmark::AddCustomContext("io_uring setup", probe.features);
    }
    register_all();
    summary_reporter reporter(isatty(STDOUT_FILENO) != 0);
    benchmark::RunSpecifiedBenchmarks(&reporter);
    reporter.print_summary();
    benchmark::Shutdown();
    return 0;
}
