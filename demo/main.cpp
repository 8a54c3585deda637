// SPDX-License-Identifier: MIT
// tandem-demo: one command that shows what tandem does better, on this machine, in about a
// minute (--quick: under 15 s). It prints the machine, runs the sections (demo.hpp), then
// prints a table per section and writes results.json and results.svg.
//
// Run: build/demo/tandem-demo [--quick] [--only io,cpu] [--out DIR]   (--help for all flags)
#include "demo.hpp"

#include "../bench/nginx_fixture.hpp"
#include "io_section.hpp"
#include "machine.hpp"
#include "report.hpp"
#include "section_util.hpp"

#include <sys/ioctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

namespace demo {

namespace {

std::mutex progress_mutex;
bool progress_shown = false;  // a progress line is on the screen

bool progress_enabled() {
    static const bool tty = ::isatty(STDERR_FILENO) == 1;
    return tty;
}

std::size_t terminal_columns() {
    winsize ws{};
    if (::ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 10) return ws.ws_col;
    return 80;
}

/// Erases the progress line (no-op when stderr is not a terminal).
void progress_clear() {
    if (!progress_enabled()) return;
    std::lock_guard lock(progress_mutex);
    if (progress_shown) std::fputs("\r\033[K", stderr);
    std::fflush(stderr);
    progress_shown = false;
}

}  // namespace

void progress(const std::string& what) {
    if (!progress_enabled()) return;
    // Cut to the terminal's width: a line that wraps cannot be rewritten with '\r'.
    const std::string line = what.substr(0, terminal_columns() - 1);
    std::lock_guard lock(progress_mutex);
    std::fprintf(stderr, "\r\033[K%s", line.c_str());
    std::fflush(stderr);
    progress_shown = !line.empty();
}

}  // namespace demo

namespace {

using demo::section;

constexpr const char* all_sections[] = {"io", "cpu", "mixed", "failure"};

void usage(std::FILE* out) {
    std::fprintf(out,
                 R"(usage: tandem-demo [--quick] [--only io,cpu,mixed,failure] [--connections N]
                   [--nginx] [--out DIR] [--no-chart] [--help]

What tandem does better than what you use today, measured on this machine in about a minute.
It runs the same work several ways, each in a process of its own, talks only to 127.0.0.1,
needs no server installed, and stops by itself:

  io       I/O-bound: N HTTP requests at once to a slow backend (answers take 20-200 ms each):
           tandem coroutines on one event loop (and on one loop per core) vs a thread per
           request vs a pool of 2 x cores threads; time, latency, CPU, memory, threads
  cpu      CPU-bound: counting primes inline vs offload_to_thread vs offload_to_process
  mixed    cheap requests' p99 while CPU work runs inline on the event loop vs offloaded
  failure  a worker process killed mid-run: exactly its job fails, the rest completes

It prints the machine (kernel, cores, io_uring features), a table per section, and writes
results.json and results.svg (a bar chart; also results.png when gnuplot is installed).
Exit status: 0 when every section ran without errors, 1 otherwise (the reason is printed),
2 for a bad command line.

  --quick            small sizes: the whole demo in under 15 s (what CI runs)
  --only LIST        run only these sections, comma-separated: io,cpu,mixed,failure
  --connections N    the I/O section's concurrency: requests in flight at once (default 1,000;
                     200 with --quick); lowered, with a message, if the fd limit is too low
  --nginx            the I/O section talks to nginx serving a small file, with no artificial
                     delay, instead of tandem's own slow server (needs nginx installed)
  --out DIR          where results.json, results.svg (and results.png) go (default: .)
  --no-chart         write no results.svg / results.png (results.json is still written)
  --help             this text

(`tandem-demo --child NAME ...` is how the demo runs its parts in processes of their own; it
is not meant to be typed.)
)");
}

[[noreturn]] void bad_usage(const std::string& why) {
    std::fprintf(stderr, "tandem-demo: %s\n\n", why.c_str());
    usage(stderr);
    std::exit(2);
}

struct options {
    demo::config cfg;
    std::vector<std::string> only = {std::begin(all_sections), std::end(all_sections)};
    std::filesystem::path out = ".";
    bool chart = true;
};

std::vector<std::string> split_list(const std::string& text) {
    std::vector<std::string> items;
    std::istringstream in(text);
    for (std::string item; std::getline(in, item, ',');) {
        bool known = false;
        for (const char* s : all_sections) known = known || item == s;
        if (!known) bad_usage("--only: unknown section '" + item + "' (io, cpu, mixed, failure)");
        if (std::find(items.begin(), items.end(), item) == items.end()) items.push_back(item);
    }
    if (items.empty()) bad_usage("--only needs a list: io,cpu,mixed,failure");
    return items;
}

options parse(int argc, char** argv) {
    options o;
    for (int i = 1; i < argc; ++i) {
        std::string arg = argv[i], value;
        const bool has_eq = arg.rfind("--", 0) == 0 && arg.find('=') != std::string::npos;
        if (has_eq) {
            value = arg.substr(arg.find('=') + 1);
            arg.resize(arg.find('='));
        }
        const auto need_value = [&] {
            if (has_eq) return value;
            if (i + 1 >= argc) bad_usage(arg + " needs a value");
            return std::string(argv[++i]);
        };
        const bool takes_value = arg == "--connections" || arg == "--out" || arg == "--only";
        if (has_eq && !takes_value) bad_usage(arg + " takes no value");
        if (arg == "--help" || arg == "-h") {
            usage(stdout);
            std::exit(0);
        } else if (arg == "--quick") {
            o.cfg.quick = true;
        } else if (arg == "--nginx") {
            o.cfg.use_nginx = true;
        } else if (arg == "--no-chart") {
            o.chart = false;
        } else if (arg == "--connections") {
            const std::string v = need_value();
            char* end = nullptr;
            const long n = std::strtol(v.c_str(), &end, 10);
            if (end == v.c_str() || *end != '\0' || n < 1 || n > 1'000'000)
                bad_usage("--connections: a number from 1 to 1000000, not '" + v + "'");
            o.cfg.connections = static_cast<unsigned>(n);
        } else if (arg == "--out") {
            o.out = need_value();
        } else if (arg == "--only") {
            o.only = split_list(need_value());
        } else {
            bad_usage("unknown flag " + std::string(argv[i]));
        }
    }
    return o;
}

/// The soft RLIMIT_NOFILE up to the hard limit (a fresh machine's soft limit is 1,024);
/// returns the soft limit found.
unsigned long raise_fd_limit() {
    rlimit r{};
    if (::getrlimit(RLIMIT_NOFILE, &r) != 0) return 0;
    const unsigned long before = r.rlim_cur;
    if (r.rlim_cur < r.rlim_max) {
        r.rlim_cur = r.rlim_max;
        ::setrlimit(RLIMIT_NOFILE, &r);
    }
    return before;
}

/// Lowers the I/O section's concurrency to what the fd limit allows, saying so.
void fit_connections(demo::config& cfg, unsigned long fd_limit) {
    const unsigned wanted =
        cfg.connections > 0 ? cfg.connections : demo::io_default_connections(cfg.quick);
    cfg.connections = wanted;  // what results.json records
    if (fd_limit == 0 || fd_limit >= wanted + demo::io_spare_fds) return;
    const auto allowed = static_cast<unsigned>(
        fd_limit > demo::io_spare_fds + 10 ? fd_limit - demo::io_spare_fds : 10);
    std::printf(
        "note: the open-file limit is %lu (hard limit; `ulimit -Hn`), too low for %u "
        "connections: the I/O section uses %u. Raise the hard limit (limits.conf, systemd "
        "LimitNOFILE) to run it as designed.\n",
        fd_limit, wanted, allowed);
    cfg.connections = allowed;
}

std::string self_exe(const char* argv0) {
    std::error_code ec;
    const std::filesystem::path p = std::filesystem::read_symlink("/proc/self/exe", ec);
    return ec ? std::string(argv0) : p.string();
}

void print_machine(const demo::machine_info& m) {
    std::printf("tandem-demo %s: what tandem does better, measured on this machine\n\n",
                TANDEM_VERSION);
    const std::string indent(20, ' ');  // "  " + the label's 17 columns + " "
    for (const auto& [label, value] : m.lines()) {
        std::string text;
        for (const char c : demo::wrap_text(value, 80, ""))
            text += c == '\n' ? "\n" + indent : std::string(1, c);
        std::printf("  %-17s %s\n", label.c_str(), text.c_str());
    }
    std::fflush(stdout);
}

section run_one(const std::string& id, const demo::config& cfg) {
    try {
        if (id == "io") return demo::run_io(cfg);
        if (id == "cpu") return demo::run_cpu(cfg);
        if (id == "mixed") return demo::run_mixed(cfg);
        return demo::run_failure(cfg);
    } catch (const std::exception& e) {
        section s;
        s.id = id;
        s.problems.push_back(std::string("the section failed: ") + e.what());
        return s;
    }
}

/// results.json, results.svg, results.png: prints where they went; false if one could not
/// be written.
bool write_results(const demo::run_report& r, const options& o) {
    bool ok = true;
    std::error_code ec;
    std::filesystem::create_directories(o.out, ec);
    std::vector<std::string> written;
    const auto attempt = [&](const std::filesystem::path& p, const auto& make) {
        try {
            demo::write_text(p, make());
            written.push_back(p.string());
        } catch (const std::exception& e) {
            std::printf("could not write %s\n", e.what());
            ok = false;
        }
    };
    attempt(o.out / "results.json", [&] { return demo::to_json(r); });
    if (o.chart) {
        attempt(o.out / "results.svg", [&] { return demo::to_svg(r); });
        bool skipped = false;
        const std::string e = demo::render_png(r, o.out / "results.png", &skipped);
        if (!skipped && e.empty()) written.push_back((o.out / "results.png").string());
        if (!e.empty()) std::printf("no results.png (%s)\n", e.c_str());
    }
    std::string list;
    for (const std::string& w : written) list += (list.empty() ? "" : ", ") + w;
    if (!list.empty()) std::printf("\nwrote %s\n", list.c_str());
    return ok;
}

}  // namespace

int main(int argc, char** argv) {
    const unsigned long fd_soft_before = raise_fd_limit();
    if (argc >= 3 && std::strcmp(argv[1], "--child") == 0) {
        const std::string name = argv[2];
        return name.rfind("io-", 0) == 0 ? demo::io_child_main(argc - 2, argv + 2)
                                         : demo::other_child_main(argc - 2, argv + 2);
    }
    options o = parse(argc, argv);
    if (o.cfg.use_nginx && !nginx_fixture::nginx_server::available()) {
        std::fprintf(stderr,
                     "tandem-demo: --nginx needs nginx, and none is installed (looked for "
                     "/usr/sbin/nginx and nginx on PATH; TANDEM_NGINX names another).\n"
                     "Install it (Debian/Ubuntu: apt-get install nginx-light) or run without "
                     "--nginx: the I/O section then uses tandem's own server.\n");
        return 2;
    }
    o.cfg.self_exe = self_exe(argv[0]);
    const auto start = std::chrono::steady_clock::now();

    demo::run_report report;
    report.flags.assign(argv, argv + argc);
    report.machine = demo::probe_machine();
    report.machine.fd_limit_before = fd_soft_before;
    print_machine(report.machine);
    if (!report.machine.uring.available) {
        std::printf(
            "\nio_uring is not available here (see above): tandem runs every section on its "
            "epoll backend, which is slower per operation.\n");
        ::setenv(demo::util::epoll_env, "1", 1);  // single-threaded here: before any section
    }
    for (const std::string& id : o.only)
        if (id == "io") fit_connections(o.cfg, report.machine.fd_limit);
    std::printf("\nrunning: ");
    for (std::size_t i = 0; i < o.only.size(); ++i)
        std::printf("%s%s", i ? ", " : "", o.only[i].c_str());
    std::printf("%s ...\n", o.cfg.quick ? " (--quick)" : "");
    std::fflush(stdout);

    for (const std::string& id : o.only) {
        demo::progress(id + ": starting");
        report.sections.push_back(run_one(id, o.cfg));
        if (report.sections.back().id.empty()) report.sections.back().id = id;
    }
    demo::progress_clear();
    report.cfg = o.cfg;
    report.elapsed_s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

    demo::print_tables(stdout, report.sections);
    const bool written = write_results(report, o);
    const std::vector<std::string> why = demo::failures(report.sections);
    std::printf("done in %s\n", demo::format_with_unit(report.elapsed_s, "s").c_str());
    if (why.empty() && written) return 0;
    std::printf("\nexit status 1:\n");
    for (const std::string& w : why) std::printf("  - %s\n", w.c_str());
    if (!written) std::printf("  - results could not be written\n");
    return 1;
}
