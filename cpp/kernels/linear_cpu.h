// Float32 linear layers on the CPU over weights packed once at load time
// into panels of W output features: [num_panels, in_features, W]. A
// register tile of up to 6 rows of x times one panel accumulates rank-1
// updates (broadcast x, FMA a panel row), so a decode step streams each
// weight once, in order, and a prefill reuses a panel from L2 for all of
// its rows. On this project's machines (2 cores, AVX-512 or AVX2) it beats
// MKL's sgemv/sgemm for the batches a decode step has (benchmarks/kernels_vs_aten.py).
#pragma once

#include <torch/torch.h>

#include <cstdint>

namespace modelbench {

// Output features per panel, W: 64 where the build targets AVX-512 (or
// neither AVX-512 nor AVX2), 16 with AVX2 (the register tile's width).
int64_t linear_panel_width();

// weight: [out_features, in_features] float32 -> [ceil(out_features / W),
// in_features, W] float32, the last panel padded with zeros.
torch::Tensor pack_linear_weight(const torch::Tensor& weight);

// x: [num_rows, in_features] float32 CPU; packed from pack_linear_weight;
// bias: [out_features] float32 or undefined. Returns [num_rows, out_features].
// Parallel over panels (and over row chunks when there are many rows); when
// the panels do not split evenly over the threads, a panel is cut between
// two threads along in_features and its parts summed. From 512 rows (long
// prefills), ATen's GEMM over the panels unpacked for the call.
torch::Tensor packed_linear(const torch::Tensor& x, const torch::Tensor& packed, int64_t out_features,
                            const torch::Tensor& bias);

}  // namespace modelbench
