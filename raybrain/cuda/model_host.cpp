// raybrain/cuda/model_host.cpp -- host harness of a model's CUDA kernel for CI (no GPU needed).
//
// Compiles model_core.cuh with the model's generated header -- the very per-step maths and
// per-thread program the kernel in model.cu runs -- with g++ (or nvcc -x cu for the host) and runs
// the kernel's schedule serially: for each thread block (tile), the cooperative connectome load for
// every thread, each thread's load, then per step every thread's step(), then every thread's
// store(). The kernel's only barrier is the one after each step; a step reads the buffer t%2 and
// writes the other one, and a thread writes only its own region's sums and samples, so running the
// threads of a block one after another within a step is exactly the parallel execution.
//
// Built on the fly by raybrain/cuda/host.py with -DRB_N, -DRB_K, -DRB_UMASK; one entry point per
// precision with the kernel's arguments (plus the number of tiles), and the layout of rb::Args for
// the check against raybrain.cuda.plan.args_dtype.
#include "model_core.cuh"

#include <cstddef>
#include <vector>

#ifndef RB_N
#define RB_N 80
#endif
#ifndef RB_K
#define RB_K 4
#endif
#ifndef RB_UMASK
#define RB_UMASK 0ull
#endif
#define RB_NT ((((RB_N) + 31) / 32) * 32)

template <typename T>
static int run(const rb::Args<T>* args, int n_tiles, long long step0, long long n_steps, int o0) {
    typedef rb::Thread<T, RB_N, RB_K, (rb::u64)(RB_UMASK)> Th;
    typedef rb::Smem<T, RB_N, RB_K> Sm;
    const rb::Args<T> a = *args;
    // the block's shared memory, laid out as on the device
    std::vector<unsigned long long> smem_store((Sm::BYTES + 7) / 8 + 8);
    unsigned char* base = reinterpret_cast<unsigned char*>(smem_store.data());
    base += (64 - reinterpret_cast<unsigned long long>(base) % 64) % 64;
    T* CT = reinterpret_cast<T*>(base);
    T* buf0 = reinterpret_cast<T*>(base + Sm::BUF_OFFSET);
    T* buf1 = buf0 + Sm::BUF;
    std::vector<Th> th(RB_NT);
    for (int tile = 0; tile < n_tiles; ++tile) {
        for (int tid = 0; tid < RB_NT; ++tid)
            rb::load_ct<T, RB_N>(CT, a.CS + (long long)a.tile_subj[tile] * RB_N * RB_N, tid, RB_NT);
        for (int tid = 0; tid < RB_NT; ++tid) th[tid].load(a, tile, tid, step0, o0, buf0);
        // __syncthreads()
        for (long long t = 0; t < n_steps; ++t) {
            const T* in = (t % 2) ? buf1 : buf0;
            T* out = (t % 2) ? buf0 : buf1;
            for (int tid = 0; tid < RB_NT; ++tid) th[tid].step(a, n_steps, CT, in, out);
            // __syncthreads()
        }
        for (int tid = 0; tid < RB_NT; ++tid) th[tid].store(a);
    }
    return 0;
}

// sizeof(rb::Args<T>), then the offset of each field in declaration order
template <typename T>
static void layout(long long* out) {
    typedef rb::Args<T> A;
    long long* o = out;
    *o++ = (long long)sizeof(A);
    *o++ = offsetof(A, X);
    *o++ = offsetof(A, H);
    *o++ = offsetof(A, acc);
    *o++ = offsetof(A, sums);
    *o++ = offsetof(A, CS);
    *o++ = offsetof(A, tile_subj);
    *o++ = offsetof(A, tile_src);
    *o++ = offsetof(A, tile_real);
    *o++ = offsetof(A, PAR);
    *o++ = offsetof(A, PS);
    *o++ = offsetof(A, keys);
    *o++ = offsetof(A, bold_out);
    *o++ = offsetof(A, B);
    *o++ = offsetof(A, k_h);
    *o++ = offsetof(A, k_tr);
    *o++ = offsetof(A, m_burn);
    *o++ = offsetof(A, dt);
    *o++ = offsetof(A, inv_kh);
    *o++ = offsetof(A, dt_h);
    *o++ = offsetof(A, h);
    *o++ = offsetof(A, bold_on);
    *o++ = offsetof(A, n_out);
}

extern "C" int rb_host_f32(const rb::Args<float>* a, int n_tiles, long long step0, long long n_steps, int o0) {
    return run<float>(a, n_tiles, step0, n_steps, o0);
}
extern "C" int rb_host_f64(const rb::Args<double>* a, int n_tiles, long long step0, long long n_steps, int o0) {
    return run<double>(a, n_tiles, step0, n_steps, o0);
}
extern "C" void rb_host_layout_f32(long long* out) { layout<float>(out); }
extern "C" void rb_host_layout_f64(long long* out) { layout<double>(out); }

// the compile-time configuration of this library: N, K, UMASK, shared bytes (float32, float64),
// S, C, P, O of the model
extern "C" void rb_host_config(long long* out) {
    out[0] = RB_N;
    out[1] = RB_K;
    out[2] = (long long)(RB_UMASK);
    out[3] = rb::Smem<float, RB_N, RB_K>::BYTES;
    out[4] = rb::Smem<double, RB_N, RB_K>::BYTES;
    out[5] = rb::S;
    out[6] = rb::C;
    out[7] = rb::P;
    out[8] = rb::O;
}
