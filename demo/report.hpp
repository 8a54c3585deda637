// SPDX-License-Identifier: MIT
#pragma once

// What tandem-demo shows at the end (report.cpp): the table on stdout, results.json, the SVG
// chart drawn by hand, and results.png when gnuplot is installed. Also the number formatting
// every part of the demo uses, so that a figure reads the same in a takeaway and in the table.

#include "demo.hpp"
#include "machine.hpp"

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

namespace demo {

/// 1234567.8 -> "1,234,568" (decimals = 0) or "1,234,567.80" (decimals = 2).
std::string group_digits(double v, int decimals = 0);
/// A value for a table column whose header names the unit: "1,234" (req/s), "12.3" (ms),
/// "9.4" (MiB), "4.1x" (x), "-" for NaN.
std::string format_value(double v, const std::string& unit);
/// A value with its unit, for sentences: "1,234 req/s", "212 ms", "27.5 s", "9.4 MiB", "4.1x".
std::string format_with_unit(double v, const std::string& unit);
/// "1.06x" or "130x": a ratio with two significant digits at least.
std::string format_ratio(double r);
/// `text` in lines of at most `width` characters (a longer word stays whole), every line but
/// the first starting with `indent`.
std::string wrap_text(const std::string& text, std::size_t width, const std::string& indent);

/// Everything one run produced.
struct run_report {
    machine_info machine;
    config cfg;
    std::vector<std::string> flags;  // the command line, for the record
    std::vector<section> sections;
    double elapsed_s = 0;
};

/// The tables, one block per section; returns the lines "why the exit status is 1" (empty:
/// it is 0).
std::vector<std::string> failures(const std::vector<section>& sections);
void print_tables(std::FILE* out, const std::vector<section>& sections);

std::string to_json(const run_report& r);
std::string to_svg(const run_report& r);

/// Writes `text` to `path`; throws std::runtime_error naming the path if it cannot.
void write_text(const std::filesystem::path& path, const std::string& text);

/// results.png through gnuplot, if gnuplot is on PATH: "" when written or when gnuplot is not
/// installed (`*skipped` says which), else why it failed. Never throws.
std::string render_png(const run_report& r, const std::filesystem::path& png, bool* skipped);

}  // namespace demo
