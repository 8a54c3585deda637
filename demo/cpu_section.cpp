// SPDX-License-Identifier: MIT
// Placeholder: being written.
#include "demo.hpp"

namespace demo {
section run_cpu(const config&) {
    section s;
    s.id = "cpu";
    return s;
}
}  // namespace demo
namespace demo {
int other_child_main(int, char**) {
    return 2;
}
}  // namespace demo
