"""Runs the Strata wasm module under wasmtime (the `wasmtime` package from PyPI).

The module's imports `strata_host.host_len` / `strata_host.host_read` are served from the
model file with positioned reads straight into the module's memory.

    python strata_host.py run   --module M.wasm --model F.gguf -p TEXT [-n 64] [--budget all]
                                [--ctx 0] [--temp 0] [--top-k 40] [--top-p 0.95] [--min-p 0.05]
                                [--seed 24301]
    python strata_host.py info  --module M.wasm --model F.gguf [--budget all]
    python strata_host.py serve --module M.wasm --model F.gguf

`run` streams the generated text to stdout and a stats line to stderr. `serve` answers
requests on stdin, one JSON object per line, for `cargo xtask wasm verify`:
    {"cmd": "open", "budget": "all", "n_ctx": 0, "model": "other.gguf" (optional)}
    {"cmd": "info"} | {"cmd": "stats"} | {"cmd": "reset"}
    {"cmd": "tokenize", "text": "...", "flags": 1}
    {"cmd": "eval", "ids": [...], "all": true}
Each answer is one JSON line (`{"ok": true, "bytes": B, ...}` or `{"ok": false, "code": C,
"error": "..."}`) followed by B bytes of payload (token ids as u32 LE, logits as f32 LE, or
JSON text).
"""

import argparse
import ctypes
import json
import os
import struct
import sys
import time

import wasmtime


class ModuleError(Exception):
    """A call into the module returned an error code."""

    def __init__(self, code, message):
        super().__init__(f"{message} (code {code})")
        self.code = code
        self.message = message


class Strata:
    """One instance of the module over one model file."""

    def __init__(self, module_path, model_path):
        config = wasmtime.Config()
        config.wasm_memory64 = True
        self.engine = wasmtime.Engine(config)
        self.store = wasmtime.Store(self.engine)
        module = wasmtime.Module.from_file(self.engine, module_path)
        self.fd = None
        self.set_model(model_path)
        self.memory = None
        linker = wasmtime.Linker(self.engine)
        i64 = wasmtime.ValType.i64()
        i32 = wasmtime.ValType.i32()
        # Pointers are i64 in a wasm64 module and i32 in a wasm32 one.
        ptr = i64 if any(
            isinstance(e.type, wasmtime.MemoryType) and e.type.is_64 for e in module.exports
        ) else i32
        linker.define_func(
            "strata_host", "host_len", wasmtime.FuncType([], [i64]), lambda: self.file_len
        )
        linker.define_func(
            "strata_host",
            "host_read",
            wasmtime.FuncType([i64, i64, ptr], [i32]),
            self._host_read,
        )
        self.instance = linker.instantiate(self.store, module)
        ex = self.instance.exports(self.store)
        self.memory = ex["memory"]
        self.f = {name: ex[name] for name in [
            "strata_alloc", "strata_free", "strata_out_ptr", "strata_out_len",
            "strata_error_ptr", "strata_error_len", "strata_open", "strata_close",
            "strata_info", "strata_stats", "strata_n_vocab", "strata_tokenize",
            "strata_detokenize", "strata_reset", "strata_eval", "strata_generate_start",
            "strata_generate_next", "strata_last_token",
        ]}

    # -- host side -------------------------------------------------------------------------

    def set_model(self, model_path):
        """Serves `model_path` from now on (call `open` again to use it)."""
        if self.fd is not None:
            os.close(self.fd)
        self.fd = os.open(model_path, os.O_RDONLY)
        self.file_len = os.fstat(self.fd).st_size
        self.bytes_read = 0

    def _view(self, addr, length):
        """A writable memoryview of `length` bytes of the module's memory at `addr`."""
        base = ctypes.addressof(self.memory.data_ptr(self.store).contents)
        size = self.memory.data_len(self.store)
        if addr + length > size:
            raise ValueError(f"{addr}+{length} past the memory's {size} bytes")
        return memoryview((ctypes.c_ubyte * length).from_address(base + addr)).cast("B")

    def _host_read(self, offset, length, dst):
        try:
            if offset + length > self.file_len:
                return 2
            view = self._view(dst, length)
            done = 0
            while done < length:
                n = os.preadv(self.fd, [view[done:]], offset + done)
                if n <= 0:
                    return 3
                done += n
            self.bytes_read += length
            return 0
        except Exception:  # an error code, never an exception through the module
            return 1

    # -- calls -----------------------------------------------------------------------------

    def _call(self, name, *args):
        return self.f[name](self.store, *args)

    def _check(self, rc):
        if rc < 0:
            ptr = self._call("strata_error_ptr")
            n = self._call("strata_error_len")
            msg = bytes(self.memory.read(self.store, ptr, ptr + n)).decode("utf-8", "replace")
            raise ModuleError(rc, msg)
        return rc

    def out(self):
        ptr = self._call("strata_out_ptr")
        n = self._call("strata_out_len")
        return bytes(self._view(ptr, n)) if n else b""

    def _with_input(self, data, fn):
        n = len(data)
        ptr = self._call("strata_alloc", n)
        if ptr == 0:
            raise ModuleError(-5, f"strata_alloc({n}) failed")
        try:
            if n:
                self._view(ptr, n)[:] = data
            return fn(ptr, n)
        finally:
            self._call("strata_free", ptr, n)

    def open(self, budget="all", n_ctx=0):
        b = budget.encode()
        self._with_input(b, lambda p, n: self._check(self._call("strata_open", p, n, n_ctx)))

    def info(self):
        self._check(self._call("strata_info"))
        return json.loads(self.out())

    def stats(self):
        self._check(self._call("strata_stats"))
        return json.loads(self.out())

    def reset(self):
        self._check(self._call("strata_reset"))

    def tokenize(self, text, flags=1):
        data = text.encode()
        count = self._with_input(
            data, lambda p, n: self._check(self._call("strata_tokenize", p, n, flags))
        )
        return list(struct.unpack(f"<{count}I", self.out()))

    def eval_raw(self, ids, all_rows):
        data = struct.pack(f"<{len(ids)}I", *ids)
        rows = self._with_input(
            data,
            lambda p, n: self._check(self._call("strata_eval", p, len(ids), 1 if all_rows else 0)),
        )
        return rows, self.out()

    def generate(self, prompt, max_tokens, temp, top_k, top_p, min_p, seed):
        """Yields text pieces; returns after the last."""
        data = prompt.encode()
        n_prompt = self._with_input(data, lambda p, n: self._check(self._call(
            "strata_generate_start", p, n, max_tokens, temp, top_k, top_p, min_p, seed)))
        self.n_prompt = n_prompt
        while True:
            more = self._check(self._call("strata_generate_next"))
            yield self.out().decode("utf-8")
            if more == 0:
                return


def cmd_run(a):
    t0 = time.perf_counter()
    s = Strata(a.module, a.model)
    t1 = time.perf_counter()
    s.open(a.budget, a.ctx)
    t2 = time.perf_counter()
    n = 0
    t_first = None
    for piece in s.generate(a.prompt, a.n, a.temp, a.top_k, a.top_p, a.min_p, a.seed):
        if t_first is None:
            t_first = time.perf_counter()
        sys.stdout.write(piece)
        sys.stdout.flush()
        n += 1
    t3 = time.perf_counter()
    sys.stdout.write("\n")
    n_gen = max(n - 1, 0)  # the last call ends the generation without a token
    st = s.stats()
    decode = (n_gen - 1) / (t3 - t_first) if n_gen > 1 and t_first else 0.0
    prefill = s.n_prompt / (t_first - t2) if t_first else 0.0
    sys.stderr.write(
        f"wasm: module {t1 - t0:.2f} s, open {t2 - t1:.2f} s; prompt {s.n_prompt} tokens, "
        f"{n_gen} generated; prefill+first {prefill:.2f} tok/s, decode {decode:.2f} tok/s; "
        f"cache {st['hits']} hits, {st['sync_loads']} loads, {st['bytes_read'] / 1e6:.1f} MB read, "
        f"peak {st['peak_resident_bytes'] / 2**20:.1f} MiB of {st['budget_bytes'] / 2**20:.1f} MiB\n"
    )


def cmd_info(a):
    s = Strata(a.module, a.model)
    s.open(a.budget, a.ctx)
    print(json.dumps(s.info(), indent=2))


def cmd_serve(a):
    s = Strata(a.module, a.model)
    out = sys.stdout.buffer
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        try:
            cmd = req["cmd"]
            head = {"ok": True}
            payload = b""
            if cmd == "open":
                if "model" in req:
                    s._call("strata_close")
                    s.set_model(req["model"])
                s.open(req.get("budget", "all"), req.get("n_ctx", 0))
            elif cmd == "info":
                payload = json.dumps(s.info()).encode()
            elif cmd == "stats":
                payload = json.dumps(s.stats()).encode()
            elif cmd == "reset":
                s.reset()
            elif cmd == "tokenize":
                ids = s.tokenize(req["text"], req.get("flags", 1))
                payload = struct.pack(f"<{len(ids)}I", *ids)
            elif cmd == "eval":
                rows, payload = s.eval_raw(req["ids"], req.get("all", False))
                head["rows"] = rows
            else:
                raise ValueError(f"unknown command {cmd!r}")
        except ModuleError as e:
            head, payload = {"ok": False, "code": e.code, "error": e.message}, b""
        head["bytes"] = len(payload)
        out.write((json.dumps(head) + "\n").encode())
        out.write(payload)
        out.flush()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ["run", "info", "serve"]:
        c = sub.add_parser(name)
        c.add_argument("--module", required=True)
        c.add_argument("--model", required=True)
        c.add_argument("--budget", default="all")
        c.add_argument("--ctx", type=int, default=0)
        if name == "run":
            c.add_argument("-p", "--prompt", required=True)
            c.add_argument("-n", type=int, default=64)
            c.add_argument("--temp", type=float, default=0.0)
            c.add_argument("--top-k", type=int, default=40)
            c.add_argument("--top-p", type=float, default=0.95)
            c.add_argument("--min-p", type=float, default=0.05)
            c.add_argument("--seed", type=int, default=0x5EED)
    a = p.parse_args()
    try:
        {"run": cmd_run, "info": cmd_info, "serve": cmd_serve}[a.cmd](a)
    except ModuleError as e:
        sys.stderr.write(f"error: {e}\n")
        sys.exit(1)


if __name__ == "__main__":
    main()
