// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// Everything in tandem's public API.

#include <tandem/address.hpp>
#include <tandem/cancel.hpp>
#include <tandem/channel.hpp>
#include <tandem/codec.hpp>
#include <tandem/combinators.hpp>
#include <tandem/error.hpp>
#include <tandem/file.hpp>
#include <tandem/http.hpp>
#include <tandem/net.hpp>
#include <tandem/process.hpp>
#include <tandem/runtime.hpp>
#include <tandem/sync.hpp>
#include <tandem/task.hpp>
#include <tandem/task_group.hpp>
#include <tandem/thread.hpp>
#include <tandem/time.hpp>
