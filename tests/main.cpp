// SPDX-License-Identifier: MIT

// The Catch2 main linked into every test binary.
//
// Besides running the session it registers a listener that
//  - acts as a watchdog: each test case gets a deadline (60 s, or
//    TANDEM_TEST_WATCHDOG_SECONDS; 0 turns the watchdog off). A test case that overruns it
//    makes the binary print which test case hung and exit with 124, so a hang is reported
//    as a failure with a name instead of as meson's anonymous TIMEOUT;
//  - prints `TANDEM_RESULT passed=P failed=F skipped=S` on stdout at the end of the run,
//    counted in test cases; test.sh adds these lines up over all binaries.
// tandem_test_skip_all (tests/support.hpp) prints the same line with skipped=1 and exits 77.

// GCC 12 with -fsanitize=address,undefined sees libstdc++'s <regex>, which Catch's runner
// instantiates, as "maybe uninitialized" (a false positive); with -Werror
// that stops the sanitizer build. The warning comes from inlined std headers, so only
// turning it off for this translation unit helps.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <unistd.h>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>

namespace {

using watchdog_clock = std::chrono::steady_clock;

constexpr double default_limit_seconds = 60.0;

/// Reads TANDEM_TEST_WATCHDOG_SECONDS; a malformed or negative value falls back to the default.
double read_limit_seconds() {
    const char* text = std::getenv("TANDEM_TEST_WATCHDOG_SECONDS");
    if (text == nullptr || *text == '\0') return default_limit_seconds;
    char* end = nullptr;
    const double value = std::strtod(text, &end);
    if (end == text || *end != '\0' || !(value >= 0.0) || value > 1e7) {
        std::fprintf(stderr, "watchdog: ignoring TANDEM_TEST_WATCHDOG_SECONDS=\"%s\", using %g s\n",
                     text, default_limit_seconds);
        return default_limit_seconds;
    }
    return value;
}

/// One background thread that waits for the deadline of the running test case.
///
/// All state is guarded by mutex_. The thread sleeps on cv_ until a test case is armed, then
/// until its deadline; disarming or re-arming wakes it so it picks up the new deadline.
class watchdog {
public:
    watchdog()
        : limit_seconds_(read_limit_seconds()),
          limit_(std::chrono::duration_cast<watchdog_clock::duration>(
              std::chrono::duration<double>(limit_seconds_))) {}

    watchdog(const watchdog&) = delete;
    watchdog& operator=(const watchdog&) = delete;

    void start() {
        std::lock_guard lock(mutex_);
        if (limit_seconds_ == 0.0 || thread_.joinable()) return;
        stopping_ = false;
        owner_pid_ = ::getpid();
        thread_ = std::thread([this] { run(); });
        if (!atexit_registered_) {
            atexit_registered_ = true;
            // Covers std::exit from inside a test (tandem_test_skip_all) where testRunEnded
            // never comes.
            std::atexit([] { instance().stop(); });
        }
    }

    /// Stops and joins the thread. In a process forked by a test (the pool's zygote and
    /// workers) the thread does not exist and the mutex may be held by it: do nothing there.
    void stop() {
        if (owner_pid_ != ::getpid()) return;
        {
            std::lock_guard lock(mutex_);
            stopping_ = true;
        }
        cv_.notify_all();
        if (thread_.joinable() && thread_.get_id() != std::this_thread::get_id()) thread_.join();
    }

    void arm(const std::string& test_case) {
        {
            std::lock_guard lock(mutex_);
            test_case_ = test_case;
            section_.clear();
            armed_ = true;
            deadline_ = watchdog_clock::now() + limit_;
        }
        cv_.notify_all();
    }

    void enter_section(const std::string& section) {
        std::lock_guard lock(mutex_);
        section_ = section;
    }

    void disarm(bool passed) {
        {
            std::lock_guard lock(mutex_);
            armed_ = false;
            ++(passed ? passed_ : failed_);
        }
        cv_.notify_all();
    }

    /// The one instance. Never destroyed: a forked child inherits the object but not the
    /// thread, and a std::thread destroyed while joinable would call std::terminate there.
    static watchdog& instance() {
        static watchdog* const the_watchdog = new watchdog;
        return *the_watchdog;
    }

private:
    void run() {
        std::unique_lock lock(mutex_);
        while (!stopping_) {
            if (!armed_) {
                cv_.wait(lock);
            } else if (watchdog_clock::now() >= deadline_) {
                fire();
            } else {
                cv_.wait_until(lock, deadline_);
            }
        }
    }

    /// Called with mutex_ held. Reports the hung test case and ends the process at once:
    /// the test is stuck, so nothing else can be trusted to unwind.
    [[noreturn]] void fire() {
        std::fprintf(stderr, "\nwatchdog: test case \"%s\" did not finish within %g s\n",
                     test_case_.c_str(), limit_seconds_);
        if (!section_.empty() && section_ != test_case_) {
            std::fprintf(stderr, "watchdog: last section entered: \"%s\"\n", section_.c_str());
        }
        char line[128];
        const int length =
            std::snprintf(line, sizeof line, "\nTANDEM_RESULT passed=%u failed=%u skipped=0\n",
                          passed_, failed_ + 1);
        // Flush what Catch already wrote, unless the hung thread is inside stdio right now:
        // then waiting for its lock would hang the watchdog too.
        if (::ftrylockfile(stdout) == 0) {
            std::fputs(line, stdout);
            std::fflush(stdout);
            ::funlockfile(stdout);
        } else if (length > 0) {
            [[maybe_unused]] const auto written = ::write(STDOUT_FILENO, line, std::size_t(length));
        }
        std::fflush(stderr);
        ::_exit(124);
    }

    const double limit_seconds_;
    const watchdog_clock::duration limit_;
    std::mutex mutex_;
    std::condition_variable cv_;
    std::thread thread_;
    pid_t owner_pid_ = 0;
    bool atexit_registered_ = false;
    bool stopping_ = false;
    bool armed_ = false;
    watchdog_clock::time_point deadline_{};
    std::string test_case_;
    std::string section_;
    unsigned passed_ = 0;
    unsigned failed_ = 0;
};

/// Catch2 listener: drives the watchdog and prints the TANDEM_RESULT line.
class tandem_listener : public Catch::TestEventListenerBase {
public:
    using TestEventListenerBase::TestEventListenerBase;

    void testRunStarting(const Catch::TestRunInfo& info) override {
        TestEventListenerBase::testRunStarting(info);
        watchdog::instance().start();
    }

    void testCaseStarting(const Catch::TestCaseInfo& info) override {
        TestEventListenerBase::testCaseStarting(info);
        watchdog::instance().arm(info.name);
    }

    void sectionStarting(const Catch::SectionInfo& info) override {
        TestEventListenerBase::sectionStarting(info);
        watchdog::instance().enter_section(info.name);
    }

    void testCaseEnded(const Catch::TestCaseStats& stats) override {
        watchdog::instance().disarm(stats.totals.testCases.failed == 0);
        TestEventListenerBase::testCaseEnded(stats);
    }

    void testRunEnded(const Catch::TestRunStats& stats) override {
        watchdog::instance().stop();
        const auto& cases = stats.totals.testCases;
        // [!mayfail] test cases that failed count as passed, as Catch's exit code does.
        std::fflush(stdout);
        std::printf("TANDEM_RESULT passed=%llu failed=%llu skipped=0\n",
                    static_cast<unsigned long long>(cases.passed + cases.failedButOk),
                    static_cast<unsigned long long>(cases.failed));
        std::fflush(stdout);
        TestEventListenerBase::testRunEnded(stats);
    }
};

}  // namespace

CATCH_REGISTER_LISTENER(tandem_listener)

int main(int argc, char* argv[]) {
    return Catch::Session().run(argc, argv);
}
