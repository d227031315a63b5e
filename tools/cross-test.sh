#!/usr/bin/env bash
# Cross-builds normkit for 64-bit ARM (aarch64) and 32-bit ARMv7 hard-float
# (armhf) with -Werror and runs the whole test suite under qemu-user on the
# default ISA (NEON); then again with NORMKIT_ISA=scalar but for the suites
# that select every ISA themselves (every-isa: the kernel sweep, coverage),
# and for armhf once more on an emulated ARMv7 without NEON (only
# kernels/arm may use NEON, so the rest of the library must run there), the
# kernel sweep there without its long sweeps. aarch64-nosleef builds aarch64
# with -Dsleef=disabled (NEON SiLU/GELU through the scalar activation) and
# runs the kernels suite only. Called by .ci/run; idempotent: packages
# already installed are not fetched again, existing build directories are
# reused. Usage: tools/cross-test.sh [aarch64|armhf|aarch64-nosleef]...
set -euo pipefail
cd "$(dirname "$0")/.."

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(aarch64 armhf aarch64-nosleef)

section() { printf '\n==== %s ====\n' "$*"; }

# ---------------------------------------------------------------- packages
section "cross toolchains, qemu-user and arm64/armhf libraries"
bash tools/install-deps.sh cross

# ---------------------------------------------------------------- per target
run_suite() { # build-dir label [VAR=value...] [meson test arguments...]
  local bd=$1 label=$2
  shift 2
  local envs=()
  while [ $# -gt 0 ] && [[ $1 == *=* && $1 != -* ]]; do
    envs+=("$1")
    shift
  done
  section "$label"
  env "${envs[@]}" meson test -C "$bd" --print-errorlogs --timeout-multiplier 4 "$@"
}

for t in "${targets[@]}"; do
  case "$t" in
    aarch64) triplet=aarch64-linux-gnu qemu=qemu-aarch64 bd=build-aarch64 sleef=auto ;;
    armhf) triplet=arm-linux-gnueabihf qemu=qemu-arm bd=build-armhf sleef=auto ;;
    aarch64-nosleef) triplet=aarch64-linux-gnu qemu=qemu-aarch64 bd=build-aarch64-nosleef sleef=disabled ;;
    *) echo "unknown target $t (aarch64, armhf or aarch64-nosleef)" >&2; exit 2 ;;
  esac
  wrap=("$qemu" -L "/usr/$triplet")
  opts=(-Dwerror=true -Dbench=disabled -Dtests=enabled -Dsleef=$sleef)

  section "$t: configure and build ($bd, ${opts[*]})"
  if [ -f "$bd/build.ninja" ]; then
    meson configure "$bd" "${opts[@]}"
  else
    meson setup "$bd" --cross-file "cross/$triplet.ini" "${opts[@]}"
  fi
  if [ "$sleef" = disabled ]; then
    # only what the kernels suite needs
    ninja -C "$bd" normkit-isa tests/test_kernels
    if "$triplet-nm" "$bd"/kernels/arm/libnormkit_neon*.a | grep -q Sleef_; then
      echo "error: $t NEON kernels call SLEEF although it is disabled" >&2
      exit 1
    fi
  else
    ninja -C "$bd"
  fi

  section "$t: ISAs seen under qemu"
  "${wrap[@]}" "$bd/normkit-isa" --why
  isa=$("${wrap[@]}" "$bd/normkit-isa")
  echo "default ISA: $isa"
  if [ "$isa" != neon ]; then
    echo "error: $t build picks '$isa' by default, expected neon" >&2
    exit 1
  fi

  if [ "$sleef" = disabled ]; then
    section "$t: kernels suite, default ISA (NEON without SLEEF)"
    NORMKIT_ISA= meson test -C "$bd" --no-rebuild --print-errorlogs --timeout-multiplier 4 kernels
    continue
  fi
  run_suite "$bd" "$t: whole test suite, default ISA (NEON)" NORMKIT_ISA=
  # the every-isa suites (the kernel sweep among them) select every ISA
  # themselves: the run above covered them (tests/meson.build)
  run_suite "$bd" "$t: test suite but every-isa, NORMKIT_ISA=scalar" NORMKIT_ISA=scalar \
    --no-suite every-isa
  if [ "$t" = armhf ]; then
    # qemu traps every NEON instruction on this CPU model, and AT_HWCAP
    # says no NEON: the dispatcher must pick scalar and nothing outside
    # kernels/arm may have been compiled with NEON. The kernel sweep would
    # compare the scalar tables with themselves: the rest of the suite, and
    # test_kernels without its long sweeps (every table's kernels called).
    run_suite "$bd" "$t: test suite but the kernel sweep on an ARMv7 without NEON (QEMU_CPU=cortex-a15,neon=off)" \
      NORMKIT_ISA= QEMU_CPU=cortex-a15,neon=off --no-suite kernel-sweep
    run_suite "$bd" "$t: kernels smoke (NKT_KERNELS_SMOKE=1) on an ARMv7 without NEON" \
      NORMKIT_ISA= QEMU_CPU=cortex-a15,neon=off NKT_KERNELS_SMOKE=1 kernels
  fi
done

section "cross tests passed: ${targets[*]}"
