# TROUPE_CUDA: AUTO builds the CUDA backend when nvcc is found, ON requires it, OFF skips it.
set(TROUPE_WITH_CUDA OFF)
if(NOT TROUPE_CUDA MATCHES "^(AUTO|ON|OFF)$")
  message(FATAL_ERROR "TROUPE_CUDA must be AUTO, ON or OFF (got '${TROUPE_CUDA}')")
endif()
if(NOT TROUPE_CUDA STREQUAL "OFF")
  # CUDA 13 supports sm_75 and newer; 80 (A100) and 90 (H100/H200) by default.
  if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
    set(CMAKE_CUDA_ARCHITECTURES "80;90" CACHE STRING "CUDA architectures")
  endif()
  # Link the shared cudart only, never the driver library: the binary must start without a GPU.
  set(CMAKE_CUDA_RUNTIME_LIBRARY Shared)
  if(NOT CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  endif()
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    enable_language(CUDA)
    # CMake 3.25 knows no CUDA20 dialect for nvcc; .cu files are C++17 (host .cpp stay C++20).
    set(CMAKE_CUDA_STANDARD 17)
    set(CMAKE_CUDA_STANDARD_REQUIRED ON)
    find_package(CUDAToolkit REQUIRED)
    find_path(NCCL_INCLUDE_DIR nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS} /usr/local/cuda/include)
    find_library(NCCL_LIBRARY nccl HINTS ${CUDAToolkit_LIBRARY_DIR} /usr/local/cuda/lib64)
    set(TROUPE_WITH_CUDA ON)
  elseif(TROUPE_CUDA STREQUAL "ON")
    message(FATAL_ERROR "TROUPE_CUDA=ON but no CUDA compiler (nvcc) was found. "
      "Install the CUDA toolkit (expected at /usr/local/cuda), set CMAKE_CUDA_COMPILER, "
      "or configure with -DTROUPE_CUDA=AUTO or OFF.")
  else()
    message(STATUS "TROUPE_CUDA=AUTO: nvcc not found, building the CPU backend only")
  endif()
endif()
