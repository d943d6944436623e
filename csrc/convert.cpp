// Hand-written sparse format conversions behind sgnn/engine/convert.py.
//
// Plain C ABI, no PyTorch headers. Every entry point exists once per index type I and value
// type V, named
//
//     sgnn_<op>_<i32|i64>_<f32|f64>        e.g. sgnn_coo_to_csr_i32_f32, sgnn_csr_transpose_i64_f64
//
// A NULL value pointer means pattern-only (no values read or written); callers use the _f32
// symbol for that. Sizes are int64_t; arrays are caller-allocated and do not alias. Inputs are
// trusted: convert.py checks bounds before calling. Each returns the resulting nnz, or -1 when
// scratch memory could not be allocated.
//
//   sgnn_coo_to_csr(nnz, nrows, ncols, row, col, val, pos_out[nrows+1], crd_out[nnz], val_out,
//                   sum_duplicates, nthreads)                     (nnz after merging)
//   sgnn_csr_transpose(nrows, ncols, pos, crd, val, pos_out[ncols+1], crd_out[nnz], val_out,
//                      nthreads)
//   sgnn_csr_sort_rows(nrows, pos, crd, val, nthreads)            (crd, val in place)
//   sgnn_csr_sum_duplicates(nrows, pos, crd, val, nthreads)       (all in place; rows sorted)
//
// Results do not depend on nthreads: the counting sorts are stable and rows are sorted stably,
// so duplicates keep (and are summed in) input order.
//
// The scatter into rows runs in two passes (radix partitioning): pass 1 groups entries by block
// of 2^shift rows, pass 2 spreads each block over its rows and sorts them while the block is in
// cache. One pass straight into 10^6 rows would miss cache and TLB on nearly every entry.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

// Rows up to this length use insertion sort (in place, stable, no buffers).
constexpr int64_t kShortRow = 32;
// Below this many entries one thread does the work: spawning costs more than it saves.
constexpr int64_t kParallelMin = 1 << 16;
// Pass 1 writes to at most ~2^kFanoutBits blocks at once, so its write streams stay in L2.
constexpr int kFanoutBits = 10;

int block_shift(int64_t nrows) {
  int bits = 0;
  while (bits < 62 && (int64_t(1) << bits) < nrows) bits++;
  return std::max(0, bits - kFanoutBits);
}

template <class T>
struct Scratch {  // an uninitialised array: std::vector would zero it first
  T* p;
  explicit Scratch(int64_t n) : p(n > 0 ? new T[n] : nullptr) {}
  ~Scratch() { delete[] p; }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
};

// Insertion sort of crd[0..n) (val along): stable, in place, fastest for short runs.
template <class I, class V>
void insertion_sort(int64_t n, I* crd, V* val) {
  for (int64_t j = 1; j < n; j++) {
    I c = crd[j];
    int64_t i = j - 1;
    if (crd[i] <= c) continue;
    V v = val ? val[j] : V();
    while (i >= 0 && crd[i] > c) { crd[i + 1] = crd[i]; if (val) val[i + 1] = val[i]; i--; }
    crd[i + 1] = c;
    if (val) val[i + 1] = v;
  }
}

// Stable merge of sorted runs a[lo, mid) and a[mid, hi) into b[lo, hi) (values along).
template <class I, class V>
void merge(const I* a, const V* av, int64_t lo, int64_t mid, int64_t hi, I* b, V* bv) {
  int64_t i = lo, j = mid, k = lo;
  while (i < mid && j < hi) {
    int64_t s = a[j] < a[i] ? j++ : i++;  // ties take the left run: stable
    b[k] = a[s];
    if (av) bv[k] = av[s];
    k++;
  }
  for (; i < mid; i++, k++) { b[k] = a[i]; if (av) bv[k] = av[i]; }
  for (; j < hi; j++, k++) { b[k] = a[j]; if (av) bv[k] = av[j]; }
}

template <class I, class V>
struct Buffers {  // per-thread scratch, reused across rows and blocks
  std::vector<I> c;
  std::vector<V> v;
};

// Sort crd[0..n) ascending (val along), stably: insertion-sorted blocks, then a bottom-up merge
// sort through the buffers. O(n log n); an already sorted row costs one pass.
template <class I, class V>
void sort_row(int64_t n, I* crd, V* val, Buffers<I, V>& buf) {
  if (n <= kShortRow) { insertion_sort(n, crd, val); return; }
  if (std::is_sorted(crd, crd + n)) return;
  for (int64_t s = 0; s < n; s += kShortRow)
    insertion_sort(std::min(kShortRow, n - s), crd + s, val ? val + s : nullptr);
  buf.c.resize(n);
  if (val) buf.v.resize(n);
  I *a = crd, *b = buf.c.data();
  V *av = val, *bv = val ? buf.v.data() : nullptr;
  for (int64_t w = kShortRow; w < n; w *= 2) {
    for (int64_t lo = 0; lo < n; lo += 2 * w)
      merge(a, av, lo, std::min(lo + w, n), std::min(lo + 2 * w, n), b, bv);
    std::swap(a, b);
    std::swap(av, bv);
  }
  if (a != crd) {
    std::memcpy(crd, a, n * sizeof(I));
    if (val) std::memcpy(val, av, n * sizeof(V));
  }
}

// Merge runs of equal coordinates in a sorted row (summing values in order); returns new length.
template <class I, class V>
int64_t dedup_row(int64_t n, I* crd, V* val) {
  if (n < 2) return n;
  int64_t w = 0;
  for (int64_t j = 1; j < n; j++) {
    if (crd[j] == crd[w]) {
      if (val) val[w] += val[j];
    } else {
      w++;
      crd[w] = crd[j];
      if (val) val[w] = val[j];
    }
  }
  return w + 1;
}

// Sort and/or merge row r, spanning [s, e); a merged row's length goes to len[r] (len non-null).
template <class I, class V>
bool finish_row(int64_t r, int64_t s, int64_t e, I* crd, V* val, bool sort, I* len, Buffers<I, V>& buf) {
  if (sort) sort_row(e - s, crd + s, val ? val + s : nullptr, buf);
  if (!len) return false;
  len[r] = (I)dedup_row(e - s, crd + s, val ? val + s : nullptr);
  return len[r] != e - s;
}

// Close the gaps merging left: rows move to the front and pos is rewritten. Serial because rows
// overlap once moved; one streaming pass. Returns the new nnz.
template <class I, class V>
int64_t compact(int64_t nrows, I* pos, I* crd, V* val, const I* len) {
  int64_t w = 0;
  for (int64_t r = 0; r < nrows; r++) {
    int64_t s = pos[r], n = len[r];
    if (w != s) {
      std::memmove(crd + w, crd + s, n * sizeof(I));
      if (val) std::memmove(val + w, val + s, n * sizeof(V));
    }
    pos[r] = (I)w;
    w += n;
  }
  pos[nrows] = (I)w;
  return w;
}

// Sort (and optionally merge) every row of a CSR in place; returns the final nnz.
template <class I, class V>
int64_t sort_and_merge(int64_t nrows, I* pos, I* crd, V* val, bool sort, bool merge, int nthreads) {
  std::vector<I> len(merge ? nrows : 0);
  I* lp = merge ? len.data() : nullptr;
  bool shrank = false;
#pragma omp parallel num_threads(nthreads) if (nthreads > 1 && pos[nrows] >= kParallelMin) \
    reduction(|| : shrank)
  {
    Buffers<I, V> buf;
#pragma omp for schedule(dynamic, 256)
    for (int64_t r = 0; r < nrows; r++) shrank = finish_row(r, pos[r], pos[r + 1], crd, val, sort, lp, buf) || shrank;
  }
  return shrank ? compact(nrows, pos, crd, val, lp) : pos[nrows];
}

// Pass 1: stable counting sort of entries by block, key[i] >> shift, over T parts of [0, nnz).
// Part t counts its entries into hist[t*nb ..]; the scan turns counts into destinations in
// (block, part) order; part t then places its entries. start[0..nb] gets the block starts.
template <class I, class V>
void group_blocks(int64_t nnz, int64_t nb, int shift, int T, const I* key, const I* col, const V* val,
                  I* start, I* key_out, I* col_out, V* val_out) {
  std::vector<I> hist((size_t)T * nb, 0);
  auto lo = [&](int t) { return nnz * t / T; };
#pragma omp parallel for schedule(static) num_threads(T) if (T > 1)
  for (int t = 0; t < T; t++) {
    I* h = hist.data() + (size_t)t * nb;
    for (int64_t i = lo(t); i < lo(t + 1); i++) h[key[i] >> shift]++;
  }
  I acc = 0;
  for (int64_t b = 0; b < nb; b++) {
    start[b] = acc;
    for (int t = 0; t < T; t++) { I& h = hist[(size_t)t * nb + b]; I c = h; h = acc; acc += c; }
  }
  start[nb] = acc;
#pragma omp parallel for schedule(static) num_threads(T) if (T > 1)
  for (int t = 0; t < T; t++) {
    I* h = hist.data() + (size_t)t * nb;
    for (int64_t i = lo(t); i < lo(t + 1); i++) {
      I q = h[key[i] >> shift]++;
      if (key_out) key_out[q] = key[i];
      col_out[q] = col[i];
      if (val) val_out[q] = val[i];
    }
  }
}

// Pass 2: block b (rows [b << shift, ..), entries [start[b], start[b+1]), rows in key[]) is
// copied aside and spread over its rows; its rows are then finished while still in cache.
// Writes pos[0..nrows); returns whether merging shrank a row.
template <class I, class V>
bool spread_blocks(int64_t nrows, int shift, const I* start, const I* key, I* pos, I* crd, V* val,
                   bool sort, I* len, int nthreads) {
  int64_t nb = ((nrows - 1) >> shift) + 1;
  bool shrank = false;
#pragma omp parallel num_threads(nthreads) if (nthreads > 1 && start[nb] >= kParallelMin) \
    reduction(|| : shrank)
  {
    Buffers<I, V> blk, buf;
#pragma omp for schedule(dynamic, 1)
    for (int64_t b = 0; b < nb; b++) {
      int64_t r0 = b << shift, r1 = std::min(r0 + (int64_t(1) << shift), nrows);
      int64_t s = start[b], e = start[b + 1];
      blk.c.assign(crd + s, crd + e);
      if (val) blk.v.assign(val + s, val + e);
      // pos[r] counts row r, becomes its start, then (after placing) its end
      std::fill(pos + r0, pos + r1, I(0));
      for (int64_t j = s; j < e; j++) pos[key[j]]++;
      I acc = (I)s;
      for (int64_t r = r0; r < r1; r++) { I c = pos[r]; pos[r] = acc; acc += c; }
      for (int64_t j = s; j < e; j++) {
        I q = pos[key[j]]++;
        crd[q] = blk.c[j - s];
        if (val) val[q] = blk.v[j - s];
      }
      for (int64_t r = r1 - 1; r > r0; r--) pos[r] = pos[r - 1];  // ends -> starts; pos[r1] is block b+1's
      pos[r0] = (I)s;
      if (sort || len)
        for (int64_t r = r0; r < r1; r++)
          shrank = finish_row(r, pos[r], r + 1 < r1 ? pos[r + 1] : e, crd, val, sort, len, buf) || shrank;
    }
  }
  return shrank;
}

// Stable scatter of entries (row[i], col[i], val[i]) into CSR rows, then sort and/or merge
// each row; returns the final nnz.
template <class I, class V>
int64_t scatter_rows(int64_t nnz, int64_t nrows, const I* row, const I* col, const V* val, I* pos,
                     I* crd, V* val_out, bool sort, bool merge, int nthreads) {
  int T = nthreads > 1 && nnz >= kParallelMin ? nthreads : 1;
  V* vo = val ? val_out : nullptr;
  int shift = block_shift(nrows);
  if (shift == 0) {  // few rows: blocks are rows, and pass 1 is the whole scatter
    group_blocks<I, V>(nnz, nrows, 0, T, row, col, val, pos, nullptr, crd, vo);
    return sort || merge ? sort_and_merge(nrows, pos, crd, vo, sort, merge, nthreads) : nnz;
  }
  int64_t nb = ((nrows - 1) >> shift) + 1;
  Scratch<I> key(nnz), start(nb + 1);
  group_blocks<I, V>(nnz, nb, shift, T, row, col, val, start.p, key.p, crd, vo);
  std::vector<I> len(merge ? nrows : 0);
  I* lp = merge ? len.data() : nullptr;
  bool shrank = spread_blocks(nrows, shift, start.p, key.p, pos, crd, vo, sort, lp, nthreads);
  pos[nrows] = (I)nnz;
  return shrank ? compact(nrows, pos, crd, vo, lp) : nnz;
}

// Transpose = scatter of the entries by column, taken in row order: each output row lists the
// input rows ascending, so it needs no sort.
template <class I, class V>
void csr_transpose(int64_t nrows, int64_t ncols, const I* pos, const I* crd, const V* val,
                   I* pos_out, I* crd_out, V* val_out, int nthreads) {
  int64_t nnz = pos[nrows];
  Scratch<I> row(nnz);
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1 && nnz >= kParallelMin)
  for (int64_t r = 0; r < nrows; r++) std::fill(row.p + pos[r], row.p + pos[r + 1], (I)r);
  scatter_rows(nnz, ncols, crd, row.p, val, pos_out, crd_out, val_out, false, false, nthreads);
}

}  // namespace

// Exceptions must not cross the C ABI: an allocation failure returns -1 instead.
#define SGNN_CONVERT(IS, I, VS, V)                                                                   \
  extern "C" int64_t sgnn_coo_to_csr_##IS##_##VS(int64_t nnz, int64_t nrows, int64_t ncols,       \
      const I* row, const I* col, const V* val, I* pos_out, I* crd_out, V* val_out,                \
      int sum_duplicates, int nthreads) {                                                          \
    (void)ncols;                                                                                   \
    try {                                                                                          \
      return scatter_rows<I, V>(nnz, nrows, row, col, val, pos_out, crd_out, val_out, true,       \
                                sum_duplicates != 0, nthreads);                                    \
    } catch (...) { return -1; }                                                                   \
  }                                                                                                \
  extern "C" int64_t sgnn_csr_transpose_##IS##_##VS(int64_t nrows, int64_t ncols, const I* pos,   \
      const I* crd, const V* val, I* pos_out, I* crd_out, V* val_out, int nthreads) {              \
    try {                                                                                          \
      csr_transpose<I, V>(nrows, ncols, pos, crd, val, pos_out, crd_out, val_out, nthreads);      \
      return pos[nrows];                                                                           \
    } catch (...) { return -1; }                                                                   \
  }                                                                                                \
  extern "C" int64_t sgnn_csr_sort_rows_##IS##_##VS(int64_t nrows, const I* pos, I* crd, V* val,  \
                                                    int nthreads) {                                \
    try { /* pos is only written when merging */                                                  \
      return sort_and_merge<I, V>(nrows, const_cast<I*>(pos), crd, val, true, false, nthreads);   \
    } catch (...) { return -1; }                                                                   \
  }                                                                                                \
  extern "C" int64_t sgnn_csr_sum_duplicates_##IS##_##VS(int64_t nrows, I* pos, I* crd, V* val,  \
                                                         int nthreads) {                           \
    try {                                                                                          \
      return sort_and_merge<I, V>(nrows, pos, crd, val, false, true, nthreads);                    \
    } catch (...) { return -1; }                                                                   \
  }

SGNN_CONVERT(i32, int32_t, f32, float)
SGNN_CONVERT(i32, int32_t, f64, double)
SGNN_CONVERT(i64, int64_t, f32, float)
SGNN_CONVERT(i64, int64_t, f64, double)
