// The public header compiles alone as C++.
#include "normkit.h"
int main()
{
    nk_options o = NK_OPTIONS_DEFAULT;
    nk_shape s = {1, 1, 1, NK_CHANNELS_LAST};
    return o.activation != NK_ACT_NONE || s.layout != NK_CHANNELS_LAST;
}
