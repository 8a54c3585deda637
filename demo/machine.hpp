// SPDX-License-Identifier: MIT
#pragma once

// The machine tandem-demo runs on (machine.cpp): kernel, CPU, memory, compiler and what this
// kernel's io_uring offers, probed with liburing. Printed before the sections run and stored
// in results.json.

#include <string>
#include <utility>
#include <vector>

namespace demo {

struct uring_info {
    bool available = false;                // a ring could be set up
    std::string setup_error;               // why not, when !available
    int disabled_sysctl = -1;              // /proc/sys/kernel/io_uring_disabled; -1: absent
    std::string tandem_rings;              // the flags tandem's runtime set up its rings with
    std::vector<std::string> setup_flags;  // accepted: SINGLE_ISSUER, DEFER_TASKRUN, ...
    std::vector<std::string> features;     // IORING_FEAT_* reported: NODROP, EXT_ARG, ...
    std::vector<std::string> ops_missing;  // opcodes tandem uses that the kernel lacks
    unsigned ops_used = 0;                 // how many opcodes tandem uses
    std::vector<std::pair<std::string, bool>> extras;  // MSG_RING, SEND_ZC, multishot ...
};

struct machine_info {
    std::string kernel;  // "Linux 6.1.0-18-amd64 x86_64"
    std::string cpu_model;
    unsigned cores_online = 0;
    unsigned cores_usable = 0;  // in this process's affinity mask
    double memory_total_mib = 0;
    double memory_available_mib = 0;
    std::string compiler;  // "g++ 12.2.0"
    std::string build;     // "optimised" / "not optimised", sanitizers
    unsigned long fd_limit = 0;
    unsigned long fd_limit_before = 0;  // the soft limit we found
    uring_info uring;

    /// Lines "label  value" for the header.
    std::vector<std::pair<std::string, std::string>> lines() const;
};

/// Looks at the machine; never throws (what cannot be read stays empty).
machine_info probe_machine();

}  // namespace demo
