// raybrain/cuda/model_core.cuh -- the generic fused time loop of every model, written once for the
// device (NVRTC / nvcc) and the host (g++, with __host__/__device__ defined away; model_host.cpp).
//
// The model enters through one generated header, rb_model.cuh (raybrain/cuda/codegen.py writes it
// from the model's declaration: S, C, P, O, N_PAIRS, SIGMA, BOLD_INPUT and the functions drift,
// coupled, add_noise, clip of namespace rb::model); raybrain/cuda/plan.py inlines it below. Every
// step of a region, for each of the K simulations a thread holds (the algorithm of
// raybrain/fused.py and the array path of raybrain/integrate.py):
//   * network input c_v = sum_j C_ij x_v,j for each coupled variable, j in increasing order;
//   * counter-based noise (raybrain/random.py): pair q of step t hashes c = (t N_PAIRS + q) N + i,
//     z = fmix64((c GOLDEN) ^ key), u1 = (hi32(z) + 1/2) 2^-32, u2 = lo32(z) 2^-32, Box-Muller
//     (r cos 2 pi u2, r sin 2 pi u2) -> (xi_2q, xi_2q+1); noise variable j gets xi_j;
//   * Euler-Maruyama x + dt dx (+ sigma sqrt(dt) xi_j), then each clipped state to its interval;
//   * running sums of every state variable and summary observable after the burn-in: per
//     hemodynamic block in T, added into the float64 sums in global memory at each block end (and
//     at the last step of a call) when the block lies after the burn-in;
//   * bold_on: the state BOLD_INPUT summed over each hemodynamic step of k_h neural steps drives
//     the Balloon-Windkessel model (raybrain/hemodynamics.py, bw_step), BOLD sampled every k_tr
//     hemodynamic steps after m_burn of them; bold_on == 0: the state BOLD_INPUT itself sampled there.
//
// Layout (see model.cu): one thread block per tile of K simulations that share a connectome, one
// thread per region (blockDim = N rounded up to a warp); a thread keeps the state of its region for
// the K simulations in registers. Shared memory holds the tile's connectome transposed,
// CT[j*N + i] = C[i][j] (conflict-free loads across a warp), and the coupled variables of the tile
// double-buffered as buf[(v*N + j)*K + k] (one vector broadcast load per (v, j) gives the K
// simulations' x_v,j), so one barrier per step suffices: step t reads buffer t%2, writes (t+1)%2.
//
// Host vs device: on the host (g++, -ffp-contract=off, glibc) the float64 code performs the
// operations of NumPy's array path and of the numba single-element kernel in their order; on the
// device nvcc/NVRTC contract a*b+c into FMAs, Box-Muller uses sincospi and the functions are CUDA's,
// so float64 agrees to rounding (~1e-15 per operation), not bit for bit. float32 uses the library
// expf/logf/sincospif (not the polynomials of raybrain/_fastmath.py): agreement with the CPU
// float32 paths is to float32 rounding.
#ifndef RAYBRAIN_MODEL_CORE_CUH
#define RAYBRAIN_MODEL_CORE_CUH

#if !defined(__CUDACC__)
#include <cmath>
#define __host__
#define __device__
#define __forceinline__ inline __attribute__((always_inline))
#endif

#if defined(__CUDACC__)
#define RB_UNROLL _Pragma("unroll")
#define RB_PRAGMA(x) _Pragma(#x)
#define RB_UNROLL_N(n) RB_PRAGMA(unroll n)
#else
#define RB_UNROLL
#define RB_UNROLL_N(n)
#endif

#ifndef RB_FAST_INTRINSICS
#define RB_FAST_INTRINSICS 0  // 1: __expf and __fdividef in float32 on the device (not run on a GPU yet)
#endif

namespace rb {

typedef unsigned long long u64;

constexpr u64 GOLDEN = 0x9E3779B97F4A7C15ull;
constexpr u64 FMIX_M1 = 0xFF51AFD7ED558CCDull;
constexpr u64 FMIX_M2 = 0xC4CEB9FE1A85EC53ull;

__host__ __device__ __forceinline__ u64 fmix64(u64 z) {
    z ^= z >> 33;
    z *= FMIX_M1;
    z ^= z >> 33;
    z *= FMIX_M2;
    return z ^ (z >> 33);
}

// ---- precision-specific maths -----------------------------------------------------------------
template <typename T> struct Math;

template <> struct Math<double> {
    static __host__ __device__ __forceinline__ double exp(double x) { return ::exp(x); }
    static __host__ __device__ __forceinline__ double log(double x) { return ::log(x); }
    static __host__ __device__ __forceinline__ double sqrt(double x) { return ::sqrt(x); }
    static __host__ __device__ __forceinline__ double div(double a, double b) { return a / b; }
    // raybrain.models.maths.phi / raybrain._fastmath.phi64: z / (1 - exp(-z)), the series below |z| = 1e-6
    static __host__ __device__ __forceinline__ double phi(double z) {
        if (::fabs(z) < 1e-6) return 1.0 + 0.5 * z + z * z / 12.0;
        return z / (-::expm1(-z));
    }
    // raybrain.random.normal_pair in float64
    static __host__ __device__ __forceinline__ void normals(u64 z, double& n0, double& n1) {
        const double hi = (double)(z >> 32), lo = (double)(z & 0xFFFFFFFFull);
        const double u1 = (hi + 0.5) * 0x1p-32;
        const double u2 = lo * 0x1p-32;
        const double r = ::sqrt(-2.0 * ::log(u1));
        double s, c;
#if defined(__CUDA_ARCH__)
        ::sincospi(2.0 * u2, &s, &c);
#else
        const double a = 6.283185307179586 * u2;  // 2.0 * np.pi * u2
        s = ::sin(a);
        c = ::cos(a);
#endif
        n0 = r * c;
        n1 = r * s;
    }
};

template <> struct Math<float> {
    static __host__ __device__ __forceinline__ float exp(float x) {
#if defined(__CUDA_ARCH__) && RB_FAST_INTRINSICS
        return __expf(x);
#else
        return ::expf(x);
#endif
    }
    // always the accurate logf: __logf(u1) for u1 just below 1 may come out > 0, and the
    // Box-Muller sqrt(-2 log u1) would then be NaN
    static __host__ __device__ __forceinline__ float log(float x) { return ::logf(x); }
    static __host__ __device__ __forceinline__ float sqrt(float x) { return ::sqrtf(x); }
    static __host__ __device__ __forceinline__ float div(float a, float b) {
#if defined(__CUDA_ARCH__) && RB_FAST_INTRINSICS
        return __fdividef(a, b);
#else
        return a / b;
#endif
    }
    // raybrain._fastmath.phi32: the series for |z| < 0.5, else z / (1 - exp(-z)) (no cancellation
    // there); both are evaluated and one selected, so a warp does not diverge on it
    static __host__ __device__ __forceinline__ float phi(float z) {
        const float z2 = z * z;
        const float series = 1.0f + 0.5f * z + z2 * (1.0f / 12.0f - z2 * (1.0f / 720.0f - z2 * (
            1.0f / 30240.0f - z2 * (1.0f / 1209600.0f))));
        const float exact = div(z, 1.0f - exp(-z));
        return ::fabsf(z) < 0.5f ? series : exact;
    }
    // raybrain.fused's float32 Box-Muller (from the float32-rounded hash halves)
    static __host__ __device__ __forceinline__ void normals(u64 z, float& n0, float& n1) {
        const float hi = (float)(unsigned int)(z >> 32), lo = (float)(unsigned int)(z & 0xFFFFFFFFull);
        const float u1 = (hi + 0.5f) * 0x1p-32f;
        const float u2 = lo * 0x1p-32f;
        const float r = ::sqrtf(-2.0f * log(u1));
        float s, c;
#if defined(__CUDA_ARCH__)
        ::sincospif(2.0f * u2, &s, &c);
#else
        const double a = 6.283185307179586 * (double)u2;
        s = (float)::sin(a);
        c = (float)::cos(a);
#endif
        n0 = r * c;
        n1 = r * s;
    }
};

// the functions a generated drift calls (raybrain.cuda.codegen.C_FUNCTIONS), in its precision
template <typename T> __host__ __device__ __forceinline__ T rb_exp(T x) { return Math<T>::exp(x); }
template <typename T> __host__ __device__ __forceinline__ T rb_log(T x) { return Math<T>::log(x); }
template <typename T> __host__ __device__ __forceinline__ T rb_phi(T x) { return Math<T>::phi(x); }
template <typename T> __host__ __device__ __forceinline__ T rb_div(T a, T b) { return Math<T>::div(a, b); }
// x clipped to [lo, hi], NaN kept (as np.clip and numba's min(max(x, lo), hi))
template <typename T> __host__ __device__ __forceinline__ T rb_clip(T x, T lo, T hi) {
    return x < lo ? lo : (x > hi ? hi : x);
}

}  // namespace rb

// ---- the model: its generated declaration ----------------------------------------------------
#include "rb_model.cuh"

namespace rb {

using model::S;
using model::C;
using model::P;
using model::O;
constexpr int NSUM = S + O;  // running sums: the state variables, then the summary observables
#ifndef RB_COUPLING_UNROLL
#define RB_COUPLING_UNROLL (8 / C)  // the coupling loop over j, unrolled to 8 vector loads per trip (ptxas: no spills)
#endif

// Balloon-Windkessel constants: BalloonWindkessel.coefficients()
template <typename T> struct Hemo {
    T kappa, gamma, inv_tau, inv_alpha, log1m_rho, inv_rho, V0, k1, k2, k3, one;
};

// raybrain.hemodynamics.bw_derivatives + the Euler step (in place)
template <typename T>
__host__ __device__ __forceinline__ void bw_step(T& s, T& f, T& v, T& q, T x, T dt, const Hemo<T>& h) {
    const T v_pow = Math<T>::exp(Math<T>::log(v) * h.inv_alpha);
    const T e_f = Math<T>::exp(Math<T>::div(h.log1m_rho, f));
    const T ds = x - h.kappa * s - h.gamma * (f - h.one);
    const T dv = (f - v_pow) * h.inv_tau;
    const T dq = (f * (h.one - e_f) * h.inv_rho - Math<T>::div(q * v_pow, v)) * h.inv_tau;
    const T s1 = s + dt * ds, f1 = f + dt * s, v1 = v + dt * dv, q1 = q + dt * dq;
    s = s1;
    f = f1;
    v = v1;
    q = q1;
}

// raybrain.hemodynamics.bold_signal
template <typename T>
__host__ __device__ __forceinline__ T bold_signal(T v, T q, const Hemo<T>& h) {
    return h.V0 * (h.k1 * (h.one - q) + h.k2 * (h.one - Math<T>::div(q, v)) + h.k3 * (h.one - v));
}

// ---- one kernel call (raybrain.kernel_call.KernelCall), packed by raybrain.cuda.plan.pack_args:
// the field order and types here and in plan.args_dtype are one layout (a test compares them)
template <typename T> struct Args {
    T* X;                            // (S, B, N) state, updated in place
    T* H;                            // (4, B, N) Balloon-Windkessel state (s, f, v, q)
    T* acc;                          // (B, N) hemodynamic input summed since the last hemodynamic step
    double* sums;                    // (NSUM, B, N) running sums after the burn-in
    const T* CS;                     // (n_subjects, N, N) connectomes
    const int* tile_subj;            // (tiles,) connectome of each tile
    const int* tile_src;             // (tiles, K) batch element of each lane
    const unsigned char* tile_real;  // (tiles, K) lane is real (padding lanes: 0)
    const T* PAR;                    // (B, P, N) parameters, model.kernel_parameters order
    const T* PS;                     // (P,) the batch-uniform values (PAR[0, :, 0])
    const u64* keys;                 // (B,) noise keys
    T* bold_out;                     // (B, n_out, N) samples
    long long B, k_h, k_tr, m_burn;
    T dt, inv_kh, dt_h;
    Hemo<T> h;
    int bold_on;                     // 1: Balloon-Windkessel BOLD; 0: sample the state BOLD_INPUT
    int n_out;                       // samples bold_out holds
};

// bytes of shared memory per block, and the offset of the coupled-variable buffers (vector-aligned)
template <typename T, int N, int K> struct Smem {
    static constexpr int ALIGN = 64;  // >= alignof(Vec<T, K>)
    static constexpr int BUF_OFFSET = (int)(((N * N * sizeof(T)) + ALIGN - 1) / ALIGN * ALIGN);
    static constexpr int BUF = C * N * K;  // values per buffer
    static constexpr int BYTES = BUF_OFFSET + 2 * BUF * (int)sizeof(T);
};

// K values loaded/stored as one (vector) access
template <typename T, int K> struct alignas(sizeof(T) * K) Vec { T v[K]; };

// the cooperative part of the block set-up: CT[j*N + i] = C[i][j] (coalesced global reads)
template <typename T, int N>
__host__ __device__ __forceinline__ void load_ct(T* CT, const T* Cm, int tid, int nthreads) {
    for (int idx = tid; idx < N * N; idx += nthreads) {
        const int r = idx / N, c = idx - (idx / N) * N;
        CT[c * N + r] = Cm[idx];
    }
}

// ---- the per-thread program: load, step (between barriers), store ----------------------------
// UMASK bit q set: parameter q holds one value for the whole batch (read once from PS, one
// register for all K simulations); clear: read per (simulation, region) from PAR.
template <typename T, int N, int K, u64 UMASK>
struct Thread {
    static_assert(K == 1 || K == 2 || K == 4 || K == 8, "K (simulations per block) must be 1, 2, 4 or 8");
    static_assert(P <= 64, "at most 64 kernel parameters (the uniform mask)");
    typedef Vec<T, K> V;
    static __host__ __device__ __forceinline__ constexpr bool uni(int q) { return (UMASK >> q) & 1ull; }

    int i;        // the region of this thread
    bool active;  // i < N (the padding threads of the last warp only join the barriers)
    int b[K];
    bool real[K];
    T x[S][K];     // the state
    T hm[4][K];    // Balloon-Windkessel s, f, v, q
    T ac[K];       // hemodynamic input of the current hemodynamic step
    T bs[NSUM][K]; // block sums of the current hemodynamic step
    T amp[K];      // sigma sqrt(dt)
    u64 key[K];
    T pv[P][K];    // per-element parameters (rows with uni(q) unused)
    T pu[P];       // batch-uniform parameters (rows without uni(q) unused)
    // step control, identical in every thread of the block
    u64 ctr;       // (step * N_PAIRS * N + i) * GOLDEN of the coming step (mod 2^64)
    long long t;   // steps done in this call
    long long q;   // (step + 1) // k_h of the coming step
    long long rem; // (step + 1) % k_h
    long long mq;  // q % k_tr
    int o;         // index of the next sample in bold_out

    __host__ __device__ __forceinline__ T par(int p, int k) const { return uni(p) ? pu[p] : pv[p][k]; }

    __host__ __device__ __forceinline__ long long at(long long plane, int k, const Args<T>& a) const {
        return (plane * a.B + b[k]) * N + i;  // element (plane, b, i) of a (planes, B, N) array
    }

    __host__ __device__ __forceinline__ void load(const Args<T>& a, int tile, int tid, long long step0, int o0,
                                                  T* buf0) {
        i = tid;
        active = tid < N;
        const long long s1 = step0 + 1;
        q = s1 / a.k_h;
        rem = s1 - q * a.k_h;
        mq = q % a.k_tr;
        t = 0;
        o = o0;
        ctr = ((u64)step0 * (u64)(model::N_PAIRS * N) + (u64)i) * GOLDEN;
        if (!active) return;
RB_UNROLL
        for (int p = 0; p < P; ++p)
            if (uni(p)) pu[p] = a.PS[p];
        const T sqdt = Math<T>::sqrt(a.dt);
        V out[C];
RB_UNROLL
        for (int k = 0; k < K; ++k) {
            b[k] = a.tile_src[tile * K + k];
            real[k] = a.tile_real[tile * K + k] != 0;
            T xs[S];
RB_UNROLL
            for (int s = 0; s < S; ++s) {
                x[s][k] = a.X[at(s, k, a)];
                xs[s] = x[s][k];
            }
RB_UNROLL
            for (int r = 0; r < 4; ++r) hm[r][k] = a.H[at(r, k, a)];
            ac[k] = a.acc[at(0, k, a)];
            key[k] = a.keys[b[k]];
RB_UNROLL
            for (int p = 0; p < P; ++p)
                if (!uni(p)) pv[p][k] = a.PAR[((long long)b[k] * P + p) * N + i];
            amp[k] = par(model::SIGMA, k) * sqdt;
RB_UNROLL
            for (int r = 0; r < NSUM; ++r) bs[r][k] = T(0);
            T cv[C];
            model::coupled<T>(xs, cv);
RB_UNROLL
            for (int v = 0; v < C; ++v) out[v].v[k] = cv[v];
        }
RB_UNROLL
        for (int v = 0; v < C; ++v) reinterpret_cast<V*>(buf0)[v * N + i] = out[v];
    }

    // one Euler-Maruyama step: reads the coupled variables of the tile from sin, writes them to sout
    __host__ __device__ __forceinline__ void step(const Args<T>& a, long long n_steps, const T* CT, const T* sin,
                                                  T* sout) {
        const bool block_end = rem == 0;
        const long long blk = block_end ? q : q + 1;  // step // k_h + 1
        const bool last = t == n_steps - 1;
        const bool sample = block_end && mq == 0 && q > a.m_burn;
        if (active) {
            // network input c_v,k = sum_j C_ij x_v,j of each coupled variable v and simulation k
            T c[C][K];
RB_UNROLL
            for (int v = 0; v < C; ++v)
RB_UNROLL
                for (int k = 0; k < K; ++k) c[v][k] = T(0);
RB_UNROLL_N(RB_COUPLING_UNROLL)
            for (int j = 0; j < N; ++j) {
                const T cij = CT[j * N + i];
RB_UNROLL
                for (int v = 0; v < C; ++v) {
                    const V s = reinterpret_cast<const V*>(sin)[v * N + j];
RB_UNROLL
                    for (int k = 0; k < K; ++k) c[v][k] += cij * s.v[k];
                }
            }
            V out[C];
RB_UNROLL
            for (int k = 0; k < K; ++k) {
                T p[P];
RB_UNROLL
                for (int r = 0; r < P; ++r) p[r] = par(r, k);
                T xs[S], cc[C], xi[model::XI];
RB_UNROLL
                for (int s = 0; s < S; ++s) xs[s] = x[s][k];
RB_UNROLL
                for (int v = 0; v < C; ++v) cc[v] = c[v][k];
RB_UNROLL
                for (int pq = 0; pq < model::N_PAIRS; ++pq)
                    Math<T>::normals(fmix64((ctr + (u64)(pq * N) * GOLDEN) ^ key[k]), xi[2 * pq], xi[2 * pq + 1]);
                T dx[S], so[model::O_ARR];
                model::drift<T>(xs, cc, p, T(1), dx, so);
                T xn[S];
RB_UNROLL
                for (int s = 0; s < S; ++s) xn[s] = xs[s] + a.dt * dx[s];
                model::add_noise<T>(xn, xi, amp[k]);
                model::clip<T>(xn);
RB_UNROLL
                for (int s = 0; s < S; ++s) {
                    x[s][k] = xn[s];
                    bs[s][k] += xn[s];
                }
RB_UNROLL
                for (int r = 0; r < O; ++r) bs[S + r][k] += so[r];
                if (a.bold_on) ac[k] += xn[model::BOLD_INPUT];
                T cv[C];
                model::coupled<T>(xn, cv);
RB_UNROLL
                for (int v = 0; v < C; ++v) out[v].v[k] = cv[v];
            }
RB_UNROLL
            for (int v = 0; v < C; ++v) reinterpret_cast<V*>(sout)[v * N + i] = out[v];
            if (block_end || last) {
RB_UNROLL
                for (int k = 0; k < K; ++k) {
                    if (real[k] && blk > a.m_burn) {  // the whole block lies after the burn-in
RB_UNROLL
                        for (int r = 0; r < NSUM; ++r) a.sums[at(r, k, a)] += (double)bs[r][k];
                    }
RB_UNROLL
                    for (int r = 0; r < NSUM; ++r) bs[r][k] = T(0);
                }
            }
            if (block_end) {
RB_UNROLL
                for (int k = 0; k < K; ++k) {
                    if (a.bold_on) {
                        bw_step(hm[0][k], hm[1][k], hm[2][k], hm[3][k], ac[k] * a.inv_kh, a.dt_h, a.h);
                        ac[k] = T(0);
                    }
                    if (sample && real[k])
                        a.bold_out[((long long)b[k] * a.n_out + o) * N + i] =
                            a.bold_on ? bold_signal(hm[2][k], hm[3][k], a.h) : x[model::BOLD_INPUT][k];
                }
            }
        }
        // advance the step control
        o += sample ? 1 : 0;
        t += 1;
        ctr += (u64)(model::N_PAIRS * N) * GOLDEN;
        if (++rem == a.k_h) {
            rem = 0;
            q += 1;
            if (++mq == a.k_tr) mq = 0;
        }
    }

    __host__ __device__ __forceinline__ void store(const Args<T>& a) const {
        if (!active) return;
RB_UNROLL
        for (int k = 0; k < K; ++k) {
            if (!real[k]) continue;
RB_UNROLL
            for (int s = 0; s < S; ++s) a.X[at(s, k, a)] = x[s][k];
RB_UNROLL
            for (int r = 0; r < 4; ++r) a.H[at(r, k, a)] = hm[r][k];
            a.acc[at(0, k, a)] = ac[k];
        }
    }
};

}  // namespace rb

#endif  // RAYBRAIN_MODEL_CORE_CUH
