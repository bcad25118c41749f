// automoe's ONNX Runtime operator library: one operator, automoe.Top1MoE, a whole top-1
// Mixture-of-Experts feed-forward layer in one int8 kernel for the few rows of a decode step.
//
// Why: at batch 1 with beam 4 a decoder step routes 4 tokens. ONNX Runtime's graph-level
// dispatch (about 16 nodes per layer) and its fused com.microsoft.QMoE operator (1.4-1.9x the time
// of the dense layer's two int8 matrix products for the same rows) both cost more than the
// experts' arithmetic, and every graph node has a fixed cost of its own. This kernel is the whole
// layer in one node: it routes each row (fp32 router), quantizes it once, groups the rows by
// expert, runs only the experts some row chose, and multiplies int8 x int8 with AVX-512 VNNI
// where the CPU has it (a portable loop computes the same integers elsewhere).
//
// Arithmetic (the Python reference is automoe.export.kernel.reference_top1_moe):
//   l[r] = R x[r]; p[r], e[r] = max / first argmax of softmax(l[r])   (router, fp32)
//   h  = relu(deq(q(x[r]) . W1_e) + b1_e)           q: per-row asymmetric uint8
//   y[r] = p[r] * (deq(q(h) . W2_e) + b2_e)         W: per-column symmetric int8
//   (without the factor p[r] when the attribute router_scale is 0)
//
// Inputs: 0 x float [..., d]; 1 router weight float [E, d]; 2 w1 int8 (packed, experts concatenated);
// 3 s1 float [sum W]; 4 c1 int32 [sum W] (column sums of W1); 5 b1 float [sum W]; 6 w2 int8
// (packed); 7 s2 float [E*d]; 8 c2 int32 [E*d]; 9 b2 float [E*d]; 10 widths int64 [E].
// Output: 0 y float, x's shape. Packed layout of a K x N matrix: [ceil(N/16)][ceil(K/4)][16][4],
// zero-padded (automoe.export.kernel.pack_weights writes it).
//
// The ONNX Runtime C API is used through the hand-written declarations of ort_abi.h.

#if defined(__x86_64__)
#include <immintrin.h>
#endif
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <algorithm>
#include <atomic>
#include <string>
#include <vector>

#include "ort_abi.h"

Api g_api;

namespace {

// ---------------------------------------------------------------------------------------------
// int8 arithmetic

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

// AUTOMOE_KERNEL_PORTABLE=1 forces the portable loops (tests compare both paths on one CPU)
const bool kHasVnni = !getenv("AUTOMOE_KERNEL_PORTABLE") && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
#else  // other CPUs: the portable loops
const bool kHasVnni = false;
#define quantize_row_vnni quantize_row_portable
#define linear_vnni linear_portable
#define dot_vnni dot_portable
#endif
const auto quantize_row = kHasVnni ? quantize_row_vnni : quantize_row_portable;
const auto int8_linear = kHasVnni ? linear_vnni : linear_portable;
const auto dot = kHasVnni ? dot_vnni : dot_portable;

// ---------------------------------------------------------------------------------------------
// the operator

struct Tensor {
  void* data = nullptr;
  std::vector<int64_t> dims;
  int64_t size() const {
    int64_t n = 1;
    for (int64_t d : dims) n *= d;
    return n;
  }
};

// The data of input `index`, and its dims when `dims` (a shape query costs an allocation).
OrtStatus* read_input(OrtKernelContext* ctx, size_t index, Tensor* t, bool dims) {
  const OrtValue* value = nullptr;
  OrtStatus* st = g_api.fn<OrtStatus* (*)(OrtKernelContext*, size_t, const OrtValue**)>(kKernelContextGetInput)(ctx, index, &value);
  if (st) return st;
  if (!value) return g_api.status("automoe.Top1MoE: input " + std::to_string(index) + " is missing");
  if (!dims) return g_api.fn<OrtStatus* (*)(OrtValue*, void**)>(kGetTensorMutableData)(const_cast<OrtValue*>(value), &t->data);
  OrtTensorTypeAndShapeInfo* info = nullptr;
  if ((st = g_api.fn<OrtStatus* (*)(const OrtValue*, OrtTensorTypeAndShapeInfo**)>(kGetTensorTypeAndShape)(value, &info))) return st;
  size_t rank = 0;
  st = g_api.fn<OrtStatus* (*)(const OrtTensorTypeAndShapeInfo*, size_t*)>(kGetDimensionsCount)(info, &rank);
  if (!st) {
    t->dims.resize(rank);
    st = g_api.fn<OrtStatus* (*)(const OrtTensorTypeAndShapeInfo*, int64_t*, size_t)>(kGetDimensions)(info, t->dims.data(), rank);
  }
  g_api.fn<void (*)(OrtTensorTypeAndShapeInfo*)>(kReleaseTensorTypeAndShapeInfo)(info);
  if (st) return st;
  return g_api.fn<OrtStatus* (*)(OrtValue*, void**)>(kGetTensorMutableData)(const_cast<OrtValue*>(value), &t->data);
}

// Scratch memory of one call. Per thread, not per node: ONNX Runtime may run one session (so one
// kernel object) from several threads at once, and a call never re-enters the operator.
struct Scratch {
  std::vector<int> order, start, fill, choice;
  std::vector<uint8_t> qx, qh;
  std::vector<float> sx, sh, h, y, gate, logits;
  std::vector<int32_t> zx, zh;
};
thread_local Scratch t_scratch;

struct Kernel {
  bool router_scale = true;
  std::atomic<bool> weights_checked{false};  // the weights are initializers: their sizes are checked once
};

OrtStatus* compute(Kernel* kernel, OrtKernelContext* ctx) {
  Scratch* k = &t_scratch;
  const bool check = !kernel->weights_checked;
  Tensor t[11];
  for (size_t i = 0; i < 11; ++i)  // data pointers; dims of x, widths, and the rest while checking them
    if (OrtStatus* st = read_input(ctx, i, &t[i], i == 0 || i == 10 || check)) return st;
  const Tensor &x = t[0], &router = t[1], &widths = t[10];
  if (x.dims.empty()) return g_api.status("automoe.Top1MoE: x must have at least one axis");
  const int d = (int)x.dims.back();
  const int rows = d ? (int)(x.size() / d) : 0;
  const int E = (int)widths.size();
  const int64_t* W = (const int64_t*)widths.data;
  if (check) {
    if (E < 1 || router.dims.size() != 2 || router.dims[0] != E || router.dims[1] != d)
      return g_api.status("automoe.Top1MoE: the router weight must be [" + std::to_string(E) + ", " +
                          std::to_string(d) + "] (experts x d_model of x); re-export the model with automoe");
    int64_t total_w = 0, bytes1 = 0, bytes2 = 0;
    for (int e = 0; e < E; ++e) {
      if (W[e] < 1) return g_api.status("automoe.Top1MoE: every expert width must be positive");
      total_w += W[e];
      bytes1 += packed_bytes(d, (int)W[e]);
      bytes2 += packed_bytes((int)W[e], d);
    }
    if (t[2].size() != bytes1 || t[6].size() != bytes2 || t[3].size() != total_w || t[4].size() != total_w ||
        t[5].size() != total_w || t[7].size() != (int64_t)E * d || t[8].size() != (int64_t)E * d ||
        t[9].size() != (int64_t)E * d)
      return g_api.status("automoe.Top1MoE: the expert weights do not match widths and d_model = " +
                          std::to_string(d) + "; re-export the model with automoe");
    kernel->weights_checked = true;
  }

  OrtValue* out_value = nullptr;
  if (OrtStatus* st = g_api.fn<OrtStatus* (*)(OrtKernelContext*, size_t, const int64_t*, size_t, OrtValue**)>(
          kKernelContextGetOutput)(ctx, 0, x.dims.data(), x.dims.size(), &out_value))
    return st;
  float* out = nullptr;
  if (OrtStatus* st = g_api.fn<OrtStatus* (*)(OrtValue*, void**)>(kGetTensorMutableData)(out_value, (void**)&out)) return st;
  if (rows == 0) return nullptr;

  // route: the first maximum of the logits, like torch.max of the probabilities; its probability
  // is 1 / sum(exp(l - max)). Then the rows grouped by expert (counting sort, stable).
  const float* xs = (const float*)x.data;
  const float* R = (const float*)router.data;
  k->choice.resize(rows);
  k->gate.resize(rows);
  k->logits.resize(E);
  k->start.assign(E + 1, 0);
  for (int r = 0; r < rows; ++r) {
    int best = 0;
    for (int e = 0; e < E; ++e) {
      k->logits[e] = dot(xs + (size_t)r * d, R + (size_t)e * d, d);
      if (k->logits[e] > k->logits[best]) best = e;
    }
    float sum = 0.f;
    for (int e = 0; e < E; ++e) sum += expf(k->logits[e] - k->logits[best]);
    k->choice[r] = best;
    k->gate[r] = kernel->router_scale ? 1.f / sum : 1.f;
    ++k->start[best + 1];
  }
  for (int e = 0; e < E; ++e) k->start[e + 1] += k->start[e];
  k->order.resize(rows);
  k->fill.assign(k->start.begin(), k->start.end() - 1);
  for (int r = 0; r < rows; ++r) k->order[k->fill[k->choice[r]]++] = r;

  const int d4 = round_up(d, 4);
  k->qx.resize((size_t)rows * d4);
  k->sx.resize(rows);
  k->zx.resize(rows);
  for (int i = 0; i < rows; ++i)  // quantized rows in expert order
    quantize_row(xs + (size_t)k->order[i] * d, d, k->qx.data() + (size_t)i * d4, &k->sx[i], &k->zx[i]);

  const int8_t* w1 = (const int8_t*)t[2].data;
  const int8_t* w2 = (const int8_t*)t[6].data;
  int64_t col = 0;
  for (int e = 0; e < E; ++e) {
    const int n = k->start[e + 1] - k->start[e], width = (int)W[e], w4 = round_up(width, 4);
    if (n > 0) {
      const int i0 = k->start[e];
      k->h.resize((size_t)n * width);
      int8_linear(k->qx.data() + (size_t)i0 * d4, n, d, k->sx.data() + i0, k->zx.data() + i0, w1,
                  (const float*)t[3].data + col, (const int32_t*)t[4].data + col, (const float*)t[5].data + col,
                  width, true, k->h.data());
      k->qh.resize((size_t)n * w4);
      k->sh.resize(n);
      k->zh.resize(n);
      for (int i = 0; i < n; ++i)
        quantize_row(k->h.data() + (size_t)i * width, width, k->qh.data() + (size_t)i * w4, &k->sh[i], &k->zh[i]);
      k->y.resize((size_t)n * d);
      int8_linear(k->qh.data(), n, width, k->sh.data(), k->zh.data(), w2, (const float*)t[7].data + (size_t)e * d,
                  (const int32_t*)t[8].data + (size_t)e * d, (const float*)t[9].data + (size_t)e * d, d, false,
                  k->y.data());
      for (int i = 0; i < n; ++i) {
        const int r = k->order[i0 + i];
        for (int j = 0; j < d; ++j) out[(size_t)r * d + j] = k->y[(size_t)i * d + j] * k->gate[r];
      }
    }
    w1 += packed_bytes(d, width);
    w2 += packed_bytes(width, d);
    col += width;
  }
  return nullptr;
}

OrtStatus* create_kernel(const OrtCustomOp*, const void*, const OrtKernelInfo* info, void** kernel) {
  int64_t router_scale = 1;
  OrtStatus* st = g_api.fn<OrtStatus* (*)(const OrtKernelInfo*, const char*, int64_t*)>(kKernelInfoGetAttributeInt64)(
      info, "router_scale", &router_scale);
  if (st) g_api.release(st);  // absent: the default, 1
  Kernel* k = new Kernel;
  k->router_scale = router_scale != 0;
  *kernel = k;
  return nullptr;
}

void* create_kernel_v1(const OrtCustomOp* op, const void* api, const OrtKernelInfo* info) {
  void* kernel = nullptr;
  create_kernel(op, api, info, &kernel);
  return kernel;
}

void compute_v1(void* kernel, OrtKernelContext* ctx) {
  if (OrtStatus* st = compute((Kernel*)kernel, ctx)) g_api.release(st);
}

const int kInputTypes[11] = {kFloat, kFloat, kInt8, kFloat, kInt32, kFloat, kInt8, kFloat, kInt32, kFloat, kInt64};

OrtCustomOp make_op() {
  OrtCustomOp op;
  memset(&op, 0, sizeof(op));
  op.version = 16;  // the first with CreateKernelV2 / KernelComputeV2, which can report errors
  op.CreateKernel = create_kernel_v1;
  op.GetName = [](const OrtCustomOp*) { return "Top1MoE"; };
  op.GetExecutionProviderType = [](const OrtCustomOp*) -> const char* { return "CPUExecutionProvider"; };
  op.GetInputType = [](const OrtCustomOp*, size_t i) { return i < 11 ? kInputTypes[i] : 0; };
  op.GetInputTypeCount = [](const OrtCustomOp*) { return (size_t)11; };
  op.GetOutputType = [](const OrtCustomOp*, size_t) { return (int)kFloat; };
  op.GetOutputTypeCount = [](const OrtCustomOp*) { return (size_t)1; };
  op.KernelCompute = compute_v1;
  op.KernelDestroy = [](void* kernel) { delete (Kernel*)kernel; };
  op.GetInputCharacteristic = [](const OrtCustomOp*, size_t) { return 0; };   // required
  op.GetOutputCharacteristic = [](const OrtCustomOp*, size_t) { return 0; };  // required
  op.GetInputMemoryType = [](const OrtCustomOp*, size_t) { return 0; };       // default (CPU)
  op.GetVariadicInputMinArity = [](const OrtCustomOp*) { return 1; };
  op.GetVariadicInputHomogeneity = [](const OrtCustomOp*) { return 1; };
  op.GetVariadicOutputMinArity = [](const OrtCustomOp*) { return 1; };
  op.GetVariadicOutputHomogeneity = [](const OrtCustomOp*) { return 1; };
  op.CreateKernelV2 = create_kernel;
  op.KernelComputeV2 = [](void* kernel, OrtKernelContext* ctx) { return compute((Kernel*)kernel, ctx); };
  return op;
}

OrtCustomOp g_op = make_op();

}  // namespace

extern "C" {

// Called by SessionOptions.register_custom_ops_library.
__attribute__((visibility("default"))) OrtStatus* RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* base) {
  g_api.table = (void* const*)base->GetApi(16);
  if (!g_api.table) {  // ONNX Runtime before 1.16 cannot run this operator; version 1's table can say so
    g_api.table = (void* const*)base->GetApi(1);
    return g_api.status(std::string("automoe's operator library needs ONNX Runtime >= 1.16, this is ") +
                        base->GetVersionString());
  }
  OrtCustomOpDomain* domain = nullptr;
  if (OrtStatus* st = g_api.fn<OrtStatus* (*)(const char*, OrtCustomOpDomain**)>(kCreateCustomOpDomain)("automoe", &domain))
    return st;
  if (OrtStatus* st = g_api.fn<OrtStatus* (*)(OrtCustomOpDomain*, const OrtCustomOp*)>(kCustomOpDomainAdd)(domain, &g_op))
    return st;
  // the domain must outlive every session made with these options; it is never released
  return g_api.fn<OrtStatus* (*)(OrtSessionOptions*, OrtCustomOpDomain*)>(kAddCustomOpDomain)(options, domain);
}

// The instruction set the kernel uses on this CPU (for benchmark records).
__attribute__((visibility("default"))) const char* AutomoeKernelIsa() { return kHasVnni ? "avx512-vnni" : "portable"; }
}
