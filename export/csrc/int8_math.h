// The int8 arithmetic of automoe_ops.cc: per-row activation quantization, the int8 linear layer
// (all columns, or selected ones) and the fp32 router dot product, each in a portable and an
// AVX-512 VNNI version that compute the same numbers; the dispatchers at the end pick one per CPU.
// Included inside automoe_ops.cc's anonymous namespace (one translation unit, internal linkage),
// after the system headers it uses (immintrin.h, string.h, math.h, algorithm).
#pragma once

int round_up(int v, int m) { return (v + m - 1) / m * m; }
size_t packed_bytes(int K, int N) { return (size_t)round_up(N, 16) * round_up(K, 4); }

// Per-row asymmetric uint8 quantization with 0 inside the range (zero point in [0, 255]);
// q rows are K4 = round_up(K, 4) long, the tail padded with the zero point.
void quantize_row_portable(const float* x, int K, uint8_t* q, float* scale, int32_t* zero) {
  float lo = 0.f, hi = 0.f;
  for (int k = 0; k < K; ++k) { lo = std::min(lo, x[k]); hi = std::max(hi, x[k]); }
  float s = (hi - lo) / 255.f;
  if (s == 0.f) s = 1.f;
  int z = std::min(255, std::max(0, (int)nearbyintf(-lo / s)));
  float inv = 1.f / s;
  for (int k = 0; k < K; ++k) q[k] = (uint8_t)std::min(255, std::max(0, (int)nearbyintf(x[k] * inv) + z));
  for (int k = K; k < round_up(K, 4); ++k) q[k] = (uint8_t)z;
  *scale = s;
  *zero = z;
}

// The portable int8 linear layer: out[r][n] = sx[r] * s[n] * (q[r] . W[:, n] - zx[r] * c[n]) + b[n],
// optionally relu'd. q rows are round_up(K, 4) long.
void linear_portable(const uint8_t* q, int rows, int K, const float* sx, const int32_t* zx, const int8_t* w,
                     const float* s, const int32_t* c, const float* b, int N, bool relu, float* out) {
  const int K4 = round_up(K, 4), KB = K4 / 4;
  for (int r = 0; r < rows; ++r)
    for (int n = 0; n < N; ++n) {
      const int8_t* col = w + ((size_t)(n / 16) * KB * 16 + n % 16) * 4;
      int32_t sum = 0;
      for (int kb = 0; kb < KB; ++kb)
        for (int j = 0; j < 4; ++j) sum += (int32_t)q[(size_t)r * K4 + kb * 4 + j] * col[(size_t)kb * 64 + j];
      float v = (float)(sum - zx[r] * c[n]) * s[n] * sx[r] + b[n];
      out[(size_t)r * N + n] = relu && v < 0.f ? 0.f : v;
    }
}

// Selected columns of the int8 linear layer: out[r][m] = the linear layer's out[r][cols[m]], the
// same integers and fp32 operations as linear_portable, read from wt, W stored by columns ([N][K4],
// zero-padded): a shortlist's columns are then contiguous rows.
void linear_columns_portable(const uint8_t* q, int rows, int K, const float* sx, const int32_t* zx,
                             const int8_t* wt, const float* s, const int32_t* c, const float* b,
                             const int64_t* cols, int M, float* out) {
  const int K4 = round_up(K, 4);
  for (int r = 0; r < rows; ++r)
    for (int m = 0; m < M; ++m) {
      const int n = (int)cols[m];
      const int8_t* col = wt + (size_t)n * K4;
      int32_t sum = 0;
      for (int k = 0; k < K4; ++k) sum += (int32_t)q[(size_t)r * K4 + k] * col[k];
      out[(size_t)r * M + m] = (float)(sum - zx[r] * c[n]) * s[n] * sx[r] + b[n];
    }
}

// fp32 dot product (the router logits), portable version: 16 partial sums, lane j taking the
// elements j mod 16, added in lane order (the AVX-512 version sums in the same order: same bits)
float dot_portable(const float* a, const float* b, int n) {
  float part[16] = {0};
  int k = 0;
  for (; k + 16 <= n; k += 16)
    for (int j = 0; j < 16; ++j) part[j] += a[k + j] * b[k + j];
  float sum = 0.f;
  for (int j = 0; j < 16; ++j) sum += part[j];
  for (; k < n; ++k) sum += a[k] * b[k];
  return sum;
}

#if defined(__x86_64__)

#define VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))

// GCC 12's _mm512_reduce_* headers trip -W(maybe-)uninitialized (a false positive)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

// dot_portable with AVX-512
VNNI float dot_vnni(const float* a, const float* b, int n) {
  __m512 acc = _mm512_setzero_ps();
  int k = 0;
  for (; k + 16 <= n; k += 16) acc = _mm512_add_ps(acc, _mm512_mul_ps(_mm512_loadu_ps(a + k), _mm512_loadu_ps(b + k)));
  float part[16];
  _mm512_storeu_ps(part, acc);
  float sum = 0.f;
  for (int j = 0; j < 16; ++j) sum += part[j];
  for (; k < n; ++k) sum += a[k] * b[k];
  return sum;
}

// quantize_row with AVX-512: the same results (min / max are exact, the rounding is the same).
VNNI void quantize_row_vnni(const float* x, int K, uint8_t* q, float* scale, int32_t* zero) {
  __m512 vlo = _mm512_setzero_ps(), vhi = _mm512_setzero_ps();
  int k = 0;
  for (; k + 16 <= K; k += 16) {
    __m512 v = _mm512_loadu_ps(x + k);
    vlo = _mm512_min_ps(vlo, v);
    vhi = _mm512_max_ps(vhi, v);
  }
  float lo = _mm512_reduce_min_ps(vlo), hi = _mm512_reduce_max_ps(vhi);
  for (; k < K; ++k) { lo = std::min(lo, x[k]); hi = std::max(hi, x[k]); }
  float s = (hi - lo) / 255.f;
  if (s == 0.f) s = 1.f;
  int z = std::min(255, std::max(0, (int)nearbyintf(-lo / s)));
  const float inv = 1.f / s;
  const __m512 vinv = _mm512_set1_ps(inv);
  const __m512i vz = _mm512_set1_epi32(z), v0 = _mm512_setzero_si512(), v255 = _mm512_set1_epi32(255);
  for (k = 0; k + 16 <= K; k += 16) {
    __m512i i = _mm512_add_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x + k), vinv)), vz);
    i = _mm512_min_epi32(_mm512_max_epi32(i, v0), v255);
    _mm_storeu_si128((__m128i*)(q + k), _mm512_cvtepi32_epi8(i));
  }
  for (; k < K; ++k) q[k] = (uint8_t)std::min(255, std::max(0, (int)nearbyintf(x[k] * inv) + z));
  for (; k < round_up(K, 4); ++k) q[k] = (uint8_t)z;
  *scale = s;
  *zero = z;
}

// Column blocks nb0 .. nb0 + B - 1 of the linear layer with AVX-512 VNNI, M <= 4 rows: each
// 64-byte load of W (16 columns x 4 k) feeds one vpdpbusd per row.
template <int M, int B>
VNNI void linear_blocks(const uint8_t* q, int K, const float* sx, const int32_t* zx, const int8_t* w, const float* s,
                        const int32_t* c, const float* b, int nb0, int N, bool relu, float* out) {
  const int K4 = round_up(K, 4), KB = K4 / 4;
  const int8_t* wb = w + (size_t)nb0 * KB * 64;
  __m512i a[M][B];
#pragma GCC unroll 16
  for (int r = 0; r < M; ++r)
#pragma GCC unroll 16
    for (int j = 0; j < B; ++j) a[r][j] = _mm512_setzero_si512();
  for (int kb = 0; kb < KB; ++kb) {
    __m512i v[B];
#pragma GCC unroll 16
    for (int j = 0; j < B; ++j) v[j] = _mm512_loadu_si512(wb + ((size_t)j * KB + kb) * 64);
#pragma GCC unroll 16
    for (int r = 0; r < M; ++r) {
      int32_t four;
      memcpy(&four, q + (size_t)r * K4 + kb * 4, 4);
      const __m512i xb = _mm512_set1_epi32(four);
#pragma GCC unroll 16
      for (int j = 0; j < B; ++j) a[r][j] = _mm512_dpbusd_epi32(a[r][j], xb, v[j]);
    }
  }
  for (int j = 0; j < B; ++j) {
    const int n0 = (nb0 + j) * 16, count = std::min(16, N - n0);
    const __mmask16 mask = (__mmask16)((1u << count) - 1);
    const __m512 vs = _mm512_maskz_loadu_ps(mask, s + n0), vb = _mm512_maskz_loadu_ps(mask, b + n0);
    const __m512i vc = _mm512_maskz_loadu_epi32(mask, c + n0);
    for (int r = 0; r < M; ++r) {
      const __m512i centered = _mm512_sub_epi32(a[r][j], _mm512_mullo_epi32(vc, _mm512_set1_epi32(zx[r])));
      __m512 v = _mm512_add_ps(_mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(centered), vs), _mm512_set1_ps(sx[r])), vb);
      if (relu) v = _mm512_max_ps(v, _mm512_setzero_ps());
      _mm512_mask_storeu_ps(out + (size_t)r * N + n0, mask, v);
    }
  }
}

// The linear layer for M <= 4 rows, B column blocks at a time. A decode step reads most expert
// weights from memory, once, and one core's bandwidth grows with the number of streams the
// hardware prefetchers follow: each column block is one contiguous stream, so as many blocks run
// together as the 32 registers allow (M * B accumulators, B weights, 1 broadcast). In a scratch
// test on AMD EPYC (Zen 4) a cold expert took 30-40% less time than with 2 blocks and a software
// prefetch; the last blocks, fewer than B, run one at a time.
template <int M, int B>
VNNI void linear_vnni_m(const uint8_t* q, int K, const float* sx, const int32_t* zx, const int8_t* w,
                        const float* s, const int32_t* c, const float* b, int N, bool relu, float* out) {
  const int NB = round_up(N, 16) / 16;
  int nb = 0;
  for (; nb + B <= NB; nb += B) linear_blocks<M, B>(q, K, sx, zx, w, s, c, b, nb, N, relu, out);
  for (; nb < NB; ++nb) linear_blocks<M, 1>(q, K, sx, zx, w, s, c, b, nb, N, relu, out);
}

VNNI void linear_vnni(const uint8_t* q, int rows, int K, const float* sx, const int32_t* zx, const int8_t* w,
                      const float* s, const int32_t* c, const float* b, int N, bool relu, float* out) {
  const int K4 = round_up(K, 4);
  for (int r0 = 0; r0 < rows; r0 += 4) {  // each pass over W serves four rows
    const uint8_t* qr = q + (size_t)r0 * K4;
    float* o = out + (size_t)r0 * N;
    switch (std::min(4, rows - r0)) {
      case 4: linear_vnni_m<4, 4>(qr, K, sx + r0, zx + r0, w, s, c, b, N, relu, o); break;
      case 3: linear_vnni_m<3, 6>(qr, K, sx + r0, zx + r0, w, s, c, b, N, relu, o); break;
      case 2: linear_vnni_m<2, 8>(qr, K, sx + r0, zx + r0, w, s, c, b, N, relu, o); break;
      default: linear_vnni_m<1, 12>(qr, K, sx + r0, zx + r0, w, s, c, b, N, relu, o); break;
    }
  }
}

// linear_columns_portable with AVX-512 VNNI: the same integers, the same fp32 epilogue.
VNNI void linear_columns_vnni(const uint8_t* q, int rows, int K, const float* sx, const int32_t* zx,
                              const int8_t* wt, const float* s, const int32_t* c, const float* b,
                              const int64_t* cols, int M, float* out) {
  const int K4 = round_up(K, 4), full = K4 / 64 * 64;
  const __mmask64 tail = K4 == full ? 0 : (~0ULL >> (64 - (K4 - full)));
  for (int r = 0; r < rows; ++r) {
    const uint8_t* qr = q + (size_t)r * K4;
    for (int m = 0; m < M; ++m) {
      const int8_t* col = wt + (size_t)cols[m] * K4;
      __m512i acc = _mm512_setzero_si512();
      for (int k = 0; k < full; k += 64)
        acc = _mm512_dpbusd_epi32(acc, _mm512_loadu_si512(qr + k), _mm512_loadu_si512(col + k));
      if (tail) acc = _mm512_dpbusd_epi32(acc, _mm512_maskz_loadu_epi8(tail, qr + full), _mm512_maskz_loadu_epi8(tail, col + full));
      const int n = (int)cols[m];
      const int32_t centered = _mm512_reduce_add_epi32(acc) - zx[r] * c[n];
      out[(size_t)r * M + m] = (float)centered * s[n] * sx[r] + b[n];
    }
  }
}

// AUTOMOE_KERNEL_PORTABLE=1 forces the portable loops (tests compare both paths on one CPU)
const bool kHasVnni = !getenv("AUTOMOE_KERNEL_PORTABLE") && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
#else  // other CPUs: the portable loops
const bool kHasVnni = false;
#define quantize_row_vnni quantize_row_portable
#define linear_vnni linear_portable
#define dot_vnni dot_portable
#define linear_columns_vnni linear_columns_portable
#endif
const auto quantize_row = kHasVnni ? quantize_row_vnni : quantize_row_portable;
const auto int8_linear = kHasVnni ? linear_vnni : linear_portable;
const auto dot = kHasVnni ? dot_vnni : dot_portable;
const auto int8_linear_columns = kHasVnni ? linear_columns_vnni : linear_columns_portable;
