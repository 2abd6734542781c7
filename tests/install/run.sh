#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Install the build into a scratch prefix, then build and run an outside
# program against it twice: through find_package(sluice) and through pkg-config;
# and a C++ one through find_package(sluice), using sluice.hpp.
set -euo pipefail
build="$1"; src="$2"; work="$3"
rm -rf "$work"
cmake --install "$build" --prefix "$work/prefix" >/dev/null
cmake -S "$src" -B "$work/consumer" -DCMAKE_PREFIX_PATH="$work/prefix" >/dev/null
cmake --build "$work/consumer" >/dev/null
libdir=$(dirname "$(find "$work/prefix" -name 'libsluice.so' | head -1)")
LD_LIBRARY_PATH="$libdir" "$work/consumer/consumer"
LD_LIBRARY_PATH="$libdir" "$work/consumer/consumer_cxx"
PKG_CONFIG_PATH="$libdir/pkgconfig" cc -o "$work/consumer-pc" "$src/consumer.c" \
    $(PKG_CONFIG_PATH="$libdir/pkgconfig" pkg-config --cflags --libs sluice)
LD_LIBRARY_PATH="$libdir" "$work/consumer-pc"
