#ifndef NK_DISPATCH_CPU_H
#define NK_DISPATCH_CPU_H

typedef struct nk_cpu_info {
    int avx2;   /* AVX2 + FMA + OS saves YMM */
    int avx512; /* AVX-512 F/BW/DQ/VL + OS saves ZMM/opmask */
    int avx512bf16; /* AVX512-BF16 (vcvtneps2bf16) on top of avx512 */
    int neon;
    int neon_fp16; /* NEON fp16 conversions: baseline on AArch64, VFPv4 (HWCAP) on ARMv7 */
    const char *avx2_reason;
    const char *avx512_reason;
    const char *neon_reason;
} nk_cpu_info;

void nk_cpu_detect(nk_cpu_info *info);

#endif
