# require.cmake: find the build dependencies; a missing one stops the configure step with the command that
# installs them all, rather than CMake's generic "Could not find a package configuration file".
set(CYCLEDIFF_APT_PACKAGES "cmake g++ ninja-build pkg-config nlohmann-json3-dev libstb-dev libutf8proc-dev libssl-dev")

function(cyclediff_require found what)
  if(NOT ${found})
    message(FATAL_ERROR
      "cyclediff: ${what} was not found. Install the build dependencies (Debian/Ubuntu):\n"
      "  sudo apt-get install ${CYCLEDIFF_APT_PACKAGES}\n"
      "then configure again, naming the Python that has cyclediff and torch installed:\n"
      "  cmake -S . -B build/native -G Ninja -DCMAKE_BUILD_TYPE=Release -DCYCLEDIFF_PYTHON=$(which python)\n"
      "(see native/README.md)")
  endif()
endfunction()

find_package(nlohmann_json 3.9 QUIET)
cyclediff_require(nlohmann_json_FOUND "nlohmann_json >= 3.9 (package nlohmann-json3-dev)")
find_package(OpenSSL QUIET COMPONENTS Crypto)
cyclediff_require(OpenSSL_FOUND "OpenSSL's libcrypto (package libssl-dev)")
find_package(PkgConfig QUIET)
cyclediff_require(PkgConfig_FOUND "pkg-config (package pkg-config)")
pkg_check_modules(UTF8PROC QUIET IMPORTED_TARGET libutf8proc)
cyclediff_require(UTF8PROC_FOUND "libutf8proc (package libutf8proc-dev)")
