#!/usr/bin/env bash
# Build pydl._core with AddressSanitizer + UndefinedBehaviorSanitizer into a throwaway
# venv and run the kernel tests under it.
#
#   tools/sanitize.sh                       # all tests/test_kernels_*.py
#   tools/sanitize.sh -k dense -x           # extra arguments go to pytest
#   PYDL_ASAN_VENV=/tmp/x tools/sanitize.sh # venv location (default /tmp/pydl-asan)
#   PYDL_ASAN_FRESH=1 tools/sanitize.sh     # delete and recreate the venv first
#
# CPython is not built with ASan, so the runtime is LD_PRELOADed (gcc's libasan, then
# libubsan); leak checking is off (the interpreter leaks by design). Any ASan report or
# UBSan diagnostic aborts the run with a non-zero status.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${PYDL_ASAN_VENV:-/tmp/pydl-asan}"
PYTHON="${PYTHON:-python3}"
start=$(date +%s)

if [[ "${PYDL_ASAN_FRESH:-0}" == 1 ]]; then rm -rf "$VENV"; fi
if [[ ! -x "$VENV/bin/python" ]]; then
    echo "== creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"

echo "== test and build dependencies"
"$PY" -m pip install -q numpy scipy threadpoolctl pytest hypothesis \
    "scikit-build-core>=0.10" "pybind11>=2.12"

echo "== building pydl with PYDL_SANITIZE=ON"
# Non-editable, from this checkout; the CMake build tree is kept in the venv so a rerun
# only recompiles what changed.
PYDL_SANITIZE=ON "$PY" -m pip install -q --no-build-isolation --no-deps --force-reinstall \
    -C cmake.define.PYDL_SANITIZE=ON -C build-dir="$VENV/build" "$ROOT"

ASAN_LIB="$(gcc -print-file-name=libasan.so)"
UBSAN_LIB="$(gcc -print-file-name=libubsan.so)"
for lib in "$ASAN_LIB" "$UBSAN_LIB"; do
    [[ -f "$lib" ]] || { echo "sanitize.sh: $lib not found (gcc's sanitizer runtime)" >&2; exit 2; }
done

# Run from a scratch directory so that `import pydl` is the venv's sanitized build,
# never the checkout's source tree (and no caches land in the checkout).
RUN_DIR="$VENV/run"
mkdir -p "$RUN_DIR"
cd "$RUN_DIR"
export LD_PRELOAD="$ASAN_LIB $UBSAN_LIB"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:detect_stack_use_after_return=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
export PYTHONFAULTHANDLER=1
CORE="$("$PY" -c 'import pydl._core as c; print(c.__file__)')"
case "$CORE" in
    "$VENV"/*) ;;
    *) echo "sanitize.sh: imported $CORE, not the venv's build" >&2; exit 2 ;;
esac
if ! env -u LD_PRELOAD ldd "$CORE" | grep libasan >/dev/null; then  # not -q: with pipefail, ldd may die of SIGPIPE
    echo "sanitize.sh: $CORE is not linked against libasan" >&2; exit 2
fi
echo "== running kernel tests under ASan+UBSan ($CORE)"

set +e
"$PY" -m pytest -p no:cacheprovider -q "$ROOT"/tests/test_kernels_*.py "$@"
status=$?
set -e
echo "== sanitize.sh: pytest exit status $status, wall time $(( $(date +%s) - start )) s"
exit $status
