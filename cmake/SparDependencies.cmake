# Finds every third-party dependency spar uses (all from Debian 12 packages,
# or from the GPU machine's PyTorch for LibTorch 2.x + CUDA).

find_package(Threads REQUIRED)
find_package(PkgConfig REQUIRED)

# LibTorch: Debian's libtorch-dev (1.13, CPU, c10d + Gloo) or any LibTorch
# given through CMAKE_PREFIX_PATH / Torch_DIR.
find_package(Torch REQUIRED)
set(SPAR_TORCH_LIBS ${TORCH_LIBRARIES})

# Does this LibTorch have CUDA?
set(SPAR_TORCH_HAS_CUDA OFF)
if(TARGET torch_cuda OR TORCH_CUDA_LIBRARIES)
  set(SPAR_TORCH_HAS_CUDA ON)
endif()
if(SPAR_WITH_CUDA STREQUAL "AUTO")
  set(SPAR_CUDA_ENABLED ${SPAR_TORCH_HAS_CUDA})
elseif(SPAR_WITH_CUDA)
  if(NOT SPAR_TORCH_HAS_CUDA)
    message(FATAL_ERROR "SPAR_WITH_CUDA=ON but the LibTorch found (${Torch_DIR}) has no CUDA")
  endif()
  set(SPAR_CUDA_ENABLED ON)
else()
  set(SPAR_CUDA_ENABLED OFF)
endif()
# NCCL + the CUDA runtime, for the weight-broadcast group between the
# learner and the generators (services/weights/nccl_broadcast). It talks to
# NCCL and the CUDA runtime directly (raw device pointers), so it does not
# need a CUDA LibTorch: the CPU machines carry CUDA 13 + NCCL and compile and
# link it too. SPAR_WITH_NCCL: AUTO (on when nccl.h, libnccl, cuda_runtime.h
# and libcudart are found), ON (required), OFF.
set(SPAR_WITH_NCCL "AUTO" CACHE STRING "Build the NCCL weight broadcast: AUTO, ON, OFF")
set_property(CACHE SPAR_WITH_NCCL PROPERTY STRINGS AUTO ON OFF)
if(SPAR_CUDA_ENABLED)
  find_package(CUDAToolkit REQUIRED)
endif()
set(SPAR_NCCL_ENABLED OFF)
if(NOT SPAR_WITH_NCCL STREQUAL "OFF" OR SPAR_CUDA_ENABLED)
  file(GLOB _spar_cuda_roots /usr/local/cuda /usr/local/cuda-*)
  set(_spar_cuda_hints $ENV{NCCL_HOME} $ENV{CUDA_HOME} $ENV{CUDA_PATH} ${CUDAToolkit_INCLUDE_DIRS}/.. ${_spar_cuda_roots})
  find_path(NCCL_INCLUDE_DIR nccl.h HINTS ${_spar_cuda_hints} PATH_SUFFIXES include)
  find_library(NCCL_LIBRARY NAMES nccl libnccl.so.2 HINTS ${_spar_cuda_hints} PATH_SUFFIXES lib lib64)
  find_path(SPAR_CUDART_INCLUDE_DIR cuda_runtime.h HINTS ${_spar_cuda_hints} PATH_SUFFIXES include)
  find_library(SPAR_CUDART_LIBRARY NAMES cudart HINTS ${_spar_cuda_hints} PATH_SUFFIXES lib64 lib)
  if(NCCL_INCLUDE_DIR AND NCCL_LIBRARY AND SPAR_CUDART_INCLUDE_DIR AND SPAR_CUDART_LIBRARY)
    set(SPAR_NCCL_ENABLED ON)
    add_library(spar_nccl INTERFACE)
    target_include_directories(spar_nccl INTERFACE ${NCCL_INCLUDE_DIR} ${SPAR_CUDART_INCLUDE_DIR})
    target_link_libraries(spar_nccl INTERFACE ${NCCL_LIBRARY} ${SPAR_CUDART_LIBRARY})
  elseif(SPAR_WITH_NCCL STREQUAL "ON" OR SPAR_CUDA_ENABLED)
    message(FATAL_ERROR "NCCL is required (SPAR_WITH_NCCL=ON or a CUDA build) but nccl.h / libnccl / "
                        "cuda_runtime.h / libcudart were not all found; set NCCL_HOME and CUDA_HOME")
  endif()
endif()
message(STATUS "spar: NCCL weight broadcast ${SPAR_NCCL_ENABLED} (${NCCL_LIBRARY})")

# gRPC + Protobuf.
find_package(Protobuf REQUIRED)
find_package(gRPC CONFIG QUIET)
if(gRPC_FOUND)
  set(SPAR_GRPC_LIBS gRPC::grpc++ gRPC::grpc++_reflection)
  find_program(SPAR_GRPC_CPP_PLUGIN grpc_cpp_plugin REQUIRED)
else()
  pkg_check_modules(GRPCPP REQUIRED IMPORTED_TARGET grpc++)
  pkg_check_modules(GRPCPP_REFLECTION QUIET IMPORTED_TARGET grpc++_reflection)
  set(SPAR_GRPC_LIBS PkgConfig::GRPCPP)
  find_program(SPAR_GRPC_CPP_PLUGIN grpc_cpp_plugin REQUIRED)
endif()

# ZeroMQ (+ the header-only cppzmq).
pkg_check_modules(ZMQ REQUIRED IMPORTED_TARGET libzmq)
find_path(CPPZMQ_INCLUDE_DIR zmq.hpp REQUIRED)

# RocksDB.
find_package(RocksDB CONFIG QUIET)
if(TARGET RocksDB::rocksdb)
  set(SPAR_ROCKSDB_LIBS RocksDB::rocksdb)
else()
  find_library(ROCKSDB_LIBRARY rocksdb REQUIRED)
  find_path(ROCKSDB_INCLUDE_DIR rocksdb/db.h REQUIRED)
  add_library(spar_rocksdb INTERFACE)
  target_link_libraries(spar_rocksdb INTERFACE ${ROCKSDB_LIBRARY})
  target_include_directories(spar_rocksdb INTERFACE ${ROCKSDB_INCLUDE_DIR})
  set(SPAR_ROCKSDB_LIBS spar_rocksdb)
endif()

find_package(spdlog REQUIRED)
find_package(fmt REQUIRED)
find_package(nlohmann_json REQUIRED)
find_package(yaml-cpp REQUIRED)
find_package(CLI11 CONFIG REQUIRED)
find_package(GTest REQUIRED)
include(GoogleTest)
find_package(benchmark QUIET)
pkg_check_modules(PCRE2 REQUIRED IMPORTED_TARGET libpcre2-8)
pkg_check_modules(XXHASH REQUIRED IMPORTED_TARGET libxxhash)
find_path(HTTPLIB_INCLUDE_DIR httplib.h REQUIRED)
pkg_check_modules(HTTPLIB REQUIRED IMPORTED_TARGET cpp-httplib)
