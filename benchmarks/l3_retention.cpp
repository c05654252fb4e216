// Does this machine's last-level cache keep what a decode step could put
// there ahead of time? Two questions, answered in JSON on stdout:
//  1. reread: a buffer read once and read again right away, and the same
//     buffer read over and over (steady state), by size: how much of it
//     the caches kept;
//  2. prefetch: one layer's K/V (26 MB) software-prefetched during a
//     compute-bound loop shaped like an MLP linear (32 rows times 11 MB of
//     weight panels, 2 threads), then read: does the read get faster, and
//     what does the prefetch cost the loop? Hints: T2, and T2 followed by
//     CLDEMOTE (push the line out to the shared cache) 256 lines later.
// x86-64 with AVX-512 only. Build and run (a quiet machine, 2 threads):
//   g++ -O3 -march=native -fopenmp benchmarks/l3_retention.cpp -o /tmp/l3_retention
//   OMP_NUM_THREADS=2 /tmp/l3_retention
#include <immintrin.h>
#include <omp.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <initializer_list>

namespace {

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

float* alloc(size_t n) {
  auto* p = static_cast<float*>(aligned_alloc(4096, n * sizeof(float)));
  for (size_t i = 0; i < n; ++i) p[i] = 1e-3f * static_cast<float>(i % 97);
  return p;
}

volatile float sink;

float read_sum(const float* a, size_t n) {  // both threads, one half each
  float total = 0;
#pragma omp parallel reduction(+ : total)
  {
    const size_t t = omp_get_thread_num(), T = omp_get_num_threads();
    const size_t b = n * t / T, e = n * (t + 1) / T;
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    for (size_t i = b; i + 64 <= e; i += 64) {
      s0 = _mm512_add_ps(s0, _mm512_load_ps(a + i));
      s1 = _mm512_add_ps(s1, _mm512_load_ps(a + i + 16));
      s2 = _mm512_add_ps(s2, _mm512_load_ps(a + i + 32));
      s3 = _mm512_add_ps(s3, _mm512_load_ps(a + i + 48));
    }
    total += _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
  }
  return total;
}

// 30 rows of x times panels of 64 floats (4 vectors), with `pf_bytes` of
// `pf` prefetched along the way, spread evenly over the loop.
void fake_linear(const float* w, size_t nw, const float* x, const char* pf, size_t pf_bytes, bool demote) {
#pragma omp parallel
  {
    const size_t t = omp_get_thread_num(), T = omp_get_num_threads();
    const size_t rows = nw / 64, b = rows * t / T, e = rows * (t + 1) / T;
    const size_t l0 = pf_bytes * t / T / 64, l1 = pf_bytes * (t + 1) / T / 64;
    const double per_row = e > b ? static_cast<double>(l1 - l0) / static_cast<double>(e - b) : 0;
    double line = static_cast<double>(l0);
    __m512 acc[6][4];
    for (auto& row : acc)
      for (auto& v : row) v = _mm512_setzero_ps();
    for (size_t k = b; k < e; ++k) {
      if (pf != nullptr) {
        const double next = line + per_row;
        for (size_t l = static_cast<size_t>(line); l < static_cast<size_t>(next) && l < l1; ++l) {
          _mm_prefetch(pf + 64 * l, _MM_HINT_T2);
          if (demote && l >= l0 + 256) _cldemote(const_cast<char*>(pf + 64 * (l - 256)));
        }
        line = next;
      }
      __m512 wv[4];
      for (int c = 0; c < 4; ++c) wv[c] = _mm512_load_ps(w + k * 64 + 16 * c);
      for (int rep = 0; rep < 5; ++rep)
        for (int m = 0; m < 6; ++m) {
          const __m512 xb = _mm512_set1_ps(x[rep * 6 + m + (k & 1)]);
          for (int c = 0; c < 4; ++c) acc[m][c] = _mm512_fmadd_ps(xb, wv[c], acc[m][c]);
        }
    }
    float s = 0;
    for (auto& row : acc)
      for (auto& v : row) s += _mm512_reduce_add_ps(v);
    sink = s;
  }
}

}  // namespace

int main() {
  const size_t flush_n = (size_t{1} << 30) / 4;
  float* flush = alloc(flush_n);
  std::printf("{\n  \"reread\": [");
  const char* sep = "";
  for (int mb : {4, 8, 16, 32, 48, 64, 128, 256}) {
    const size_t n = (static_cast<size_t>(mb) << 20) / 4;
    float* a = alloc(n);
    double once = 0;
    for (int r = 0; r < 5; ++r) {  // after a flush: read, then time the second read
      sink = read_sum(flush, flush_n);
      sink = read_sum(a, n);
      const double t0 = now();
      sink = read_sum(a, n);
      once += now() - t0;
    }
    const int reps = 20;
    const double t0 = now();
    for (int r = 0; r < reps; ++r) sink = read_sum(a, n);
    const double steady = (now() - t0) / reps;
    std::printf("%s\n    {\"mb\": %d, \"second_read_gb_s\": %.1f, \"steady_gb_s\": %.1f}", sep, mb,
                n * 4.0 / (once / 5) / 1e9, n * 4.0 / steady / 1e9);
    sep = ",";
    free(a);
  }
  std::printf("\n  ],\n  \"prefetch\": [");
  const size_t kv_n = (size_t{26} << 20) / 4, w_n = (size_t{11} << 20) / 4;
  float* kv = alloc(kv_n);
  float* w = alloc(w_n);
  float x[64];
  for (int i = 0; i < 64; ++i) x[i] = static_cast<float>(i);
  sep = "";
  for (double fraction : {0.0, 0.2, 0.5, 1.0})
    for (bool demote : {false, true}) {
      if (fraction == 0 && demote) continue;
      double loop = 0, read = 0;
      for (int r = 0; r < 5; ++r) {
        sink = read_sum(flush, flush_n);
        const double t0 = now();
        fake_linear(w, w_n, x, fraction > 0 ? reinterpret_cast<const char*>(kv) : nullptr,
                    static_cast<size_t>(fraction * kv_n * 4), demote);
        const double t1 = now();
        sink = read_sum(kv, kv_n);
        loop += t1 - t0;
        read += now() - t1;
      }
      std::printf("%s\n    {\"prefetched\": %.1f, \"cldemote\": %s, \"loop_ms\": %.3f, \"kv_read_gb_s\": %.1f}", sep,
                  fraction, demote ? "true" : "false", loop / 5 * 1e3, kv_n * 4.0 / (read / 5) / 1e9);
      sep = ",";
    }
  std::printf("\n  ]\n}\n");
}
