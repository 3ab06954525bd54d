/* edit_timing.c: the C++ host's row of benchmarks/memory.py: one process loads an export, edits an image three
 * ways and prints one JSON line: load_s, seconds (first edit: encode + decode, compiles included), warm_s (the
 * same edit again), repeat_s (a decode of a cached latent code), peak_rss (bytes, ru_maxrss) and whether libtorch
 * is mapped into the process. The first edit's picture goes to OUTPUT.png.
 *
 *   cyclediff_edit_timing EXPORT INPUT OUTPUT.png SOURCE TARGET STEPS STRENGTH SEED EXECUTOR DTYPE */
#include <cyclediff.h>
#include <stb/stb_image.h>
#include <stb/stb_image_write.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int fail(const char *what, cyclediff_status status) {
    fprintf(stderr, "%s failed: %s: %s\n", what, cyclediff_status_name(status), cyclediff_last_error());
    return 1;
}

static int libtorch_mapped(void) {  /* /proc/self/maps names libtorch_cpu.so once libtorch is loaded */
    FILE *maps = fopen("/proc/self/maps", "r");
    char line[4096];
    int found = 0;
    while (maps && !found && fgets(line, sizeof line, maps)) found = strstr(line, "libtorch") != NULL;
    if (maps) fclose(maps);
    return found;
}

typedef struct {
    cyclediff_engine *engine;
    const unsigned char *rgb;
    int w, h;
    const char *source, *target;
    cyclediff_params params;
    unsigned char *out;
    size_t out_size;
} job;

static cyclediff_status edit(const job *j) {
    return cyclediff_edit(j->engine, j->rgb, j->w, j->h, (size_t)j->w * 3, j->source, j->target, &j->params, NULL,
                          j->out, j->out_size, (size_t)j->w * 3);
}

static cyclediff_status repeat(const job *j, double *seconds) {  /* untimed encode, timed decode */
    cyclediff_code *code = NULL;
    cyclediff_status s = cyclediff_encode(j->engine, j->rgb, j->w, j->h, (size_t)j->w * 3, j->source, &j->params,
                                          NULL, &code);
    if (s != CYCLEDIFF_OK) return s;
    double t0 = now();
    s = cyclediff_decode(j->engine, code, j->target, &j->params, j->out, j->out_size, (size_t)j->w * 3);
    *seconds = now() - t0;
    cyclediff_code_free(code);
    return s;
}

int main(int argc, char **argv) {
    if (argc != 11) {
        fprintf(stderr, "usage: %s EXPORT INPUT OUTPUT.png SOURCE TARGET STEPS STRENGTH SEED EXECUTOR DTYPE\n", argv[0]);
        return 2;
    }
    cyclediff_engine_options o = cyclediff_engine_options_default();
    o.executor = argv[9];
    o.dtype = argv[10];
    job j = {0};
    j.params = cyclediff_params_default();
    j.params.num_inference_steps = atoi(argv[6]);
    j.params.strength = atof(argv[7]);
    j.params.seed = strtoull(argv[8], NULL, 10);
    j.source = argv[4];
    j.target = argv[5];
    int channels = 0;
    unsigned char *rgb = stbi_load(argv[2], &j.w, &j.h, &channels, 3);
    if (!rgb) return fprintf(stderr, "cannot read %s: %s\n", argv[2], stbi_failure_reason()), 1;
    j.rgb = rgb;
    j.out_size = (size_t)j.w * j.h * 3;
    j.out = malloc(j.out_size);
    double t0 = now();
    cyclediff_status s = cyclediff_engine_create(argv[1], &o, &j.engine);
    if (s != CYCLEDIFF_OK) return fail("cyclediff_engine_create", s);
    double load_s = now() - t0, first_s, warm_s, repeat_s = 0;
    t0 = now();
    if ((s = edit(&j)) != CYCLEDIFF_OK) return fail("cyclediff_edit", s);
    first_s = now() - t0;
    if (!stbi_write_png(argv[3], j.w, j.h, 3, j.out, j.w * 3)) return fprintf(stderr, "cannot write %s\n", argv[3]), 1;
    t0 = now();
    if ((s = edit(&j)) != CYCLEDIFF_OK) return fail("cyclediff_edit", s);
    warm_s = now() - t0;
    if ((s = repeat(&j, &repeat_s)) != CYCLEDIFF_OK) return fail("cyclediff_decode", s);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    cyclediff_engine_info info;
    cyclediff_engine_get_info(j.engine, &info);
    printf("{\"executor\": \"%s\", \"dtype\": \"%s\", \"load_s\": %.3f, \"seconds\": %.3f, \"warm_s\": %.3f, "
           "\"repeat_s\": %.3f, \"peak_rss\": %ld, \"libtorch_loaded\": %s}\n",
           info.executor, info.dtype, load_s, first_s, warm_s, repeat_s, ru.ru_maxrss * 1024L,
           libtorch_mapped() ? "true" : "false");
    cyclediff_engine_free(j.engine);
    stbi_image_free(rgb);
    free(j.out);
    return 0;
}
