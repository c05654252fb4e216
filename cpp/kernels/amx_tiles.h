// What the two AMX kernels share (linear_amx: bf16 products for float
// linears; quant_kernels_amx: int8 products for quantized ones), torch-free
// and flag-free: the tile configuration's memory layout (ldtilecfg's
// 64-byte operand, palette 1) and Linux's per-process request for the
// tiles' state, without which the first tile instruction faults.
#pragma once

#include <sys/syscall.h>
#include <unistd.h>

#include <cstdint>

namespace modelbench::amx {

struct alignas(64) TileConfig {
  uint8_t palette_id;
  uint8_t start_row;
  uint8_t reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};

// arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA): true once the kernel
// granted this process the tiles (Linux 5.16 on); false where it refuses or
// has no such request. The caller checks the CPU's flags first.
inline bool request_tiles() {
  constexpr int kArchReqXcompPerm = 0x1023;  // arch_prctl: ask for an XSAVE feature
  constexpr int kXfeatureXtiledata = 18;     // the tiles' data
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
}

}  // namespace modelbench::amx
