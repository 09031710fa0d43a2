/* fast_step_kernel.h once per instruction set, for the type fast_step.c has defined `real` as (with
 * GEMM, EXP, TANH and NAME, which are undefined at the end, for the next type): the
 * baseline of the architecture always; with GCC on x86-64 (MULTIVERSION) also AVX2 + FMA and AVX-512,
 * each compiled with its instructions allowed, so that the vectoriser uses them. fast_step.c picks the
 * best copy the CPU can run when the module is imported. */
#define ISA generic
#include "fast_step_kernel.h"
#undef ISA

#ifdef MULTIVERSION
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define ISA avx2
#include "fast_step_kernel.h"
#undef ISA
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")
#define ISA avx512
#include "fast_step_kernel.h"
#undef ISA
#pragma GCC pop_options
#endif

#undef real
#undef GEMM
#undef EXP
#undef TANH
#undef NAME
