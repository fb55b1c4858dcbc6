/* EMA's factored form (models/ema_factored.py) as fused float32 CPU kernels: ema_forward (inference, or training
 * with the few per-row values the backward needs saved) and ema_backward.
 *
 * A row is one group of c channels of one image: c * h * w values, a few tens of KB for yolov5s's maps, so
 * after the first read every pass below runs from L1/L2. The PyTorch ops of the eager form each stream the whole
 * map through the cache instead (about 16 operations, 11 passes), which inside a network costs 2-3x this.
 * Rows are independent and shared out over OpenMP threads; with PyTorch imported first, this library uses
 * PyTorch's own OpenMP runtime (same soname), so the threads are the ones torch already runs.
 *
 * Build: cc -O3 -march=native -fopenmp -fno-math-errno -fno-trapping-math -fno-signed-zeros -fassociative-math
 *        -shared -fPIC (utils/native.py does it). No -ffast-math: with GCC < 13 it would link crtfastmath.o into
 *        the library and flush denormals to zero in the whole process.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* exp(v) to about 2e-7 relative error, vectorisable (libm's expf is not, without -ffast-math). */
static inline float exp_approx(float v) {
    v = v < -87.0f ? -87.0f : (v > 88.0f ? 88.0f : v);
    const float n = floorf(v * 1.44269504f + 0.5f); /* v = n ln2 + r, |r| <= ln2 / 2 */
    const float r = v - n * 0.693145752f - n * 1.42860677e-6f;
    const float poly = 1.0f + r * (1.0f + r * (0.5f + r * (0.166666672f + r * (0.0416666679f +
                       r * (0.00833333377f + r * 0.00138888892f)))));
    const int bits = ((int)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return poly * scale;
}

static inline float sigmoid(float v) { return 1.0f / (1.0f + exp_approx(-v)); }

typedef struct {
    int c, h, w;
    const float *w1, *b1, *gamma, *beta, *b3, *mean_operator, *kernel;
    float bias, eps;
} Params;

/* What the backward needs from a training forward, per row (all NULL at inference): the features (c x (h + w + 4)),
 * gates (c x (h + w)), GroupNorm mean and 1 / std (c each), d2 (c) and the output gate sigmoid(z) (h x w). */
typedef struct {
    float *features, *gates, *mean, *rstd, *d2, *gate;
} Saved;

/* Planes padded to (h + 2) x (w + 2) with a zero border, plus one guard float before and after: every position
 * t of padded rows 1..h ([lo, hi)) reads its nine 3x3 neighbours at t + offset[tap] inside the buffer, so the
 * convolutions run as long flat loops (which vectorise) instead of one short loop per image row. Values computed
 * at border positions are never used. */
typedef struct {
    int h, w, pw;
    long lo, hi, size, offset[9];
} Grid;

static Grid make_grid(int h, int w) {
    Grid g = {h, w, w + 2, w + 2, (long)(h + 1) * (w + 2), (long)(h + 2) * (w + 2) + 2, {0}};
    for (int tap = 0; tap < 9; ++tap) g.offset[tap] = (long)(tap / 3 - 1) * g.pw + (tap % 3 - 1);
    return g;
}

static float *plane(float *buffer) { return buffer + 1; } /* past the leading guard */

static void pad(const Grid *g, float *padded, const float *compact) {
    for (int i = 0; i < g->h; ++i)
        memcpy(padded + (long)(i + 1) * g->pw + 1, compact + (long)i * g->w, sizeof(float) * g->w);
}

static void outer(const Grid *g, float *padded, const float *gate_h, const float *gate_w) {
    for (int i = 0; i < g->h; ++i) {
        float *row = padded + (long)(i + 1) * g->pw + 1;
        for (int j = 0; j < g->w; ++j) row[j] = gate_h[i] * gate_w[j];
    }
}

#define CHUNK 512 /* float partial sums of this many terms, added up in double */

/* sum over [lo, hi) of a[t] * b[t] */
static double dot(const Grid *g, const float *a, const float *b) {
    double total = 0.0;
    for (long t0 = g->lo; t0 < g->hi; t0 += CHUNK) {
        const long t1 = t0 + CHUNK < g->hi ? t0 + CHUNK : g->hi;
        float partial = 0.0f;
        for (long t = t0; t < t1; ++t) partial += a[t] * b[t];
        total += partial;
    }
    return total;
}

/* Scratch floats one row of the forward needs. */
static long scratch_size(int c, int h, int w) {
    const long q = h + w, p = (long)h * w, padded = (long)(h + 2) * (w + 2) + 2;
    return c * (q + 4) + c * q + p + 5 * padded + 2L * c;
}

typedef struct {
    float *features, *gates, *gate, *mask, *x_pad, *outer_pad, *z_pad, *y_pad, *mean, *d2;
} Scratch;

static Scratch carve(float *s, int c, int h, int w, const Grid *g) {
    const long q = h + w, p = (long)h * w;
    Scratch k;
    k.features = s, s += c * (q + 4);
    k.gates = s, s += c * q;
    k.gate = s, s += p;
    k.mask = plane(s), s += g->size;
    k.x_pad = plane(s), s += g->size;
    k.outer_pad = plane(s), s += g->size;
    k.z_pad = plane(s), s += g->size;
    k.y_pad = plane(s), s += g->size;
    k.mean = s, s += c;
    k.d2 = s;
    return k;
}

/* Zero borders and guards once per thread: rows overwrite only the interiors. */
static void clear_scratch(float *s, int c, int h, int w) {
    memset(s, 0, sizeof(float) * scratch_size(c, h, w));
    Grid g = make_grid(h, w);
    Scratch k = carve(s, c, h, w, &g);
    for (int i = 0; i < h; ++i)
        for (int j = 0; j < w; ++j) k.mask[(long)(i + 1) * g.pw + 1 + j] = 1.0f;
}

/* features (row means, column means, corners), gates = sigmoid(w1 @ pooled + b1), d2 = softmax(...) */
static void descriptors(const float *x, const Params *P, Scratch *k) {
    const int c = P->c, h = P->h, w = P->w, q = h + w, nf = q + 4, p = h * w;
    for (int ch = 0; ch < c; ++ch) {
        const float *xk = x + (long)ch * p;
        float *fk = k->features + ch * nf, *col = fk + h;
        for (int j = 0; j < w; ++j) col[j] = 0.0f;
        for (int i = 0; i < h; ++i) {
            const float *row = xk + i * w;
            float sum = 0.0f;
            for (int j = 0; j < w; ++j) {
                sum += row[j];
                col[j] += row[j];
            }
            fk[i] = sum / w;
        }
        for (int j = 0; j < w; ++j) col[j] /= h;
        fk[q] = xk[0];
        fk[q + 1] = xk[w - 1];
        fk[q + 2] = xk[(h - 1) * w];
        fk[q + 3] = xk[p - 1];
    }
    for (int ch = 0; ch < c; ++ch) {
        float *gk = k->gates + ch * q;
        for (int u = 0; u < q; ++u) gk[u] = P->b1[ch];
        for (int j = 0; j < c; ++j) {
            const float weight = P->w1[ch * c + j], *fj = k->features + j * nf;
            for (int u = 0; u < q; ++u) gk[u] += weight * fj[u];
        }
        for (int u = 0; u < q; ++u) gk[u] = sigmoid(gk[u]);
    }
    float *d2 = k->d2;
    for (int ch = 0; ch < c; ++ch) d2[ch] = P->b3[ch];
    for (int f = 0; f < c * nf; ++f) {
        const float v = k->features[f], *m = P->mean_operator + (long)f * c;
        for (int ch = 0; ch < c; ++ch) d2[ch] += v * m[ch];
    }
    float top = d2[0], total = 0.0f;
    for (int ch = 1; ch < c; ++ch) top = d2[ch] > top ? d2[ch] : top;
    for (int ch = 0; ch < c; ++ch) total += (d2[ch] = exp_approx(d2[ch] - top));
    for (int ch = 0; ch < c; ++ch) d2[ch] /= total;
}

static void ema_row(const float *x, float *out, const Params *P, Scratch *k, const Saved *S, long r) {
    const int c = P->c, h = P->h, w = P->w, q = h + w, nf = q + 4, p = h * w;
    const Grid g = make_grid(h, w);
    descriptors(x, P, k);
    /* z = d1 . b3 + sum_k d2_k beta_k + sum_k (coef_k (y_k - mean_k) + depthwise 3x3 of x_k), y = x gate_h gate_w;
     * GroupNorm statistics in two passes (mean, then squared deviations): nearly constant channels keep their
     * variance, and subtracting the mean before scaling keeps them as exact as PyTorch's GroupNorm */
    double shift = P->bias;
    for (int ch = 0; ch < c; ++ch) shift += k->d2[ch] * P->beta[ch];
    for (long t = g.lo; t < g.hi; ++t) k->z_pad[t] = (float)shift;
    for (int ch = 0; ch < c; ++ch) {
        const float *xk = x + (long)ch * p, *K = P->kernel + 9 * ch;
        float *xp = k->x_pad, *op = k->outer_pad, *yc = k->y_pad, *z = k->z_pad;
        pad(&g, xp, xk);
        outer(&g, op, k->gates + ch * q, k->gates + ch * q + h);
        const float m = (float)(dot(&g, xp, op) / p);
        for (long t = g.lo; t < g.hi; ++t) yc[t] = (xp[t] * op[t] - m) * k->mask[t];
        const double rstd = 1.0 / sqrt(dot(&g, yc, yc) / p + P->eps);
        const float coef = (float)(k->d2[ch] * P->gamma[ch] * rstd);
        const float k0 = K[0], k1 = K[1], k2 = K[2], k3 = K[3], k4 = K[4], k5 = K[5], k6 = K[6], k7 = K[7], k8 = K[8];
        const long o0 = g.offset[0], o1 = g.offset[1], o2 = g.offset[2], o3 = g.offset[3], o5 = g.offset[5],
                   o6 = g.offset[6], o7 = g.offset[7], o8 = g.offset[8];
        float *restrict zr = z;
        const float *restrict xr = xp, *restrict yr = yc;
        for (long t = g.lo; t < g.hi; ++t)
            zr[t] += k0 * xr[t + o0] + k1 * xr[t + o1] + k2 * xr[t + o2] + k3 * xr[t + o3] + k4 * xr[t]
                   + k5 * xr[t + o5] + k6 * xr[t + o6] + k7 * xr[t + o7] + k8 * xr[t + o8] + coef * yr[t];
        k->mean[ch] = m;
        if (S->rstd) S->rstd[r * c + ch] = (float)rstd;
    }
    for (int i = 0; i < h; ++i) {
        const float *zi = k->z_pad + (long)(i + 1) * g.pw + 1;
        for (int j = 0; j < w; ++j) k->gate[i * w + j] = sigmoid(zi[j]);
    }
    for (int ch = 0; ch < c; ++ch) {
        const float *xk = x + (long)ch * p;
        float *ok = out + (long)ch * p;
        for (int t = 0; t < p; ++t) ok[t] = xk[t] * k->gate[t];
    }
    if (S->features) {
        memcpy(S->features + r * c * nf, k->features, sizeof(float) * c * nf);
        memcpy(S->gates + r * c * q, k->gates, sizeof(float) * c * q);
        memcpy(S->mean + r * c, k->mean, sizeof(float) * c);
        memcpy(S->d2 + r * c, k->d2, sizeof(float) * c);
        memcpy(S->gate + r * p, k->gate, sizeof(float) * p);
    }
}

/* x, out: (rows, c, h, w) contiguous. w1: (c, c); b1, gamma, beta, b3: (c); mean_operator: (c (h + w + 4), c);
 * kernel: (c, 9); bias: d1 . b3; saved_*: NULL, or per-row buffers for ema_backward (see Saved).
 * Returns 0, or -1 when scratch memory could not be allocated. */
int ema_forward(const float *x, float *out, long rows, int c, int h, int w, const float *w1, const float *b1,
                const float *gamma, const float *beta, const float *b3, const float *mean_operator,
                const float *kernel, float bias, float eps, float *saved_features, float *saved_gates,
                float *saved_mean, float *saved_rstd, float *saved_d2, float *saved_gate, int threads) {
    const Params P = {c, h, w, w1, b1, gamma, beta, b3, mean_operator, kernel, bias, eps};
    const Saved S = {saved_features, saved_gates, saved_mean, saved_rstd, saved_d2, saved_gate};
    const long row_size = (long)c * h * w;
    int failed = 0;
#pragma omp parallel num_threads(threads) reduction(|| : failed)
    {
        float *scratch = (float *)malloc(sizeof(float) * scratch_size(c, h, w));
        failed = scratch == NULL;
        Grid g = make_grid(h, w);
        Scratch k = {0};
        if (scratch) {
            clear_scratch(scratch, c, h, w);
            k = carve(scratch, c, h, w, &g);
        }
#pragma omp for schedule(static)
        for (long r = 0; r < rows; ++r)
            if (scratch) ema_row(x + r * row_size, out + r * row_size, &P, &k, &S, r);
        free(scratch);
    }
    return failed ? -1 : 0;
}

/* Floats of ema_backward's parameter gradients, accumulated over rows: w1 (c x c), b1, gamma, beta, b3 (c each),
 * mean_operator (c (h + w + 4) x c), kernel (groups x c x 9), bias (groups: one value for a group's c channels). */
long ema_grads_size(int groups, int c, int h, int w) {
    return (long)c * c + 4L * c + (long)c * (h + w + 4) * c + 9L * groups * c + groups;
}

static long backward_scratch_size(int c, int h, int w) {
    return (long)h * w + 3L * ((h + 2) * (w + 2) + 2) + 2L * c + (long)c * (h + w) + (long)c * (h + w + 4);
}

static void ema_row_backward(const float *x, const float *grad, float *gx, const Params *P, const Saved *S, long r,
                             int group, int groups, float *g, float *scratch) {
    const int c = P->c, h = P->h, w = P->w, q = h + w, nf = q + 4, p = h * w, pw = w + 2;
    const float *features = S->features + r * c * nf, *gates = S->gates + r * c * q, *mean = S->mean + r * c,
                *rstd = S->rstd + r * c, *d2 = S->d2 + r * c, *gate = S->gate + r * p;
    float *g_w1 = g, *g_b1 = g_w1 + c * c, *g_gamma = g_b1 + c, *g_beta = g_gamma + c, *g_b3 = g_beta + c;
    float *g_mean_operator = g_b3 + c, *g_kernel = g_mean_operator + (long)c * nf * c + 9L * group * c;
    float *g_bias = g_mean_operator + (long)c * nf * c + 9L * groups * c + group;
    const long padded = (long)(h + 2) * pw + 2;      /* a padded plane with its guards (see Grid) */
    float *g_z = scratch;                           /* p */
    float *g_z_pad = g_z + p + 1, *x_pad = g_z_pad + padded, *conv_pad = x_pad + padded;
    float *t = conv_pad + padded - 1;               /* c: sum_p g_z y_hat_k */
    float *g_m2 = t + c;                            /* c */
    float *g_pre = g_m2 + c;                        /* c x q: gradient of the gates, then of their logits */
    float *g_features = g_pre + c * q;              /* c x nf */

    /* output = x * gate: gradient of z */
    for (int i = 0; i < p; ++i) g_z[i] = 0.0f;
    for (int k = 0; k < c; ++k) {
        const float *xk = x + (long)k * p, *gk = grad + (long)k * p;
        for (int i = 0; i < p; ++i) g_z[i] += gk[i] * xk[i];
    }
    double total = 0.0;
    for (int i = 0; i < p; ++i) total += (g_z[i] *= gate[i] * (1.0f - gate[i]));
    const float g_z_sum = (float)total;
    /* z = ... + sum_k d2_k (gamma_k y_hat_k + beta_k): descriptors and affine parameters */
    for (int k = 0; k < c; ++k) {
        const float *xk = x + (long)k * p, *gate_h = gates + k * q, *gate_w = gate_h + h;
        double acc = 0.0;
        for (int i = 0; i < h; ++i) {
            const float gh = gate_h[i], *row = xk + i * w, *gzr = g_z + i * w;
            float partial = 0.0f;
            for (int j = 0; j < w; ++j) partial += gzr[j] * (row[j] * gh * gate_w[j] - mean[k]);
            acc += partial;
        }
        t[k] = (float)(acc * rstd[k]);
        g_gamma[k] += d2[k] * t[k];
        g_beta[k] += d2[k] * g_z_sum;
    }
    /* d2 = softmax(b3 + features @ mean_operator) */
    float weighted = 0.0f;
    for (int k = 0; k < c; ++k) weighted += d2[k] * (P->gamma[k] * t[k] + P->beta[k] * g_z_sum);
    for (int k = 0; k < c; ++k) {
        g_m2[k] = d2[k] * (P->gamma[k] * t[k] + P->beta[k] * g_z_sum - weighted);
        g_b3[k] += g_m2[k];
    }
    for (int f = 0; f < c * nf; ++f) {
        const float *m = P->mean_operator + (long)f * c;
        float *gm = g_mean_operator + (long)f * c, acc = 0.0f;
        for (int k = 0; k < c; ++k) {
            gm[k] += features[f] * g_m2[k];
            acc += m[k] * g_m2[k];
        }
        g_features[f] = acc;
    }
    /* GroupNorm and y = x * gate_h * gate_w: gradients of x (direct terms) and of the gates */
    for (int i = 0; i < c * q; ++i) g_pre[i] = 0.0f;
    for (int k = 0; k < c; ++k) {
        const float *xk = x + (long)k * p, *gk = grad + (long)k * p, *gate_h = gates + k * q, *gate_w = gate_h + h;
        float *gxk = gx + (long)k * p, *g_gate_h = g_pre + k * q, *g_gate_w = g_gate_h + h;
        const float scale = rstd[k] * d2[k] * P->gamma[k], offset = -scale * g_z_sum / p;
        const float slope = scale * t[k] / p * rstd[k], centre = mean[k];
        for (int i = 0; i < h; ++i) {
            const float gh = gate_h[i], *row = xk + i * w, *gzr = g_z + i * w, *gr = gk + i * w, *gt = gate + i * w;
            float *gxr = gxk + i * w, acc = 0.0f;
            for (int j = 0; j < w; ++j) {
                const float g_y = scale * gzr[j] + offset - slope * (row[j] * gh * gate_w[j] - centre);
                acc += g_y * row[j] * gate_w[j];
                g_gate_w[j] += g_y * row[j] * gh;
                gxr[j] = gr[j] * gt[j] + g_y * gh * gate_w[j];
            }
            g_gate_h[i] = acc;
        }
    }
    /* the depthwise conv: its input gradient (the kernel applied backwards to g_z) and the kernel's, as flat
     * loops over padded planes (see Grid) */
    const Grid G = make_grid(h, w);
    memset(g_z_pad - 1, 0, sizeof(float) * 2 * G.size);
    pad(&G, g_z_pad, g_z);
    for (int k = 0; k < c; ++k) {
        const float *K = P->kernel + 9L * (group * c + k);
        float *gxk = gx + (long)k * p, *gK = g_kernel + 9 * k;
        pad(&G, x_pad, x + (long)k * p);
        const float k0 = K[0], k1 = K[1], k2 = K[2], k3 = K[3], k4 = K[4], k5 = K[5], k6 = K[6], k7 = K[7], k8 = K[8];
        const long o0 = G.offset[0], o1 = G.offset[1], o2 = G.offset[2], o3 = G.offset[3], o5 = G.offset[5],
                   o6 = G.offset[6], o7 = G.offset[7], o8 = G.offset[8];
        float *restrict out = conv_pad;
        const float *restrict zp = g_z_pad;
        for (long u = G.lo; u < G.hi; ++u)
            out[u] = k8 * zp[u + o0] + k7 * zp[u + o1] + k6 * zp[u + o2] + k5 * zp[u + o3] + k4 * zp[u]
                   + k3 * zp[u + o5] + k2 * zp[u + o6] + k1 * zp[u + o7] + k0 * zp[u + o8];
        for (int i = 0; i < h; ++i) {
            const float *cr = conv_pad + (long)(i + 1) * G.pw + 1;
            float *gxr = gxk + i * w;
            for (int j = 0; j < w; ++j) gxr[j] += cr[j];
        }
        for (int tap = 0; tap < 9; ++tap) gK[tap] += (float)dot(&G, g_z_pad, x_pad + G.offset[tap]);
    }
    *g_bias += g_z_sum;
    /* gates = sigmoid(w1 @ pooled + b1); the pooled means and corners also feed d2 */
    for (int k = 0; k < c; ++k)
        for (int u = 0; u < q; ++u) {
            const float gv = gates[k * q + u];
            g_pre[k * q + u] *= gv * (1.0f - gv);
            g_b1[k] += g_pre[k * q + u];
        }
    for (int k = 0; k < c; ++k)
        for (int j = 0; j < c; ++j) {
            const float weight = P->w1[k * c + j], *gp = g_pre + k * q, *fj = features + j * nf;
            float *gfj = g_features + j * nf, acc = 0.0f;
            for (int u = 0; u < q; ++u) {
                acc += gp[u] * fj[u];
                gfj[u] += weight * gp[u];
            }
            g_w1[k * c + j] += acc;
        }
    for (int k = 0; k < c; ++k) {
        const float *gf = g_features + k * nf;
        float *gxk = gx + (long)k * p;
        for (int i = 0; i < h; ++i) {
            const float row_share = gf[i] / w;
            float *gxr = gxk + i * w;
            for (int j = 0; j < w; ++j) gxr[j] += row_share + gf[h + j] / h;
        }
        gxk[0] += gf[q];
        gxk[w - 1] += gf[q + 1];
        gxk[(h - 1) * w] += gf[q + 2];
        gxk[p - 1] += gf[q + 3];
    }
}

/* Gradients of ema_forward's output: gx (rows, c, h, w) gets the input's, grads (grads_size floats, zeroed here)
 * the parameters' summed over rows; saved_* as written by ema_forward. Returns 0, or -1 without memory. */
int ema_backward(const float *x, const float *grad, float *gx, float *grads, long rows, int groups, int c, int h,
                 int w, const float *w1, const float *gamma, const float *beta, const float *mean_operator,
                 const float *kernel, float *saved_features, float *saved_gates, float *saved_mean, float *saved_rstd,
                 float *saved_d2, float *saved_gate, int threads) {
    const Params P = {c, h, w, w1, NULL, gamma, beta, NULL, mean_operator, kernel, 0.0f, 0.0f};
    const Saved S = {saved_features, saved_gates, saved_mean, saved_rstd, saved_d2, saved_gate};
    const long row_size = (long)c * h * w, n_grads = ema_grads_size(groups, c, h, w);
    int failed = 0;
    memset(grads, 0, sizeof(float) * n_grads);
#pragma omp parallel num_threads(threads) reduction(|| : failed)
    {
        float *scratch = (float *)malloc(sizeof(float) * backward_scratch_size(c, h, w));
        float *local = (float *)calloc(n_grads, sizeof(float));
        failed = scratch == NULL || local == NULL;
#pragma omp for schedule(static)
        for (long r = 0; r < rows; ++r)
            if (!failed)
                ema_row_backward(x + r * row_size, grad + r * row_size, gx + r * row_size, &P, &S, r,
                                 (int)(r % groups), groups, local, scratch);
        if (local) {
#pragma omp critical
            for (long i = 0; i < n_grads; ++i) grads[i] += local[i];
        }
        free(local);
        free(scratch);
    }
    return failed ? -1 : 0;
}
