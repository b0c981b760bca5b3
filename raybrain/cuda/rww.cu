// raybrain/cuda/rww.cu -- the fused rWW-FIC + Balloon-Windkessel CUDA kernel (CuPy RawModule source).
//
// Compile-time configuration (macros; raybrain/cuda/launch.py passes them as -D options):
//   RB_REAL       float (default) or double
//   RB_N          regions (the connectome size), e.g. 68, 80, 100
//   RB_K          simulations per thread block (1, 2, 4 or 8); they share one connectome
//   RB_UMASK      bit q set: parameter q of RWW_PARAM_ORDER is uniform over the batch
//   RB_MIN_BLOCKS __launch_bounds__ minimum resident blocks per SM (0: none)
//
// Launch: grid = (number of tiles,), block = (RB_NT,) with RB_NT = RB_N rounded up to 32,
// dynamic shared memory = rb::Smem<RB_REAL, RB_N, RB_K>::BYTES (the connectome transposed plus
// two S_E buffers). One launch runs n_steps Euler steps with one __syncthreads() per step; the
// per-step maths and the per-thread program are in rww_core.cuh (compiled for the host too).
#include "rww_core.cuh"

#ifndef RB_REAL
#define RB_REAL float
#endif
#ifndef RB_N
#define RB_N 80
#endif
#ifndef RB_K
#define RB_K 4
#endif
#ifndef RB_UMASK
#define RB_UMASK 0u
#endif
#ifndef RB_MIN_BLOCKS
#define RB_MIN_BLOCKS 0
#endif
#define RB_NT ((((RB_N) + 31) / 32) * 32)

#if RB_MIN_BLOCKS > 0
#define RB_BOUNDS __launch_bounds__(RB_NT, RB_MIN_BLOCKS)
#else
#define RB_BOUNDS __launch_bounds__(RB_NT)
#endif

extern "C" __global__ void RB_BOUNDS rww_fused(
    RB_REAL* __restrict__ SE, RB_REAL* __restrict__ SI, RB_REAL* __restrict__ hs, RB_REAL* __restrict__ hf,
    RB_REAL* __restrict__ hv, RB_REAL* __restrict__ hq, RB_REAL* __restrict__ acc,
    double* __restrict__ sum_rE, double* __restrict__ sum_SE, double* __restrict__ sum_SI,
    const RB_REAL* __restrict__ CS, const int* __restrict__ tile_subj, const int* __restrict__ tile_src,
    const unsigned char* __restrict__ tile_real, const RB_REAL* __restrict__ PAR, const RB_REAL* __restrict__ PS,
    const unsigned long long* __restrict__ keys, long long step0, long long n_steps, RB_REAL dt, long long k_h,
    RB_REAL inv_kh, RB_REAL dt_h, long long k_tr, long long m_burn, const RB_REAL* __restrict__ coef,
    int bold_on, RB_REAL* __restrict__ bold_out, int n_out, int o0)
{
    typedef RB_REAL T;
    typedef rb::Thread<T, RB_N, RB_K, (unsigned)(RB_UMASK)> Th;
    typedef rb::Smem<T, RB_N, RB_K> Sm;
    extern __shared__ __align__(64) unsigned char rb_smem[];
    T* CT = reinterpret_cast<T*>(rb_smem);
    T* buf0 = reinterpret_cast<T*>(rb_smem + Sm::BUF_OFFSET);
    T* buf1 = buf0 + RB_N * RB_K;

    rb::Args<T> a;
    a.SE = SE; a.SI = SI; a.hs = hs; a.hf = hf; a.hv = hv; a.hq = hq; a.acc = acc;
    a.sum_rE = sum_rE; a.sum_SE = sum_SE; a.sum_SI = sum_SI;
    a.CS = CS; a.tile_subj = tile_subj; a.tile_src = tile_src; a.tile_real = tile_real;
    a.PAR = PAR; a.PS = PS; a.keys = keys;
    a.step0 = step0; a.n_steps = n_steps; a.k_h = k_h; a.k_tr = k_tr; a.m_burn = m_burn;
    a.dt = dt; a.inv_kh = inv_kh; a.dt_h = dt_h;
    a.h.kappa = coef[0]; a.h.gamma = coef[1]; a.h.inv_tau = coef[2]; a.h.inv_alpha = coef[3];
    a.h.log1m_rho = coef[4]; a.h.inv_rho = coef[5]; a.h.V0 = coef[6]; a.h.k1 = coef[7]; a.h.k2 = coef[8];
    a.h.k3 = coef[9]; a.h.one = coef[10];
    a.bold_on = bold_on; a.bold_out = bold_out; a.n_out = n_out; a.o0 = o0;

    const int tile = blockIdx.x;
    rb::load_ct<T, RB_N>(CT, CS + (long long)tile_subj[tile] * RB_N * RB_N, threadIdx.x, blockDim.x);
    Th th;
    th.load(a, tile, threadIdx.x, buf0);
    __syncthreads();
    for (long long t = 0; t < n_steps; t += 2) {  // two steps per trip: the buffers swap statically
        th.step(a, CT, buf0, buf1);
        __syncthreads();
        if (t + 1 < n_steps) {
            th.step(a, CT, buf1, buf0);
            __syncthreads();
        }
    }
    th.store(a);
}
