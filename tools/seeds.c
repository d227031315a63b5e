/*
 * normkit-seeds: runs the examples of the seed documents through the module
 * API of the framework that printed them, and prints the same arrays.
 */
#include <stdio.h>

#include "normkit.h"

static void print(const char *title, const float *y, int n)
{
    printf("%s\n ", title);
    for (int i = 0; i < n; i++)
        printf(" % .8e", (double)y[i]);
    printf("\n");
}

static int run(nk_framework fw, nk_layer layer, int rank, int64_t feat, const nk_module_config *cfg,
               int train, const float *x, int ndim, const int64_t *dims, float *y, int n,
               const char *title)
{
    nk_module *m;
    nk_status st = nk_module_create(fw, layer, rank, feat, cfg, &m);
    if (st == NK_OK && train)
        st = nk_module_set_training(m, 1);
    if (st == NK_OK)
        st = nk_module_forward(m, x, ndim, dims, y);
    if (st != NK_OK) {
        fprintf(stderr, "%s: %s: %s\n", title, nk_status_string(st), nk_last_error());
        return 1;
    }
    print(title, y, n);
    if (nk_module_running_mean(m)) {
        print("  running_mean", nk_module_running_mean(m), (int)feat);
        print("  running_var ", nk_module_running_var(m), (int)feat);
    }
    nk_module_destroy(m);
    return 0;
}

int main(void)
{
    int err = 0;
    float y[8];
    nk_module_config cfg;
    printf("normkit %s, kernels: %s\n\n", nk_version(), nk_isa_name(nk_get_isa()));

    static const float in1[] = {0.7f, 0.5f, 0.5f, 0.6f, 0.5f, 0.4f, 0.6f, 0.9f};
    const int64_t d1[] = {1, 2, 4};
    err |= run(NK_FW_PYTORCH, NK_LAYER_INSTANCE_NORM, 1, 2, NULL, 0, in1, 3, d1, y, 8,
               "PyTorch InstanceNorm1d(2)");
    nk_module_config_init(&cfg);
    cfg.affine = 0;
    err |= run(NK_FW_MINDSPORE, NK_LAYER_INSTANCE_NORM, 1, 2, &cfg, 1, in1, 3, d1, y, 8,
               "MindSpore InstanceNorm1d(2, affine=False), set_train()");

    static const float in3[] = {0.1f, 0.2f, 0.3f, 0.4f, 0.9f, 1.0f, 1.1f, 1.2f};
    const int64_t d3[] = {1, 2, 1, 2, 2};
    err |= run(NK_FW_PYTORCH, NK_LAYER_INSTANCE_NORM, 3, 3, NULL, 0, in3, 5, d3, y, 8,
               "PyTorch InstanceNorm3d(3) on a 2-channel input");
    err |= run(NK_FW_MINDSPORE, NK_LAYER_INSTANCE_NORM, 3, 2, &cfg, 1, in3, 5, d3, y, 8,
               "MindSpore InstanceNorm3d(2, affine=False), set_train()");

    const int64_t db[] = {2, 4};
    nk_module_config_init(&cfg);
    cfg.affine = 0;
    cfg.momentum = 0.1;
    err |= run(NK_FW_PYTORCH, NK_LAYER_BATCH_NORM, 1, 4, &cfg, 0, in1, 2, db, y, 8,
               "PyTorch BatchNorm1d(4, affine=False, momentum=0.1)");
    cfg.momentum = 0.9;
    err |= run(NK_FW_MINDSPORE, NK_LAYER_BATCH_NORM, 1, 4, &cfg, 1, in1, 2, db, y, 8,
               "MindSpore BatchNorm1d(4, affine=False, momentum=0.9), set_train()");

    nk_module *m;
    if (nk_module_create(NK_FW_MEGENGINE, NK_LAYER_INSTANCE_NORM, 2, 64, NULL, &m) == NK_OK) {
        const int64_t d4[] = {32, 64, 32, 32}, d3b[] = {32, 64, 1024};
        nk_status st = nk_module_forward(m, NULL, 3, d3b, NULL);
        printf("MegEngine InstanceNorm(64) on (32, 64, 1024): %s (%s)\n", nk_status_string(st),
               nk_last_error());
        (void)d4;
        nk_module_destroy(m);
    }
    return err;
}
