// Fixture for engine/src/argsort.rs: the orders libstdc++'s std::sort (introsort) and
// std::partial_sort(first, last, last) (heap sort) leave the indices 0..n in, with
// comp(a, b) = v[a] > v[b] as ggml's CPU argsort (descending) uses. Values come from a small
// xorshift generator with few distinct values, so there are many ties.
// Build: g++ -O2 -std=c++17 xtask/tools/argsort_fixture.cpp -o argsort_fixture
// Output lines: "sort|heap N DISTINCT SEED: i0 i1 ..." (engine/tests/data/argsort_libstdcxx.txt).
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <numeric>
#include <vector>

static std::vector<float> values(int n, uint32_t distinct, uint32_t seed) {
    uint32_t x = seed;
    std::vector<float> v(n);
    for (int i = 0; i < n; i++) {
        x ^= x << 13; x ^= x >> 17; x ^= x << 5;
        v[i] = (float)(x % distinct);
    }
    return v;
}

int main() {
    const int ns[] = {17, 20, 32, 33, 60, 64, 128, 300};
    const uint32_t distincts[] = {1, 2, 5, 50, 100000};
    for (int heap = 0; heap < 2; heap++) {
        for (int n : ns) {
            for (uint32_t d : distincts) {
                for (uint32_t seed = 1; seed <= 3; seed++) {
                    std::vector<float> v = values(n, d, seed * 2654435761u);
                    std::vector<int> idx(n);
                    std::iota(idx.begin(), idx.end(), 0);
                    auto comp = [&](int a, int b) { return v[a] > v[b]; };
                    if (heap) std::partial_sort(idx.begin(), idx.end(), idx.end(), comp);
                    else std::sort(idx.begin(), idx.end(), comp);
                    printf("%s %d %u %u:", heap ? "heap" : "sort", n, d, seed * 2654435761u);
                    for (int i : idx) printf(" %d", i);
                    printf("\n");
                }
            }
        }
    }
}
