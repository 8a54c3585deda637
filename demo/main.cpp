// SPDX-License-Identifier: MIT
// Placeholder: being written.
#include "demo.hpp"

namespace demo {
void progress(const std::string&) {}
}  // namespace demo

int main() {
    return 0;
}
