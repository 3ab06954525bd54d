// files.cpp: file I/O on POSIX and sha256 through OpenSSL's EVP interface.
#include "files.h"

#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <memory>

#include "error.h"

namespace cyclediff {

bool file_exists(const std::string &path) {
    struct stat st {};
    return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string file_read(const std::string &path) {
    std::ifstream in(path, std::ios::binary);
    require(in.good(), CYCLEDIFF_ERR_IO, "cannot open " + path);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    require(!in.bad(), CYCLEDIFF_ERR_IO, "cannot read " + path);
    return bytes;
}

static void write_all(FILE *f, const std::string &bytes, const std::string &path) {
    bool ok = std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size();
    ok = std::fflush(f) == 0 && ok;
    ok = ::fsync(::fileno(f)) == 0 && ok;
    ok = std::fclose(f) == 0 && ok;
    require(ok, CYCLEDIFF_ERR_IO, "cannot write " + path);
}

void file_write_atomic(const std::string &path, const std::string &bytes) {
    std::string tmp = path + ".tmp" + std::to_string(::getpid());
    FILE *f = std::fopen(tmp.c_str(), "wb");
    require(f != nullptr, CYCLEDIFF_ERR_IO, "cannot create " + tmp);
    try {
        write_all(f, bytes, tmp);
    } catch (...) {
        std::remove(tmp.c_str());
        throw;
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0) {
        std::remove(tmp.c_str());
        fail(CYCLEDIFF_ERR_IO, "cannot rename " + tmp + " to " + path);
    }
}

namespace {

struct DigestDeleter {
    void operator()(EVP_MD_CTX *ctx) const { EVP_MD_CTX_free(ctx); }
};
using Digest = std::unique_ptr<EVP_MD_CTX, DigestDeleter>;

Digest digest_new() {
    Digest ctx(EVP_MD_CTX_new());
    require(ctx && EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) == 1, CYCLEDIFF_ERR_INTERNAL,
            "OpenSSL could not start a sha256 digest");
    return ctx;
}

std::string digest_hex(EVP_MD_CTX *ctx) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    require(EVP_DigestFinal_ex(ctx, md, &n) == 1, CYCLEDIFF_ERR_INTERNAL, "OpenSSL sha256 failed");
    static const char *hex = "0123456789abcdef";
    std::string out;
    for (unsigned int i = 0; i < n; ++i) {
        out += hex[md[i] >> 4];
        out += hex[md[i] & 15];
    }
    return out;
}

void digest_file(EVP_MD_CTX *ctx, const std::string &path) {
    std::ifstream in(path, std::ios::binary);
    require(in.good(), CYCLEDIFF_ERR_IO, "cannot open " + path);
    std::vector<char> block(1 << 20);
    while (in) {
        in.read(block.data(), static_cast<std::streamsize>(block.size()));
        EVP_DigestUpdate(ctx, block.data(), static_cast<size_t>(in.gcount()));
    }
    require(!in.bad(), CYCLEDIFF_ERR_IO, "cannot read " + path);
}

}  // namespace

std::string sha256_hex(const std::string &bytes) {
    Digest ctx = digest_new();
    EVP_DigestUpdate(ctx.get(), bytes.data(), bytes.size());
    return digest_hex(ctx.get());
}

std::string sha256_files(const std::vector<std::string> &paths) {
    Digest ctx = digest_new();
    for (const std::string &p : paths) digest_file(ctx.get(), p);
    return digest_hex(ctx.get());
}

std::string path_join(const std::string &folder, const std::string &name) {
    if (folder.empty() || folder.back() == '/') return folder + name;
    return folder + "/" + name;
}

}  // namespace cyclediff
