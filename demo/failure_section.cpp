// SPDX-License-Identifier: MIT
// Placeholder: being written.
#include "demo.hpp"

namespace demo {
section run_failure(const config&) {
    section s;
    s.id = "failure";
    return s;
}
}  // namespace demo
