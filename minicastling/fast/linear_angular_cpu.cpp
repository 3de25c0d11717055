// Linear-angular attention (kernel or official form), the authors' (k, 1) token conv and the masked
// softmax branch, for the CPU.
//
// The same numbers as the readable modules (attention.linear_angular_attention, branches.TokenConv1d,
// branches.masked_softmax_attention), computed one (image, head) at a time with everything that head
// touches in cache: q, k, v are read straight out of the qkv projection (B, N, 3C), K̂ᵀV is a d × d
// matrix, and the output is written token-major (B, N, H, d), the layout the output projection reads.
// At the token counts the course uses, library calls spend most of their time between calls
// (tutorial 07); here there is one call per layer. Loaded and tested against the readable forms by
// cpu_kernel.py.
//
// Notation per head: q_n, k_n, v_n (d) for token n of N; m_n = max(‖q_n‖, ε), q̂_n = q_n / m_n,
// k̂_n likewise; kv = K̂ᵀV (d × d), ks = Σ_n k̂_n, vs = Σ_n v_n;
//   kernel form:   average_n = (½ vs + kvᵀ q̂_n / π) · s_n,   s_n = 1 / (N/2 + q̂_n · ks / π)
//   official form: average_n = u_n · s_n,  u_n = ½ v_n + kvᵀ q̂_n / π + α y_n,  s_n = 1 / max(‖u_n‖, ε)
//   the softmax branch: y_n = Σ_j [p_nj > τ] p_nj v_j,  p_n = softmax_j(q_n · k_j / √d), τ the threshold,
//                  weighted by α; the official form adds α y_n inside its normalisation (above), the
//                  kernel form to its average: average_n + α y_n
//   out_n = average_n (+ α y_n, kernel form) + Σ_t w_t v_{n + t − k/2}   (zero outside 0..N−1)
// The branch is computed as flash attention computes softmax attention: a block of query rows at a
// time against all keys, keeping per row only its largest score and 1 / Σ exp, never the N × N matrix;
// the backward recomputes the weights from those two numbers and y_n (the correction term of the
// softmax's gradient is dL/dy_n · y_n).
#include <torch/extension.h>

#include <ATen/Parallel.h>

#ifdef __AVX__
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
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
  static vec splat(T x) { return vec{} + x; }
  static T sum(vec v) {
    T total = 0;
    for (int l = 0; l < lanes; ++l) total += v[l];
    return total;
  }
  static T max(vec v) {
    T largest = v[0];
    for (int l = 1; l < lanes; ++l) largest = std::max(largest, v[l]);
    return largest;
  }
};

// exp of each lane. float: Cephes' expf (a degree-6 polynomial on [−ln2/2, ln2/2] times 2^n), within 2
// ulp of std::exp, in registers; double: std::exp lane by lane (double runs in the tests, not in training).
inline Simd<float>::vec exp_lanes(Simd<float>::vec x) {
  using V = Simd<float>::vec;
  typedef int32_t I __attribute__((vector_size(32)));
  x = x < V{} - 87.0f ? V{} - 87.0f : x;  // e^−87 ≈ 1.6e−38: the smallest normal float's neighbourhood
  x = x > V{} + 88.0f ? V{} + 88.0f : x;
  V n = x * 1.44269504088896341f + 0.5f;
  V whole = __builtin_convertvector(__builtin_convertvector(n, I), V);  // truncated towards 0
  n = whole > n ? whole - 1.0f : whole;                               // floor(x / ln 2 + ½)
  x = x - n * 0.693359375f + n * 2.12194440e-4f;                      // x − n ln 2, in two parts
  V y = V{} + 1.9875691500e-4f;
  y = y * x + 1.3981999507e-3f;
  y = y * x + 8.3334519073e-3f;
  y = y * x + 4.1665795894e-2f;
  y = y * x + 1.6666665459e-1f;
  y = y * x + 5.0000001201e-1f;
  y = y * (x * x) + x + 1.0f;
  const I bits = (__builtin_convertvector(n, I) + 127) << 23;  // 2^n, built in the exponent field
  V scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return y * scale;
}

inline Simd<double>::vec exp_lanes(Simd<double>::vec x) {
  for (int l = 0; l < Simd<double>::lanes; ++l) x[l] = std::exp(x[l]);
  return x;
}

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

// c[m][·] (+)= Σ_t a(m, t) b_t[·] for rows m0 ≤ m < m0 + MR and the W vectors of columns from c's and
// b's starting points; a(m, t) = a[m · a_rows + t · a_cols], b_t = b + t · ldb. MR × W accumulators
// stay in registers through the sum over t. The one matrix product of the softmax branch.
template <typename T, int MR, int W>
void panel_tile(int64_t K, const T* a, int64_t a_rows, int64_t a_cols, const T* b, int64_t ldb, T* c, int64_t ldc,
                bool accumulate) {
  using S = Simd<T>;
  constexpr int L = S::lanes;
  typename S::vec acc[MR][W];
  for (int r = 0; r < MR; ++r)
    for (int w = 0; w < W; ++w) acc[r][w] = accumulate ? S::load(c + r * ldc + w * L) : typename S::vec{};
  for (int64_t t = 0; t < K; ++t) {
    typename S::vec bt[W];
    for (int w = 0; w < W; ++w) bt[w] = S::load(b + t * ldb + w * L);
    for (int r = 0; r < MR; ++r) {
      const T x = a[r * a_rows + t * a_cols];
      for (int w = 0; w < W; ++w) acc[r][w] += x * bt[w];
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int w = 0; w < W; ++w) S::store(c + r * ldc + w * L, acc[r][w]);
}

// The columns from j0 on, W vectors at a time, then the one or two vectors left, for MR rows from `a` and `c`.
template <typename T, int MR, int W>
void panel_rows(int64_t J, int64_t K, const T* a, int64_t a_rows, int64_t a_cols, const T* b, int64_t ldb, T* c,
                int64_t ldc, bool accumulate) {
  constexpr int L = Simd<T>::lanes;
  int64_t j0 = 0;
  for (; j0 + W * L <= J; j0 += W * L) panel_tile<T, MR, W>(K, a, a_rows, a_cols, b + j0, ldb, c + j0, ldc, accumulate);
  for (; j0 + 2 * L <= J; j0 += 2 * L) panel_tile<T, MR, 2>(K, a, a_rows, a_cols, b + j0, ldb, c + j0, ldc, accumulate);
  if (j0 < J) panel_tile<T, MR, 1>(K, a, a_rows, a_cols, b + j0, ldb, c + j0, ldc, accumulate);
}

// C (M × J) (+)= A (M × K) B (K × J), J a multiple of the lanes, in tiles of MR rows × W vectors; the rows
// past the last full tile one at a time.
template <typename T, int MR, int W>
void panel(int64_t M, int64_t J, int64_t K, const T* a, int64_t a_rows, int64_t a_cols, const T* b, int64_t ldb,
           T* c, int64_t ldc, bool accumulate) {
  int64_t m0 = 0;
  for (; m0 + MR <= M; m0 += MR)
    panel_rows<T, MR, W>(J, K, a + m0 * a_rows, a_rows, a_cols, b, ldb, c + m0 * ldc, ldc, accumulate);
  for (; m0 < M; ++m0)
    panel_rows<T, 1, (W > 1 ? 2 * W : 1)>(J, K, a + m0 * a_rows, a_rows, a_cols, b, ldb, c + m0 * ldc, ldc, accumulate);
}

// Products whose columns run over the keys (J = N rounded up to the lanes): 4 rows × 3 vectors.
template <typename T>
void over_keys(int64_t M, int64_t J, int64_t K, const T* a, int64_t a_rows, int64_t a_cols, const T* b, int64_t ldb,
               T* c, int64_t ldc, bool accumulate) {
  panel<T, 4, 3>(M, J, K, a, a_rows, a_cols, b, ldb, c, ldc, accumulate);
}

// Products whose columns are one head's d: a whole row of D in registers, as many rows as fit in 12.
template <typename T, int D>
void over_head_dim(int64_t M, int64_t K, const T* a, int64_t a_rows, int64_t a_cols, const T* b, T* c, bool accumulate) {
  constexpr int W = D / Simd<T>::lanes;
  panel<T, W >= 12 ? 1 : 12 / W, W>(M, D, K, a, a_rows, a_cols, b, D, c, D, accumulate);
}

constexpr int64_t kBlock = 24;  // query rows whose weights are held at once: kBlock × N numbers, never N × N

inline int64_t padded(int64_t N, int lanes) { return (N + lanes - 1) / lanes * lanes; }

// xt (D × Np) = the rows x_n (n < N, `stride` apart) side by side as columns, zero past N.
template <typename T, int D>
void columns_of(const T* x, int64_t stride, int64_t N, int64_t Np, T* xt) {
  std::fill(xt, xt + D * Np, T(0));
  for (int64_t n = 0; n < N; ++n)
    for (int i = 0; i < D; ++i) xt[i * Np + n] = x[n * stride + i];
}

// p_j = e_j · inverse in place, and [p_j > τ] p_j into `kept` (if given); returns how many are kept.
template <typename T>
int64_t weights_from(T* e, int64_t N, T threshold, T inverse, T* kept) {
  using S = Simd<T>;
  constexpr int L = S::lanes;
  const int64_t whole = N / L * L;
  typename S::vec kept_lanes = {};  // per lane, how many kept
  for (int64_t j = 0; j < whole; j += L) {
    const typename S::vec p = S::load(e + j) * inverse;
    S::store(e + j, p);
    const auto keep = p > threshold;
    if (kept) S::store(kept + j, keep ? p : typename S::vec{});
    kept_lanes += keep ? S::splat(T(1)) : typename S::vec{};
  }
  int64_t count = int64_t(S::sum(kept_lanes));
  for (int64_t j = whole; j < N; ++j) {
    e[j] *= inverse;
    if (kept) kept[j] = e[j] > threshold ? e[j] : T(0);
    count += e[j] > threshold;
  }
  return count;
}

// One row of scores s (N of them, scaled by 1/√d here) → the row's largest scaled score and 1 / Σ exp, and
// in s the weights p_j = exp(s_j − max) / Σ, where `kept` (if given) receives [p_j > τ] p_j; returns how many
// are kept.
template <typename T>
int64_t softmax_row(T* s, int64_t N, T scale, T threshold, T* kept, T& row_max, T& inverse_sum) {
  using S = Simd<T>;
  constexpr int L = S::lanes;
  const int64_t whole = N / L * L;
  T largest = -std::numeric_limits<T>::infinity();
  if (whole) {
    typename S::vec m = S::load(s) * scale;
    for (int64_t j = L; j < whole; j += L) {
      const typename S::vec x = S::load(s + j) * scale;
      m = x > m ? x : m;
    }
    largest = S::max(m);
  }
  for (int64_t j = whole; j < N; ++j) largest = std::max(largest, s[j] * scale);
  typename S::vec total = {};
  for (int64_t j = 0; j < whole; j += L) {
    const typename S::vec e = exp_lanes(S::load(s + j) * scale - largest);
    total += e;
    S::store(s + j, e);
  }
  T sum = S::sum(total);
  for (int64_t j = whole; j < N; ++j) sum += (s[j] = std::exp(s[j] * scale - largest));
  const T inverse = T(1) / sum;
  row_max = largest;
  inverse_sum = inverse;
  return weights_from(s, N, threshold, inverse, kept);
}

// One bit per lane, set where the lane is not 0: AVX's movemask where the compiler targets it.
inline uint32_t nonzero_bits(Simd<float>::vec x) {
#ifdef __AVX__
  __m256 v;
  std::memcpy(&v, &x, sizeof v);
  return uint32_t(_mm256_movemask_ps(_mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_NEQ_UQ)));
#else
  uint32_t bits = 0;
  for (int l = 0; l < Simd<float>::lanes; ++l) bits |= uint32_t(x[l] != 0.0f) << l;
  return bits;
#endif
}

inline uint32_t nonzero_bits(Simd<double>::vec x) {
  uint32_t bits = 0;
  for (int l = 0; l < Simd<double>::lanes; ++l) bits |= uint32_t(x[l] != 0.0) << l;
  return bits;
}

// Where the kept weights of a row are: the indices j < N with weight_j ≠ 0 (p_j > τ ≥ 0 makes p_j > 0).
template <typename T>
int64_t kept_indices(const T* weights, int64_t N, int32_t* index) {
  using S = Simd<T>;
  constexpr int L = S::lanes;
  const int64_t whole = N / L * L;
  int64_t count = 0;
  for (int64_t j0 = 0; j0 < whole; j0 += L)
    for (uint32_t bits = nonzero_bits(S::load(weights + j0)); bits; bits &= bits - 1)
      index[count++] = int32_t(j0 + __builtin_ctz(bits));
  for (int64_t j = whole; j < N; ++j)
    if (weights[j] != T(0)) index[count++] = int32_t(j);
  return count;
}

// out (D) = Σ_c weights[index_c] rows[index_c] over a row's kept indices, rows D apart: the sparse form of one
// row of a weights × rows product, the terms in the same order and with the same fused multiply–adds as the
// dense product, whose other terms are exact zeros. So both give the same numbers to the last bit.
template <typename T, int D>
void sparse_row_times(const T* weights, const int32_t* index, int64_t count, const T* rows, T* out) {
  using S = Simd<T>;
  constexpr int L = S::lanes, W = D / L;
  typename S::vec acc[W] = {};
  for (int64_t c = 0; c < count; ++c) {
    const int64_t j = index[c];
    const T x = weights[j];
    for (int w = 0; w < W; ++w) acc[w] += x * S::load(rows + j * D + w * L);
  }
  for (int w = 0; w < W; ++w) S::store(out + w * L, acc[w]);
}

// A block of rows with fewer kept weights than 1/kSparseShare of its entries is done sparse. A kept entry
// costs a sparse loop many times what a dense product spends on one entry; measured on a 2-core x86-64 CPU
// at 49 and 196 tokens, the sparse loops were slower at 13 % of entries kept and faster at 3 %.
constexpr int64_t kSparseShare = 16;

// One head's softmax branch: y_n (N × D, contiguous) = Σ_j [p_nj > τ] p_nj v_j, and per row its largest
// scaled score and 1 / Σ exp. `values` holds the v rows side by side (N × D).
template <typename T, int D>
void branch_forward(const Head<T>& in, const T* values, T threshold, T* y, T* row_max, T* inverse_sum,
                    std::vector<T>& scratch, std::vector<int32_t>& index) {
  const int64_t N = in.N, Np = padded(N, Simd<T>::lanes);
  scratch.resize(std::max<size_t>(scratch.size(), D * Np + 2 * kBlock * Np));
  index.resize(std::max<size_t>(index.size(), N));
  T* kt = scratch.data();
  T* s = kt + D * Np;  // kBlock rows of scores, then their weights
  T* kept = s + kBlock * Np;
  columns_of<T, D>(in.k, in.stride, N, Np, kt);
  const T scale = T(1) / std::sqrt(T(D));
  for (int64_t n0 = 0; n0 < N; n0 += kBlock) {
    const int64_t rows = std::min(kBlock, N - n0);
    over_keys<T>(rows, Np, D, in.q_row(n0), in.stride, 1, kt, Np, s, Np, false);  // q_n · k_j
    int64_t count = 0;
    for (int64_t r = 0; r < rows; ++r)
      count += softmax_row<T>(s + r * Np, N, scale, threshold, kept + r * Np, row_max[n0 + r], inverse_sum[n0 + r]);
    if (count * kSparseShare >= rows * N) {
      over_head_dim<T, D>(rows, N, kept, Np, 1, values, y + n0 * D, false);  // Σ_j kept_nj v_j
      continue;
    }
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t found = kept_indices<T>(kept + r * Np, N, index.data());
      sparse_row_times<T, D>(kept + r * Np, index.data(), found, values, y + (n0 + r) * D);
    }
  }
}

// One head's softmax branch backward, from dy (N × D, contiguous: dL/dy_n) and what the forward kept:
// adds dL/dq_n, dL/dk_n, dL/dv_n into the rows of grad_q, grad_k, grad_v (`stride` apart). With
// g_nj = [p_nj > τ] dy_n · v_j (the mask passes no gradient), dL/ds_nj = p_nj (g_nj − dy_n · y_n) / √d.
// g and dL/dv need only the kept entries: a block with few of them computes those alone.
template <typename T, int D>
void branch_backward(const Head<T>& in, const T* dy, const T* y, T threshold, const T* row_max,
                     const T* inverse_sum, T* grad_q, T* grad_k, T* grad_v, int64_t stride, std::vector<T>& scratch,
                     std::vector<int32_t>& index) {
  using S = Simd<T>;
  constexpr int L = S::lanes, W = D / L;
  const int64_t N = in.N, Np = padded(N, L);
  scratch.resize(std::max<size_t>(scratch.size(), 4 * D * Np + 3 * kBlock * Np + 3 * N * D + kBlock * D));
  index.resize(std::max<size_t>(index.size(), kBlock * N));
  T* kt = scratch.data();       // k as columns (D × Np)
  T* vt = kt + D * Np;          // v as columns
  T* grad_kt = vt + D * Np;     // dL/dk, as columns, summed over the blocks
  T* grad_vt = grad_kt + D * Np;  // dL/dv from the dense blocks, as columns
  T* s = grad_vt + D * Np;      // scores, then weights, then dL/ds (kBlock × Np)
  T* g = s + kBlock * Np;       // dy_n · v_j (where kept, at least)
  T* kept = g + kBlock * Np;    // the kept weights
  T* keys = kept + kBlock * Np; // k rows side by side (N × D)
  T* values = keys + N * D;     // v rows side by side
  T* grad_v_rows = values + N * D;  // dL/dv from the sparse blocks, as rows (N × D)
  T* grad_q_block = grad_v_rows + N * D;
  columns_of<T, D>(in.k, in.stride, N, Np, kt);
  columns_of<T, D>(in.v, in.stride, N, Np, vt);
  std::fill(grad_kt, grad_kt + 2 * D * Np, T(0));
  std::fill(grad_v_rows, grad_v_rows + N * D, T(0));
  for (int64_t n = 0; n < N; ++n) {
    std::copy(in.k_row(n), in.k_row(n) + D, keys + n * D);
    std::copy(in.v_row(n), in.v_row(n) + D, values + n * D);
  }
  const T scale = T(1) / std::sqrt(T(D));
  const int64_t whole = N / L * L;
  int64_t counts[kBlock];
  for (int64_t n0 = 0; n0 < N; n0 += kBlock) {
    const int64_t rows = std::min(kBlock, N - n0);
    over_keys<T>(rows, Np, D, in.q_row(n0), in.stride, 1, kt, Np, s, Np, false);  // q_n · k_j again
    int64_t count = 0;
    for (int64_t r = 0; r < rows; ++r) {  // the weights p_nj, and the kept ones
      const int64_t n = n0 + r;
      T* sr = s + r * Np;
      T* kr = kept + r * Np;
      const T largest = row_max[n], inverse = inverse_sum[n];
      for (int64_t j = 0; j < whole; j += L)
        S::store(sr + j, exp_lanes(S::load(sr + j) * scale - largest));
      for (int64_t j = whole; j < N; ++j) sr[j] = std::exp(sr[j] * scale - largest);
      count += weights_from(sr, N, threshold, inverse, kr);
      std::fill(sr + N, sr + Np, T(0));
      std::fill(kr + N, kr + Np, T(0));
    }
    const bool sparse = count * kSparseShare < rows * N;
    if (sparse) {  // dy_n · v_j at the kept entries only
      for (int64_t r = 0; r < rows; ++r) counts[r] = kept_indices<T>(kept + r * Np, N, index.data() + r * N);
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < counts[r]; ++c) {
          const int64_t j = index[r * N + c];
          g[r * Np + j] = dot<T, D>(dy + (n0 + r) * D, values + j * D);
        }
    } else {
      over_keys<T>(rows, Np, D, dy + n0 * D, D, 1, vt, Np, g, Np, false);  // dy_n · v_j
    }
    for (int64_t r = 0; r < rows; ++r) {  // dL/ds_nj, scaled for the q·k product, in place of p_nj
      const int64_t n = n0 + r;
      T* sr = s + r * Np;
      const T* gr = g + r * Np;
      const T* kr = kept + r * Np;
      const T correction = dot<T, D>(dy + n * D, y + n * D);
      for (int64_t j = 0; j < whole; j += L) {
        const typename S::vec p = S::load(sr + j);
        const typename S::vec gk = S::load(kr + j) != T(0) ? S::load(gr + j) : typename S::vec{};
        S::store(sr + j, p * (gk - correction) * scale);
      }
      for (int64_t j = whole; j < N; ++j) sr[j] = sr[j] * ((kr[j] != T(0) ? gr[j] : T(0)) - correction) * scale;
    }
    over_head_dim<T, D>(rows, N, s, Np, 1, keys, grad_q_block, false);                    // Σ_j ds_nj k_j
    over_keys<T>(D, Np, rows, in.q_row(n0), 1, in.stride, s, Np, grad_kt, Np, true);     // Σ_n q_n ds_nj
    if (sparse) {  // Σ_n dy_n kept_nj, into the kept rows j
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < counts[r]; ++c) {
          const int64_t j = index[r * N + c];
          const T x = kept[r * Np + j];
          for (int w = 0; w < W; ++w)
            S::store(grad_v_rows + j * D + w * L,
                     S::load(grad_v_rows + j * D + w * L) + x * S::load(dy + (n0 + r) * D + w * L));
        }
    } else {
      over_keys<T>(D, Np, rows, dy + n0 * D, 1, D, kept, Np, grad_vt, Np, true);  // Σ_n dy_n kept_nj
    }
    for (int64_t r = 0; r < rows; ++r)
      for (int i = 0; i < D; ++i) grad_q[(n0 + r) * stride + i] += grad_q_block[r * D + i];
  }
  for (int64_t n = 0; n < N; ++n)
    for (int i = 0; i < D; ++i) {
      grad_k[n * stride + i] += grad_kt[i * Np + n];
      grad_v[n * stride + i] += grad_vt[i * Np + n] + grad_v_rows[n * D + i];
    }
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

// The softmax branch of one head: its weight α and threshold τ, and where y (N × D) and each row's
// largest scaled score and 1 / Σ exp go (the saved tensors, or a worker's own buffer).
template <typename T>
struct Branch {
  T alpha;
  T threshold;
  T* y;
  T* row_max;
  T* inverse_sum;
};

template <typename T, int D>
void forward_head(const Head<T>& in, const T* w_head, int64_t ksize, T eps, bool official, const Branch<T>* branch,
                  T* out, int64_t out_stride, const Saved<T>* saved, std::vector<T>& scratch,
                  std::vector<T>& branch_scratch, std::vector<int32_t>& index) {
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
  if (branch)
    branch_forward<T, D>(in, values, branch->threshold, branch->y, branch->row_max, branch->inverse_sum,
                         branch_scratch, index);
  const T alpha = branch ? branch->alpha : T(0);
  const T* y = branch ? branch->y : nullptr;

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
      if (official) {  // u_n = ½ v_n + kvᵀ q̂_n / π + α y_n, then u_n / max(‖u_n‖, ε)
        typename S::vec norm2 = {};
        for (int w = 0; w < W; ++w) {
          o[w] = T(0.5) * S::load(values + n * D + w * L) + S::load(&tile[r][w * L]) * (inv_m * inv_pi);
          if (y) o[w] += alpha * S::load(y + n * D + w * L);
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
      if (y && !official)  // the kernel form adds the branch to its average
        for (int w = 0; w < W; ++w) o[w] += alpha * S::load(y + n * D + w * L);
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
                   const Branch<T>* branch, std::vector<T>& scratch, std::vector<T>& branch_scratch,
                   std::vector<int32_t>& index) {
  constexpr int R = tile_rows<T, D>();
  const int64_t N = in.N;
  scratch.resize(std::max<size_t>(scratch.size(), 4 * N * D + N + D));
  T* q_hat = scratch.data();
  T* k_hat = q_hat + N * D;
  T* g_num = k_hat + N * D;  // dL/d(numerator) = s_n g_n, (N × D)
  T* g_den = g_num + N * D;  // dL/d(denominator) = −s_n (g_n · average_n), (N)
  T* zeros = g_den + N;
  T* grad_y = zeros + D;  // dL/dy_n = α dL/du_n (official) or α dL/dout_n (kernel), (N × D)
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
      if (branch)  // u holds α y_n as it is
        for (int i = 0; i < D; ++i) grad_y[n * D + i] = branch->alpha * g_num[n * D + i];
    } else {
      for (int i = 0; i < D; ++i) g_num[n * D + i] = g[i] * s;
      g_den[n] = -s * dot<T, D>(g, saved.average + n * grad_stride);
      if (branch)  // out holds α y_n as it is
        for (int i = 0; i < D; ++i) grad_y[n * D + i] = branch->alpha * g[i];
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
  if (branch)
    branch_backward<T, D>(in, grad_y, branch->y, branch->threshold, branch->row_max, branch->inverse_sum, grad_q,
                          grad_k, grad_v, grad_in_stride, branch_scratch, index);
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
// average and grad (B, N, H, d); stats (B, H, 3 or 5, N); moments (B, H, d + 2, d); branch (B, H, N, d).
// stats: 1/m, 1/‖k‖ clamped, s; with the branch also its row maxima and 1 / Σ exp.
inline int64_t stats_rows(bool with_branch) { return with_branch ? 5 : 3; }

struct Offsets {
  int64_t qkv, tokens, stats, moments, head;
  Offsets(int64_t bh, int64_t heads, int64_t N, int64_t d, int64_t rows) {
    const int64_t b = bh / heads, h = bh % heads, C = heads * d;
    qkv = b * N * 3 * C + h * d;
    tokens = b * N * C + h * d;
    stats = bh * rows * N;
    moments = bh * (d + 2) * d;
    head = bh * N * d;
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

// The branch's place for head `at`: in the saved tensors when there are any, else in `own` (N × D + 2N).
template <typename T, int D>
Branch<T> branch_at(const Offsets& at, int64_t N, T alpha, T threshold, const torch::Tensor& stats,
                    const torch::Tensor& branch, std::vector<T>& own) {
  if (branch.numel()) {
    T* st = stats.data_ptr<T>() + at.stats;
    return {alpha, threshold, branch.data_ptr<T>() + at.head, st + 3 * N, st + 4 * N};
  }
  own.resize(N * D + 2 * N);
  return {alpha, threshold, own.data(), own.data() + N * D, own.data() + N * D + N};
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

// α as a number: a 0-dim tensor (a buffer, so that torch.compile sees a changing α as data), or None.
double alpha_of(const c10::optional<torch::Tensor>& alpha) {
  if (!alpha) return 0.0;
  TORCH_CHECK(alpha->numel() == 1, "alpha must be a tensor with one element, got ", alpha->sizes());
  return alpha->item<double>();
}

}  // namespace

// qkv (B, N, 3C), weight (H, k) or None → out (B, N, H, d), and if `save` the tensors backward needs:
// stats (B, H, 5, N) = 1/m, 1/‖k‖ clamped, s, the branch's row maxima and 1 / Σ exp; moments (B, H, d + 2, d);
// average (B, N, H, d); branch (B, H, N, d), the softmax branch's y before α (empty without the branch).
// official: the authors' form (½ v_n, L2-normalised output) instead of the kernel form. alpha (a one-element
// tensor) or None: the softmax branch's weight, None for no branch; threshold: its mask's τ.
std::vector<torch::Tensor> forward(const torch::Tensor& qkv, int64_t heads, const c10::optional<torch::Tensor>& weight,
                                   double eps, bool save, bool official, const c10::optional<torch::Tensor>& alpha,
                                   double threshold) {
  check_inputs(qkv, heads, weight);
  const int64_t B = qkv.size(0), N = qkv.size(1), C = qkv.size(2) / 3, d = C / heads;
  const int64_t ksize = weight ? weight->size(1) : 0;
  const bool with_branch = alpha.has_value();
  const double alpha_value = alpha_of(alpha);
  auto out = torch::empty({B, N, heads, d}, qkv.options());
  torch::Tensor stats, moments, average, branch = torch::empty({0}, qkv.options());
  if (save) {
    stats = torch::empty({B, heads, stats_rows(with_branch), N}, qkv.options());
    moments = torch::empty({B, heads, d + 2, d}, qkv.options());
    average = torch::empty({B, N, heads, d}, qkv.options());
    if (with_branch) branch = torch::empty({B, heads, N, d}, qkv.options());
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
        std::vector<T> scratch, branch_scratch, own;
        std::vector<int32_t> index;
        for (int64_t bh = begin; bh < end; ++bh) {
          const Offsets at(bh, heads, N, d, stats_rows(with_branch));
          Saved<T> saved{};
          if (save) saved = saved_at<T>(at, N, stats, moments, average);
          Branch<T> place{};
          if (with_branch) place = branch_at<T, D>(at, N, T(alpha_value), T(threshold), stats, branch, own);
          forward_head<T, D>(head_at(src + at.qkv, C, N), w ? w + (bh % heads) * ksize : nullptr, ksize, T(eps),
                             official, with_branch ? &place : nullptr, dst + at.tokens, C, save ? &saved : nullptr,
                             scratch, branch_scratch, index);
        }
      });
    });
  });
  TORCH_CHECK(supported, "head_dim ", d, " has no compiled kernel (16, 24, 32, 48 or 64)");
  if (!save) return {out};
  return {out, stats, moments, average, branch};
}

// grad (B, N, H, d) contiguous, with forward's saved tensors → grad_qkv (B, N, 3C), grad_weight (H, k) (empty
// without a conv). alpha and threshold as in forward; `branch` is forward's (empty without the branch).
std::vector<torch::Tensor> backward(const torch::Tensor& grad, const torch::Tensor& qkv, int64_t heads,
                                    const c10::optional<torch::Tensor>& weight, double eps, bool official,
                                    const c10::optional<torch::Tensor>& alpha, double threshold,
                                    const torch::Tensor& stats, const torch::Tensor& moments,
                                    const torch::Tensor& average, const torch::Tensor& branch) {
  check_inputs(qkv, heads, weight);
  TORCH_CHECK(grad.is_contiguous() && grad.sizes() == average.sizes() && grad.scalar_type() == qkv.scalar_type(),
              "grad must be contiguous (B, N, H, d) in qkv's dtype, got ", grad.sizes());
  const int64_t B = qkv.size(0), N = qkv.size(1), C = qkv.size(2) / 3, d = C / heads;
  const int64_t ksize = weight ? weight->size(1) : 0;
  const bool with_branch = alpha.has_value();
  TORCH_CHECK(!with_branch || branch.numel() == B * heads * N * d, "the forward kept no softmax branch to differentiate");
  const double alpha_value = alpha_of(alpha);
  auto grad_qkv = torch::empty_like(qkv);
  auto grad_w = torch::zeros({B, heads, std::max<int64_t>(ksize, 1)}, qkv.options());  // summed over B below
  bool supported = true;
  AT_DISPATCH_FLOATING_TYPES(qkv.scalar_type(), "linear_angular_backward", [&] {
    using T = scalar_t;
    supported = with_head_dim(d, [&](auto dim) {
      constexpr int D = decltype(dim)::value;
      const T* w = weight ? weight->data_ptr<T>() : nullptr;
      at::parallel_for(0, B * heads, 1, [&](int64_t begin, int64_t end) {
        std::vector<T> scratch, branch_scratch, own;
        std::vector<int32_t> index;
        for (int64_t bh = begin; bh < end; ++bh) {
          const Offsets at(bh, heads, N, d, stats_rows(with_branch));
          T* g = grad_qkv.data_ptr<T>() + at.qkv;
          Branch<T> place{};
          if (with_branch) place = branch_at<T, D>(at, N, T(alpha_value), T(threshold), stats, branch, own);
          backward_head<T, D>(head_at(qkv.data_ptr<T>() + at.qkv, C, N), w ? w + (bh % heads) * ksize : nullptr, ksize,
                              T(eps), official, grad.data_ptr<T>() + at.tokens, C,
                              saved_at<T>(at, N, stats, moments, average),
                              g, g + C, g + 2 * C, 3 * C, grad_w.data_ptr<T>() + bh * grad_w.size(2),
                              with_branch ? &place : nullptr, scratch, branch_scratch, index);
        }
      });
    });
  });
  TORCH_CHECK(supported, "head_dim ", d, " has no compiled kernel (16, 24, 32, 48 or 64)");
  return {grad_qkv, weight ? grad_w.sum(0) : torch::empty({0}, qkv.options())};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "linear-angular attention + token conv + masked softmax branch, forward");
  m.def("backward", &backward, "linear-angular attention + token conv + masked softmax branch, backward");
}
