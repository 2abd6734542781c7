/* SPDX-License-Identifier: MIT */
/* Translation unit of the shared library; the code comes from sluice_core. */
#include <sluice/sluice.h>

/* The version the headers were compiled with, for a loader that wants to check. */

int sluice_version(void) { return SLUICE_VERSION_MAJOR * 100 + SLUICE_VERSION_MINOR; }
