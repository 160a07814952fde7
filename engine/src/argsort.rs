//! Indices sorted by descending value, in exactly the order libstdc++'s `std::sort` leaves them.
//!
//! llama.cpp picks a mixture-of-experts layer's experts with `ggml_argsort` (descending), which
//! on the CPU fills a row with `0..n` and calls `std::sort` with `data[a] > data[b]`. Where two
//! experts' probabilities are equal, the order it leaves them in decides which is chosen at
//! the top-K boundary and the order the chosen ones are added in; `std::sort` is not stable
//! past 16 elements, so matching llama.cpp's bits needs its algorithm, not just any sort:
//! introsort (median-of-three pivot moved to the front, Hoare-style unguarded partition,
//! recursion on the right part and a loop on the left, depth limit `2·⌊log₂ n⌋` then heap
//! sort), leaving parts of at most 16 elements for one final insertion sort. This is the
//! algorithm of GCC 12's `bits/stl_algo.h` and `bits/stl_heap.h` (the reference build's),
//! written here from its description.

/// Parts of at most this many elements are left to the final insertion sort (`_S_threshold`).
const THRESHOLD: usize = 16;

/// `idx` (any permutation; llama.cpp passes `0..n`) reordered as `std::sort(idx, comp)` with
/// `comp(a, b) = v[a] > v[b]` reorders it.
pub fn argsort_desc(v: &[f32], idx: &mut [usize]) {
    let n = idx.len();
    if n < 2 {
        return;
    }
    let gt = |a: usize, b: usize| v[a] > v[b];
    introsort_loop(idx, 0, n, 2 * n.ilog2() as usize, &gt);
    final_insertion_sort(idx, 0, n, &gt);
}

fn introsort_loop(
    a: &mut [usize],
    first: usize,
    mut last: usize,
    mut depth: usize,
    comp: &impl Fn(usize, usize) -> bool,
) {
    while last - first > THRESHOLD {
        if depth == 0 {
            heap_sort(a, first, last, comp);
            return;
        }
        depth -= 1;
        let cut = partition_pivot(a, first, last, comp);
        introsort_loop(a, cut, last, depth, comp);
        last = cut;
    }
}

/// Moves the median of `a[first+1]`, `a[mid]`, `a[last-1]` to `a[first]` and partitions
/// `first+1..last` around it; returns the cut.
fn partition_pivot(
    a: &mut [usize],
    first: usize,
    last: usize,
    comp: &impl Fn(usize, usize) -> bool,
) -> usize {
    let mid = first + (last - first) / 2;
    move_median_to_first(a, first, first + 1, mid, last - 1, comp);
    unguarded_partition(a, first + 1, last, first, comp)
}

fn move_median_to_first(
    a: &mut [usize],
    result: usize,
    x: usize,
    y: usize,
    z: usize,
    comp: &impl Fn(usize, usize) -> bool,
) {
    let c = |i: usize, j: usize| comp(a[i], a[j]);
    let pick = if c(x, y) {
        if c(y, z) {
            y
        } else if c(x, z) {
            z
        } else {
            x
        }
    } else if c(x, z) {
        x
    } else if c(y, z) {
        z
    } else {
        y
    };
    a.swap(result, pick);
}

fn unguarded_partition(
    a: &mut [usize],
    mut first: usize,
    mut last: usize,
    pivot: usize,
    comp: &impl Fn(usize, usize) -> bool,
) -> usize {
    loop {
        while comp(a[first], a[pivot]) {
            first += 1;
        }
        last -= 1;
        while comp(a[pivot], a[last]) {
            last -= 1;
        }
        if first >= last {
            return first;
        }
        a.swap(first, last);
        first += 1;
    }
}

fn final_insertion_sort(
    a: &mut [usize],
    first: usize,
    last: usize,
    comp: &impl Fn(usize, usize) -> bool,
) {
    if last - first > THRESHOLD {
        insertion_sort(a, first, first + THRESHOLD, comp);
        for i in first + THRESHOLD..last {
            unguarded_linear_insert(a, i, comp);
        }
    } else {
        insertion_sort(a, first, last, comp);
    }
}

fn insertion_sort(
    a: &mut [usize],
    first: usize,
    last: usize,
    comp: &impl Fn(usize, usize) -> bool,
) {
    for i in first + 1..last {
        if comp(a[i], a[first]) {
            // Smaller than the first: shift the whole prefix right by one.
            let val = a[i];
            a.copy_within(first..i, first + 1);
            a[first] = val;
        } else {
            unguarded_linear_insert(a, i, comp);
        }
    }
}

fn unguarded_linear_insert(a: &mut [usize], mut last: usize, comp: &impl Fn(usize, usize) -> bool) {
    let val = a[last];
    while comp(val, a[last - 1]) {
        a[last] = a[last - 1];
        last -= 1;
    }
    a[last] = val;
}

/// `std::__partial_sort(first, last, last)`: `__make_heap`, then `__sort_heap` (max-heap under
/// `comp`), as `std::__heap_select` with middle == last reduces to.
fn heap_sort(a: &mut [usize], first: usize, last: usize, comp: &impl Fn(usize, usize) -> bool) {
    let h = &mut a[first..last];
    let len = h.len();
    if len < 2 {
        return;
    }
    // __make_heap
    let mut parent = (len - 2) / 2;
    loop {
        let v = h[parent];
        adjust_heap(h, parent, len, v, comp);
        if parent == 0 {
            break;
        }
        parent -= 1;
    }
    // __sort_heap: __pop_heap(first, last, last) while last - first > 1
    let mut end = len;
    while end > 1 {
        end -= 1;
        let v = h[end];
        h[end] = h[0];
        adjust_heap(h, 0, end, v, comp);
    }
}

/// `std::__adjust_heap(first, hole, len, value)`: sift the hole down to a leaf always taking
/// the larger child (the right one unless `comp(right, left)`), then `__push_heap` `value` up.
fn adjust_heap(
    h: &mut [usize],
    mut hole: usize,
    len: usize,
    value: usize,
    comp: &impl Fn(usize, usize) -> bool,
) {
    let top = hole;
    let mut child = hole;
    while child < (len - 1) / 2 {
        child = 2 * (child + 1);
        if comp(h[child], h[child - 1]) {
            child -= 1;
        }
        h[hole] = h[child];
        hole = child;
    }
    if len.is_multiple_of(2) && child == (len - 2) / 2 {
        child = 2 * (child + 1);
        h[hole] = h[child - 1];
        hole = child - 1;
    }
    // __push_heap(first, hole, top, value)
    let mut parent = hole.wrapping_sub(1) / 2;
    while hole > top && comp(h[parent], value) {
        h[hole] = h[parent];
        hole = parent;
        parent = hole.wrapping_sub(1) / 2;
    }
    h[hole] = value;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(v: &[f32]) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..v.len()).collect();
        argsort_desc(v, &mut idx);
        idx
    }

    #[test]
    fn sorts_descending_and_keeps_a_permutation() {
        let mut x = 0x9E37_79B9u32;
        for n in [0, 1, 2, 3, 16, 17, 33, 128, 1000] {
            let v: Vec<f32> = (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    (x % 50) as f32 // many ties
                })
                .collect();
            let idx = sorted(&v);
            let mut seen = idx.clone();
            seen.sort_unstable();
            assert_eq!(seen, (0..n).collect::<Vec<_>>());
            assert!(idx.windows(2).all(|w| v[w[0]] >= v[w[1]]), "n={n}");
        }
    }

    #[test]
    fn up_to_sixteen_is_stable() {
        let v = [1.0, 3.0, 1.0, 3.0, 2.0, 3.0, 0.0, 2.0];
        assert_eq!(sorted(&v), [1, 3, 5, 4, 7, 0, 2, 6]);
    }

    /// Ties land where libstdc++ 12's `std::sort` and `std::partial_sort(first, last, last)`
    /// (the heap sort introsort falls back to) put them: `xtask/tools/argsort_fixture.cpp`'s
    /// output (GCC 12.2) for 240 rows of 17 to 300 values with 1 to 100000 distinct values.
    #[test]
    fn ties_follow_libstdcxx() {
        let fixture = include_str!("../tests/data/argsort_libstdcxx.txt");
        let mut rows = 0;
        for line in fixture.lines() {
            let (head, want) = line.split_once(':').unwrap();
            let h: Vec<&str> = head.split(' ').collect();
            let (n, distinct, seed): (usize, u32, u32) = (
                h[1].parse().unwrap(),
                h[2].parse().unwrap(),
                h[3].parse().unwrap(),
            );
            let mut x = seed;
            let v: Vec<f32> = (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    (x % distinct) as f32
                })
                .collect();
            let want: Vec<usize> = want
                .split_whitespace()
                .map(|t| t.parse().unwrap())
                .collect();
            let mut idx: Vec<usize> = (0..n).collect();
            if h[0] == "heap" {
                heap_sort(&mut idx, 0, n, &|a: usize, b: usize| v[a] > v[b]);
            } else {
                argsort_desc(&v, &mut idx);
            }
            assert_eq!(idx, want, "{head}");
            rows += 1;
        }
        assert_eq!(rows, 240);
    }
}
