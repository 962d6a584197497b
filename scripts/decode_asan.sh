#!/usr/bin/env bash
# The differential fuzz corpus (scripts/decode_fuzz.py) against an AddressSanitizer +
# UndefinedBehaviorSanitizer build of the native OTLP reader.
#
#   scripts/decode_asan.sh [REQUESTS]      (default 20000; CI runs 1500, ~30 s; run 100000 before
#                                           changing _otlp.c, ~30 min on 2 cores)
#
# The sanitized module is compiled into a copy of the package that shadows the installed
# one; Python allocates with malloc (PYTHONMALLOC=malloc) so every request body gets
# exact ASan bounds. Without a compiler or libasan it says so and exits 0.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
CC="${CC:-cc}"
REQUESTS="${1:-20000}"
libasan="$("$CC" -print-file-name=libasan.so 2>/dev/null || true)"
if [ -z "$libasan" ] || [ ! -e "$libasan" ]; then
  echo "decode_asan: no libasan for $CC; sanitizer run skipped"
  exit 0
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cp -r otel_ai "$tmp/"
find "$tmp/otel_ai" -name '*.so' -delete
include="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
suffix="$("$PY" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')"
"$CC" -shared -fPIC -std=c11 -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
  -fno-sanitize-recover=all -I"$include" otel_ai/decode/_otlp.c -o "$tmp/otel_ai/decode/_otlp$suffix"
echo "decode_asan: built $tmp/otel_ai/decode/_otlp$suffix with -fsanitize=address,undefined"
PYTHONPATH="$tmp" PYTHONMALLOC=malloc LD_PRELOAD="$libasan" \
  ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1" UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1" \
  "$PY" scripts/decode_fuzz.py --requests "$REQUESTS" --expect-module-under "$tmp"
