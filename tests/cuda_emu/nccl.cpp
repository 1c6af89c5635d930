// The NCCL calls comm/nccl.cpp makes, for the emulated build: the ranks are processes started by
// mpirun, "device" memory is the emulated runtime's host memory, and each collective is the MPI
// collective of the same meaning, run at once (the stream is the emulated one, which runs
// everything when it is queued). The declarations are the toolkit's own (nccl.h), so the
// communicator's host code compiles and runs exactly as with NCCL: the unique id handed around
// by its host communicator, the non-blocking set-up, the groups of reduces and broadcasts for
// unequal shards, the waits. Not checked here: NCCL's own transport, algorithms and speed.
//
// A communicator of several ranks is MPI_COMM_WORLD split by its unique id, so every rank of the
// job creates its communicators together (llmtk does: one over the world, or one per group of a
// split, made by every rank at once). One rank needs no MPI: its collectives are copies.
#include <nccl.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>

#include <unistd.h>

#include "scheduler.hpp"

#ifdef CUDA_EMU_MPI
#include <mpi.h>
#endif

struct ncclComm {
  int rank = 0, size = 1;
#ifdef CUDA_EMU_MPI
  MPI_Comm comm = MPI_COMM_NULL;
#endif
};

namespace {

std::string last_error;

ncclResult_t refuse(const std::string& why) {
  last_error = "cuda_emu nccl: " + why;
  return ncclInvalidUsage;
}

std::size_t size_of(ncclDataType_t t) {
  switch (t) {
    case ncclInt8: case ncclUint8: return 1;
    case ncclFloat16: case ncclBfloat16: return 2;
    case ncclInt32: case ncclUint32: case ncclFloat32: return 4;
    default: return 8;
  }
}

#ifdef CUDA_EMU_MPI
// The element types and sums llmtk's communicator sends: f32 sums and bytes.
bool mpi_type(ncclDataType_t t, MPI_Datatype* out) {
  if (t == ncclFloat32) return *out = MPI_FLOAT, true;
  if (t == ncclInt8 || t == ncclUint8) return *out = MPI_BYTE, true;
  return false;
}
#endif

// A collective on `comm`: one rank copies (when the buffers differ); several run `mpi`.
ncclResult_t run(ncclComm_t comm, cudaStream_t, const std::function<void()>& alone, const std::function<int()>& mpi) {
  if (!comm) return refuse("null communicator");
  cuda_emu::DeviceAccess access;
  if (comm->size == 1) {
    alone();
    return ncclSuccess;
  }
#ifdef CUDA_EMU_MPI
  return mpi() == MPI_SUCCESS ? ncclSuccess : refuse("an MPI call failed");
#else
  (void)mpi;
  return refuse("this build has no MPI for several ranks");
#endif
}

}  // namespace

ncclResult_t ncclGetUniqueId(ncclUniqueId* id) {
  static int made = 0;
  std::memset(id->internal, 0, sizeof id->internal);
  std::snprintf(id->internal, sizeof id->internal, "cuda_emu nccl %ld %d %d", long(std::rand()), int(::getpid()), made++);
  return ncclSuccess;
}

ncclResult_t ncclCommInitRankConfig(ncclComm_t* out, int nranks, ncclUniqueId id, int rank, ncclConfig_t*) {
  if (nranks < 1 || rank < 0 || rank >= nranks) return refuse("rank out of range");
  auto* c = new ncclComm;
  c->rank = rank, c->size = nranks;
  if (nranks > 1) {
#ifdef CUDA_EMU_MPI
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) return delete c, refuse("several ranks need MPI running (mpirun)");
    // The id's bytes as a colour: the ranks that were handed the same id form the communicator.
    unsigned h = 2166136261u;
    for (char ch : id.internal) h = (h ^ unsigned(static_cast<unsigned char>(ch))) * 16777619u;
    if (MPI_Comm_split(MPI_COMM_WORLD, int(h & 0x7fffffff), rank, &c->comm) != MPI_SUCCESS) return delete c, refuse("MPI_Comm_split");
    int r = -1, n = 0;
    MPI_Comm_rank(c->comm, &r);
    MPI_Comm_size(c->comm, &n);
    if (r != rank || n != nranks) return delete c, refuse("the ranks that share the id are not the ranks the caller named");
#else
    (void)id;
    return delete c, refuse("this build has no MPI for several ranks");
#endif
  }
  *out = c;
  return ncclSuccess;
}

ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t* state) {
  if (!comm) return refuse("null communicator");
  *state = ncclSuccess;
  return ncclSuccess;
}

namespace {
void release(ncclComm_t comm) {
#ifdef CUDA_EMU_MPI
  if (comm->comm != MPI_COMM_NULL) {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Comm_free(&comm->comm);
  }
#endif
  delete comm;
}
}  // namespace

ncclResult_t ncclCommFinalize(ncclComm_t comm) { return comm ? ncclSuccess : refuse("null communicator"); }
ncclResult_t ncclCommDestroy(ncclComm_t comm) {
  if (comm) release(comm);
  return ncclSuccess;
}
ncclResult_t ncclCommAbort(ncclComm_t comm) {
  if (comm) release(comm);
  return ncclSuccess;
}

const char* ncclGetErrorString(ncclResult_t r) {
  switch (r) {
    case ncclSuccess: return "no error";
    case ncclInvalidUsage: return "invalid usage";
    case ncclInvalidArgument: return "invalid argument";
    default: return "error (emulated)";
  }
}
const char* ncclGetLastError(ncclComm_t) { return last_error.c_str(); }

ncclResult_t ncclGroupStart() { return ncclSuccess; }
ncclResult_t ncclGroupEnd() { return ncclSuccess; }

ncclResult_t ncclAllReduce(const void* send, void* recv, std::size_t count, ncclDataType_t type, ncclRedOp_t op, ncclComm_t comm,
                           cudaStream_t stream) {
  if (type != ncclFloat32 || op != ncclSum) return refuse("only f32 sums are emulated");
  return run(comm, stream, [&] { if (send != recv) std::memmove(recv, send, count * 4); },
             [&] {
#ifdef CUDA_EMU_MPI
               return MPI_Allreduce(send == recv ? MPI_IN_PLACE : send, recv, int(count), MPI_FLOAT, MPI_SUM, comm->comm);
#else
               return 1;
#endif
             });
}

ncclResult_t ncclReduceScatter(const void* send, void* recv, std::size_t count, ncclDataType_t type, ncclRedOp_t op,
                               ncclComm_t comm, cudaStream_t stream) {
  if (type != ncclFloat32 || op != ncclSum) return refuse("only f32 sums are emulated");
  return run(comm, stream, [&] { if (send != recv) std::memmove(recv, send, count * 4); },
             [&] {
#ifdef CUDA_EMU_MPI
               return MPI_Reduce_scatter_block(send, recv, int(count), MPI_FLOAT, MPI_SUM, comm->comm);
#else
               return 1;
#endif
             });
}

ncclResult_t ncclReduce(const void* send, void* recv, std::size_t count, ncclDataType_t type, ncclRedOp_t op, int root,
                        ncclComm_t comm, cudaStream_t stream) {
  if (type != ncclFloat32 || op != ncclSum) return refuse("only f32 sums are emulated");
  return run(comm, stream, [&] { if (send != recv) std::memmove(recv, send, count * 4); },
             [&] {
#ifdef CUDA_EMU_MPI
               const bool in_place = comm->rank == root && send == recv;
               return MPI_Reduce(in_place ? MPI_IN_PLACE : send, recv, int(count), MPI_FLOAT, MPI_SUM, root, comm->comm);
#else
               return 1;
#endif
             });
}

ncclResult_t ncclAllGather(const void* send, void* recv, std::size_t count, ncclDataType_t type, ncclComm_t comm,
                           cudaStream_t stream) {
  const std::size_t bytes = count * size_of(type);
  return run(comm, stream, [&] { if (send != recv) std::memmove(recv, send, bytes); },
             [&] {
#ifdef CUDA_EMU_MPI
               MPI_Datatype t;
               if (!mpi_type(type, &t)) return 1;
               const bool in_place = send == static_cast<const char*>(recv) + std::size_t(comm->rank) * bytes;
               return MPI_Allgather(in_place ? MPI_IN_PLACE : send, int(count), t, recv, int(count), t, comm->comm);
#else
               return 1;
#endif
             });
}

ncclResult_t ncclBroadcast(const void* send, void* recv, std::size_t count, ncclDataType_t type, int root, ncclComm_t comm,
                           cudaStream_t stream) {
  const std::size_t bytes = count * size_of(type);
  return run(comm, stream, [&] { if (send != recv) std::memmove(recv, send, bytes); },
             [&] {
#ifdef CUDA_EMU_MPI
               MPI_Datatype t;
               if (!mpi_type(type, &t)) return 1;
               if (comm->rank == root && send != recv) std::memmove(recv, send, bytes);
               return MPI_Bcast(recv, int(count), t, root, comm->comm);
#else
               return 1;
#endif
             });
}
