// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// CPU offload to a prefork pool of worker processes. This release carries the
/// pool's options; the pool itself and `offload_to_process` arrive with the
/// process-pool work (see DESIGN.md, "CPU offload").

#include <cstddef>

namespace tandem {

/// Options of the runtime's process pool.
struct process_pool_options {
    unsigned workers = 0;  ///< 0: one per core
    std::size_t arena_bytes = std::size_t{256} << 20;
    unsigned max_jobs_per_worker = 0;  ///< 0: unlimited
    void (*initializer)() = nullptr;   ///< runs once in each worker
    bool enabled = true;
};

}  // namespace tandem
