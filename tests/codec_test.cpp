// SPDX-License-Identifier: MIT
// codec<T>: round trips of every built-in type, bounded regions, measuring, and decoding of
// truncated, scribbled and oversized encodings (run this one under ASan: every damaged input
// lives in a heap block of exactly its size, so any read past it is reported).
#include <tandem/tandem.hpp>

#include <catch2/catch.hpp>

#include <array>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <new>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <variant>
#include <vector>

namespace {

enum class colour : std::uint8_t { red, green, blue };
enum plain : int { plain_a = 1, plain_b = 1 << 20 };

struct vec3 {
    float x, y, z;
    bool operator==(const vec3&) const = default;
};

struct padded {  // padding between the members travels too, harmlessly
    char c;
    double d;
    std::int16_t s;
    bool operator==(const padded&) const = default;
};

struct holds_string {
    std::string s;
};

struct person {
    std::string name;
    std::vector<int> scores;
    colour favourite;
    bool operator==(const person&) const = default;
};

int triple(int x) {
    return 3 * x;
}

}  // namespace

template <>
struct tandem::codec<person> {
    static void encode(tandem::encoder& e, const person& p) {
        tandem::encode(e, p.name);
        tandem::encode(e, p.scores);
        tandem::encode(e, p.favourite);
    }
    static person decode(tandem::decoder& d) {
        return person{tandem::decode<std::string>(d), tandem::decode<std::vector<int>>(d),
                      tandem::decode<colour>(d)};
    }
};

using nested = std::vector<std::pair<std::string, std::optional<std::array<int, 3>>>>;
using mixed = std::tuple<colour, vec3, plain, std::vector<std::tuple<plain, std::string>>>;

static_assert(tandem::encodable<int>);
static_assert(tandem::encodable<std::string>);
static_assert(tandem::encodable<std::vector<double>>);
static_assert(tandem::encodable<colour> && tandem::encodable<vec3> && tandem::encodable<padded>);
static_assert(tandem::encodable<int (*)(int)>, "every process runs the same binary");
static_assert(tandem::encodable<nested> && tandem::encodable<mixed>);
static_assert(tandem::encodable<person> && tandem::encodable<std::vector<person>>);
static_assert(tandem::encodable<std::variant<std::monostate, int, std::string>>);
static_assert(!tandem::encodable<int*>, "a raw pointer means nothing in another process");
static_assert(!tandem::encodable<const char*>);
static_assert(!tandem::encodable<holds_string>, "not trivially copyable and no codec");
static_assert(!tandem::encodable<std::vector<holds_string>>);
static_assert(!tandem::encodable<std::optional<holds_string>>);
static_assert(!tandem::encodable<std::string_view>, "trivially copyable, but points elsewhere");
static_assert(std::is_base_of_v<tandem::error, tandem::decode_error>);

// Replaced global operator new: records the largest single request while `tracking` is on, so
// the damaged-input tests can assert that no scribbled length turns into a huge allocation.
// g++ inlines the replacements into std::allocator and then takes the malloc/free pair for a
// mismatch with new/delete.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
namespace {
std::atomic<bool> tracking{false};
std::atomic<std::size_t> largest_request{0};
}  // namespace

namespace {
void* tracked_malloc(std::size_t n) noexcept {
    if (tracking.load(std::memory_order_relaxed)) {
        std::size_t seen = largest_request.load(std::memory_order_relaxed);
        while (n > seen && !largest_request.compare_exchange_weak(seen, n)) {
        }
    }
    return std::malloc(n == 0 ? 1 : n);
}
void* tracked_new(std::size_t n) {
    if (void* p = tracked_malloc(n)) return p;
    throw std::bad_alloc();
}
}  // namespace

// Every unaligned form is replaced, so that none of them pairs with the sanitizer's own.
void* operator new(std::size_t n) {
    return tracked_new(n);
}
void* operator new[](std::size_t n) {
    return tracked_new(n);
}
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
    return tracked_malloc(n);
}
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept {
    return tracked_malloc(n);
}
void operator delete(void* p) noexcept {
    std::free(p);
}
void operator delete[](void* p) noexcept {
    std::free(p);
}
void operator delete(void* p, std::size_t) noexcept {
    std::free(p);
}
void operator delete[](void* p, std::size_t) noexcept {
    std::free(p);
}
void operator delete(void* p, const std::nothrow_t&) noexcept {
    std::free(p);
}
void operator delete[](void* p, const std::nothrow_t&) noexcept {
    std::free(p);
}

namespace {

using bytes = std::vector<std::byte>;

template <class T>
bytes encode_exactly(const T& v) {
    bytes out(tandem::encoded_size(v));
    tandem::encoder e(out.data(), out.data() + out.size());
    tandem::encode(e, v);
    REQUIRE(e.size() == out.size());
    return out;
}

template <class T>
T round_trip(const T& v) {
    const bytes b = encode_exactly(v);
    tandem::decoder d(b.data(), b.data() + b.size());
    T out = tandem::decode<T>(d);
    CHECK(d.remaining() == 0);
    return out;
}

/// A valid encoding and a way to decode it as its type, whatever that is.
struct sample {
    std::string name;
    bytes encoding;
    std::function<void(tandem::decoder&)> decode;
};

template <class T>
sample make_sample(std::string name, const T& v) {
    return {std::move(name), encode_exactly(v),
            [](tandem::decoder& d) { (void)tandem::decode<T>(d); }};
}

std::vector<sample> samples() {
    std::vector<sample> s;
    s.push_back(make_sample("int", 12345));
    s.push_back(make_sample("bool", true));
    s.push_back(make_sample("string", std::string("the quick brown fox")));
    s.push_back(make_sample("vector<int>", std::vector<int>{1, 2, 3, 4, 5, 6, 7}));
    s.push_back(make_sample("vector<string>", std::vector<std::string>{"a", "", "abc", "de"}));
    s.push_back(make_sample("vector<bool>", std::vector<bool>{true, false, true}));
    s.push_back(make_sample("vector<monostate>", std::vector<std::monostate>(5)));
    s.push_back(make_sample("nested", nested{{"one", std::array<int, 3>{1, 2, 3}},
                                             {"two", std::nullopt},
                                             {"", std::array<int, 3>{-1, 0, 7}}}));
    s.push_back(make_sample(
        "mixed", mixed{colour::green, vec3{1, 2, 3}, plain_b, {{plain_a, "x"}, {plain_b, "yz"}}}));
    s.push_back(make_sample("optional<vector<optional<string>>>",
                            std::optional<std::vector<std::optional<std::string>>>{
                                {std::nullopt, "first", std::nullopt, "second"}}));
    s.push_back(
        make_sample("vector<variant>", std::vector<std::variant<std::monostate, int, std::string>>{
                                           std::monostate{}, 4, "four", std::monostate{}}));
    s.push_back(make_sample("vector<person>", std::vector<person>{{"ada", {1, 2}, colour::red},
                                                                  {"bob", {}, colour::blue}}));
    s.push_back(make_sample("vector<vector<uint16_t>>",
                            std::vector<std::vector<std::uint16_t>>{{1, 2}, {}, {3, 4, 5}}));
    s.push_back(make_sample("array<string, 3>", std::array<std::string, 3>{"x", "yy", "zzz"}));
    return s;
}

/// Decodes `input` from a heap block of exactly its size (so ASan sees any overread). Returns
/// true if it decoded, false on decode_error; anything else fails the test.
bool decode_copy(const sample& s, const bytes& input) {
    auto block = std::make_unique<std::byte[]>(input.size());
    if (!input.empty()) std::memcpy(block.get(), input.data(), input.size());
    tandem::decoder d(block.get(), block.get() + input.size());
    largest_request = 0;
    tracking = true;
    bool ok = true;
    try {
        s.decode(d);
    } catch (const tandem::decode_error&) {
        ok = false;
    } catch (const std::exception& e) {
        tracking = false;
        FAIL(s.name << ": decoding damaged bytes threw " << e.what() << ", not decode_error");
    }
    tracking = false;
    // Decoded memory stays proportional to the input: never a scribbled count's worth.
    CHECK(largest_request.load() <= 64 * input.size() + 1024);
    return ok;
}

}  // namespace

TEST_CASE("arithmetic types and enums come back bit for bit", "[codec]") {
    CHECK(round_trip(42) == 42);
    CHECK(round_trip(std::numeric_limits<std::uint64_t>::max()) ==
          std::numeric_limits<std::uint64_t>::max());
    CHECK(round_trip(std::int8_t{-1}) == -1);
    CHECK(round_trip('z') == 'z');
    CHECK(round_trip(2.5f) == 2.5f);
    CHECK(std::signbit(round_trip(-0.0)));
    CHECK(std::isnan(round_trip(std::numeric_limits<double>::quiet_NaN())));
    CHECK(round_trip(true) == true);
    CHECK(round_trip(false) == false);
    CHECK(round_trip(colour::blue) == colour::blue);
    CHECK(round_trip(plain_b) == plain_b);
    CHECK(encode_exactly(std::uint32_t{7}).size() == 4);
    CHECK(encode_exactly(true).size() == 1);
}

TEST_CASE("trivially copyable structs and function pointers come back as they were", "[codec]") {
    CHECK(round_trip(vec3{1.5f, -2.0f, 3.25f}) == vec3{1.5f, -2.0f, 3.25f});
    CHECK(round_trip(padded{'q', 0.125, -300}) == padded{'q', 0.125, -300});
    CHECK(encode_exactly(vec3{}).size() == sizeof(vec3));
    int (*fn)(int) = &triple;
    CHECK(round_trip(fn)(5) == 15);
}

TEST_CASE("strings round trip: empty, with nul bytes, and large", "[codec]") {
    CHECK(round_trip(std::string()).empty());
    const std::string with_nul("a\0b\0c", 5);
    CHECK(round_trip(with_nul) == with_nul);
    const std::string big(1 << 20, 'x');
    CHECK(round_trip(big) == big);
    CHECK(encode_exactly(std::string("abc")).size() == sizeof(std::uint64_t) + 3);
    CHECK(round_trip(std::u32string(U"wide")) == U"wide");
}

TEST_CASE("vectors round trip on the memcpy path and the element-wise path", "[codec]") {
    const std::vector<int> ints{1, -2, 3, 1 << 30};
    CHECK(round_trip(ints) == ints);
    CHECK(encode_exactly(ints).size() == sizeof(std::uint64_t) + 4 * sizeof(int));
    const std::vector<vec3> points{{1, 2, 3}, {4, 5, 6}};
    CHECK(round_trip(points) == points);
    CHECK(round_trip(std::vector<double>{}).empty());
    const std::vector<std::string> words{"", "one", std::string(1000, 'w')};
    CHECK(round_trip(words) == words);
    const std::vector<bool> flags{true, false, false, true, true};
    CHECK(round_trip(flags) == flags);
    // Zero-byte elements get a marker byte each, so their count stays bounded by the bytes.
    CHECK(round_trip(std::vector<std::monostate>(3)).size() == 3);
    CHECK(encode_exactly(std::vector<std::monostate>(3)).size() == sizeof(std::uint64_t) + 3);
}

TEST_CASE("arrays, pairs, tuples, optionals, variants and monostate round trip", "[codec]") {
    CHECK(round_trip(std::array<int, 3>{7, 8, 9}) == std::array<int, 3>{7, 8, 9});
    CHECK(round_trip(std::array<std::string, 2>{"a", "b"}) == std::array<std::string, 2>{"a", "b"});
    CHECK(encode_exactly(std::array<int, 0>{}).empty());
    CHECK(round_trip(std::pair<int, std::string>{1, "one"}) ==
          std::pair<int, std::string>{1, "one"});
    const std::tuple<int, std::string, double> t{1, "two", 3.0};
    CHECK(round_trip(t) == t);
    CHECK(encode_exactly(std::tuple<>{}).empty());
    CHECK(round_trip(std::optional<int>{5}) == 5);
    CHECK_FALSE(round_trip(std::optional<std::string>{}).has_value());
    CHECK(round_trip(std::optional<std::string>{"x"}) == "x");
    using var = std::variant<std::monostate, int, std::string>;
    CHECK(round_trip(var{}).index() == 0);
    CHECK(round_trip(var{12}) == var{12});
    CHECK(round_trip(var{"twelve"}) == var{"twelve"});
    CHECK(encode_exactly(std::monostate{}).empty());
}

TEST_CASE("nested combinations of built-in types round trip", "[codec]") {
    const nested n{{"one", std::array<int, 3>{1, 2, 3}}, {"none", std::nullopt}, {"", {}}};
    CHECK(round_trip(n) == n);
    const mixed m{colour::red, vec3{0, 1, 2}, plain_a, {{plain_b, "b"}, {plain_a, ""}}};
    CHECK(round_trip(m) == m);
    const std::optional<std::vector<std::optional<std::string>>> o{{"a", std::nullopt, "c"}};
    CHECK(round_trip(o) == o);
    const std::vector<std::vector<std::tuple<int, std::optional<double>>>> deep{
        {{1, 1.5}, {2, std::nullopt}}, {}, {{3, 0.0}}};
    CHECK(round_trip(deep) == deep);
}

TEST_CASE("a user specialisation of codec round trips and composes with the built-ins", "[codec]") {
    const person p{"ada", {90, 85}, colour::green};
    CHECK(round_trip(p) == p);
    const std::vector<person> people{p, {"", {}, colour::red}};
    CHECK(round_trip(people) == people);
    const std::optional<std::pair<person, int>> maybe{{p, 3}};
    CHECK(round_trip(maybe) == maybe);
}

TEST_CASE("measuring mode counts exactly the bytes a real encoding writes", "[codec]") {
    auto check = [](const auto& v) {
        tandem::encoder m = tandem::encoder::measuring();
        CHECK(m.is_measuring());
        tandem::encode(m, v);
        bytes b(m.size() + 16);
        tandem::encoder e(b.data(), b.data() + b.size());
        CHECK_FALSE(e.is_measuring());
        tandem::encode(e, v);
        CHECK(e.size() == m.size());
    };
    check(3.0);
    check(std::string(77, 's'));
    check(nested{{"a", std::array<int, 3>{}}, {"b", std::nullopt}});
    check(std::vector<person>{{"x", {1, 2, 3}, colour::blue}});
    tandem::encoder m = tandem::encoder::measuring();
    CHECK(m.reserve(std::size_t{1} << 40) == nullptr);  // nothing to fill, nothing thrown
    CHECK(m.size() == std::size_t{1} << 40);
}

TEST_CASE("an encoding fits a region of exactly its size and never writes past the end",
          "[codec]") {
    const nested value{{"alpha", std::array<int, 3>{1, 2, 3}}, {"beta", std::nullopt}};
    const std::size_t size = tandem::encoded_size(value);
    constexpr std::size_t guard = 64;
    constexpr auto fill = std::byte{0xa5};
    for (std::size_t cap = 0; cap <= size; ++cap) {
        bytes region(cap + guard, fill);
        tandem::encoder e(region.data(), region.data() + cap);
        if (cap == size) {
            tandem::encode(e, value);
            CHECK(e.size() == size);
        } else {
            CHECK_THROWS_AS(tandem::encode(e, value), tandem::payload_too_large);
        }
        for (std::size_t i = cap; i < region.size(); ++i) REQUIRE(region[i] == fill);
    }
    bytes region(size - 1);
    tandem::encoder e(region.data(), region.data() + region.size());
    using Catch::Matchers::Contains;
    CHECK_THROWS_WITH(tandem::encode(e, value),
                      Contains("needs at least " + std::to_string(size) + " bytes") &&
                          Contains("holds " + std::to_string(size - 1)));
}

TEST_CASE("reserve hands out the region for zero-copy fills and refuses beyond its end",
          "[codec]") {
    bytes region(16);
    tandem::encoder e(region.data(), region.data() + region.size());
    CHECK(e.reserve(10) == region.data());
    CHECK(e.reserve(0) == region.data() + 10);
    CHECK(e.reserve(6) == region.data() + 10);
    CHECK_THROWS_AS(e.reserve(1), tandem::payload_too_large);
    CHECK_THROWS_AS(e.reserve(std::numeric_limits<std::size_t>::max()), tandem::payload_too_large);
    CHECK(e.size() == 16);
}

TEST_CASE("decoder reads in order, refuses to read past the end, and consumes nothing then",
          "[codec]") {
    const bytes b = encode_exactly(std::pair<std::uint32_t, std::uint16_t>{7, 9});
    tandem::decoder d(b.data(), b.data() + b.size());
    CHECK(d.remaining() == 6);
    CHECK_THROWS_AS(d.take(7), tandem::decode_error);
    CHECK_THROWS_AS(d.take(std::numeric_limits<std::size_t>::max()), tandem::decode_error);
    CHECK(d.remaining() == 6);
    std::uint32_t first = 0;
    d.read(&first, sizeof first);
    CHECK(first == 7);
    CHECK(d.take(2) == b.data() + 4);
    CHECK(d.remaining() == 0);
    CHECK_THROWS_AS(tandem::decode<int>(d), tandem::decode_error);
    tandem::decoder empty(nullptr, nullptr);
    CHECK_THROWS_AS(tandem::decode<std::string>(empty), tandem::decode_error);
}

TEST_CASE("invalid tags, indexes and oversized counts throw decode_error before allocating",
          "[codec]") {
    auto with_prefix = [](std::uint64_t prefix, std::size_t tail) {
        bytes b(sizeof prefix + tail, std::byte{1});
        std::memcpy(b.data(), &prefix, sizeof prefix);
        return b;
    };
    auto throws = [](const bytes& b, auto type_tag) {
        using T = typename decltype(type_tag)::type;
        tandem::decoder d(b.data(), b.data() + b.size());
        largest_request = 0;
        tracking = true;
        CHECK_THROWS_AS(tandem::decode<T>(d), tandem::decode_error);
        tracking = false;
        CHECK(largest_request.load() < 4096);
    };
    for (std::uint64_t huge : {std::uint64_t{1} << 60, ~std::uint64_t{0}, std::uint64_t{17}}) {
        throws(with_prefix(huge, 16), std::type_identity<std::string>{});
        throws(with_prefix(huge, 16), std::type_identity<std::vector<int>>{});
        throws(with_prefix(huge, 16), std::type_identity<std::vector<std::string>>{});
        throws(with_prefix(huge, 16), std::type_identity<std::vector<std::monostate>>{});
        throws(with_prefix(huge, 16), std::type_identity<std::variant<int, std::string>>{});
    }
    throws(bytes{std::byte{2}}, std::type_identity<bool>{});
    throws(bytes{std::byte{7}, std::byte{0}}, std::type_identity<std::optional<char>>{});
    // A count that fits exactly is fine; one more element is not.
    bytes exact = with_prefix(4, 4 * sizeof(int));
    tandem::decoder d(exact.data(), exact.data() + exact.size());
    CHECK(tandem::decode<std::vector<int>>(d).size() == 4);
    throws(with_prefix(5, 4 * sizeof(int)), std::type_identity<std::vector<int>>{});
}

TEST_CASE("an encoding truncated at any offset throws decode_error without reading past it",
          "[codec]") {
    for (const sample& s : samples()) {
        INFO(s.name);
        CHECK(decode_copy(s, s.encoding));
        for (std::size_t cut = 0; cut < s.encoding.size(); ++cut) {
            const bytes prefix(s.encoding.begin(), s.encoding.begin() + static_cast<long>(cut));
            CHECK_FALSE(decode_copy(s, prefix));
        }
    }
}

TEST_CASE("scribbled bytes either decode or throw decode_error, never crash", "[codec]") {
    const std::vector<sample> all = samples();
    std::mt19937 rng(20240601);
    std::size_t decoded = 0, refused = 0;
    for (int i = 0; i < 4000; ++i) {
        const sample& s = all[rng() % all.size()];
        bytes damaged = s.encoding;
        if (damaged.empty()) continue;
        const int flips = 1 + static_cast<int>(rng() % 4);
        for (int f = 0; f < flips; ++f) {
            damaged[rng() % damaged.size()] = static_cast<std::byte>(rng());
        }
        if (rng() % 4 == 0) damaged.resize(rng() % (damaged.size() + 1));
        INFO(s.name << ", iteration " << i);
        (decode_copy(s, damaged) ? decoded : refused)++;
    }
    // Both outcomes happen: the test really exercises the error paths and the valid ones.
    CHECK(decoded > 100);
    CHECK(refused > 100);
}

TEST_CASE("a huge length written anywhere in an encoding never becomes an allocation", "[codec]") {
    const std::uint64_t huge[] = {std::uint64_t{1} << 60, std::uint64_t{1} << 63, ~std::uint64_t{0},
                                  (std::uint64_t{1} << 32) + 1, 1000};
    for (const sample& s : samples()) {
        INFO(s.name);
        for (std::size_t at = 0; at + sizeof(std::uint64_t) <= s.encoding.size(); ++at) {
            for (std::uint64_t value : huge) {
                bytes damaged = s.encoding;
                std::memcpy(damaged.data() + at, &value, sizeof value);
                INFO("offset " << at << ", value " << value);
                decode_copy(s, damaged);
            }
        }
    }
}
