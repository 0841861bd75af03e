// spar/services/learner/data_parallel.h — data parallelism over learner
// ranks with torch c10d: Gloo on CPU, NCCL (ProcessGroupNCCL) when LibTorch
// has CUDA (SPAR_TORCH_CUDA; a CPU LibTorch says Unimplemented for it),
// rendezvous through a TCPStore at a configured address. With NCCL every
// collective runs on this rank's GPU (`device`): tensors elsewhere (the
// command bytes rank 0 broadcasts, CPU metrics) travel through it.
//
// Every rank computes gradients on its own share of the batch; before the
// optimiser step the gradients are averaged across ranks, so every rank
// applies the same update and the weights stay identical — the same update
// one rank would make on the whole batch (tested).
//
// Gradients are reduced in flat buckets (default 25 MB), not one collective
// per tensor. Every collective waits with a timeout: a hung or dead peer is
// a DeadlineExceeded / Unavailable error naming the rank, never a hang.
//
// Thread safety: one thread (the training thread) uses a group.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "common/status.h"

namespace spar {

struct DataParallelOptions {
  int rank = 0;
  int world_size = 1;
  std::string store_address = "127.0.0.1:29500";  // rank 0 serves the TCPStore here
  std::string backend = "gloo";                    // gloo | nccl
  // nccl: this rank's GPU ("cuda" / "cuda:N"; empty = cuda:<rank % visible GPUs>).
  std::string device;
  std::chrono::milliseconds timeout = std::chrono::minutes(5);
  int64_t bucket_bytes = 25 << 20;
};

class DataParallelGroup {
 public:
  // Joins the group (blocks until all ranks have joined or the timeout).
  // world_size == 1 needs no network. InvalidArgument for a bad rank or
  // address, Unavailable / DeadlineExceeded for a failed rendezvous.
  static Result<std::unique_ptr<DataParallelGroup>> Create(const DataParallelOptions& options);
  ~DataParallelGroup();

  int rank() const { return options_.rank; }
  int world_size() const { return options_.world_size; }

  // Averages the gradients of `parameters` (those with a grad) in place.
  Status AllReduceGradients(const std::vector<torch::Tensor>& parameters);
  // Averages arbitrary tensors in place (metrics: loss, token counts...).
  Status AllReduceMean(std::vector<torch::Tensor>& tensors);
  // Copies rank 0's values into every rank (start of training).
  Status BroadcastFromRankZero(const std::vector<torch::Tensor>& tensors);
  Status Barrier();
  // Rank 0's `bytes` replace every other rank's (length first, then data).
  Status BroadcastBytes(std::string* bytes);

 private:
  explicit DataParallelGroup(DataParallelOptions options);
  Status Flat(const std::vector<torch::Tensor>& tensors, bool grads, bool broadcast);

  struct Impl;  // the c10d store and process group
  DataParallelOptions options_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace spar
