// SPDX-License-Identifier: MIT
// HTTP client benchmark: tandem's load client next to other ways of writing one, all against
// the same nginx (nginx_fixture.hpp, 1 worker) in one run, GET /index.html (1 KiB body) over
// keep-alive connections, no pipelining. Peers, each its own program run as a child process
// (fork + exec, stdout through a pipe), with the command line and RESULT line of
// http_peer_common.hpp:
//
//   tandem_1 / tandem_2   http_load_tandem (examples/http_load.cpp), 1 and 2 io threads
//   tandem_epoll          http_load_tandem, 1 io thread, with io_uring blocked by a seccomp
//                         filter (EPERM, as Docker's default profile does): the runtime's
//                         automatic choice falls back to the epoll backend, and says so on
//                         stderr ("tandem: using the epoll backend: ...")
//   thread_per_request    http_peer_blocking --mode thread-per-request (a new std::thread
//                         per request, blocking sockets)
//   pool64                http_peer_blocking --mode pool: 64 threads, blocking sockets
//   asio_epoll/asio_uring Asio C++20 coroutines, one io_context on one thread; epoll, and
//                         Asio's io_uring backend (ASIO_HAS_IO_URING + ASIO_DISABLE_EPOLL)
//   wrk                   wrk -t1 -c<N> -d<S>s --latency (whole seconds; at least 1)
//
// for connections 10, 100, 1,000 and 10,000. Client CPU (user + system) and peak RSS come
// from wait4()'s rusage for every peer alike; the kernel's TCP work for loopback traffic the
// client sends is in the client's system time. Process start-up and the connect phase are in
// the CPU time too (the same for every peer; it matters most for short runs and 10,000
// connections). With two or more CPUs nginx is pinned to the first and every client to the
// second, so a client never takes CPU from the server (tandem with 2 io threads then shares
// one CPU: it shows the cost of the second thread, not a speed-up). Then tandem's 1-thread
// row is judged against the targets at 100 and 1,000 connections, and the user
// memory of an idle connection is measured (--idle: RSS growth over N idle connections).
// Last, tandem_epoll's CPU/request and requests/s over tandem_1's (io_uring) and Asio's on
// epoll (the fair peer for the fallback), and its memory per idle connection.
//
// A peer whose program is missing is skipped (http_load_tandem is built only once
// examples/http_load.cpp exists). Each child gets a deadline and is killed after it.
// --benchmark_min_time below 0.1 (CI passes 0.01) means a short run: 0.3 s per cell, 10 and
// 100 connections, 1,000 idle connections. Own flags (removed before Google Benchmark sees
// the command line): --http_duration=S --http_connections=10,100 --http_idle=N
// --http_pin=false. Without nginx it prints why and exits 0.

#include "nginx_fixture.hpp"

#include "../tests/block_io_uring.hpp"

#include <benchmark/benchmark.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

namespace {

// ---- settings ------------------------------------------------------------------------------

struct settings {
    double duration = 3;  // seconds per cell (wrk: rounded, at least 1)
    std::vector<int> connections = {10, 100, 1000, 10000};
    int idle = 10000;
    bool pin = true;
    bool short_run = false;
    int server_cpu = -1, client_cpu = -1;  // -1: not pinned
};
settings cfg;

std::vector<int> parse_list(const std::string& text) {
    std::vector<int> v;
    std::istringstream in(text);
    for (std::string item; std::getline(in, item, ',');)
        if (std::atoi(item.c_str()) > 0) v.push_back(std::atoi(item.c_str()));
    return v;
}

/// Reads our own flags out of argv and looks at --benchmark_min_time; leaves the rest.
void parse_settings(int* argc, char** argv) {
    std::optional<double> duration;
    std::optional<int> idle;
    std::optional<std::vector<int>> conns;
    int out = 1;
    for (int i = 1; i < *argc; ++i) {
        const std::string a = argv[i];
        const std::string value = a.substr(a.find('=') + 1);
        if (a.rfind("--benchmark_min_time=", 0) == 0)
            cfg.short_run = std::atof(value.c_str()) < 0.1;
        if (a.rfind("--http_duration=", 0) == 0)
            duration = std::atof(value.c_str());
        else if (a.rfind("--http_connections=", 0) == 0)
            conns = parse_list(value);
        else if (a.rfind("--http_idle=", 0) == 0)
            idle = std::atoi(value.c_str());
        else if (a.rfind("--http_pin=", 0) == 0)
            cfg.pin = value != "false" && value != "0";
        else
            argv[out++] = argv[i];
    }
    *argc = out;
    if (cfg.short_run) cfg = {0.3, {10, 100}, 1000, cfg.pin, true, -1, -1};
    if (duration) cfg.duration = *duration;
    if (conns) cfg.connections = *conns;
    if (idle) cfg.idle = *idle;
    cpu_set_t mine;
    if (cfg.pin && ::sched_getaffinity(0, sizeof mine, &mine) == 0 && CPU_COUNT(&mine) >= 2) {
        for (int c = 0; c < CPU_SETSIZE; ++c) {
            if (!CPU_ISSET(c, &mine)) continue;
            (cfg.server_cpu < 0 ? cfg.server_cpu : cfg.client_cpu) = c;
            if (cfg.client_cpu >= 0) break;
        }
    }
}

// ---- children ------------------------------------------------------------------------------

using deadline_type = std::chrono::steady_clock::time_point;

int ms_until(deadline_type deadline) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    return static_cast<int>(std::clamp<long>(left.count(), 0, 1000));
}

/// Appends what fd delivers to *out until EOF; false if the deadline came first.
bool read_until_eof(int fd, deadline_type deadline, std::string* out) {
    char buf[4096];
    while (std::chrono::steady_clock::now() < deadline) {
        pollfd p{fd, POLLIN, 0};
        const int ready = ::poll(&p, 1, ms_until(deadline));
        if (ready < 0 && errno != EINTR) return true;
        if (ready <= 0) continue;
        const ssize_t n = ::read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return true;
        out->append(buf, static_cast<std::size_t>(n));
    }
    return false;
}

/// Reaps pid, killing it at the deadline (a child may close stdout and still hang).
bool reap(pid_t pid, deadline_type deadline, int* status, rusage* ru) {
    bool in_time = true;
    for (;;) {
        const pid_t got = ::wait4(pid, status, WNOHANG, ru);
        if (got == pid || (got < 0 && errno != EINTR)) return in_time;
        if (in_time && std::chrono::steady_clock::now() >= deadline) {
            ::kill(pid, SIGKILL);
            in_time = false;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
}

struct child_run {
    bool exited = false;  // normally, with status `status`
    int status = 0;
    bool timed_out = false;
    double cpu_s = 0;  // user + system
    long maxrss_kb = 0;
    std::string out;  // stdout
};

/// Runs argv[0] (a path) with stdout captured, RLIMIT_NOFILE raised to its hard limit and,
/// if cfg.client_cpu >= 0, pinned to it; kills it after timeout_s. With `no_io_uring` the
/// io_uring system calls fail with EPERM in the child (seccomp), so tandem runs on epoll.
///
/// ru_maxrss caveat: Linux carries the RSS of the forking process (its anonymous pages, which
/// fork copies) into the child's peak across exec, so the peak reported can never be below
/// this process's anonymous RSS at the fork, printed in the header (about 1 MiB: far below any
/// peer's own). vfork/posix_spawn do not avoid it.
child_run run_child(const std::vector<std::string>& args, double timeout_s,
                    bool no_io_uring = false) {
    std::vector<char*> argv;
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    int pipe_fds[2];
    if (::pipe2(pipe_fds, O_CLOEXEC) != 0) return {};
    cpu_set_t cpus;
    CPU_ZERO(&cpus);
    if (cfg.client_cpu >= 0) CPU_SET(cfg.client_cpu, &cpus);
    rlimit files{};
    ::getrlimit(RLIMIT_NOFILE, &files);
    files.rlim_cur = files.rlim_max;
    std::fflush(nullptr);
    const pid_t pid = ::fork();
    if (pid == 0) {  // async-signal-safe calls only until exec
        ::prctl(PR_SET_PDEATHSIG, SIGKILL);
        ::dup2(pipe_fds[1], STDOUT_FILENO);
        ::setrlimit(RLIMIT_NOFILE, &files);
        if (cfg.client_cpu >= 0) ::sched_setaffinity(0, sizeof cpus, &cpus);
        if (no_io_uring && !tandem_test::block_io_uring(EPERM)) {
            static const char why[] = "cannot block io_uring: seccomp refused the filter\n";
            (void)!::write(STDOUT_FILENO, why, sizeof why - 1);
            ::_exit(126);
        }
        ::execv(argv[0], argv.data());
        ::_exit(127);
    }
    ::close(pipe_fds[1]);
    child_run r;
    if (pid < 0) {
        ::close(pipe_fds[0]);
        return r;
    }
    const deadline_type deadline = std::chrono::steady_clock::now() +
                                   std::chrono::milliseconds(static_cast<long>(timeout_s * 1e3));
    r.timed_out = !read_until_eof(pipe_fds[0], deadline, &r.out);
    ::close(pipe_fds[0]);
    if (r.timed_out) ::kill(pid, SIGKILL);
    int status = 0;
    rusage ru{};
    r.timed_out = !reap(pid, deadline, &status, &ru) || r.timed_out;
    r.exited = WIFEXITED(status);
    r.status = r.exited ? WEXITSTATUS(status) : WTERMSIG(status);
    r.cpu_s = static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
              static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
    r.maxrss_kb = ru.ru_maxrss;
    return r;
}

// ---- what a peer reports -----------------------------------------------------------------

struct cell {
    bool ok = false;
    std::string failure;  // why not ok
    long long requests = 0, errors = 0;
    double seconds = 0, p99_us = 0, cpu_s = 0, rss_mib = 0;

    double req_per_s() const { return seconds > 0 ? static_cast<double>(requests) / seconds : 0; }
    double cpu_us_per_req() const {
        return requests > 0 ? cpu_s * 1e6 / static_cast<double>(requests) : 0;
    }
};

/// The value of "key=" in a line of "key=value" pairs; NaN if absent.
double field(const std::string& line, const std::string& key) {
    const std::size_t at = (" " + line).find(" " + key + "=");
    return at == std::string::npos ? NAN : std::atof(line.c_str() + at + key.size() + 1);
}

/// The last line of `out` that starts with `tag`, or "".
std::string last_line(const std::string& out, const std::string& tag) {
    std::istringstream in(out);
    std::string found;
    for (std::string line; std::getline(in, line);)
        if (line.rfind(tag, 0) == 0) found = line;
    return found;
}

bool parse_result_line(const std::string& out, cell* c) {
    const std::string line = last_line(out, "RESULT ");
    if (line.empty()) return false;
    c->requests = static_cast<long long>(field(line, "requests"));
    c->errors = static_cast<long long>(field(line, "errors"));
    c->seconds = field(line, "seconds");
    c->p99_us = field(line, "p99_us");
    return !std::isnan(c->seconds) && !std::isnan(c->p99_us);
}

/// "2.49ms" -> 2490 (us).
double wrk_time_us(const std::string& text) {
    char* end = nullptr;
    const double v = std::strtod(text.c_str(), &end);
    const std::string unit = end;
    return unit == "us"   ? v
           : unit == "ms" ? v * 1e3
           : unit == "s"  ? v * 1e6
           : unit == "m"  ? v * 6e7
                          : NAN;
}

/// wrk's report: "N requests in 3.00s", "99%  2.49ms", "Socket errors: connect A, read B,
/// write C, timeout D", "Non-2xx or 3xx responses: E". ok = N - E; errors = A+B+C+D+E.
bool parse_wrk(const std::string& out, cell* c) {
    std::istringstream in(out);
    bool got_requests = false, got_p99 = false;
    long long non2xx = 0, socket_errors = 0;
    for (std::string line; std::getline(in, line);) {
        std::istringstream words(line);
        std::string first, second;
        words >> first >> second;
        long long a = 0, b = 0, cc = 0, d = 0;
        if (second == "requests") {
            std::string in_word, secs;
            words >> in_word >> secs;
            c->requests = std::atoll(first.c_str());
            c->seconds = std::atof(secs.c_str());
            got_requests = true;
        } else if (first == "99%") {
            c->p99_us = wrk_time_us(second);
            got_p99 = !std::isnan(c->p99_us);
        } else if (std::sscanf(line.c_str(),
                               " Socket errors: connect %lld, read %lld, write %lld, timeout %lld",
                               &a, &b, &cc, &d) == 4) {
            socket_errors = a + b + cc + d;
        } else if (std::sscanf(line.c_str(), " Non-2xx or 3xx responses: %lld", &a) == 1) {
            non2xx = a;
        }
    }
    c->requests -= non2xx;
    c->errors = socket_errors + non2xx;
    return got_requests && got_p99;
}

std::string describe_failure(const child_run& r, const std::string& out_tail) {
    if (r.timed_out) return "killed after its deadline";
    if (!r.exited) return std::string("killed by signal ") + strsignal(r.status);
    if (r.status != 0) return "exit status " + std::to_string(r.status) + out_tail;
    return "no RESULT line" + out_tail;
}

// ---- peers ---------------------------------------------------------------------------------

struct peer {
    std::string name;   // benchmark name
    std::string label;  // in the table
    std::string program;
    std::vector<std::string> args;  // after the common ones
    bool wrk = false;
    bool no_io_uring = false;  // run with io_uring blocked (tandem: the epoll backend)
};

std::string program_dir() {
    char buf[4096];
    const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
    std::string self(buf, n > 0 ? static_cast<std::size_t>(n) : 0);
    return self.substr(0, self.find_last_of('/') + 1);
}

std::string find_on_path(const std::string& name) {
    std::istringstream dirs(std::getenv("PATH") != nullptr ? std::getenv("PATH") : "/usr/bin");
    for (std::string d; std::getline(dirs, d, ':');)
        if (::access((d + "/" + name).c_str(), X_OK) == 0) return d + "/" + name;
    return "";
}

std::vector<peer> all_peers() {
    const std::string dir = program_dir() + "http_peers/";
    return {
        {"tandem_1", "tandem (1 io thread)", dir + "http_load_tandem", {"--threads", "1"}},
        {"tandem_2", "tandem (2 io threads)", dir + "http_load_tandem", {"--threads", "2"}},
        {"tandem_epoll",
         "tandem (1 io thread, epoll)",
         dir + "http_load_tandem",
         {"--threads", "1"},
         false,
         true},
        {"thread_per_request",
         "thread-per-request",
         dir + "http_peer_blocking",
         {"--mode", "thread-per-request"}},
        {"pool64",
         "blocking pool, 64 threads",
         dir + "http_peer_blocking",
         {"--mode", "pool", "--threads", "64"}},
        {"asio_epoll", "Asio coroutines, epoll", dir + "http_peer_asio_epoll", {"--threads", "1"}},
        {"asio_uring",
         "Asio coroutines, io_uring",
         dir + "http_peer_asio_uring",
         {"--threads", "1"}},
        {"wrk", "wrk -t1", find_on_path("wrk"), {}, true},
    };
}

bool present(const peer& p) {
    return !p.program.empty() && ::access(p.program.c_str(), X_OK) == 0;
}

// ---- cells ---------------------------------------------------------------------------------

std::string server_url;  // the file every peer fetches
int server_port = 0;
// Every run (more than one with --benchmark_repetitions); the summary shows medians.
std::map<std::string, std::map<int, std::vector<cell>>> runs;  // peer -> connections -> runs
std::map<std::string, std::vector<std::pair<cell, double>>> idle_runs;  // peer -> (run, B/conn)

cell measure(const peer& p, int connections) {
    std::vector<std::string> argv = {p.program};
    double seconds = cfg.duration;
    if (p.wrk) {
        seconds = std::max(1.0, std::round(cfg.duration));
        argv.insert(argv.end(), {"-t1", "-c" + std::to_string(connections),
                                 "-d" + std::to_string(static_cast<int>(seconds)) + "s",
                                 "--latency", server_url});
    } else {
        char d[32];
        std::snprintf(d, sizeof d, "%g", seconds);
        argv.insert(argv.end(), {"--url", server_url, "--connections", std::to_string(connections),
                                 "--duration", d});
        argv.insert(argv.end(), p.args.begin(), p.args.end());
    }
    const child_run r = run_child(argv, seconds + 30 + connections / 250.0, p.no_io_uring);
    cell c;
    c.cpu_s = r.cpu_s;
    c.rss_mib = static_cast<double>(r.maxrss_kb) / 1024;
    const bool parsed = p.wrk ? parse_wrk(r.out, &c) : parse_result_line(r.out, &c);
    c.ok = parsed && r.exited && r.status == 0;
    if (!c.ok) c.failure = describe_failure(r, r.out.empty() ? "" : ": " + last_line(r.out, ""));
    return c;
}

/// Sockets nginx still has work with on `port` (any state but LISTEN and TIME_WAIT; the
/// readiness probe leaves one of those), from /proc/net/tcp.
int server_sockets(int port) {
    std::ifstream in("/proc/net/tcp");
    int n = 0;
    std::string line;
    std::getline(in, line);  // the header
    while (std::getline(in, line)) {
        unsigned local_port = 0, state = 0;
        if (std::sscanf(line.c_str(), " %*d: %*x:%x %*x:%*x %x", &local_port, &state) == 2 &&
            static_cast<int>(local_port) == port && state != 0x0A && state != 0x06)
            ++n;
    }
    return n;
}

/// Waits (up to 10 s) until nginx has closed the previous peer's connections: a peer that
/// connects during the load phase (wrk) would otherwise wait on a server busy closing 10,000.
void wait_server_settled() {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (server_sockets(server_port) > 0 && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
}

void bm_cell(benchmark::State& state, const peer* p) {
    const int connections = static_cast<int>(state.range(0));
    wait_server_settled();
    cell c;
    for (auto _ : state) {
        c = measure(*p, connections);
        state.SetIterationTime(std::max(c.seconds, 1e-6));
    }
    runs[p->name][connections].push_back(c);
    if (!c.ok) {
        state.SkipWithError(c.failure.c_str());
        return;
    }
    state.counters["req_per_s"] = c.req_per_s();
    state.counters["p99_us"] = c.p99_us;
    state.counters["cpu_us_per_req"] = c.cpu_us_per_req();
    state.counters["rss_MiB"] = c.rss_mib;
    state.counters["errors"] = static_cast<double>(c.errors);
}

void bm_idle(benchmark::State& state, const peer* p) {
    wait_server_settled();
    cell c;
    double per_conn = NAN;
    for (auto _ : state) {
        const auto t0 = std::chrono::steady_clock::now();
        const child_run r =
            run_child({p->program, "--url", server_url, "--idle", std::to_string(cfg.idle)},
                      60 + cfg.idle / 250.0, p->no_io_uring);
        state.SetIterationTime(
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
        const std::string line = last_line(r.out, "IDLE ");
        const double n = field(line, "connections");
        c.ok = !line.empty() && n > 0 && r.exited && r.status == 0;
        if (!c.ok)
            c.failure = describe_failure(r, r.out.empty() ? "" : ": " + last_line(r.out, ""));
        if (c.ok)
            per_conn = (field(line, "rss_after_kb") - field(line, "rss_before_kb")) * 1024 / n;
        c.requests = static_cast<long long>(n);
        c.errors = cfg.idle - c.requests;
        c.rss_mib = static_cast<double>(r.maxrss_kb) / 1024;
    }
    idle_runs[p->name].emplace_back(c, per_conn);
    if (!c.ok) {
        state.SkipWithError(c.failure.c_str());
        return;
    }
    state.counters["bytes_per_idle_conn"] = per_conn;
    state.counters["connections"] = static_cast<double>(c.requests);
}

// ---- summary -------------------------------------------------------------------------------

/// The peers whose memory per idle connection is measured.
constexpr const char* idle_peers[] = {"tandem_1", "asio_epoll", "asio_uring", "tandem_epoll"};

const peer* find_peer(const std::vector<peer>& peers, const std::string& name) {
    for (const peer& p : peers)
        if (p.name == name) return &p;
    return nullptr;
}

template <typename T, typename Key>
T median_of(std::vector<T> v, Key key) {
    std::sort(v.begin(), v.end(), [&](const T& a, const T& b) { return key(a) < key(b); });
    return v[v.size() / 2];
}

/// A table row: each column's median over the runs of a cell that succeeded (errors: the
/// largest count of any run); the last failure if none succeeded.
struct row {
    bool ok = false;
    std::string failure;
    bool measured = false;  // some request completed: the rates mean something
    double req_per_s = 0, p99_us = 0, cpu_us_per_req = 0, rss_mib = 0;
    long long errors = 0;
};

row summarize(const std::vector<cell>& all) {
    row r;
    std::vector<cell> ok;
    for (const cell& c : all) {
        r.errors = std::max(r.errors, c.errors);
        if (c.ok) ok.push_back(c);
    }
    if (ok.empty()) {
        r.failure = all.back().failure;
        return r;
    }
    r.ok = true;
    r.rss_mib = median_of(ok, [](const cell& c) { return c.rss_mib; }).rss_mib;
    std::vector<cell> measured;
    for (const cell& c : ok)
        if (c.requests > 0) measured.push_back(c);
    if (measured.empty()) return r;
    r.measured = true;
    r.req_per_s = median_of(measured, [](const cell& c) { return c.req_per_s(); }).req_per_s();
    r.p99_us = median_of(measured, [](const cell& c) { return c.p99_us; }).p99_us;
    r.cpu_us_per_req =
        median_of(measured, [](const cell& c) { return c.cpu_us_per_req(); }).cpu_us_per_req();
    return r;
}

const row* find_row(const std::string& peer_name, int connections) {
    static std::map<std::pair<std::string, int>, row> rows;
    const auto p = runs.find(peer_name);
    if (p == runs.end()) return nullptr;
    const auto c = p->second.find(connections);
    if (c == p->second.end()) return nullptr;
    const auto key = std::make_pair(peer_name, connections);
    if (rows.count(key) == 0) rows[key] = summarize(c->second);
    return &rows[key];
}

std::size_t max_runs() {
    std::size_t n = 1;
    for (const auto& [peer, by_conns] : runs)
        for (const auto& [conns, v] : by_conns) n = std::max(n, v.size());
    return n;
}

void print_table(const std::vector<peer>& peers) {
    std::printf(
        "\nHTTP clients, GET %s (1 KiB body), keep-alive, %g s per cell (wrk: whole seconds)%s\n",
        server_url.c_str(), cfg.duration,
        max_runs() > 1 ? ("; median of " + std::to_string(max_runs()) + " runs").c_str() : "");
    std::printf("%-28s %6s %10s %10s %11s %9s %8s\n", "peer", "conns", "req/s", "p99 (us)",
                "CPU us/req", "RSS MiB", "errors");
    for (int conns : cfg.connections) {
        for (const peer& p : peers) {
            const row* r = find_row(p.name, conns);
            if (r == nullptr) continue;
            if (!r->ok) {
                std::printf("%-28s %6d  FAILED: %s\n", p.label.c_str(), conns, r->failure.c_str());
            } else if (!r->measured) {
                std::printf("%-28s %6d %10.0f %10s %11s %9.1f %8lld\n", p.label.c_str(), conns, 0.0,
                            "n/a", "n/a", r->rss_mib, r->errors);
            } else {
                std::printf("%-28s %6d %10.0f %10.1f %11.2f %9.1f %8lld\n", p.label.c_str(), conns,
                            r->req_per_s, r->p99_us, r->cpu_us_per_req, r->rss_mib, r->errors);
            }
        }
        std::printf("\n");
    }
    for (const peer& p : peers)
        if (!present(p))
            std::printf("%-28s skipped: %s not found\n", p.label.c_str(),
                        p.program.empty() ? "wrk" : p.program.c_str());
}

/// One target line: tandem's value against the peer's; the ratio must be <= or >= bound.
void print_target(int conns, const char* what, const std::string& peer_name, const char* label,
                  bool cpu, double bound, bool at_most) {
    const row* t = find_row("tandem_1", conns);
    const row* p = find_row(peer_name, conns);
    char goal[96];
    std::snprintf(goal, sizeof goal, "%s %s %.2fx %s", what, at_most ? "<=" : ">=", bound, label);
    if (t == nullptr || p == nullptr || !t->measured || !p->measured) {
        const char* why = t == nullptr && p == nullptr   ? "n/a (not run)"
                          : t == nullptr || !t->measured ? "n/a (no tandem result)"
                                                         : "n/a (no peer result)";
        std::printf("%6d  %-44s %s\n", conns, goal, why);
        return;
    }
    const double tv = cpu ? t->cpu_us_per_req : t->req_per_s;
    const double pv = cpu ? p->cpu_us_per_req : p->req_per_s;
    const double ratio = tv / pv;
    const bool met = at_most ? ratio <= bound : ratio >= bound;
    std::printf("%6d  %-44s %10.2f %10.2f %7.2fx  %s\n", conns, goal, tv, pv, ratio,
                met ? "met" : "MISSED");
}

void print_targets() {
    std::printf("Targets (tandem = tandem with 1 io thread; CPU in us/request, rates in req/s)\n");
    std::printf("%6s  %-44s %10s %10s %8s  %s\n", "conns", "target", "tandem", "peer", "ratio",
                "verdict");
    for (int conns : {100, 1000}) {
        print_target(conns, "client CPU/request", "wrk", "wrk", true, 1.0, true);
        print_target(conns, "client CPU/request", "asio_epoll", "Asio (epoll)", true, 0.85, true);
        print_target(conns, "requests/s", "thread_per_request", "thread-per-request", false, 5.0,
                     false);
    }
    std::printf(
        "\nIdle connections (%d; user memory = RSS growth / connections; target <= 2048 B "
        "for tandem)\n",
        cfg.idle);
    for (const char* name : idle_peers) {
        const auto it = idle_runs.find(name);
        if (it == idle_runs.end()) {
            std::printf("  %-12s n/a (not run)\n", name);
            continue;
        }
        std::vector<std::pair<cell, double>> ok;
        for (const auto& r : it->second)
            if (r.first.ok) ok.push_back(r);
        const auto [c, per_conn] =
            ok.empty() ? it->second.back() : median_of(ok, [](const auto& r) { return r.second; });
        if (!c.ok) {
            std::printf("  %-12s FAILED: %s\n", name, c.failure.c_str());
            continue;
        }
        std::printf("  %-12s %8.0f B per idle connection (%lld connections, peak RSS %.1f MiB)%s\n",
                    name, per_conn, c.requests, c.rss_mib,
                    std::string(name) == "tandem_1" ? (per_conn <= 2048 ? "  met" : "  MISSED")
                                                    : "  (comparison)");
    }
    std::fflush(stdout);
}

/// tandem_epoll over tandem_1 (io_uring) and over Asio on epoll: CPU/request (lower is
/// better) and requests/s (higher is better), per connection count.
void print_epoll_ratios() {
    std::printf(
        "\nThe epoll backend (tandem_epoll = tandem, 1 io thread, io_uring blocked by seccomp; "
        "ratio = tandem_epoll / peer)\n");
    std::printf("%6s  %-28s %11s %11s %7s %10s %10s %7s\n", "conns", "peer", "CPU us/req", "peer",
                "ratio", "req/s", "peer", "ratio");
    for (int conns : cfg.connections) {
        const row* e = find_row("tandem_epoll", conns);
        for (const char* name : {"tandem_1", "asio_epoll"}) {
            const row* p = find_row(name, conns);
            if (e == nullptr || p == nullptr || !e->measured || !p->measured) {
                std::printf(
                    "%6d  %-28s n/a (%s)\n", conns, name,
                    e == nullptr || !e->measured ? "no tandem_epoll result" : "no peer result");
                continue;
            }
            std::printf("%6d  %-28s %11.2f %11.2f %6.2fx %10.0f %10.0f %6.2fx\n", conns, name,
                        e->cpu_us_per_req, p->cpu_us_per_req, e->cpu_us_per_req / p->cpu_us_per_req,
                        e->req_per_s, p->req_per_s, e->req_per_s / p->req_per_s);
        }
    }
    std::fflush(stdout);
}

/// This process's anonymous RSS in KiB (see run_child: a floor of every child's peak RSS).
long anon_rss_kb() {
    std::ifstream in("/proc/self/status");
    for (std::string line; std::getline(in, line);)
        if (line.rfind("RssAnon:", 0) == 0) return std::atol(line.c_str() + 8);
    return -1;
}

void add_context(const nginx_fixture::nginx_server& server) {
    char text[256];
    std::snprintf(text, sizeof text, "%s, 1 worker%s; GET %s",
                  nginx_fixture::nginx_server::binary().c_str(),
                  cfg.server_cpu >= 0 ? (", CPU " + std::to_string(cfg.server_cpu)).c_str() : "",
                  server.url("/index.html").c_str());
    benchmark::AddCustomContext("http server", text);
    std::snprintf(text, sizeof text, "%s; %g s per cell; %s run",
                  cfg.client_cpu >= 0 ? ("pinned to CPU " + std::to_string(cfg.client_cpu)).c_str()
                                      : "not pinned",
                  cfg.duration, cfg.short_run ? "short (CI)" : "full");
    benchmark::AddCustomContext("http clients", text);
    std::snprintf(text, sizeof text, "%ld KiB (fork carries it into every child's peak RSS)",
                  anon_rss_kb());
    benchmark::AddCustomContext("http bench anon RSS", text);
}

void register_benchmarks(const std::vector<peer>& peers) {
    for (int conns : cfg.connections)
        for (const peer& p : peers)
            if (present(p))
                benchmark::RegisterBenchmark(p.name.c_str(), bm_cell, &p)
                    ->Arg(conns)
                    ->Iterations(1)
                    ->UseManualTime()
                    ->Unit(benchmark::kMillisecond);
    for (const char* name : idle_peers) {
        const peer* p = find_peer(peers, name);
        if (p != nullptr && present(*p))
            benchmark::RegisterBenchmark(("idle/" + p->name).c_str(), bm_idle, p)
                ->Iterations(1)
                ->UseManualTime()
                ->Unit(benchmark::kMillisecond);
    }
}

}  // namespace

int main(int argc, char** argv) {
    parse_settings(&argc, argv);
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    if (!nginx_fixture::nginx_server::available()) {
        std::printf("http_bench: skipped: nginx is not installed (Debian: nginx-light)\n");
        return 0;
    }
    nginx_fixture::nginx_options options;
    options.files = {{"index.html", std::string(1024, 'x')}};
    options.cpu = cfg.server_cpu;
    nginx_fixture::nginx_server server(options);
    server_url = server.url("/index.html");
    server_port = server.port();
    static const std::vector<peer> peers = all_peers();
    add_context(server);
    register_benchmarks(peers);
    benchmark::RunSpecifiedBenchmarks();
    print_table(peers);
    print_targets();
    print_epoll_ratios();
    benchmark::Shutdown();
    return 0;
}
