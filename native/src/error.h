// error.h: the one exception type of the library; the C ABI turns it into a status code and a message.
#pragma once

#include <stdexcept>
#include <string>

#include "cyclediff.h"

namespace cyclediff {

class Error : public std::runtime_error {
public:
    Error(cyclediff_status status, const std::string &message) : std::runtime_error(message), status_(status) {}
    cyclediff_status status() const { return status_; }

private:
    cyclediff_status status_;
};

[[noreturn]] inline void fail(cyclediff_status status, const std::string &message) { throw Error(status, message); }

inline void require(bool ok, cyclediff_status status, const std::string &message) {
    if (!ok) fail(status, message);
}

}  // namespace cyclediff
