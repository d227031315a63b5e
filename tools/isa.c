/* normkit-isa: prints the ISA in use, or with --supported every ISA this
 * CPU and build can run (one per line), or with --why the reasons. */
#include <stdio.h>
#include <string.h>

#include "normkit.h"

int main(int argc, char **argv)
{
    const nk_isa all[] = {NK_ISA_SCALAR, NK_ISA_AVX2, NK_ISA_AVX512, NK_ISA_NEON};
    if (argc > 1 && !strcmp(argv[1], "--supported")) {
        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
            if (nk_isa_supported(all[i]))
                printf("%s\n", nk_isa_name(all[i]));
        return 0;
    }
    if (argc > 1 && !strcmp(argv[1], "--why")) {
        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
            printf("%-7s %s: %s\n", nk_isa_name(all[i]), nk_isa_supported(all[i]) ? "yes" : "no ",
                   nk_isa_reason(all[i]));
        return 0;
    }
    printf("%s\n", nk_isa_name(nk_get_isa()));
    return 0;
}
