/* Which instruction paths this CPU (and its OS) can run, from cpuid and xgetbv, and which this build has. */
#define _GNU_SOURCE 1 /* syscall() under -std=c11 */
#include "maxsim_cpu.h"

#ifdef MAXSIM_X86
#include <cpuid.h>
#ifdef __linux__
#include <sys/syscall.h>
#include <unistd.h>
#endif
#endif

const char *const path_names[N_PATHS] = {"portable", "avx2", "avxvnni", "avx512", "avx512vnni", "avx512bf16",
                                         "amx"};
const char *const feature_names[16] = {"AVX2",        "FMA",         "F16C",       "AVX-VNNI",
                                       "AVX512F",     "AVX512BW",    "AVX512VL",   "AVX512DQ",
                                       "AVX512_VNNI", "AVX512_BF16", "AMX-TILE",   "AMX-INT8",
                                       "AMX-BF16",    "OS AVX state", "OS AVX-512 state",
                                       "OS AMX tile permission"};

#ifdef MAXSIM_X86
static uint64_t xgetbv0(void) {
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

static unsigned detect(void) {
    unsigned a, b, c, d, f = 0;
    if (__get_cpuid_max(0, NULL) < 7) return 0;
    __cpuid(1, a, b, c, d);
    const int osxsave = (c >> 27) & 1;
    if ((c >> 12) & 1) f |= F_FMA;
    if ((c >> 29) & 1) f |= F_F16C;
    if (osxsave) {
        const uint64_t xcr0 = xgetbv0();
        if ((xcr0 & 0x6) == 0x6) f |= F_OS_YMM;           /* XMM | YMM state */
        if ((xcr0 & 0xe6) == 0xe6) f |= F_OS_ZMM;         /* + opmask, ZMM_Hi256, Hi16_ZMM */
        if ((xcr0 & 0x60000) == 0x60000) f |= F_OS_AMX;   /* XTILECFG | XTILEDATA */
    }
    __cpuid_count(7, 0, a, b, c, d);
    const unsigned max7 = a;
    if ((b >> 5) & 1) f |= F_AVX2;
    if ((b >> 16) & 1) f |= F_AVX512F;
    if ((b >> 17) & 1) f |= F_AVX512DQ;
    if ((b >> 30) & 1) f |= F_AVX512BW;
    if ((b >> 31) & 1) f |= F_AVX512VL;
    if ((c >> 11) & 1) f |= F_AVX512VNNI;
    if ((d >> 22) & 1) f |= F_AMX_BF16;
    if ((d >> 24) & 1) f |= F_AMX_TILE;
    if ((d >> 25) & 1) f |= F_AMX_INT8;
    if (max7 >= 1) {
        __cpuid_count(7, 1, a, b, c, d);
        if ((a >> 4) & 1) f |= F_AVXVNNI;
        if ((a >> 5) & 1) f |= F_AVX512BF16;
    }
#ifdef __linux__
    /* Linux hands out the AMX tile state only on request (ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA). */
    if ((f & F_OS_AMX) && (f & F_AMX_TILE) && syscall(SYS_arch_prctl, 0x1023, 18) != 0) f &= ~(unsigned)F_OS_AMX;
#else
    f &= ~(unsigned)F_OS_AMX; /* no known way to ask for the tile state: never use AMX */
#endif
    return f;
}
#endif

static int g_detected = 0;
static unsigned g_features = 0;

unsigned cpu_features(void) {
    if (!__atomic_load_n(&g_detected, __ATOMIC_ACQUIRE)) {
#ifdef MAXSIM_X86
        g_features = detect();
#endif
        __atomic_store_n(&g_detected, 1, __ATOMIC_RELEASE);
    }
    return g_features;
}

unsigned path_needs(int path) {
    const unsigned avx2 = F_AVX2 | F_FMA | F_F16C | F_OS_YMM;
    const unsigned avx512 = avx2 | F_AVX512F | F_AVX512BW | F_AVX512VL | F_AVX512DQ | F_OS_ZMM;
    switch (path) {
    case P_AVX2: return avx2;
    case P_AVXVNNI: return avx2 | F_AVXVNNI;
    case P_AVX512: return avx512;
    case P_AVX512VNNI: return avx512 | F_AVX512VNNI;
    case P_AVX512BF16: return avx512 | F_AVX512VNNI | F_AVX512BF16;
    case P_AMX: return avx512 | F_AVX512VNNI | F_AVX512BF16 | F_AMX_TILE | F_AMX_INT8 | F_AMX_BF16 | F_OS_AMX;
    default: return 0;
    }
}

int path_built(int path) {
#ifdef MAXSIM_SIMD
    return path >= 0 && path < N_PATHS;
#else
    return path == P_PORTABLE;
#endif
}

unsigned path_missing(int path) {
    const unsigned os = F_OS_YMM | F_OS_ZMM | F_OS_AMX, missing = path_needs(path) & ~cpu_features();
    /* The OS state matters only where the CPU has the instructions: name what the CPU lacks first. */
    return (missing & ~os) ? (missing & ~os) : missing;
}

int path_ok(int path) {
    const unsigned need = path_needs(path);
    return path_built(path) && (cpu_features() & need) == need;
}
