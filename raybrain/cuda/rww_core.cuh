// raybrain/cuda/rww_core.cuh -- the per-step maths and the per-thread program of the fused
// rWW-FIC + Balloon-Windkessel kernel, written once for the device (NVRTC / nvcc) and the host
// (g++, with __host__/__device__ defined away; the CI harness rww_host.cpp).
//
// Mirrors raybrain/fused.py (_make_rww_kernel) operation for operation:
//   * the model equations of raybrain/models/rww.py (currents_and_rates, gating_drift) and of
//     raybrain/hemodynamics.py (bw_step, bold_signal), same expression order;
//   * the counter-based noise of raybrain/random.py: z = fmix64(((step*N + i) * GOLDEN) ^ key),
//     u1 = (hi32(z) + 1/2) 2^-32, u2 = lo32(z) 2^-32, Box-Muller (r cos 2 pi u2, r sin 2 pi u2)
//     -> (xi_E, xi_I), so a simulation's noise depends only on (key, step, region);
//   * Euler-Maruyama with clipping of S_E, S_I to [0, 1] (NaN propagates, as numba's min/max);
//   * the hemodynamic input summed over each hemodynamic step of k_h neural steps, BOLD sampled
//     every k_tr hemodynamic steps after m_burn of them;
//   * running sums of r_E, S_E, S_I: per hemodynamic block in T, flushed into float64 at each
//     block end (and at the last step of a call) when the block lies after the burn-in.
//
// Layout (see rww.cu): one thread block per tile of K simulations that share a connectome, one
// thread per region (blockDim = N rounded up to a warp); a thread keeps the state of its region
// for the K simulations in registers. Shared memory holds the tile's connectome transposed,
// CT[j*N + i] = C[i][j] (conflict-free loads across a warp), and S_E of the tile double-buffered
// as buf[j*K + k] (one vector broadcast load per j gives the K simulations' S_E,j), so one
// barrier per step suffices: step t reads buffer t%2 and writes buffer (t+1)%2.
//
// Host vs device: on the host (g++, no FMA contraction, glibc) the float64 code gives the numba
// single-element kernel's results bit for bit; on the device nvcc/NVRTC contract a*b+c into FMAs,
// Box-Muller uses sincospi and the functions are CUDA's, so float64 agrees to rounding (~1e-15 per
// operation), not bit for bit. float32 uses the library expf/logf/sincospif (not the polynomial
// approximations of raybrain/_fastmath.py): agreement with the CPU float32 paths is to float32
// rounding.
#ifndef RAYBRAIN_RWW_CORE_CUH
#define RAYBRAIN_RWW_CORE_CUH

#if !defined(__CUDACC__)
#include <cmath>
#define __host__
#define __device__
#define __forceinline__ inline __attribute__((always_inline))
#endif

#if defined(__CUDACC__)
#define RB_UNROLL _Pragma("unroll")
#define RB_UNROLL_N(n) _Pragma(#n)
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

// rows of the packed parameter array PAR (B, NP, N): raybrain.fused.RWW_PARAM_ORDER
enum Param { G = 0, SIGMA, W_EE, W_EI, W_IE, I0, J_NMDA, W_E, W_I, A_E, B_E, D_E, A_I, B_I, D_I,
             TAU_E, TAU_I, GAMMA, NP };

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
    // raybrain._fastmath.phi64: z / (1 - exp(-z)) with the series below |z| = 1e-6
    static __host__ __device__ __forceinline__ double phi(double z) {
        if (::fabs(z) < 1e-6) return 1.0 + 0.5 * z + z * z / 12.0;
        return z / (-::expm1(-z));
    }
    // raybrain.fused._normals64
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
    // raybrain.fused._normals32 (Box-Muller in float32 from the float32-rounded hash halves)
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

// ---- the model (raybrain/models/rww.py), literal-free like the Python -------------------------
// p: the 18 parameters of one (simulation, region) in RWW_PARAM_ORDER
template <typename T>
__host__ __device__ __forceinline__ void rww_rate_and_drift(T S_E, T S_I, T c, const T (&p)[NP],
                                                            T& r_E, T& dS_E, T& dS_I) {
    // currents_and_rates
    const T JS_E = p[J_NMDA] * S_E;
    const T I_E = p[W_E] * p[I0] + p[W_EE] * JS_E + p[G] * p[J_NMDA] * c - p[W_IE] * S_I;
    const T I_I = p[W_I] * p[I0] + p[W_EI] * JS_E - S_I;
    r_E = Math<T>::div(Math<T>::phi(p[D_E] * (p[A_E] * I_E - p[B_E])), p[D_E]);
    const T r_I = Math<T>::div(Math<T>::phi(p[D_I] * (p[A_I] * I_I - p[B_I])), p[D_I]);
    // gating_drift
    const T gr = p[GAMMA] * r_E;
    dS_E = Math<T>::div(-S_E, p[TAU_E]) + gr - S_E * gr;
    dS_I = Math<T>::div(-S_I, p[TAU_I]) + r_I;
}

// clip to [0, 1] keeping NaN (numba's min(max(x, 0), 1) returns NaN for NaN)
template <typename T>
__host__ __device__ __forceinline__ T clip01(T x) {
    return x < T(0) ? T(0) : (x > T(1) ? T(1) : x);
}

// Balloon-Windkessel constants: BalloonWindkessel.coefficients()
template <typename T> struct Hemo {
    T kappa, gamma, inv_tau, inv_alpha, log1m_rho, inv_rho, V0, k1, k2, k3, one;
};

// raybrain.hemodynamics.bw_step (in place)
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

// ---- the kernel's arguments (one struct, filled by the kernel and by the host harness) --------
template <typename T> struct Args {
    T *SE, *SI, *hs, *hf, *hv, *hq, *acc;       // (B, N) state, updated in place
    double *sum_rE, *sum_SE, *sum_SI;           // (B, N) running sums, updated in place
    const T* CS;                                // (S, N, N) connectomes
    const int* tile_subj;                       // (tiles,) connectome of each tile
    const int* tile_src;                        // (tiles, K) batch element of each lane
    const unsigned char* tile_real;             // (tiles, K) lane is real (padding lanes: 0)
    const T* PAR;                               // (B, NP, N) parameters
    const T* PS;                                // (NP,) the batch-uniform values (PAR[0, :, 0])
    const u64* keys;                            // (B,) noise keys
    long long step0, n_steps, k_h, k_tr, m_burn;
    T dt, inv_kh, dt_h;
    Hemo<T> h;
    int bold_on;
    T* bold_out;                                // (B, n_out, N)
    int n_out, o0;                              // samples in bold_out, index of this call's first
};

// bytes of shared memory per block, and the offset of the S_E buffers (vector-aligned)
template <typename T, int N, int K> struct Smem {
    static constexpr int ALIGN = 64;  // >= alignof(Vec<T, K>)
    static constexpr int BUF_OFFSET = (int)(((N * N * sizeof(T)) + ALIGN - 1) / ALIGN * ALIGN);
    static constexpr int BYTES = BUF_OFFSET + 2 * N * K * (int)sizeof(T);
};

// K values loaded/stored as one (vector) access
template <typename T, int K> struct alignas(sizeof(T) * K) Vec { T v[K]; };

// the cooperative part of the block set-up: CT[j*N + i] = C[i][j] (coalesced global reads)
template <typename T, int N>
__host__ __device__ __forceinline__ void load_ct(T* CT, const T* C, int tid, int nthreads) {
    for (int idx = tid; idx < N * N; idx += nthreads) {
        const int r = idx / N, c = idx - (idx / N) * N;
        CT[c * N + r] = C[idx];
    }
}

// ---- the per-thread program: load, step (between barriers), store ----------------------------
// UMASK bit q set: parameter q holds one value for the whole batch (read once from PS, one
// register for all K simulations); clear: read per (simulation, region) from PAR.
template <typename T, int N, int K, unsigned UMASK>
struct Thread {
    static_assert(K == 1 || K == 2 || K == 4 || K == 8, "K (simulations per block) must be 1, 2, 4 or 8");
    typedef Vec<T, K> V;
    static __host__ __device__ __forceinline__ constexpr bool uni(int q) { return (UMASK >> q) & 1u; }

    int i;  // the region of this thread
    bool active;  // i < N (the padding threads of the last warp only join the barriers)
    int b[K];
    bool real[K];
    T se[K], si[K], hs[K], hf[K], hv[K], hq[K], ac[K], br[K], be[K], bi[K], amp[K];
    double sr[K], sse[K], ssi[K];
    u64 key[K];
    T pv[NP][K];  // per-element parameters (rows with uni(q) unused)
    T pu[NP];     // batch-uniform parameters (rows without uni(q) unused)
    // step control, identical in every thread of the block
    u64 ctr;       // (step * N + i) * GOLDEN of the coming step (mod 2^64)
    long long t;   // steps done in this call
    long long q;   // (step + 1) // k_h of the coming step
    long long rem; // (step + 1) % k_h
    long long mq;  // q % k_tr
    int o;         // index of the next BOLD sample in bold_out

    __host__ __device__ __forceinline__ T par(int p, int k) const { return uni(p) ? pu[p] : pv[p][k]; }

    __host__ __device__ __forceinline__ void load(const Args<T>& a, int tile, int tid, T* buf0) {
        i = tid;
        active = tid < N;
        const long long s1 = a.step0 + 1;
        q = s1 / a.k_h;
        rem = s1 - q * a.k_h;
        mq = q % a.k_tr;
        t = 0;
        o = a.o0;
        ctr = ((u64)a.step0 * (u64)N + (u64)i) * GOLDEN;
        if (!active) return;
RB_UNROLL
        for (int p = 0; p < NP; ++p)
            if (uni(p)) pu[p] = a.PS[p];
        const T sqdt = Math<T>::sqrt(a.dt);
        V out;
RB_UNROLL
        for (int k = 0; k < K; ++k) {
            b[k] = a.tile_src[tile * K + k];
            real[k] = a.tile_real[tile * K + k] != 0;
            const long long e = (long long)b[k] * N + i;
            se[k] = a.SE[e];
            si[k] = a.SI[e];
            hs[k] = a.hs[e];
            hf[k] = a.hf[e];
            hv[k] = a.hv[e];
            hq[k] = a.hq[e];
            ac[k] = a.acc[e];
            sr[k] = a.sum_rE[e];
            sse[k] = a.sum_SE[e];
            ssi[k] = a.sum_SI[e];
            key[k] = a.keys[b[k]];
RB_UNROLL
            for (int p = 0; p < NP; ++p)
                if (!uni(p)) pv[p][k] = a.PAR[((long long)b[k] * NP + p) * N + i];
            amp[k] = par(SIGMA, k) * sqdt;
            br[k] = T(0);
            be[k] = T(0);
            bi[k] = T(0);
            out.v[k] = se[k];
        }
        reinterpret_cast<V*>(buf0)[i] = out;
    }

    // one Euler-Maruyama step: reads S_E of the tile from sin, writes the new S_E to sout
    __host__ __device__ __forceinline__ void step(const Args<T>& a, const T* CT, const T* sin, T* sout) {
        const bool block_end = rem == 0;
        const long long blk = block_end ? q : q + 1;  // step // k_h + 1
        const bool last = t == a.n_steps - 1;
        const bool sample = a.bold_on && block_end && mq == 0 && q > a.m_burn;
        if (active) {
            // network input c_k = sum_j C_ij S_E,j of each simulation k, j in increasing order
            T c[K];
RB_UNROLL
            for (int k = 0; k < K; ++k) c[k] = T(0);
RB_UNROLL_N(unroll 16)
            for (int j = 0; j < N; ++j) {
                const T cij = CT[j * N + i];
                const V s = reinterpret_cast<const V*>(sin)[j];
RB_UNROLL
                for (int k = 0; k < K; ++k) c[k] += cij * s.v[k];
            }
            V out;
RB_UNROLL
            for (int k = 0; k < K; ++k) {
                T p[NP];
RB_UNROLL
                for (int r = 0; r < NP; ++r) p[r] = par(r, k);
                T nE, nI;
                Math<T>::normals(fmix64(ctr ^ key[k]), nE, nI);
                T rE, dE, dI;
                rww_rate_and_drift(se[k], si[k], c[k], p, rE, dE, dI);
                const T x = se[k] + a.dt * dE + amp[k] * nE;
                const T y = si[k] + a.dt * dI + amp[k] * nI;
                se[k] = clip01(x);
                si[k] = clip01(y);
                out.v[k] = se[k];
                ac[k] += se[k];
                br[k] += rE;
                be[k] += se[k];
                bi[k] += si[k];
            }
            reinterpret_cast<V*>(sout)[i] = out;
            if (block_end || last) {
RB_UNROLL
                for (int k = 0; k < K; ++k) {
                    if (blk > a.m_burn) {  // the whole block lies after the burn-in
                        sr[k] += (double)br[k];
                        sse[k] += (double)be[k];
                        ssi[k] += (double)bi[k];
                    }
                    br[k] = T(0);
                    be[k] = T(0);
                    bi[k] = T(0);
                }
            }
            if (a.bold_on && block_end) {
RB_UNROLL
                for (int k = 0; k < K; ++k) {
                    bw_step(hs[k], hf[k], hv[k], hq[k], ac[k] * a.inv_kh, a.dt_h, a.h);
                    ac[k] = T(0);
                    if (sample && real[k])
                        a.bold_out[((long long)b[k] * a.n_out + o) * N + i] = bold_signal(hv[k], hq[k], a.h);
                }
            }
        }
        // advance the step control
        o += sample ? 1 : 0;
        t += 1;
        ctr += (u64)N * GOLDEN;
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
            const long long e = (long long)b[k] * N + i;
            a.SE[e] = se[k];
            a.SI[e] = si[k];
            a.hs[e] = hs[k];
            a.hf[e] = hf[k];
            a.hv[e] = hv[k];
            a.hq[e] = hq[k];
            a.acc[e] = ac[k];
            a.sum_rE[e] = sr[k];
            a.sum_SE[e] = sse[k];
            a.sum_SI[e] = ssi[k];
        }
    }
};

}  // namespace rb

#endif  // RAYBRAIN_RWW_CORE_CUH
