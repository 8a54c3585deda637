// SPDX-License-Identifier: MIT
// address: every text form round-trips through parse/to_string, bad text is
// rejected with a message that quotes it, kernel addresses from getsockname
// compare equal to the parsed ones, and resolve turns names and numeric hosts
// into addresses (or a system_error naming the host) on the blocking-call pool.
//
// Catch's assertions are not thread-safe: coroutines on the io threads return
// what they saw and the test thread checks it.
#include <tandem/address.hpp>
#include <tandem/runtime.hpp>

#include <catch2/catch.hpp>

#include <net/if.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <vector>

static_assert(std::is_nothrow_copy_constructible_v<tandem::address>, "address is a plain value");
static_assert(std::is_nothrow_default_constructible_v<tandem::address>);
static_assert(std::is_same_v<decltype(tandem::resolve("localhost", 80)),
                             tandem::task<std::vector<tandem::address>>>);

namespace {

tandem::runtime_options no_process_pool() {
    tandem::runtime_options o;
    o.processes.enabled = false;
    return o;
}

/// The what() of the invalid_argument that parse(text) throws ("" if none).
std::string parse_error(std::string_view text) {
    try {
        (void)tandem::address::parse(text);
    } catch (const std::invalid_argument& e) {
        return e.what();
    }
    return "";
}

/// A socket closed at scope exit.
struct socket_fd {
    int fd;
    explicit socket_fd(int domain) : fd(::socket(domain, SOCK_STREAM | SOCK_CLOEXEC, 0)) {
        REQUIRE(fd >= 0);
    }
    ~socket_fd() { ::close(fd); }
    socket_fd(const socket_fd&) = delete;
    socket_fd& operator=(const socket_fd&) = delete;
};

/// getsockname through the address's own buffer, the way accept fills one in.
tandem::address local_of(int fd) {
    tandem::address a;
    socklen_t len = tandem::address::capacity();
    REQUIRE(::getsockname(fd, a.data(), &len) == 0);
    a.set_size(len);
    return a;
}

}  // namespace

TEST_CASE("every accepted text form round-trips through parse and to_string", "[address]") {
    const char* forms[] = {
        "127.0.0.1:8080",
        "0.0.0.0:0",
        "255.255.255.255:65535",
        "[::1]:8080",
        "[::]:0",
        "[fe80::1%lo]:80",
        "[2001:db8::ff00:42:8329]:443",
        "[::ffff:1.2.3.4]:80",
        "unix:/tmp/x.sock",
        "unix:relative/sock",
        "unix:@name",
        "unix:@",
    };
    for (const char* text : forms) {
        INFO(text);
        tandem::address a = tandem::address::parse(text);
        CHECK(a.to_string() == text);
        CHECK(tandem::address::parse(a.to_string()) == a);
    }
}

TEST_CASE("parse reads the family, the port and the IPv6 scope", "[address]") {
    auto v4 = tandem::address::parse("10.1.2.3:65535");
    CHECK(v4.family() == AF_INET);
    CHECK(v4.port() == 65535);
    CHECK(v4.size() == sizeof(sockaddr_in));
    CHECK(v4 == tandem::address::ipv4(0x0a010203, 65535));

    auto v6 = tandem::address::parse("[::1]:0");
    CHECK(v6.family() == AF_INET6);
    CHECK(v6.port() == 0);
    CHECK(v6.size() == sizeof(sockaddr_in6));

    auto unix_path = tandem::address::parse("unix:/run/a");
    CHECK(unix_path.family() == AF_UNIX);
    CHECK(unix_path.port() == 0);

    // A numeric scope is the interface index; it prints as the interface's name.
    const unsigned lo = ::if_nametoindex("lo");
    REQUIRE(lo != 0);
    auto by_number = tandem::address::parse("[fe80::1%" + std::to_string(lo) + "]:80");
    CHECK(by_number == tandem::address::parse("[fe80::1%lo]:80"));
    CHECK(by_number.to_string() == "[fe80::1%lo]:80");
    CHECK(by_number != tandem::address::parse("[fe80::1]:80"));
    // An index no interface has stays a number and still round-trips.
    auto unknown = tandem::address::parse("[fe80::1%4000000000]:80");
    CHECK(unknown.to_string() == "[fe80::1%4000000000]:80");
}

TEST_CASE("loopback and ipv4 build IPv4 addresses from host-order numbers", "[address]") {
    CHECK(tandem::address::loopback(8080).to_string() == "127.0.0.1:8080");
    CHECK(tandem::address::loopback(0) == tandem::address::parse("127.0.0.1:0"));
    CHECK(tandem::address::ipv4(INADDR_ANY, 443).to_string() == "0.0.0.0:443");
    CHECK(tandem::address::ipv4(0xc0a80001, 1).to_string() == "192.168.0.1:1");
}

TEST_CASE("a default address is empty and unspecified", "[address]") {
    tandem::address a;
    CHECK(a.family() == AF_UNSPEC);
    CHECK(a.size() == 0);
    CHECK(a.port() == 0);
    CHECK(a.to_string() == "unspecified");
    CHECK(a == tandem::address());
    CHECK(a != tandem::address::loopback(0));
}

TEST_CASE("equality compares the family and the meaningful bytes only", "[address]") {
    using tandem::address;
    CHECK(address::parse("127.0.0.1:80") != address::parse("127.0.0.1:81"));
    CHECK(address::parse("127.0.0.1:80") != address::parse("127.0.0.2:80"));
    CHECK(address::parse("[::1]:80") != address::parse("[::2]:80"));
    CHECK(address::parse("[::ffff:127.0.0.1]:80") != address::parse("127.0.0.1:80"));
    CHECK(address::parse("unix:/a") != address::parse("unix:@a"));
    CHECK(address::parse("unix:@a") != address::parse("unix:@ab"));

    // IPv6 flow info is not part of the address; sin_zero is not either.
    sockaddr_in6 in6{};
    in6.sin6_family = AF_INET6;
    in6.sin6_port = htons(80);
    in6.sin6_addr = in6addr_loopback;
    in6.sin6_flowinfo = htonl(0x12345);
    CHECK(address::from_sockaddr(reinterpret_cast<sockaddr*>(&in6), sizeof in6) ==
          address::parse("[::1]:80"));
    sockaddr_in in{};
    in.sin_family = AF_INET;
    in.sin_port = htons(80);
    in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    in.sin_zero[3] = 7;
    CHECK(address::from_sockaddr(reinterpret_cast<sockaddr*>(&in), sizeof in) ==
          address::loopback(80));

    // A path padded with NULs (a length of the whole sockaddr_un) is the same path.
    sockaddr_un un{};
    un.sun_family = AF_UNIX;
    std::string_view path = "/tmp/p";
    std::copy(path.begin(), path.end(), un.sun_path);
    auto padded = address::from_sockaddr(reinterpret_cast<sockaddr*>(&un), sizeof un);
    CHECK(padded == address::parse("unix:/tmp/p"));
    CHECK(padded.to_string() == "unix:/tmp/p");
}

TEST_CASE("each kind of bad text throws invalid_argument that quotes it and says why",
          "[address]") {
    struct bad_case {
        std::string text;
        const char* why;
    };
    const bad_case cases[] = {
        {"", "empty"},
        {"127.0.0.1", "missing port"},
        {"127.0.0.1:", "missing port"},
        {"[::1]", "missing port"},
        {"[::1]:", "missing port"},
        {"127.0.0.1:65536", "out of range"},
        {"127.0.0.1:99999999999999999999999", "out of range"},
        {"127.0.0.1:-1", "not a decimal number"},
        {"127.0.0.1:+80", "not a decimal number"},
        {"127.0.0.1:80x", "not a decimal number"},
        {"localhost:80", "not a numeric IPv4 address"},
        {"1.2.3:80", "not a numeric IPv4 address"},
        {"256.1.1.1:80", "not a numeric IPv4 address"},
        {":80", "missing host"},
        {"::1:80", "needs brackets"},
        {"[::1:80", "missing ']'"},
        {"[::1]80", "expected ':'"},
        {"[zz::1]:80", "not a numeric IPv6 address"},
        {"[127.0.0.1]:80", "not a numeric IPv6 address"},
        {"[fe80::1%]:80", "empty scope id"},
        {"[fe80::1%no-such-if0]:80", "no network interface named \"no-such-if0\""},
        {"[fe80::1%99999999999]:80", "scope id out of range"},
        {"unix:", "empty unix socket path"},
        {"unix:/" + std::string(107, 'a'), "longer than 107 bytes"},
        {"unix:@" + std::string(108, 'a'), "longer than 107 bytes"},
    };
    for (const bad_case& c : cases) {
        INFO("text: " << c.text);
        CHECK_THROWS_AS(tandem::address::parse(c.text), std::invalid_argument);
        const std::string what = parse_error(c.text);
        CHECK(what.find("\"" + c.text + "\"") != std::string::npos);
        CHECK(what.find(c.why) != std::string::npos);
    }
    // Control bytes are escaped in the message: what() is a C string, a NUL would end it.
    const std::string with_nul("unix:/a\0b", 9);
    CHECK_THROWS_AS(tandem::address::parse(with_nul), std::invalid_argument);
    CHECK(parse_error(with_nul) ==
          "tandem: bad address \"unix:/a\\x00b\": unix socket path contains a NUL byte");
    CHECK(parse_error("1.2.3.4:\"x\"") ==
          "tandem: bad address \"1.2.3.4:\\\"x\\\"\": port is not a decimal number");
    // The longest names that fit are accepted.
    CHECK(tandem::address::parse("unix:/" + std::string(106, 'a')).family() == AF_UNIX);
    CHECK(tandem::address::parse("unix:@" + std::string(107, 'a')).family() == AF_UNIX);
}

TEST_CASE("from_sockaddr rejects other families and impossible lengths", "[address]") {
    sockaddr_storage ss{};
    ss.ss_family = AF_PACKET;
    auto* sa = reinterpret_cast<sockaddr*>(&ss);
    CHECK_THROWS_WITH(tandem::address::from_sockaddr(sa, sizeof ss),
                      Catch::Contains("unsupported address family"));
    ss.ss_family = AF_INET;
    CHECK_THROWS_AS(tandem::address::from_sockaddr(sa, sizeof(sockaddr_in) - 1),
                    std::invalid_argument);
    CHECK_THROWS_AS(tandem::address::from_sockaddr(sa, 1), std::invalid_argument);
    CHECK_THROWS_AS(tandem::address::from_sockaddr(nullptr, 0), std::invalid_argument);
    ss.ss_family = AF_UNIX;
    CHECK_THROWS_AS(tandem::address::from_sockaddr(sa, sizeof ss + 1), std::invalid_argument);
    // An unnamed Unix socket (an accepted peer that did not bind) has no name.
    auto unnamed = tandem::address::from_sockaddr(sa, sizeof(sa_family_t));
    CHECK(unnamed.to_string() == "unix:");
    CHECK(unnamed != tandem::address::parse("unix:@"));
}

TEST_CASE("from_sockaddr of getsockname on bound sockets equals the parsed address", "[address]") {
    SECTION("TCP on 127.0.0.1 port 0 gets a real port") {
        socket_fd s(AF_INET);
        auto want = tandem::address::loopback(0);
        REQUIRE(::bind(s.fd, want.data(), want.size()) == 0);
        tandem::address got = local_of(s.fd);
        CHECK(got.family() == AF_INET);
        CHECK(got.port() != 0);
        CHECK(got == tandem::address::parse("127.0.0.1:" + std::to_string(got.port())));

        sockaddr_storage ss{};
        socklen_t len = sizeof ss;
        REQUIRE(::getsockname(s.fd, reinterpret_cast<sockaddr*>(&ss), &len) == 0);
        CHECK(tandem::address::from_sockaddr(reinterpret_cast<sockaddr*>(&ss), len) == got);
    }
    SECTION("TCP on [::1] port 0, where the kernel has IPv6") {
        const int fd = ::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
        auto want = tandem::address::parse("[::1]:0");
        if (fd < 0 || ::bind(fd, want.data(), want.size()) != 0) {
            if (fd >= 0) ::close(fd);
            WARN("no IPv6 loopback here; skipped");
            return;
        }
        tandem::address got = local_of(fd);
        ::close(fd);
        CHECK(got.port() != 0);
        CHECK(got.to_string() == "[::1]:" + std::to_string(got.port()));
    }
    SECTION("AF_UNIX on a path in a temporary directory") {
        char dir[] = "/tmp/tandem_address_test.XXXXXX";
        REQUIRE(::mkdtemp(dir) != nullptr);
        const std::string path = std::string(dir) + "/sock";
        {
            socket_fd s(AF_UNIX);
            auto want = tandem::address::parse("unix:" + path);
            REQUIRE(::bind(s.fd, want.data(), want.size()) == 0);
            tandem::address got = local_of(s.fd);
            CHECK(got == want);
            CHECK(got.to_string() == "unix:" + path);
        }
        std::error_code ec;
        std::filesystem::remove_all(dir, ec);
    }
    SECTION("AF_UNIX abstract name") {
        socket_fd s(AF_UNIX);
        const std::string text = "unix:@tandem_address_test." + std::to_string(::getpid());
        auto want = tandem::address::parse(text);
        REQUIRE(::bind(s.fd, want.data(), want.size()) == 0);
        tandem::address got = local_of(s.fd);
        CHECK(got == want);
        CHECK(got.to_string() == text);
    }
}

namespace {

tandem::task<std::vector<tandem::address>> resolve_copy(std::uint16_t port) {
    // The caller's string dies before the lookup runs: resolve must own a copy.
    std::string host = "localhost";
    auto t = tandem::resolve(host, port);
    host.assign("garbage.invalid");
    co_return co_await std::move(t);
}

tandem::task<std::vector<tandem::address>> resolve_one(std::string host, std::uint16_t port) {
    co_return co_await tandem::resolve(host, port);
}

/// What resolve threw: the category's name, the code and what(); empty name if nothing.
struct failure {
    std::string category, what;
    int code = 0;
    bool threw_system_error = false;
};

tandem::task<failure> resolve_failure(std::string host) {
    failure f;
    try {
        (void)co_await tandem::resolve(host, 80);
    } catch (const std::system_error& e) {
        f.threw_system_error = true;
        f.category = e.code().category().name();
        f.code = e.code().value();
        f.what = e.what();
    }
    co_return f;
}

bool contains(const std::vector<tandem::address>& list, std::string_view text) {
    return std::find(list.begin(), list.end(), tandem::address::parse(text)) != list.end();
}

}  // namespace

TEST_CASE("resolve of localhost gives a loopback address with the port", "[address]") {
    auto found = tandem::run(resolve_copy(80), no_process_pool());
    REQUIRE(!found.empty());
    CHECK((contains(found, "127.0.0.1:80") || contains(found, "[::1]:80")));
    for (const auto& a : found) {
        INFO(a.to_string());
        CHECK(a.port() == 80);
        CHECK(std::count(found.begin(), found.end(), a) == 1);
    }
}

TEST_CASE("resolve of a numeric host gives exactly that address", "[address]") {
    auto v6 = tandem::run(resolve_one("::1", 65535), no_process_pool());
    REQUIRE(v6.size() == 1);
    CHECK(v6[0].to_string() == "[::1]:65535");
    auto v4 = tandem::run(resolve_one("127.0.0.1", 0), no_process_pool());
    REQUIRE(v4.size() == 1);
    CHECK(v4[0] == tandem::address::loopback(0));
}

TEST_CASE("resolve of a name that cannot exist throws system_error naming the host", "[address]") {
    // .invalid never resolves (RFC 6761). Without a network the resolver may say EAI_AGAIN
    // rather than EAI_NONAME, so only the type and the text are checked.
    failure f = tandem::run(resolve_failure("no-such-host.invalid"), no_process_pool());
    REQUIRE(f.threw_system_error);
    CHECK(f.what.find("\"no-such-host.invalid\"") != std::string::npos);
    if (f.category == "getaddrinfo") CHECK(f.code != 0);
}

TEST_CASE("resolve of a host with a NUL byte fails instead of looking up a prefix", "[address]") {
    failure f =
        tandem::run(resolve_failure(std::string("localhost\0.evil", 15)), no_process_pool());
    REQUIRE(f.threw_system_error);
    CHECK(f.category == "getaddrinfo");
    CHECK(f.code == EAI_NONAME);
    CHECK(&tandem::getaddrinfo_category() == &tandem::getaddrinfo_category());
    CHECK(tandem::getaddrinfo_category().message(EAI_NONAME) == ::gai_strerror(EAI_NONAME));
}
