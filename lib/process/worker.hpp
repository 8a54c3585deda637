// SPDX-License-Identifier: MIT
#pragma once

// The worker process's side of the pool: the loop that serves one worker's
// submit ring (lib/process/worker.cpp).

#include <tandem/shared_array.hpp>

#include <cstddef>
#include <cstdint>
#include <string>

namespace tandem::detail {

/// The zygote's worker_main: `arena` is the arena's header (shm::arena_header),
/// `index` the worker's number. Runs the pool's initializer, then serves jobs
/// until max_jobs_per_worker is reached (returns) or the parent dies (_exit).
/// If the initializer throws, its description goes to the worker's
/// init_error and the process exits with status init_failed_status.
void worker_main(void* arena, int index);

inline constexpr int init_failed_status = 71;

/// True in a worker process.
bool in_worker() noexcept;

/// In a worker, the arena's first byte (its shm::arena_header); null elsewhere.
/// For tests that play a worker scribbling over shared memory.
std::byte* worker_arena() noexcept;

/// In a worker: a view of [address, address + bytes) if it lies inside the
/// arena's heap and is aligned; throws decode_error otherwise.
shared_ref worker_resolve(std::uint64_t address, std::uint64_t bytes, std::size_t align);

/// "type: message" for the exception being handled (call in a catch block).
std::string describe_current_exception();

}  // namespace tandem::detail
