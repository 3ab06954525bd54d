/* cyclediff.h: the C ABI of libcyclediff, the CycleDiffusion image-editing engine for hosts without Python. */
#ifndef CYCLEDIFF_H
#define CYCLEDIFF_H

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#define CYCLEDIFF_API __declspec(dllexport)
#else
#define CYCLEDIFF_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define CYCLEDIFF_VERSION_MAJOR 0
#define CYCLEDIFF_VERSION_MINOR 1
#define CYCLEDIFF_VERSION_PATCH 0

/* Every entry point returns one of these (never throws); cyclediff_last_error() holds the message. */
typedef enum cyclediff_status {
    CYCLEDIFF_OK = 0,
    CYCLEDIFF_ERR_INVALID_ARGUMENT = 1, /* null pointer, out-of-range parameter, invalid UTF-8 */
    CYCLEDIFF_ERR_BUFFER_TOO_SMALL = 2, /* a caller buffer is smaller than the result */
    CYCLEDIFF_ERR_IMAGE_SIZE = 3,       /* image sides are not multiples of cyclediff_engine_info.image_multiple */
    CYCLEDIFF_ERR_NOT_AN_EXPORT = 4,    /* the directory has no manifest.json */
    CYCLEDIFF_ERR_SCHEMA_VERSION = 5,   /* manifest schema_version is not one this library reads: re-export */
    CYCLEDIFF_ERR_MANIFEST = 6,         /* manifest.json is not valid JSON or lacks a field: re-export */
    CYCLEDIFF_ERR_FILE_MISSING = 7,     /* a file the manifest lists is absent */
    CYCLEDIFF_ERR_HASH_MISMATCH = 8,    /* a file differs from the sha256 the manifest records */
    CYCLEDIFF_ERR_TOKENIZER = 9,        /* the tokenizer files cannot be read */
    CYCLEDIFF_ERR_UNSUPPORTED = 10,     /* the export lacks what this library needs (scheduler, executor files) */
    CYCLEDIFF_ERR_EXECUTOR = 11,        /* executor not compiled in, or it failed to load or run a model */
    CYCLEDIFF_ERR_CODE_MISMATCH = 12,   /* a latent code from another export, or with inconsistent shapes */
    CYCLEDIFF_ERR_IO = 13,              /* a file could not be read or written */
    CYCLEDIFF_ERR_FORMAT = 14,          /* a file is not a cyclediff latent code */
    CYCLEDIFF_ERR_OUT_OF_MEMORY = 15,
    CYCLEDIFF_ERR_INTERNAL = 16         /* a bug: please report with the message */
} cyclediff_status;

typedef struct cyclediff_engine cyclediff_engine; /* one loaded export directory */
typedef struct cyclediff_code cyclediff_code;     /* a DPM-Encoder latent code: x_T and the recorded noises */

/* The numeric knobs of an edit: the fields and defaults of the Python Engine.edit / diffusers
   CycleDiffusionPipeline. Always start from cyclediff_params_default(). */
typedef struct cyclediff_params {
    double strength;               /* (0, 1]; default 0.8 */
    int32_t num_inference_steps;   /* >= 1; default 50 */
    double guidance_scale;         /* finite; default 7.5; <= 1 turns classifier-free guidance off */
    double source_guidance_scale;  /* finite; default 1 */
    double eta;                    /* finite, >= 0; default 0.1 */
    uint64_t seed;                 /* default 0; torch executor: the draws of torch.Generator().manual_seed(seed);
                                      openvino, tensorrt: a portable generator (pass cyclediff_draws for Python's) */
    int32_t num_images_per_prompt; /* >= 1; default 1 */
    int32_t clip_skip;             /* -1 (default) = none; else 0 .. text_states - 2 */
} cyclediff_params;

typedef struct cyclediff_engine_options {
    const char *executor;  /* "auto" (default), "openvino", "torch" or "tensorrt". auto: tensorrt where it is
                              compiled in, a CUDA device is present, the export has plans and dtype is unset or
                              "fp16"; else openvino (CPU) where compiled in; else torch */
    int32_t max_batch;     /* largest UNet batch the encoder sends; default 16 */
    int32_t num_threads;   /* CPU threads of the executor; 0 (default): openvino one per CPU this process may
                              run on (its affinity), as Python; torch its own default */
    int32_t verify_hashes; /* 1 (default): check the sha256 of every file read; 0: only that they exist */
    const char *dtype;     /* NULL or "" (default): the executor's own (openvino, torch: "fp32"; tensorrt: "fp16").
                              "bf16": openvino's fast CPU mode, on a CPU with AVX512_BF16 or AMX (refused with
                              CYCLEDIFF_ERR_UNSUPPORTED elsewhere); auto then picks openvino. Latents, recorded
                              noises and the DDIM math stay fp32 */
} cyclediff_engine_options;

typedef struct cyclediff_engine_info {
    int32_t vae_scale;       /* image side / latent side (8 for SD v1) */
    int32_t image_multiple;  /* image sides must be multiples of this (vae_scale x UNet downscale) */
    int32_t latent_channels; /* 4 */
    int32_t text_states;     /* text encoder layers + 1 */
    int32_t sample_size;     /* the checkpoint's native image side (512 for SD v1) */
    const char *executor;    /* "openvino" | "torch" | "tensorrt"; owned by the engine */
    const char *digest;      /* identity of the export (sha256 hex); owned by the engine */
    const char *dtype;       /* the models' precision: "fp32" | "bf16" | "fp16"; owned by the engine */
} cyclediff_engine_info;

typedef struct cyclediff_code_info {
    int32_t batch;               /* B = num_images_per_prompt of the encode */
    int32_t latent_channels;     /* C */
    int32_t latent_height;       /* h */
    int32_t latent_width;        /* w */
    int32_t num_steps;           /* K: steps the edit runs, int(num_inference_steps * strength) */
    int32_t num_inference_steps;
    double strength;
    double eta;
    double source_guidance_scale;
} cyclediff_code_info;

/* Random draws to use instead of the seed, float32 standard normals in the Python runtime's order:
   n_vae (1, C, h, w): the VAE posterior sample; n0 (B, C, h, w): the noise of x_T;
   steps (D, B, C, h, w): one per step whose previous timestep is > 0 (D <= K).
   cyclediff_draws_count gives the three counts. */
typedef struct cyclediff_draws {
    const float *n_vae;
    size_t n_vae_count;
    const float *n0;
    size_t n0_count;
    const float *steps;
    size_t steps_count;
} cyclediff_draws;

CYCLEDIFF_API const char *cyclediff_version(void);
/* The message of the last call on this thread: why it failed, "" after a success. Valid until the next call. */
CYCLEDIFF_API const char *cyclediff_last_error(void);
CYCLEDIFF_API const char *cyclediff_status_name(cyclediff_status status);

CYCLEDIFF_API cyclediff_params cyclediff_params_default(void);
CYCLEDIFF_API cyclediff_engine_options cyclediff_engine_options_default(void);

/* Load an export directory (as written by cyclediff-export). options may be NULL (defaults). */
CYCLEDIFF_API cyclediff_status cyclediff_engine_create(const char *export_dir, const cyclediff_engine_options *options,
                                                       cyclediff_engine **out_engine);
/* Calls on one engine are serialized (a mutex); free it only when no other thread is inside a call on it. */
CYCLEDIFF_API void cyclediff_engine_free(cyclediff_engine *engine);
CYCLEDIFF_API cyclediff_status cyclediff_engine_get_info(const cyclediff_engine *engine, cyclediff_engine_info *out);

/* How many floats each member of cyclediff_draws must hold for an image of width x height. */
CYCLEDIFF_API cyclediff_status cyclediff_draws_count(const cyclediff_engine *engine, int32_t width, int32_t height,
                                                     const cyclediff_params *params, size_t *n_vae_count,
                                                     size_t *n0_count, size_t *steps_count);

/* The DPM-Encoder. rgb: height rows of `stride` bytes, each width RGB8 pixels. draws: NULL to draw from
   params->seed. Uses strength, num_inference_steps, source_guidance_scale, eta, seed,
   num_images_per_prompt and clip_skip. On success *out_code is a new code (free with cyclediff_code_free). */
CYCLEDIFF_API cyclediff_status cyclediff_encode(cyclediff_engine *engine, const uint8_t *rgb, int32_t width,
                                                int32_t height, size_t stride, const char *source_prompt,
                                                const cyclediff_params *params, const cyclediff_draws *draws,
                                                cyclediff_code **out_code);

/* The batch and image size that decoding `code` gives. */
CYCLEDIFF_API cyclediff_status cyclediff_output_size(const cyclediff_engine *engine, const cyclediff_code *code,
                                                     int32_t *batch, int32_t *width, int32_t *height);

/* Decode with a target prompt (uses params->guidance_scale and clip_skip) into B RGB8 images, one after the
   other, each `height` rows of out_stride >= 3 * width bytes: out_size >= B * height * out_stride. */
CYCLEDIFF_API cyclediff_status cyclediff_decode(cyclediff_engine *engine, const cyclediff_code *code,
                                                const char *prompt, const cyclediff_params *params, uint8_t *out,
                                                size_t out_size, size_t out_stride);
/* As cyclediff_decode, into float32 (B, height, width, 3) in [0, 1] (Python's output_type="np"). */
CYCLEDIFF_API cyclediff_status cyclediff_decode_f32(cyclediff_engine *engine, const cyclediff_code *code,
                                                    const char *prompt, const cyclediff_params *params, float *out,
                                                    size_t out_count);

/* Encode with source_prompt, then decode with prompt: Engine.edit. With guidance_scale <= 1 the source
   is unguided whatever source_guidance_scale says, as in diffusers. Output as cyclediff_decode. */
CYCLEDIFF_API cyclediff_status cyclediff_edit(cyclediff_engine *engine, const uint8_t *rgb, int32_t width,
                                              int32_t height, size_t stride, const char *source_prompt,
                                              const char *prompt, const cyclediff_params *params,
                                              const cyclediff_draws *draws, uint8_t *out, size_t out_size,
                                              size_t out_stride);
CYCLEDIFF_API cyclediff_status cyclediff_edit_f32(cyclediff_engine *engine, const uint8_t *rgb, int32_t width,
                                                  int32_t height, size_t stride, const char *source_prompt,
                                                  const char *prompt, const cyclediff_params *params,
                                                  const cyclediff_draws *draws, float *out, size_t out_count);

CYCLEDIFF_API void cyclediff_code_free(cyclediff_code *code);
CYCLEDIFF_API cyclediff_status cyclediff_code_get_info(const cyclediff_code *code, cyclediff_code_info *out);
/* x_T (B, C, h, w) and the recorded noises (K, B, C, h, w) as float32; count is the buffer's length. */
CYCLEDIFF_API cyclediff_status cyclediff_code_copy_x_T(const cyclediff_code *code, float *out, size_t count);
CYCLEDIFF_API cyclediff_status cyclediff_code_copy_noises(const cyclediff_code *code, float *out, size_t count);
/* The same safetensors file as the Python LatentCode.save / LatentCode.load: codes move between both. */
CYCLEDIFF_API cyclediff_status cyclediff_code_save(const cyclediff_code *code, const char *path);
CYCLEDIFF_API cyclediff_status cyclediff_code_load(const char *path, cyclediff_code **out_code);

#ifdef __cplusplus
}
#endif

#endif /* CYCLEDIFF_H */
