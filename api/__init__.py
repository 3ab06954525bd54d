"""cyclediff: an inference engine for zero-shot text-guided image editing with Stable Diffusion v1.x (CycleDiffusion).

    engine = cyclediff.Engine.load("exports/tiny")
    images = engine.edit(prompt="a cat", source_prompt="a dog", image=img).images
"""
from cyclediff.runtime.config import PRESETS, EditParams, EngineConfig
from cyclediff.runtime.engine import EditOutput, Engine
from cyclediff.runtime.latent_code import LatentCode, LatentCodeError

__all__ = ["Engine", "EditOutput", "EditParams", "EngineConfig", "LatentCode", "LatentCodeError", "PRESETS"]
__version__ = "0.1.0"
