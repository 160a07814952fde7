// Provenance: copied from the product's ../shared/reference/tools/refdump.cpp (our own program
// against llama.h, not llama.cpp code), with the gen-last mode added.
// refdump: dump reference tokenization / logits / greedy generation from llama.cpp via llama.h.
//
// Usage:
//   refdump gen <model.gguf> <prompt_file> <out.json> <out_last_logits.f32> <model_sha256> <llama_cpp_commit> [n_gen=32]
//       prompt_file holds the raw prompt bytes (UTF-8, no trailing newline is stripped).
//   refdump gen-last <model.gguf> <prompt_file> <out.json> <out_last_logits.f32> <model_sha256> <llama_cpp_commit> [n_gen=32]
//       as gen, but the prompt's llama_decode asks for the logits of the last position only (as
//       llama-cli and llama-server do), so llama.cpp prunes the last layer to that row
//       (inp_out_ids); "positions" then holds that one position.
//   refdump tok <model.gguf> <hexlines_in> <out_ids_txt>
//       each input line is the hex encoding of one string (empty line = empty string);
//       each output line is the space-separated token ids (add_special=false, parse_special=false).
//
// Settings: n_threads=2 (prefill and decode), n_ctx=2048, n_batch=2048, n_ubatch=512, f16 K/V cache,
// flash attention disabled, CPU only, tokenization add_special=true / parse_special=false for "gen"
// (parse_special=true with REFDUMP_PARSE_SPECIAL=1).

#include "llama.h"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

static std::string read_file(const char * path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) { fprintf(stderr, "cannot open %s\n", path); exit(1); }
    std::stringstream ss; ss << f.rdbuf();
    return ss.str();
}

// JSON string escaping; invalid UTF-8 bytes are replaced with U+FFFD.
static std::string json_str(const std::string & s) {
    std::string o = "\"";
    size_t i = 0, n = s.size();
    while (i < n) {
        unsigned char c = (unsigned char) s[i];
        int len = 0;
        if (c < 0x80) len = 1;
        else if ((c & 0xE0) == 0xC0 && c >= 0xC2) len = 2;
        else if ((c & 0xF0) == 0xE0) len = 3;
        else if ((c & 0xF8) == 0xF0 && c <= 0xF4) len = 4;
        bool ok = len > 0 && i + len <= n;
        for (int k = 1; ok && k < len; k++) if (((unsigned char) s[i + k] & 0xC0) != 0x80) ok = false;
        if (ok && len == 3) {
            unsigned char c1 = (unsigned char) s[i + 1];
            if (c == 0xE0 && c1 < 0xA0) ok = false;
            if (c == 0xED && c1 >= 0xA0) ok = false; // surrogates
        }
        if (ok && len == 4) {
            unsigned char c1 = (unsigned char) s[i + 1];
            if (c == 0xF0 && c1 < 0x90) ok = false;
            if (c == 0xF4 && c1 >= 0x90) ok = false;
        }
        if (!ok) { o += "\xEF\xBF\xBD"; i += 1; continue; }
        if (len == 1) {
            switch (c) {
                case '"':  o += "\\\""; break;
                case '\\': o += "\\\\"; break;
                case '\n': o += "\\n"; break;
                case '\r': o += "\\r"; break;
                case '\t': o += "\\t"; break;
                case '\b': o += "\\b"; break;
                case '\f': o += "\\f"; break;
                default:
                    if (c < 0x20 || c == 0x7F) { char b[8]; snprintf(b, sizeof b, "\\u%04x", c); o += b; }
                    else o += (char) c;
            }
        } else {
            o.append(s, i, len);
        }
        i += len;
    }
    return o + "\"";
}

static std::string hex_of(const std::string & s) {
    static const char * d = "0123456789abcdef";
    std::string o;
    for (unsigned char c : s) { o += d[c >> 4]; o += d[c & 15]; }
    return o;
}

static std::string fmt_f(float v) { char b[32]; snprintf(b, sizeof b, "%.9g", v); return b; }

static std::vector<llama_token> tokenize(const llama_vocab * vocab, const std::string & text, bool add_special, bool parse_special = false) {
    int n = -llama_tokenize(vocab, text.data(), (int32_t) text.size(), nullptr, 0, add_special, parse_special);
    if (n < 0) n = -n;
    std::vector<llama_token> toks(std::max(n, 1) + 8);
    int r = llama_tokenize(vocab, text.data(), (int32_t) text.size(), toks.data(), (int32_t) toks.size(), add_special, parse_special);
    if (r < 0) { fprintf(stderr, "tokenize failed (%d)\n", r); exit(1); }
    toks.resize(r);
    return toks;
}

static std::string piece(const llama_vocab * vocab, llama_token t, bool special) {
    std::vector<char> buf(256);
    int n = llama_token_to_piece(vocab, t, buf.data(), (int32_t) buf.size(), 0, special);
    if (n < 0) { buf.resize(-n); n = llama_token_to_piece(vocab, t, buf.data(), (int32_t) buf.size(), 0, special); }
    return std::string(buf.data(), std::max(n, 0));
}

// top-k (id, logit), ties broken by lower id; first element is the argmax.
static std::vector<std::pair<int, float>> topk(const float * logits, int n_vocab, int k) {
    std::vector<int> idx(n_vocab);
    for (int i = 0; i < n_vocab; i++) idx[i] = i;
    auto cmp = [&](int a, int b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
    std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), cmp);
    std::vector<std::pair<int, float>> r;
    for (int i = 0; i < k; i++) r.push_back({idx[i], logits[idx[i]]});
    return r;
}

static std::string top_json(const std::vector<std::pair<int, float>> & t) {
    std::string o = "[";
    for (size_t i = 0; i < t.size(); i++) {
        if (i) o += ",";
        o += "[" + std::to_string(t[i].first) + "," + fmt_f(t[i].second) + "]";
    }
    return o + "]";
}

static void quiet_log(enum ggml_log_level level, const char * text, void *) {
    if (level >= GGML_LOG_LEVEL_WARN) fputs(text, stderr);
}

int main(int argc, char ** argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: %s gen <model> <prompt_file> <out.json> <out.f32> <sha256> <commit> [n_gen]\n"
                        "       %s tok <model> <hexlines_in> <out_ids_txt>\n", argv[0], argv[0]);
        return 1;
    }
    const std::string mode = argv[1];
    llama_log_set(quiet_log, nullptr);
    llama_backend_init();

    llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    if (mode == "tok") mp.vocab_only = true;  // tokenizer metadata suffices
    llama_model * model = llama_model_load_from_file(argv[2], mp);
    if (!model) { fprintf(stderr, "failed to load model\n"); return 1; }
    const llama_vocab * vocab = llama_model_get_vocab(model);

    if (mode == "tok") {
        std::ifstream in(argv[3]);
        std::ofstream out(argv[4]);
        std::string line;
        while (std::getline(in, line)) {
            std::string s;
            for (size_t i = 0; i + 1 < line.size(); i += 2) s += (char) strtol(line.substr(i, 2).c_str(), nullptr, 16);
            auto toks = tokenize(vocab, s, false);
            for (size_t i = 0; i < toks.size(); i++) out << (i ? " " : "") << toks[i];
            out << "\n";
        }
        llama_model_free(model);
        return 0;
    }
    if ((mode != "gen" && mode != "gen-last") || argc < 8) { fprintf(stderr, "bad args\n"); return 1; }
    const bool last_only = mode == "gen-last";

    const std::string prompt = read_file(argv[3]);
    const int n_gen = argc > 8 ? atoi(argv[8]) : 32;

    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = 2048;
    cp.n_batch = 2048;
    cp.n_ubatch = 512;
    cp.n_seq_max = 1;
    cp.n_threads = 2;
    cp.n_threads_batch = 2;
    cp.type_k = GGML_TYPE_F16;
    cp.type_v = GGML_TYPE_F16;
    cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    cp.no_perf = true;
    llama_context * ctx = llama_init_from_model(model, cp);
    if (!ctx) { fprintf(stderr, "failed to create context\n"); return 1; }

    const int n_vocab = llama_vocab_n_tokens(vocab);
    fprintf(stderr, "system_info: %s\n", llama_print_system_info());
    // REFDUMP_PARSE_SPECIAL=1: special-token texts in the prompt become their tokens (chat
    // formats), recorded as "parse_special":true.
    const bool parse_special = getenv("REFDUMP_PARSE_SPECIAL") && atoi(getenv("REFDUMP_PARSE_SPECIAL")) != 0;
    std::vector<llama_token> toks = tokenize(vocab, prompt, true, parse_special);
    const int n_prompt = (int) toks.size();
    const bool add_bos = llama_vocab_get_add_bos(vocab);
    fprintf(stderr, "n_prompt=%d n_vocab=%d add_bos=%d\n", n_prompt, n_vocab, (int) add_bos);
    if (n_prompt == 0 || n_prompt + n_gen > 2048) { fprintf(stderr, "bad prompt length\n"); return 1; }

    // (b) whole prompt in one llama_decode call, logits for every position
    llama_batch batch = llama_batch_init(n_prompt, 0, 1);
    for (int i = 0; i < n_prompt; i++) {
        batch.token[i] = toks[i];
        batch.pos[i] = i;
        batch.n_seq_id[i] = 1;
        batch.seq_id[i][0] = 0;
        batch.logits[i] = !last_only || i == n_prompt - 1;
    }
    batch.n_tokens = n_prompt;
    if (llama_decode(ctx, batch) != 0) { fprintf(stderr, "prefill decode failed\n"); return 1; }

    std::string js = "{\n";
    js += "\"model_sha256\":" + json_str(argv[6]) + ",\n";
    js += "\"llama_cpp_commit\":" + json_str(argv[7]) + ",\n";
    js += "\"prompt\":" + json_str(prompt) + ",\n";
    if (parse_special) js += "\"parse_special\":true,\n";
    js += std::string("\"add_bos\":") + (add_bos ? "true" : "false") + ",\n";
    js += "\"n_vocab\":" + std::to_string(n_vocab) + ",\n";
    js += "\"token_ids\":[";
    for (int i = 0; i < n_prompt; i++) js += (i ? "," : "") + std::to_string(toks[i]);
    js += "],\n\"positions\":[\n";
    for (int i = last_only ? n_prompt - 1 : 0; i < n_prompt; i++) {
        const float * lg = llama_get_logits_ith(ctx, i);
        auto t = topk(lg, n_vocab, std::min(20, n_vocab));
        js += "{\"argmax\":" + std::to_string(t[0].first) + ",\"top\":" + top_json(t) + "}";
        js += (i + 1 < n_prompt) ? ",\n" : "\n";
    }
    js += "],\n";
    {
        const float * lg = llama_get_logits_ith(ctx, n_prompt - 1);
        FILE * f = fopen(argv[5], "wb");
        if (!f) { fprintf(stderr, "cannot write %s\n", argv[5]); return 1; }
        fwrite(lg, sizeof(float), n_vocab, f); // x86: native little-endian f32
        fclose(f);
    }
    llama_token cur = topk(llama_get_logits_ith(ctx, n_prompt - 1), n_vocab, 1)[0].first;
    llama_batch_free(batch);

    // (d) greedy generation, one token per llama_decode
    std::vector<llama_token> gen;
    std::vector<std::string> pieces;
    std::vector<std::vector<std::pair<int, float>>> steps;
    llama_batch b1 = llama_batch_init(1, 0, 1);
    for (int s = 0; s < n_gen; s++) {
        gen.push_back(cur);
        pieces.push_back(piece(vocab, cur, true));
        if (s + 1 == n_gen) break;
        b1.token[0] = cur; b1.pos[0] = n_prompt + s; b1.n_seq_id[0] = 1; b1.seq_id[0][0] = 0; b1.logits[0] = 1;
        b1.n_tokens = 1;
        if (llama_decode(ctx, b1) != 0) { fprintf(stderr, "decode failed at step %d\n", s); return 1; }
        auto t = topk(llama_get_logits_ith(ctx, 0), n_vocab, std::min(5, n_vocab));
        steps.push_back(t);
        cur = t[0].first;
    }
    llama_batch_free(b1);

    // steps[k] = top-5 of the distribution that produced ids[k]; step 0 uses the prompt's last position.
    std::string text;
    for (auto & p : pieces) text += p;
    js += "\"greedy\":{\n\"ids\":[";
    for (size_t i = 0; i < gen.size(); i++) js += (i ? "," : "") + std::to_string(gen[i]);
    js += "],\n\"pieces\":[";
    for (size_t i = 0; i < pieces.size(); i++) js += (i ? "," : "") + json_str(pieces[i]);
    js += "],\n\"pieces_hex\":[";
    for (size_t i = 0; i < pieces.size(); i++) js += (i ? "," : "") + json_str(hex_of(pieces[i]));
    js += "],\n\"text\":" + json_str(text) + ",\n\"steps\":[\n";
    // step 0 top-5 comes from the prompt's last-position logits (re-read from the .f32 file just written)
    std::vector<std::vector<std::pair<int, float>>> all_steps;
    {
        std::vector<float> last(n_vocab);
        FILE * f = fopen(argv[5], "rb");
        if (!f || fread(last.data(), sizeof(float), n_vocab, f) != (size_t) n_vocab) { fprintf(stderr, "reread failed\n"); return 1; }
        fclose(f);
        all_steps.push_back(topk(last.data(), n_vocab, std::min(5, n_vocab)));
    }
    for (auto & t : steps) all_steps.push_back(t);
    for (size_t i = 0; i < all_steps.size(); i++) {
        js += "{\"top\":" + top_json(all_steps[i]) + "}";
        js += (i + 1 < all_steps.size()) ? ",\n" : "\n";
    }
    js += "]\n}\n}\n";

    FILE * f = fopen(argv[4], "wb");
    if (!f) { fprintf(stderr, "cannot write %s\n", argv[4]); return 1; }
    fwrite(js.data(), 1, js.size(), f);
    fclose(f);

    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
