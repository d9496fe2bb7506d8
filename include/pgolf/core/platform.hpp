// Portability macros shared by host (g++) and device (nvcc) translation units.
#pragma once

#if defined(__CUDACC__)
#define PGOLF_HD __host__ __device__
#define PGOLF_DEVICE __device__
#else
#define PGOLF_HD
#define PGOLF_DEVICE
#endif

#if defined(__CUDA_ARCH__)
#define PGOLF_IN_DEVICE_CODE 1
#else
#define PGOLF_IN_DEVICE_CODE 0
#endif

#if defined(__GNUC__) || defined(__clang__)
#define PGOLF_RESTRICT __restrict__
#define PGOLF_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define PGOLF_RESTRICT
#define PGOLF_ALWAYS_INLINE inline
#endif
