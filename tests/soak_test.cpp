// SPDX-License-Identifier: MIT

// The soak (issue 7): a bounded run (TANDEM_SOAK_SECONDS, default 60) of mixed load with faults
// injected all along, on a runtime with two io threads and a process pool, then an audit of
// what is left. Hidden tag: `./test.sh --suite soak`, or `soak_test '[.soak]'`.
//
// The load, spread over both io threads:
//  - echo: 1,000 TCP connections (fewer, with a message, if the fd limit cannot hold them) to
//    two echo servers, one listener and a task per connection on each loop; every client sends
//    messages of random size (1 B to 128 KiB) and checks the echo byte for byte;
//  - http: the HTTP client against a real nginx (bench/nginx_fixture.hpp): GETs of files of five
//    sizes (0 B to 1 MiB), plain, chunked and Connection: close, and 404s, bodies checked;
//  - jobs: offload_to_process, of which 1 % SIGKILL or abort() their worker (worker_crashed),
//    1 % hang past a timeout (timed_out), 1 % throw (remote_error); the rest return a value
//    that is checked;
//  - cancellations: a few percent of each run under a random short timeout, a stop token that a
//    plain thread stops at a random moment, or a when_any race against a random sleep. A client
//    whose exchange was cancelled closes the connection and opens another, as a real one would.
// The audit: every operation started ended with its kind's expected result or with the
// cancellation error its plan allows, nothing else; the pool's crash and kill counters agree
// with what was injected; after the runtime is destroyed, the open fds, threads and /dev/shm
// are as at the start, no child or worker process is left, and RSS is within 32 MiB of the
// baseline taken after a short warm-up run of the same load.
// TANDEM_TEST_SEED=<n> replays the random choices (not the timing: that is the point).

#include <tandem/tandem.hpp>

#include <catch2/catch.hpp>

#include "../bench/nginx_fixture.hpp"
#include "soak_support.hpp"
#include "support.hpp"
#include "sync_support.hpp"

#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <span>
#include <stop_token>
#include <string>
#include <system_error>
#include <thread>
#include <tuple>
#include <typeinfo>
#include <utility>
#include <vector>

namespace {

using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;
using soak_support::cancel_mode;
using soak_support::tally;

/// The watchdog of tests/main.cpp gives a test case 60 s, less than the soak takes. It reads
/// TANDEM_TEST_WATCHDOG_SECONDS when the run starts, after static initialisation: set it here
/// (unless the caller did) to the soak's length plus room for start, warm-up and audit.
struct watchdog_for_soak {
    watchdog_for_soak() {
        const std::string limit = std::to_string(int(soak_support::soak_seconds()) + 150);
        ::setenv("TANDEM_TEST_WATCHDOG_SECONDS", limit.c_str(), 0);
    }
} const soak_watchdog;

constexpr unsigned io_threads = 2;
constexpr unsigned pool_workers = 4;
constexpr unsigned wanted_connections = 1000;
constexpr unsigned http_tasks_per_loop = 8;
constexpr unsigned job_streams_per_loop = 4;
constexpr auto hang_limit = 20ms;  // the timeout of a job that hangs
// RSS after the run against after the warm-up. Measured over six 60 s runs: +3.6 to +18.6 MiB,
// all of it pages malloc keeps (after malloc_trim: +1 to +5.5 MiB; malloc's bytes in use: the
// same 3.4 MiB before and after), so 32 MiB leaves room for a busier allocator. A leak of 1 KiB
// per cancelled operation (~30,000 a minute) would exceed it; heap_bound_kib catches less.
constexpr std::uint64_t rss_bound_kib = 32 * 1024;
constexpr std::uint64_t heap_bound_kib = 1024;

// Under AddressSanitizer memory is not bounded here: its quarantine keeps freed blocks (256 MiB
// by default) and its allocator keeps their pages, so RSS says nothing about leaks. Its
// LeakSanitizer checks for them when the process exits instead.
#if defined(__SANITIZE_ADDRESS__)
constexpr bool memory_is_bounded = false;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool memory_is_bounded = false;
#else
constexpr bool memory_is_bounded = true;
#endif
#else
constexpr bool memory_is_bounded = true;
#endif

std::uint64_t mix(std::uint64_t x) {  // splitmix64's finaliser
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

std::mt19937_64 rng_for(std::uint64_t seed, std::uint64_t stream, std::uint64_t id) {
    return std::mt19937_64(mix(seed ^ mix(stream << 32 ^ id)));
}

std::uint64_t below(std::mt19937_64& rng, std::uint64_t n) {
    return rng() % n;
}

std::string bytes_of(std::size_t n, std::uint64_t seed) {
    std::string s(n, '\0');
    std::mt19937_64 rng(seed);
    for (std::size_t i = 0; i < n; i += 8) {
        const std::uint64_t v = rng();
        std::memcpy(s.data() + i, &v, std::min<std::size_t>(8, n - i));
    }
    return s;
}

// ---- the jobs, run in the workers ----------------------------------------------------------

enum class job_kind : int { value, throws, crash_kill, crash_abort, hang };

using job_result = std::tuple<std::uint64_t, std::string, int>;

std::uint64_t churn(std::uint64_t seed, std::uint32_t rounds, const std::string& payload) {
    std::uint64_t h = seed;
    for (std::uint32_t i = 0; i < rounds; ++i) h = mix(h + i);
    for (char c : payload) h = (h ^ static_cast<unsigned char>(c)) * 0x100000001b3ULL;
    return h;
}

/// A job: its hash, the first `echo_len` bytes of its payload, the worker's pid. Or the fault
/// it was told to commit.
job_result soak_job(int kind, std::uint64_t seed, std::uint32_t rounds, std::string payload,
                    std::uint32_t echo_len) {
    switch (static_cast<job_kind>(kind)) {
        case job_kind::throws:
            throw std::runtime_error("injected failure");
        case job_kind::crash_kill:
            ::raise(SIGKILL);
            break;
        case job_kind::crash_abort:
            std::abort();
        case job_kind::hang:
            for (;;) ::pause();
        case job_kind::value:
            break;
    }
    return {churn(seed, rounds, payload), payload.substr(0, echo_len), int(::getpid())};
}

/// Runs in each worker before its first job: the aborts must not write core files.
void no_core_files() {
    rlimit none{0, 0};
    ::setrlimit(RLIMIT_CORE, &none);
}

// ---- shared state -----------------------------------------------------------------------------

struct http_file {
    std::string name;
    std::string body;
};

/// What every task of one run reads and counts into. Lives until the runtime is gone.
struct soak_state {
    std::uint64_t seed = 0;
    steady::time_point deadline{};
    sync_support::canceller* canceller = nullptr;
    tandem::http_client* client = nullptr;
    const nginx_fixture::nginx_server* web = nullptr;
    const std::vector<http_file>* files = nullptr;
    std::array<tandem::address, io_threads> servers{};

    soak_support::error_log errors;
    tally echo{"echo"}, http{"http"};
    tally job_value{"job value"}, job_throw{"job throws"}, job_crash{"job crashes"},
        job_hang{"job hangs"};
    soak_support::counter connects{0}, echo_bytes{0}, http_bytes{0}, http_404{0};
    soak_support::counter crash_kill{0}, crash_abort{0};
    soak_support::counter accepted{0}, server_eof{0}, server_reset{0};
    tally server{"echo server"};  // only `unexpected` is used

    std::mutex pids_mutex;
    std::set<int> worker_pids;  // every worker that returned a value

    tally& job_tally(job_kind k) {
        switch (k) {
            case job_kind::value:
                return job_value;
            case job_kind::throws:
                return job_throw;
            case job_kind::crash_kill:
            case job_kind::crash_abort:
                return job_crash;
            case job_kind::hang:
                break;
        }
        return job_hang;
    }
};

// ---- cancellation plans ---------------------------------------------------------------------

struct cancel_plan {
    cancel_mode mode = cancel_mode::none;
    std::chrono::microseconds after{0};  // for a timeout or a race
};

/// `percent` % of the plans cancel, spread over the modes (a hanging job has its own timeout,
/// so it gets no second one), after a random moment up to `max_us`.
cancel_plan pick_plan(std::mt19937_64& rng, unsigned percent, unsigned max_us, bool no_deadline) {
    cancel_plan p;
    if (below(rng, 100) >= percent) return p;
    const unsigned modes = no_deadline ? 2 : 3;
    const unsigned m = unsigned(below(rng, modes));
    p.mode = no_deadline ? (m == 0 ? cancel_mode::stop_token : cancel_mode::race)
                         : static_cast<cancel_mode>(m + 1);
    p.after = std::chrono::microseconds(below(rng, max_us + 1));
    return p;
}

/// How an operation under a plan ended, when it did not throw.
enum class ending { completed, cancelled };

/// Runs `t` under `plan`; nullopt (and *how = cancelled) when the plan's cancellation ended it
/// with the plan's own error: timed_out for a timeout, operation_cancelled for a stop token, the
/// sleep winning the race. Every other exception goes to the caller.
template <class T>
tandem::task<std::optional<T>> under(cancel_plan plan, tandem::task<T> t,
                                     sync_support::canceller* canceller, ending* how) {
    *how = ending::completed;
    switch (plan.mode) {
        case cancel_mode::none:
            co_return co_await std::move(t);
        case cancel_mode::deadline:
            try {
                co_return co_await tandem::timeout(plan.after, std::move(t));
            } catch (const tandem::timed_out&) {
                *how = ending::cancelled;
            }
            co_return std::nullopt;
        case cancel_mode::stop_token:
            try {
                co_return co_await tandem::with_stop_token(canceller->token(), std::move(t));
            } catch (const tandem::operation_cancelled&) {
                *how = ending::cancelled;
            }
            co_return std::nullopt;
        case cancel_mode::race:
            break;
    }
    auto r = co_await tandem::when_any(std::move(t), tandem::sleep_for(plan.after));
    if (r.index() == 1) {
        *how = ending::cancelled;
        co_return std::nullopt;
    }
    co_return std::move(std::get<0>(r));
}

/// Counts the start of an operation under `plan`.
void count_start(tally& t, cancel_plan plan) {
    t.started.fetch_add(1);
    t.planned[unsigned(plan.mode)].fetch_add(1);
}

/// Counts an operation that ended with its kind's expected result, despite its plan if any.
void count_done(tally& t, cancel_plan plan) {
    t.done.fetch_add(1);
    if (plan.mode != cancel_mode::none) t.survived[unsigned(plan.mode)].fetch_add(1);
}

void count_cancelled(tally& t, cancel_plan plan) {
    t.cancelled[unsigned(plan.mode)].fetch_add(1);
}

// ---- echo -------------------------------------------------------------------------------------

tandem::task<> echo_handler(tandem::tcp_stream s, soak_state* st) {
    std::vector<std::byte> buf(16384);
    try {
        for (;;) {
            const std::size_t n = co_await s.read_some(buf);
            if (n == 0) break;
            co_await s.write_all(std::span(buf).first(n));
        }
        st->server_eof.fetch_add(1);
    } catch (const std::system_error& e) {
        // A client that cancelled an exchange closes its end mid-way.
        if (e.code() == std::errc::connection_reset || e.code() == std::errc::broken_pipe) {
            st->server_reset.fetch_add(1);
        } else {
            st->errors.add(st->server, e.what());
        }
    } catch (const std::exception& e) {
        st->errors.add(st->server, e.what());
    }
}

tandem::task<> accept_loop(tandem::tcp_listener* listener, tandem::task_group* group,
                           soak_state* st) {
    for (;;) {
        tandem::tcp_stream s = co_await listener->accept();
        st->accepted.fetch_add(1);
        group->spawn(echo_handler(std::move(s), st));
    }
}

/// Accepts until `stop`, then waits for its connections to end (the clients close them).
tandem::task<> echo_server(tandem::tcp_listener listener, std::stop_token stop, soak_state* st) {
    tandem::task_group group;
    try {
        co_await tandem::with_stop_token(stop, accept_loop(&listener, &group, st));
    } catch (const tandem::operation_cancelled&) {
    } catch (const std::exception& e) {
        st->errors.add(st->server, std::string("accept: ") + e.what());
    }
    listener.close();
    try {
        co_await tandem::timeout(30s, group.join());
    } catch (const std::exception& e) {
        st->errors.add(st->server, std::string("connections still open 30 s after the clients "
                                               "closed theirs: ") +
                                       e.what());
    }
}

/// 85 % up to 512 B, 13 % up to 16 KiB, 2 % up to 128 KiB.
std::size_t message_size(std::mt19937_64& rng) {
    const auto r = below(rng, 100);
    if (r < 85) return 1 + below(rng, 512);
    if (r < 98) return 513 + below(rng, 16384 - 512);
    return 16385 + below(rng, 131072 - 16384);
}

tandem::task<std::size_t> exchange(tandem::tcp_stream* s, std::span<const std::byte> out,
                                   std::span<std::byte> in) {
    co_await tandem::when_all(s->write_all(out), s->read_exact(in));
    co_return in.size();
}

/// One message and its echo on `s`; a cancelled exchange leaves the stream at an unknown
/// position, so the client closes it.
tandem::task<> echo_once(tandem::tcp_stream* s, std::mt19937_64* rng, soak_state* st) {
    const std::size_t n = message_size(*rng);
    const std::string out = bytes_of(n, (*rng)());
    std::vector<std::byte> in(n);
    const cancel_plan plan = pick_plan(*rng, 2, 400, false);
    count_start(st->echo, plan);
    ending how = ending::completed;
    try {
        const auto got = co_await under(plan, exchange(s, std::as_bytes(std::span(out)), in),
                                        st->canceller, &how);
        if (how == ending::cancelled) {
            count_cancelled(st->echo, plan);
            s->close();
        } else if (got != n || std::memcmp(in.data(), out.data(), n) != 0) {
            st->errors.add(st->echo, "echo of " + std::to_string(n) + " bytes differs");
            s->close();
        } else {
            count_done(st->echo, plan);
            st->echo_bytes.fetch_add(n);
        }
    } catch (const std::exception& e) {
        st->errors.add(st->echo, std::string("exchange under plan ") +
                                     soak_support::mode_name(unsigned(plan.mode)) + ": " +
                                     e.what());
        s->close();
    }
}

tandem::task<> echo_client(unsigned id, tandem::address to, soak_state* st) {
    auto rng = rng_for(st->seed, 1, id);
    tandem::tcp_stream s;
    while (steady::now() < st->deadline) {
        if (!s.is_open()) {
            try {
                s = co_await tandem::tcp_stream::connect(to);
                st->connects.fetch_add(1);
            } catch (const std::exception& e) {
                st->errors.add(st->echo, std::string("connect: ") + e.what());
            }
            if (!s.is_open()) {
                co_await tandem::sleep_for(10ms);
                continue;
            }
        }
        co_await echo_once(&s, &rng, st);
        co_await tandem::sleep_for(std::chrono::microseconds(below(rng, 50'000)));
    }
    s.close();
}

// ---- http -----------------------------------------------------------------------------------

tandem::task<> http_once(std::mt19937_64* rng, soak_state* st) {
    // Sizes 0 B, 100 B, 4 KiB, 64 KiB, 1 MiB, weighted 10/30/30/25/5.
    static constexpr unsigned weights[] = {10, 40, 70, 95, 100};
    const auto w = below(*rng, 100);
    std::size_t f = 0;
    while (w >= weights[f]) ++f;
    const http_file& file = (*st->files)[f];
    const auto v = below(*rng, 100);  // 88 % plain, 8 % chunked, 2 % close, 2 % missing
    const bool missing = v >= 98;
    const std::string path = missing  ? "/no/such/" + file.name
                             : v < 88 ? "/" + file.name
                             : v < 96 ? "/chunked/" + file.name
                                      : "/close/" + file.name;
    const cancel_plan plan = pick_plan(*rng, 3, 3000, false);
    count_start(st->http, plan);
    ending how = ending::completed;
    try {
        auto r = co_await under(plan, st->client->get(st->web->url(path)), st->canceller, &how);
        if (how == ending::cancelled) {
            count_cancelled(st->http, plan);
        } else if (missing ? r->status == 404 : r->status == 200 && r->body == file.body) {
            count_done(st->http, plan);
            st->http_bytes.fetch_add(r->body.size());
            if (missing) st->http_404.fetch_add(1);
        } else {
            st->errors.add(st->http, "GET " + path + ": status " + std::to_string(r->status) +
                                         ", " + std::to_string(r->body.size()) + " bytes");
        }
    } catch (const std::exception& e) {
        st->errors.add(st->http, "GET " + path + " under plan " +
                                     soak_support::mode_name(unsigned(plan.mode)) + ": " +
                                     e.what());
    }
}

tandem::task<> http_worker(unsigned id, soak_state* st) {
    auto rng = rng_for(st->seed, 2, id);
    while (steady::now() < st->deadline) {
        co_await http_once(&rng, st);
        co_await tandem::sleep_for(std::chrono::microseconds(below(rng, 10'000)));
    }
}

// ---- jobs -----------------------------------------------------------------------------------

struct job_spec {
    job_kind kind = job_kind::value;
    std::uint64_t seed = 0;
    std::uint32_t rounds = 0;
    std::string payload;
    std::uint32_t echo_len = 0;
    cancel_plan plan;
};

/// 1 % crash (half SIGKILL, half abort), 1 % hang, 1 % throw, the rest a value; 3 % cancelled.
job_spec pick_job(std::mt19937_64& rng) {
    job_spec j;
    const auto k = below(rng, 200);
    j.kind = k == 0   ? job_kind::crash_kill
             : k == 1 ? job_kind::crash_abort
             : k < 4  ? job_kind::hang
             : k < 6  ? job_kind::throws
                      : job_kind::value;
    j.seed = rng();
    j.rounds = std::uint32_t(1000 + below(rng, 20000));
    const std::size_t size = below(rng, 100) == 0 ? below(rng, 256 << 10) : below(rng, 4096);
    j.payload = bytes_of(size, rng());
    j.echo_len = std::uint32_t(below(rng, size + 1));
    j.plan = pick_plan(rng, 3, 3000, j.kind == job_kind::hang);
    return j;
}

/// Whether `e`, thrown by a job of kind `k`, is the fault it was told to commit.
bool is_injected(job_kind k, const std::exception& e) {
    const std::string what = e.what();
    switch (k) {
        case job_kind::crash_kill:
            return dynamic_cast<const tandem::worker_crashed*>(&e) != nullptr &&
                   what.find("killed by signal 9") != std::string::npos;
        case job_kind::crash_abort:
            return dynamic_cast<const tandem::worker_crashed*>(&e) != nullptr &&
                   what.find("killed by signal 6") != std::string::npos;
        case job_kind::throws:
            return dynamic_cast<const tandem::remote_error*>(&e) != nullptr &&
                   what.find("injected failure") != std::string::npos;
        case job_kind::hang:
            return dynamic_cast<const tandem::timed_out*>(&e) != nullptr;
        case job_kind::value:
            break;
    }
    return false;
}

tandem::task<> run_job(job_spec j, soak_state* st) {
    tally& t = st->job_tally(j.kind);
    count_start(t, j.plan);
    if (j.kind == job_kind::crash_kill) st->crash_kill.fetch_add(1);
    if (j.kind == job_kind::crash_abort) st->crash_abort.fetch_add(1);
    ending how = ending::completed;
    try {
        auto job = tandem::offload_to_process(soak_job, int(j.kind), j.seed, j.rounds, j.payload,
                                              j.echo_len);
        if (j.kind == job_kind::hang) job = tandem::timeout(hang_limit, std::move(job));
        auto r = co_await under(j.plan, std::move(job), st->canceller, &how);
        if (how == ending::cancelled) {
            count_cancelled(t, j.plan);
        } else if (j.kind != job_kind::value) {
            st->errors.add(t, "a job told to fail returned a value");
        } else if (std::get<0>(*r) != churn(j.seed, j.rounds, j.payload) ||
                   std::get<1>(*r) != j.payload.substr(0, j.echo_len)) {
            st->errors.add(t, "wrong result");
        } else {
            count_done(t, j.plan);
            std::lock_guard lock(st->pids_mutex);
            st->worker_pids.insert(std::get<2>(*r));
        }
    } catch (const std::exception& e) {
        if (is_injected(j.kind, e)) {
            count_done(t, j.plan);
        } else {
            st->errors.add(t, std::string("under plan ") +
                                  soak_support::mode_name(unsigned(j.plan.mode)) + ": " +
                                  typeid(e).name() + ": " + e.what());
        }
    }
}

tandem::task<> job_stream(unsigned id, soak_state* st) {
    auto rng = rng_for(st->seed, 3, id);
    while (steady::now() < st->deadline) {
        co_await run_job(pick_job(rng), st);
        co_await tandem::sleep_for(std::chrono::microseconds(below(rng, 10'000)));
    }
}

// ---- one run --------------------------------------------------------------------------------

/// What a run leaves for the audit besides its counters.
struct run_result {
    tandem::process_pool_stats pool{};
    bool pool_settled = false;
    bool workload_finished = false;
    bool servers_finished = false;
    std::set<pid_t> pool_processes;  // the zygote and whatever else the runtime forked
    std::vector<std::string> escaped;
    std::vector<std::uint64_t> rss_kib;  // every 5 s during the load
    double seconds = 0;
};

tandem::runtime_options soak_options() {
    tandem::runtime_options o;
    o.io_threads = io_threads;
    o.processes.workers = pool_workers;
    o.processes.arena_bytes = std::size_t{64} << 20;
    o.processes.initializer = &no_core_files;
    return o;
}

/// Waits until the pool has replaced every worker that died (replacements are asynchronous).
bool settle(tandem::runtime& rt, tandem::process_pool_stats* out) {
    const auto until = steady::now() + 10s;
    for (;;) {
        *out = rt.processes().stats();
        const bool whole = out->workers_alive == out->workers &&
                           out->replacements == out->crashes + out->kills + out->recycled;
        if (whole || steady::now() > until) return whole;
        std::this_thread::sleep_for(5ms);
    }
}

void start_load(tandem::runtime& rt, soak_support::root_set& roots, soak_state& st,
                unsigned connections) {
    for (unsigned i = 0; i < connections; ++i) {
        roots.start(rt, i % io_threads,
                    echo_client(i, st.servers[(i / io_threads) % io_threads], &st));
    }
    for (unsigned i = 0; i < http_tasks_per_loop * io_threads; ++i) {
        roots.start(rt, i % io_threads, http_worker(i, &st));
    }
    for (unsigned i = 0; i < job_streams_per_loop * io_threads; ++i) {
        roots.start(rt, i % io_threads, job_stream(i, &st));
    }
}

run_result run_soak(soak_state& st, double seconds, unsigned connections, pid_t nginx_pid) {
    run_result out;
    sync_support::canceller canceller(st.seed);
    st.canceller = &canceller;
    soak_support::root_set load, servers;
    tandem::http_client_options http_options;
    http_options.max_connections_per_host = 8;
    tandem::http_client client(http_options);
    st.client = &client;
    std::stop_source stop_servers;
    const auto start = steady::now();
    {
        tandem::runtime rt(soak_options());
        for (pid_t p : children()) {
            if (p != nginx_pid) out.pool_processes.insert(p);
        }
        for (unsigned i = 0; i < io_threads; ++i) {
            auto listener = tandem::tcp_listener::bind(tandem::address::parse("127.0.0.1:0"));
            st.servers[i] = listener.local_address();
            servers.start(rt, i, echo_server(std::move(listener), stop_servers.get_token(), &st));
        }
        st.deadline = steady::now() + std::chrono::duration_cast<steady::duration>(
                                          std::chrono::duration<double>(seconds));
        start_load(rt, load, st, connections);
        // Every task checks the deadline between operations; a job or request takes far
        // less than 30 s unless something is stuck.
        const auto give_up = st.deadline + 30s;
        for (;;) {  // sampling RSS every 5 s, to show its course in the summary
            if (load.wait_for(std::min<steady::duration>(5s, give_up - steady::now()))) {
                out.workload_finished = true;
                break;
            }
            out.rss_kib.push_back(soak_support::status_kib("VmRSS"));
            if (steady::now() >= give_up) break;
        }
        stop_servers.request_stop();
        out.servers_finished = out.workload_finished && servers.wait_for(40s);
        out.pool_settled = settle(rt, &out.pool);
        out.escaped = load.escaped();
        for (const auto& e : servers.escaped()) out.escaped.push_back(e);
    }
    out.seconds = std::chrono::duration<double>(steady::now() - start).count();
    return out;
}

// ---- the audit ------------------------------------------------------------------------------

/// started = done + cancelled + unexpected, no unexpected, and no cancellation beyond its plan.
void audit_tally(const tally& t) {
    INFO("operations of kind \"" << t.name << "\": started " << t.started << ", ended as expected "
                                 << t.done << ", cancelled as planned " << t.cancelled_total()
                                 << ", unexpected errors " << t.unexpected);
    CHECK(t.started == t.done + t.cancelled_total() + t.unexpected);
    CHECK(t.unexpected == 0);
    CHECK(t.cancelled[0] == 0);
    for (unsigned m = 1; m < soak_support::cancel_modes; ++m) {
        INFO("cancellation by " << soak_support::mode_name(m) << ": planned " << t.planned[m]
                                << ", took effect " << t.cancelled[m]);
        INFO("finished before the cancellation reached it: " << t.survived[m]);
        CHECK(t.planned[m] == t.cancelled[m] + t.survived[m]);
    }
}

void audit_counters(soak_state& st, const run_result& r) {
    INFO("seed " << st.seed << " (TANDEM_TEST_SEED replays the choices)");
    for (const auto& m : st.errors.messages()) UNSCOPED_INFO("unexpected: " << m);
    for (const auto& e : r.escaped) UNSCOPED_INFO("escaped a task: " << e);
    CHECK(r.escaped.empty());
    {
        INFO("the load tasks did not finish within 30 s of the deadline: something hangs");
        REQUIRE(r.workload_finished);
    }
    {
        INFO("the echo servers did not finish after the clients closed their connections");
        CHECK(r.servers_finished);
    }
    for (const tally* t : {&st.echo, &st.http, &st.job_value, &st.job_throw, &st.job_crash,
                           &st.job_hang, &st.server}) {
        audit_tally(*t);
    }
    // Each connection the clients made was accepted, and ended either cleanly or, when its
    // client had cancelled an exchange and closed mid-way, with a reset: at most one each.
    INFO("connections: made " << st.connects << ", accepted " << st.accepted << ", ended cleanly "
                              << st.server_eof << ", reset " << st.server_reset);
    CHECK(st.accepted == st.connects);
    CHECK(st.server_eof + st.server_reset == st.accepted);
    CHECK(st.server_reset <= st.echo.cancelled_total());
    // The pool saw what was injected. A crash job whose worker crashed is counted as a crash;
    // one cancelled before its worker died either never ran or had its worker killed (a kill).
    // So crashes lie between the crashes seen and those plus the crash jobs cancelled.
    // Every kill is for a job that timed out or was cancelled while it ran.
    const auto& p = r.pool;
    const std::uint64_t all_cancelled =
        st.job_value.cancelled_total() + st.job_throw.cancelled_total() +
        st.job_crash.cancelled_total() + st.job_hang.cancelled_total();
    INFO("pool: crashes " << p.crashes << ", kills " << p.kills << ", replacements "
                          << p.replacements << ", jobs done " << p.jobs_done << ", alive "
                          << p.workers_alive << "/" << p.workers << ", failed starts "
                          << p.failed_starts);
    {
        INFO("crash jobs: " << st.crash_kill << " SIGKILL + " << st.crash_abort
                            << " abort injected, " << st.job_crash.done
                            << " failed with worker_crashed naming the signal, "
                            << st.job_crash.cancelled_total() << " cancelled first");
        CHECK(st.crash_kill + st.crash_abort == st.job_crash.done + st.job_crash.cancelled_total());
        INFO("hanging jobs: " << st.job_hang.started << " injected, " << st.job_hang.done
                              << " timed_out, " << st.job_hang.cancelled_total()
                              << " cancelled first");
        CHECK(st.job_hang.started == st.job_hang.done + st.job_hang.cancelled_total());
    }
    CHECK(r.pool_settled);
    CHECK(p.crashes >= st.job_crash.done);
    CHECK(p.crashes <= st.job_crash.done + st.job_crash.cancelled_total());
    CHECK(p.kills <= st.job_hang.done + all_cancelled);
    CHECK(p.replacements == p.crashes + p.kills);
    CHECK(p.failed_starts == 0);
    CHECK(p.recycled == 0);
    const std::uint64_t returned = st.job_value.done + st.job_throw.done;
    CHECK(p.jobs_done >= returned);
    CHECK(p.jobs_done <=
          returned + st.job_value.cancelled_total() + st.job_throw.cancelled_total());
}

/// No worker (every one that returned a value) and no other process the runtime forked (the
/// zygote) is still running; no child of ours is left at all once nginx is gone.
void audit_processes(soak_state& st, const run_result& r) {
    std::vector<pid_t> alive;
    for (int pid : st.worker_pids) {
        if (!exited_within(pid, 2000ms)) alive.push_back(pid);
    }
    for (pid_t pid : r.pool_processes) {
        if (!exited_within(pid, 2000ms)) alive.push_back(pid);
    }
    std::string names;
    for (pid_t pid : alive) names += std::to_string(pid) + " ";
    INFO("processes of the pool still running after the runtime was destroyed: " << names);
    CHECK(alive.empty());
    CHECK(!r.pool_processes.empty());  // the zygote was seen, so the check above means something
}

void print_summary(const char* what, soak_state& st, const run_result& r, unsigned connections) {
    const double s = r.seconds;
    auto line = [s](const tally& t) {
        std::printf(
            "  %-12s %9llu started %9.0f/s  %9llu ok  %6llu cancelled (%llu timeout, "
            "%llu stop, %llu race of %llu planned)  %llu unexpected\n",
            t.name, (unsigned long long)t.started.load(), double(t.started) / s,
            (unsigned long long)t.done.load(), (unsigned long long)t.cancelled_total(),
            (unsigned long long)t.cancelled[1].load(), (unsigned long long)t.cancelled[2].load(),
            (unsigned long long)t.cancelled[3].load(),
            (unsigned long long)t.planned_cancellations(), (unsigned long long)t.unexpected.load());
    };
    std::printf("soak %s: %.1f s, seed %llu, %u connections on %u io threads, %u workers\n", what,
                s, (unsigned long long)st.seed, connections, io_threads, pool_workers);
    for (const tally* t :
         {&st.echo, &st.http, &st.job_value, &st.job_throw, &st.job_crash, &st.job_hang}) {
        line(*t);
    }
    std::printf(
        "  echo: %llu connections made (%llu replacing cancelled ones), %.1f MiB echoed; "
        "server: %llu clean ends, %llu resets\n",
        (unsigned long long)st.connects.load(),
        (unsigned long long)(st.connects - std::min<std::uint64_t>(st.connects, connections)),
        double(st.echo_bytes) / (1 << 20), (unsigned long long)st.server_eof.load(),
        (unsigned long long)st.server_reset.load());
    std::uint64_t planned = 0, took = 0, late = 0;
    std::array<std::uint64_t, soak_support::cancel_modes> by_mode{};
    for (const tally* t :
         {&st.echo, &st.http, &st.job_value, &st.job_throw, &st.job_crash, &st.job_hang}) {
        planned += t->planned_cancellations();
        took += t->cancelled_total();
        late += t->survived_total();
        for (unsigned m = 1; m < soak_support::cancel_modes; ++m) by_mode[m] += t->planned[m];
    }
    std::printf(
        "  cancellations: %llu planned (%llu timeout, %llu stop_token, %llu when_any), "
        "%llu took effect, %llu came too late (the operation had finished)\n",
        (unsigned long long)planned, (unsigned long long)by_mode[1], (unsigned long long)by_mode[2],
        (unsigned long long)by_mode[3], (unsigned long long)took, (unsigned long long)late);
    std::string rss;
    for (std::uint64_t k : r.rss_kib) rss.append(" ").append(std::to_string(k / 1024));
    std::printf("  RSS every 5 s during the load (MiB):%s\n", rss.c_str());
    std::printf("  http: %.1f MiB of bodies, %llu 404s\n", double(st.http_bytes) / (1 << 20),
                (unsigned long long)st.http_404.load());
    std::printf(
        "  jobs: injected %llu SIGKILL + %llu abort, %llu hangs; pool: %llu crashes, "
        "%llu kills, %llu replacements, %llu jobs done, %zu distinct workers answered\n",
        (unsigned long long)st.crash_kill.load(), (unsigned long long)st.crash_abort.load(),
        (unsigned long long)st.job_hang.started.load(), (unsigned long long)r.pool.crashes,
        (unsigned long long)r.pool.kills, (unsigned long long)r.pool.replacements,
        (unsigned long long)r.pool.jobs_done, st.worker_pids.size());
}

/// The connection count the fd limit allows: each holds two fds (client and server side),
/// plus room for the rings, the pool, nginx's and the HTTP client's sockets.
unsigned connections_for(rlim_t fd_soft_limit) {
    constexpr rlim_t reserve = 512;
    const rlim_t fits = fd_soft_limit > reserve ? (fd_soft_limit - reserve) / 2 : 0;
    return unsigned(std::min<rlim_t>(wanted_connections, fits));
}

std::vector<http_file> make_files(std::uint64_t seed) {
    std::vector<http_file> files;
    for (std::size_t size : {std::size_t{0}, std::size_t{100}, std::size_t{4096},
                             std::size_t{65536}, std::size_t{1} << 20}) {
        std::string name = "f";  // (not "f" + ...: g++ 12 sees a false -Wrestrict in that)
        name.append(std::to_string(size)).append(".bin");
        files.push_back({std::move(name), bytes_of(size, seed + size)});
    }
    return files;
}

using soak_support::footprint;

void print_footprint(const footprint& start, const footprint& baseline, const footprint& end) {
    std::printf(
        "  RSS: %.1f MiB at the start, %.1f MiB after the warm-up (baseline), %.1f MiB at "
        "the end (%+.1f MiB, bound +%.0f MiB), peak %.1f MiB\n"
        "  after malloc_trim: RSS %.1f MiB at the start, %.1f after the warm-up, %.1f at the "
        "end; malloc's bytes in use %.1f / %.1f / %.1f MiB (bound +%.0f MiB)\n"
        "  fds: %zu at the start, %zu at the end; threads %zu / %zu; /dev/shm entries "
        "%zu / %zu\n",
        double(start.rss_kib) / 1024, double(baseline.rss_kib) / 1024, double(end.rss_kib) / 1024,
        (double(end.rss_kib) - double(baseline.rss_kib)) / 1024, double(rss_bound_kib) / 1024,
        double(soak_support::status_kib("VmHWM")) / 1024, double(start.trimmed_rss_kib) / 1024,
        double(baseline.trimmed_rss_kib) / 1024, double(end.trimmed_rss_kib) / 1024,
        double(start.heap_kib) / 1024, double(baseline.heap_kib) / 1024,
        double(end.heap_kib) / 1024, double(heap_bound_kib) / 1024, start.fds.size(),
        end.fds.size(), start.threads, end.threads, start.shm.size(), end.shm.size());
    std::fflush(stdout);
}

/// fds, /dev/shm and threads exactly as at the start; memory within its bounds of the baseline.
void audit_footprint(const footprint& start, const footprint& baseline, const footprint& end) {
    {
        const auto leaked = soak_support::minus(end.fds, start.fds);
        std::string what;
        for (const auto& n : leaked) what += n + " -> " + soak_support::fd_target(n) + "; ";
        INFO("open fds: " << start.fds.size() << " at the start, " << end.fds.size()
                          << " at the end; new: " << what << " gone: "
                          << soak_support::names_of(soak_support::minus(start.fds, end.fds)));
        CHECK(end.fds == start.fds);
        CHECK(baseline.fds == start.fds);
    }
    {
        INFO(
            "new in /dev/shm: " << soak_support::names_of(soak_support::minus(end.shm, start.shm)));
        CHECK(end.shm == start.shm);
    }
    {
        INFO("threads: " << start.threads << " at the start, " << end.threads << " at the end");
        CHECK(end.threads == start.threads);
    }
    if (!memory_is_bounded) {
        std::printf(
            "  (RSS and heap not bounded under AddressSanitizer; LeakSanitizer checks at "
            "exit)\n");
        return;
    }
    {
        INFO("RSS " << end.rss_kib << " KiB at the end, " << baseline.rss_kib
                    << " KiB after the warm-up; bound +" << rss_bound_kib << " KiB");
        CHECK(end.rss_kib <= baseline.rss_kib + rss_bound_kib);
    }
    {
        // malloc's own count of bytes in use: a leak shows here even when RSS hides it among
        // pages the allocator keeps (a leaked frame per cancelled operation would be ~5 MiB).
        // 0 under a sanitizer, whose allocator glibc does not see.
        INFO("malloc's bytes in use: " << end.heap_kib << " KiB at the end, " << baseline.heap_kib
                                       << " KiB after the warm-up; bound +" << heap_bound_kib
                                       << " KiB");
        CHECK(end.heap_kib <= baseline.heap_kib + heap_bound_kib);
    }
}

/// Checks the fd limit (raised to the hard one by `limit`) and nginx; the echo connections.
unsigned check_prerequisites(const soak_support::fd_limit& limit) {
    const unsigned connections = connections_for(limit.soft());
    if (connections < wanted_connections) {
        WARN("the fd limit (" << limit.soft() << ") holds only " << connections
                              << " echo connections, not " << wanted_connections);
    }
    REQUIRE(connections > 0);
    INFO("the soak needs nginx (Debian: nginx-light; ./test.sh installs it)");
    REQUIRE(nginx_fixture::nginx_server::available());
    return connections;
}

}  // namespace

TEST_CASE(
    "soak: echo, HTTP and offloaded jobs with crashes, timeouts and cancellations on two "
    "io threads; everything accounted for, nothing left behind",
    "[.soak]") {
    const double seconds = soak_support::soak_seconds();
    const std::uint64_t seed = sync_support::test_seed();
    std::printf(
        "soak: seed %llu (TANDEM_TEST_SEED=%llu replays it), %.0f s (TANDEM_SOAK_SECONDS)\n",
        (unsigned long long)seed, (unsigned long long)seed, seconds);
    std::fflush(stdout);
    soak_support::fd_limit limit;
    const unsigned connections = check_prerequisites(limit);
    const auto files = make_files(seed);
    std::vector<std::pair<std::string, std::string>> contents;
    for (const auto& f : files) contents.emplace_back(f.name, f.body);
    std::optional<nginx_fixture::nginx_server> web;
    web.emplace(nginx_fixture::nginx_options{.files = contents});
    const auto nginx_children = children();
    const auto start = footprint::now();

    // The warm-up: the same load, briefly, so that the baseline includes what the allocator and
    // the kernel keep once such a load has run (malloc's arenas, frame pools, socket buffers).
    soak_state warm;
    warm.seed = mix(seed);
    warm.web = &*web;
    warm.files = &files;
    const run_result warm_result =
        run_soak(warm, std::max(2.0, seconds / 20), connections, web->pid());
    std::printf("soak warm-up: %.1f s, %llu echo exchanges, %llu HTTP requests, %llu jobs\n",
                warm_result.seconds, (unsigned long long)warm.echo.started.load(),
                (unsigned long long)warm.http.started.load(),
                (unsigned long long)(warm.job_value.started + warm.job_throw.started +
                                     warm.job_crash.started + warm.job_hang.started));
    audit_counters(warm, warm_result);
    const auto baseline = footprint::now();

    soak_state st;
    st.seed = seed;
    st.web = &*web;
    st.files = &files;
    const run_result result = run_soak(st, seconds, connections, web->pid());
    const auto end = footprint::now();
    print_summary("run", st, result, connections);
    print_footprint(start, baseline, end);

    audit_counters(st, result);
    audit_processes(st, result);
    audit_processes(warm, warm_result);
    audit_footprint(start, baseline, end);
    {
        INFO("children other than nginx: the pool's zygote and workers must be gone");
        CHECK(children() == nginx_children);
    }
    web.reset();
    INFO("a child process is left after nginx was stopped and reaped");
    CHECK(soak_support::no_children_at_all());
}
