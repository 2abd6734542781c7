/* SPDX-License-Identifier: MIT */
/* A C++ program outside the tree, built against the installed sluice.hpp through find_package(sluice). */
#include <cstdio>
#include <cstring>
#include <vector>

#include <sluice/sluice.hpp>

/* What needs no MPI job: types, typed column sizes, spans and the exception. */
int main()
{
    sluice::registry reg;
    sluice::type hits = reg.add_soa("consumer::Hits", { sluice::soa_column<float>("x"),
                                                        sluice::soa_column<double>("e") });
    std::vector<int> v{ 1, 2, 3 };
    sluice::span<const int> s = v;
    bool ok = hits.column_elem_size(0) == 4 && hits.column_elem_size(1) == 8 &&
              hits.bytes(2) == 24 && reg.find("consumer::Hits") && s.size() == 3 && s[2] == 3;
    try {
        reg.add_block<double>("consumer::Hits"); /* same name, another layout */
        ok = false;
    } catch (const sluice::error &e) {
        ok = ok && e.code() == SLUICE_ETYPE && std::strstr(e.what(), "consumer::Hits");
    }
    if (!ok) {
        std::fprintf(stderr, "installed sluice.hpp does not behave as it says\n");
        return 1;
    }
    std::printf("installed sluice.hpp %d works\n", sluice_version());
    return 0;
}
