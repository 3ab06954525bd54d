"""Golden values from the Python side for the native ctest suite: tokenizer ids, schedule tables, export dirs, parity."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

# Prompts that exercise every stage of CLIPTokenizer: normalizer (NFC, whitespace, lowercase), the CLIP and
# GPT-2 splits (contractions, letters, digits, punctuation, specials), byte-level mapping and truncation.
CORPUS = [
    "a photo of a cat", "A Photo OF a CAT", "", " ", "   leading and trailing   ",
    "multiple    spaces\tand\ttabs\nnewlines\r\nend", "it's a dog's life, we'll see; they're here, I'd've gone",
    "IT'S LOUD, WE'LL GO", "don't won't can't", "rock'n'roll", "''quoted'' 's 'll", "\"double quotes\"",
    "café crème brûlée", "cafe\u0301 decomposed e\u0301", "naïve résumé Ångström", "straße STRASSE ß",
    "İstanbul İ", "ΣΊΣΥΦΟΣ σοφός Σ", "日本語のテキスト", "中文字符测试，标点。", "한국어 텍스트", "emoji 😀🎉👍🏽 family 👨‍👩‍👧",
    "flags 🇫🇷🇩🇪", "digits 1234567890 and 3.14159, 1,000,000", "٣٤٥ arabic-indic digits", "½ ⅔ Ⅻ superscript² x₂",
    "punctuation!!! ??? ... --- *** ~~~", "<|startoftext|> literal specials <|endoftext|>", "a<|endoftext|>b",
    "<|STARTOFTEXT|> upper", "x<|endoftext|><|endoftext|>y", "nbsp\u00a0em\u2003ideo\u3000end", "zero\u200bwidth",
    "combining a\u0300\u0301\u0302 o\u0308", "hindi हिन्दी", "thai ภาษาไทย", "mixed123abc456def", "C++ & C# @home #tag $100 %50 ^_^",
    "ﬁ ligature ﬀ", "Ｆｕｌｌｗｉｄｔｈ ＡＢＣ", "\x07bell \x1bescape", "line\u2028sep\u2029para\u0085nel",
    "an astronaut riding a horse, oil painting, high quality, detailed",
    "over-long " * 45, " ".join(f"word{i}" for i in range(90)), "a " * 76, "a " * 75, "a " * 74,
    "x" * 300, "😀" * 40,
]


def _learned_tokenizer(folder: Path) -> None:
    """A tokenizer whose merges also cover accented, CJK and emoji bytes (vocab.json + merges.txt)."""
    from cyclediff.export import tokenizer_files as tf

    corpus = tf._CORPUS + " " + " ".join(CORPUS)
    merges = tf.learn_merges(corpus, 1500)
    vocab = tf.build_vocab(merges)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("\n".join(["#version: 0.2"] + [f"{a} {b}" for a, b in merges]) + "\n",
                                       encoding="utf-8")
    config = {"tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "bos_token": tf.BOS, "eos_token": tf.EOS,
              "unk_token": tf.EOS, "pad_token": tf.EOS, "do_lower_case": True}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")


def tokenizer(out: Path) -> None:
    """out/tokenizer_golden.json + the tokenizer folders it names (relative paths)."""
    from transformers import CLIPTokenizer

    from cyclediff.export.tokenizer_files import write_tokenizer

    dirs = {"tiny_txt": out / "tok_tiny_txt", "learned_txt": out / "tok_learned_txt"}
    write_tokenizer(dirs["tiny_txt"])
    _learned_tokenizer(dirs["learned_txt"])
    for name in list(dirs):  # transformers 5 save_pretrained writes tokenizer.json (+ config) instead
        json_dir = out / f"tok_{name.removesuffix('_txt')}_json"
        CLIPTokenizer.from_pretrained(dirs[name]).save_pretrained(json_dir)
        dirs[name.replace("_txt", "_json")] = json_dir
    result = {"tokenizers": {k: str(v.relative_to(out)) for k, v in dirs.items()}, "cases": []}
    toks = {k: CLIPTokenizer.from_pretrained(v) for k, v in dirs.items()}
    for text in CORPUS:
        ids = {k: t(text, padding="max_length", max_length=t.model_max_length, truncation=True).input_ids
               for k, t in toks.items()}
        result["cases"].append({"text": text, "ids": ids})
    (out / "tokenizer_golden.json").write_text(json.dumps(result, ensure_ascii=False, indent=1), encoding="utf-8")


SCHEDULERS = {
    "sd_v1": {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "set_alpha_to_one": False,
              "steps_offset": 1, "clip_sample": False},
    "linear_trailing": {"beta_schedule": "linear", "timestep_spacing": "trailing", "set_alpha_to_one": True},
    "cosine_linspace": {"beta_schedule": "squaredcos_cap_v2", "timestep_spacing": "linspace", "num_train_timesteps": 500},
    "trained": {"trained_betas": [0.0001 * (1 + i) ** 1.5 for i in range(100)], "num_train_timesteps": 100,
                "set_alpha_to_one": False},
}
REQUESTS = [(50, 0.8, 0.1), (10, 1.0, 0.0), (100, 0.29, 0.7), (7, 0.5, 1.0), (3, 0.34, 0.1), (1, 1.0, 0.5)]


def schedule(out: Path) -> None:
    """out/schedule_golden.json: SchedulerConfig.to_json, alphas_cumprod and StepTables, floats as exact numbers."""
    from cyclediff.runtime.core.schedule import ScheduleError, SchedulerConfig, StepTable

    cases = []
    for name, raw in SCHEDULERS.items():
        cfg = SchedulerConfig.from_diffusers(raw)
        case = {"name": name, "config": cfg.to_json(), "alphas_cumprod": cfg.alphas_cumprod().tolist(), "tables": []}
        for steps, strength, eta in REQUESTS:
            if steps > cfg.num_train_timesteps:
                continue
            try:
                t = StepTable.build(cfg, steps, strength, eta)
            except ScheduleError:
                case["tables"].append({"request": [steps, strength, eta], "error": True})
                continue
            cols = {k: getattr(t, k).tolist() for k in ("timesteps", "sqrt_a", "sqrt_b", "sqrt_a_prev", "sigma",
                                                         "sigma_den", "dir_coef")}
            case["tables"].append({"request": [steps, strength, eta], **cols, "draws": list(t.draws),
                                   "a_t0": float(t.a_t0)})
        cases.append(case)
    (out / "schedule_golden.json").write_text(json.dumps({"cases": cases}, indent=1), encoding="utf-8")


def committed(out: Path) -> None:
    """Regenerate native/tests/data (used when no Python is available at test time): one tokenizer, its ids,
    and the schedule tables without the 1000-entry alphas_cumprod columns."""
    import shutil

    tmp = out / ".tmp"
    tokenizer(tmp)
    shutil.rmtree(out / "tokenizer", ignore_errors=True)
    shutil.copytree(tmp / "tok_learned_txt", out / "tokenizer")
    golden = json.loads((tmp / "tokenizer_golden.json").read_text(encoding="utf-8"))
    golden["tokenizers"] = {"learned_txt": "tokenizer"}
    for case in golden["cases"]:
        case["ids"] = {"learned_txt": case["ids"]["learned_txt"]}
    (out / "tokenizer_golden.json").write_text(json.dumps(golden, ensure_ascii=False, separators=(",", ":")) + "\n",
                                               encoding="utf-8")
    schedule(tmp)
    sched = json.loads((tmp / "schedule_golden.json").read_text(encoding="utf-8"))
    for case in sched["cases"]:
        case.pop("alphas_cumprod")
    (out / "schedule_golden.json").write_text(json.dumps(sched, separators=(",", ":")) + "\n", encoding="utf-8")
    shutil.rmtree(tmp)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("what", choices=["tokenizer", "schedule", "export", "parity", "check_code", "committed"])
    parser.add_argument("out", type=Path)
    parser.add_argument("--ckpt", default="tiny")
    parser.add_argument("--backend", default="torch", choices=["torch", "openvino", "openvino-bf16"],
                        help="the Python backend (and dtype) whose outputs parity records and check_code compares "
                             "with (fixture.py BACKENDS)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.what in ("export", "parity", "check_code"):
        import fixture  # beside this file; needs torch and the checkpoint

        extra = (args.backend,) if args.what in ("parity", "check_code") else ()
        getattr(fixture, args.what)(args.out, args.ckpt, *extra)
    else:
        globals()[args.what](args.out)
    print(f"golden {args.what}: wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    sys.exit(main(sys.argv[1:]))
