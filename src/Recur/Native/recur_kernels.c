// Optional native kernels for Recur (see Gemv.cs). Built by Directory.Build.targets when a C compiler is present;
// without it, or on CPUs without the instructions, Recur uses its managed kernels.
//
// recur_gemv_bf16: y[r] = sum_i w[r, i] * x[i] for rows r0 .. r1-1 of a row-major bf16 matrix and a bf16 vector,
// accumulated in fp32 with AVX-512 BF16 dot products (VDPBF16PS: 32 bf16 products per instruction), which
// .NET 10 does not expose. One instruction per 64 bytes of weights keeps the loop memory-bound where the managed
// loop (widen, then two FMAs) is compute-bound.
#include <cpuid.h>
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

int recur_kernels_abi(void) { return 1; }

// CPUID.(EAX=7, ECX=1):EAX bit 5 = AVX512_BF16. The caller checks AVX-512F and OS support (.NET's Avx512F.IsSupported).
int recur_has_avx512_bf16(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 1, &a, &b, &c, &d)) return 0;
    return (a >> 5) & 1;
}

static inline float bf16_to_float(uint16_t v)
{
    uint32_t u = (uint32_t)v << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

__attribute__((target("avx512f,avx512bw,avx512bf16")))
void recur_gemv_bf16(const uint16_t *w, const uint16_t *x, float *y, int64_t r0, int64_t r1, int64_t cols)
{
    for (int64_t r = r0; r < r1; r++)
    {
        const uint16_t *row = w + r * cols;
        // Four independent accumulators: the dot-product instruction's latency never stalls the stream.
        __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
        int64_t i = 0;
        for (; i + 128 <= cols; i += 128)
        {
            a0 = _mm512_dpbf16_ps(a0, (__m512bh)_mm512_loadu_si512(row + i), (__m512bh)_mm512_loadu_si512(x + i));
            a1 = _mm512_dpbf16_ps(a1, (__m512bh)_mm512_loadu_si512(row + i + 32), (__m512bh)_mm512_loadu_si512(x + i + 32));
            a2 = _mm512_dpbf16_ps(a2, (__m512bh)_mm512_loadu_si512(row + i + 64), (__m512bh)_mm512_loadu_si512(x + i + 64));
            a3 = _mm512_dpbf16_ps(a3, (__m512bh)_mm512_loadu_si512(row + i + 96), (__m512bh)_mm512_loadu_si512(x + i + 96));
        }
        for (; i + 32 <= cols; i += 32)
            a0 = _mm512_dpbf16_ps(a0, (__m512bh)_mm512_loadu_si512(row + i), (__m512bh)_mm512_loadu_si512(x + i));
        float s = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
        for (; i < cols; i++) s += bf16_to_float(row[i]) * bf16_to_float(x[i]);
        y[r] = s;
    }
}
