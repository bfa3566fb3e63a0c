// host_emu.h: run CUDA kernels as host C++ (g++ -std=c++20 -DERNIE_HOST_EMU), so the CPU tests
// exercise the very .cu source the GPU runs (routing, moe_align, moe_reduce).
//
// How the emulation works, and why it is faithful for the features our kernels use:
//   - Every CUDA thread of a block is a fiber (ucontext) with its own stack, so each thread keeps
//     its own locals and program counter, exactly as on the GPU. One OS thread runs the fibers of
//     one block, then the next block; blocks never overlap, so `__shared__` (a function-local
//     `static` here) is private to the running block.
//   - A fiber runs until it reaches a barrier: __syncthreads (whole block), __syncwarp or a warp
//     shuffle (its 32-lane warp). It then yields; the scheduler resumes the others. A barrier opens
//     when every live thread of its scope has arrived; a thread that returns from the kernel stops
//     counting (like an exited GPU thread). If no fiber can run while some are still waiting, the
//     barriers diverged: the launch fails with an error instead of hanging.
//   - A shuffle is: write my value to my lane's slot, warp barrier, read the source lane's slot,
//     warp barrier. That is the register-exchange semantics of __shfl_*_sync with a full mask;
//     partial masks are refused (our kernels never use them).
//   - atomicAdd is a real atomic read-modify-write. Fibers only switch at barriers, so the order in
//     which threads' atomics land is one legal GPU interleaving (threads in id order), not all of
//     them; tests must not depend on that order, as they must not on the GPU.
//   - Launches are serialised by a process-wide mutex, because shared memory is `static`.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <vector>
#include <ucontext.h>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))

// The grouped GEMM moves 16-byte chunks through uint4; build.rs passes -fno-strict-aliasing
// because those loads reinterpret bf16 arrays, as CUDA code routinely does.
struct alignas(16) uint4 {
    unsigned x, y, z, w;
};
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return uint4{x, y, z, w}; }

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};

inline thread_local dim3 threadIdx, blockIdx, blockDim, gridDim;

inline float __uint_as_float(uint32_t u) {
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}
inline uint32_t __float_as_uint(float f) {
    uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    return u;
}
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }

inline unsigned atomicAdd(unsigned* address, unsigned value) {
    return __atomic_fetch_add(address, value, __ATOMIC_RELAXED);
}
inline void __trap() { std::abort(); }

namespace emu {

struct Barrier {
    unsigned expected = 0;    // live threads in scope
    unsigned arrived = 0;     // arrivals in the current phase
    unsigned generation = 0;  // bumped each time the barrier opens
};

enum class State { Ready, Waiting, Done };

struct Fiber {
    ucontext_t ctx;
    dim3 tid;
    unsigned warp = 0, lane = 0;
    State state = State::Ready;
    Barrier* waiting_on = nullptr;
    unsigned wait_generation = 0;
};

// One lane's mma.sync operands: 4 registers of A, 2 of B (packed bf16 pairs).
struct MmaSlot {
    uint32_t a[4];
    uint32_t b[2];
};

struct Block {
    std::vector<Fiber> fibers;
    Barrier block_barrier;
    std::vector<Barrier> warp_barriers;
    std::vector<uint64_t> warp_slots;  // 32 per warp
    std::vector<MmaSlot> mma_slots;    // 32 per warp
};

inline thread_local Block* g_block = nullptr;
inline thread_local Fiber* g_fiber = nullptr;
inline thread_local ucontext_t g_scheduler;
inline thread_local const std::function<void()>* g_kernel = nullptr;

// Arrive at `b`; the last arrival opens it and continues, the others yield until it opens.
inline void arrive_and_wait(Barrier& b) {
    Fiber* self = g_fiber;
    if (++b.arrived == b.expected) {
        b.arrived = 0;
        ++b.generation;
        return;
    }
    self->state = State::Waiting;
    self->waiting_on = &b;
    self->wait_generation = b.generation;
    swapcontext(&self->ctx, &g_scheduler);
}

// A finished thread leaves the scope; if everyone else is already waiting, the barrier opens.
inline void leave(Barrier& b) {
    --b.expected;
    if (b.arrived > 0 && b.arrived == b.expected) {
        b.arrived = 0;
        ++b.generation;
    }
}

inline void fiber_main() {
    Fiber* self = g_fiber;
    (*g_kernel)();
    self->state = State::Done;
    leave(g_block->block_barrier);
    leave(g_block->warp_barriers[self->warp]);
    // uc_link returns control to the scheduler.
}

template <typename T>
inline T shuffle(unsigned mask, T value, unsigned src_lane) {
    static_assert(sizeof(T) <= sizeof(uint64_t), "shuffle of a type wider than 64 bits");
    if (mask != 0xffffffffu) {
        std::fprintf(stderr, "host_emu: partial shuffle masks are not emulated\n");
        std::abort();
    }
    Fiber* self = g_fiber;
    Block* block = g_block;
    uint64_t* slots = &block->warp_slots[self->warp * 32];
    Barrier& bar = block->warp_barriers[self->warp];
    uint64_t bits = 0;
    std::memcpy(&bits, &value, sizeof(T));
    slots[self->lane] = bits;
    arrive_and_wait(bar);
    const uint64_t got = slots[src_lane & 31u];
    arrive_and_wait(bar);  // nobody overwrites a slot before every lane has read
    T out;
    std::memcpy(&out, &got, sizeof(T));
    return out;
}

inline unsigned current_lane() { return g_fiber->lane; }

inline float bf16_bits_to_f32(uint32_t bits16) { return __uint_as_float((bits16 & 0xffffu) << 16); }

// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 as the warp-collective operation it is:
// every lane publishes its A and B registers, then each lane computes its own four D elements
// from the whole 16x16 A and 16x8 B. The register <-> element mapping is the one the PTX ISA
// gives for this shape (group g = lane / 4, q = lane % 4):
//   A: a0 (g, 2q..2q+1)  a1 (g+8, 2q..2q+1)  a2 (g, 2q+8..2q+9)  a3 (g+8, 2q+8..2q+9)
//   B: b0 (k 2q..2q+1, n g)  b1 (k 2q+8..2q+9, n g)
//   C/D: d0 (g, 2q)  d1 (g, 2q+1)  d2 (g+8, 2q)  d3 (g+8, 2q+1)
// The lower-addressed bf16 of a pair sits in the low 16 bits. This checks everything around the
// instruction (gathers, tiling, epilogues) on the CPU; only a GPU run can confirm the hardware
// agrees with the table.
inline void mma_m16n8k16_bf16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
    Fiber* self = g_fiber;
    Block* block = g_block;
    MmaSlot* slots = &block->mma_slots[self->warp * 32];
    Barrier& bar = block->warp_barriers[self->warp];
    for (int i = 0; i < 4; ++i) slots[self->lane].a[i] = a[i];
    for (int i = 0; i < 2; ++i) slots[self->lane].b[i] = b[i];
    arrive_and_wait(bar);
    float A[16][16];
    float B[16][8];
    for (unsigned lane = 0; lane < 32; ++lane) {
        const unsigned g = lane / 4, q = lane % 4;
        const MmaSlot& s = slots[lane];
        const unsigned rows[4] = {g, g + 8, g, g + 8};
        const unsigned cols[4] = {2 * q, 2 * q, 2 * q + 8, 2 * q + 8};
        for (int i = 0; i < 4; ++i) {
            A[rows[i]][cols[i]] = bf16_bits_to_f32(s.a[i]);
            A[rows[i]][cols[i] + 1] = bf16_bits_to_f32(s.a[i] >> 16);
        }
        for (int i = 0; i < 2; ++i) {
            B[2 * q + 8 * i][g] = bf16_bits_to_f32(s.b[i]);
            B[2 * q + 8 * i + 1][g] = bf16_bits_to_f32(s.b[i] >> 16);
        }
    }
    arrive_and_wait(bar);  // slots may be overwritten by the next mma from here on
    const unsigned g = self->lane / 4, q = self->lane % 4;
    for (int i = 0; i < 4; ++i) {
        const unsigned row = g + 8 * (i / 2), col = 2 * q + (i % 2);
        float sum = 0.0f;
        for (int k = 0; k < 16; ++k) sum += A[row][k] * B[k][col];
        d[i] += sum;
    }
}

// Runs `kernel` over grid x block. Returns 0, or -1 when the barriers deadlocked.
// -Wclobbered is a false positive here: swapcontext is declared returns_twice like setjmp, but the
// scheduler context it saves is resumed exactly where it was saved, with no locals changed between.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wclobbered"
inline int launch(dim3 grid, dim3 block, const std::function<void()>& kernel) {
    static std::mutex launch_mutex;
    std::lock_guard<std::mutex> guard(launch_mutex);
    const unsigned n_threads = block.x * block.y * block.z;
    if (n_threads == 0 || n_threads > 1024 || n_threads % 32 != 0) {
        std::fprintf(stderr, "host_emu: block of %u threads (need 32..1024, a multiple of 32)\n",
                     n_threads);
        return -1;
    }
    const unsigned n_warps = n_threads / 32;
    constexpr size_t kStack = 64 * 1024;
    std::vector<char> stacks(kStack * n_threads);
    g_kernel = &kernel;
    blockDim = block;
    gridDim = grid;
    int rc = 0;
    for (unsigned bz = 0; bz < grid.z && rc == 0; ++bz)
    for (unsigned by = 0; by < grid.y && rc == 0; ++by)
    for (unsigned bx = 0; bx < grid.x && rc == 0; ++bx) {
        Block b;
        b.fibers.resize(n_threads);
        b.block_barrier.expected = n_threads;
        b.warp_barriers.resize(n_warps);
        for (auto& w : b.warp_barriers) w.expected = 32;
        b.warp_slots.assign(n_warps * 32, 0);
        b.mma_slots.assign(n_warps * 32, MmaSlot{});
        g_block = &b;
        for (unsigned i = 0; i < n_threads; ++i) {
            Fiber& f = b.fibers[i];
            f.tid = dim3{i % block.x, (i / block.x) % block.y, i / (block.x * block.y)};
            f.warp = i / 32;
            f.lane = i % 32;
            getcontext(&f.ctx);
            f.ctx.uc_stack.ss_sp = &stacks[kStack * i];
            f.ctx.uc_stack.ss_size = kStack;
            f.ctx.uc_link = &g_scheduler;
            makecontext(&f.ctx, fiber_main, 0);
        }
        unsigned done = 0;
        while (done < n_threads) {
            bool ran = false;
            done = 0;
            for (auto& f : b.fibers) {
                if (f.state == State::Waiting && f.waiting_on->generation != f.wait_generation) {
                    f.state = State::Ready;
                }
                if (f.state == State::Ready) {
                    g_fiber = &f;
                    threadIdx = f.tid;
                    blockIdx = dim3{bx, by, bz};
                    swapcontext(&g_scheduler, &f.ctx);
                    ran = true;
                }
                done += f.state == State::Done;
            }
            if (!ran && done < n_threads) {
                std::fprintf(stderr,
                             "host_emu: deadlock in block (%u,%u,%u): threads wait at barriers "
                             "that can never open (divergent __syncthreads/shuffle)\n",
                             bx, by, bz);
                rc = -1;
                break;
            }
        }
    }
    g_block = nullptr;
    g_fiber = nullptr;
    g_kernel = nullptr;
    return rc;
}
#pragma GCC diagnostic pop

}  // namespace emu

template <typename T>
inline T __shfl_sync(unsigned mask, T value, int src_lane, int width = 32) {
    const unsigned lane = emu::current_lane();
    const unsigned base = lane & ~(unsigned)(width - 1);
    return emu::shuffle(mask, value, base + ((unsigned)src_lane % (unsigned)width));
}

template <typename T>
inline T __shfl_xor_sync(unsigned mask, T value, int lane_mask, int width = 32) {
    const unsigned lane = emu::current_lane();
    unsigned src = lane ^ (unsigned)lane_mask;
    if ((src & ~(unsigned)(width - 1)) != (lane & ~(unsigned)(width - 1))) src = lane;
    return emu::shuffle(mask, value, src);
}

template <typename T>
inline T __shfl_down_sync(unsigned mask, T value, unsigned delta, int width = 32) {
    const unsigned lane = emu::current_lane();
    const unsigned src = (lane % (unsigned)width) + delta < (unsigned)width ? lane + delta : lane;
    return emu::shuffle(mask, value, src);
}

inline void __syncwarp(unsigned mask = 0xffffffffu) {
    if (mask != 0xffffffffu) {
        std::fprintf(stderr, "host_emu: partial __syncwarp masks are not emulated\n");
        std::abort();
    }
    emu::arrive_and_wait(emu::g_block->warp_barriers[emu::g_fiber->warp]);
}

inline void __syncthreads() { emu::arrive_and_wait(emu::g_block->block_barrier); }
