// test_tokenizer.cpp: C++ token ids == transformers' CLIPTokenizer ids on the golden corpus, per tokenizer.
#include <nlohmann/json.hpp>

#include "check.h"
#include "files.h"
#include "tokenizer.h"

using cyclediff::Tokenizer;
using json = nlohmann::json;

static std::string ids_str(const std::vector<int64_t> &ids) {
    std::string s;
    for (int64_t i : ids) s += std::to_string(i) + " ";
    return s;
}

static int check_tokenizer(const std::string &dir, const std::string &name, const json &cases) {
    Tokenizer tok = Tokenizer::load(dir, 77);
    int checks = 0;
    for (const json &c : cases) {
        std::vector<int64_t> want = c.at("ids").at(name).get<std::vector<int64_t>>();
        std::vector<int64_t> got = tok.encode(c.at("text").get<std::string>());
        ++checks;
        CHECK_MSG(got == want, name + " \"" + c.at("text").get<std::string>().substr(0, 60) + "\"\n  got  " +
                                   ids_str(got) + "\n  want " + ids_str(want));
    }
    return checks;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: test_tokenizer GOLDEN_DIR\n");
        return 2;
    }
    std::string root = argv[1];
    json golden = json::parse(cyclediff::file_read(cyclediff::path_join(root, "tokenizer_golden.json")));
    int checks = 0;
    for (auto it = golden["tokenizers"].begin(); it != golden["tokenizers"].end(); ++it)
        checks += check_tokenizer(cyclediff::path_join(root, it.value().get<std::string>()), it.key(), golden["cases"]);
    return check::finish("test_tokenizer", checks);
}
