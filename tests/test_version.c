/*
 * Version: the library reports the version of the generated header it was
 * built with, and the header's macros agree with one another.
 */
#include <stdio.h>
#include <string.h>

#include "nk_test.h"

static void version_string(void **state)
{
    (void)state;
    assert_string_equal(nk_version(), NK_VERSION_STRING);
}

static void version_number(void **state)
{
    (void)state;
    assert_int_equal(nk_version_number(), NK_VERSION_NUMBER);
}

static void macros_agree(void **state)
{
    (void)state;
    char s[64];
    snprintf(s, sizeof s, "%d.%d.%d", NK_VERSION_MAJOR, NK_VERSION_MINOR, NK_VERSION_PATCH);
    assert_string_equal(s, NK_VERSION_STRING);
    assert_int_equal(NK_VERSION_NUMBER,
                     NK_VERSION_MAJOR * 10000 + NK_VERSION_MINOR * 100 + NK_VERSION_PATCH);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(version_string),
        cmocka_unit_test(version_number),
        cmocka_unit_test(macros_agree),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
