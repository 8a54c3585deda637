// SPDX-License-Identifier: MIT
// The I/O-bound section: N requests issued at once to a server where each takes a while to
// answer (a slow backend), made three ways, each in a child process of its own so that its CPU
// time, peak RSS and thread count are its alone. The server runs in a child too. See
// io_section.hpp for the processes and the result line, io_clients.cpp for the clients,
// http_server.hpp for the server.
#include "io_section.hpp"

#include "../bench/nginx_fixture.hpp"
#include "child_process.hpp"
#include "demo.hpp"
#include "http_server.hpp"
#include "report.hpp"
#include "section_util.hpp"

#include <sched.h>
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace demo {

unsigned io_default_connections(bool quick) {
    return quick ? 200 : 1000;
}

// ---- the workload on a command line, the result on a line ---------------------------------

std::vector<std::string> io_workload::to_args() const {
    std::vector<std::string> a = {"--host",         host_port,
                                  "--requests",     std::to_string(requests),
                                  "--delay-min",    std::to_string(delay_min_ms),
                                  "--delay-max",    std::to_string(delay_max_ms),
                                  "--seed",         std::to_string(seed),
                                  "--pool-threads", std::to_string(pool_threads),
                                  "--budget-ms",    std::to_string(budget_ms)};
    if (!fixed_path.empty()) a.insert(a.end(), {"--path", fixed_path});
    return a;
}

io_workload io_workload::from_args(int argc, char** argv) {
    io_workload w;
    const auto number = [](const std::string& name, const char* text) {
        char* end = nullptr;
        const unsigned long v = std::strtoul(text, &end, 10);
        if (end == text || *end != '\0' || v > 0xffffffffUL)
            throw std::invalid_argument(name + ": not a number: " + text);
        return static_cast<unsigned>(v);
    };
    for (int i = 0; i + 1 < argc; i += 2) {
        const std::string name = argv[i];
        const char* value = argv[i + 1];
        if (name == "--host")
            w.host_port = value;
        else if (name == "--path")
            w.fixed_path = value;
        else if (name == "--requests")
            w.requests = number(name, value);
        else if (name == "--delay-min")
            w.delay_min_ms = number(name, value);
        else if (name == "--delay-max")
            w.delay_max_ms = number(name, value);
        else if (name == "--seed")
            w.seed = number(name, value);
        else if (name == "--pool-threads")
            w.pool_threads = number(name, value);
        else if (name == "--budget-ms")
            w.budget_ms = number(name, value);
        else
            throw std::invalid_argument("unknown workload option " + name);
    }
    if (argc % 2 != 0) throw std::invalid_argument("workload options come in pairs");
    if (w.host_port.empty() || w.delay_max_ms < w.delay_min_ms)
        throw std::invalid_argument("workload: --host needed, --delay-min <= --delay-max");
    return w;
}

std::vector<unsigned> io_workload::delays() const {
    std::vector<unsigned> d(requests, 0);
    if (!fixed_path.empty()) return d;
    std::mt19937 gen(seed);  // mt19937's output is fixed by the standard: the same everywhere
    const unsigned span = delay_max_ms - delay_min_ms + 1;
    for (unsigned& x : d) x = delay_min_ms + static_cast<unsigned>(gen() % span);
    return d;
}

std::string io_workload::path(std::size_t i, const std::vector<unsigned>& d) const {
    return fixed_path.empty() ? "/delay/" + std::to_string(d[i]) : fixed_path;
}

std::string io_result::to_text() const {
    char line[512];
    std::snprintf(line, sizeof line,
                  "RESULT ok=%llu errors=%llu done=%llu wall_ms=%.3f p50_ms=%.3f p99_ms=%.3f "
                  "threads=%llu estimated=%d measured_ms=%.3f overhead_ms=%.3f\n",
                  static_cast<unsigned long long>(ok), static_cast<unsigned long long>(errors),
                  static_cast<unsigned long long>(done), wall_ms, p50_ms, p99_ms,
                  static_cast<unsigned long long>(threads), estimated ? 1 : 0, measured_ms,
                  overhead_ms);
    std::string text = line;
    if (!first_error.empty()) {
        std::string e = first_error;
        std::replace(e.begin(), e.end(), '\n', ' ');
        text += "ERROR " + e + "\n";
    }
    return text;
}

io_result io_result::parse(const std::string& text) {
    io_result r;
    std::istringstream lines(text);
    for (std::string line; std::getline(lines, line);) {
        if (line.rfind("ERROR ", 0) == 0) r.first_error = line.substr(6);
        if (line.rfind("RESULT ", 0) != 0) continue;
        std::istringstream fields(line.substr(7));
        for (std::string f; fields >> f;) {
            const std::size_t eq = f.find('=');
            if (eq == std::string::npos) continue;
            const std::string key = f.substr(0, eq);
            const double v = std::strtod(f.c_str() + eq + 1, nullptr);
            const auto count = static_cast<std::uint64_t>(std::max(v, 0.0));
            if (key == "ok") r.ok = count;
            if (key == "errors") r.errors = count;
            if (key == "done") r.done = count;
            if (key == "threads") r.threads = count;
            if (key == "wall_ms") r.wall_ms = v;
            if (key == "p50_ms") r.p50_ms = v;
            if (key == "p99_ms") r.p99_ms = v;
            if (key == "measured_ms") r.measured_ms = v;
            if (key == "overhead_ms") r.overhead_ms = v;
            if (key == "estimated") r.estimated = v != 0;
        }
        r.parsed = true;
    }
    return r;
}

namespace {
unsigned usable_cores() {
    return static_cast<unsigned>(std::max<std::size_t>(1, util::usable_cpus().size()));
}
}  // namespace

int io_child_main(int argc, char** argv) {
    const std::string name = argc > 0 ? argv[0] : "";
    try {
        if (name == "io-server") return run_http_server();
        const io_workload w = io_workload::from_args(argc - 1, argv + 1);
        if (name == "io-tandem") return io_tandem_main(w, 1);
        if (name == "io-tandem-loops") return io_tandem_main(w, usable_cores());
        if (name == "io-threads") return io_threads_main(w);
        if (name == "io-pool") return io_pool_main(w);
        std::fprintf(stderr, "tandem-demo: unknown child %s\n", name.c_str());
        return 2;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "tandem-demo --child %s: %s\n", name.c_str(), e.what());
        return 1;
    }
}

// ---- the parent ---------------------------------------------------------------------------

namespace {

using clock_type = std::chrono::steady_clock;
using namespace std::chrono_literals;

std::string count_text(std::uint64_t n) {
    return group_digits(static_cast<double>(n));
}

/// The backend: tandem's own server in a child process, or nginx. Stops it when destroyed.
class backend {
public:
    /// Starts it; throws std::runtime_error saying why it could not.
    explicit backend(const config& cfg) {
        if (cfg.use_nginx) {
            progress("I/O: starting nginx");
            nginx_.emplace(nginx_fixture::nginx_options{.files = {{"index.html", body()}}});
            host_port_ = "127.0.0.1:" + std::to_string(nginx_->port());
            return;
        }
        progress("I/O: starting tandem's HTTP server");
        server_.emplace(cfg.self_exe, std::vector<std::string>{"--child", "io-server"}, true);
        std::string line;
        if (!server_->read_line(line, clock_type::now() + 10s) || line.rfind("PORT ", 0) != 0) {
            const auto info = server_->wait(clock_type::now() + 1s);
            throw std::runtime_error("tandem's HTTP server did not start (" + info.describe() +
                                     ")");
        }
        host_port_ = "127.0.0.1:" + line.substr(5);
    }
    /// Stops the server; "" or what went wrong with it.
    std::string stop() {
        if (!server_) return {};
        server_->close_control();  // it sees end of stream on stdin and exits
        const auto info = server_->wait(clock_type::now() + 3s);
        server_.reset();
        if (WIFEXITED(info.status) && WEXITSTATUS(info.status) == 0) return {};
        return "tandem's HTTP server stopped early (" + info.describe() + ")";
    }
    const std::string& host_port() const { return host_port_; }
    static std::string body() { return std::string(64, 'x') + "\n"; }

private:
    std::optional<nginx_fixture::nginx_server> nginx_;
    std::optional<child_process> server_;
    std::string host_port_;
};

struct mode {
    const char* child;  // "io-tandem", ...
    std::string label;  // "tandem, 1 event loop", ...
};

/// What one client child did.
struct child_run {
    io_result r;
    child_process::exit_info info;
    bool finished = false;              // false: killed at the time limit
    std::chrono::milliseconds limit{};  // the time limit
};

child_run run_child(const config& cfg, const mode& m, const io_workload& w) {
    const std::string what = "I/O: " + m.label + ", " + count_text(w.requests) + " requests";
    progress(what);
    std::vector<std::string> args = {"--child", m.child};
    for (std::string& a : w.to_args()) args.push_back(std::move(a));
    child_run run;
    const bool pool = w.budget_ms > 0 && std::string_view(m.child) == "io-pool";
    const auto start = clock_type::now();
    run.limit = std::chrono::milliseconds(w.budget_ms) + (cfg.quick ? 30s : 90s);
    child_process c(cfg.self_exe, args);
    std::string text;
    run.finished = c.read_all(text, start + run.limit, [&] {
        const double s = std::chrono::duration<double>(clock_type::now() - start).count();
        progress(what + " ... " + format_with_unit(s, "s") +
                 (pool ? " (it stops at " + format_with_unit(w.budget_ms, "ms") +
                             " and the rest is estimated)"
                       : ""));
    });
    run.info = c.wait(clock_type::now() + (run.finished ? 10s : 0s));
    run.r = io_result::parse(text);
    return run;
}

/// Runs one client child and turns what it measured into a row; what went wrong goes to
/// `problems`.
row run_mode(const config& cfg, const mode& m, const io_workload& w,
             std::vector<std::string>& problems) {
    const child_run run = run_child(cfg, m, w);
    const bool clean = WIFEXITED(run.info.status) && WEXITSTATUS(run.info.status) == 0;
    if (!run.finished) {
        problems.push_back(m.label + ": did not finish within " +
                           format_with_unit(std::chrono::duration<double>(run.limit).count(), "s") +
                           "; stopped");
    } else if (!clean || !run.r.parsed) {
        problems.push_back(m.label + ": its process ended with " + run.info.describe() +
                           (run.r.parsed ? "" : " before reporting"));
    }
    const io_result r = run.r.parsed ? run.r : io_result{};
    row out;
    out.mode = m.label;
    // Requests not made count as errors, unless the pool skipped them by design (estimated).
    out.errors =
        r.errors + (r.estimated ? 0 : w.requests - std::min<std::uint64_t>(r.done, w.requests));
    if (r.errors > 0) {
        problems.push_back(m.label + ": " + count_text(r.errors) + " of " + count_text(r.done) +
                           " requests failed" +
                           (r.first_error.empty() ? "" : " (first: " + r.first_error + ")"));
    }
    const double done = static_cast<double>(std::max<std::uint64_t>(r.done, 1));
    const double cpu_scale = r.estimated ? static_cast<double>(w.requests) / done : 1.0;
    const double rate_s = (r.estimated ? r.measured_ms : r.wall_ms) / 1e3;
    out.cells = {
        {"req/s", rate_s > 0 ? static_cast<double>(r.ok) / rate_s : 0, "req/s"},
        {"total time", r.wall_ms, "ms"},
        {"p50", r.p50_ms, "ms"},
        {"p99", r.p99_ms, "ms"},
        {"CPU time", run.info.cpu_ms() * cpu_scale, "ms"},
        {"peak RSS", run.info.peak_rss_mib(), "MiB"},
        {"threads", static_cast<double>(r.threads), ""},
    };
    if (r.estimated) {
        out.note = "stopped after " + format_with_unit(r.measured_ms, "ms") + " at " +
                   count_text(r.done) + " of " + count_text(w.requests) +
                   " requests; total time, p50 and p99 are estimated for all " +
                   count_text(w.requests) + " (the rest placed on its threads by their known " +
                   "delays + the " + format_with_unit(r.overhead_ms, "ms") +
                   " measured overhead each), CPU time scaled by " + count_text(w.requests) + "/" +
                   count_text(r.done) + "; req/s as measured";
    }
    return out;
}

double cell_of(const row& r, const std::string& name) {
    for (const cell& c : r.cells)
        if (c.name == name) return c.value;
    return 0;
}

/// One line from the numbers: tandem's time against the slowest request, the others' threads,
/// memory and time against tandem's.
std::string takeaway(const std::vector<row>& rows, const io_workload& w, unsigned slowest_ms) {
    if (rows.size() < 3) return {};
    for (const row& r : rows)
        if (r.errors > 0) return "no comparison: requests failed (see below)";
    const row &t = rows[0], &th = rows[1], &p = rows[2];
    const double tt = cell_of(t, "total time");
    const auto mem = [](const row& r) { return format_with_unit(cell_of(r, "peak RSS"), "MiB"); };
    const auto threads = [](const row& r) {
        return count_text(static_cast<std::uint64_t>(cell_of(r, "threads")));
    };
    std::string s = "tandem: all " + count_text(w.requests) + " in " + format_with_unit(tt, "ms");
    if (slowest_ms > 0)
        s += " (" + format_ratio(tt / slowest_ms) + " the slowest request, " +
             format_with_unit(slowest_ms, "ms") + ")";
    s += " on 1 event loop (" + threads(t) + " threads in all), " + mem(t) + ", " +
         format_with_unit(cell_of(t, "CPU time"), "ms") + " CPU";
    s += "; thread per request: " + format_with_unit(cell_of(th, "total time"), "ms") + ", " +
         threads(th) + " threads, " + mem(th) + " (" +
         format_ratio(cell_of(th, "peak RSS") / std::max(cell_of(t, "peak RSS"), 0.001)) + "), " +
         format_with_unit(cell_of(th, "CPU time"), "ms") + " CPU (" +
         format_ratio(cell_of(th, "CPU time") / std::max(cell_of(t, "CPU time"), 0.001)) + ")";
    const double pt = cell_of(p, "total time");
    s += "; " + p.mode + ": " + format_with_unit(pt, "ms") +
         (tt > 0 ? " (" + format_ratio(pt / tt) + " tandem's time)" : "");
    if (rows.size() > 3) {
        const row& l = rows[3];
        s += "; " + l.mode + ": " + format_with_unit(cell_of(l, "total time"), "ms") + ", " +
             format_with_unit(cell_of(l, "CPU time"), "ms") + " CPU";
    }
    return s;
}

}  // namespace

section run_io(const config& cfg) {
    io_workload w;
    w.requests = cfg.connections > 0 ? cfg.connections : io_default_connections(cfg.quick);
    w.seed = 2024;
    w.pool_threads = 2 * usable_cores();
    w.budget_ms = cfg.quick ? 1500 : 4000;
    if (cfg.use_nginx) {
        w.fixed_path = "/index.html";
    } else {
        w.delay_min_ms = cfg.quick ? 10 : 20;
        w.delay_max_ms = cfg.quick ? 100 : 200;
    }
    const std::vector<unsigned> delays = w.delays();
    const unsigned slowest = delays.empty() ? 0 : *std::max_element(delays.begin(), delays.end());

    section s;
    s.id = "io";
    const std::string n = count_text(w.requests);
    s.chart = "total time";
    s.more_charts = {"CPU time", "threads"};
    s.higher_is_better = false;
    // Said once for both backends: how the numbers were taken.
    const std::string how =
        "; latency counted from when the batch began; each client runs in a process of its own "
        "(CPU time and peak RSS are the kernel's count for that process)";
    if (cfg.use_nginx) {
        s.title = "I/O-bound: " + n + " concurrent requests to nginx";
        s.work = n + " HTTP GETs issued at once to nginx on 127.0.0.1 serving a " +
                 std::to_string(backend::body().size()) +
                 "-byte file; no artificial delay, so this compares the clients' own cost, not "
                 "waiting" +
                 how;
    } else {
        s.title = "I/O-bound: " + n + " concurrent requests to a slow backend";
        s.work = n +
                 " HTTP GETs issued at once to tandem's HTTP server on 127.0.0.1 (a process "
                 "of its own), each answered after " +
                 std::to_string(w.delay_min_ms) + "-" + std::to_string(w.delay_max_ms) +
                 " ms (seeded: the same for every client; the "
                 "slowest " +
                 std::to_string(slowest) + " ms)" + how;
    }
    std::vector<mode> modes = {
        {"io-tandem", "tandem, 1 event loop"},
        {"io-threads", "thread per request"},
        {"io-pool", "pool of " + std::to_string(w.pool_threads) + " threads"},
    };
    // The threads use every core; tandem can too, with one event loop per core.
    if (usable_cores() > 1)
        modes.push_back(
            {"io-tandem-loops", "tandem, " + std::to_string(usable_cores()) + " event loops"});
    try {
        backend server(cfg);
        w.host_port = server.host_port();
        for (const mode& m : modes) s.rows.push_back(run_mode(cfg, m, w, s.problems));
        if (std::string e = server.stop(); !e.empty()) s.problems.push_back(e);
    } catch (const std::exception& e) {
        s.problems.push_back(std::string("I/O section: ") + e.what());
    }
    s.takeaway = takeaway(s.rows, w, slowest);
    return s;
}

}  // namespace demo
