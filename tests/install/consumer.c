/* SPDX-License-Identifier: MIT */
/* A program outside the tree, built against the installed headers and library. */
#include <stdio.h>
#include <string.h>

#include <sluice/sluice.h>

int main(void)
{
    sluice_options_t o;
    sluice_options_init(&o);
    if (sluice_version() != SLUICE_VERSION_MAJOR * 100 + SLUICE_VERSION_MINOR ||
        sluice_options_validate(&o) != SLUICE_OK ||
        strcmp(sluice_strerror(SLUICE_ETYPE), "type mismatch between sender and receiver") != 0) {
        fprintf(stderr, "installed sluice does not behave as its headers say\n");
        return 1;
    }
    printf("installed sluice %d works\n", sluice_version());
    return 0;
}
