#include "scheduler.hpp"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

// Switching fibers: saves the callee-saved registers and the stack pointer of the running context
// in *save and resumes the one whose stack pointer is `load`. glibc's swapcontext would do, but
// it makes a system call (the signal mask) per switch, and a kernel launch here switches once or
// twice per thread.
extern "C" void cuda_emu_switch(void** save, void* load);
asm(R"(
  .text
  .globl cuda_emu_switch
  .type cuda_emu_switch, @function
cuda_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size cuda_emu_switch, .-cuda_emu_switch
)");

namespace cuda_emu {

namespace {

constexpr std::size_t kStackBytes = 64 * 1024;

enum class State { ready, at_block_barrier, at_warp_barrier, done };

struct Fiber {
  std::unique_ptr<std::byte[]> stack{new std::byte[kStackBytes]};
  void* sp = nullptr;
  State state = State::ready;
  Position pos;
  int lane = 0, warp = 0;
  std::size_t color = 0;  // bytes left unused at the stack's top, different per fiber
  unsigned phase = 0;     // which of the warp's two shuffle slot sets this lane uses next
  long exchanges = 0;     // shuffles this lane has published
};

// The block being run. Counters say who waits where, so a barrier is released the moment its last
// thread arrives, and the ready queue holds the threads to run next, in order.
struct Block {
  std::vector<Fiber> fibers;  // grows to the largest block seen; stacks are reused
  int count = 0;              // threads in this block
  int live = 0, at_block = 0;
  std::vector<int> warp_live, warp_waiting;
  std::vector<int> ready;  // fiber indices, run front to back
  std::size_t next = 0;    // the next entry of `ready` to run
  Fiber* running = nullptr;
  void* scheduler_sp = nullptr;
  const std::function<void()>* thread = nullptr;
  std::vector<std::uint64_t> exchange;  // warp shuffles: two sets of one 8-byte slot per lane
  std::vector<const void*> poisoned;    // __shared__ arrays filled with NaN bytes in this block
} block;

Position g_position;

// CUDA_EMU_ORDER=reverse runs threads (and blocks) last to first; see set_reverse_order.
bool g_reverse = [] {
  const char* e = std::getenv("CUDA_EMU_ORDER");
  if (e == nullptr || *e == 0 || std::strcmp(e, "forward") == 0) return false;
  if (std::strcmp(e, "reverse") == 0) return true;
  std::fprintf(stderr, "cuda_emu: CUDA_EMU_ORDER is '%s'; set it to forward or reverse\n", e);
  std::exit(2);
}();

// Makes fibers [first, first + n) with the given state ready, in the current order.
void make_ready(int first, int n, State s) {
  for (int k = 0; k < n; ++k) {
    const int i = g_reverse ? first + n - 1 - k : first + k;
    Fiber& f = block.fibers[std::size_t(i)];
    if (f.state != s) continue;
    f.state = State::ready;
    block.ready.push_back(i);
  }
}

void release_warp(int w) {
  block.warp_waiting[std::size_t(w)] = 0;
  make_ready(w * 32, std::min(block.count, w * 32 + 32) - w * 32, State::at_warp_barrier);
}

// Called in the scheduler after a fiber stopped: releases whatever barrier it completed.
void arrived(Fiber& f) {
  const auto w = std::size_t(f.warp);
  switch (f.state) {
    case State::done:
      --block.live, --block.warp_live[w];
      // An exited thread no longer holds back its warp's shuffle or the block's barrier.
      if (block.warp_live[w] > 0 && block.warp_waiting[w] == block.warp_live[w]) release_warp(f.warp);
      break;
    case State::at_warp_barrier:
      if (++block.warp_waiting[w] == block.warp_live[w]) release_warp(f.warp);
      break;
    case State::at_block_barrier: ++block.at_block; break;
    case State::ready: break;
  }
  if (block.live > 0 && block.at_block == block.live) {
    block.at_block = 0;
    make_ready(0, block.count, State::at_block_barrier);
  }
}

[[noreturn]] void fiber_main() {
  Fiber* f = block.running;
  (*block.thread)();
  f->state = State::done;
  cuda_emu_switch(&f->sp, block.scheduler_sp);
  std::abort();  // a finished fiber is never resumed
}

// A fresh fiber starts in fiber_main: its stack holds the six registers cuda_emu_switch pops
// and, 16-byte aligned, the return address it jumps to.
void start(Fiber& f) {
  // Stack tops at the same offset in every 64 KB would share cache sets: stagger them.
  auto top = reinterpret_cast<std::uintptr_t>(f.stack.get() + kStackBytes - f.color) & ~std::uintptr_t(15);
  auto* ret = reinterpret_cast<void**>(top - 16);
  *ret = reinterpret_cast<void*>(&fiber_main);
  auto* regs = ret - 6;
  for (int i = 0; i < 6; ++i) regs[i] = nullptr;
  f.sp = regs;
  f.state = State::ready;
}

void wait(State s) {
  Fiber* f = block.running;
  if (f == nullptr) {
    std::fprintf(stderr, "cuda_emu: a thread of a kernel that tests/cuda_emu/to_cpp.py judged barrier-free waited at "
                         "a barrier (block %u, thread %u); teach to_cpp.py the helper that waits\n",
                 g_position.block.x, g_position.thread.x);
    std::abort();
  }
  f->state = s;
  cuda_emu_switch(&f->sp, block.scheduler_sp);
  g_position = f->pos;  // resumed
}

void run_block() {
  block.poisoned.clear();
  block.live = block.count, block.at_block = 0;
  const int warps = (block.count + 31) / 32;
  block.warp_live.assign(std::size_t(warps), 0);
  block.warp_waiting.assign(std::size_t(warps), 0);
  block.ready.clear();
  block.next = 0;
  for (int i = 0; i < block.count; ++i) ++block.warp_live[std::size_t(i / 32)];
  make_ready(0, block.count, State::ready);
  while (block.next < block.ready.size()) {
    Fiber& f = block.fibers[std::size_t(block.ready[block.next++])];
    block.running = &f;
    g_position = f.pos;
    cuda_emu_switch(&block.scheduler_sp, f.sp);
    arrived(f);
    if (block.next > 4096 && block.next * 2 > block.ready.size()) {  // keep the queue short
      block.ready.erase(block.ready.begin(), block.ready.begin() + std::ptrdiff_t(block.next));
      block.next = 0;
    }
  }
  if (block.live > 0) {
    std::fprintf(stderr, "cuda_emu: threads of block (%u, %u, %u) wait at different barriers\n", g_position.block.x,
                 g_position.block.y, g_position.block.z);
    std::abort();
  }
}

}  // namespace

const Position& position() { return g_position; }

// Coordinates of linear index i (x fastest) in a grid or block of extent e.
uint3 coords(unsigned i, dim3 e) { return {i % e.x, (i / e.x) % e.y, i / (e.x * e.y)}; }

void launch(dim3 grid, dim3 blk, bool may_wait, const std::function<void()>& thread) {
  DeviceAccess access;
  const int count = int(blk.x * blk.y * blk.z);
  if (count <= 0 || count > 1024 || grid.x == 0 || grid.y == 0 || grid.z == 0) {
    std::fprintf(stderr, "cuda_emu: invalid launch: grid (%u, %u, %u), block (%u, %u, %u)\n", grid.x, grid.y, grid.z,
                 blk.x, blk.y, blk.z);
    std::abort();
  }
  const unsigned blocks = grid.x * grid.y * grid.z, threads = unsigned(count);
  auto nth = [](unsigned k, unsigned n) { return g_reverse ? n - 1 - k : k; };  // the k-th to run of n
  if (!may_wait) {
    block.running = nullptr;
    for (unsigned kb = 0; kb < blocks; ++kb, block.poisoned.clear())
      for (unsigned kt = 0; kt < threads; ++kt) {
        g_position = {coords(nth(kt, threads), blk), coords(nth(kb, blocks), grid), blk, grid};
        thread();
      }
    return;
  }
  while (block.fibers.size() < std::size_t(count)) {
    block.fibers.emplace_back();
    block.fibers.back().color = (block.fibers.size() % 61) * 64;
  }
  block.count = count;
  block.thread = &thread;
  block.exchange.assign(std::size_t((count + 31) / 32) * 2 * 32, 0);
  for (unsigned kb = 0; kb < blocks; ++kb) {
    const uint3 b = coords(nth(kb, blocks), grid);
    for (unsigned t = 0; t < threads; ++t) {  // fiber t is thread t (lane t % 32 of warp t / 32)
      Fiber& f = block.fibers[t];
      f.pos = {coords(t, blk), b, blk, grid};
      f.lane = int(t % 32), f.warp = int(t / 32), f.phase = 0, f.exchanges = 0;
      start(f);
    }
    run_block();
  }
}

void set_reverse_order(bool reverse) { g_reverse = reverse; }
bool reverse_order() { return g_reverse; }

void sync_block() { wait(State::at_block_barrier); }

void poison_shared(void* p, std::size_t bytes) {
  if (std::find(block.poisoned.begin(), block.poisoned.end(), p) != block.poisoned.end()) return;
  block.poisoned.push_back(p);
  std::memset(p, 0xff, bytes);
}

std::uint64_t exchange_xor(std::uint64_t mine, int mask) {
  // Two slot sets used in turn: one barrier per exchange. A lane writing the set of exchange i + 2
  // has passed the barrier of exchange i + 1, which every lane reaches only after reading exchange
  // i's values.
  Fiber* f = block.running;
  if (f == nullptr) wait(State::at_warp_barrier);  // direct mode: reports the misjudged kernel
  const int partner = f->warp * 32 + (f->lane ^ mask);
  const std::size_t base = (std::size_t(f->warp) * 2 + f->phase) * 32;
  f->phase ^= 1;
  block.exchange[base + std::size_t(f->lane)] = mine;
  ++f->exchanges;
  wait(State::at_warp_barrier);  // every live lane has published
  if (partner >= block.count || block.fibers[std::size_t(partner)].exchanges < f->exchanges) {
    // The partner exited before this shuffle (or does not exist): undefined on a GPU.
    std::fprintf(stderr, "cuda_emu: lane %d of warp %d shuffles with lane %d, which has exited or does not exist\n",
                 f->lane, f->warp, partner % 32);
    std::abort();
  }
  return block.exchange[base + std::size_t(f->lane ^ mask)];
}

}  // namespace cuda_emu
