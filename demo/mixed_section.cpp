// SPDX-License-Identifier: MIT
// Placeholder: being written.
#include "demo.hpp"

namespace demo {
section run_mixed(const config&) {
    section s;
    s.id = "mixed";
    return s;
}
}  // namespace demo
