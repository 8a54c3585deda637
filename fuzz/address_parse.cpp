// SPDX-License-Identifier: MIT
//
// Fuzzes address::parse with arbitrary text. It must return an address or throw
// std::invalid_argument, nothing else; and whatever parses must survive the round trip
// parse(a.to_string()) == a, while text holding a NUL byte (other than inside an abstract
// Unix name, where NUL is an ordinary byte) must never parse: the C calls behind parse
// (inet_pton, if_nametoindex) would stop at the NUL and accept what comes before it.

#include <tandem/address.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <string_view>

namespace {

[[noreturn]] void fail(std::string_view text, const char* why) {
    std::fprintf(stderr, "address_parse: %s (input of %zu bytes)\n", why, text.size());
    std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    tandem::address a;
    try {
        a = tandem::address::parse(text);
    } catch (const std::invalid_argument&) {
        return 0;
    }
    const bool abstract = text.starts_with("unix:@");
    if (!abstract && text.find('\0') != std::string_view::npos)
        fail(text, "text with a NUL byte parsed");
    const std::string shown = a.to_string();
    tandem::address back;
    try {
        back = tandem::address::parse(shown);
    } catch (const std::invalid_argument& e) {
        std::fprintf(stderr, "address_parse: to_string gave \"%s\": %s\n", shown.c_str(), e.what());
        fail(text, "to_string() of a parsed address does not parse");
    }
    if (!(back == a)) fail(text, "parse(a.to_string()) != a");
    if (back.to_string() != shown) fail(text, "to_string() is not stable over a round trip");
    return 0;
}
