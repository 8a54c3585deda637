// SPDX-License-Identifier: MIT
#pragma once

// What the CPU, mixed and failure sections of tandem-demo share (main.cpp does not use it):
// the prime count (the CPU section's work, the failure section's jobs), the CPUs this process
// may use, number formatting, medians, and the `--child` entry points that other_child_main
// (cpu_section.cpp) dispatches to.

#include <tandem/runtime.hpp>

#include <sched.h>

#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace demo::util {

/// Set by main when io_uring is not available: the section processes then ask for epoll
/// themselves, so the runtime's fallback line is printed once (by main), not by each of them.
inline constexpr const char* epoll_env = "TANDEM_DEMO_EPOLL";

/// The runtime options every section starts from.
inline tandem::runtime_options base_options() {
    tandem::runtime_options o;
    if (std::getenv(epoll_env) != nullptr) o.backend = tandem::io_backend::epoll;
    return o;
}

/// The primes in [lo, hi), by trial division. A plain function of numbers: offload_to_process
/// names it by address, and every worker runs this same binary.
inline long count_primes(long lo, long hi) {
    long n = 0;
    for (long x = std::max(lo, 2L); x < hi; ++x) {
        bool prime = x == 2 || x % 2 != 0;
        for (long d = 3; prime && d * d <= x; d += 2) prime = x % d != 0;
        n += prime ? 1 : 0;
    }
    return n;
}

/// pi(n), the number of primes below n, for the n the demo uses; 0 for any other n.
inline long known_prime_count(long n) {
    struct entry {
        long n, primes;
    };
    constexpr entry table[] = {{1'000'000, 78'498},    {2'000'000, 148'933}, {3'000'000, 216'816},
                               {4'000'000, 283'146},   {5'000'000, 348'513}, {10'000'000, 664'579},
                               {20'000'000, 1'270'607}};
    for (const entry& e : table) {
        if (e.n == n) return e.primes;
    }
    return 0;
}

/// The CPUs this process may run on (its affinity mask), in order; at least one entry.
inline std::vector<int> usable_cpus() {
    std::vector<int> cpus;
    cpu_set_t mine;
    CPU_ZERO(&mine);
    if (::sched_getaffinity(0, sizeof mine, &mine) == 0) {
        for (int c = 0; c < CPU_SETSIZE; ++c) {
            if (CPU_ISSET(c, &mine)) cpus.push_back(c);
        }
    }
    if (cpus.empty()) cpus.push_back(0);
    return cpus;
}

/// printf into a std::string.
__attribute__((format(printf, 1, 2))) inline std::string format(const char* fmt, ...) {
    char buf[512];
    std::va_list args;
    va_start(args, fmt);
    const int n = std::vsnprintf(buf, sizeof buf, fmt, args);
    va_end(args);
    if (n < 0) return {};
    return std::string(buf, std::min(static_cast<std::size_t>(n), sizeof buf - 1));
}

/// 10000000 as "10,000,000".
inline std::string grouped(long long n) {
    const std::string digits = std::to_string(n < 0 ? -n : n);
    std::string out = n < 0 ? "-" : "";
    for (std::size_t i = 0; i < digits.size(); ++i) {
        if (i > 0 && (digits.size() - i) % 3 == 0) out.push_back(',');
        out.push_back(digits[i]);
    }
    return out;
}

/// The median of v (the mean of the middle two for an even count); 0 if v is empty.
inline double median(std::vector<double> v) {
    if (v.empty()) return 0;
    std::sort(v.begin(), v.end());
    const std::size_t mid = v.size() / 2;
    return v.size() % 2 != 0 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
}

/// The q-quantile (nearest rank) of a sorted vector; 0 if it is empty.
inline double quantile_sorted(const std::vector<float>& v, double q) {
    if (v.empty()) return 0;
    const auto rank = static_cast<std::size_t>(std::ceil(q * static_cast<double>(v.size())));
    return v[std::clamp<std::size_t>(rank, 1, v.size()) - 1];
}

/// `tandem-demo --child mixed-server MODE` (mixed_section.cpp): argv[0] is "mixed-server".
/// Serves the mixed workload on 127.0.0.1, prints "PORT n" and runs until SIGTERM.
int mixed_server_main(int argc, char** argv);

}  // namespace demo::util
