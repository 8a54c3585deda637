// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// `tandem::codec<T>`: how the arguments and results of `offload_to_process` travel through the
/// shared arena. An `encoder` writes into a bounded region, a `decoder` reads one back and treats
/// every byte as untrusted: the writer may be a worker that crashed or scribbled over the arena.
///
/// Wire format. Both ends run the same binary, so native byte order, sizes and layouts are used
/// and nothing is aligned (all copies go through memcpy):
/// - arithmetic types, enums, trivially copyable structs, function pointers: their sizeof(T) bytes;
/// - bool, and the tag of std::optional: one byte, 0 or 1 (anything else is a decode_error);
/// - counts (std::string, std::vector) and the index of std::variant: a native std::uint64_t;
/// - std::string: the count, then the characters;
/// - std::vector<T>: the count, then the elements: one memcpy for bitwise T, otherwise each
///   encoding in turn, each preceded by one zero byte when T may encode to no bytes at all
///   (std::monostate), so that a valid count never exceeds the bytes that remain;
/// - std::optional: the tag, then the value if engaged; std::variant: the index, then the value;
/// - std::array, std::pair, std::tuple: the elements in order; std::monostate: nothing.
///
/// Decoding checks every length against the bytes that remain before allocating, so a scribbled
/// count costs an exception, not a 2^60-byte allocation: a decoded container never holds more
/// elements than remaining bytes. What is not checked: trivially copyable types are copied bit
/// for bit, so a bool member, or an enum without a fixed underlying type, comes back as whatever
/// bytes were there (give such enums one, `enum e : int`, or give the struct a codec).
///
/// Your own types: specialise `tandem::codec`. Braced lists evaluate left to right (function
/// arguments do not), so decoding the members inside one is safe:
/// ```
/// struct person { std::string name; std::vector<int> scores; };
/// template <> struct tandem::codec<person> {
///     static void encode(tandem::encoder& e, const person& p) {
///         tandem::encode(e, p.name);
///         tandem::encode(e, p.scores);
///     }
///     static person decode(tandem::decoder& d) {
///         return person{tandem::decode<std::string>(d), tandem::decode<std::vector<int>>(d)};
///     }
/// };
/// ```
/// Optionally add `static constexpr std::size_t min_wire_size = N;` (the fewest bytes any value
/// encodes to; never more) to spare vectors of your type their one byte per element.

#include <tandem/error.hpp>

#include <array>
#include <bit>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>

namespace tandem {

namespace detail {
[[noreturn]] inline void throw_too_large(std::size_t written, std::size_t more, std::size_t cap) {
    const std::size_t needed = more > SIZE_MAX - written ? SIZE_MAX : written + more;
    throw payload_too_large("tandem: payload too large: the encoding needs at least " +
                            std::to_string(needed) + " bytes, the region holds " +
                            std::to_string(cap));
}
[[noreturn]] inline void throw_decode_error(const std::string& what) {
    throw decode_error("tandem: decode error: " + what);
}
}  // namespace detail

/// Writes an encoding into the region [begin, end), front to back. Never writes outside it: a
/// write that does not fit throws `payload_too_large` before copying anything (what was written
/// before stays, the region's content is then unspecified). Not thread-safe; the region must
/// outlive the encoder.
class encoder {
public:
    encoder(std::byte* begin, std::byte* end) noexcept : begin_(begin), cur_(begin), end_(end) {}

    /// An encoder with no region that only counts: encode into it, then read size() to size a
    /// region for the real encoding. Never throws payload_too_large.
    static encoder measuring() noexcept {
        encoder e(nullptr, nullptr);
        e.measuring_ = true;
        return e;
    }
    bool is_measuring() const noexcept { return measuring_; }

    /// Bytes written (or counted) so far.
    std::size_t size() const noexcept {
        return measuring_ ? counted_ : static_cast<std::size_t>(cur_ - begin_);
    }

    /// Hands out the next n bytes for the caller to fill (zero-copy), or throws
    /// payload_too_large. Returns nullptr in measuring mode: there is nothing to fill.
    std::byte* reserve(std::size_t n) {
        if (measuring_) {
            counted_ += n;
            return nullptr;
        }
        const auto left = static_cast<std::size_t>(end_ - cur_);
        if (n > left) detail::throw_too_large(size(), n, static_cast<std::size_t>(end_ - begin_));
        std::byte* p = cur_;
        cur_ += n;
        return p;
    }

    void write(const void* src, std::size_t n) {
        std::byte* p = reserve(n);
        if (p != nullptr && n != 0) std::memcpy(p, src, n);
    }

    /// Writes a length prefix (a native std::uint64_t).
    void write_count(std::size_t n) {
        const std::uint64_t v = n;
        write(&v, sizeof v);
    }

private:
    std::byte* begin_;
    std::byte* cur_;
    std::byte* end_;
    std::size_t counted_ = 0;
    bool measuring_ = false;
};

/// Reads an encoding back from [begin, end), front to back, trusting none of it: any read past
/// the end, or a count larger than the bytes left, throws `decode_error` and consumes nothing.
/// Not thread-safe; the region must outlive the decoder and the pointers take() returns.
class decoder {
public:
    decoder(const std::byte* begin, const std::byte* end) noexcept : cur_(begin), end_(end) {}

    std::size_t remaining() const noexcept { return static_cast<std::size_t>(end_ - cur_); }

    /// The next n bytes, in place (unaligned), or decode_error.
    const std::byte* take(std::size_t n) {
        // Compare with what remains, never `cur_ + n > end_`: n may be a scribbled 2^64-1.
        if (n > remaining()) {
            detail::throw_decode_error("needs " + std::to_string(n) + " more bytes, " +
                                       std::to_string(remaining()) + " remain");
        }
        const std::byte* p = cur_;
        cur_ += n;
        return p;
    }

    void read(void* dst, std::size_t n) {
        const std::byte* p = take(n);
        if (n != 0) std::memcpy(dst, p, n);
    }

    /// Reads a length prefix and checks that `count` elements of at least `min_bytes_each`
    /// bytes (taken as 1 if 0) fit in what remains, so the caller may allocate `count`.
    std::size_t read_count(std::size_t min_bytes_each = 1) {
        std::uint64_t n = 0;
        read(&n, sizeof n);
        const std::size_t each = min_bytes_each == 0 ? 1 : min_bytes_each;
        if (n > remaining() / each) {
            cur_ -= sizeof n;
            detail::throw_decode_error("a count of " + std::to_string(n) + " (" +
                                       std::to_string(each) + " bytes each) exceeds the " +
                                       std::to_string(remaining() - sizeof n) + " bytes left");
        }
        return static_cast<std::size_t>(n);
    }

private:
    const std::byte* cur_;
    const std::byte* end_;
};

namespace detail {
template <class T>
struct is_view : std::false_type {};
template <class C, class Tr>
struct is_view<std::basic_string_view<C, Tr>> : std::true_type {};
template <class T, std::size_t N>
struct is_view<std::span<T, N>> : std::true_type {};

template <class T>
inline constexpr bool is_data_pointer =
    std::is_pointer_v<T> && !std::is_function_v<std::remove_pointer_t<T>>;

/// What the fallback copies bit for bit.
template <class T>
inline constexpr bool bitwise_encodable = std::is_trivially_copyable_v<T> && !std::is_array_v<T> &&
                                          !is_data_pointer<T> && !is_view<T>::value;

template <class T>
constexpr void require_encodable();
}  // namespace detail

/// How T is written to and read from the arena: `static void encode(encoder&, const T&)` and
/// `static T decode(decoder&)`. This primary template copies arithmetic types, enums, function
/// pointers and other trivially copyable types bit for bit, and rejects everything else with a
/// static_assert on use; the other built-ins are in detail/codec_impl.hpp.
template <class T, class Enable = void>
struct codec {
    using tandem_fallback = void;  // marks the primary template for encodable<T>
    static constexpr bool raw_bytes = detail::bitwise_encodable<T>;
    static constexpr std::size_t min_wire_size = raw_bytes ? sizeof(T) : 0;

    static void encode(encoder& e, const T& v) {
        detail::require_encodable<T>();
        e.write(std::addressof(v), sizeof(T));
    }
    static T decode(decoder& d) {
        detail::require_encodable<T>();
        std::array<std::byte, sizeof(T)> bytes;
        d.read(bytes.data(), bytes.size());
        return std::bit_cast<T>(bytes);
    }
};

namespace detail {
template <class T>
constexpr bool codec_accepts() {
    if constexpr (requires { typename codec<T>::tandem_fallback; }) return codec<T>::raw_bytes;
    return true;
}
}  // namespace detail

/// Whether `codec<T>` can encode and decode T: true for the built-in types, for trivially
/// copyable types without raw data pointers, for containers of encodable types, and for types
/// whose codec you specialised.
template <class T>
concept encodable = detail::codec_accepts<T>() && requires(encoder& e, decoder& d, const T& v) {
    codec<T>::encode(e, v);
    { codec<T>::decode(d) } -> std::same_as<T>;
};

namespace detail {
/// A compile error naming why T is not encodable; nothing if it is.
template <class T>
constexpr void require_encodable() {
    if constexpr (!encodable<T>) {
        static_assert(!is_data_pointer<T>,
                      "tandem::codec: a raw pointer is valid only in the process that made it "
                      "(pass the value, a std::vector, or a shared_array instead)");
        static_assert(!is_view<T>::value,
                      "tandem::codec: std::string_view and std::span point into this process; "
                      "pass a std::string or std::vector instead");
        static_assert(is_data_pointer<T> || is_view<T>::value || encodable<T>,
                      "tandem::codec<T>: T is not encodable: it is neither trivially copyable nor "
                      "a built-in type, or it is a container of such a type, or its codec lacks "
                      "encode/decode; specialise tandem::codec (see <tandem/codec.hpp>)");
    }
}
}  // namespace detail

/// Encodes v at the encoder's position; throws payload_too_large if it does not fit.
template <class T>
void encode(encoder& e, const T& v) {
    detail::require_encodable<T>();
    codec<T>::encode(e, v);
}

/// Decodes a T at the decoder's position; throws decode_error if the bytes are not a valid
/// encoding, and whatever T's constructors throw.
template <class T>
T decode(decoder& d) {
    detail::require_encodable<T>();
    return codec<T>::decode(d);
}

/// The number of bytes encode(e, v) writes.
template <class T>
std::size_t encoded_size(const T& v) {
    encoder e = encoder::measuring();
    encode(e, v);
    return e.size();
}

}  // namespace tandem

// The built-in specialisations: bool, std::string, std::vector, std::array, std::pair,
// std::tuple, std::optional, std::variant, std::monostate.
#include <tandem/detail/codec_impl.hpp>
