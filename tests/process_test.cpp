// SPDX-License-Identifier: MIT

// offload_to_process with real worker processes: values and codecs across the
// boundary, exceptions, crashes that really kill workers (SIGSEGV, abort,
// _exit, an outside SIGKILL), the crash matrix, timeouts and cancellation that
// kill runaway workers, payloads too large for the arena, backpressure,
// recycling, failed restarts, shared arrays, a worker scribbling over shared
// memory, and what is left behind (processes, fds, /dev/shm) when the runtime
// or the whole parent process goes away.

#include "process/shm_layout.hpp"
#include "process/worker.hpp"

#include <tandem/tandem.hpp>

#include <catch2/catch.hpp>

#include "support.hpp"

#include <dirent.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

namespace {

using namespace std::chrono_literals;
constexpr std::size_t mib = std::size_t{1} << 20;

/// The test process; workers (forked from the zygote, forked from us) inherit the value.
const pid_t test_pid = ::getpid();

bool in_parent() {
    return ::getpid() == test_pid;
}

tandem::runtime_options pool_options(unsigned workers, std::size_t arena = 64 * mib,
                                     unsigned io_threads = 1) {
    tandem::runtime_options o;
    o.io_threads = io_threads;
    o.processes.workers = workers;
    o.processes.arena_bytes = arena;
    return o;
}

// ---- jobs -----------------------------------------------------------------------------------

int worker_pid() {
    return static_cast<int>(::getpid());
}

int throws_runtime_error(int) {
    throw std::runtime_error("job failed on purpose");
}

struct custom_failure {};
int throws_non_std() {
    throw custom_failure{};
}

[[noreturn]] void segfault() {
    // Through a volatile address, so the compiler cannot see the fault coming.
    volatile std::uintptr_t nowhere = 16;
    *reinterpret_cast<volatile int*>(nowhere) = 1;
    std::abort();  // not reached
}

int segfaults(int) {
    segfault();
}
int aborts(int) {
    std::abort();
}
int exits_3(int) {
    ::_exit(3);
}
[[noreturn]] void spin_forever() {
    std::atomic<unsigned long> i{0};
    for (;;) i.fetch_add(1, std::memory_order_relaxed);
}

int spins_forever(int) {
    spin_forever();
}

/// Writes its pid into the array, then waits for someone to kill it.
int publishes_pid_and_waits(tandem::shared_array<int> box) {
    box[0] = static_cast<int>(::getpid());
    for (;;) ::pause();
}

int sleeps_ms(int ms) {
    std::this_thread::sleep_for(std::chrono::milliseconds(ms));
    return ms;
}

std::vector<char> echo_bytes(std::vector<char> v) {
    return v;
}

std::vector<char> make_bytes(std::size_t n) {
    return std::vector<char>(n, 'r');
}

void do_nothing() {}

// ---- the crash matrix's bomb: a type whose codec blows up at a chosen stage -------------------

enum class stage : int { none, encode_args, decode_args, run, encode_result, decode_result };
enum class action : int { none, throw_error, exit_3, abort, segfault, hang };

struct bomb {
    stage at = stage::none;
    action act = action::none;
};

void detonate(action a) {
    switch (a) {
        case action::throw_error:
            throw std::runtime_error("bomb went off");
        case action::exit_3:
            ::_exit(3);
        case action::abort:
            std::abort();
        case action::segfault:
            segfault();
        case action::hang:
            spin_forever();
        case action::none:
            break;
    }
}

bomb run_bomb(bomb b) {
    if (b.at == stage::run) detonate(b.act);
    return b;
}

}  // namespace

template <>
struct tandem::codec<bomb> {
    static void encode(tandem::encoder& e, const bomb& b) {
        if (b.at == (in_parent() ? stage::encode_args : stage::encode_result)) detonate(b.act);
        e.write(&b, sizeof b);
    }
    static bomb decode(tandem::decoder& d) {
        bomb b;
        d.read(&b, sizeof b);
        if (b.at == (in_parent() ? stage::decode_result : stage::decode_args)) detonate(b.act);
        return b;
    }
};

namespace {

// ---- process and fd bookkeeping --------------------------------------------------------------

// ---- tasks ----------------------------------------------------------------------------------

template <class T>
tandem::task<std::optional<std::string>> error_of(tandem::task<T> t) {
    try {
        co_await std::move(t);
    } catch (const std::exception& e) {
        co_return std::string(typeid(e).name()) + "|" + e.what();
    }
    co_return std::nullopt;
}

tandem::task<std::vector<int>> pids_of_jobs(int n) {
    std::vector<int> pids;
    for (int i = 0; i < n; ++i) pids.push_back(co_await tandem::offload_to_process(worker_pid));
    co_return pids;
}

tandem::task<long> sum_of_primes_in_chunks(long limit, long chunks) {
    std::vector<tandem::task<long>> parts;
    for (long c = 0; c < chunks; ++c) {
        parts.push_back(
            tandem::offload_to_process(count_primes, limit * c / chunks, limit * (c + 1) / chunks));
    }
    long total = 0;
    for (long v : co_await tandem::when_all(std::move(parts))) total += v;
    co_return total;
}

tandem::task<int> quick_jobs(int n) {
    int done = 0;
    for (int i = 0; i < n; ++i) done += co_await tandem::offload_to_process(sleeps_ms, 0) == 0;
    co_return done;
}

}  // namespace

// ---- values across the boundary ---------------------------------------------------------------

TEST_CASE("offload_to_process runs the function in another process and returns its value",
          "[process]") {
    tandem::runtime rt(pool_options(2));
    REQUIRE(rt.processes().enabled());
    const int pid = rt.block_on(tandem::offload_to_process(worker_pid));
    CHECK(pid != ::getpid());
    CHECK(rt.block_on(tandem::offload_to_process(count_primes, 0L, 100'000L)) ==
          count_primes(0, 100'000));
    CHECK(rt.block_on(sum_of_primes_in_chunks(200'000, 8)) == count_primes(0, 200'000));
    rt.block_on(tandem::offload_to_process(do_nothing));
    const auto s = rt.processes().stats();
    CHECK(s.workers == 2);
    CHECK(s.workers_alive == 2);
    CHECK(s.jobs_done == 11);
    CHECK(s.crashes == 0);
}

namespace {
enum class colour : std::int16_t { red = 1, blue = 7 };
struct point {
    double x, y;
};
using many = std::tuple<std::string, std::vector<int>, std::optional<colour>, std::pair<int, point>,
                        std::array<char, 3>>;
many reverse_all(std::string s, std::vector<int> v, std::optional<colour> c,
                 std::pair<int, point> p, std::array<char, 3> a) {
    std::reverse(s.begin(), s.end());
    std::reverse(v.begin(), v.end());
    std::reverse(a.begin(), a.end());
    p.second = {p.second.y, p.second.x};
    return {s, v, c, p, a};
}
}  // namespace

TEST_CASE("arguments and results of the built-in codec types cross the process boundary",
          "[process]") {
    tandem::runtime rt(pool_options(1));
    const auto r = rt.block_on(tandem::offload_to_process(
        reverse_all, std::string("hello"), std::vector<int>{1, 2, 3}, std::optional(colour::blue),
        std::pair<int, point>{4, {1.5, 2.5}}, std::array<char, 3>{'a', 'b', 'c'}));
    CHECK(std::get<0>(r) == "olleh");
    CHECK(std::get<1>(r) == std::vector<int>{3, 2, 1});
    CHECK(std::get<2>(r) == colour::blue);
    CHECK(std::get<3>(r).first == 4);
    CHECK(std::get<3>(r).second.x == 2.5);
    CHECK(std::get<4>(r) == std::array<char, 3>{'c', 'b', 'a'});
}

TEST_CASE("a lambda capturing numbers by value runs in the worker with its captures", "[process]") {
    tandem::runtime rt(pool_options(1));
    long base = 1000;  // not constants: the lambda must really carry them
    int factor = 3;
    if (rt.io_threads() == 0) base = factor = 0;
    auto scaled = [base, factor](long x) { return base + factor * x + (in_parent() ? 1 : 0); };
    CHECK(rt.block_on(tandem::offload_to_process(scaled, 5L)) == 1015);
}

TEST_CASE("large arguments and results travel through the arena's heap intact", "[process]") {
    tandem::runtime rt(pool_options(2, 64 * mib));
    std::vector<char> big(5 * mib);
    for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 31 + 7);
    CHECK(rt.block_on(tandem::offload_to_process(echo_bytes, big)) == big);
    // A result larger than the arguments' region: the worker asks for a block.
    CHECK(rt.block_on(tandem::offload_to_process(make_bytes, 3 * mib)) ==
          std::vector<char>(3 * mib, 'r'));
}

TEST_CASE("jobs from two io threads complete on the loop that awaited them", "[process]") {
    tandem::runtime rt(pool_options(2, 64 * mib, 2));
    std::atomic<int> done{0};
    auto one_loop = [&]() -> tandem::task<> {
        const int n = co_await quick_jobs(300);
        done.fetch_add(n);
    };
    std::thread other([&] { rt.block_on(one_loop()); });
    rt.block_on(one_loop());
    other.join();
    CHECK(done.load() == 600);
}

namespace {
/// On io thread 1 (not loop 0, which watches the workers): a crash and a
/// timeout, whose outcomes loop 0 hands over.
tandem::task<std::pair<std::string, std::string>> faults_on(tandem::runtime* rt) {
    if (tandem::detail::current_loop() != tandem::detail_loop_of(*rt, 1)) {
        co_return std::pair<std::string, std::string>{};
    }
    const auto crash = co_await error_of(tandem::offload_to_process(aborts, 0));
    const auto late =
        co_await error_of(tandem::timeout(50ms, tandem::offload_to_process(spins_forever, 0)));
    co_return std::pair{crash.value_or("none"), late.value_or("none")};
}
}  // namespace

TEST_CASE("crashes and timeouts of jobs awaited on another io thread than loop 0", "[process]") {
    tandem::runtime rt(pool_options(2, 64 * mib, 2));
    std::pair<std::string, std::string> seen;
    for (int attempt = 0; attempt < 4 && seen.first.empty(); ++attempt) {
        seen = rt.block_on(faults_on(&rt));  // block_on takes the loops in turn
    }
    CHECK_THAT(seen.first, Catch::Contains("killed by signal 6"));
    CHECK_THAT(seen.second, Catch::Contains("timed_out"));
    CHECK(rt.block_on(quick_jobs(50)) == 50);
}

// ---- exceptions and crashes -----------------------------------------------------------------

TEST_CASE("a job that throws gives remote_error with its type and message, and its worker lives on",
          "[process]") {
    tandem::runtime rt(pool_options(1));
    const int before = rt.block_on(tandem::offload_to_process(worker_pid));
    const auto err = rt.block_on(error_of(tandem::offload_to_process(throws_runtime_error, 1)));
    REQUIRE(err);
    CHECK_THAT(*err, Catch::Contains("remote_error"));
    CHECK_THAT(*err, Catch::Contains("std::runtime_error: job failed on purpose"));
    const auto odd = rt.block_on(error_of(tandem::offload_to_process(throws_non_std)));
    REQUIRE(odd);
    CHECK_THAT(*odd, Catch::Contains("custom_failure"));
    CHECK(rt.block_on(tandem::offload_to_process(worker_pid)) == before);
    CHECK(rt.processes().stats().crashes == 0);
}

TEST_CASE("a worker that segfaults, aborts or exits fails only its job, naming how it died",
          "[process]") {
    tandem::runtime rt(pool_options(2));
    struct {
        int (*job)(int);
        const char* expected;
    } cases[] = {{segfaults, "killed by signal 11"},
                 {aborts, "killed by signal 6"},
                 {exits_3, "exited with status 3"}};
    std::uint64_t crashes = 0;
    for (const auto& c : cases) {
        CAPTURE(c.expected);
        const auto err = rt.block_on(error_of(tandem::offload_to_process(c.job, 0)));
        REQUIRE(err);
        CHECK_THAT(*err, Catch::Contains("worker_crashed"));
        CHECK_THAT(*err, Catch::Contains(c.expected));
        ++crashes;
        CHECK(rt.processes().stats().crashes == crashes);
        // The pool is whole again: a job runs (on the survivor or the replacement).
        CHECK(rt.block_on(tandem::offload_to_process(count_primes, 0L, 1000L)) == 168);
    }
}

namespace {
tandem::task<std::string> kill_worker_mid_job(tandem::shared_array<int> box) {
    auto job = tandem::offload_to_process(publishes_pid_and_waits, box);
    auto killer = [](tandem::shared_array<int> b) -> tandem::task<int> {
        while (std::atomic_ref<int>(b[0]).load() == 0) co_await tandem::sleep_for(1ms);
        ::kill(b[0], SIGKILL);
        co_return b[0];
    };
    auto [outcome, pid] = co_await tandem::when_all(error_of(std::move(job)), killer(box));
    (void)pid;
    co_return outcome.value_or("no error");
}
}  // namespace

TEST_CASE("a worker SIGKILLed mid-job fails that job; jobs on other workers finish", "[process]") {
    tandem::runtime rt(pool_options(2));
    auto box = rt.block_on([]() -> tandem::task<tandem::shared_array<int>> {
        co_return tandem::shared_array<int>::allocate(1);
    }());
    auto both = [](tandem::shared_array<int> b) -> tandem::task<std::pair<std::string, int>> {
        auto [err, ms] = co_await tandem::when_all(kill_worker_mid_job(b),
                                                   tandem::offload_to_process(sleeps_ms, 300));
        co_return std::pair{err, ms};
    };
    const auto [err, slow] = rt.block_on(both(box));
    CHECK_THAT(err, Catch::Contains("worker_crashed"));
    CHECK_THAT(err, Catch::Contains("killed by signal 9"));
    CHECK(slow == 300);
    CHECK(rt.processes().stats().crashes == 1);
    CHECK(rt.block_on(tandem::offload_to_process(count_primes, 0L, 1000L)) == 168);
    box = {};
}

namespace {
tandem::task<std::pair<int, int>> crash_among_queued(int queued) {
    std::vector<tandem::task<std::optional<std::string>>> jobs;
    jobs.push_back(error_of(tandem::offload_to_process(segfaults, 0)));
    for (int i = 0; i < queued; ++i)
        jobs.push_back(error_of(tandem::offload_to_process(sleeps_ms, 1)));
    int failed = 0, ok = 0;
    for (const auto& e : co_await tandem::when_all(std::move(jobs))) (e ? failed : ok) += 1;
    co_return std::pair{failed, ok};
}
}  // namespace

TEST_CASE("jobs queued behind a crashing job run on the replacement worker", "[process]") {
    tandem::runtime rt(pool_options(1));
    const auto [failed, ok] = rt.block_on(crash_among_queued(20));
    CHECK(failed == 1);
    CHECK(ok == 20);
    const auto s = rt.processes().stats();
    CHECK(s.crashes == 1);
    CHECK(s.replacements >= 1);
    CHECK(s.workers_alive == 1);
}

TEST_CASE("a job that crashes every worker it meets fails each time; the pool survives",
          "[process]") {
    tandem::runtime rt(pool_options(2));
    for (int i = 0; i < 12; ++i) {
        const auto err = rt.block_on(error_of(tandem::offload_to_process(aborts, i)));
        REQUIRE(err);
        CHECK_THAT(*err, Catch::Contains("worker_crashed"));
    }
    CHECK(rt.processes().stats().crashes == 12);
    CHECK(rt.block_on(sum_of_primes_in_chunks(50'000, 4)) == count_primes(0, 50'000));
}

TEST_CASE("the crash matrix: throw, exit, abort, segfault, hang at each stage of a job",
          "[process]") {
    tandem::runtime rt(pool_options(2));
    const stage worker_stages[] = {stage::decode_args, stage::run, stage::encode_result};
    const struct {
        action act;
        const char* expected;
    } worker_actions[] = {{action::throw_error, "remote_error"},
                          {action::exit_3, "exited with status 3"},
                          {action::abort, "killed by signal 6"},
                          {action::segfault, "killed by signal 11"},
                          {action::hang, "timed_out"}};
    for (stage at : worker_stages) {
        for (const auto& a : worker_actions) {
            CAPTURE(static_cast<int>(at), a.expected);
            const auto err = rt.block_on(
                error_of(tandem::timeout(a.act == action::hang ? 300ms : 20s,
                                         tandem::offload_to_process(run_bomb, bomb{at, a.act}))));
            REQUIRE(err);
            CHECK_THAT(*err, Catch::Contains(a.expected));
            if (a.act == action::throw_error) CHECK_THAT(*err, Catch::Contains("bomb went off"));
        }
    }
    // In the parent only a throw can be survived: it reaches the caller unchanged.
    for (stage at : {stage::encode_args, stage::decode_result}) {
        CAPTURE(static_cast<int>(at));
        const auto err = rt.block_on(
            error_of(tandem::offload_to_process(run_bomb, bomb{at, action::throw_error})));
        REQUIRE(err);
        CHECK_THAT(*err, Catch::Contains("bomb went off"));
        CHECK_THAT(*err, !Catch::Contains("remote_error"));
    }
    const auto s = rt.processes().stats();
    CHECK(s.crashes == 9);  // exit, abort, segfault at three stages
    CHECK(s.kills == 3);    // the hangs
    // No slot was lost: more jobs than the arena has slots still go through.
    CHECK(rt.block_on(quick_jobs(600)) == 600);
}

// ---- timeouts, cancellation -------------------------------------------------------------------

TEST_CASE("a runaway job under timeout gets timed_out and its worker is killed and replaced",
          "[process]") {
    tandem::runtime rt(pool_options(1));
    const int before = rt.block_on(tandem::offload_to_process(worker_pid));
    const auto start = std::chrono::steady_clock::now();
    const auto err =
        rt.block_on(error_of(tandem::timeout(100ms, tandem::offload_to_process(spins_forever, 0))));
    const auto waited = std::chrono::steady_clock::now() - start;
    REQUIRE(err);
    CHECK_THAT(*err, Catch::Contains("timed_out"));
    CHECK(waited < 5s);  // not the job's (infinite) length
    CHECK(exited_within(before, 2000ms));
    const int after = rt.block_on(tandem::offload_to_process(worker_pid));
    CHECK(after != before);
    const auto s = rt.processes().stats();
    CHECK(s.kills == 1);
    CHECK(s.crashes == 0);
}

namespace {
tandem::task<int> first_of_job_and_sleep() {
    auto r = co_await tandem::when_any(tandem::offload_to_process(spins_forever, 0),
                                       tandem::sleep_for(50ms));
    co_return static_cast<int>(r.index());
}

int bumps(tandem::shared_array<int> counter) {
    std::atomic_ref<int>(counter[0]).fetch_add(1);
    return 0;
}

tandem::task<int> cancel_a_queued_job(tandem::shared_array<int> counter) {
    // One worker: the slow job holds it, the bump waits behind it and is cancelled there.
    auto r = co_await tandem::when_any(tandem::when_all(tandem::offload_to_process(sleeps_ms, 200),
                                                        tandem::offload_to_process(bumps, counter)),
                                       tandem::sleep_for(50ms));
    co_await tandem::offload_to_process(sleeps_ms, 0);  // the worker is free again
    co_return static_cast<int>(r.index());
}
}  // namespace

TEST_CASE("cancelling the task awaiting a running job kills its worker", "[process]") {
    tandem::runtime rt(pool_options(1));
    CHECK(rt.block_on(first_of_job_and_sleep()) == 1);
    CHECK(rt.processes().stats().kills == 1);
    CHECK(rt.block_on(tandem::offload_to_process(count_primes, 0L, 1000L)) == 168);
}

TEST_CASE("a job cancelled while it waits for a worker never runs", "[process]") {
    tandem::runtime rt(pool_options(1));
    auto counter = rt.block_on([]() -> tandem::task<tandem::shared_array<int>> {
        co_return tandem::shared_array<int>::allocate(1);
    }());
    CHECK(rt.block_on(cancel_a_queued_job(counter)) == 1);
    CHECK(counter[0] == 0);
    counter = {};
}

// ---- payloads and backpressure ----------------------------------------------------------------

TEST_CASE("arguments or a result too large for the arena throw payload_too_large", "[process]") {
    tandem::runtime rt(pool_options(1, 4 * mib));
    const auto args_err = rt.block_on(
        error_of(tandem::offload_to_process(echo_bytes, std::vector<char>(8 * mib, 'a'))));
    REQUIRE(args_err);
    CHECK_THAT(*args_err, Catch::Contains("payload_too_large"));
    const auto result_err =
        rt.block_on(error_of(tandem::offload_to_process(make_bytes, std::size_t{8 * mib})));
    REQUIRE(result_err);
    CHECK_THAT(*result_err, Catch::Contains("payload_too_large"));
    // Nothing else disturbed: the same worker serves a normal job.
    CHECK(rt.block_on(tandem::offload_to_process(echo_bytes, std::vector<char>(mib, 'b'))) ==
          std::vector<char>(mib, 'b'));
    CHECK(rt.processes().stats().crashes == 0);
}

namespace {
tandem::task<int> many_big_jobs(int n, std::size_t bytes) {
    std::vector<tandem::task<std::vector<char>>> jobs;
    for (int i = 0; i < n; ++i) {
        jobs.push_back(
            tandem::offload_to_process(echo_bytes, std::vector<char>(bytes, char('a' + i % 26))));
    }
    int ok = 0;
    int i = 0;
    for (const auto& v : co_await tandem::when_all(std::move(jobs))) {
        ok += v == std::vector<char>(bytes, char('a' + i % 26)) ? 1 : 0;
        ++i;
    }
    co_return ok;
}

tandem::task<int> many_empty_jobs(int n) {
    std::vector<tandem::task<int>> jobs;
    for (int i = 0; i < n; ++i) jobs.push_back(tandem::offload_to_process(sleeps_ms, 0));
    int ok = 0;
    for (int v : co_await tandem::when_all(std::move(jobs))) ok += v == 0 ? 1 : 0;
    co_return ok;
}
}  // namespace

TEST_CASE("when slots or arena run out, jobs wait their turn and all complete", "[process]") {
    // 20 jobs of 1 MiB in an arena whose heap holds about three at a time.
    tandem::runtime rt(pool_options(2, 4 * mib));
    CHECK(rt.block_on(many_big_jobs(20, mib)) == 20);
    // Far more jobs than slots.
    CHECK(rt.block_on(many_empty_jobs(5000)) == 5000);
}

// ---- recycling, restarts, initializer ---------------------------------------------------------

TEST_CASE("max_jobs_per_worker = 1 with one worker: 1,000 jobs all complete", "[process]") {
    auto options = pool_options(1, 16 * mib);
    options.processes.max_jobs_per_worker = 1;
    tandem::runtime rt(options);
    const auto pids = rt.block_on(pids_of_jobs(1000));
    CHECK(std::set<int>(pids.begin(), pids.end()).size() == 1000);
    const auto s = rt.processes().stats();
    CHECK(s.recycled >= 999);
    CHECK(s.crashes == 0);
}

namespace {
int initialized_value = 0;
void set_initialized() {
    initialized_value = 42;
}
int read_initialized() {
    return initialized_value;
}

/// A flag the initializer reads in every new worker: shared memory made before the runtime.
std::atomic<int>* init_should_fail = nullptr;
void failing_initializer() {
    if (init_should_fail->load() != 0) throw std::runtime_error("no database today");
}
}  // namespace

TEST_CASE("the initializer runs in each worker before its first job", "[process]") {
    auto options = pool_options(2);
    options.processes.initializer = &set_initialized;
    tandem::runtime rt(options);
    CHECK(rt.block_on(tandem::offload_to_process(read_initialized)) == 42);
    CHECK(initialized_value == 0);  // not in the parent
}

TEST_CASE("replacements whose initializer throws: bounded retries, then a clear error",
          "[process]") {
    void* mem = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    REQUIRE(mem != MAP_FAILED);
    init_should_fail = new (mem) std::atomic<int>(0);
    {
        auto options = pool_options(1);
        options.processes.initializer = &failing_initializer;
        tandem::runtime rt(options);
        CHECK(rt.block_on(tandem::offload_to_process(count_primes, 0L, 100L)) == 25);
        init_should_fail->store(1);
        // The worker dies; its replacements cannot start; the queued job fails, not hangs.
        const auto err = rt.block_on(error_of(tandem::offload_to_process(exits_3, 0)));
        REQUIRE(err);
        const auto next = rt.block_on(error_of(tandem::offload_to_process(count_primes, 0L, 100L)));
        REQUIRE(next);
        CHECK_THAT(*next, Catch::Contains("worker_crashed"));
        CHECK_THAT(*next, Catch::Contains("no database today"));
        CHECK(rt.processes().stats().failed_starts >= 3);
        CHECK(rt.processes().stats().workers_alive == 0);
        // Once starting works again, a new job brings the pool back.
        init_should_fail->store(0);
        CHECK(rt.block_on(tandem::offload_to_process(count_primes, 0L, 100L)) == 25);
    }
    ::munmap(mem, 4096);
}

// ---- shared arrays ----------------------------------------------------------------------------

namespace {
std::uintptr_t double_in_place(tandem::shared_array<double> a) {
    for (double& x : a) x *= 2;
    return reinterpret_cast<std::uintptr_t>(a.data());
}

tandem::shared_array<double> pass_back(tandem::shared_array<double> a) {
    return a;
}

tandem::shared_array<double> forged() {
    // A handle to memory that is no array of the pool's.
    tandem::shared_array<double> fake;
    return fake;
}

tandem::task<> shared_array_round_trip(bool* ok) {
    auto a = tandem::shared_array<double>::allocate(1 << 20);
    for (std::size_t i = 0; i < a.size(); ++i) a[i] = static_cast<double>(i);
    const std::uintptr_t seen = co_await tandem::offload_to_process(double_in_place, a);
    bool same = seen == reinterpret_cast<std::uintptr_t>(a.data());
    for (std::size_t i = 0; i < a.size(); ++i) same = same && a[i] == 2.0 * static_cast<double>(i);
    auto back = co_await tandem::offload_to_process(pass_back, a);
    same = same && back.data() == a.data() && back.size() == a.size();
    *ok = same;
}
}  // namespace

TEST_CASE("a shared_array is handed to the worker without copying; its writes come back",
          "[process]") {
    tandem::runtime rt(pool_options(1, 64 * mib));
    bool ok = false;
    rt.block_on(shared_array_round_trip(&ok));
    CHECK(ok);
}

TEST_CASE("a shared_array handle that names no live array fails to decode in the parent",
          "[process]") {
    tandem::runtime rt(pool_options(1));
    auto bogus = [](std::uint64_t address) -> tandem::task<std::optional<std::string>> {
        std::uint64_t words[2] = {address, 4};
        std::vector<std::byte> bytes(sizeof words);
        std::memcpy(bytes.data(), words, sizeof words);
        tandem::decoder d(bytes.data(), bytes.data() + bytes.size());
        try {
            (void)tandem::decode<tandem::shared_array<int>>(d);
        } catch (const tandem::decode_error& e) {
            co_return std::string(e.what());
        }
        co_return std::nullopt;
    };
    CHECK(rt.block_on(bogus(0x1000)));
    CHECK(rt.block_on(tandem::offload_to_process(forged)).empty());
}

// ---- a scribbling worker ----------------------------------------------------------------------

namespace {
/// Plays a worker gone bad: overwrites every done ring's entries, every slot's
/// length and result kind, and the header, with garbage.
int scribble_over_arena(int seed) {
    namespace shm = tandem::detail::shm;
    std::byte* base = tandem::detail::worker_arena();
    auto* header = reinterpret_cast<shm::arena_header*>(base);
    const shm::view v{base, header->workers_off, header->worker_stride, header->slots_off};
    const std::uint32_t workers = header->workers, loops = header->loops, slots = header->slots;
    std::uint32_t x = static_cast<std::uint32_t>(seed) * 2654435761u + 1;
    auto next = [&] { return x = x * 1664525u + 1013904223u; };
    for (std::uint32_t w = 0; w < workers; ++w) {
        for (std::uint32_t l = 0; l < loops; ++l) {
            for (auto& e : v.done_ring(w, l)->entries) e.store(next() * 0x100000001ull);
        }
    }
    for (std::uint32_t s = 0; s < slots; ++s) {
        v.slot(s)->out_len = next() * 1000003ull;
        v.slot(s)->kind = static_cast<shm::result_kind>(next() % 5);
    }
    std::memset(base, 0x5a, sizeof(shm::arena_header) - sizeof header->loop_state);
    return 1;
}
}  // namespace

TEST_CASE("a worker scribbling over the arena costs an error and a replacement, no crash",
          "[process]") {
    tandem::runtime rt(pool_options(2));
    for (int round = 0; round < 3; ++round) {
        // Whatever the scribbler's own job returns, the parent must stay sound.
        (void)rt.block_on(error_of(tandem::offload_to_process(scribble_over_arena, round)));
        // The pool recovers: workers that read garbage are replaced.
        int ok = 0;
        for (int attempt = 0; attempt < 50 && ok < 20; ++attempt) {
            const auto e =
                rt.block_on(error_of(tandem::offload_to_process(count_primes, 0L, 100L)));
            ok += e ? 0 : 1;
        }
        CHECK(ok == 20);
    }
}

// ---- what is left behind ------------------------------------------------------------------------

namespace {
int niceness() {
    errno = 0;
    return ::getpriority(PRIO_PROCESS, 0);
}
}  // namespace

TEST_CASE("workers run a little below the parent's priority", "[process]") {
    tandem::runtime rt(pool_options(1));
    const int mine = niceness();
    CHECK(rt.block_on(tandem::offload_to_process(niceness)) == std::min(mine + 3, 19));
}

TEST_CASE("workers keep only their own fds and ignore SIGINT", "[process]") {
    tandem::runtime rt(pool_options(1, 64 * mib, 2));
    auto fds = [] {
        std::string names;
        for (const std::string& n : dir_entries("/proc/self/fd")) names += n + " ";
        struct sigaction sa {};
        ::sigaction(SIGINT, nullptr, &sa);
        return names + (sa.sa_handler == SIG_IGN ? "SIGINT ignored" : "SIGINT not ignored");
    };
    // 0-2, the parent-alive pipe at 3, one eventfd per io thread (4, 5).
    CHECK(rt.block_on(tandem::offload_to_process(fds)) == "0 1 2 3 4 5 SIGINT ignored");
}

TEST_CASE("destroying the runtime with jobs in flight leaves no process, fd or /dev/shm entry",
          "[process]") {
    const auto fds_before = dir_entries("/proc/self/fd");
    const auto shm_before = dir_entries("/dev/shm");
    const auto children_before = children();
    {
        tandem::runtime rt(pool_options(2));
        for (int i = 0; i < 4; ++i)
            rt.spawn([]() -> tandem::task<> {
                co_await tandem::offload_to_process(spins_forever, 0);
            }());
        for (int i = 0; i < 4; ++i)
            rt.spawn(
                []() -> tandem::task<> { co_await tandem::offload_to_process(sleeps_ms, 10); }());
        std::this_thread::sleep_for(50ms);  // let some start; correctness does not depend on it
    }
    CHECK(children() == children_before);
    CHECK(dir_entries("/proc/self/fd") == fds_before);
    CHECK(dir_entries("/dev/shm") == shm_before);
}

TEST_CASE("a disabled pool makes offload_to_process throw logic_error", "[process]") {
    auto options = pool_options(1);
    options.processes.enabled = false;
    tandem::runtime rt(options);
    CHECK_FALSE(rt.processes().enabled());
    const auto err = rt.block_on(error_of(tandem::offload_to_process(worker_pid)));
    REQUIRE(err);
    CHECK_THAT(*err, Catch::Contains("disabled"));
}

TEST_CASE("options that cannot work are refused when the runtime is made", "[process]") {
    CHECK_THROWS_AS(tandem::runtime(pool_options(2, 64 * 1024)), std::invalid_argument);
}

// ---- the parent dies ----------------------------------------------------------------------------

namespace {
bool started_as_child() {
    return std::getenv("TANDEM_PROCESS_TEST_CHILD") != nullptr;
}
}  // namespace

TEST_CASE("child: makes a pool, reports its processes, then waits to be killed",
          "[.child_pool_then_wait]") {
    if (!started_as_child()) return;
    tandem::runtime rt(pool_options(2));
    (void)rt.block_on(tandem::offload_to_process(worker_pid));
    std::string line;
    for (pid_t pid : children()) line += std::to_string(pid) + " ";
    line += "\n";
    (void)!::write(STDOUT_FILENO, line.data(), line.size());
    // A job keeps one worker busy when the kill comes.
    rt.spawn([]() -> tandem::task<> { co_await tandem::offload_to_process(spins_forever, 0); }());
    for (;;) ::pause();
}

TEST_CASE("when the parent is SIGKILLed, the zygote and every worker exit within a second",
          "[process]") {
    int out[2];
    REQUIRE(::pipe(out) == 0);
    const pid_t pid =
        start_self("[.child_pool_then_wait]", "TANDEM_PROCESS_TEST_CHILD=1", -1, out[1]);
    REQUIRE(pid >= 0);
    ::close(out[1]);
    std::string text;
    char buf[256];
    pollfd p{out[0], POLLIN, 0};
    while (text.find('\n') == std::string::npos && ::poll(&p, 1, 20'000) == 1) {
        const ssize_t n = ::read(out[0], buf, sizeof buf);
        if (n <= 0) break;
        text.append(buf, static_cast<std::size_t>(n));
    }
    ::close(out[0]);
    std::istringstream in(text);
    std::vector<pid_t> pool_pids;
    for (pid_t q; in >> q;) pool_pids.push_back(q);
    CHECK(pool_pids.size() == 3);  // the zygote and two workers
    ::kill(pid, SIGKILL);
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    for (pid_t q : pool_pids) {
        CAPTURE(q);
        CHECK(exited_within(q, 1000ms));
    }
}

// ---- workers that cannot be forked ----------------------------------------------------------

namespace {

/// Runs this binary again with only the test case `tag`, in a fresh process
/// (a seccomp filter cannot be removed, and TSan wants no fork of a threaded
/// process); returns its wait status.
int in_fresh_process(const char* tag) {
    const pid_t pid = start_self(tag, "TANDEM_PROCESS_TEST_CHILD=1");
    REQUIRE(pid >= 0);
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    return status;
}

#if defined(__x86_64__)
/// Makes clone3 fail with EPERM for this process and its future children,
/// as a container's seccomp profile may (the zygote forks workers with it).
bool block_clone3() {
    sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_clone3, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    sock_fprog prog{};
    prog.len = static_cast<unsigned short>(sizeof filter / sizeof filter[0]);
    prog.filter = filter;
    return ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 &&
           ::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) == 0;
}
#endif

}  // namespace

TEST_CASE("child: makes a runtime where clone3 fails", "[.child_clone3_blocked]") {
    if (!started_as_child()) return;
#if defined(__x86_64__)
    if (!block_clone3()) ::_exit(10);
    try {
        tandem::runtime rt(pool_options(2));
        ::_exit(11);  // it should not have started
    } catch (const std::system_error& e) {
        const std::string what = e.what();
        const bool named = what.find("spawning worker 0") != std::string::npos &&
                           what.find("clone3") != std::string::npos;
        if (e.code().value() != EPERM || !named) ::_exit(12);
        ::_exit(children().empty() ? 0 : 14);  // the zygote was reaped
    } catch (...) {
        ::_exit(13);
    }
#else
    ::_exit(0);
#endif
}

TEST_CASE("when no worker can be forked, making the runtime throws the errno and the step",
          "[process]") {
    const int status = in_fresh_process("[.child_clone3_blocked]");
    REQUIRE(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
}
