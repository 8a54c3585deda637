// SPDX-License-Identifier: MIT
#pragma once

// The HTTP/1.1 response parser behind http_client (http.cpp): llhttp and its callbacks, with
// the client's limits, fed bytes as they arrive. No sockets: the fuzz target
// (fuzz/http_response.cpp) drives it directly. Internal, not part of the API.

#include <tandem/http.hpp>

#include <llhttp.h>

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>

namespace tandem::detail {

enum class parse_status {
    need_more,  // every byte so far is part of an incomplete response
    complete,   // a whole (non-1xx) response: take() it
    failed,     // not HTTP/1.1, or over a limit: error() says why
};

/// Parses one response, fed in pieces of any size. Stops right after the response: bytes
/// beyond it are not consumed (consumed() says how many of the last piece were). Holds a
/// pointer to `options` (which must outlive it) and to itself (llhttp's callbacks find it
/// there): neither copyable nor movable. Not thread-safe.
class response_parser {
public:
    /// `head_request`: the response to a HEAD has headers only, whatever they announce.
    response_parser(const http_client_options& options, bool head_request) noexcept;
    response_parser(const response_parser&) = delete;
    response_parser& operator=(const response_parser&) = delete;

    /// Parses the next bytes. Call only while need_more was the answer so far.
    parse_status feed(std::string_view bytes);
    /// The end of the stream: completes a body that runs until the connection closes.
    parse_status finish();

    /// After complete from feed: how many bytes of that last piece belong to the response.
    std::size_t consumed() const noexcept { return consumed_; }
    /// After complete: whether the connection may carry another request (HTTP/1.1 without
    /// `Connection: close`, or HTTP/1.0 with keep-alive).
    bool keep_alive() const noexcept;
    /// After failed: the reason (a limit, or llhttp's error name and reason).
    std::string error() const;
    /// After failed: true when a limit (max_header_bytes, max_body_bytes) stopped the parser.
    bool over_limit() const noexcept { return failure_ != nullptr; }
    /// After complete: the response (once; moved out).
    http_response take() noexcept { return std::move(response_); }

    // For llhttp's callbacks (http_parse.cpp).
    struct callbacks;

private:
    parse_status status_after(llhttp_errno_t err) noexcept;

    llhttp_t parser_;
    http_response response_;
    const http_client_options* options_;
    std::size_t header_bytes_ = 0;
    std::size_t consumed_ = 0;
    bool in_value_ = false;
    bool head_request_;
    bool complete_ = false;
    const char* failure_ = nullptr;  // set by a callback that stopped the parser
    llhttp_errno_t last_error_ = HPE_OK;
};

}  // namespace tandem::detail
