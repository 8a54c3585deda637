// SPDX-License-Identifier: MIT
// The end of a tandem-demo run: number formatting, the tables, results.json, the SVG chart
// (drawn here, no library) and results.png through gnuplot when it is installed.
#include "report.hpp"

#include "child_process.hpp"

#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

namespace demo {

// ---- numbers for people ---------------------------------------------------------------

std::string group_digits(double v, int decimals) {
    if (!std::isfinite(v)) return "-";
    if (v == 0) v = 0;  // -0 prints as 0
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
    std::string s = buf;
    const bool negative = s[0] == '-';
    const std::size_t digits_begin = negative ? 1 : 0;
    std::size_t int_end = s.find('.');
    if (int_end == std::string::npos) int_end = s.size();
    // Appended, not inserted: g++ 12's -Wrestrict misfires on string::insert (PR 105651).
    std::string out = s.substr(0, digits_begin);
    for (std::size_t i = digits_begin; i < int_end; ++i) {
        if (i > digits_begin && (int_end - i) % 3 == 0) out += ',';
        out += s[i];
    }
    out += s.substr(int_end);
    return out == "-0" ? "0" : out;
}

namespace {

/// Three significant digits or so (two below 1), never in exponent form: 0.0042, 0.42, 9.37,
/// 12.3, 212, 1,234.
std::string adaptive(double v) {
    if (!std::isfinite(v)) return "-";
    if (v == std::floor(v) && std::fabs(v) < 1e15) return group_digits(v, 0);
    char rounded[32];  // decide on the value as it will print: 9.999 is "10.0", not "10.00"
    std::snprintf(rounded, sizeof rounded, "%.3g", v);
    const double a = std::fabs(std::strtod(rounded, nullptr));
    if (a >= 1 || a == 0) return group_digits(v, a >= 100 ? 0 : a >= 10 ? 1 : 2);
    return group_digits(v, std::min(6, static_cast<int>(std::floor(-std::log10(a))) + 2));
}

}  // namespace

std::string format_ratio(double r) {
    if (!std::isfinite(r)) return "-";
    return group_digits(r, r < 2 ? 2 : r < 10 ? 1 : 0) + "x";
}

std::string format_value(double v, const std::string& unit) {
    if (unit == "x") return format_ratio(v);
    return adaptive(v);
}

std::string format_with_unit(double v, const std::string& unit) {
    if (!std::isfinite(v)) return "-";
    if (unit == "x") return format_ratio(v);
    if (unit == "ms" && std::fabs(v) >= 1'000) return adaptive(v / 1e3) + " s";
    if (unit == "s" && std::fabs(v) < 1) return adaptive(v * 1e3) + " ms";
    if (unit == "MiB" && std::fabs(v) >= 10'240) return adaptive(v / 1024) + " GiB";
    if (unit.empty()) return adaptive(v);
    return adaptive(v) + " " + unit;
}

/// Breaks `text` into lines of at most `width` characters (words longer than that stay whole);
/// every line but the first starts with `indent`.
std::string wrap_text(const std::string& text, std::size_t width, const std::string& indent) {
    std::istringstream words(text);
    std::string out, line, w;
    while (words >> w) {
        if (!line.empty() && line.size() + 1 + w.size() > width) {
            out += line + "\n";
            line = indent;
        } else if (!line.empty() && line != indent) {
            line += ' ';
        }
        line += w;
    }
    return out + line;
}

// ---- the tables -------------------------------------------------------------------------

namespace {

std::string pad_left(const std::string& s, std::size_t w) {
    return s.size() >= w ? s : std::string(w - s.size(), ' ') + s;
}
std::string pad_right(const std::string& s, std::size_t w) {
    return s.size() >= w ? s : s + std::string(w - s.size(), ' ');
}

/// The value of column `c` (named `name`) in row `r`: by name, else by position.
const cell* find_cell(const row& r, std::size_t c, const std::string& name) {
    for (const cell& x : r.cells)
        if (x.name == name) return &x;
    return c < r.cells.size() ? &r.cells[c] : nullptr;
}

void print_rows(std::FILE* out, const section& s) {
    const std::vector<cell>& columns = s.rows.front().cells;
    std::size_t mode_w = 4;
    for (const row& r : s.rows) mode_w = std::max(mode_w, r.mode.size());
    std::vector<std::vector<std::string>> text(s.rows.size());
    std::vector<std::size_t> width;
    for (std::size_t c = 0; c <= columns.size(); ++c) {
        const bool errors = c == columns.size();
        std::size_t w = errors ? 6 : std::max(columns[c].name.size(), columns[c].unit.size());
        for (std::size_t i = 0; i < s.rows.size(); ++i) {
            const cell* x = errors ? nullptr : find_cell(s.rows[i], c, columns[c].name);
            text[i].push_back(errors         ? group_digits(static_cast<double>(s.rows[i].errors))
                              : x != nullptr ? format_value(x->value, x->unit)
                                             : "-");
            w = std::max(w, text[i].back().size());
        }
        width.push_back(w);
    }
    std::string names = "  " + pad_right("mode", mode_w), units = "  " + std::string(mode_w, ' ');
    for (std::size_t c = 0; c < columns.size(); ++c) {
        names += "  " + pad_left(columns[c].name, width[c]);
        const std::string& u = columns[c].unit;
        units += "  " + pad_left(u == "x" || u == columns[c].name ? "" : u, width[c]);
    }
    names += "  " + pad_left("errors", width.back());
    while (!units.empty() && units.back() == ' ') units.pop_back();
    std::fprintf(out, "%s\n", names.c_str());
    if (units.find_first_not_of(' ') != std::string::npos) std::fprintf(out, "%s\n", units.c_str());
    for (std::size_t i = 0; i < s.rows.size(); ++i) {
        std::string line = "  " + pad_right(s.rows[i].mode, mode_w);
        for (std::size_t c = 0; c < width.size(); ++c)
            line += "  " + pad_left(text[i][c], width[c]);
        std::fprintf(out, "%s\n", line.c_str());
        if (!s.rows[i].note.empty())
            std::fprintf(out, "      %s\n",
                         wrap_text("(" + s.rows[i].note + ")", 92, "       ").c_str());
    }
}

}  // namespace

void print_tables(std::FILE* out, const std::vector<section>& sections) {
    for (const section& s : sections) {
        const std::string title = s.title.empty() ? s.id : s.title;
        std::fprintf(out, "\n%s\n%s\n", title.c_str(), std::string(title.size(), '-').c_str());
        if (!s.work.empty()) std::fprintf(out, "%s\n\n", wrap_text(s.work, 100, "").c_str());
        if (s.rows.empty())
            std::fprintf(out, "  (no results)\n");
        else
            print_rows(out, s);
        if (!s.takeaway.empty())
            std::fprintf(out, "\n  => %s\n", wrap_text(s.takeaway, 94, "     ").c_str());
        for (const std::string& p : s.problems)
            std::fprintf(out, "  PROBLEM: %s\n", wrap_text(p, 89, "           ").c_str());
    }
}

std::vector<std::string> failures(const std::vector<section>& sections) {
    std::vector<std::string> why;
    for (const section& s : sections) {
        for (const std::string& p : s.problems) why.push_back(s.id + ": " + p);
        for (const row& r : s.rows) {
            if (r.errors > 0)
                why.push_back(s.id + ": " + r.mode + ": " +
                              group_digits(static_cast<double>(r.errors)) + " errors");
        }
        if (s.rows.empty() && s.problems.empty()) why.push_back(s.id + ": no results");
    }
    return why;
}

// ---- results.json -----------------------------------------------------------------------

namespace {

std::string json_string(const std::string& s) {
    std::string o = "\"";
    for (const char ch : s) {
        const auto c = static_cast<unsigned char>(ch);
        switch (c) {
            case '"':
                o += "\\\"";
                break;
            case '\\':
                o += "\\\\";
                break;
            case '\n':
                o += "\\n";
                break;
            case '\r':
                o += "\\r";
                break;
            case '\t':
                o += "\\t";
                break;
            default:
                if (c < 0x20) {
                    char esc[8];
                    std::snprintf(esc, sizeof esc, "\\u%04x", c);
                    o += esc;
                } else {
                    o += ch;
                }
        }
    }
    return o + "\"";
}

std::string json_number(double v) {
    if (!std::isfinite(v)) return "null";
    char buf[40];
    std::snprintf(buf, sizeof buf, "%.10g", v);
    return buf;
}

std::string json_strings(const std::vector<std::string>& v) {
    std::string o = "[";
    for (std::size_t i = 0; i < v.size(); ++i) o += (i ? ", " : "") + json_string(v[i]);
    return o + "]";
}

std::string json_bool(bool b) {
    return b ? "true" : "false";
}

std::string machine_json(const machine_info& m) {
    const uring_info& u = m.uring;
    std::string extras = "{";
    for (std::size_t i = 0; i < u.extras.size(); ++i)
        extras +=
            (i ? ", " : "") + json_string(u.extras[i].first) + ": " + json_bool(u.extras[i].second);
    extras += "}";
    return "{\n    \"kernel\": " + json_string(m.kernel) +
           ",\n    \"cpu_model\": " + json_string(m.cpu_model) +
           ",\n    \"cores_online\": " + std::to_string(m.cores_online) +
           ",\n    \"cores_usable\": " + std::to_string(m.cores_usable) +
           ",\n    \"memory_total_mib\": " + json_number(m.memory_total_mib) +
           ",\n    \"memory_available_mib\": " + json_number(m.memory_available_mib) +
           ",\n    \"compiler\": " + json_string(m.compiler) +
           ",\n    \"build\": " + json_string(m.build) +
           ",\n    \"fd_limit\": " + std::to_string(m.fd_limit) +
           ",\n    \"fd_limit_before\": " + std::to_string(m.fd_limit_before) +
           ",\n    \"io_uring\": {\n      \"available\": " + json_bool(u.available) +
           ",\n      \"setup_error\": " + json_string(u.setup_error) +
           ",\n      \"io_uring_disabled_sysctl\": " +
           (u.disabled_sysctl < 0 ? "null" : std::to_string(u.disabled_sysctl)) +
           ",\n      \"tandem_rings\": " + json_string(u.tandem_rings) +
           ",\n      \"setup_flags\": " + json_strings(u.setup_flags) +
           ",\n      \"features\": " + json_strings(u.features) +
           ",\n      \"opcodes_used\": " + std::to_string(u.ops_used) +
           ",\n      \"opcodes_missing\": " + json_strings(u.ops_missing) +
           ",\n      \"extras\": " + extras + "\n    }\n  }";
}

std::string section_json(const section& s) {
    std::string rows;
    for (std::size_t i = 0; i < s.rows.size(); ++i) {
        const row& r = s.rows[i];
        std::string cells;
        for (std::size_t c = 0; c < r.cells.size(); ++c)
            cells += std::string(c ? ", " : "") + "{\"name\": " + json_string(r.cells[c].name) +
                     ", \"value\": " + json_number(r.cells[c].value) +
                     ", \"unit\": " + json_string(r.cells[c].unit) + "}";
        rows += std::string(i ? ",\n" : "") + "        {\"mode\": " + json_string(r.mode) +
                ", \"errors\": " + std::to_string(r.errors) + ", \"note\": " + json_string(r.note) +
                ",\n         \"cells\": [" + cells + "]}";
    }
    return "    {\n      \"id\": " + json_string(s.id) +
           ",\n      \"title\": " + json_string(s.title) +
           ",\n      \"work\": " + json_string(s.work) +
           ",\n      \"chart\": " + json_string(s.chart) +
           ",\n      \"more_charts\": " + json_strings(s.more_charts) +
           ",\n      \"higher_is_better\": " + json_bool(s.higher_is_better) +
           ",\n      \"takeaway\": " + json_string(s.takeaway) +
           ",\n      \"problems\": " + json_strings(s.problems) + ",\n      \"rows\": [\n" + rows +
           "\n      ]\n    }";
}

}  // namespace

std::string to_json(const run_report& r) {
    std::string sections;
    for (std::size_t i = 0; i < r.sections.size(); ++i)
        sections += (i ? ",\n" : "") + section_json(r.sections[i]);
    const std::vector<std::string> why = failures(r.sections);
    return "{\n  \"tool\": \"tandem-demo\",\n  \"tandem_version\": " + json_string(TANDEM_VERSION) +
           ",\n  \"command_line\": " + json_strings(r.flags) +
           ",\n  \"config\": {\"quick\": " + json_bool(r.cfg.quick) +
           ", \"nginx\": " + json_bool(r.cfg.use_nginx) +
           ", \"connections\": " + std::to_string(r.cfg.connections) +
           ", \"self_exe\": " + json_string(r.cfg.self_exe) +
           "},\n  \"machine\": " + machine_json(r.machine) + ",\n  \"sections\": [\n" + sections +
           "\n  ],\n" + "  \"elapsed_s\": " + json_number(r.elapsed_s) +
           ",\n  \"exit_status\": " + (why.empty() ? "0" : "1") +
           ",\n  \"failures\": " + json_strings(why) + "\n}\n";
}

void write_text(const std::filesystem::path& path, const std::string& text) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << text;
    if (!out.flush()) throw std::runtime_error("cannot write " + path.string());
}

// ---- results.svg ------------------------------------------------------------------------

namespace {

std::string xml(const std::string& s) {
    std::string o;
    for (const char c : s) {
        switch (c) {
            case '&':
                o += "&amp;";
                break;
            case '<':
                o += "&lt;";
                break;
            case '>':
                o += "&gt;";
                break;
            case '"':
                o += "&quot;";
                break;
            default:
                o += c;
        }
    }
    return o;
}

std::string num(double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.1f", v);
    return buf;
}

std::string text_at(double x, double y, const std::string& s, const std::string& style) {
    return "<text x=\"" + num(x) + "\" y=\"" + num(y) + "\" " + style + ">" + xml(s) + "</text>\n";
}

constexpr double svg_width = 960;

/// A row that shows tandem's way (drawn orange; the others grey).
bool is_tandem(const std::string& mode) {
    return mode.rfind("tandem", 0) == 0 || mode.find("offload_to_process") != std::string::npos;
}
constexpr double char_px = 7.0;  // a 13 px sans-serif character, roughly: for the label column

/// The bars of one charted cell: its name, which way is better, a bar per row.
std::string svg_bars(const section& s, const std::string& name, double x0, double& y) {
    std::string o;
    double top = 0;
    for (const row& r : s.rows)
        for (const cell& c : r.cells)
            if (c.name == name && std::isfinite(c.value)) top = std::max(top, c.value);
    const double max_bar = svg_width - x0 - 200;
    std::string unit;
    for (const cell& c : s.rows.front().cells)
        if (c.name == name) unit = c.unit;
    o += text_at(24, y + 19,
                 name + (unit.empty() || unit == "x" ? "" : " (" + unit + ")") + ": " +
                     (s.higher_is_better ? "higher is better" : "lower is better"),
                 "font-size=\"12\" fill=\"#495057\"");
    y += 34;
    for (const row& r : s.rows) {
        const cell* c = nullptr;
        for (const cell& x : r.cells)
            if (x.name == name) c = &x;
        const double v = c != nullptr && std::isfinite(c->value) ? c->value : 0;
        const double w = top > 0 ? std::max(2.0, v / top * max_bar) : 2.0;
        o += text_at(x0 - 8, y + 13, r.mode,
                     "font-size=\"13\" text-anchor=\"end\" fill=\"#212529\"");
        o += "<rect x=\"" + num(x0) + "\" y=\"" + num(y) + "\" width=\"" + num(w) +
             "\" height=\"18\" rx=\"2\" fill=\"" + (is_tandem(r.mode) ? "#e8590c" : "#868e96") +
             "\"/>\n";
        std::string label = c != nullptr ? format_with_unit(c->value, c->unit) : "-";
        if (!r.note.empty()) label += " *";  // see the notes under the panel
        if (r.errors > 0) label += "  (" + group_digits(static_cast<double>(r.errors)) + " errors)";
        o += text_at(x0 + w + 6, y + 13, label,
                     std::string("font-size=\"12\" fill=\"") +
                         (r.errors > 0 ? "#c92a2a" : "#212529") + "\"");
        y += 26;
    }
    o += "<line x1=\"" + num(x0) + "\" y1=\"" +
         num(y - 26 * static_cast<double>(s.rows.size()) - 4) + "\" x2=\"" + num(x0) + "\" y2=\"" +
         num(y - 4) + "\" stroke=\"#adb5bd\"/>\n";
    return o;
}

/// One panel: the section's title, the bars of each charted cell, the notes and the takeaway.
std::string svg_panel(const section& s, double& y) {
    std::string o;
    std::size_t longest = 10;
    for (const row& r : s.rows) longest = std::max(longest, r.mode.size());
    const double x0 = 24 + std::min(320.0, static_cast<double>(longest) * char_px + 12);
    o += text_at(24, y, s.title.empty() ? s.id : s.title,
                 "font-size=\"16\" font-weight=\"bold\" fill=\"#212529\"");
    o += svg_bars(s, s.chart, x0, y);
    for (const std::string& name : s.more_charts) {
        y += 4;
        o += svg_bars(s, name, x0, y);
    }
    const auto paragraph = [&](const std::string& text, const char* colour) {
        std::istringstream lines(wrap_text(text, 140, "  "));
        for (std::string line; std::getline(lines, line); y += 15)
            o += text_at(24, y + 10, line, std::string("font-size=\"11\" fill=\"") + colour + "\"");
    };
    for (const row& r : s.rows)
        if (!r.note.empty()) paragraph("* " + r.mode + ": " + r.note, "#868e96");
    if (!s.takeaway.empty()) paragraph(s.takeaway, "#212529");
    y += 26;
    return o;
}

}  // namespace

std::string to_svg(const run_report& r) {
    std::string body;
    double y = 36;
    body += text_at(24, y, "tandem-demo results",
                    "font-size=\"20\" font-weight=\"bold\" fill=\"#212529\"");
    y += 20;
    body += text_at(24, y,
                    r.machine.kernel + ", " + r.machine.cpu_model + ", " +
                        std::to_string(r.machine.cores_usable) + " cores usable; " +
                        r.machine.compiler + (r.cfg.quick ? "; --quick" : ""),
                    "font-size=\"12\" fill=\"#495057\"");
    y += 34;
    bool any = false;
    for (const section& s : r.sections) {
        if (s.chart.empty() || s.rows.empty()) continue;
        body += svg_panel(s, y);
        any = true;
    }
    if (!any) {
        body += text_at(24, y, "No section produced a chart.", "font-size=\"13\" fill=\"#212529\"");
        y += 26;
    }
    body += text_at(24, y, "orange: tandem; grey: the usual ways. Numbers: results.json.",
                    "font-size=\"11\" fill=\"#868e96\"");
    y += 16;
    return "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
           "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" +
           num(svg_width) + "\" height=\"" + num(y) + "\" viewBox=\"0 0 " + num(svg_width) + " " +
           num(y) +
           "\" font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\">\n"
           "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n" +
           body + "</svg>\n";
}

// ---- results.png through gnuplot ----------------------------------------------------------

namespace {

/// The absolute path of `name` on $PATH, "" if none.
std::string on_path(const std::string& name) {
    const char* path = std::getenv("PATH");
    std::istringstream dirs(path != nullptr ? path : "");
    for (std::string dir; std::getline(dirs, dir, ':');) {
        if (dir.empty()) continue;
        const std::string candidate = dir + "/" + name;
        if (::access(candidate.c_str(), X_OK) == 0) return candidate;
    }
    return {};
}

/// A gnuplot string literal: single quotes, a quote doubled.
std::string gp(const std::string& s) {
    std::string o = "'";
    for (const char c : s) o += c == '\'' ? std::string("''") : std::string(1, c);
    return o + "'";
}

std::string gnuplot_script(const run_report& r, const std::filesystem::path& dir,
                           const std::filesystem::path& png, int panels) {
    std::string g = "set terminal png noenhanced size 960," + std::to_string(300 * panels) +
                    "\nset output " + gp(std::filesystem::absolute(png).string()) +
                    "\nset multiplot layout " + std::to_string(panels) + ",1\n" +
                    "set style fill solid 0.9 noborder\nset boxwidth 0.6\nunset key\n"
                    "set yrange [0:*]\nset offsets 0, 0, graph 0.15, 0\nset grid ytics\n"
                    "set xtics nomirror\n";
    int i = 0;
    for (const section& s : r.sections) {
        if (s.chart.empty() || s.rows.empty()) continue;
        const std::filesystem::path data = dir / ("panel" + std::to_string(i++) + ".dat");
        std::string rows, unit;
        for (const row& x : s.rows)
            for (const cell& c : x.cells)
                if (c.name == s.chart) {
                    rows +=
                        "\"" + x.mode + "\" " + json_number(c.value) +
                        (is_tandem(x.mode) ? " 15227148\n" : " 8818326\n");  // the SVG's colours
                    unit = c.unit;
                }
        write_text(data, rows);
        g += "set title " +
             gp(s.title + " - " + s.chart + (unit.empty() ? "" : " (" + unit + ")") + ", " +
                (s.higher_is_better ? "higher" : "lower") + " is better") +
             "\nplot " + gp(data.string()) +
             " using 0:2:3:xtic(1) with boxes lc rgb variable, '' using 0:2:(sprintf('%.4g', $2)) "
             "with labels offset 0,0.8\n";
    }
    return g + "unset multiplot\n";
}

}  // namespace

std::string render_png(const run_report& r, const std::filesystem::path& png, bool* skipped) {
    *skipped = false;
    const std::string gnuplot = on_path("gnuplot");
    int panels = 0;
    for (const section& s : r.sections) panels += !s.chart.empty() && !s.rows.empty() ? 1 : 0;
    if (gnuplot.empty() || panels == 0) {
        *skipped = true;
        return {};
    }
    std::string dir_template =
        std::filesystem::temp_directory_path().string() + "/tandem-demo-XXXXXX";
    try {
        if (::mkdtemp(dir_template.data()) == nullptr)
            throw std::system_error(errno, std::system_category(), "mkdtemp");
        const std::filesystem::path dir = dir_template;
        write_text(dir / "results.gp", gnuplot_script(r, dir, png, panels));
        child_process c(gnuplot, {(dir / "results.gp").string()}, false, true);
        std::string output;
        const auto deadline = child_process::clock::now() + std::chrono::seconds(20);
        c.read_all(output, deadline);
        const auto info = c.wait(deadline);
        std::error_code ec;
        std::filesystem::remove_all(dir, ec);
        if (WIFEXITED(info.status) && WEXITSTATUS(info.status) == 0) return {};
        return "gnuplot ended with " + info.describe() + (output.empty() ? "" : ": " + output);
    } catch (const std::exception& e) {
        std::error_code ec;
        std::filesystem::remove_all(dir_template, ec);
        return std::string("gnuplot: ") + e.what();
    }
}

}  // namespace demo
