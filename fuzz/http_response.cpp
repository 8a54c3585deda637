// SPDX-License-Identifier: MIT
//
// Fuzzes the HTTP client's response parser (lib/net/http_parse.hpp: llhttp with the client's
// callbacks and limits) with what a hostile server may send. The input: one byte of flags
// (bit 0: the request was a HEAD; bit 1: small header and body limits), one byte giving how
// many split points follow (0-7), two bytes each, then the response bytes. The bytes are
// parsed whole, one byte at a time, in the pieces the split points give, and (for short inputs)
// split in two at every offset; every way must end the same: the same status (need more,
// complete, failed), the same response, the same number of bytes consumed, the same
// keep-alive answer and error text (unless a limit was hit: see outcome). A crash, UB or a leak
// is a bug too.

#include "net/http_parse.hpp"

#include <tandem/http.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

namespace {

using tandem::detail::parse_status;
using tandem::detail::response_parser;

struct outcome {
    parse_status status = parse_status::need_more;
    std::size_t consumed = 0;  // of all the bytes: where the response ended
    bool keep_alive = false;
    std::string error;
    bool over_limit = false;
    tandem::http_response response;

    bool operator==(const outcome& o) const {
        // A limit counts the bytes llhttp hands over, and llhttp hands over a header's bytes
        // at the end of each piece but flags a bad byte only when it reaches it: a failure may
        // be a limit one way and llhttp's error the other. Both are a failure, as they should.
        const bool same_error = error == o.error || over_limit || o.over_limit;
        return status == o.status && consumed == o.consumed && keep_alive == o.keep_alive &&
               same_error && response.status == o.response.status &&
               response.headers == o.response.headers && response.body == o.response.body;
    }
};

/// Parses `bytes` fed in the pieces that end at `cuts` (ascending, each within bytes), then the
/// end of the stream if the response is still incomplete.
outcome parse(std::string_view bytes, const std::vector<std::size_t>& cuts,
              const tandem::http_client_options& options, bool head) {
    response_parser parser(options, head);
    outcome out;
    std::size_t from = 0;
    for (std::size_t i = 0; i <= cuts.size() && out.status == parse_status::need_more; ++i) {
        const std::size_t to = i < cuts.size() ? cuts[i] : bytes.size();
        if (to < from) continue;
        out.status = parser.feed(bytes.substr(from, to - from));
        if (out.status == parse_status::complete) out.consumed = from + parser.consumed();
        from = to;
    }
    if (out.status == parse_status::need_more) {
        out.status = parser.finish();
        out.consumed = bytes.size();
    }
    if (out.status == parse_status::complete) {
        out.keep_alive = parser.keep_alive();
        out.response = parser.take();
    }
    if (out.status == parse_status::failed) {
        out.error = parser.error();
        out.over_limit = parser.over_limit();
    }
    if (out.status == parse_status::failed && out.error.empty()) {
        std::fprintf(stderr, "http_response: a failure without a reason\n");
        std::abort();
    }
    return out;
}

void expect_same(const outcome& whole, const outcome& split, const char* how) {
    if (whole == split) return;
    std::fprintf(stderr,
                 "http_response: parsed %s differs from parsed whole: status %d/%d, consumed "
                 "%zu/%zu, keep-alive %d/%d, error \"%s\"/\"%s\", http status %d/%d, %zu/%zu "
                 "headers, body %zu/%zu bytes\n",
                 how, static_cast<int>(whole.status), static_cast<int>(split.status),
                 whole.consumed, split.consumed, whole.keep_alive, split.keep_alive,
                 whole.error.c_str(), split.error.c_str(), whole.response.status,
                 split.response.status, whole.response.headers.size(),
                 split.response.headers.size(), whole.response.body.size(),
                 split.response.body.size());
    std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 2) return 0;
    const bool head = (data[0] & 1) != 0;
    tandem::http_client_options options;
    if ((data[0] & 2) != 0) {
        options.max_header_bytes = 64;
        options.max_body_bytes = 32;
    }
    const std::size_t n_cuts = std::min<std::size_t>(data[1] % 8, (size - 2) / 2);
    std::size_t at = 2;
    std::vector<std::size_t> raw_cuts;
    for (std::size_t i = 0; i < n_cuts; ++i, at += 2)
        raw_cuts.push_back(static_cast<std::size_t>(data[at]) << 8 | data[at + 1]);
    const std::string_view bytes(reinterpret_cast<const char*>(data + at), size - at);
    std::vector<std::size_t> cuts;
    for (std::size_t c : raw_cuts) cuts.push_back(bytes.empty() ? 0 : c % (bytes.size() + 1));
    std::sort(cuts.begin(), cuts.end());

    const outcome whole = parse(bytes, {}, options, head);
    std::size_t header_bytes = 0;
    for (const auto& [name, value] : whole.response.headers)
        header_bytes += name.size() + value.size();
    if (whole.consumed > bytes.size() || whole.response.body.size() > options.max_body_bytes ||
        header_bytes > options.max_header_bytes || (head && !whole.response.body.empty())) {
        std::fprintf(stderr, "http_response: a response beyond its limits or its bytes\n");
        std::abort();
    }
    expect_same(whole, parse(bytes, cuts, options, head), "in the input's pieces");
    std::vector<std::size_t> every(bytes.size());
    for (std::size_t i = 0; i < every.size(); ++i) every[i] = i + 1;
    expect_same(whole, parse(bytes, every, options, head), "one byte at a time");
    if (bytes.size() <= 256) {
        for (std::size_t i = 1; i < bytes.size(); ++i)
            expect_same(whole, parse(bytes, {i}, options, head), "in two at some offset");
    }
    return 0;
}
