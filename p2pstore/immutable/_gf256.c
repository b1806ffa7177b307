/*
 * Erasure coding's check blocks with SIMD table lookups (docs/file-format.md,
 * "Erasure coding kernel").
 *
 * One operation: dst[j] = sum over i of coeffs[j*k + i] * src[i], byte by byte, in
 * GF(2^8) with the polynomial x^8 + x^4 + x^3 + x^2 + 1 (0x11d), the field zfec uses.
 * The caller (p2pstore/immutable/gf256.py) takes the coefficients from zfec's own
 * encoding matrix, so the output is zfec's byte for byte; a test checks that over
 * random parameters and lengths.
 *
 * Multiplying a byte v by a constant c is two 16-entry table lookups,
 * c*v = c*(v & 15) ^ c*(v & 0xf0), which AVX2's byte shuffle does for 32 bytes at a
 * time (zfec does one lookup per byte in a 256-entry row). This is plain C with no
 * Python API: it is loaded with ctypes, which releases the GIL around the call, and
 * builds without Python's headers. Where AVX2 is missing (another architecture, an
 * old CPU) p2ps_gf256_simd() says so and the caller uses zfec instead.
 */
#include <stddef.h>
#include <stdint.h>

static uint8_t gf_mul(uint8_t a, uint8_t b)
{
    uint8_t p = 0;
    while (b) {
        if (b & 1)
            p ^= a;
        b >>= 1;
        a = (uint8_t)((a << 1) ^ ((a & 0x80) ? 0x1d : 0));
    }
    return p;
}

/* lo[x] = c*x and hi[x] = c*(x << 4) for x in 0..15 */
static void nibble_tables(uint8_t c, uint8_t lo[16], uint8_t hi[16])
{
    for (int x = 0; x < 16; x++) {
        lo[x] = gf_mul(c, (uint8_t)x);
        hi[x] = gf_mul(c, (uint8_t)(x << 4));
    }
}

static void row_portable(const uint8_t (*lo)[16], const uint8_t (*hi)[16], int k,
                         const uint8_t *const *src, uint8_t *dst, size_t from, size_t len)
{
    for (size_t p = from; p < len; p++) {
        uint8_t acc = 0;
        for (int i = 0; i < k; i++) {
            uint8_t v = src[i][p];
            acc ^= lo[i][v & 15] ^ hi[i][v >> 4];
        }
        dst[p] = acc;
    }
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define HAVE_AVX2_KERNEL 1

/* The first len & ~31 bytes of one output row; returns how many it did. */
__attribute__((target("avx2"))) static size_t
row_avx2(const uint8_t (*lo)[16], const uint8_t (*hi)[16], int k, const uint8_t *const *src,
         uint8_t *dst, size_t len)
{
    const __m256i low4 = _mm256_set1_epi8(0x0f);
    const size_t end = len & ~(size_t)31;
    __m256i tl[256], th[256]; /* in registers or on the stack: dst may alias anything */
    for (int i = 0; i < k; i++) {
        tl[i] = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)lo[i]));
        th[i] = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)hi[i]));
    }
    for (size_t p = 0; p < end; p += 32) {
        __m256i acc = _mm256_setzero_si256();
        for (int i = 0; i < k; i++) {
            __m256i v = _mm256_loadu_si256((const __m256i *)(src[i] + p));
            __m256i vl = _mm256_and_si256(v, low4);
            __m256i vh = _mm256_and_si256(_mm256_srli_epi64(v, 4), low4);
            acc = _mm256_xor_si256(acc, _mm256_shuffle_epi8(tl[i], vl));
            acc = _mm256_xor_si256(acc, _mm256_shuffle_epi8(th[i], vh));
        }
        _mm256_storeu_si256((__m256i *)(dst + p), acc);
    }
    return end;
}
#endif

/* 1 when the SIMD kernel runs on this CPU, else 0 (the caller then uses zfec). */
int p2ps_gf256_simd(void)
{
#ifdef HAVE_AVX2_KERNEL
    return __builtin_cpu_supports("avx2") ? 1 : 0;
#else
    return 0;
#endif
}

/* dst[j][0..len) = sum_i coeffs[j*k + i] * src[i][0..len) for j < rows.
 * Returns 0, or -1 for a k outside 1..256 or a negative row count. */
int p2ps_gf256_rows(const uint8_t *coeffs, int rows, int k, const uint8_t *const *src,
                    uint8_t *const *dst, size_t len)
{
    uint8_t lo[256][16], hi[256][16];
    if (k < 1 || k > 256 || rows < 0)
        return -1;
    int simd = p2ps_gf256_simd();
    for (int j = 0; j < rows; j++) {
        for (int i = 0; i < k; i++)
            nibble_tables(coeffs[(size_t)j * (size_t)k + (size_t)i], lo[i], hi[i]);
        size_t done = 0;
#ifdef HAVE_AVX2_KERNEL
        if (simd)
            done = row_avx2((const uint8_t (*)[16])lo, (const uint8_t (*)[16])hi, k, src,
                            dst[j], len);
#else
        (void)simd;
#endif
        row_portable((const uint8_t (*)[16])lo, (const uint8_t (*)[16])hi, k, src, dst[j],
                     done, len);
    }
    return 0;
}
