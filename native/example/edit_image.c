/* edit_image.c: a minimal C host: load an export directory, edit an image file, write the result, say what it did. */
#include <cyclediff.h>
#include <stb/stb_image.h>
#include <stb/stb_image_write.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double seconds_since(const struct timespec *start) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - start->tv_sec) + (double)(now.tv_nsec - start->tv_nsec) * 1e-9;
}

static int usage(const char *argv0) {
    fprintf(stderr, "usage: %s EXPORT_DIR INPUT_IMAGE OUTPUT.png SOURCE_PROMPT TARGET_PROMPT [STEPS [STRENGTH [SEED]]]\n",
            argv0);
    return 2;
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

static int run(cyclediff_engine *engine, unsigned char *pixels, int w, int h, char **argv, int argc) {
    cyclediff_params params = cyclediff_params_default();
    if (argc > 6) params.num_inference_steps = atoi(argv[6]);
    if (argc > 7) params.strength = atof(argv[7]);
    if (argc > 8) params.seed = strtoull(argv[8], NULL, 10);
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
    int ok = stbi_write_png(argv[3], w, h, 3, out, w * 3);
    free(out);
    if (!ok) {
        fprintf(stderr, "cannot write %s\n", argv[3]);
        return 1;
    }
    printf("wrote %s\n", argv[3]);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 6) return usage(argv[0]);
    cyclediff_engine *engine = NULL;
    cyclediff_status s = cyclediff_engine_create(argv[1], NULL, &engine);
    if (s != CYCLEDIFF_OK) return fail("cyclediff_engine_create", s);
    cyclediff_engine_info info;
    cyclediff_engine_get_info(engine, &info);
    printf("libcyclediff %s: export %s (executor %s, digest %.12s, image sides multiple of %d)\n", cyclediff_version(),
           argv[1], info.executor, info.digest, info.image_multiple);
    int w = 0, h = 0, channels = 0;
    unsigned char *pixels = stbi_load(argv[2], &w, &h, &channels, 3);
    if (!pixels) {
        fprintf(stderr, "cannot read image %s: %s\n", argv[2], stbi_failure_reason());
        cyclediff_engine_free(engine);
        return 1;
    }
    printf("read %s: %dx%d, %d channels\n", argv[2], w, h, channels);
    crop_to_multiple(&pixels, &w, &h, info.image_multiple);
    int rc = run(engine, pixels, w, h, argv, argc);
    stbi_image_free(pixels);
    cyclediff_engine_free(engine);
    return rc;
}
