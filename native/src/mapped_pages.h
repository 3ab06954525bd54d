// mapped_pages.h: drop this process's resident pages of memory-mapped weight files (engine/mapped_pages.py).
//
// OpenVINO memory-maps an IR's weights; compiling reads them all and packs them into the plugin's own buffers,
// after which the mapping is never read again, yet it stays resident (3.3 GB for the SD UNet's fp32 .bin, on
// top of its packed weights). madvise(MADV_DONTNEED) on a read-only file mapping drops the pages from this
// process: a page read again faults back in from the file, unchanged. Linux only; elsewhere nothing is done.
#pragma once

#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace cyclediff {

// Drops the resident pages of read-only mappings of `files` (paths as given; resolved here). Returns the bytes
// of the ranges advised.
size_t drop_file_pages(const std::vector<std::string> &files);

// While alive (and once at its end), drops the pages of `files` every 100 ms from a thread of its own, so that
// a compile or first call never holds a whole mapped weight file at once. Not copyable; one owner.
class PageDropper {
public:
    explicit PageDropper(std::vector<std::string> files);
    ~PageDropper();
    PageDropper(const PageDropper &) = delete;
    PageDropper &operator=(const PageDropper &) = delete;

private:
    std::vector<std::string> files_;
    std::mutex lock_;  // guards stop_
    std::condition_variable wake_;
    bool stop_ = false;
    std::thread thread_;
};

}  // namespace cyclediff
