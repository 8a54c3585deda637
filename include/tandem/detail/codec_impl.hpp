// SPDX-License-Identifier: MIT
#pragma once

// The built-in tandem::codec specialisations; included at the end of <tandem/codec.hpp>, whose
// header comment describes the wire format. Containers are constrained on encodable elements, so
// a vector of a type without a codec falls back to the primary template and is not encodable.

#include <tandem/codec.hpp>

#include <algorithm>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <variant>
#include <vector>

namespace tandem {

namespace detail {
/// The types that may alias any bytes, so they can be read straight from the arena.
template <class T>
inline constexpr bool byte_like =
    std::is_same_v<T, char> || std::is_same_v<T, unsigned char> || std::is_same_v<T, std::byte>;
}  // namespace detail

namespace detail {
/// The fewest bytes any T encodes to, as its codec declares (0 if it does not say).
template <class T>
constexpr std::size_t min_wire_size() {
    if constexpr (requires { std::size_t{codec<T>::min_wire_size}; }) {
        return codec<T>::min_wire_size;
    } else {
        return 0;
    }
}

/// Whether T's encoding is its own sizeof(T) bytes and any bytes decode to a valid T, so arrays
/// of T may be copied in one memcpy.
template <class T>
constexpr bool raw_bytes() {
    if constexpr (requires { bool{codec<T>::raw_bytes}; }) {
        return codec<T>::raw_bytes && std::is_trivially_copyable_v<T> &&
               std::is_default_constructible_v<T>;
    } else {
        return false;
    }
}
}  // namespace detail

template <>
struct codec<bool> {
    static constexpr std::size_t min_wire_size = 1;
    static void encode(encoder& e, const bool& v) {
        const unsigned char byte = v ? 1 : 0;
        e.write(&byte, 1);
    }
    static bool decode(decoder& d) {
        unsigned char byte = 0;
        d.read(&byte, 1);
        if (byte > 1) detail::throw_decode_error("a bool or optional tag is neither 0 nor 1");
        return byte == 1;
    }
};

template <>
struct codec<std::monostate> {
    static constexpr std::size_t min_wire_size = 0;
    static void encode(encoder&, const std::monostate&) {}
    static std::monostate decode(decoder&) { return {}; }
};

template <class C, class Tr, class A>
requires detail::bitwise_encodable<C>
struct codec<std::basic_string<C, Tr, A>> {
    using string = std::basic_string<C, Tr, A>;
    static constexpr std::size_t min_wire_size = sizeof(std::uint64_t);
    static void encode(encoder& e, const string& s) {
        e.write_count(s.size());
        e.write(s.data(), s.size() * sizeof(C));
    }
    static string decode(decoder& d) {
        const std::size_t n = d.read_count(sizeof(C));
        if constexpr (detail::byte_like<C>) {
            // One pass: constructed from the bytes, not zero-filled and then overwritten.
            const auto* p = reinterpret_cast<const C*>(d.take(n));
            return string(p, p + n);
        } else {
            string s(n, C{});
            d.read(s.data(), n * sizeof(C));
            return s;
        }
    }
};

template <class T, class A>
requires encodable<T>
struct codec<std::vector<T, A>> {
    static constexpr std::size_t min_wire_size = sizeof(std::uint64_t);
    // An element that may encode to nothing gets a marker byte, so counts stay bounded.
    static constexpr bool marked = detail::min_wire_size<T>() == 0;

    static void encode(encoder& e, const std::vector<T, A>& v) {
        e.write_count(v.size());
        if constexpr (detail::raw_bytes<T>()) {
            e.write(v.data(), v.size() * sizeof(T));
        } else {
            for (const T& x : v) {
                if constexpr (marked) e.write("", 1);
                codec<T>::encode(e, x);
            }
        }
    }
    static std::vector<T, A> decode(decoder& d) {
        if constexpr (detail::byte_like<T>) {
            const std::size_t n = d.read_count(1);
            const auto* p = reinterpret_cast<const T*>(d.take(n));
            return std::vector<T, A>(p, p + n);  // one pass, no zero-fill
        } else if constexpr (detail::raw_bytes<T>()) {
            const std::size_t n = d.read_count(sizeof(T));
            std::vector<T, A> v(n);
            d.read(v.data(), n * sizeof(T));
            return v;
        } else {
            const std::size_t n =
                d.read_count(std::max<std::size_t>(detail::min_wire_size<T>(), 1));
            std::vector<T, A> v;
            v.reserve(n);
            for (std::size_t i = 0; i < n; ++i) {
                if constexpr (marked) d.take(1);
                v.push_back(codec<T>::decode(d));
            }
            return v;
        }
    }
};

template <class T, std::size_t N>
requires encodable<T>
struct codec<std::array<T, N>> {
    static constexpr bool raw_bytes = detail::raw_bytes<T>();
    static constexpr std::size_t min_wire_size = N * detail::min_wire_size<T>();

    static void encode(encoder& e, const std::array<T, N>& a) {
        if constexpr (raw_bytes) {
            e.write(a.data(), N * sizeof(T));
        } else {
            for (const T& x : a) codec<T>::encode(e, x);
        }
    }
    static std::array<T, N> decode(decoder& d) {
        if constexpr (raw_bytes) {
            std::array<T, N> a{};
            d.read(a.data(), N * sizeof(T));
            return a;
        } else {
            return decode_each(d, std::make_index_sequence<N>{});
        }
    }

private:
    template <std::size_t... I>
    static std::array<T, N> decode_each(decoder& d, std::index_sequence<I...>) {
        return {{((void)I, codec<T>::decode(d))...}};  // in order: a braced list
    }
};

template <class A, class B>
requires encodable<A> && encodable<B>
struct codec<std::pair<A, B>> {
    static constexpr std::size_t min_wire_size =
        detail::min_wire_size<A>() + detail::min_wire_size<B>();
    static void encode(encoder& e, const std::pair<A, B>& p) {
        codec<A>::encode(e, p.first);
        codec<B>::encode(e, p.second);
    }
    static std::pair<A, B> decode(decoder& d) {
        return std::pair<A, B>{codec<A>::decode(d), codec<B>::decode(d)};
    }
};

template <class... Ts>
requires(encodable<Ts>&&...) struct codec<std::tuple<Ts...>> {
    static constexpr std::size_t min_wire_size = (detail::min_wire_size<Ts>() + ... + 0);
    static void encode(encoder& e, const std::tuple<Ts...>& t) {
        std::apply([&](const Ts&... xs) { (codec<Ts>::encode(e, xs), ...); }, t);
    }
    static std::tuple<Ts...> decode([[maybe_unused]] decoder& d) {
        return std::tuple<Ts...>{codec<Ts>::decode(d)...};
    }
};

template <class T>
requires encodable<T>
struct codec<std::optional<T>> {
    static constexpr std::size_t min_wire_size = 1;
    static void encode(encoder& e, const std::optional<T>& o) {
        codec<bool>::encode(e, o.has_value());
        if (o) codec<T>::encode(e, *o);
    }
    static std::optional<T> decode(decoder& d) {
        if (!codec<bool>::decode(d)) return std::nullopt;
        return std::optional<T>{codec<T>::decode(d)};
    }
};

template <class... Ts>
requires(encodable<Ts>&&...) struct codec<std::variant<Ts...>> {
    using variant = std::variant<Ts...>;
    static constexpr std::size_t min_wire_size = sizeof(std::uint64_t);
    static void encode(encoder& e, const variant& v) {
        e.write_count(v.index());  // valueless_by_exception: std::visit throws below
        std::visit([&](const auto& x) { codec<std::remove_cvref_t<decltype(x)>>::encode(e, x); },
                   v);
    }
    static variant decode(decoder& d) {
        std::uint64_t index = 0;
        d.read(&index, sizeof index);
        if (index >= sizeof...(Ts)) {
            detail::throw_decode_error("variant index " + std::to_string(index) + " out of range");
        }
        return decode_as(static_cast<std::size_t>(index), d, std::index_sequence_for<Ts...>{});
    }

private:
    template <std::size_t I>
    static variant decode_one(decoder& d) {
        return variant{std::in_place_index<I>,
                       codec<std::variant_alternative_t<I, variant>>::decode(d)};
    }
    template <std::size_t... I>
    static variant decode_as(std::size_t index, decoder& d, std::index_sequence<I...>) {
        static constexpr variant (*table[])(decoder&) = {&decode_one<I>...};
        return table[index](d);
    }
};

}  // namespace tandem
