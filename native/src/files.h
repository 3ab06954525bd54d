// files.h: whole-file reads, atomic writes and sha256 of files, each failing with a cyclediff Error.
#pragma once

#include <string>
#include <vector>

namespace cyclediff {

bool file_exists(const std::string &path);
std::string file_read(const std::string &path);                   // throws CYCLEDIFF_ERR_IO
void file_write_atomic(const std::string &path, const std::string &bytes);  // temp file + fsync + rename
std::string sha256_hex(const std::string &bytes);
// sha256 of the files' bytes one after the other (export/manifest.py sha256_files).
std::string sha256_files(const std::vector<std::string> &paths);
std::string path_join(const std::string &folder, const std::string &name);

}  // namespace cyclediff
