// SPDX-License-Identifier: MIT
#pragma once

// The arena's heap: variable-size blocks for large arguments, results and
// shared_arrays. Only the parent allocates and frees (workers write into
// blocks they are given), so this is ordinary parent memory describing the
// shared region: nothing a worker writes can corrupt it.

#include <cstddef>
#include <cstdint>
#include <map>

namespace tandem::detail {

/// First-fit over a free list ordered by offset, coalescing on free. Blocks
/// are multiples of `granule` bytes (cache-line aligned). Not thread-safe:
/// the pool's mutex guards it.
class arena_heap {
public:
    static constexpr std::size_t granule = 64;

    arena_heap(std::size_t offset, std::size_t bytes);

    /// The offset of a block of at least `bytes` (0 is rounded up to one
    /// granule), or SIZE_MAX when no free range is large enough now.
    std::size_t allocate(std::size_t bytes);
    /// Returns a block; `bytes` as passed to allocate.
    void free(std::size_t offset, std::size_t bytes) noexcept;

    /// Whether a block of `bytes` could ever be allocated (the heap's size).
    bool could_fit(std::size_t bytes) const noexcept { return round(bytes) <= capacity_; }
    std::size_t capacity() const noexcept { return capacity_; }
    std::size_t free_bytes() const noexcept { return free_bytes_; }

private:
    static std::size_t round(std::size_t bytes) noexcept {
        if (bytes == 0) return granule;
        if (bytes > SIZE_MAX - granule) return SIZE_MAX;
        return (bytes + granule - 1) / granule * granule;
    }

    std::map<std::size_t, std::size_t> free_;  // offset -> length
    std::size_t capacity_;
    std::size_t free_bytes_;
};

}  // namespace tandem::detail
