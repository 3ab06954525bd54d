// mapped_pages.cpp: see mapped_pages.h.
#include "mapped_pages.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>

#ifdef __linux__
#include <sys/mman.h>
#endif

namespace cyclediff {

namespace {

std::set<std::string> resolved(const std::vector<std::string> &files) {
    std::set<std::string> out;
    for (const std::string &f : files) {
        char *real = realpath(f.c_str(), nullptr);
        if (real == nullptr) continue;
        out.insert(real);
        std::free(real);
    }
    return out;
}

}  // namespace

size_t drop_file_pages(const std::vector<std::string> &files) {
#ifdef __linux__
    const std::set<std::string> names = resolved(files);
    std::ifstream maps("/proc/self/maps");
    size_t advised = 0;
    std::string line;
    while (std::getline(maps, line)) {  // "start-end perms offset dev inode   path"
        std::istringstream in(line);
        std::string range, perms, offset, dev, inode, path;
        if (!(in >> range >> perms >> offset >> dev >> inode) || !std::getline(in >> std::ws, path)) continue;
        if (names.count(path) == 0 || perms.find('w') != std::string::npos) continue;
        unsigned long start = 0, end = 0;
        if (std::sscanf(range.c_str(), "%lx-%lx", &start, &end) != 2) continue;
        if (madvise(reinterpret_cast<void *>(start), end - start, MADV_DONTNEED) == 0) advised += end - start;
    }
    return advised;
#else
    (void)files;
    return 0;
#endif
}

PageDropper::PageDropper(std::vector<std::string> files) : files_(std::move(files)) {
    thread_ = std::thread([this] {
        std::unique_lock<std::mutex> guard(lock_);
        while (!wake_.wait_for(guard, std::chrono::milliseconds(100), [this] { return stop_; })) drop_file_pages(files_);
    });
}

PageDropper::~PageDropper() {
    {
        std::lock_guard<std::mutex> guard(lock_);
        stop_ = true;
    }
    wake_.notify_one();
    thread_.join();
    drop_file_pages(files_);
}

}  // namespace cyclediff
