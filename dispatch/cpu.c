/*
 * CPU feature detection. x86: CPUID says what the core implements, XGETBV
 * whether the OS saves the wider register state; both are needed. ARM:
 * AArch64 has NEON as baseline; 32-bit ARM asks the kernel (AT_HWCAP).
 * Compiled without any -m flag: nothing here may use the instructions it probes.
 */
#include "dispatch/cpu.h"

#if defined(__x86_64__) || defined(__i386__)
#  include <cpuid.h>
#  include <stdint.h>

static uint64_t xgetbv0(void)
{
    uint32_t lo, hi;
    __asm__ volatile(".byte 0x0f, 0x01, 0xd0" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

void nk_cpu_detect(nk_cpu_info *info)
{
    unsigned a, b, c, d;
    info->avx2 = info->avx512 = info->avx512bf16 = info->neon = info->neon_fp16 = 0;
    info->neon_reason = "not an ARM CPU";
    info->avx2_reason = "AVX2, FMA or F16C not supported by the CPU";
    info->avx512_reason = "AVX-512 F/BW/DQ/VL not supported by the CPU";
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return;
    int fma = (c >> 12) & 1, osxsave = (c >> 27) & 1, avx = (c >> 28) & 1;
    /* F16C: the fp16 conversions of the AVX2 kernels (every AVX2 CPU has it) */
    int f16c = (c >> 29) & 1;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d))
        return;
    const unsigned max_sub7 = a;
    int avx2 = (b >> 5) & 1;
    int f = (b >> 16) & 1, dq = (b >> 17) & 1, bw = (b >> 30) & 1, vl = (b >> 31) & 1;
    uint64_t xcr0 = osxsave ? xgetbv0() : 0;
    int os_ymm = (xcr0 & 0x6) == 0x6;
    int os_zmm = os_ymm && (xcr0 & 0xe0) == 0xe0;

    if (avx && avx2 && fma && f16c) {
        if (os_ymm) {
            info->avx2 = 1;
            info->avx2_reason = "AVX2, FMA and F16C supported by the CPU and the OS";
        } else {
            info->avx2_reason = "AVX2 supported by the CPU, but not the OS";
        }
    }
    if (f && dq && bw && vl) {
        if (!info->avx2) {
            info->avx512_reason = "AVX-512 supported by the CPU, but AVX2 is not usable";
        } else if (os_zmm) {
            info->avx512 = 1;
            info->avx512_reason = "AVX-512 F/BW/DQ/VL supported by the CPU and the OS";
            /* AVX512-BF16: leaf 7 subleaf 1, EAX bit 5 (same OS state as AVX-512) */
            if (max_sub7 >= 1 && __get_cpuid_count(7, 1, &a, &b, &c, &d))
                info->avx512bf16 = (a >> 5) & 1;
        } else {
            info->avx512_reason = "AVX-512 supported by the CPU, but not the OS";
        }
    }
}

#elif defined(__aarch64__)

void nk_cpu_detect(nk_cpu_info *info)
{
    info->avx2 = info->avx512 = info->avx512bf16 = 0;
    info->avx2_reason = info->avx512_reason = "not an x86 CPU";
    info->neon = 1;
    info->neon_fp16 = 1; /* fcvtl / fcvtn are baseline */
    info->neon_reason = "NEON (Advanced SIMD) is baseline on AArch64";
}

#elif defined(__arm__) && defined(__linux__)
#  include <sys/auxv.h>
#  ifndef HWCAP_NEON
#    define HWCAP_NEON (1 << 12)
#  endif
#  ifndef HWCAP_VFPv4
#    define HWCAP_VFPv4 (1 << 16)
#  endif

void nk_cpu_detect(nk_cpu_info *info)
{
    info->avx2 = info->avx512 = info->avx512bf16 = 0;
    info->avx2_reason = info->avx512_reason = "not an x86 CPU";
    const unsigned long hw = getauxval(AT_HWCAP);
    info->neon = (hw & HWCAP_NEON) != 0;
    /* the NEON fp16 conversions (vcvt.f32.f16, -mfpu=neon-fp16) are the
     * half-precision extension, part of VFPv4; Linux has no HWCAP bit of
     * their own (HWCAP_HALF is halfword loads), so VFPv4 is asked: a core
     * with the extension but VFPv3 only runs fp16 on the scalar table */
    info->neon_fp16 = info->neon && (hw & HWCAP_VFPv4) != 0;
    info->neon_reason = info->neon ? "NEON reported by the kernel (AT_HWCAP)"
                                   : "NEON not reported by the kernel (AT_HWCAP)";
}

#else

void nk_cpu_detect(nk_cpu_info *info)
{
    info->avx2 = info->avx512 = info->avx512bf16 = info->neon = info->neon_fp16 = 0;
    info->avx2_reason = info->avx512_reason = info->neon_reason =
        "no feature detection for this CPU";
}

#endif
