// SPDX-License-Identifier: MIT
#pragma once

// What tandem-demo's parts share. main.cpp parses the flags, prints the machine, runs the
// sections in order, prints the table and writes results.json and the chart. Each section
// runs one kind of work several ways and returns a `section`.
//
//   io_section.cpp       I/O-bound: N concurrent HTTP requests; tandem coroutines vs
//                        thread-per-request vs a blocking thread pool
//   cpu_section.cpp      CPU-bound: counting primes sequentially vs offload_to_thread vs
//                        offload_to_process
//   mixed_section.cpp    cheap-request p99 with CPU work inline vs offloaded
//   failure_section.cpp  a worker killed mid-run: exactly that job fails, the rest completes
//
// A section that needs a clean process (per-mode CPU time, peak RSS, thread count) re-runs
// the demo binary as `tandem-demo --child NAME ARGS...`; main() hands such a call to
// child_main(), which dispatches on NAME.

#include <cstdint>
#include <string>
#include <vector>

namespace demo {

struct config {
    bool quick = false;        // --quick: the whole demo in under 15 s (CI)
    bool use_nginx = false;    // --nginx: the I/O section talks to nginx instead of tandem's own
                               // server (only when nginx is installed)
    unsigned connections = 0;  // --connections: the I/O section's concurrency (0: its default)
    std::string self_exe;      // this binary, for `--child` runs (/proc/self/exe resolved)
};

// One figure in a row: {"p99", 12.5, "ms"}.
struct cell {
    std::string name;
    double value = 0;
    std::string unit;  // "ms", "req/s", "MiB", "x", "" ...
};

// One way of doing the section's work.
struct row {
    std::string mode;          // "tandem coroutines", "thread per request", ...
    std::vector<cell> cells;   // same names, in the same order, in every row of a section
    std::uint64_t errors = 0;  // errors this mode reported that it should not have
    std::string note;          // optional: a short remark printed after the row
};

struct section {
    std::string id;     // "io", "cpu", "mixed", "failure"
    std::string title;  // "I/O-bound: 1,000 concurrent requests"
    std::string work;   // one line: what the work was, in numbers
    std::vector<row> rows;
    std::string chart;  // name of the cell to chart ("" = no chart for this section)
    std::vector<std::string> more_charts;  // further cells, charted below it in results.svg
    bool higher_is_better = true;          // for the chart's caption
    std::string takeaway;  // one line computed from the numbers ("tandem: 4.1x the req/s ...")
    std::vector<std::string> problems;  // what went wrong; any entry makes the exit status 1
};

section run_io(const config&);
section run_cpu(const config&);
section run_mixed(const config&);
section run_failure(const config&);

// `tandem-demo --child NAME ARGS...`: argv[0] is NAME. Returns the exit status.
int io_child_main(int argc, char** argv);     // NAMEs starting "io-"
int other_child_main(int argc, char** argv);  // every other NAME

// Progress on stderr, one line rewritten in place, only when stderr is a terminal
// (main.cpp). Safe to call from any thread.
void progress(const std::string& what);

}  // namespace demo
