#include "services/learner/data_parallel.h"

#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/version.h>

// ProcessGroupNCCL.hpp is guarded by the macro LibTorch's own CUDA build
// defines; a CUDA LibTorch ships it (and links it into libtorch_cuda).
#if SPAR_TORCH_CUDA
#ifndef USE_C10D_NCCL
#define USE_C10D_NCCL
#endif
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <cstring>
#include <optional>

#include "common/logging.h"

namespace spar {

// LibTorch 2.x makes Gloo and NCCL backends of a ProcessGroup; 1.13's are
// process groups themselves. Both have allreduce / broadcast with a Work.
#if TORCH_VERSION_MAJOR >= 2
using CollectiveGroup = c10d::Backend;
#else
using CollectiveGroup = c10d::ProcessGroup;
#endif

struct DataParallelGroup::Impl {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<CollectiveGroup> group;
  // NCCL: the GPU every collective's buffer must be on; CPU (Gloo): none.
  std::optional<torch::Device> device;
};

Result<std::unique_ptr<DataParallelGroup>> DataParallelGroup::Create(
    const DataParallelOptions& options) {
  if (options.world_size < 1) return InvalidArgument("learner.world_size must be >= 1");
  if (options.rank < 0 || options.rank >= options.world_size)
    return InvalidArgument("learner rank " + std::to_string(options.rank) + " is outside [0, " +
                           std::to_string(options.world_size) + ")");
  std::unique_ptr<DataParallelGroup> group(new DataParallelGroup(options));
  group->impl_ = std::make_unique<Impl>();
  if (options.world_size == 1) return group;
  if (options.backend != "gloo" && options.backend != "nccl")
    return InvalidArgument("learner backend '" + options.backend + "' is not one of: gloo, nccl");
#if !SPAR_TORCH_CUDA
  if (options.backend == "nccl")
    return Unimplemented("learner backend 'nccl' needs a LibTorch with CUDA (this build's has none); use gloo");
#else
  if (options.backend == "nccl") {
    const int64_t gpus = static_cast<int64_t>(torch::cuda::device_count());
    if (gpus == 0) return FailedPrecondition("learner backend 'nccl': no CUDA device is visible to rank " +
                                             std::to_string(options.rank));
    torch::Device device(torch::kCUDA, static_cast<c10::DeviceIndex>(options.rank % gpus));
    if (!options.device.empty()) {
      try {
        device = torch::Device(options.device);
      } catch (const std::exception& e) {
        return InvalidArgument("learner backend 'nccl': device '" + options.device + "': " + e.what());
      }
      if (!device.is_cuda()) return InvalidArgument("learner backend 'nccl' needs a CUDA device, not '" +
                                                    options.device + "'");
      if (!device.has_index()) device = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(options.rank % gpus));
    }
    group->impl_->device = device;
  }
#endif
  auto colon = options.store_address.rfind(':');
  if (colon == std::string::npos) return InvalidArgument("learner.rendezvous '" + options.store_address + "' must be host:port");
  const std::string host = options.store_address.substr(0, colon);
  int port = 0;
  try {
    port = std::stoi(options.store_address.substr(colon + 1));
  } catch (const std::exception&) {
    return InvalidArgument("learner.rendezvous '" + options.store_address + "' has a bad port");
  }
  try {
    c10d::TCPStoreOptions store_options;
    store_options.port = static_cast<uint16_t>(port);
    store_options.isServer = options.rank == 0;
    store_options.numWorkers = options.world_size;
    store_options.waitWorkers = true;
    store_options.timeout = options.timeout;
    group->impl_->store = c10::make_intrusive<c10d::TCPStore>(host, store_options);
    if (options.backend == "gloo") {
      auto gloo = c10d::ProcessGroupGloo::Options::create();
      gloo->timeout = options.timeout;
      gloo->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(host));
      group->impl_->group = c10::make_intrusive<c10d::ProcessGroupGloo>(group->impl_->store, options.rank,
                                                                        options.world_size, gloo);
    }
#if SPAR_TORCH_CUDA
    if (options.backend == "nccl") {
      // The communicator is created lazily on the first collective, on the
      // current device: make it this rank's.
      c10::cuda::set_device(group->impl_->device->index());
      auto nccl = c10d::ProcessGroupNCCL::Options::create();
      nccl->timeout = options.timeout;
      group->impl_->group = c10::make_intrusive<c10d::ProcessGroupNCCL>(group->impl_->store, options.rank,
                                                                        options.world_size, nccl);
    }
#endif
  } catch (const std::exception& e) {
    return Unavailable("learner rank " + std::to_string(options.rank) + ": rendezvous at " +
                       options.store_address + " failed: " + e.what());
  }
  Logger("learner")->info("rank {}/{} joined the {} group at {}", options.rank, options.world_size,
                          options.backend, options.store_address);
  return group;
}

DataParallelGroup::DataParallelGroup(DataParallelOptions options) : options_(std::move(options)) {}
DataParallelGroup::~DataParallelGroup() = default;

Status DataParallelGroup::Flat(const std::vector<torch::Tensor>& tensors, bool grads, bool broadcast) {
  if (options_.world_size == 1) return Status::Ok();
  torch::NoGradGuard no_grad;
  // Group tensors into flat buckets of the same dtype.
  size_t i = 0;
  try {
    while (i < tensors.size()) {
      std::vector<torch::Tensor> members;
      int64_t bytes = 0;
      c10::ScalarType dtype = c10::ScalarType::Undefined;
      while (i < tensors.size()) {
        torch::Tensor t = grads ? tensors[i].grad() : tensors[i];
        if (!t.defined()) {
          ++i;
          continue;
        }
        if (!members.empty() && (t.scalar_type() != dtype || bytes + static_cast<int64_t>(t.nbytes()) > options_.bucket_bytes)) break;
        dtype = t.scalar_type();
        members.push_back(t);
        bytes += static_cast<int64_t>(t.nbytes());
        ++i;
      }
      if (members.empty()) continue;
      std::vector<torch::Tensor> flat_views;
      for (auto& m : members) flat_views.push_back(m.reshape({-1}));
      std::vector<torch::Tensor> buffer{torch::cat(flat_views)};
      if (impl_->device && buffer[0].device() != *impl_->device) buffer[0] = buffer[0].to(*impl_->device);
      auto work = broadcast ? impl_->group->broadcast(buffer) : impl_->group->allreduce(buffer);
      if (!work->wait(options_.timeout))
        return DeadlineExceeded("learner rank " + std::to_string(options_.rank) +
                                ": collective did not finish within the timeout");
      if (!broadcast) buffer[0].div_(options_.world_size);
      int64_t offset = 0;
      for (auto& m : members) {
        m.copy_(buffer[0].narrow(0, offset, m.numel()).view_as(m));
        offset += m.numel();
      }
    }
  } catch (const std::exception& e) {
    return Unavailable("learner rank " + std::to_string(options_.rank) +
                       ": collective failed (a peer died?): " + e.what());
  }
  return Status::Ok();
}

Status DataParallelGroup::AllReduceGradients(const std::vector<torch::Tensor>& parameters) {
  return Flat(parameters, /*grads=*/true, /*broadcast=*/false);
}

Status DataParallelGroup::AllReduceMean(std::vector<torch::Tensor>& tensors) {
  return Flat(tensors, false, false);
}

Status DataParallelGroup::BroadcastFromRankZero(const std::vector<torch::Tensor>& tensors) {
  return Flat(tensors, false, true);
}

Status DataParallelGroup::BroadcastBytes(std::string* bytes) {
  if (options_.world_size == 1) return Status::Ok();
  std::vector<torch::Tensor> size{torch::tensor({static_cast<int64_t>(bytes->size())}, torch::kInt64)};
  SPAR_RETURN_IF_ERROR(BroadcastFromRankZero(size));
  const int64_t n = size[0].item<int64_t>();
  if (n < 0 || n > (int64_t{1} << 40)) return DataLoss("learner broadcast: absurd size " + std::to_string(n));
  std::vector<torch::Tensor> data{torch::empty({std::max<int64_t>(n, 1)}, torch::kUInt8)};
  if (options_.rank == 0 && n > 0) std::memcpy(data[0].data_ptr(), bytes->data(), static_cast<size_t>(n));
  SPAR_RETURN_IF_ERROR(BroadcastFromRankZero(data));
  if (options_.rank != 0) bytes->assign(static_cast<const char*>(data[0].data_ptr()), static_cast<size_t>(n));
  return Status::Ok();
}

Status DataParallelGroup::Barrier() {
  if (options_.world_size == 1) return Status::Ok();
  std::vector<torch::Tensor> one{torch::zeros({1})};
  return AllReduceMean(one);
}

}  // namespace spar
