#!/usr/bin/env bash
# Compile-check (no link, no run) every CUDA source against the active venv's torch headers.
# Works with the CPU-only torch wheel: the two headers that only CUDA builds generate are stubbed in
# .ci/cuda_stubs, which goes *last* on the include path so a CUDA torch's real headers always win.
# Run from anywhere inside a checkout, with the project's venv active:  bash .ci/check_cu.sh [files...]
# Env: MAX_JOBS (parallel nvcc, default 2), FASTGAN_CU_ARCH (default sm_90), NVCC (default: nvcc on PATH,
# else $CUDA_HOME/bin/nvcc, else /usr/local/cuda/bin/nvcc), FASTGAN_CU_FLAGS (extra nvcc flags).
set -euo pipefail
cd "$(dirname "$0")/.."

ARCH="${FASTGAN_CU_ARCH:-sm_90}"
JOBS="${MAX_JOBS:-2}"
NVCC="${NVCC:-}"
if [ -z "$NVCC" ]; then
  if command -v nvcc >/dev/null 2>&1; then NVCC=nvcc
  elif [ -n "${CUDA_HOME:-}" ] && [ -x "$CUDA_HOME/bin/nvcc" ]; then NVCC="$CUDA_HOME/bin/nvcc"
  elif [ -x /usr/local/cuda/bin/nvcc ]; then NVCC=/usr/local/cuda/bin/nvcc
  else echo "check_cu: nvcc not found (set NVCC or CUDA_HOME)" >&2; exit 2
  fi
fi
PY="${PYTHON:-python}"

# Files: the arguments, else tracked + untracked-but-not-ignored .cu files, else whatever find sees.
if [ "$#" -gt 0 ]; then
  CU=("$@")
else
  mapfile -t CU < <(git ls-files --cached --others --exclude-standard -- '*.cu' 2>/dev/null | sort -u)
  if [ "${#CU[@]}" -eq 0 ]; then mapfile -t CU < <(find csrc -name '*.cu' 2>/dev/null | sort); fi
fi
if [ "${#CU[@]}" -eq 0 ]; then echo "check_cu: no .cu files"; exit 0; fi

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
{
  printf '%s\n' -std=c++20 -O3 -lineinfo -Xcompiler -fPIC --expt-relaxed-constexpr "-arch=$ARCH" \
    -D__CUDA_NO_HALF_OPERATORS__ -D__CUDA_NO_HALF_CONVERSIONS__ -D__CUDA_NO_BFLOAT16_CONVERSIONS__ \
    -D__CUDA_NO_HALF2_OPERATORS__ -DTORCH_API_INCLUDE_EXTENSION_H -DTORCH_EXTENSION_NAME=_C -DFASTGAN_WITH_CUDA=1 \
    -I csrc
  if [ -n "${FASTGAN_CU_FLAGS:-}" ]; then
    # shellcheck disable=SC2086
    printf '%s\n' ${FASTGAN_CU_FLAGS}
  fi
  "$PY" -c 'import sysconfig, torch.utils.cpp_extension as ce
for p in ce.include_paths() + [sysconfig.get_paths()["include"]]: print("-isystem", p)'
  echo "-isystem .ci/cuda_stubs"
} > "$out/flags"

echo "check_cu: $("$NVCC" --version | tail -n 1); torch $("$PY" -c 'import torch; print(torch.__version__)');" \
  "arch $ARCH; ${#CU[@]} file(s), $JOBS in parallel"
export out NVCC
t_all=$SECONDS
# Each job prints its own compiler output in one piece after it finishes, so parallel logs do not interleave.
rc=0
printf '%s\0' "${CU[@]}" | xargs -0 -P "$JOBS" -n 1 bash -c '
  f="$1"; o="$out/$(printf %s "$f" | tr / _).o"; log="$o.log"; t0=$(date +%s.%N)
  if "$NVCC" -c --options-file "$out/flags" "$f" -o "$o" >"$log" 2>&1; then st=OK; r=0; else st=FAIL; r=1; fi
  dt=$(awk -v a="$t0" -v b="$(date +%s.%N)" "BEGIN{printf \"%.1f\", b-a}")
  cat "$log"; echo "nvcc $st $f (${dt} s)"; exit $r' _ || rc=$?
echo "check_cu: $((SECONDS - t_all)) s total"
if [ "$rc" -ne 0 ]; then echo "check_cu: FAILED" >&2; exit 1; fi
