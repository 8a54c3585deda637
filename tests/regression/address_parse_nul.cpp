// SPDX-License-Identifier: MIT
// What broke (found by fuzz/address_parse.cpp): address::parse handed the host and scope to
// inet_pton and if_nametoindex as C strings, which stop at a NUL byte, so "[::\0junk]:8080"
// parsed as [::]:8080 and "127.0.0.1\0junk:80" as 127.0.0.1:80: text that is not an address
// was accepted as another one. A NUL outside an abstract Unix name is now invalid_argument.
#include <tandem/address.hpp>

#include <catch2/catch.hpp>

#include <stdexcept>
#include <string_view>

using namespace std::string_view_literals;

TEST_CASE("address::parse rejects a NUL byte in an IP host, scope or port", "[regression]") {
    for (std::string_view text :
         {"[::\0\0\0\0\0\0\0\0\0\0\0\0\0\x30]:8080"sv, "127.0.0.1\0junk:80"sv,
          "[fe80::1%lo\0x]:80"sv, "127.0.0.1:80\0"sv,
          "\0"
          "127.0.0.1:80"sv}) {
        INFO("input of " << text.size() << " bytes");
        CHECK_THROWS_AS(tandem::address::parse(text), std::invalid_argument);
    }
}

TEST_CASE("address::parse still takes a NUL inside an abstract Unix name", "[regression]") {
    const auto a = tandem::address::parse("unix:@a\0b"sv);
    CHECK(a.to_string() == "unix:@a\0b"sv);
    CHECK(tandem::address::parse(a.to_string()) == a);
}
