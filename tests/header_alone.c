/* The public header compiles alone, with nothing included before it. */
#include "normkit.h"
int main(void)
{
    nk_shape s = {1, 1, 1, NK_CHANNELS_FIRST};
    nk_options o = NK_OPTIONS_DEFAULT;
    return (int)s.n - 1 + (int)o.activation;
}
