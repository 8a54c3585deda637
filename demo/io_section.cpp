// SPDX-License-Identifier: MIT
// Placeholder: being written.
#include "demo.hpp"

namespace demo {
section run_io(const config&) {
    section s;
    s.id = "io";
    return s;
}
}  // namespace demo
namespace demo {
int io_child_main(int, char**) {
    return 2;
}
}  // namespace demo
