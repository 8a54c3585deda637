// SPDX-License-Identifier: MIT
#include "heap.hpp"

#include <cstdint>
#include <iterator>

namespace tandem::detail {

arena_heap::arena_heap(std::size_t offset, std::size_t bytes)
    : capacity_(bytes / granule * granule), free_bytes_(capacity_) {
    if (capacity_ > 0) free_.emplace(offset, capacity_);
}

std::size_t arena_heap::allocate(std::size_t bytes) {
    const std::size_t need = round(bytes);
    if (need > free_bytes_) return SIZE_MAX;
    for (auto it = free_.begin(); it != free_.end(); ++it) {
        if (it->second < need) continue;
        const std::size_t offset = it->first;
        const std::size_t rest = it->second - need;
        free_.erase(it);
        if (rest > 0) free_.emplace(offset + need, rest);
        free_bytes_ -= need;
        return offset;
    }
    return SIZE_MAX;
}

void arena_heap::free(std::size_t offset, std::size_t bytes) noexcept {
    std::size_t length = round(bytes);
    free_bytes_ += length;
    auto next = free_.lower_bound(offset);
    if (next != free_.begin()) {
        auto prev = std::prev(next);
        if (prev->first + prev->second == offset) {
            offset = prev->first;
            length += prev->second;
            free_.erase(prev);
        }
    }
    if (next != free_.end() && offset + length == next->first) {
        length += next->second;
        free_.erase(next);
    }
    free_.emplace(offset, length);
}

}  // namespace tandem::detail
