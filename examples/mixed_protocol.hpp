// SPDX-License-Identifier: MIT
#pragma once

// The mixed workload's wire format and work, shared by examples/mixed_server.cpp and
// bench/mixed_client.cpp (which checks every reply against these functions).
// Protocol, 16-byte messages in host byte order (client and server share the machine):
//   request {u32 kind: 0 cheap, 1 heavy; u32 passes; u64 seed}
//   reply   {u32 hashed: 1 if heavy_hash ran, else 0; u32 zero; u64 value}

#include <array>
#include <cstddef>
#include <cstdint>

namespace mixed {

struct request {
    std::uint32_t kind;  // 0 cheap, 1 heavy
    std::uint32_t passes;
    std::uint64_t seed;
};
struct reply {
    std::uint32_t hashed;
    std::uint32_t zero;
    std::uint64_t value;
};
static_assert(sizeof(request) == 16 && sizeof(reply) == 16);
inline constexpr std::uint32_t max_passes =
    100'000;  // ~100 ms: a request cannot take the server down

inline constexpr std::uint64_t splitmix64(std::uint64_t x) {
    x += 0x9e3779b97f4a7c15;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9;
    x = (x ^ (x >> 27)) * 0x94d049bb133111eb;
    return x ^ (x >> 31);
}

inline std::uint64_t cheap_answer(std::uint64_t seed) {
    return splitmix64(seed);
}

// 4 KiB of fixed bytes, made by the compiler: the same in every process, worker or not.
inline constexpr std::array<std::uint64_t, 512> block = [] {
    std::array<std::uint64_t, 512> b{};
    for (std::size_t i = 0; i < b.size(); ++i) b[i] = splitmix64(i);
    return b;
}();

// FNV-1a, a word at a time, with a shift so that every bit mixes: `passes` passes over the
// block. One serial multiply chain: about 1 us per pass on a 2-3 GHz core. A plain function of
// numbers, so offload_to_process can run it in a worker (it names it by address).
inline std::uint64_t heavy_hash(std::uint64_t seed, std::uint32_t passes) {
    std::uint64_t h = 0xcbf29ce484222325 ^ seed;
    for (std::uint32_t p = 0; p < passes; ++p) {
        for (std::uint64_t w : block) {
            h = (h ^ w) * 0x100000001b3;
            h ^= h >> 29;
        }
    }
    return h;
}

}  // namespace mixed
