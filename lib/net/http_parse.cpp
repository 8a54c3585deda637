// SPDX-License-Identifier: MIT
//
// The HTTP/1.1 response parser: llhttp's callbacks fill in an http_response and enforce the
// client's limits. See http_parse.hpp.

#include "http_parse.hpp"

#include <string>

namespace tandem::detail {

struct response_parser::callbacks {
    static response_parser& of(llhttp_t* p) { return *static_cast<response_parser*>(p->data); }

    static int on_message_begin(llhttp_t* p) {
        response_parser& s = of(p);
        s.response_.headers.clear();
        s.response_.body.clear();
        s.header_bytes_ = 0;
        s.in_value_ = false;
        return 0;
    }

    static int count_header_bytes(response_parser& s, std::size_t n) {
        s.header_bytes_ += n;
        if (s.header_bytes_ > s.options_->max_header_bytes) {
            s.failure_ = "response headers larger than max_header_bytes";
            return -1;
        }
        return 0;
    }

    static int on_header_field(llhttp_t* p, const char* at, std::size_t n) {
        response_parser& s = of(p);
        if (s.in_value_ || s.response_.headers.empty()) s.response_.headers.emplace_back();
        s.in_value_ = false;
        s.response_.headers.back().first.append(at, n);
        return count_header_bytes(s, n);
    }

    static int on_header_value(llhttp_t* p, const char* at, std::size_t n) {
        response_parser& s = of(p);
        s.in_value_ = true;
        s.response_.headers.back().second.append(at, n);
        return count_header_bytes(s, n);
    }

    static int on_headers_complete(llhttp_t* p) {
        response_parser& s = of(p);
        s.response_.status = p->status_code;
        if (p->status_code / 100 != 1 && (p->flags & F_CONTENT_LENGTH) != 0) {
            if (p->content_length > s.options_->max_body_bytes) {
                s.failure_ = "response body larger than max_body_bytes";
                return -1;
            }
            s.response_.body.reserve(static_cast<std::size_t>(p->content_length));
        }
        return s.head_request_ ? 1 : 0;  // 1: a response to HEAD has no body
    }

    static int on_body(llhttp_t* p, const char* at, std::size_t n) {
        response_parser& s = of(p);
        if (s.response_.body.size() + n > s.options_->max_body_bytes) {
            s.failure_ = "response body larger than max_body_bytes";
            return -1;
        }
        s.response_.body.append(at, n);
        return 0;
    }

    static int on_message_complete(llhttp_t* p) {
        response_parser& s = of(p);
        // 100 Continue and friends: the next one counts.
        if (s.response_.status / 100 == 1) return 0;
        s.complete_ = true;
        return HPE_PAUSED;  // stop right after this response: what follows is not ours
    }

    static const llhttp_settings_t& settings() {
        static const llhttp_settings_t st = [] {
            llhttp_settings_t x;
            llhttp_settings_init(&x);
            x.on_message_begin = &on_message_begin;
            x.on_header_field = &on_header_field;
            x.on_header_value = &on_header_value;
            x.on_headers_complete = &on_headers_complete;
            x.on_body = &on_body;
            x.on_message_complete = &on_message_complete;
            return x;
        }();
        return st;
    }
};

response_parser::response_parser(const http_client_options& options, bool head_request) noexcept
    : options_(&options), head_request_(head_request) {
    llhttp_init(&parser_, HTTP_RESPONSE, &callbacks::settings());
    parser_.data = this;
}

parse_status response_parser::status_after(llhttp_errno_t err) noexcept {
    last_error_ = err;  // llhttp_finish does not record its error in the parser
    if (complete_) return parse_status::complete;
    return err == HPE_OK ? parse_status::need_more : parse_status::failed;
}

parse_status response_parser::feed(std::string_view bytes) {
    const llhttp_errno_t err = llhttp_execute(&parser_, bytes.data(), bytes.size());
    if (complete_) {
        // Paused right after the response: the stop position is where it ended.
        consumed_ = static_cast<std::size_t>(llhttp_get_error_pos(&parser_) - bytes.data());
    }
    return status_after(err);
}

parse_status response_parser::finish() {
    consumed_ = 0;
    return status_after(llhttp_finish(&parser_));
}

bool response_parser::keep_alive() const noexcept {
    return llhttp_should_keep_alive(&parser_) != 0;
}

std::string response_parser::error() const {
    if (failure_ != nullptr) return failure_;
    const char* reason = llhttp_get_error_reason(&parser_);
    return std::string(llhttp_errno_name(last_error_)) + " (" + (reason ? reason : "") + ")";
}

}  // namespace tandem::detail
