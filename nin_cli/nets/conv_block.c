/* A CNN's first block, fused: relu(max_pool2x2(conv3x3(x) + bias + eps_n * noise)).
 *
 * Eager PyTorch writes the convolution's full-resolution output, adds the noise to it, pools
 * it, and in the backward zero-fills a gradient of that size and scatters into it: for the NINR
 * study's CNN, 12.8 MB a pass in and out of memory for 0.1 GFLOP of arithmetic. Here each
 * pooled value is computed from its 4x4 input window in registers and only the pooled output
 * and the position of each maximum (one byte) are written; the backward reads those and the
 * image. Loops over the output channels are innermost and contiguous, so the compiler
 * vectorises them. No OpenMP: the caller runs disjoint sample ranges in threads.
 *
 * Layouts (all float32, contiguous): x (B, H, W, Cin); wT (9 * Cin, Cout), row (dy * 3 + dx) *
 * Cin + ci, Cout a multiple of 8; noise (H, W, Cout) or NULL; eps (B) or NULL; y and idx (B, H/2, W/2, Cout).
 */
#include <stdint.h>

/* The kernels' bodies take Cin as a compile-time constant where the dispatchers below can give one:
 * the taps' loops then unroll and their indices fold (a third of the time for one channel). */
#define INLINE static inline __attribute__((always_inline))

#define CB 8 /* output channels per block: one 8-float vector, four accumulators in registers */
typedef float v8 __attribute__((vector_size(32), aligned(4))); /* GCC's and Clang's portable vectors */
typedef int32_t m8 __attribute__((vector_size(32), aligned(4)));  /* a comparison's lanes: all ones or zero */

typedef uint8_t b8 __attribute__((vector_size(8), aligned(1)));   /* a position in its pooling window per lane */

static inline void store_bytes(uint8_t *p, m8 v) { *(b8 *)p = __builtin_convertvector(v, b8); }
static inline m8 load_bytes(const uint8_t *p) { return __builtin_convertvector(*(const b8 *)p, m8); }
static inline v8 where(m8 mask, v8 v) { return (v8)((m8)v & mask); } /* v where mask, else +0 */

static inline v8 load8(const float *p) { return *(const v8 *)p; }
static inline void store8(float *p, v8 v) { *(v8 *)p = v; }

INLINE void window(const float *xn, int i, int j, int H, int W, int Cin, float *win) {
    /* the 4x4 input window of pooled position (i, j), rows 2i-1 .. 2i+2, zero outside */
    for (int r = 0; r < 4; r++) {
        int yy = 2 * i - 1 + r;
        for (int s = 0; s < 4; s++) {
            int xx = 2 * j - 1 + s;
            float *dst = win + (r * 4 + s) * Cin;
            int inside = yy >= 0 && yy < H && xx >= 0 && xx < W;
            const float *src = xn + ((int64_t)yy * W + xx) * Cin;
            for (int ci = 0; ci < Cin; ci++) dst[ci] = inside ? src[ci] : 0.0f;
        }
    }
}

/* the pixel (row-major index) of position k = 0..3 of pooling window (i, j) */
static inline int64_t sub_position(int i, int j, int k, int W) { return (int64_t)(2 * i + (k >> 1)) * W + 2 * j + (k & 1); }

/* the input values under kernel tap (dy, dx, ci) for the four positions of a pooling window */
#define TAPS(win, dy, dx, ci, Cin)                        \
    float v0 = win[((dy) * 4 + (dx)) * (Cin) + (ci)];     \
    float v1 = win[((dy) * 4 + (dx) + 1) * (Cin) + (ci)]; \
    float v2 = win[((dy + 1) * 4 + (dx)) * (Cin) + (ci)]; \
    float v3 = win[((dy + 1) * 4 + (dx) + 1) * (Cin) + (ci)];

INLINE void forward(const float *restrict x, const float *restrict wT, const float *restrict bias,
                    const float *restrict noise, const float *restrict eps, float *restrict y,
                    uint8_t *restrict idx, int64_t n0, int64_t n1, int H, int W, const int Cin, int Cout) {
    int H2 = H / 2, W2 = W / 2;
    float win[16 * Cin];
    for (int64_t n = n0; n < n1; n++) {
        const float *xn = x + n * H * W * Cin;
        float e = eps ? eps[n] : 0.0f;
        for (int i = 0; i < H2; i++) {
            for (int j = 0; j < W2; j++) {
                window(xn, i, j, H, W, Cin, win);
                int64_t off = ((n * H2 + i) * W2 + j) * Cout;
                for (int c0 = 0; c0 < Cout; c0 += CB) {
                    v8 a[4];
                    for (int k = 0; k < 4; k++) {
                        a[k] = load8(bias + c0);
                        if (noise) a[k] += e * load8(noise + sub_position(i, j, k, W) * Cout + c0);
                    }
                    for (int dy = 0; dy < 3; dy++)
                        for (int dx = 0; dx < 3; dx++)
                            for (int ci = 0; ci < Cin; ci++) {
                                TAPS(win, dy, dx, ci, Cin)
                                v8 w = load8(wT + ((dy * 3 + dx) * Cin + ci) * Cout + c0);
                                a[0] += v0 * w;
                                a[1] += v1 * w;
                                a[2] += v2 * w;
                                a[3] += v3 * w;
                            }
                    /* max_pool2d's rule: the first maximum in row-major order, NaN wins; then relu, NaN kept */
                    v8 m = a[0];
                    m8 at = {0};
                    for (int k = 1; k < 4; k++) {
                        m8 take = (a[k] > m) | (a[k] != a[k]);
                        m = (v8)(((m8)a[k] & take) | ((m8)m & ~take));
                        at = (k & take) | (at & ~take);
                    }
                    store8(y + off + c0, where((m > 0) | (m != m), m));
                    if (idx) store_bytes(idx + off + c0, at);
                }
            }
        }
    }
}

INLINE void backward(const float *restrict x, const float *restrict gy, const float *restrict y,
                     const uint8_t *restrict idx, const float *restrict eps, float *restrict dwT, float *restrict db,
                     float *restrict dnoise, int64_t n0, int64_t n1, int H, int W, const int Cin, int Cout) {
    int H2 = H / 2, W2 = W / 2;
    float win[16 * Cin];
    for (int64_t n = n0; n < n1; n++) {
        const float *xn = x + n * H * W * Cin;
        float e = eps ? eps[n] : 0.0f;
        for (int i = 0; i < H2; i++) {
            for (int j = 0; j < W2; j++) {
                int64_t off = ((n * H2 + i) * W2 + j) * Cout;
                int loaded = 0;
                for (int c0 = 0; c0 < Cout; c0 += CB) {
                    v8 zero = {0};
                    v8 gl = where(~(load8(y + off + c0) <= zero), load8(gy + off + c0)); /* relu's mask, as torch's */
                    m8 at = load_bytes(idx + off + c0);
                    v8 g[4];
                    for (int k = 0; k < 4; k++) g[k] = where(at == k, gl);
                    store8(db + c0, load8(db + c0) + gl);
                    int any = 0;
                    for (int l = 0; l < CB; l++) any |= gl[l] != 0.0f;
                    if (!any) continue;
                    if (!loaded) {
                        window(xn, i, j, H, W, Cin, win);
                        loaded = 1;
                    }
                    for (int dy = 0; dy < 3; dy++)
                        for (int dx = 0; dx < 3; dx++)
                            for (int ci = 0; ci < Cin; ci++) {
                                TAPS(win, dy, dx, ci, Cin)
                                float *dw = dwT + ((dy * 3 + dx) * Cin + ci) * Cout + c0;
                                store8(dw, load8(dw) + (v0 * g[0] + v1 * g[1] + v2 * g[2] + v3 * g[3]));
                            }
                    if (dnoise)
                        for (int k = 0; k < 4; k++) {
                            float *dn = dnoise + sub_position(i, j, k, W) * Cout + c0;
                            store8(dn, load8(dn) + e * g[k]);
                        }
                }
            }
        }
    }
}

void conv_block_forward(const float *x, const float *wT, const float *bias, const float *noise, const float *eps,
                        float *y, uint8_t *idx, int64_t n0, int64_t n1, int H, int W, int Cin, int Cout) {
    if (Cin == 1)
        forward(x, wT, bias, noise, eps, y, idx, n0, n1, H, W, 1, Cout);
    else if (Cin == 3)
        forward(x, wT, bias, noise, eps, y, idx, n0, n1, H, W, 3, Cout);
    else
        forward(x, wT, bias, noise, eps, y, idx, n0, n1, H, W, Cin, Cout);
}

void conv_block_backward(const float *x, const float *gy, const float *y, const uint8_t *idx, const float *eps,
                         float *dwT, float *db, float *dnoise, int64_t n0, int64_t n1, int H, int W, int Cin,
                         int Cout) {
    /* accumulates into dwT (9 * Cin, Cout), db (Cout) and dnoise (H, W, Cout), if not NULL */
    if (Cin == 1)
        backward(x, gy, y, idx, eps, dwT, db, dnoise, n0, n1, H, W, 1, Cout);
    else if (Cin == 3)
        backward(x, gy, y, idx, eps, dwT, db, dnoise, n0, n1, H, W, 3, Cout);
    else
        backward(x, gy, y, idx, eps, dwT, db, dnoise, n0, n1, H, W, Cin, Cout);
}
