// raybrain/cuda/model.cu -- the fused CUDA kernel of a model (CuPy RawModule source). The model is
// the generated header rb_model.cuh that model_core.cuh includes (raybrain/cuda/codegen.py);
// raybrain/cuda/plan.py inlines both into one source string for NVRTC.
//
// Compile-time configuration (macros; raybrain/cuda/launch.py passes them as -D options):
//   RB_REAL       float (default) or double
//   RB_N          regions (the connectome size), e.g. 68, 80, 100
//   RB_K          simulations per thread block (1, 2, 4 or 8); they share one connectome
//   RB_UMASK      bit q set: kernel parameter q is uniform over the batch (read once, from PS)
//   RB_MIN_BLOCKS __launch_bounds__ minimum resident blocks per SM (0: none)
//
// Launch: grid = (number of tiles,), block = (RB_NT,) with RB_NT = RB_N rounded up to 32,
// dynamic shared memory = rb::Smem<RB_REAL, RB_N, RB_K>::BYTES (the connectome transposed plus
// two buffers of the coupled variables). Arguments: the call (rb::Args, one struct in device
// memory, packed by raybrain.cuda.plan.pack_args) and what differs between the launches of one
// call: the first global step, the number of steps, the index of the launch's first sample.
// One launch runs n_steps Euler steps with one __syncthreads() per step.
#include "model_core.cuh"

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
#define RB_UMASK 0ull
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

extern "C" __global__ void RB_BOUNDS rb_fused(const rb::Args<RB_REAL>* __restrict__ args, long long step0,
                                              long long n_steps, int o0)
{
    typedef RB_REAL T;
    typedef rb::Thread<T, RB_N, RB_K, (rb::u64)(RB_UMASK)> Th;
    typedef rb::Smem<T, RB_N, RB_K> Sm;
    extern __shared__ __align__(64) unsigned char rb_smem[];
    T* CT = reinterpret_cast<T*>(rb_smem);
    T* buf0 = reinterpret_cast<T*>(rb_smem + Sm::BUF_OFFSET);
    T* buf1 = buf0 + Sm::BUF;

    const rb::Args<T>& a = *args;
    const int tile = blockIdx.x;
    rb::load_ct<T, RB_N>(CT, a.CS + (long long)a.tile_subj[tile] * RB_N * RB_N, threadIdx.x, blockDim.x);
    Th th;
    th.load(a, tile, threadIdx.x, step0, o0, buf0);
    __syncthreads();
    for (long long t = 0; t < n_steps; t += 2) {  // two steps per trip: the buffers swap statically
        th.step(a, n_steps, CT, buf0, buf1);
        __syncthreads();
        if (t + 1 < n_steps) {
            th.step(a, n_steps, CT, buf1, buf0);
            __syncthreads();
        }
    }
    th.store(a);
}
