// Linear-angular attention (kernel or official form) plus the authors' (k, 1) token conv, for the CPU.
//
// The same numbers as library_calls.LinearAngular followed by branches.TokenConv1d, computed one
// (image, head) at a time with everything that head touches in L1 cache: q, k, v are read
// straight out of the qkv projection (B, N, 3C), K̂ᵀV is a d × d matrix, and the output is written
// token-major (B, N, H, d), the layout the output projection reads. At the token counts the course
// uses, the library-call path spends most of its time between calls (tutorial 07); here there is
// one call per layer. Loaded and tested against the plain reference by cpu_kernel.py.
//
// Notation per head: q_n, k_n, v_n (d) for token n of N; m_n = max(‖q_n‖, ε), q̂_n = q_n / m_n,
// k̂_n likewise; kv = K̂ᵀV (d × d), ks = Σ_n k̂_n, vs = Σ_n v_n;
//   kernel form:   average_n = (½ vs + kvᵀ q̂_n / π) · s_n,   s_n = 1 / (N/2 + q̂_n · ks / π)
//   official form: average_n = u_n · s_n,  u_n = ½ v_n + kvᵀ q̂_n / π (+ a_n),  s_n = 1 / max(‖u_n‖, ε)
//                  with a_n the weighted softmax branch, which this form adds inside the normalisation
//   out_n = average_n + Σ_t w_t v_{n + t − k/2}   (zero outside 0..N−1)
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace {

constexpr double kInvPi = 0.318309886183790671537767526745028724;  // 1/π

// 32-byte vectors (AVX2's width; two NEON registers on ARM) through GCC/Clang vector extensions:
// loops over them keep their accumulators in registers, which loops over plain arrays do not.
template <typename T>
struct Simd {
  typedef T vec __attribute__((vector_size(32)));
  static constexpr int lanes = 32 / sizeof(T);
  static vec load(const T* p) {
    vec v;
    std::memcpy(&v, p, sizeof v);
    return v;
  }
  static void store(T* p, vec v) { std::memcpy(p, &v, sizeof v); }
  static T sum(vec v) {
    T total = 0;
    for (int l = 0; l < lanes; ++l) total += v[l];
    return total;
  }
};

// Rows of a register tile: rows × D/lanes accumulators, at most 12 of AVX2's 16 vector registers.
template <typename T, int D>
constexpr int tile_rows() {
  constexpr int width = D / Simd<T>::lanes;
  return width >= 12 ? 1 : 12 / width;
}

// The largest tile height that divides D, for loops that tile the d axis itself.
template <typename T, int D>
constexpr int dividing_rows() {
  int rows = tile_rows<T, D>();
  while (D % rows) --rows;
  return rows;
}

// One (image, head): token n's q, k, v, `stride` elements apart in qkv.
template <typename T>
struct Head {
  const T* q;
  const T* k;
  const T* v;
  int64_t stride;  // 3C between tokens of qkv
  int64_t N;
  const T* q_row(int64_t n) const { return q + n * stride; }
  const T* k_row(int64_t n) const { return k + n * stride; }
  const T* v_row(int64_t n) const { return v + n * stride; }
};

template <typename T, int D>
T dot(const T* x, const T* y) {
  using S = Simd<T>;
  typename S::vec acc = {};
  for (int i = 0; i < D; i += S::lanes) acc += S::load(x + i) * S::load(y + i);
  return S::sum(acc);
}

template <typename T, int D>
T inverse_norm(const T* x, T eps) {
  return T(1) / std::max(std::sqrt(dot<T, D>(x, x)), eps);
}

// x̂ rows into `hat` (N × D, contiguous) and 1 / max(‖x‖, ε) into `inverse` (N).
template <typename T, int D>
void normalize_rows(const T* x, int64_t stride, int64_t N, T eps, T* hat, T* inverse) {
  for (int64_t n = 0; n < N; ++n) {
    const T* row = x + n * stride;
    const T scale = inverse_norm<T, D>(row, eps);
    inverse[n] = scale;
    for (int i = 0; i < D; ++i) hat[n * D + i] = row[i] * scale;
  }
}

// acc[i][·] = Σ_n a_n[i] x_n[·], a_n = row n of `a` (N × D, contiguous), x_n at x + n · x_stride:
// Kᵀ-times-V shaped, one rank-1 update per token into a tile of acc rows held in registers.
template <typename T, int D>
void outer_sum(const T* a, const T* x, int64_t x_stride, int64_t N, T (&acc)[D][D]) {
  using S = Simd<T>;
  constexpr int L = S::lanes, W = D / L, R = dividing_rows<T, D>();
  for (int i0 = 0; i0 < D; i0 += R) {
    typename S::vec tile[R][W] = {};
    for (int64_t n = 0; n < N; ++n) {
      const T* xn = x + n * x_stride;
      for (int r = 0; r < R; ++r) {
        const T an = a[n * D + i0 + r];
        for (int w = 0; w < W; ++w) tile[r][w] += an * S::load(xn + w * L);
      }
    }
    for (int r = 0; r < R; ++r)
      for (int w = 0; w < W; ++w) S::store(&acc[i0 + r][w * L], tile[r][w]);
  }
}

// sum[·] = Σ_n x_n[·], x_n at x + n · stride.
template <typename T, int D>
void row_sum(const T* x, int64_t stride, int64_t N, T (&sum)[D]) {
  for (int j = 0; j < D; ++j) sum[j] = 0;
  for (int64_t n = 0; n < N; ++n)
    for (int j = 0; j < D; ++j) sum[j] += x[n * stride + j];
}

// For R tokens at once: tile[r][·] = Σ_i x_r[i] M[i][·]. Q-times-kv shaped.
template <typename T, int D, int R>
void rows_times(const T* const (&x)[R], const T (&M)[D][D], T (&tile)[R][D]) {
  using S = Simd<T>;
  constexpr int L = S::lanes, W = D / L;
  typename S::vec acc[R][W] = {};
  for (int i = 0; i < D; ++i) {
    for (int r = 0; r < R; ++r) {
      const T xi = x[r][i];
      for (int w = 0; w < W; ++w) acc[r][w] += xi * S::load(&M[i][w * L]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int w = 0; w < W; ++w) S::store(&tile[r][w * L], acc[r][w]);
}

// Row pointers for R tokens from n0; rows past the end point at a zero row, so tiles stay full.
template <typename T, int R>
void token_rows(const T* base, int64_t stride, int64_t n0, int64_t N, const T* zeros, const T* (&rows)[R]) {
  for (int r = 0; r < R; ++r) rows[r] = n0 + r < N ? base + (n0 + r) * stride : zeros;
}

template <typename T, int D>
void transpose(const T (&M)[D][D], T (&out)[D][D]) {
  for (int i = 0; i < D; ++i)
    for (int j = 0; j < D; ++j) out[j][i] = M[i][j];
}

// What one head's forward leaves for the backward pass.
template <typename T>
struct Saved {
  T* inverse_q;  // (N): 1 / m_n
  T* inverse_k;  // (N)
  T* scale;      // (N): s_n
  T* moments;    // (D + 2, D): kv, then ks, then vs
  T* average;    // token n at average + n · out_stride
};

template <typename T, int D>
void forward_head(const Head<T>& in, const T* w_head, int64_t ksize, T eps, bool official, const T* aux, T* out,
                  int64_t out_stride, const Saved<T>* saved, std::vector<T>& scratch) {
  constexpr int R = tile_rows<T, D>();
  const int64_t N = in.N;
  scratch.resize(std::max<size_t>(scratch.size(), 2 * N * D + 2 * N + D));
  T* k_hat = scratch.data();
  T* values = k_hat + N * D;  // v rows side by side: qkv's rows, 3C apart, share L1's cache sets
  T* inverse_k = values + N * D;
  T* inverse_q = inverse_k + N;
  T* zeros = inverse_q + N;  // a row of D zeros, for the rows past the last token
  std::fill(zeros, zeros + D, T(0));
  normalize_rows<T, D>(in.k, in.stride, N, eps, k_hat, inverse_k);
  for (int64_t n = 0; n < N; ++n) std::copy(in.v_row(n), in.v_row(n) + D, values + n * D);

  T kv[D][D], ks[D], vs[D];
  outer_sum<T, D>(k_hat, values, D, N, kv);
  row_sum<T, D>(k_hat, D, N, ks);
  row_sum<T, D>(values, D, N, vs);

  const T half_n = T(0.5) * N, inv_pi = T(kInvPi);
  for (int64_t n0 = 0; n0 < N; n0 += R) {
    const T* q[R];
    token_rows<T, R>(in.q, in.stride, n0, N, zeros, q);
    T tile[R][D];
    rows_times<T, D, R>(q, kv, tile);  // q_n (unnormalised) times kv
    for (int r = 0; r < R && n0 + r < N; ++r) {
      const int64_t n = n0 + r;
      const T inv_m = inverse_norm<T, D>(q[r], eps);
      inverse_q[n] = inv_m;
      using S = Simd<T>;  // the output row in vector registers until its one store
      constexpr int L = S::lanes, W = D / L;
      typename S::vec o[W];
      T s;
      if (official) {  // u_n = ½ v_n + kvᵀ q̂_n / π, then u_n / max(‖u_n‖, ε)
        typename S::vec norm2 = {};
        for (int w = 0; w < W; ++w) {
          o[w] = T(0.5) * S::load(values + n * D + w * L) + S::load(&tile[r][w * L]) * (inv_m * inv_pi);
          if (aux) o[w] += S::load(aux + n * D + w * L);  // the branch, (N, D) contiguous per head
          norm2 += o[w] * o[w];
        }
        s = T(1) / std::max(std::sqrt(S::sum(norm2)), eps);
      } else {
        s = T(1) / (half_n + dot<T, D>(q[r], ks) * inv_m * inv_pi);  // q̂ = q / m
        for (int w = 0; w < W; ++w) o[w] = T(0.5) * S::load(vs + w * L) + S::load(&tile[r][w * L]) * (inv_m * inv_pi);
      }
      for (int w = 0; w < W; ++w) o[w] *= s;
      if (saved) {
        saved->scale[n] = s;
        for (int w = 0; w < W; ++w) S::store(saved->average + n * out_stride + w * L, o[w]);
      }
      for (int64_t t = 0; t < ksize; ++t) {  // the DWConv branch
        const int64_t source = n + t - ksize / 2;
        if (source < 0 || source >= N) continue;
        for (int w = 0; w < W; ++w) o[w] += w_head[t] * S::load(values + source * D + w * L);
      }
      for (int w = 0; w < W; ++w) S::store(out + n * out_stride + w * L, o[w]);
    }
  }
  if (saved) {
    std::copy(inverse_q, inverse_q + N, saved->inverse_q);
    std::copy(inverse_k, inverse_k + N, saved->inverse_k);
    std::copy(&kv[0][0], &kv[0][0] + D * D, saved->moments);
    std::copy(ks, ks + D, saved->moments + D * D);
    std::copy(vs, vs + D, saved->moments + D * D + D);
  }
}

// dL/dx from dL/dx̂ for x̂ = x / max(‖x‖, ε): (dx̂ − (dx̂ · x̂) x̂) / ‖x‖; below ε the norm is the
// constant ε, so the radial part stays in.
template <typename T, int D>
void normalize_backward(const T* grad_hat, const T* x_hat, T inverse, T eps, T* grad) {
  T radial = 0;
  if (inverse < T(1) / eps)
    for (int i = 0; i < D; ++i) radial += grad_hat[i] * x_hat[i];
  for (int i = 0; i < D; ++i) grad[i] = (grad_hat[i] - radial * x_hat[i]) * inverse;
}

template <typename T, int D>
void backward_head(const Head<T>& in, const T* w, int64_t ksize, T eps, bool official, const T* grad, int64_t grad_stride,
                   const Saved<T>& saved, T* grad_q, T* grad_k, T* grad_v, int64_t grad_in_stride, T* grad_w,
                   T* grad_aux, std::vector<T>& scratch) {
  constexpr int R = tile_rows<T, D>();
  const int64_t N = in.N;
  scratch.resize(std::max<size_t>(scratch.size(), 3 * N * D + N + D));
  T* q_hat = scratch.data();
  T* k_hat = q_hat + N * D;
  T* g_num = k_hat + N * D;  // dL/d(numerator) = s_n g_n, (N × D)
  T* g_den = g_num + N * D;  // dL/d(denominator) = −s_n (g_n · average_n), (N)
  T* zeros = g_den + N;
  std::fill(zeros, zeros + D, T(0));
  const T inv_pi = T(kInvPi);
  for (int64_t n = 0; n < N; ++n) {
    const T iq = saved.inverse_q[n], ik = saved.inverse_k[n], s = saved.scale[n];
    const T* g = grad + n * grad_stride;
    for (int i = 0; i < D; ++i) {
      q_hat[n * D + i] = in.q_row(n)[i] * iq;
      k_hat[n * D + i] = in.k_row(n)[i] * ik;
    }
    if (official) {  // o = u / max(‖u‖, ε): dL/du through the normalisation, and no denominator
      normalize_backward<T, D>(g, saved.average + n * grad_stride, s, eps, g_num + n * D);
      g_den[n] = 0;
      if (grad_aux) std::copy(g_num + n * D, g_num + n * D + D, grad_aux + n * D);  // u holds a_n as it is
    } else {
      for (int i = 0; i < D; ++i) g_num[n * D + i] = g[i] * s;
      g_den[n] = -s * dot<T, D>(g, saved.average + n * grad_stride);
    }
  }
  T kv[D][D], kv_t[D][D], ks[D];
  std::copy(saved.moments, saved.moments + D * D, &kv[0][0]);
  std::copy(saved.moments + D * D, saved.moments + D * D + D, ks);
  transpose<T, D>(kv, kv_t);

  // q: dL/dq̂_n = (kv g_num_n + ks g_den_n) / π
  for (int64_t n0 = 0; n0 < N; n0 += R) {
    const T* g[R];
    token_rows<T, R>(g_num, D, n0, N, zeros, g);
    T tile[R][D];
    rows_times<T, D, R>(g, kv_t, tile);
    for (int r = 0; r < R && n0 + r < N; ++r) {
      const int64_t n = n0 + r;
      for (int i = 0; i < D; ++i) tile[r][i] = (tile[r][i] + ks[i] * g_den[n]) * inv_pi;
      normalize_backward<T, D>(tile[r], q_hat + n * D, saved.inverse_q[n], eps, grad_q + n * grad_in_stride);
    }
  }

  // P = Σ_n q̂_n g_numᵀ (d × d), p = Σ_n q̂_n g_den_n: π times the gradient of kv and ks
  T P[D][D], P_t[D][D], p[D], half_g[D];
  outer_sum<T, D>(q_hat, g_num, D, N, P);
  row_sum<T, D>(g_num, D, N, half_g);
  for (int i = 0; i < D; ++i) {
    half_g[i] *= official ? T(0) : T(0.5);  // kernel form: via ½ vs, which every token's numerator holds
    p[i] = 0;
  }
  for (int64_t n = 0; n < N; ++n)
    for (int i = 0; i < D; ++i) p[i] += q_hat[n * D + i] * g_den[n];
  transpose<T, D>(P, P_t);

  // k and v: dL/dk̂_n = (P v_n + p) / π, dL/dv_n = Pᵀ k̂_n / π + ½ Σ g_num + the conv's share
  for (int64_t n0 = 0; n0 < N; n0 += R) {
    const T* v[R];
    const T* kh[R];
    token_rows<T, R>(in.v, in.stride, n0, N, zeros, v);
    token_rows<T, R>(k_hat, D, n0, N, zeros, kh);
    T tile_k[R][D], tile_v[R][D];
    rows_times<T, D, R>(v, P_t, tile_k);
    rows_times<T, D, R>(kh, P, tile_v);
    for (int r = 0; r < R && n0 + r < N; ++r) {
      const int64_t n = n0 + r;
      for (int i = 0; i < D; ++i) tile_k[r][i] = (tile_k[r][i] + p[i]) * inv_pi;
      normalize_backward<T, D>(tile_k[r], k_hat + n * D, saved.inverse_k[n], eps, grad_k + n * grad_in_stride);
      T gv[D];  // in registers until the one store, as in the forward
      for (int j = 0; j < D; ++j) gv[j] = tile_v[r][j] * inv_pi + half_g[j];
      if (official)  // via ½ v_n, in token n's own u_n only
        for (int j = 0; j < D; ++j) gv[j] += T(0.5) * g_num[n * D + j];
      for (int64_t t = 0; t < ksize; ++t) {  // out_m holds w_t v_n for m = n − t + k/2
        const int64_t target = n - t + ksize / 2;
        if (target < 0 || target >= N) continue;
        const T* g = grad + target * grad_stride;
        for (int j = 0; j < D; ++j) gv[j] += w[t] * g[j];
        grad_w[t] += dot<T, D>(g, v[r]);
      }
      std::copy(gv, gv + D, grad_v + n * grad_in_stride);
    }
  }
}

template <int D>
struct HeadDim {
  static constexpr int value = D;
};

// Calls f(HeadDim<D>{}) for the head dims this file is compiled for.
template <typename F>
bool with_head_dim(int64_t d, F&& f) {
  switch (d) {
    case 16: f(HeadDim<16>{}); return true;
    case 24: f(HeadDim<24>{}); return true;
    case 32: f(HeadDim<32>{}); return true;
    case 48: f(HeadDim<48>{}); return true;
    case 64: f(HeadDim<64>{}); return true;
    default: return false;
  }
}

// Where (image b, head h) = (bh / heads, bh % heads) starts in each tensor: qkv (B, N, 3C); out,
// average and grad (B, N, H, d); stats (B, H, 3, N); moments (B, H, d + 2, d).
struct Offsets {
  int64_t qkv, tokens, stats, moments;
  Offsets(int64_t bh, int64_t heads, int64_t N, int64_t d) {
    const int64_t b = bh / heads, h = bh % heads, C = heads * d;
    qkv = b * N * 3 * C + h * d;
    tokens = b * N * C + h * d;
    stats = bh * 3 * N;
    moments = bh * (d + 2) * d;
  }
};

template <typename T>
Head<T> head_at(const T* q, int64_t C, int64_t N) {
  return {q, q + C, q + 2 * C, 3 * C, N};
}

template <typename T>
Saved<T> saved_at(const Offsets& at, int64_t N, const torch::Tensor& stats, const torch::Tensor& moments,
                  const torch::Tensor& average) {
  T* st = stats.data_ptr<T>() + at.stats;
  return {st, st + N, st + 2 * N, moments.data_ptr<T>() + at.moments, average.data_ptr<T>() + at.tokens};
}

void check_inputs(const torch::Tensor& qkv, int64_t heads, const c10::optional<torch::Tensor>& weight) {
  TORCH_CHECK(qkv.device().is_cpu() && qkv.dim() == 3 && qkv.is_contiguous(),
              "qkv must be a contiguous CPU tensor (B, N, 3C), got ", qkv.sizes());
  TORCH_CHECK(heads > 0 && qkv.size(2) % (3 * heads) == 0, "qkv's last axis ", qkv.size(2),
              " is not 3 × heads × head_dim for heads=", heads);
  if (weight) {
    TORCH_CHECK(weight->dim() == 2 && weight->size(0) == heads && weight->is_contiguous() &&
                    weight->scalar_type() == qkv.scalar_type(),
                "the conv weight must be (heads, k), contiguous, qkv's dtype; got ", weight->sizes());
  }
}

void check_aux(const torch::Tensor& qkv, int64_t heads, bool official, const c10::optional<torch::Tensor>& aux) {
  if (!aux) return;
  const int64_t B = qkv.size(0), N = qkv.size(1), d = qkv.size(2) / (3 * heads);
  TORCH_CHECK(official, "the softmax branch enters the kernel only in the official form; add it to the kernel form's output");
  TORCH_CHECK(aux->is_contiguous() && aux->dim() == 4 && aux->size(0) == B && aux->size(1) == heads &&
                  aux->size(2) == N && aux->size(3) == d && aux->scalar_type() == qkv.scalar_type(),
              "the branch must be contiguous (B, H, N, d) in qkv's dtype, got ", aux->sizes());
}

}  // namespace

// qkv (B, N, 3C), weight (H, k) or None → out (B, N, H, d), and if `save` the tensors backward needs:
// stats (B, H, 3, N) = 1/m, 1/‖k‖ clamped, s; moments (B, H, d + 2, d); average (B, N, H, d).
// official: the authors' form (½ v_n, L2-normalised output) instead of the kernel form; aux (B, H, N, d), the
// weighted softmax branch, which the official form adds before its normalisation (None: no branch).
std::vector<torch::Tensor> forward(const torch::Tensor& qkv, int64_t heads, const c10::optional<torch::Tensor>& weight,
                                   double eps, bool save, bool official, const c10::optional<torch::Tensor>& aux) {
  check_inputs(qkv, heads, weight);
  check_aux(qkv, heads, official, aux);
  const int64_t B = qkv.size(0), N = qkv.size(1), C = qkv.size(2) / 3, d = C / heads;
  const int64_t ksize = weight ? weight->size(1) : 0;
  auto out = torch::empty({B, N, heads, d}, qkv.options());
  torch::Tensor stats, moments, average;
  if (save) {
    stats = torch::empty({B, heads, 3, N}, qkv.options());
    moments = torch::empty({B, heads, d + 2, d}, qkv.options());
    average = torch::empty({B, N, heads, d}, qkv.options());
  }
  bool supported = true;
  AT_DISPATCH_FLOATING_TYPES(qkv.scalar_type(), "linear_angular_forward", [&] {
    using T = scalar_t;
    supported = with_head_dim(d, [&](auto dim) {
      constexpr int D = decltype(dim)::value;
      const T* src = qkv.data_ptr<T>();
      const T* w = weight ? weight->data_ptr<T>() : nullptr;
      T* dst = out.data_ptr<T>();
      at::parallel_for(0, B * heads, 1, [&](int64_t begin, int64_t end) {
        std::vector<T> scratch;
        for (int64_t bh = begin; bh < end; ++bh) {
          const Offsets at(bh, heads, N, d);
          Saved<T> saved{};
          if (save) saved = saved_at<T>(at, N, stats, moments, average);
          forward_head<T, D>(head_at(src + at.qkv, C, N), w ? w + (bh % heads) * ksize : nullptr, ksize, T(eps),
                             official, aux ? aux->data_ptr<T>() + bh * N * d : nullptr, dst + at.tokens, C,
                             save ? &saved : nullptr, scratch);
        }
      });
    });
  });
  TORCH_CHECK(supported, "head_dim ", d, " has no compiled kernel (16, 24, 32, 48 or 64)");
  if (!save) return {out};
  return {out, stats, moments, average};
}

// grad (B, N, H, d) contiguous, with forward's saved tensors → grad_qkv (B, N, 3C), grad_weight (H, k) (empty
// without a conv), grad_aux (B, H, N, d) (empty unless with_aux).
std::vector<torch::Tensor> backward(const torch::Tensor& grad, const torch::Tensor& qkv, int64_t heads,
                                    const c10::optional<torch::Tensor>& weight, double eps, bool official,
                                    const torch::Tensor& stats, const torch::Tensor& moments,
                                    const torch::Tensor& average, bool with_aux) {
  check_inputs(qkv, heads, weight);
  TORCH_CHECK(grad.is_contiguous() && grad.sizes() == average.sizes() && grad.scalar_type() == qkv.scalar_type(),
              "grad must be contiguous (B, N, H, d) in qkv's dtype, got ", grad.sizes());
  const int64_t B = qkv.size(0), N = qkv.size(1), C = qkv.size(2) / 3, d = C / heads;
  const int64_t ksize = weight ? weight->size(1) : 0;
  auto grad_qkv = torch::empty_like(qkv);
  auto grad_aux = with_aux ? torch::empty({B, heads, N, d}, qkv.options()) : torch::empty({0}, qkv.options());
  auto grad_w = torch::zeros({B, heads, std::max<int64_t>(ksize, 1)}, qkv.options());  // summed over B below
  bool supported = true;
  AT_DISPATCH_FLOATING_TYPES(qkv.scalar_type(), "linear_angular_backward", [&] {
    using T = scalar_t;
    supported = with_head_dim(d, [&](auto dim) {
      constexpr int D = decltype(dim)::value;
      const T* w = weight ? weight->data_ptr<T>() : nullptr;
      at::parallel_for(0, B * heads, 1, [&](int64_t begin, int64_t end) {
        std::vector<T> scratch;
        for (int64_t bh = begin; bh < end; ++bh) {
          const Offsets at(bh, heads, N, d);
          T* g = grad_qkv.data_ptr<T>() + at.qkv;
          backward_head<T, D>(head_at(qkv.data_ptr<T>() + at.qkv, C, N), w ? w + (bh % heads) * ksize : nullptr, ksize,
                              T(eps), official, grad.data_ptr<T>() + at.tokens, C,
                              saved_at<T>(at, N, stats, moments, average),
                              g, g + C, g + 2 * C, 3 * C, grad_w.data_ptr<T>() + bh * grad_w.size(2),
                              with_aux ? grad_aux.data_ptr<T>() + bh * N * d : nullptr, scratch);
        }
      });
    });
  });
  TORCH_CHECK(supported, "head_dim ", d, " has no compiled kernel (16, 24, 32, 48 or 64)");
  return {grad_qkv, weight ? grad_w.sum(0) : torch::empty({0}, qkv.options()), grad_aux};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "linear-angular attention + token conv, forward");
  m.def("backward", &backward, "linear-angular attention + token conv, backward");
}
