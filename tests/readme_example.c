/* The README's API tour, compiled and run as a test: keep the two in sync. */
#include <stdio.h>
#include <normkit.h>

int main(void)
{
    /* BatchNorm2d training step on a 2x3x2x2 NCHW tensor, PyTorch conventions */
    float x[24], y[24], weight[3] = {1, 1, 1}, bias[3] = {0, 0, 0};
    float running_mean[3] = {0, 0, 0}, running_var[3] = {1, 1, 1};
    for (int i = 0; i < 24; i++)
        x[i] = (float)(i % 7);
    nk_shape shape = {.n = 2, .c = 3, .spatial = 2 * 2, .layout = NK_CHANNELS_FIRST};
    nk_running_stats rs = {.mean = running_mean, .var = running_var, .momentum = 0.1,
                           .unbiased = 1};
    nk_options relu = {NK_ACT_RELU, 0.0f};
    nk_status st = nk_batch_norm_train(x, &shape, weight, bias, 1e-5, &rs, y, NULL, NULL, &relu);
    if (st != NK_OK) {
        fprintf(stderr, "%s: %s\n", nk_status_string(st), nk_last_error());
        return 1;
    }

    /* The same layer as MindSpore defines it: momentum 0.9 means PyTorch's 0.1 */
    nk_module *m;
    nk_module_config cfg;
    nk_module_config_init(&cfg);            /* every field NK_DEFAULT = framework default */
    cfg.momentum = 0.9;
    nk_module_create(NK_FW_MINDSPORE, NK_LAYER_BATCH_NORM, 2, 3, &cfg, &m);
    nk_module_set_training(m, 1);           /* MindSpore cells start in inference */
    const int64_t dims[] = {2, 3, 2, 2};
    nk_module_forward(m, x, 4, dims, y);
    printf("running_mean[0] = %g, kernels: %s\n", nk_module_running_mean(m)[0],
           nk_isa_name(nk_get_isa()));
    nk_module_destroy(m);
    return 0;
}
