// mulmat_sweep: llama.cpp's GGML_OP_MUL_MAT on seeded data for every weight type Strata supports,
// every shape in SHAPES and every token count of each shape's list; prints one compact hash of
// the output bits per (type, shape, n). The fixture `quant/tests/data/mulmat_sweep.txt` is this
// program's output, and `quant/tests/sweep.rs` regenerates the same inputs with the same PRNG
// and checks `strata_quant::matmul` against it. See README.md beside this file.
//
// Our own code, linked against a llama.cpp build's shared libraries (ggml, ggml-base, ggml-cpu);
// nothing of llama.cpp is copied here.
//
// Usage:
//   mulmat_sweep [TYPE[,TYPE...]]             sweep (all types when omitted), fixture text on stdout
//   mulmat_sweep shape ROWS COLS NSPEC TYPE[,TYPE...]
//                                             the same for one other shape (NSPEC like "1-40,64")
//   mulmat_sweep dump TYPE ROWS COLS N OUT    raw f32 output of one product (token-major) to OUT
//
// The weights go where llama.cpp's model loader puts them: the first buffer type of the CPU
// device's "extra" list (the repack buffer) whose device accepts a MUL_MAT of the weight by a
// 512-token F32 batch, else the plain CPU buffer (src/llama-model-loader.cpp,
// weight_buft_supported / select_weight_buft). The graph runs on the CPU backend with 2 threads,
// as the reference data was made.

#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "ggml-cpu.h"
#include "ggml.h"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

// ---- data generation (mirrored in quant/tests/sweep.rs; change both together) ----

// splitmix64
struct Rng {
    uint64_t s;
    uint64_t next() {
        s += 0x9E3779B97F4A7C15ull;
        uint64_t z = s;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        return z ^ (z >> 31);
    }
    // uniform in [-1, 1), f32 arithmetic
    float unit() {
        return (float) (next() >> 40) / 16777216.0f * 2.0f - 1.0f;
    }
};

struct TypeInfo {
    const char * name;
    ggml_type type;
    std::vector<int> f16_fields; // byte offsets of f16 scale fields in one block
};

static const std::vector<TypeInfo> TYPES = {
    {"q4_0", GGML_TYPE_Q4_0, {0}},
    {"q4_1", GGML_TYPE_Q4_1, {0, 2}},
    {"q5_0", GGML_TYPE_Q5_0, {0}},
    {"q5_1", GGML_TYPE_Q5_1, {0, 2}},
    {"q8_0", GGML_TYPE_Q8_0, {0}},
    {"q2_k", GGML_TYPE_Q2_K, {80, 82}},
    {"q3_k", GGML_TYPE_Q3_K, {108}},
    {"q4_k", GGML_TYPE_Q4_K, {0, 2}},
    {"q5_k", GGML_TYPE_Q5_K, {0, 2}},
    {"q6_k", GGML_TYPE_Q6_K, {208}},
    {"iq4_nl", GGML_TYPE_IQ4_NL, {0}},
    {"f16", GGML_TYPE_F16, {}},
    {"bf16", GGML_TYPE_BF16, {}},
    {"iq4_xs", GGML_TYPE_IQ4_XS, {0}},
    {"iq2_xxs", GGML_TYPE_IQ2_XXS, {0}},
    {"iq2_xs", GGML_TYPE_IQ2_XS, {0}},
    {"iq2_s", GGML_TYPE_IQ2_S, {0}},
    {"iq3_xxs", GGML_TYPE_IQ3_XXS, {0}},
    {"iq3_s", GGML_TYPE_IQ3_S, {0}},
    {"iq1_s", GGML_TYPE_IQ1_S, {0}},
    {"iq1_m", GGML_TYPE_IQ1_M, {}},
    {"tq1_0", GGML_TYPE_TQ1_0, {52}},
    {"tq2_0", GGML_TYPE_TQ2_0, {64}},
    {"mxfp4", GGML_TYPE_MXFP4, {}},
};

struct Shape {
    int rows;
    int cols;
    const char * nspec; // "a-b,c,d-e": token counts, ascending
};

// 8 rows: llama.cpp repacks Q4_0/IQ4_NL/Q4_K/Q2_K (rows % 8 == 0); 12: it does not, tinyBLAS
// still takes F16/BF16 (rows % 4 == 0); 10: not even that. 264/260 rows: several 256-row tiled
// windows and uneven chunks. 256 columns (one K-quant block, 8 Q8_0 blocks) where every n up
// to 600 is swept, 512 (two K-quant blocks) on the others. Small enough that the Rust side
// checks every line in about a minute of CPU even at STRATA_SIMD=scalar.
static std::vector<Shape> SHAPES = {
    {8, 256, "1-600"},
    {12, 256, "1-600"},
    {10, 512, "1-40,63-65,127-129,255-257,511-513,600"},
    {264, 512, "1-20,31-33,64,129,256,512,513,600"},
    {260, 512, "8,9,33,64,513"},
};

static std::vector<int> parse_nspec(const char * spec) {
    std::vector<int> out;
    const char * p = spec;
    while (*p) {
        char * end;
        long a = strtol(p, &end, 10);
        long b = a;
        if (*end == '-') {
            b = strtol(end + 1, &end, 10);
        }
        for (long n = a; n <= b; n++) {
            out.push_back((int) n);
        }
        p = (*end == ',') ? end + 1 : end;
    }
    return out;
}

static uint64_t seed_for(ggml_type type, int rows, int cols) {
    return (uint64_t) type * 1000003ull + (uint64_t) rows * 10007ull + (uint64_t) cols;
}

// Weight bytes: one draw per byte (its top byte), then per block each f16 scale field (a
// magnitude draw in [0x1000, 0x2800), then a sign draw); IQ1_M draws its f16 scale the same way
// and stores nibble k in the top nibble of scale word k; MXFP4's E8M0 scale byte is one draw,
// 119 + (r >> 40) % 16; Q8_0 quant bytes 0x80 (-128, which no quantizer writes) become 0x81. F16 elements: [0x2000, 0x4400) with a sign draw; BF16:
// [0x3c00, 0x4000) with a sign draw.
static std::vector<uint8_t> make_weights(const TypeInfo & t, int rows, int cols, Rng & rng) {
    const size_t rb = ggml_row_size(t.type, cols);
    std::vector<uint8_t> w(rb * rows);
    for (auto & b : w) {
        b = (uint8_t) (rng.next() >> 56);
    }
    const size_t bs = ggml_type_size(t.type);
    if (t.type == GGML_TYPE_F16 || t.type == GGML_TYPE_BF16) {
        const uint32_t base = t.type == GGML_TYPE_F16 ? 0x2000 : 0x3c00;
        const uint32_t span = t.type == GGML_TYPE_F16 ? 0x2400 : 0x0400;
        for (size_t i = 0; i < w.size(); i += 2) {
            uint16_t h = (uint16_t) (base + (rng.next() >> 40) % span);
            if (rng.next() & 1) h |= 0x8000;
            memcpy(&w[i], &h, 2);
        }
        return w;
    }
    for (size_t off = 0; off < w.size(); off += bs) {
        for (int f : t.f16_fields) {
            uint16_t h = (uint16_t) (0x1000 + (rng.next() >> 40) % 0x1800);
            if (rng.next() & 1) h |= 0x8000;
            memcpy(&w[off + f], &h, 2);
        }
        if (t.type == GGML_TYPE_IQ1_M) {
            // The f16 scale is spread over the top nibbles of the four u16 scales (bytes 48..56).
            uint16_t h = (uint16_t) (0x1000 + (rng.next() >> 40) % 0x1800);
            if (rng.next() & 1) h |= 0x8000;
            for (int k = 0; k < 4; k++) {
                uint8_t & hi = w[off + 48 + 2 * k + 1];
                hi = (uint8_t) ((hi & 0x0F) | (((h >> (4 * k)) & 0x0F) << 4));
            }
        }
        if (t.type == GGML_TYPE_MXFP4) {
            w[off] = (uint8_t) (119 + (rng.next() >> 40) % 16); // E8M0 scale 2^-9 .. 2^6
        }
        if (t.type == GGML_TYPE_Q8_0) {
            for (size_t i = 2; i < bs; i++) {
                if (w[off + i] == 0x80) w[off + i] = 0x81;
            }
        }
    }
    return w;
}

// Activations, token-major: u in [-1, 1) per element; every 97th element (offset 5) times 40;
// every 389th (offset 11) an outlier sign(u)·(1000 + |u|·99000) like Gemma's (halved for F16
// weights, whose activations are rounded to f16: max 65504).
static std::vector<float> make_acts(const TypeInfo & t, int cols, int n, Rng & rng) {
    std::vector<float> x((size_t) cols * n);
    for (size_t i = 0; i < x.size(); i++) {
        float u = rng.unit();
        if (i % 97 == 5) {
            u = u * 40.0f;
        }
        if (i % 389 == 11) {
            float m = std::fabs(u) * 99000.0f;
            m = 1000.0f + m;
            if (t.type == GGML_TYPE_F16) m = m * 0.5f;
            u = u < 0.0f ? -m : m;
        }
        x[i] = u;
    }
    return x;
}

// FNV-1a 64 over the output's bytes (little-endian f32, token-major), folded to 32 bits.
static uint32_t hash_out(const std::vector<float> & y) {
    uint64_t h = 0xcbf29ce484222325ull;
    const uint8_t * p = (const uint8_t *) y.data();
    for (size_t i = 0; i < y.size() * 4; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return (uint32_t) (h ^ (h >> 32));
}

// ---- llama.cpp side ----

struct Ctx {
    ggml_backend_t backend;
    ggml_backend_dev_t dev;
    std::vector<ggml_backend_buffer_type_t> bufts; // extra bufts, then CPU
};

static Ctx init_backend() {
    Ctx c;
    c.backend = ggml_backend_cpu_init();
    ggml_backend_cpu_set_n_threads(c.backend, 2);
    c.dev = ggml_backend_get_device(c.backend);
    ggml_backend_reg_t reg = ggml_backend_dev_backend_reg(c.dev);
    auto get_extra = (ggml_backend_dev_get_extra_bufts_t) ggml_backend_reg_get_proc_address(
        reg, "ggml_backend_dev_get_extra_bufts");
    if (get_extra) {
        ggml_backend_buffer_type_t * e = get_extra(c.dev);
        while (e && *e) {
            c.bufts.push_back(*e);
            ++e;
        }
    }
    c.bufts.push_back(ggml_backend_dev_buffer_type(c.dev));
    return c;
}

// The model loader's choice for a MUL_MAT weight.
static ggml_backend_buffer_type_t select_buft(const Ctx & c, ggml_tensor * w) {
    for (auto buft : c.bufts) {
        ggml_init_params ip = {ggml_tensor_overhead() * 8, nullptr, true};
        ggml_context * ctx = ggml_init(ip);
        ggml_tensor * b = ggml_new_tensor_4d(ctx, GGML_TYPE_F32, w->ne[0], 512, w->ne[2], w->ne[3]);
        ggml_tensor * op = ggml_mul_mat(ctx, w, b);
        w->buffer = ggml_backend_buft_alloc_buffer(buft, 0);
        bool ok = ggml_backend_dev_supports_op(c.dev, op);
        ggml_backend_buffer_free(w->buffer);
        w->buffer = nullptr;
        ggml_free(ctx);
        if (ok) return buft;
    }
    fprintf(stderr, "no buffer type supports the weight\n");
    exit(1);
}

struct Weight {
    ggml_context * ctx;
    ggml_backend_buffer_t buf;
    ggml_tensor * w;
    const char * buft_name;
};

static Weight load_weight(const Ctx & c, ggml_type type, int rows, int cols, const std::vector<uint8_t> & bytes) {
    Weight r;
    ggml_init_params ip = {ggml_tensor_overhead() * 2, nullptr, true};
    r.ctx = ggml_init(ip);
    r.w = ggml_new_tensor_2d(r.ctx, type, cols, rows);
    ggml_backend_buffer_type_t buft = select_buft(c, r.w);
    r.buft_name = ggml_backend_buft_name(buft);
    r.buf = ggml_backend_alloc_ctx_tensors_from_buft(r.ctx, buft);
    if (!r.buf) {
        fprintf(stderr, "weight allocation failed\n");
        exit(1);
    }
    ggml_backend_buffer_set_usage(r.buf, GGML_BACKEND_BUFFER_USAGE_WEIGHTS);
    ggml_backend_tensor_set(r.w, bytes.data(), 0, bytes.size());
    return r;
}

static void free_weight(Weight & r) {
    ggml_backend_buffer_free(r.buf);
    ggml_free(r.ctx);
}

// y (n × rows, token-major) = W · x[:n]
static std::vector<float> mul_mat(const Ctx & c, const Weight & w, const std::vector<float> & x, int cols, int n) {
    const int rows = (int) w.w->ne[1];
    ggml_init_params ip = {ggml_tensor_overhead() * 8 + ggml_graph_overhead(), nullptr, true};
    ggml_context * ctx = ggml_init(ip);
    ggml_tensor * xt = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, cols, n);
    ggml_tensor * y = ggml_mul_mat(ctx, w.w, xt);
    ggml_cgraph * gf = ggml_new_graph(ctx);
    ggml_build_forward_expand(gf, y);
    ggml_backend_buffer_t buf = ggml_backend_alloc_ctx_tensors(ctx, c.backend);
    ggml_backend_tensor_set(xt, x.data(), 0, (size_t) cols * n * sizeof(float));
    if (ggml_backend_graph_compute(c.backend, gf) != GGML_STATUS_SUCCESS) {
        fprintf(stderr, "graph compute failed\n");
        exit(1);
    }
    std::vector<float> out((size_t) rows * n);
    ggml_backend_tensor_get(y, out.data(), 0, out.size() * sizeof(float));
    ggml_backend_buffer_free(buf);
    ggml_free(ctx);
    return out;
}

static const TypeInfo * find_type(const std::string & name) {
    for (auto & t : TYPES) {
        if (name == t.name) return &t;
    }
    fprintf(stderr, "unknown type %s\n", name.c_str());
    exit(1);
}

int main(int argc, char ** argv) {
    Ctx c = init_backend();

    if (argc >= 2 && strcmp(argv[1], "dump") == 0) {
        if (argc != 7) {
            fprintf(stderr, "usage: %s dump TYPE ROWS COLS N OUT\n", argv[0]);
            return 1;
        }
        const TypeInfo * t = find_type(argv[2]);
        const int rows = atoi(argv[3]), cols = atoi(argv[4]), n = atoi(argv[5]);
        Rng rng{seed_for(t->type, rows, cols)};
        auto wb = make_weights(*t, rows, cols, rng);
        auto x = make_acts(*t, cols, n, rng);
        Weight w = load_weight(c, t->type, rows, cols, wb);
        auto y = mul_mat(c, w, x, cols, n);
        FILE * f = fopen(argv[6], "wb");
        fwrite(y.data(), 4, y.size(), f);
        fclose(f);
        fprintf(stderr, "%s %dx%d n=%d (%s) hash %08x\n", t->name, rows, cols, n, w.buft_name, hash_out(y));
        free_weight(w);
        return 0;
    }

    std::vector<const TypeInfo *> types;
    if (argc >= 2 && strcmp(argv[1], "shape") == 0) {
        if (argc != 6) {
            fprintf(stderr, "usage: %s shape ROWS COLS NSPEC TYPE[,TYPE...]\n", argv[0]);
            return 1;
        }
        SHAPES = {{atoi(argv[2]), atoi(argv[3]), argv[4]}};
        argv += 4;
        argc -= 4;
    }
    if (argc >= 2) {
        std::string s = argv[1];
        size_t p = 0;
        while (p <= s.size()) {
            size_t q = s.find(',', p);
            if (q == std::string::npos) q = s.size();
            types.push_back(find_type(s.substr(p, q - p)));
            p = q + 1;
        }
    } else {
        for (auto & t : TYPES) types.push_back(&t);
    }

    printf("# mulmat_sweep: llama.cpp GGML_OP_MUL_MAT, CPU backend, 2 threads (xtask/tools/mulmat_sweep.cpp)\n");
    printf("# TYPE ROWS COLS NSPEC HASHES (8 hex digits per n, in NSPEC order)\n");
    for (const TypeInfo * t : types) {
        for (const Shape & s : SHAPES) {
            const std::vector<int> ns = parse_nspec(s.nspec);
            const int n_max = ns.back();
            Rng rng{seed_for(t->type, s.rows, s.cols)};
            auto wb = make_weights(*t, s.rows, s.cols, rng);
            auto x = make_acts(*t, s.cols, n_max, rng);
            Weight w = load_weight(c, t->type, s.rows, s.cols, wb);
            fprintf(stderr, "%s %dx%d: weights in %s\n", t->name, s.rows, s.cols, w.buft_name);
            std::string hashes;
            for (int n : ns) {
                auto y = mul_mat(c, w, x, s.cols, n);
                char h[9];
                snprintf(h, sizeof h, "%08x", hash_out(y));
                hashes += h;
            }
            printf("%s %d %d %s %s\n", t->name, s.rows, s.cols, s.nspec, hashes.c_str());
            fflush(stdout);
            free_weight(w);
        }
    }
    ggml_backend_free(c.backend);
    return 0;
}
