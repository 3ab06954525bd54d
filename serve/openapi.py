"""What FastAPI's OpenAPI page (/docs) shows for the hand-parsed request bodies: fields, types, defaults."""
from __future__ import annotations

from typing import Any

from cyclediff.serve.fields import ENDPOINT_FIELDS, OUTPUT_FORMATS

DESCRIPTION = ("CycleDiffusion text-guided image editing. Send JSON (files as base64) or multipart/form-data (files "
               "as uploads). Errors are JSON {\"error\": message, \"field\": name}: 4xx for the request's own "
               "mistakes, 503 + Retry-After when the queue is full, 504 past the timeout.")
_NUMBER = {"type": "number"}
_PROMPTS = {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}],
            "description": "target prompt, or a list: one shared encoding decoded per prompt"}
FIELD_SCHEMAS: dict[str, dict[str, Any]] = {
    "image": {"type": "string", "format": "byte", "description": "PNG/JPEG/WebP; sides multiples of "
                                                                "/v1/info resolution.side_multiple"},
    "code": {"type": "string", "format": "byte", "description": "a latent code file from /v1/encode"},
    "source_prompt": {"type": "string", "description": "text describing the input image"},
    "prompt": _PROMPTS,
    "strength": {**_NUMBER, "default": 0.8, "exclusiveMinimum": 0, "maximum": 1},
    "num_inference_steps": {"type": "integer", "default": 50, "minimum": 1},
    "guidance_scale": {**_NUMBER, "default": 7.5},
    "source_guidance_scale": {**_NUMBER, "default": 1.0},
    "eta": {**_NUMBER, "default": 0.1, "minimum": 0},
    "seed": {"type": "integer", "minimum": 0, "description": "omitted: random, returned in X-Seed"},
    "output_format": {"type": "string", "enum": list(OUTPUT_FORMATS), "default": "png",
                      "description": "npy: float32 (H, W, 3) in [0, 1], as np.save writes it"},
    "timeout_s": {**_NUMBER, "description": "at most the service's --request-timeout"},
    "method": {"type": "string", "enum": ["cycle", "pix2pix-zero"], "default": "cycle",
               "description": "pix2pix-zero: invert with source_prompt as the caption, edit along CLIP(target) - "
                              "CLIP(source); strength, eta, source_guidance_scale do not apply"},
    "cross_attention_guidance_amount": {**_NUMBER, "default": 0.1, "minimum": 0,
                                        "description": "pix2pix-zero only; > 0 needs a guided-capable replica "
                                                       "(/v1/info methods)"},
    "decoder": {"type": "boolean", "default": False,
                "description": "decode with the service's second export (cyclediff-serve --decoder-engine; "
                               "/v1/info decoder)"},
}
REQUIRED = {"edit": ["image", "source_prompt", "prompt"], "encode": ["image", "source_prompt"],
            "decode": ["code", "prompt"]}
IMAGE_RESPONSES: dict[int | str, dict[str, Any]] = {200: {"content": {
    "image/png": {}, "application/x-npy": {}, "application/json": {"example": {"images": ["<base64>"]}}},
    "description": "one prompt: the image; several: JSON list of base64 images"}}
CODE_RESPONSES: dict[int | str, dict[str, Any]] = {200: {"content": {"application/octet-stream": {}},
                                                         "description": "LatentCode.save's safetensors file"}}


def body(endpoint: str) -> dict[str, Any]:
    fields = {name: FIELD_SCHEMAS[name] for name in ENDPOINT_FIELDS[endpoint]}
    schema = {"type": "object", "properties": fields, "required": REQUIRED[endpoint]}
    form = {**schema, "properties": {**fields, **{f: {"type": "string", "format": "binary"}
                                                   for f in ("image", "code") if f in fields}}}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema},
                                                          "multipart/form-data": {"schema": form}}}}
