#!/usr/bin/env bash
# Builds a spool binary for machines without a Swift toolchain:
#
#     scripts/build-static.sh [OUT]    # default: dist/spool
#
# The Swift standard library and Foundation are linked in (--static-swift-stdlib), so the binary
# needs only what a Linux server already has: glibc (this build machine's version or newer),
# libstdc++, zlib and libsqlite3 (Debian/Ubuntu: libstdc++6, zlib1g, libsqlite3-0) and, for jobs
# or workers written in Python, python3. It prints what it links to at the end.
# Copy the one file to the GPU machine and run `spool serve`; nothing else is needed.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-dist/spool}
swift build -c release --product spool --static-swift-stdlib
install -d "$(dirname "$out")"
install -m 0755 .build/release/spool "$out"
echo "built $out ($("$out" --version)); it links dynamically only to:"
ldd "$out" | awk '{print "  " $1}' | grep -v -e linux-vdso -e ld-linux
