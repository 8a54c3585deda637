// SPDX-License-Identifier: MIT
//
// Fuzzes tandem::codec's decoders with the bytes a crashed or scribbling worker may leave in the
// arena. The first input byte picks a type; the rest is decoded as that type, the way the parent
// reads a worker's result (process.hpp: decode<R>, then no bytes may be left). Decoding must
// give a value or throw decode_error: a crash, UB or a huge allocation (libFuzzer's
// -malloc_limit_mb) is a bug. What decodes must re-encode to bytes that decode to the same
// encoding again (encode(decode(encode(v))) == encode(v)), and a decoded container never holds
// more elements than there were input bytes (the re-encoding is exactly as long as the input).
//
// Not covered: the pool's own reading of a slot (lib/process/pool.cpp, finish_slot: the
// result length and kind a worker wrote) needs a live pool; tests/process_test.cpp's scribbling
// worker exercises it. shared_array handles need a live pool too.

#include <tandem/codec.hpp>

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <variant>
#include <vector>

namespace {

enum class colour : std::uint8_t { red, green, blue };
struct point {  // no padding: its bytes round-trip exactly
    double x, y;
    std::int64_t tag;
};

std::vector<std::byte> encoding_of(const auto& v) {
    std::vector<std::byte> out(tandem::encoded_size(v));
    tandem::encoder e(out.data(), out.data() + out.size());
    tandem::encode(e, v);
    if (e.size() != out.size()) {
        std::fprintf(stderr, "codec_decode: encoded_size disagrees with encode\n");
        std::abort();
    }
    return out;
}

template <class T>
void check(const std::byte* data, std::size_t size) {
    tandem::decoder d(data, data + size);
    std::optional<T> value;
    try {
        value.emplace(tandem::decode<T>(d));
        if (d.remaining() != 0) return;  // the parent rejects this: decode_error
    } catch (const tandem::decode_error&) {
        return;
    }
    // Round trip: what decoded encodes to bytes that decode again to the same encoding.
    const std::vector<std::byte> once = encoding_of(*value);
    tandem::decoder again(once.data(), once.data() + once.size());
    T second = tandem::decode<T>(again);  // must not throw: it is our own encoding
    if (again.remaining() != 0 || encoding_of(second) != once) {
        std::fprintf(stderr, "codec_decode: a decoded value does not survive a round trip\n");
        std::abort();
    }
    // Every codec reads exactly the bytes its encode writes, so the lengths must agree.
    if (once.size() != size) {
        std::fprintf(stderr, "codec_decode: %zu input bytes decoded to a %zu-byte value\n", size,
                     once.size());
        std::abort();
    }
}

using checker = void (*)(const std::byte*, std::size_t);

// Every built-in codec, alone and nested.
constexpr std::array<checker, 24> checkers = {
    &check<int>,
    &check<bool>,
    &check<colour>,
    &check<point>,
    &check<std::string>,
    &check<std::u32string>,
    &check<std::vector<int>>,
    &check<std::vector<char>>,
    &check<std::vector<bool>>,
    &check<std::vector<std::string>>,
    &check<std::vector<std::monostate>>,
    &check<std::vector<std::vector<std::monostate>>>,
    &check<std::array<int, 4>>,
    &check<std::array<std::string, 3>>,
    &check<std::pair<std::string, std::vector<double>>>,
    &check<std::tuple<>>,
    &check<std::tuple<int, std::string, std::optional<std::vector<double>>>>,
    &check<std::optional<std::string>>,
    &check<std::optional<std::optional<bool>>>,
    &check<std::variant<int, std::string, std::vector<char>, std::monostate>>,
    &check<std::vector<std::variant<std::monostate, std::tuple<>, std::optional<point>>>>,
    &check<std::vector<std::optional<std::tuple<>>>>,
    &check<std::vector<std::pair<std::string, std::array<std::optional<colour>, 2>>>>,
    &check<std::tuple<std::vector<std::vector<std::string>>, std::variant<bool, std::u32string>,
                      std::array<std::vector<std::monostate>, 2>>>,
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size == 0) return 0;
    // A copy of exactly the bytes: ASan then catches any read past them.
    std::vector<std::byte> bytes(size - 1);
    if (!bytes.empty()) std::memcpy(bytes.data(), data + 1, bytes.size());
    checkers[data[0] % checkers.size()](bytes.data(), bytes.size());
    return 0;
}
