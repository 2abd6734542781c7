/* SPDX-License-Identifier: MIT */
/*
 * Preloaded into ranks of the ASan build only: Open MPI unloads its
 * components with dlclose() before LeakSanitizer reports, which leaves their
 * allocations with "<unknown module>" frames that no suppression can match.
 * Keeping every library mapped lets the suppressions by library name work.
 */
int dlclose(void *handle);
int dlclose(void *handle)
{
    (void)handle;
    return 0;
}
