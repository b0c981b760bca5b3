// raybrain/cuda/rww_host.cpp -- host harness of the CUDA kernel for CI (no GPU needed).
//
// Compiles rww_core.cuh -- the very per-step maths and per-thread program the kernel in rww.cu
// runs -- with g++ (or nvcc -x cu for the host) and runs the kernel's schedule serially: for each
// thread block (tile), the cooperative connectome load for every thread, each thread's load, then
// per step every thread's step(), then every thread's store(). The kernel's only barrier is the one
// after each step; a step reads the S_E buffer t%2 and writes the other one, so running the
// threads of a block one after another within a step is exactly the parallel execution.
//
// Built on the fly by raybrain/cuda/host.py with -DRB_N, -DRB_K, -DRB_UMASK; exposes one entry
// point per precision with the kernel's argument list (plus the number of tiles).
#include "rww_core.cuh"

#include <vector>

#ifndef RB_N
#define RB_N 80
#endif
#ifndef RB_K
#define RB_K 4
#endif
#ifndef RB_UMASK
#define RB_UMASK 0u
#endif
#define RB_NT ((((RB_N) + 31) / 32) * 32)

template <typename T>
static int run(T* SE, T* SI, T* hs, T* hf, T* hv, T* hq, T* acc, double* sum_rE, double* sum_SE, double* sum_SI,
               const T* CS, const int* tile_subj, const int* tile_src, const unsigned char* tile_real, int n_tiles,
               const T* PAR, const T* PS, const unsigned long long* keys, long long step0, long long n_steps, T dt,
               long long k_h, T inv_kh, T dt_h, long long k_tr, long long m_burn, const T* coef, int bold_on,
               T* bold_out, int n_out, int o0) {
    typedef rb::Thread<T, RB_N, RB_K, (unsigned)(RB_UMASK)> Th;
    typedef rb::Smem<T, RB_N, RB_K> Sm;
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

    // the block's shared memory, laid out as on the device
    std::vector<unsigned long long> smem_store((Sm::BYTES + 7) / 8 + 8);
    unsigned char* base = reinterpret_cast<unsigned char*>(smem_store.data());
    base += (64 - reinterpret_cast<unsigned long long>(base) % 64) % 64;
    T* CT = reinterpret_cast<T*>(base);
    T* buf0 = reinterpret_cast<T*>(base + Sm::BUF_OFFSET);
    T* buf1 = buf0 + RB_N * RB_K;
    std::vector<Th> th(RB_NT);
    for (int tile = 0; tile < n_tiles; ++tile) {
        for (int tid = 0; tid < RB_NT; ++tid)
            rb::load_ct<T, RB_N>(CT, CS + (long long)tile_subj[tile] * RB_N * RB_N, tid, RB_NT);
        for (int tid = 0; tid < RB_NT; ++tid) th[tid].load(a, tile, tid, buf0);
        // __syncthreads()
        for (long long t = 0; t < n_steps; ++t) {
            const T* in = (t % 2) ? buf1 : buf0;
            T* out = (t % 2) ? buf0 : buf1;
            for (int tid = 0; tid < RB_NT; ++tid) th[tid].step(a, CT, in, out);
            // __syncthreads()
        }
        for (int tid = 0; tid < RB_NT; ++tid) th[tid].store(a);
    }
    return 0;
}

#define RB_ENTRY(NAME, T)                                                                                           \
    extern "C" int NAME(T* SE, T* SI, T* hs, T* hf, T* hv, T* hq, T* acc, double* sum_rE, double* sum_SE,           \
                        double* sum_SI, const T* CS, const int* tile_subj, const int* tile_src,                     \
                        const unsigned char* tile_real, int n_tiles, const T* PAR, const T* PS,                      \
                        const unsigned long long* keys, long long step0, long long n_steps, T dt, long long k_h,     \
                        T inv_kh, T dt_h, long long k_tr, long long m_burn, const T* coef, int bold_on,              \
                        T* bold_out, int n_out, int o0) {                                                            \
        return run<T>(SE, SI, hs, hf, hv, hq, acc, sum_rE, sum_SE, sum_SI, CS, tile_subj, tile_src, tile_real,       \
                      n_tiles, PAR, PS, keys, step0, n_steps, dt, k_h, inv_kh, dt_h, k_tr, m_burn, coef, bold_on,    \
                      bold_out, n_out, o0);                                                                          \
    }

RB_ENTRY(rb_host_rww_f32, float)
RB_ENTRY(rb_host_rww_f64, double)

// the compile-time configuration of this library: N, K, UMASK, shared bytes (float32, float64)
extern "C" void rb_host_config(int* out) {
    out[0] = RB_N;
    out[1] = RB_K;
    out[2] = (int)(RB_UMASK);
    out[3] = rb::Smem<float, RB_N, RB_K>::BYTES;
    out[4] = rb::Smem<double, RB_N, RB_K>::BYTES;
}
