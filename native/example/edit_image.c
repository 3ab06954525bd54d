/* edit_image.c: a minimal C host: load an export directory, edit an image file, write the result, say what it did. */
#include <cyclediff.h>
#include <stb/stb_image.h>
#include <stb/stb_image_write.h>

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static double seconds_since(const struct timespec *start) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - start->tv_sec) + (double)(now.tv_nsec - start->tv_nsec) * 1e-9;
}

static int usage(const char *argv0) {
    fprintf(stderr, "usage: %s EXPORT_DIR INPUT_IMAGE OUTPUT.{png,jpg,bmp} SOURCE_PROMPT TARGET_PROMPT "
                    "[STEPS [STRENGTH [SEED [DTYPE]]]]\n"
                    "  DTYPE: fp32 (default) or bf16 (the fast CPU mode, on a CPU with AVX512_BF16 or AMX)\n", argv0);
    return 2;
}

/* The command line, checked whole before the engine loads: a typo costs nothing, never an edit's compute. */
typedef struct {
    int steps;
    double strength;
    unsigned long long seed;
    int has_seed;
    const char *dtype;  /* NULL (the executor's default) | "fp32" | "bf16" */
    const char *format; /* "png" | "jpg" | "bmp", from OUTPUT's suffix */
} options;

static int bad(const char *name, const char *text, const char *expected) {
    fprintf(stderr, "%s must be %s, got '%s'\n", name, expected, text);
    return 2;
}

static int parse_steps(const char *text, int *out) {
    char *end = NULL;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (end == text || *end != '\0' || errno || v < 1 || v > 1000) return bad("STEPS", text, "an integer in [1, 1000]");
    *out = (int)v;
    return 0;
}

static int parse_strength(const char *text, double *out) {
    char *end = NULL;
    errno = 0;
    double v = strtod(text, &end);
    if (end == text || *end != '\0' || errno || !(v > 0.0 && v <= 1.0)) return bad("STRENGTH", text, "a number in (0, 1]");
    *out = v;
    return 0;
}

static int parse_seed(const char *text, unsigned long long *out) {
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (end == text || *end != '\0' || errno || text[0] == '-' || v >= (1ULL << 63))
        return bad("SEED", text, "an integer in [0, 2**63)");
    *out = v;
    return 0;
}

static const char *image_format(const char *path) {
    const char *dot = strrchr(path, '.');
    if (!dot || strchr(dot, '/')) return NULL;
    if (!strcasecmp(dot, ".png")) return "png";
    if (!strcasecmp(dot, ".jpg") || !strcasecmp(dot, ".jpeg")) return "jpg";
    if (!strcasecmp(dot, ".bmp")) return "bmp";
    return NULL;
}

/* The folder OUTPUT goes in takes a new file: probed with a real temp file (root passes access() everywhere). */
static int check_output_folder(const char *path) {
    char probe[PATH_MAX];
    if (snprintf(probe, sizeof probe, "%s.probe-XXXXXX", path) >= (int)sizeof probe) {
        fprintf(stderr, "OUTPUT %s: the path is too long\n", path);
        return 2;
    }
    int fd = mkstemp(probe);
    if (fd < 0) {
        fprintf(stderr, "cannot write OUTPUT %s: %s (checked before any compute); create its folder or choose "
                        "another path\n", path, strerror(errno));
        return 2;
    }
    close(fd);
    unlink(probe);
    return 0;
}

static int parse(int argc, char **argv, options *o) {
    o->steps = cyclediff_params_default().num_inference_steps;
    o->strength = cyclediff_params_default().strength;
    o->has_seed = 0;
    o->format = image_format(argv[3]);
    if (!o->format) return bad("OUTPUT", argv[3], "a file name ending in .png, .jpg, .jpeg or .bmp");
    if (argc > 6 && parse_steps(argv[6], &o->steps)) return 2;
    if (argc > 7 && parse_strength(argv[7], &o->strength)) return 2;
    if (argc > 8 && parse_seed(argv[8], &o->seed)) return 2;
    o->has_seed = argc > 8;
    o->dtype = argc > 9 ? argv[9] : NULL;
    if (o->dtype && strcmp(o->dtype, "fp32") && strcmp(o->dtype, "bf16")) return bad("DTYPE", o->dtype, "fp32 or bf16");
    return check_output_folder(argv[3]);
}

static int fail(const char *what, cyclediff_status status) {
    fprintf(stderr, "%s failed: %s: %s\n", what, cyclediff_status_name(status), cyclediff_last_error());
    return 1;
}

/* Crop to the largest centered size whose sides are multiples of `multiple` (libcyclediff does not resample). */
static void crop_to_multiple(unsigned char **pixels, int *w, int *h, int multiple) {
    int cw = *w - *w % multiple, ch = *h - *h % multiple, x0 = (*w - cw) / 2, y0 = (*h - ch) / 2;
    if (cw == *w && ch == *h) return;
    for (int y = 0; y < ch; ++y)
        memmove(*pixels + (size_t)y * cw * 3, *pixels + ((size_t)(y + y0) * *w + x0) * 3, (size_t)cw * 3);
    printf("cropped %dx%d to %dx%d (sides must be multiples of %d)\n", *w, *h, cw, ch, multiple);
    *w = cw;
    *h = ch;
}

/* Encode to a temp file beside OUTPUT, then rename it into place: never a half-written OUTPUT. */
static int write_image(const char *path, const char *format, int w, int h, const unsigned char *rgb) {
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s.tmp-%ld", path, (long)getpid());
    int ok = !strcmp(format, "png")   ? stbi_write_png(tmp, w, h, 3, rgb, w * 3)
             : !strcmp(format, "jpg") ? stbi_write_jpg(tmp, w, h, 3, rgb, 95)
                                      : stbi_write_bmp(tmp, w, h, 3, rgb);
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        fprintf(stderr, "cannot write %s\n", path);
        return 1;
    }
    return 0;
}

static int run(cyclediff_engine *engine, unsigned char *pixels, int w, int h, char **argv, const options *o) {
    cyclediff_params params = cyclediff_params_default();
    params.num_inference_steps = o->steps;
    params.strength = o->strength;
    if (o->has_seed) params.seed = o->seed;
    size_t size = (size_t)w * h * 3 * params.num_images_per_prompt;
    unsigned char *out = malloc(size);
    if (!out) return 1;
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    cyclediff_status s = cyclediff_edit(engine, pixels, w, h, (size_t)w * 3, argv[4], argv[5], &params, NULL, out, size,
                                        (size_t)w * 3);
    if (s != CYCLEDIFF_OK) {
        free(out);
        return fail("cyclediff_edit", s);
    }
    printf("edited %dx%d \"%s\" -> \"%s\": %d steps x strength %.2f, guidance %.1f, eta %.2f, seed %llu in %.2f s\n", w,
           h, argv[4], argv[5], params.num_inference_steps, params.strength, params.guidance_scale, params.eta,
           (unsigned long long)params.seed, seconds_since(&start));
    int rc = write_image(argv[3], o->format, w, h, out);
    free(out);
    if (rc == 0) printf("wrote %s\n", argv[3]);
    return rc;
}

int main(int argc, char **argv) {
    if (argc < 6 || argc > 10) return usage(argv[0]);
    options opts;
    if (parse(argc, argv, &opts)) return 2;
    cyclediff_engine_options eo = cyclediff_engine_options_default();
    eo.dtype = opts.dtype;
    cyclediff_engine *engine = NULL;
    cyclediff_status s = cyclediff_engine_create(argv[1], &eo, &engine);
    if (s != CYCLEDIFF_OK) return fail("cyclediff_engine_create", s);
    cyclediff_engine_info info;
    cyclediff_engine_get_info(engine, &info);
    printf("libcyclediff %s: export %s (executor %s, dtype %s, digest %.12s, image sides multiple of %d)\n",
           cyclediff_version(), argv[1], info.executor, info.dtype, info.digest, info.image_multiple);
    int w = 0, h = 0, channels = 0;
    unsigned char *pixels = stbi_load(argv[2], &w, &h, &channels, 3);
    if (!pixels) {
        fprintf(stderr, "cannot read image %s: %s\n", argv[2], stbi_failure_reason());
        cyclediff_engine_free(engine);
        return 1;
    }
    printf("read %s: %dx%d, %d channels\n", argv[2], w, h, channels);
    crop_to_multiple(&pixels, &w, &h, info.image_multiple);
    int rc = run(engine, pixels, w, h, argv, &opts);
    stbi_image_free(pixels);
    cyclediff_engine_free(engine);
    return rc;
}
