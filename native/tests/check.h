// check.h: the few assertion macros the native tests share (count failures, print where, exit status).
#pragma once

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace check {

inline int &failures() {
    static int n = 0;
    return n;
}

inline void report(bool ok, const char *expr, const char *file, int line, const std::string &detail) {
    if (ok) return;
    ++failures();
    std::fprintf(stderr, "%s:%d: CHECK failed: %s %s\n", file, line, expr, detail.c_str());
}

// ctest reads "N passed, N failed"-style lines only from runners it knows; exit status decides.
inline int finish(const char *name, int checks) {
    std::printf("%s: %d checks, %d failed\n", name, checks, failures());
    return failures() == 0 ? 0 : 1;
}

constexpr int kSkip = 77;  // ctest SKIP_RETURN_CODE

}  // namespace check

#define CHECK(cond) check::report(static_cast<bool>(cond), #cond, __FILE__, __LINE__, "")
#define CHECK_MSG(cond, msg) check::report(static_cast<bool>(cond), #cond, __FILE__, __LINE__, (msg))
// Evaluates each side once (the sides are often calls).
#define CHECK_EQ(a, b)                                                                                     \
    do {                                                                                                   \
        const auto a_ = (a);                                                                               \
        const auto b_ = (b);                                                                               \
        check::report(a_ == b_, #a " == " #b, __FILE__, __LINE__,                                          \
                      "(" + std::to_string(a_) + " vs " + std::to_string(b_) + ")");                       \
    } while (0)
