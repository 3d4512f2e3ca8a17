#!/usr/bin/env bash
# Builds spool in release mode and puts it on the PATH:
#
#     scripts/install.sh [PREFIX]      # default: /usr/local as root, else ~/.local
#
# Installs PREFIX/bin/spool (one file; the dashboard and the OpenAPI document are inside it).
# At run time it needs the Swift runtime libraries of the toolchain that built it; for a binary
# that needs none, see scripts/build-static.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" = 0 ]; then prefix=${1:-/usr/local}; else prefix=${1:-$HOME/.local}; fi
swift build -c release --product spool
install -d "$prefix/bin"
install -m 0755 .build/release/spool "$prefix/bin/spool"
echo "installed $prefix/bin/spool ($("$prefix/bin/spool" --version))"
case ":$PATH:" in
  *":$prefix/bin:"*) ;;
  *) echo "note: $prefix/bin is not on your PATH; add it, e.g. export PATH=\"$prefix/bin:\$PATH\"" ;;
esac
