#!/bin/sh
# Removes what the runtime does not load from a production node_modules (argument: its path):
# better-sqlite3's C sources, the bundled SQLite amalgamation and the compiler's intermediate
# files (about 26 MB of its 28 MB). Only build/Release/better_sqlite3.node is loaded (through
# `bindings`). Used by the Dockerfile's build stage and by test/deploy/container.test.ts, which
# starts a server on the result.
set -eu
m="$1/better-sqlite3"
[ -f "$m/build/Release/better_sqlite3.node" ] || { echo "trim-modules.sh: $m/build/Release/better_sqlite3.node missing" >&2; exit 1; }
keep=$(mktemp)
cp "$m/build/Release/better_sqlite3.node" "$keep"
rm -rf "$m/build" "$m/deps" "$m/src"
mkdir -p "$m/build/Release"
mv "$keep" "$m/build/Release/better_sqlite3.node"
chmod 0755 "$m/build/Release/better_sqlite3.node"
