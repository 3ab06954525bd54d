"""A random LoRA for a built-in checkpoint, for tests and README examples: `python -m cyclediff.export.tiny_lora
OUT.safetensors [--ckpt tiny] [--rank 4] [--seed 0] [--text-encoder]`. Written in diffusers' LoRA format (peft
state dict converted by diffusers, saved by `save_lora_weights`), which `cyclediff-export --lora` reads."""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

ATTENTION = ["to_q", "to_k", "to_v", "to_out.0"]  # the UNet's attention projections (what SD LoRAs train)
TEXT = ["q_proj", "k_proj", "v_proj", "out_proj"]  # CLIP's


def make(out: str | Path, ckpt: str = "tiny", rank: int = 4, seed: int = 0, text_encoder: bool = False,
         strength: float = 0.5) -> Path:
    """Write a random LoRA for `ckpt` to `out` (atomically); strength: the std of its up-projection, large
    enough that the fused model visibly differs."""
    import torch
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers

    from cyclediff.export import checkpoint
    from cyclediff.runtime import verbosity

    with verbosity.quiet_loading():
        comps = checkpoint.load(checkpoint.resolve(ckpt))
    torch.manual_seed(seed)
    layers = {"unet_lora_layers": _adapter(comps.unet, ATTENTION, rank, strength)}
    if text_encoder:
        layers["text_encoder_lora_layers"] = _adapter(comps.text_encoder, TEXT, rank, strength)
    out = Path(out)
    with tempfile.TemporaryDirectory(dir=out.parent if out.parent.exists() else None) as tmp:
        StableDiffusionPipeline.save_lora_weights(tmp, weight_name="lora.safetensors", **{
            k: convert_state_dict_to_diffusers(v) for k, v in layers.items()})
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(Path(tmp) / "lora.safetensors"), str(out))
    return out


def _adapter(module, targets: list[str], rank: int, strength: float) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model

    # peft's own call, not transformers' add_adapter (which wants a newer peft than the registry has)
    config = LoraConfig(r=rank, lora_alpha=rank, target_modules=targets, init_lora_weights=False)
    inject_adapter_in_model(config, module)
    state = get_peft_model_state_dict(module)
    with torch.no_grad():
        for name, weight in state.items():
            if "lora_B" in name:  # peft starts B at zero-ish: give the update a size that shows
                weight.normal_(0.0, strength)
    return state


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cyclediff.export.tiny_lora", description=__doc__.splitlines()[0])
    p.add_argument("out", help="the LoRA file to write (.safetensors)")
    p.add_argument("--ckpt", default="tiny", help="built-in checkpoint (or any --ckpt) it is for (default tiny)")
    p.add_argument("--rank", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--text-encoder", action="store_true", help="also a LoRA on the text encoder")
    args = p.parse_args(argv)
    from cyclediff.runtime import verbosity

    verbosity.configure("tiny_lora", verbose=False)
    print(make(args.out, args.ckpt, args.rank, args.seed, args.text_encoder))
    return 0


if __name__ == "__main__":
    sys.exit(main())
