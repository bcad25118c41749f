// automoe's ONNX Runtime operator library: automoe.Top1MoE, a whole top-1 Mixture-of-Experts
// feed-forward layer in one int8 kernel for the few rows of a decode step, and automoe.Int8Linear,
// one int8 linear layer with the same per-row arithmetic (batch-independent; see compute_linear).
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

#include "int8_math.h"

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

// The data of input `index` of operator `op`, and its dims when `dims` (a shape query costs an allocation).
OrtStatus* read_input(OrtKernelContext* ctx, const char* op, size_t index, Tensor* t, bool dims) {
  const OrtValue* value = nullptr;
  OrtStatus* st = g_api.fn<OrtStatus* (*)(OrtKernelContext*, size_t, const OrtValue**)>(kKernelContextGetInput)(ctx, index, &value);
  if (st) return st;
  if (!value) return g_api.status(std::string(op) + ": input " + std::to_string(index) + " is missing");
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

// Output 0: x's shape with the last axis `n`, and its data.
OrtStatus* output_like(OrtKernelContext* ctx, const Tensor& x, int n, float** out) {
  std::vector<int64_t> dims = x.dims;
  dims.back() = n;
  OrtValue* value = nullptr;
  if (OrtStatus* st = g_api.fn<OrtStatus* (*)(OrtKernelContext*, size_t, const int64_t*, size_t, OrtValue**)>(
          kKernelContextGetOutput)(ctx, 0, dims.data(), dims.size(), &value))
    return st;
  return g_api.fn<OrtStatus* (*)(OrtValue*, void**)>(kGetTensorMutableData)(value, (void**)out);
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
    if (OrtStatus* st = read_input(ctx, "automoe.Top1MoE", i, &t[i], i == 0 || i == 10 || check)) return st;
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

  float* out = nullptr;
  if (OrtStatus* st = output_like(ctx, x, d, &out)) return st;
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

// automoe.Int8Linear: y[r] = deq(q(x[r]) . W) + b, relu'd when the attribute relu is 1 (q: per-row
// asymmetric uint8, W per-column symmetric int8, as in the MoE layer). Every row is computed alone,
// so a row's output is bitwise the same whatever rows share the call. Inputs: 0 x float [..., K];
// 1 w int8 (packed K x N); 2 s float [N]; 3 c int32 [N] (column sums of W); 4 b float [N].
// Output: 0 y float [..., N].
// automoe.Int8LinearColumns: the columns cols of the same layer, bitwise Int8Linear's numbers for
// them (a vocabulary shortlist of the output projection). Inputs: 0 x; 1 W by columns, int8
// [N][round_up(K, 4)], zero-padded; 2 s; 3 c; 4 b; 5 cols int64 [M]. Output: 0 y float [..., M].
struct LinearKernel {
  bool columns = false;
  bool relu = false;
  std::atomic<bool> weights_checked{false};
};

// x's rows quantized into the thread's scratch (k->qx, k->sx, k->zx); returns the row count.
int quantize_rows(const Tensor& x, int K, Scratch* k) {
  const int rows = K ? (int)(x.size() / K) : 0, K4 = round_up(K, 4);
  const float* xs = (const float*)x.data;
  k->qx.resize((size_t)rows * K4);
  k->sx.resize(rows);
  k->zx.resize(rows);
  for (int r = 0; r < rows; ++r) quantize_row(xs + (size_t)r * K, K, k->qx.data() + (size_t)r * K4, &k->sx[r], &k->zx[r]);
  return rows;
}

// Int8Linear (columns = false) and Int8LinearColumns (columns = true: input 1 is W by columns,
// [N][K4], and input 5 the int64 columns to compute, in order).
OrtStatus* compute_linear(LinearKernel* kernel, OrtKernelContext* ctx) {
  const char* name = kernel->columns ? "automoe.Int8LinearColumns" : "automoe.Int8Linear";
  const bool check = !kernel->weights_checked;
  const size_t inputs = kernel->columns ? 6 : 5;
  Tensor t[6];
  for (size_t i = 0; i < inputs; ++i)
    if (OrtStatus* st = read_input(ctx, name, i, &t[i], i == 0 || i == 2 || i == 5 || check)) return st;
  const Tensor& x = t[0];
  if (x.dims.empty()) return g_api.status(std::string(name) + ": x must have at least one axis");
  const int K = (int)x.dims.back(), N = (int)t[2].size();
  if (check) {
    const int64_t bytes = kernel->columns ? (int64_t)N * round_up(K, 4) : (int64_t)packed_bytes(K, N);
    if (t[1].size() != bytes || t[3].size() != N || t[4].size() != N)
      return g_api.status(std::string(name) + ": the weights do not match K = " + std::to_string(K) + " and N = " +
                          std::to_string(N) + "; re-export the model with automoe");
    kernel->weights_checked = true;
  }
  const int M = kernel->columns ? (int)t[5].size() : N;
  const int64_t* cols = kernel->columns ? (const int64_t*)t[5].data : nullptr;
  for (int m = 0; m < (kernel->columns ? M : 0); ++m)
    if (cols[m] < 0 || cols[m] >= N)
      return g_api.status(std::string(name) + ": column " + std::to_string(cols[m]) + " is outside 0.." +
                          std::to_string(N - 1));
  float* out = nullptr;
  if (OrtStatus* st = output_like(ctx, x, M, &out)) return st;
  Scratch* k = &t_scratch;
  const int rows = quantize_rows(x, K, k);
  if (rows == 0) return nullptr;
  const float *s = (const float*)t[2].data, *b = (const float*)t[4].data;
  const int32_t* c = (const int32_t*)t[3].data;
  if (kernel->columns)
    int8_linear_columns(k->qx.data(), rows, K, k->sx.data(), k->zx.data(), (const int8_t*)t[1].data, s, c, b, cols, M, out);
  else
    int8_linear(k->qx.data(), rows, K, k->sx.data(), k->zx.data(), (const int8_t*)t[1].data, s, c, b, N, kernel->relu, out);
  return nullptr;
}

// The int attribute `name` of a node, or `fallback` where the node has none.
int64_t int_attribute(const OrtKernelInfo* info, const char* name, int64_t fallback) {
  int64_t value = fallback;
  OrtStatus* st = g_api.fn<OrtStatus* (*)(const OrtKernelInfo*, const char*, int64_t*)>(kKernelInfoGetAttributeInt64)(
      info, name, &value);
  if (st) g_api.release(st);
  return st ? fallback : value;
}

OrtStatus* create_linear(const OrtCustomOp* op, const void*, const OrtKernelInfo* info, void** kernel) {
  LinearKernel* k = new LinearKernel;
  k->relu = int_attribute(info, "relu", 0) != 0;
  k->columns = op->GetInputTypeCount(op) == 6;
  *kernel = k;
  return nullptr;
}

OrtStatus* create_kernel(const OrtCustomOp*, const void*, const OrtKernelInfo* info, void** kernel) {
  Kernel* k = new Kernel;
  k->router_scale = int_attribute(info, "router_scale", 1) != 0;
  *kernel = k;
  return nullptr;
}

const int kInputTypes[11] = {kFloat, kFloat, kInt8, kFloat, kInt32, kFloat, kInt8, kFloat, kInt32, kFloat, kInt64};
const int kLinearInputTypes[6] = {kFloat, kInt8, kFloat, kInt32, kFloat, kInt64};

using CreateFn = OrtStatus* (*)(const OrtCustomOp*, const void*, const OrtKernelInfo*, void**);

// The fields every operator shares, with kernel objects of type K made by Create and run by Compute
// (the version-1 entries too, which report errors by releasing them); the caller sets the name and
// the inputs.
template <class K, CreateFn Create, OrtStatus* (*Compute)(K*, OrtKernelContext*)>
OrtCustomOp base_op() {
  OrtCustomOp op;
  memset(&op, 0, sizeof(op));
  op.version = 16;  // the first with CreateKernelV2 / KernelComputeV2, which can report errors
  op.CreateKernel = [](const OrtCustomOp* o, const void* api, const OrtKernelInfo* info) -> void* {
    void* kernel = nullptr;
    if (OrtStatus* st = Create(o, api, info, &kernel)) g_api.release(st);
    return kernel;
  };
  op.KernelCompute = [](void* kernel, OrtKernelContext* ctx) {
    if (OrtStatus* st = Compute((K*)kernel, ctx)) g_api.release(st);
  };
  op.KernelDestroy = [](void* kernel) { delete (K*)kernel; };
  op.CreateKernelV2 = Create;
  op.KernelComputeV2 = [](void* kernel, OrtKernelContext* ctx) { return Compute((K*)kernel, ctx); };
  op.GetExecutionProviderType = [](const OrtCustomOp*) -> const char* { return "CPUExecutionProvider"; };
  op.GetOutputType = [](const OrtCustomOp*, size_t) { return (int)kFloat; };
  op.GetOutputTypeCount = [](const OrtCustomOp*) { return (size_t)1; };
  op.GetInputCharacteristic = [](const OrtCustomOp*, size_t) { return 0; };   // required
  op.GetOutputCharacteristic = [](const OrtCustomOp*, size_t) { return 0; };  // required
  op.GetInputMemoryType = [](const OrtCustomOp*, size_t) { return 0; };       // default (CPU)
  op.GetVariadicInputMinArity = [](const OrtCustomOp*) { return 1; };
  op.GetVariadicInputHomogeneity = [](const OrtCustomOp*) { return 1; };
  op.GetVariadicOutputMinArity = [](const OrtCustomOp*) { return 1; };
  op.GetVariadicOutputHomogeneity = [](const OrtCustomOp*) { return 1; };
  return op;
}

OrtCustomOp make_op() {
  OrtCustomOp op = base_op<Kernel, create_kernel, compute>();
  op.GetName = [](const OrtCustomOp*) { return "Top1MoE"; };
  op.GetInputType = [](const OrtCustomOp*, size_t i) { return i < 11 ? kInputTypes[i] : 0; };
  op.GetInputTypeCount = [](const OrtCustomOp*) { return (size_t)11; };
  return op;
}

OrtCustomOp make_linear_op(bool columns) {
  OrtCustomOp op = base_op<LinearKernel, create_linear, compute_linear>();
  if (columns) {
    op.GetName = [](const OrtCustomOp*) { return "Int8LinearColumns"; };
    op.GetInputType = [](const OrtCustomOp*, size_t i) { return i < 6 ? kLinearInputTypes[i] : 0; };
    op.GetInputTypeCount = [](const OrtCustomOp*) { return (size_t)6; };
  } else {
    op.GetName = [](const OrtCustomOp*) { return "Int8Linear"; };
    op.GetInputType = [](const OrtCustomOp*, size_t i) { return i < 5 ? kLinearInputTypes[i] : 0; };
    op.GetInputTypeCount = [](const OrtCustomOp*) { return (size_t)5; };
  }
  return op;
}

OrtCustomOp g_op = make_op();
OrtCustomOp g_linear_op = make_linear_op(false);
OrtCustomOp g_columns_op = make_linear_op(true);

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
  for (const OrtCustomOp* op : {&g_op, &g_linear_op, &g_columns_op})
    if (OrtStatus* st = g_api.fn<OrtStatus* (*)(OrtCustomOpDomain*, const OrtCustomOp*)>(kCustomOpDomainAdd)(domain, op))
      return st;
  // the domain must outlive every session made with these options; it is never released
  return g_api.fn<OrtStatus* (*)(OrtSessionOptions*, OrtCustomOpDomain*)>(kAddCustomOpDomain)(options, domain);
}

// The instruction set the kernel uses on this CPU (for benchmark records).
__attribute__((visibility("default"))) const char* AutomoeKernelIsa() { return kHasVnni ? "avx512-vnni" : "portable"; }
}
