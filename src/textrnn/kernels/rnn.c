/* textrnn's inference kernel for LSTM and GRU layers: one time step's gates and state update,
   fused in one pass (see fastrnn.py). Plain C, no headers beyond libc: it compiles in well under
   a second with -O3 -march=native, and gcc vectorizes every inner loop (no -ffast-math: exp is
   written out below so that it vectorizes without changing the process's floating-point mode).

   The caller runs, for t = 0, 1, ...:  hh[:n] = h[:n] @ W_hh^T + b_hh  (torch.addmm, oneDNN),
   then rnn_step_*, over the n rows still running: rows come sorted by length, longest first. */
#include <stdint.h>

typedef union { uint32_t u; float f; } bits32;

static inline float from_bf16(uint16_t v) { bits32 b = {.u = (uint32_t)v << 16}; return b.f; }
static inline uint16_t to_bf16(float f) {  /* round to nearest even (values here are finite) */
    bits32 b = {.f = f};
    return (uint16_t)((b.u + 0x7FFFu + ((b.u >> 16) & 1u)) >> 16);
}
/* exp(x) as 2^(x log2 e): 2^n times a degree-6 polynomial in the fraction f in [-1/2, 1/2] (a
   near-minimax fit, relative error 1e-7 on it), n added straight into the exponent bits. Three
   operations fewer than Cephes' expf and as accurate where the gates need it: sigmoid and tanh
   built on it stay within 1e-7 of the exact values (benchmarks/results/sequence-kernel-*.json). */
static inline float exp_(float x) {
    x = x > 88.0f ? 88.0f : x;
    x = x < -87.0f ? -87.0f : x;
    const float t = x * 1.44269504088896341f;
    const float n = (t + 12582912.0f) - 12582912.0f; /* round to nearest */
    const float f = t - n;
    float p = 1.5345810970757157e-4f;
    p = p * f + 1.3399930903688073e-3f;
    p = p * f + 9.618489071726799e-3f;
    p = p * f + 5.550328642129898e-2f;
    p = p * f + 2.4022646248340607e-1f;
    p = p * f + 6.931471824645996e-1f;
    p = p * f + 1.0f;
    bits32 b = {.f = p};
    b.u += (uint32_t)(int32_t)n << 23;
    return b.f;
}
static inline float sigmoid_(float x) { return 1.0f / (1.0f + exp_(-x)); }
static inline float tanh_(float x) { return 2.0f / (1.0f + exp_(-2.0f * x)) - 1.0f; }

/* The same functions on 8 floats at once (gcc/clang vector types; on a CPU with narrower vectors the
   compiler splits them), for the LSTM's float32 gates: written out, because gcc vectorized the
   scalar loop with each clamp in exp_ as a compare and a blend (3 micro-ops on Intel), 1.55x slower
   than min/max (one row's gates of 64 units: 182 against 117 ns, AVX2). Bit for bit the scalar
   functions' results (checked over 200,000 random rows, both compiler profiles). */
typedef float v8 __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));
typedef float v8u __attribute__((vector_size(32), aligned(4)));  /* an unaligned load or store */
#define LD(p) (*(const v8u *)(p))
#define ST(p, v) (*(v8u *)(p) = (v))
#if defined(__AVX__)
/* minps/maxps return their second operand where either is NaN: x, so a NaN passes as in exp_ */
static inline v8 vmin_(v8 a, v8 b) { return __builtin_ia32_minps256(a, b); }
static inline v8 vmax_(v8 a, v8 b) { return __builtin_ia32_maxps256(a, b); }
#else
static inline v8 vsel_(v8i m, v8 a, v8 b) { return (v8)((m & (v8i)a) | (~m & (v8i)b)); }
static inline v8 vmin_(v8 a, v8 b) { return vsel_(a < b, a, b); }
static inline v8 vmax_(v8 a, v8 b) { return vsel_(a > b, a, b); }
#endif
static inline v8 vsplat_(float a) { return (v8){a, a, a, a, a, a, a, a}; }
static inline v8 vexp_(v8 x) {
    x = vmin_(vsplat_(88.0f), x);
    x = vmax_(vsplat_(-87.0f), x);
    const v8 t = x * 1.44269504088896341f;
    const v8 n = (t + 12582912.0f) - 12582912.0f;
    const v8 f = t - n;
    v8 p = vsplat_(1.5345810970757157e-4f);
    p = p * f + 1.3399930903688073e-3f;
    p = p * f + 9.618489071726799e-3f;
    p = p * f + 5.550328642129898e-2f;
    p = p * f + 2.4022646248340607e-1f;
    p = p * f + 6.931471824645996e-1f;
    p = p * f + 1.0f;
    return (v8)((v8i)p + (__builtin_convertvector(n, v8i) << 23));
}
static inline v8 vsigmoid_(v8 x) { return 1.0f / (1.0f + vexp_(-x)); }
static inline v8 vtanh_(v8 x) { return 2.0f / (1.0f + vexp_(-2.0f * x)) - 1.0f; }

/* One row's LSTM step in float32: x (the input's gates) + g (the recurrent product's) give the
   new cell c and output hn; where act is not NULL, also the activated gates
   (act, G) and tanh of the cell (tc) that training's backward pass reads. c may be cprev (inference
   updates the cell in place): each position is read before it is written. */
static inline void lstm_cell_f32(int64_t H, const float *restrict x, const float *restrict g, const float *cprev,
                                 float *c, float *restrict hn, float *restrict act, float *restrict tc) {
    int64_t j = 0;
    for (; j + 8 <= H; j += 8) {
        const v8 i = vsigmoid_(LD(x + j) + LD(g + j));
        const v8 f = vsigmoid_(LD(x + H + j) + LD(g + H + j));
        const v8 u = vtanh_(LD(x + 2 * H + j) + LD(g + 2 * H + j));
        const v8 o = vsigmoid_(LD(x + 3 * H + j) + LD(g + 3 * H + j));
        const v8 cn = f * LD(cprev + j) + i * u;
        const v8 th = vtanh_(cn);
        ST(c + j, cn);
        ST(hn + j, o * th);
        if (act) {
            ST(act + j, i);
            ST(act + H + j, f);
            ST(act + 2 * H + j, u);
            ST(act + 3 * H + j, o);
            ST(tc + j, th);
        }
    }
    for (; j < H; j++) {
        const float i = sigmoid_(x[j] + g[j]);
        const float f = sigmoid_(x[H + j] + g[H + j]);
        const float u = tanh_(x[2 * H + j] + g[2 * H + j]);
        const float o = sigmoid_(x[3 * H + j] + g[3 * H + j]);
        const float cn = f * cprev[j] + i * u;
        const float th = tanh_(cn);
        c[j] = cn;
        hn[j] = o * th;
        if (act) {
            act[j] = i;
            act[H + j] = f;
            act[2 * H + j] = u;
            act[3 * H + j] = o;
            tc[j] = th;
        }
    }
}

/* cell: 0 LSTM (gates i, f, g, o), 1 GRU (r, z, n), as PyTorch orders them.
   table (N, G): x W_ih^T + b_ih for each input row; rows (B, T): the table row of each position;
   hh (n, G), h (B, H): in the kernel's dtype; c (B, H) float32 (LSTM only);
   out (nullable): float32, position (b, p) at out + (b*T + p) * ostride;
   pmax, psum (nullable, (B, H) float32): running max and sum of the outputs (max/mean pooling). */
#define RNN_STEP(NAME, DT, LOAD, STORE)                                                              \
void NAME(int cell, int64_t n, int64_t H, int64_t T, int64_t t, int reverse,                         \
          const int64_t *lengths, const DT *table, const int64_t *rows, const DT *hh, DT *h,       \
          float *c, float *out, int64_t ostride, float *pmax, float *psum) {                         \
    const int64_t G = cell == 0 ? 4 * H : 3 * H;                                                     \
    for (int64_t b = 0; b < n; b++) {                                                                \
        const int64_t p = reverse ? lengths[b] - 1 - t : t;                                          \
        const DT *restrict x = table + rows[b * T + p] * G;                                          \
        if (t + 1 < lengths[b]) { /* the next step's row: random in a large table, so fetch it now */ \
            const DT *nx = table + rows[b * T + (reverse ? p - 1 : p + 1)] * G;                      \
            for (int64_t o = 0; o < G; o += 64 / (int64_t)sizeof(DT)) __builtin_prefetch(nx + o);    \
        }                                                                                            \
        const DT *restrict g = hh + b * G;                                                           \
        DT *restrict hb = h + b * H;                                                                 \
        float hn[1024];                                                                              \
        if (cell == 0 && sizeof(DT) == 4) { /* float32: the vector code */                         \
            lstm_cell_f32(H, (const float *)x, (const float *)g, c + b * H, c + b * H, hn, 0, 0);     \
        } else if (cell == 0) {                                                                      \
            float *restrict cb = c + b * H;                                                          \
            for (int64_t j = 0; j < H; j++) {                                                        \
                float i = sigmoid_(LOAD(x[j]) + LOAD(g[j]));                                         \
                float f = sigmoid_(LOAD(x[H + j]) + LOAD(g[H + j]));                                 \
                float u = tanh_(LOAD(x[2 * H + j]) + LOAD(g[2 * H + j]));                            \
                float o = sigmoid_(LOAD(x[3 * H + j]) + LOAD(g[3 * H + j]));                         \
                float cn = f * cb[j] + i * u;                                                        \
                cb[j] = cn;                                                                          \
                hn[j] = o * tanh_(cn);                                                               \
            }                                                                                        \
        } else {                                                                                     \
            for (int64_t j = 0; j < H; j++) {                                                        \
                float r = sigmoid_(LOAD(x[j]) + LOAD(g[j]));                                         \
                float z = sigmoid_(LOAD(x[H + j]) + LOAD(g[H + j]));                                 \
                float u = tanh_(LOAD(x[2 * H + j]) + r * LOAD(g[2 * H + j]));                        \
                hn[j] = (1.0f - z) * u + z * LOAD(hb[j]);                                            \
            }                                                                                        \
        }                                                                                            \
        for (int64_t j = 0; j < H; j++) hb[j] = STORE(hn[j]);                                        \
        if (out) {                                                                                   \
            float *restrict ob = out + (b * T + p) * ostride;                                        \
            for (int64_t j = 0; j < H; j++) ob[j] = hn[j];                                           \
        }                                                                                            \
        if (pmax) {                                                                                  \
            float *restrict mb = pmax + b * H;                                                       \
            for (int64_t j = 0; j < H; j++) mb[j] = hn[j] > mb[j] ? hn[j] : mb[j];                   \
        }                                                                                            \
        if (psum) {                                                                                  \
            float *restrict sb = psum + b * H;                                                       \
            for (int64_t j = 0; j < H; j++) sb[j] += hn[j];                                          \
        }                                                                                            \
    }                                                                                                \
}

#define IDENTITY(v) (v)
RNN_STEP(rnn_step_f32, float, IDENTITY, IDENTITY)
RNN_STEP(rnn_step_bf16, uint16_t, from_bf16, to_bf16)

/* The whole sequence of one layer and direction, float32, the recurrent product computed here too:
   no call per time step, so a single text (or a few) runs as fast as its arithmetic. Rows are
   independent; they run in blocks of RB (the block's rows sorted longest first, as the caller
   sorts all rows), the product's weights read once per block and step. wt (H, G) is W_hh
   transposed, bias (G) is b_hh; the rest as rnn_step_f32, whose gate code runs each step. The
   product is written with gcc/clang vector types (8 floats; on a CPU with narrower vectors the
   compiler splits them), RB x 16 or 1 x 64 sums held in registers, each weight loaded once per step
   and block, each state value broadcast. */
#ifndef RB
#define RB 6 /* texts per block in training (at most 6: product_n) */
#endif
#ifndef RB_SEQ
#define RB_SEQ 6 /* texts per block in prediction (rnn_seq_f32) */
#endif
#define RB_MAX (RB > RB_SEQ ? RB : RB_SEQ)
#ifndef NV
#define NV 2 /* vectors of 8 gates per block: RB x NV sums in registers */
#endif

static inline __attribute__((always_inline)) void product_rows(const int rows, int64_t H, int64_t G, const float *wt, const float *bias, const float *h, float *g) {
    int64_t j0 = 0;
    for (; j0 + 8 * NV <= G; j0 += 8 * NV) {  /* rows x 8 NV gates */
        v8 a[RB_MAX][NV];
        for (int r = 0; r < rows; r++)
            for (int q = 0; q < NV; q++) a[r][q] = LD(bias + j0 + 8 * q);
        for (int64_t k = 0; k < H; k++) {
            v8 w[NV];
            for (int q = 0; q < NV; q++) w[q] = LD(wt + k * G + j0 + 8 * q);
            for (int r = 0; r < rows; r++) {
                const float hk = h[r * H + k];
                for (int q = 0; q < NV; q++) a[r][q] += hk * w[q];
            }
        }
        for (int r = 0; r < rows; r++)
            for (int q = 0; q < NV; q++) ST(g + r * G + j0 + 8 * q, a[r][q]);
    }
    for (int r = 0; r < rows; r++)  /* the gates left over */
        for (int64_t j = j0; j < G; j++) {
            float s = bias[j];
            for (int64_t k = 0; k < H; k++) s += h[r * H + k] * wt[k * G + j];
            g[r * G + j] = s;
        }
}

/* Training runs blocks of RB = 6 rows, each block's product over just its rows (a partial block,
   the batch's last, takes the count it has); prediction runs RB_SEQ = 6 too: the most that AVX2's
   16 vector registers hold (6 x NV sums, NV weights, one broadcast), each weight loaded once for
   more rows. In training, on an AMD Zen 3 (AVX2), 6 rows against 4 ran the recurrence's forward
   and backward 1.11-1.28x faster in the CPU's own build (-march=native, whose Zen 3 tuning had
   slowed the blocks of 4) and 1.00-1.04x under TEXTRNN_CPU=avx2's -mavx2 -mfma, at pieces of 11 to
   64 texts of 20 to 400 steps (benchmarks/kernel_source.py, results/kernel-source-2026-12-01-rb6.json:
   a training piece 1.08-1.14x, SST-5's epoch 1.10x in two-trees-2026-12-01-rb6.json); prediction
   measured ~1.04x over 4 rows (results/kernel-source-2026-11-30-gates-rbseq.json). The constant
   argument unrolls each copy. */
static void product_n(int64_t rows, int64_t H, int64_t G, const float *wt, const float *bias, const float *h, float *g) {
    switch (rows) { /* a constant count each: unrolled */
    case 1: product_rows(1, H, G, wt, bias, h, g); break;
    case 2: product_rows(2, H, G, wt, bias, h, g); break;
    case 3: product_rows(3, H, G, wt, bias, h, g); break;
    case 4: product_rows(4, H, G, wt, bias, h, g); break;
    case 5: product_rows(5, H, G, wt, bias, h, g); break;
    default: product_rows(6, H, G, wt, bias, h, g); break;
    }
}
static void product_block_seq(int64_t H, int64_t G, const float *wt, const float *bias, const float *h, float *g) {
    product_rows(RB_SEQ, H, G, wt, bias, h, g);
}

static void product_row(int64_t H, int64_t G, const float *wt, const float *bias, const float *h, float *g) {
    int64_t j0 = 0;
    for (; j0 + 64 <= G; j0 += 64) {  /* 64 gates: 8 independent sums */
        v8 a[8];
        for (int q = 0; q < 8; q++) a[q] = LD(bias + j0 + 8 * q);
        for (int64_t k = 0; k < H; k++) {
            const float hk = h[k];
            for (int q = 0; q < 8; q++) a[q] += hk * LD(wt + k * G + j0 + 8 * q);
        }
        for (int q = 0; q < 8; q++) ST(g + j0 + 8 * q, a[q]);
    }
    for (int64_t j = j0; j < G; j++) {
        float s = bias[j];
        for (int64_t k = 0; k < H; k++) s += h[k] * wt[k * G + j];
        g[j] = s;
    }
}

void rnn_seq_f32(int cell, int64_t n, int64_t H, int64_t T, int reverse,
                 const int64_t *lengths, const float *table, const int64_t *rows, const float *wt,
                 const float *bias, float *h, float *c, float *out, int64_t ostride, float *pmax,
                 float *psum) {
    const int64_t G = cell == 0 ? 4 * H : 3 * H;
    float g[RB_SEQ * 4 * 1024];  /* row r's gates at g + r * G, as rnn_step_f32 reads them */
    for (int64_t b0 = 0; b0 < n; b0 += RB_SEQ) {
        const int64_t rb = n - b0 < RB_SEQ ? n - b0 : RB_SEQ;
        float *hblk = h + b0 * H;
        for (int64_t t = 0; t < lengths[b0]; t++) {
            int64_t active = 0;
            while (active < rb && lengths[b0 + active] > t) active++;
            if (active == RB_SEQ)
                product_block_seq(H, G, wt, bias, hblk, g);
            else
                for (int64_t r = 0; r < active; r++) product_row(H, G, wt, bias, hblk + r * H, g + r * G);
            rnn_step_f32(cell, active, H, T, t, reverse, lengths + b0, table, rows + b0 * T, g, hblk,
                         c ? c + b0 * H : c, out ? out + b0 * T * ostride : out, ostride,
                         pmax ? pmax + b0 * H : pmax, psum ? psum + b0 * H : psum);
        }
    }
}

/* Training, float32, LSTM: one layer and direction over B rows that all run T steps (training
   batches are cut to one length). Forward: position (b, p) reads x W_ih^T from row
   rows[b * T + p] of table (N, G) (one row per position, or one per distinct word); wt (H, G) is
   W_hh transposed and bias (G) is b_ih + b_hh, added with the recurrent product. It writes, at
   each position in text order, the activated gates (i, f, g, o) to acts (B, T, G), the cell to cs
   (B, T, H), its tanh to tcs (B, T, H) and the output to hs (B, T, H). reverse: the steps run from
   the last position to the first. The product is the sequence kernel's (RB rows at a time, a
   partial block computed whole), the gates the step kernel's arithmetic. */
void lstm_train_forward(int64_t B, int64_t H, int64_t T, int reverse, const float *table, const int64_t *rows, const float *wt,
                        const float *bias, float *acts, float *cs, float *tcs, float *hs) {
    const int64_t G = 4 * H;
    float g[RB * 4 * 1024], hblk[RB * 1024], zero[1024];
    for (int64_t j = 0; j < H; j++) zero[j] = 0.0f;
    for (int64_t b0 = 0; b0 < B; b0 += RB) {
        const int64_t rb = B - b0 < RB ? B - b0 : RB;
        for (int64_t j = 0; j < RB * H; j++) hblk[j] = 0.0f; /* a partial block's missing rows stay 0 */
        for (int64_t t = 0; t < T; t++) {
            const int64_t p = reverse ? T - 1 - t : t, q = reverse ? p + 1 : p - 1; /* q: the step before */
            product_n(rb, H, G, wt, bias, hblk, g);
            for (int64_t r = 0; r < rb; r++) {
                const int64_t at = (b0 + r) * T;
                lstm_cell_f32(H, table + rows[at + p] * G, g + r * G, t ? cs + (at + q) * H : zero, cs + (at + p) * H,
                              hs + (at + p) * H, acts + (at + p) * G, tcs + (at + p) * H);
                for (int64_t j = 0; j < H; j++) hblk[r * H + j] = hs[(at + p) * H + j];
            }
        }
    }
}

/* Backward of lstm_train_forward: dhs (B, T, H) is the loss's gradient with respect to each output
   (from the layers above; the recurrence adds its own here), position (b, p) at dhs + (b * T + p) *
   ds (ds = H, or 2H for one direction's half of a bidirectional layer's gradient), w (G, H) is W_hh
   as PyTorch stores it.
   Writes dg (B, T, G), the gradient with respect to the gates before their activations, from which
   the caller gets the weights' gradients and the input's by matrix products; adds each position's
   row of it to db (G), the biases' gradient, and, where rows is not NULL, to row rows[b * T + p] of
   dtable (N, G), the gradient of the forward's table (a distinct word's: the sum over its
   positions). Both while the row is in cache: as separate passes (a column sum, an index_add)
   they took ~6% of a default model's training piece under AVX2 (torch.profiler, 11 texts of 400). */
static void lstm_gates_back(int64_t H, const float *restrict act, const float *restrict tcn, const float *restrict cprev,
                            const float *restrict dh_out, const float *restrict dh_rec, float *restrict dc, float *restrict dg) {
    for (int64_t j = 0; j < H; j++) {
        const float i = act[j], f = act[H + j], u = act[2 * H + j], o = act[3 * H + j];
        const float tc = tcn[j];
        const float dh = dh_out[j] + dh_rec[j];
        const float dcn = dh * o * (1.0f - tc * tc) + dc[j];
        dg[j] = dcn * u * i * (1.0f - i);
        dg[H + j] = dcn * cprev[j] * f * (1.0f - f);
        dg[2 * H + j] = dcn * i * (1.0f - u * u);
        dg[3 * H + j] = dh * tc * o * (1.0f - o);
        dc[j] = dcn * f;
    }
}

void lstm_train_backward(int64_t B, int64_t H, int64_t T, int reverse, const float *w, const float *acts, const float *cs,
                         const float *tcs, const float *dhs, int64_t ds, float *dg, const int64_t *rows, float *dtable,
                         float *db) {
    const int64_t G = 4 * H;
    float dgblk[RB * 4 * 1024], dh[RB * 1024], dc[RB * 1024], zero[4 * 1024];
    for (int64_t j = 0; j < G; j++) zero[j] = 0.0f;
    for (int64_t b0 = 0; b0 < B; b0 += RB) {
        const int64_t rb = B - b0 < RB ? B - b0 : RB;
        for (int64_t j = 0; j < RB * H; j++) dh[j] = dc[j] = 0.0f;
        for (int64_t j = 0; j < RB * G; j++) dgblk[j] = 0.0f; /* a partial block's missing rows stay 0 */
        for (int64_t t = T - 1; t >= 0; t--) {
            const int64_t p = reverse ? T - 1 - t : t, q = reverse ? p + 1 : p - 1;
            for (int64_t r = 0; r < rb; r++) {
                const int64_t at = (b0 + r) * T;
                lstm_gates_back(H, acts + (at + p) * G, tcs + (at + p) * H, t ? cs + (at + q) * H : zero, dhs + (at + p) * ds,
                                dh + r * H, dc + r * H, dgblk + r * G);
                const float *d = dgblk + r * G;
                float *restrict out = dg + (at + p) * G;
                for (int64_t j = 0; j < G; j++) out[j] = d[j];
                for (int64_t j = 0; j < G; j++) db[j] += d[j];
                if (rows) {
                    float *restrict row = dtable + rows[at + p] * G;
                    for (int64_t j = 0; j < G; j++) row[j] += d[j];
                    if (t) { /* the next step's row: random in a table larger than the cache, so fetch it now */
                        const float *next = dtable + rows[at + q] * G;
                        for (int64_t o = 0; o < G; o += 16) __builtin_prefetch(next + o, 1);
                    }
                }
            }
            if (t == 0) break;
            /* the recurrent gradient for the step before: dh = dg W_hh, the product with G and H swapped */
            product_n(rb, G, H, w, zero, dgblk, dh);
        }
    }
}

/* Max pooling over time in training, float32: for x (B, T, D), each channel's maximum over the T
   positions into values (B, D) and its position into index (B, D), the first of equal maxima; a
   NaN wins and stays, as torch.max has it. One pass over x, row after row: torch.max(x, 1) with
   its indices took ~20x amax's time on a Zen 3 (a (32, 20, 128) piece: 0.2 ms against 0.01). */
void max_over_time_f32(int64_t B, int64_t T, int64_t D, const float *x, float *values, int64_t *index) {
    for (int64_t b = 0; b < B; b++) {
        const float *xb = x + b * T * D;
        float *restrict v = values + b * D;
        int64_t *restrict ix = index + b * D;
        int64_t j = 0;
        for (; j + 8 <= D; j += 8) { /* 8 channels at once, down the positions */
            v8 m = LD(xb + j);
            v8i at = {0, 0, 0, 0, 0, 0, 0, 0};
            for (int64_t t = 1; t < T; t++) {
                const v8 r = LD(xb + t * D + j);
                const v8i take = ((r > m) | (r != r)) & (m == m);
                m = (v8)((take & (v8i)r) | (~take & (v8i)m));
                at = (take & (v8i){t, t, t, t, t, t, t, t}) | (~take & at);
            }
            ST(v + j, m);
            for (int q = 0; q < 8; q++) ix[j + q] = at[q];
        }
        for (; j < D; j++) {
            float m = xb[j];
            int64_t at = 0;
            for (int64_t t = 1; t < T; t++) {
                const float r = xb[t * D + j];
                if ((r > m || r != r) && m == m) { m = r; at = t; }
            }
            v[j] = m;
            ix[j] = at;
        }
    }
}
