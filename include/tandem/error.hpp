// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// tandem's exception types. System call failures are `std::system_error`
/// (system_category, the errno as the code); the conditions below belong to
/// the library. All derive from `tandem::error`, itself a `std::runtime_error`.

#include <stdexcept>
#include <string>

namespace tandem {

/// Base of every library-defined condition.
class error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

/// `timeout(...)` ran out of time; the inner task was cancelled and awaited.
class timed_out : public error {
public:
    timed_out() : error("tandem: operation timed out") {}
};

/// The awaiting task was cancelled (`when_any` loser, `task_group` sibling
/// failure, `with_stop_token`, runtime shutdown). Cancellation is an outcome,
/// not a failure: tandem never logs it.
class operation_cancelled : public error {
public:
    operation_cancelled() : error("tandem: operation cancelled") {}
};

/// A stream ended before the requested number of bytes arrived.
class end_of_stream : public error {
public:
    end_of_stream() : error("tandem: end of stream") {}
};

/// `send` on a channel that was closed.
class channel_closed : public error {
public:
    channel_closed() : error("tandem: channel closed") {}
};

/// The worker process running an offloaded job died; what() names the signal
/// or exit status.
class worker_crashed : public error {
public:
    using error::error;
};

/// An offloaded job threw; what() holds the original type name and message.
class remote_error : public error {
public:
    using error::error;
};

/// Arguments or result of an offloaded job do not fit in the shared arena.
class payload_too_large : public error {
public:
    using error::error;
};

/// Bytes read back from shared memory are not a valid encoding (`tandem::decoder`): they run
/// out early, or a length prefix, tag or index is out of range. What a crashed or scribbling
/// worker leaves behind arrives as this error, never as a crash or an out-of-bounds read.
class decode_error : public error {
public:
    using error::error;
};

}  // namespace tandem
