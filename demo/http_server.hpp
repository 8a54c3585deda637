// SPDX-License-Identifier: MIT
#pragma once

// The I/O section's backend: a small HTTP/1.1 server on tandem (`tandem-demo --child
// io-server`). One coroutine per connection on one io thread; keep-alive (HTTP/1.1's default,
// or HTTP/1.0 with "Connection: keep-alive"); requests without a body; every response has a
// Content-Length.
//
//   GET /delay/<ms>   waits <ms> milliseconds (at most 60,000) on a timer, then answers 200
//                     with a short text body: a backend that takes a while, like a database
//                     or another service would
//   anything else     404
//
// It listens on 127.0.0.1 with port 0 (a free port), prints "PORT <n>" on stdout, and serves
// until its stdin reaches end of stream (the parent closed its end of the socketpair, or
// died: also for a pipe or a terminal, Ctrl-D; NOT </dev/null, which ends it at once) or a
// signal ends it.

#include <string_view>

namespace demo {

/// Runs the server; does not return when stdin ends (the process exits with status 0), returns
/// 1 after an error.
int run_http_server();

/// The value of header `name` (ASCII case-insensitive, blanks around it trimmed) in `head`, an
/// HTTP message's start line and header lines ("\r\n" separated); "" if absent.
std::string_view http_header_value(std::string_view head, std::string_view name);

}  // namespace demo
