/* EMA's factored forward (models/ema_factored.py) as one fused CPU pass per row: inference only, float32.
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

/* Scratch floats one row needs. */
static long scratch_size(int c, int h, int w) {
    return (long)c * (h + w + 4) + (long)c * (h + w) + (long)h * w + (long)(h + 2) * (w + 2) + 3L * c;
}

static void ema_row(const float *x, float *out, const Params *P, float *scratch) {
    const int c = P->c, h = P->h, w = P->w, q = h + w, nf = q + 4, p = h * w, pw = w + 2;
    float *features = scratch;          /* c x nf: row means, column means, corners */
    float *gates = features + c * nf;   /* c x q: gate_h then gate_w */
    float *z = gates + c * q;           /* p */
    float *padded = z + p;              /* (h + 2) x (w + 2): one channel with a zero border */
    float *coef = padded + (h + 2) * pw; /* c: d2 * gamma * rstd, the weight of y - mean in z */
    float *mean = coef + c;             /* c: GroupNorm means */
    float *d2 = mean + c;               /* c */

    for (int k = 0; k < c; ++k) {
        const float *xk = x + (long)k * p;
        float *fk = features + k * nf, *col = fk + h;
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
    /* 1x1 branch: gates = sigmoid(w1 @ pooled + b1) */
    for (int k = 0; k < c; ++k) {
        float *gk = gates + k * q;
        for (int t = 0; t < q; ++t) gk[t] = P->b1[k];
        for (int j = 0; j < c; ++j) {
            const float weight = P->w1[k * c + j], *fj = features + j * nf;
            for (int t = 0; t < q; ++t) gk[t] += weight * fj[t];
        }
        for (int t = 0; t < q; ++t) gk[t] = sigmoid(gk[t]);
    }
    /* d2 = softmax(b3 + features @ mean_operator) */
    for (int k = 0; k < c; ++k) d2[k] = P->b3[k];
    for (int f = 0; f < c * nf; ++f) {
        const float v = features[f], *m = P->mean_operator + (long)f * c;
        for (int k = 0; k < c; ++k) d2[k] += v * m[k];
    }
    float top = d2[0], total = 0.0f;
    for (int k = 1; k < c; ++k) top = d2[k] > top ? d2[k] : top;
    for (int k = 0; k < c; ++k) total += (d2[k] = exp_approx(d2[k] - top));
    for (int k = 0; k < c; ++k) d2[k] /= total;
    /* GroupNorm statistics of y = x * gate_h * gate_w, rounded as PyTorch does ((x * gate_h) * gate_w); two
     * passes (mean, then squared deviations) so nearly constant channels keep their variance */
    double shift = P->bias;
    for (int k = 0; k < c; ++k) {
        const float *xk = x + (long)k * p, *gate_h = gates + k * q, *gate_w = gate_h + h;
        double total = 0.0;
        for (int i = 0; i < h; ++i) {
            const float *row = xk + i * w, gh = gate_h[i];
            float partial = 0.0f;
            for (int j = 0; j < w; ++j) partial += row[j] * gh * gate_w[j];
            total += partial;
        }
        const float m = (float)(total / p);
        double squares = 0.0;
        for (int i = 0; i < h; ++i) {
            const float *row = xk + i * w, gh = gate_h[i];
            float partial = 0.0f;
            for (int j = 0; j < w; ++j) {
                const float d = row[j] * gh * gate_w[j] - m;
                partial += d * d;
            }
            squares += partial;
        }
        mean[k] = m;
        coef[k] = (float)(d2[k] * P->gamma[k] / sqrt(squares / p + P->eps));
        shift += d2[k] * P->beta[k];
    }
    /* z = shift + sum_k (coef_k (y_k - mean_k) + depthwise 3x3 of x_k with the d1-combined kernel); subtracting the
     * mean before scaling keeps nearly constant channels (variance << mean^2) as exact as PyTorch's GroupNorm */
    for (int t = 0; t < p; ++t) z[t] = (float)shift;
    memset(padded, 0, sizeof(float) * (h + 2) * pw);
    for (int k = 0; k < c; ++k) {
        const float *xk = x + (long)k * p, *gate_h = gates + k * q, *gate_w = gate_h + h;
        const float *K = P->kernel + 9 * k;
        for (int i = 0; i < h; ++i) memcpy(padded + (i + 1) * pw + 1, xk + i * w, sizeof(float) * w);
        for (int i = 0; i < h; ++i) {
            const float *r0 = padded + i * pw, *r1 = r0 + pw, *r2 = r1 + pw;
            const float gh = gate_h[i], scale = coef[k], centre = mean[k];
            float *zi = z + i * w;
            for (int j = 0; j < w; ++j)
                zi[j] += K[0] * r0[j] + K[1] * r0[j + 1] + K[2] * r0[j + 2] + K[3] * r1[j] + K[4] * r1[j + 1]
                       + K[5] * r1[j + 2] + K[6] * r2[j] + K[7] * r2[j + 1] + K[8] * r2[j + 2]
                       + scale * (r1[j + 1] * gh * gate_w[j] - centre);
        }
    }
    for (int t = 0; t < p; ++t) z[t] = sigmoid(z[t]);
    for (int k = 0; k < c; ++k) {
        const float *xk = x + (long)k * p;
        float *ok = out + (long)k * p;
        for (int t = 0; t < p; ++t) ok[t] = xk[t] * z[t];
    }
}

/* x, out: (rows, c, h, w) contiguous. w1: (c, c); b1, gamma, beta, b3: (c); mean_operator: (c (h + w + 4), c);
 * kernel: (c, 9); bias: d1 . b3. Returns 0, or -1 when scratch memory could not be allocated. */
int ema_forward(const float *x, float *out, long rows, int c, int h, int w, const float *w1, const float *b1,
                const float *gamma, const float *beta, const float *b3, const float *mean_operator,
                const float *kernel, float bias, float eps, int threads) {
    const Params P = {c, h, w, w1, b1, gamma, beta, b3, mean_operator, kernel, bias, eps};
    const long row_size = (long)c * h * w;
    int failed = 0;
#pragma omp parallel num_threads(threads) reduction(|| : failed)
    {
        float *scratch = (float *)malloc(sizeof(float) * scratch_size(c, h, w));
        failed = scratch == NULL;
#pragma omp for schedule(static)
        for (long r = 0; r < rows; ++r)
            if (scratch) ema_row(x + r * row_size, out + r * row_size, &P, scratch);
        free(scratch);
    }
    return failed ? -1 : 0;
}
