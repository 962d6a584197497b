#!/usr/bin/env bash
# The differential fuzz corpus (scripts/decode_fuzz.py) against an AddressSanitizer +
# UndefinedBehaviorSanitizer build of the native OTLP reader, then the OTLP/JSON corpus
# (decode_fuzz.py --json) against the same build of the JSON transcoder and that reader.
#
#   scripts/decode_asan.sh [REQUESTS [DOCUMENTS]]   (defaults 20000 and REQUESTS/2; CI runs
#                                                    1500 and 750, ~25 s; run 100000 before
#                                                    changing _otlp.c or _otlp_json.c)
#
# The sanitized module is compiled into a copy of the package that shadows the installed
# one; Python allocates with malloc (PYTHONMALLOC=malloc) so every request body gets
# exact ASan bounds. Without a compiler or libasan it says so and exits 0.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
CC="${CC:-cc}"
REQUESTS="${1:-20000}"
DOCUMENTS="${2:-$((REQUESTS / 2))}"
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
for module in _otlp _otlp_json; do
  "$CC" -shared -fPIC -std=c11 -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
    -fno-sanitize-recover=all -DOTEL_AI_EXACT_INPUT -I"$include" "otel_ai/decode/$module.c" \
    -o "$tmp/otel_ai/decode/$module$suffix"
  echo "decode_asan: built $tmp/otel_ai/decode/$module$suffix with -fsanitize=address,undefined"
done
fuzz() {
  PYTHONPATH="$tmp" PYTHONMALLOC=malloc LD_PRELOAD="$libasan" \
    ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1" UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1" \
    "$PY" scripts/decode_fuzz.py --expect-module-under "$tmp" "$@"
}
fuzz --requests "$REQUESTS"
fuzz --json --requests "$DOCUMENTS"
