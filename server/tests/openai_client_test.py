#!/usr/bin/env python3
"""`strata serve` against the official OpenAI Python client.

    python openai_client_test.py --strata target/release/strata --model models/gemma-3-270m-q4_k_m.gguf

Run by `cargo xtask test-serve` (and as a step of `cargo xtask test`) in the virtual environment
`target/openai-venv`, which holds the pinned `openai` of requirements.txt.

The script starts the server itself on 127.0.0.1 with an ephemeral port (`--port 0`; the bound
port is read from the stderr line `strata serve: listening on http://HOST:PORT ...`), waits for
`GET /health`, runs the tests and always stops the server, also on failure or Ctrl-C. Two
servers are used: one with `--parallel 8` for everything, and one with `--parallel 1` whose
greedy completion must equal `strata generate` token for token.

Every request has a 120 s client timeout and no retries; every polling loop has a count and a
deadline; a watchdog ends the whole run (servers included) after `--time-limit` seconds.
Prints one line per test and closes with `openai_client_test: N passed, N failed`.
"""

import argparse
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import traceback

import openai

API_KEY = "test-key"
CTX = 1024
TIMEOUT = 120.0
# A prompt the 270M model continues for a long time without an end-of-generation token.
LONG_PROMPT = "Once upon a time, in a small village by the sea,"
GREEDY_PROMPT = "The capital of France is"


class Server:
    """A `strata serve` child process on 127.0.0.1 with an ephemeral port."""

    def __init__(self, strata, model, parallel, threads):
        self.args = [
            strata,
            "serve",
            model,
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--parallel",
            str(parallel),
            "--ctx",
            str(CTX),
            "--api-key",
            API_KEY,
            "--threads",
            str(threads),
        ]
        self.proc = None
        self.port = None
        self.log = []
        self._listening = threading.Event()

    def start(self, load_timeout=180.0):
        print("$ " + " ".join(self.args), flush=True)
        self.proc = subprocess.Popen(
            self.args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
        )
        threading.Thread(target=self._read_stderr, daemon=True).start()
        deadline = time.monotonic() + load_timeout
        while not self._listening.wait(0.2):
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"strata serve exited with {self.proc.returncode} before listening:\n"
                    + self.tail()
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"strata serve did not listen within {load_timeout} s:\n" + self.tail())
        # /health answers once the model is loaded; poll it, bounded in count and time.
        for _ in range(600):
            try:
                status, _, body = raw_request(self.port, "GET", "/health", auth=False, timeout=5)
                if status == 200:
                    assert json.loads(body) == {"status": "ok"}, body
                    return self
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        raise RuntimeError("GET /health never answered 200:\n" + self.tail())

    def _read_stderr(self):
        pattern = re.compile(r"strata serve: listening on http://([^\s:/]+):(\d+)")
        for line in self.proc.stderr:
            self.log.append(line.rstrip("\n"))
            if len(self.log) > 2000:
                del self.log[:1000]
            m = pattern.search(line)
            if m and self.port is None:
                self.port = int(m.group(2))
                self._listening.set()

    def tail(self, n=40):
        return "\n".join("    " + line for line in self.log[-n:])

    def client(self, api_key=API_KEY):
        return openai.OpenAI(
            base_url=f"http://127.0.0.1:{self.port}/v1",
            api_key=api_key,
            timeout=TIMEOUT,
            max_retries=0,
        )

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=15)


SERVERS = []


def stop_all():
    for s in SERVERS:
        try:
            s.stop()
        except Exception:  # noqa: BLE001 - best effort on the way out
            pass


def raw_request(port, method, path, body=None, auth=True, key=API_KEY, timeout=TIMEOUT, headers=None):
    """One HTTP request with http.client; returns (status, headers dict, body text)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        h = {"Content-Type": "application/json"}
        if auth:
            h["Authorization"] = f"Bearer {key}"
        h.update(headers or {})
        if isinstance(body, str):
            body = body.encode()
        conn.request(method, path, body=body, headers=h)
        resp = conn.getresponse()
        data = resp.read().decode("utf-8", "replace")
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


def check_error_json(body, status, want_type=None):
    """The OpenAI error object: {"error": {"message", "type", "param", "code"}}."""
    obj = json.loads(body)
    assert isinstance(obj, dict) and isinstance(obj.get("error"), dict), f"{status}: {body}"
    err = obj["error"]
    assert isinstance(err.get("message"), str) and err["message"], body
    assert isinstance(err.get("type"), str) and err["type"], body
    assert "param" in err and "code" in err, body
    if want_type is not None:
        assert err["type"] == want_type, body
    return err


def check_usage(usage, max_tokens):
    assert usage is not None, "no usage"
    assert usage.prompt_tokens > 0, usage
    assert 0 < usage.completion_tokens <= max_tokens, usage
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens, usage


def check_finish(finish_reason, usage, max_tokens):
    assert finish_reason in ("stop", "length"), finish_reason
    if usage.completion_tokens < max_tokens:
        assert finish_reason == "stop", (finish_reason, usage)
    if finish_reason == "length":
        assert usage.completion_tokens == max_tokens, (finish_reason, usage)


def metrics(port):
    """Sums of the samples of each metric name in GET /metrics."""
    status, headers, body = raw_request(port, "GET", "/metrics", timeout=30)
    assert status == 200, (status, body)
    out = {}
    for line in body.splitlines():
        if not line or line.startswith("#"):
            continue
        name_labels, _, value = line.rpartition(" ")
        name = name_labels.split("{", 1)[0]
        out[name] = out.get(name, 0.0) + float(value)
    return out


class Tests:
    """The tests; each method named test_* runs once, in definition order."""

    def __init__(self, main, single, strata, model):
        self.main = main  # --parallel 8
        self.single = single  # --parallel 1, started lazily for the greedy test
        self.strata = strata
        self.model_path = model
        self.c = main.client()
        self.model = None

    def assert_alive(self):
        """A normal request still succeeds (after each error case)."""
        r = self.c.completions.create(model=self.model, prompt="Hello", max_tokens=2, temperature=0)
        assert r.choices and r.usage.completion_tokens >= 1, r

    def test_health_and_models(self):
        status, _, body = raw_request(self.main.port, "GET", "/health", auth=False)
        assert status == 200 and json.loads(body) == {"status": "ok"}, (status, body)
        models = self.c.models.list().data
        assert len(models) >= 1 and models[0].id, models
        self.model = models[0].id

    def test_completion(self):
        r = self.c.completions.create(model=self.model, prompt=GREEDY_PROMPT, max_tokens=8, temperature=0)
        assert r.object == "text_completion", r.object
        assert r.id.startswith("cmpl-"), r.id
        assert isinstance(r.created, int) and r.created > 1_600_000_000, r.created
        assert r.model, r
        assert len(r.choices) == 1 and r.choices[0].index == 0, r.choices
        assert isinstance(r.choices[0].text, str) and r.choices[0].text, r.choices[0]
        check_usage(r.usage, 8)
        # The 270M model goes on about Paris for far longer than 8 tokens.
        assert r.choices[0].finish_reason == "length", r.choices[0]
        assert r.usage.completion_tokens == 8, r.usage

    def test_chat(self):
        r = self.c.chat.completions.create(
            model=self.model,
            messages=[
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": "Write a long poem about the sea."},
            ],
            max_tokens=8,
            temperature=0,
        )
        assert r.object == "chat.completion", r.object
        assert r.id.startswith("chatcmpl-"), r.id
        assert isinstance(r.created, int) and r.model, r
        assert len(r.choices) == 1 and r.choices[0].index == 0, r.choices
        msg = r.choices[0].message
        assert msg.role == "assistant" and isinstance(msg.content, str) and msg.content, msg
        check_usage(r.usage, 8)
        check_finish(r.choices[0].finish_reason, r.usage, 8)
        assert r.choices[0].finish_reason == "length", r.choices[0]

    def test_chat_stream_equals_whole(self):
        kw = dict(
            model=self.model,
            messages=[{"role": "user", "content": "Tell me a story about a dragon."}],
            max_tokens=16,
            temperature=0,
        )
        whole = self.c.chat.completions.create(**kw)
        chunks = list(self.c.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kw))
        assert len(chunks) >= 3, chunks
        ids = {ch.id for ch in chunks}
        assert len(ids) == 1 and next(iter(ids)).startswith("chatcmpl-"), ids
        assert all(ch.object == "chat.completion.chunk" for ch in chunks), chunks
        first = chunks[0]
        assert first.choices and first.choices[0].delta.role == "assistant", first
        # The final chunk carries the usage and no choices; the others no usage.
        last = chunks[-1]
        assert last.choices == [], last
        check_usage(last.usage, 16)
        assert all(ch.usage is None for ch in chunks[:-1]), chunks
        finishes = [ch.choices[0].finish_reason for ch in chunks[:-1] if ch.choices[0].finish_reason]
        assert len(finishes) == 1 and chunks[-2].choices[0].finish_reason, chunks[-3:]
        check_finish(finishes[0], last.usage, 16)
        text = "".join(ch.choices[0].delta.content or "" for ch in chunks[:-1])
        assert text == whole.choices[0].message.content, (text, whole.choices[0].message.content)
        assert finishes[0] == whole.choices[0].finish_reason, (finishes, whole.choices[0])
        assert last.usage.prompt_tokens == whole.usage.prompt_tokens, (last.usage, whole.usage)
        assert last.usage.completion_tokens == whole.usage.completion_tokens, (last.usage, whole.usage)

    def test_completion_stream_equals_whole(self):
        kw = dict(model=self.model, prompt=LONG_PROMPT, max_tokens=16, temperature=0)
        whole = self.c.completions.create(**kw)
        check_usage(whole.usage, 16)
        chunks = list(self.c.completions.create(stream=True, stream_options={"include_usage": True}, **kw))
        assert len(chunks) >= 2, chunks
        assert all(ch.object == "text_completion" for ch in chunks), chunks
        assert len({ch.id for ch in chunks}) == 1 and chunks[0].id.startswith("cmpl-"), chunks
        last = chunks[-1]
        assert last.choices == [], last
        check_usage(last.usage, 16)
        assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (
            whole.usage.prompt_tokens,
            whole.usage.completion_tokens,
        ), (last.usage, whole.usage)
        body = chunks[:-1]
        finishes = [ch.choices[0].finish_reason for ch in body if ch.choices[0].finish_reason]
        assert finishes == [whole.choices[0].finish_reason] == ["length"], (finishes, whole.choices[0])
        text = "".join(ch.choices[0].text for ch in body)
        assert text == whole.choices[0].text, (text, whole.choices[0].text)

    def test_stream_without_usage(self):
        chunks = list(
            self.c.completions.create(model=self.model, prompt=LONG_PROMPT, max_tokens=4, temperature=0, stream=True)
        )
        assert chunks and all(ch.choices for ch in chunks), chunks
        assert all(ch.usage is None for ch in chunks), chunks
        assert chunks[-1].choices[0].finish_reason == "length", chunks[-1]

    def test_eight_concurrent_streams(self):
        n = 8
        results = [None] * n
        errors = [None] * n
        topics = ["the sea", "a dragon", "a robot", "the moon", "a forest", "a city", "a river", "a cat"]

        def worker(i):
            try:
                client = self.main.client()
                stream = client.chat.completions.create(
                    model=self.model,
                    messages=[{"role": "user", "content": f"Write a long story about {topics[i]}."}],
                    max_tokens=16,
                    temperature=0.8,
                    seed=i,
                    stream=True,
                    stream_options={"include_usage": True},
                )
                chunks = []
                for ch in stream:  # ends at `data: [DONE]`
                    chunks.append(ch)
                    if len(chunks) > 200:
                        raise AssertionError("too many chunks")
                results[i] = chunks
            except BaseException as e:  # noqa: BLE001 - reported below
                errors[i] = "".join(traceback.format_exception(e))

        threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(n)]
        start = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=max(1.0, TIMEOUT + 10 - (time.monotonic() - start)))
        assert not any(t.is_alive() for t in threads), "a streaming client did not finish in time"
        for i in range(n):
            assert errors[i] is None, f"client {i}: {errors[i]}"
            chunks = results[i]
            assert chunks and chunks[0].choices[0].delta.role == "assistant", chunks[:1]
            assert all(ch.object == "chat.completion.chunk" for ch in chunks), chunks
            assert len({ch.id for ch in chunks}) == 1, chunks
            assert chunks[-1].choices == [], chunks[-1]
            check_usage(chunks[-1].usage, 16)
            finishes = [ch.choices[0].finish_reason for ch in chunks[:-1] if ch.choices[0].finish_reason]
            assert len(finishes) == 1, finishes
            check_finish(finishes[0], chunks[-1].usage, 16)
            text = "".join(ch.choices[0].delta.content or "" for ch in chunks[:-1])
            assert text.strip(), f"client {i}: empty text"
        print(f"    8 streams of 16 tokens in {time.monotonic() - start:.1f} s", flush=True)

    def test_malformed_json(self):
        for path in ("/v1/chat/completions", "/v1/completions"):
            status, _, body = raw_request(self.main.port, "POST", path, body='{"model": ')
            assert status == 400, (path, status, body)
            check_error_json(body, status, "invalid_request_error")
        self.assert_alive()

    def test_wrong_types(self):
        cases = [
            ("/v1/completions", {"prompt": "Hi", "max_tokens": "ten"}),
            ("/v1/chat/completions", {"messages": 5, "max_tokens": 4}),
            ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": "ten"}),
            ("/v1/completions", {"prompt": "Hi", "max_tokens": 4, "temperature": "hot"}),
        ]
        for path, body in cases:
            status, _, text = raw_request(self.main.port, "POST", path, body=json.dumps(body))
            assert status == 400, (path, body, status, text)
            check_error_json(text, status, "invalid_request_error")
        self.assert_alive()

    def test_negative_max_tokens(self):
        try:
            self.c.completions.create(model=self.model, prompt="Hi", max_tokens=-1)
        except openai.BadRequestError as e:
            assert e.status_code == 400, e
            assert e.body and e.body.get("type") == "invalid_request_error", e.body
        else:
            raise AssertionError("max_tokens=-1 was accepted")
        try:
            self.c.chat.completions.create(
                model=self.model, messages=[{"role": "user", "content": "Hi"}], max_tokens=-5
            )
        except openai.BadRequestError as e:
            assert e.status_code == 400, e
        else:
            raise AssertionError("chat max_tokens=-5 was accepted")
        self.assert_alive()

    def test_prompt_over_the_context(self):
        prompt = "hello world " * 1200  # ~2400 tokens, over --ctx 1024
        for call in (
            lambda: self.c.completions.create(model=self.model, prompt=prompt, max_tokens=4),
            lambda: self.c.chat.completions.create(
                model=self.model, messages=[{"role": "user", "content": prompt}], max_tokens=4
            ),
        ):
            try:
                call()
            except openai.APIStatusError as e:
                assert e.status_code in (400, 413), e
                err = e.body if isinstance(e.body, dict) else {}
                assert str(CTX) in (err.get("message") or ""), e.body
            else:
                raise AssertionError("a prompt over the context was accepted")
        self.assert_alive()

    def test_wrong_api_key(self):
        bad = self.main.client(api_key="wrong-key")
        try:
            bad.completions.create(model=self.model, prompt="Hi", max_tokens=2)
        except openai.AuthenticationError as e:
            assert e.status_code == 401, e
        else:
            raise AssertionError("a wrong API key was accepted")
        for path in ("/v1/models", "/metrics"):
            status, _, body = raw_request(self.main.port, "GET", path, auth=False)
            assert status == 401, (path, status, body)
            check_error_json(body, status, "authentication_error")
        status, _, body = raw_request(self.main.port, "GET", "/v1/models", key="wrong-key")
        assert status == 401, (status, body)
        self.assert_alive()

    def test_unknown_route(self):
        status, _, body = raw_request(self.main.port, "GET", "/v1/nope")
        assert status == 404, (status, body)
        check_error_json(body, status)
        try:
            self.c.post("/does/not/exist", cast_to=object, body={})
        except openai.NotFoundError as e:
            assert e.status_code == 404, e
        else:
            raise AssertionError("an unknown route answered")
        self.assert_alive()

    def test_dropped_client_frees_its_slot(self):
        before = metrics(self.main.port).get("strata_cancelled_total", 0.0)
        conn = http.client.HTTPConnection("127.0.0.1", self.main.port, timeout=TIMEOUT)
        body = json.dumps(
            # Long enough (~900 tokens) that it cannot finish by itself within the poll below.
            {"prompt": LONG_PROMPT, "max_tokens": 900, "temperature": 0, "stream": True}
        )
        conn.request(
            "POST",
            "/v1/completions",
            body=body,
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {API_KEY}"},
        )
        resp = conn.getresponse()
        assert resp.status == 200, resp.status
        assert resp.getheader("Content-Type", "").startswith("text/event-stream"), resp.getheaders()
        events = 0
        for _ in range(1000):
            line = resp.readline()
            assert line, "stream ended early"
            if line.startswith(b"data: "):
                assert line.strip() != b"data: [DONE]", "stream finished before the drop"
                json.loads(line[6:])
                events += 1
                if events == 3:
                    break
        assert events == 3, events
        active = metrics(self.main.port).get("strata_requests_active", -1)
        assert active >= 1, active
        # Drop the connection mid-stream.
        resp.close()
        conn.close()
        deadline = time.monotonic() + 30
        m = {}
        for _ in range(300):
            m = metrics(self.main.port)
            if m.get("strata_requests_active", -1) == 0 and m.get("strata_cancelled_total", 0) >= max(1, before + 1):
                break
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert m.get("strata_requests_active") == 0, m
        assert m.get("strata_cancelled_total", 0) >= max(1, before + 1), (before, m)
        self.assert_alive()

    def test_greedy_equals_generate(self):
        # A server of one slot decodes exactly as `strata generate` does.
        if self.single.proc is None:
            self.single.start()
        c = self.single.client()
        prompts = [GREEDY_PROMPT, LONG_PROMPT]
        for prompt in prompts:
            r = c.completions.create(model=self.model, prompt=prompt, max_tokens=24, temperature=0)
            out = subprocess.run(
                [self.strata, "generate", self.model_path, "-p", prompt, "-n", "24", "--temp", "0", "--threads", "2"],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=TIMEOUT,
            )
            assert out.returncode == 0, out.stderr.decode(errors="replace")
            stdout = out.stdout.decode()
            # `strata generate` prints the generated text, then one newline.
            assert stdout.endswith("\n"), repr(stdout)
            expected = stdout[:-1]
            assert r.choices[0].text == expected, f"server {r.choices[0].text!r} != generate {expected!r}"
            assert r.usage.completion_tokens == 24 or r.choices[0].finish_reason == "stop", r


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--strata", required=True, help="the strata binary")
    ap.add_argument("--model", required=True, help="a GGUF model (Gemma 3 270M)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--time-limit", type=float, default=600.0, help="seconds for the whole run")
    ap.add_argument("-k", default=None, help="run only tests whose name contains this")
    a = ap.parse_args()

    def watchdog():
        print(f"openai_client_test: time limit of {a.time_limit} s reached; stopping", flush=True)
        stop_all()
        os._exit(2)

    timer = threading.Timer(a.time_limit, watchdog)
    timer.daemon = True
    timer.start()

    main_server = Server(a.strata, a.model, 8, a.threads)
    single = Server(a.strata, a.model, 1, a.threads)
    SERVERS.extend([main_server, single])
    passed, failed = 0, []
    start = time.monotonic()
    try:
        main_server.start()
        tests = Tests(main_server, single, a.strata, a.model)
        names = [n for n in Tests.__dict__ if n.startswith("test_")]
        # Health/models first: it fills in the model id the others use.
        for name in names:
            if a.k and a.k not in name and name != "test_health_and_models":
                continue
            t = time.monotonic()
            try:
                getattr(tests, name)()
            except Exception:  # noqa: BLE001 - every failure is reported, the rest still run
                failed.append(name)
                print(f"FAIL {name} ({time.monotonic() - t:.1f} s)", flush=True)
                traceback.print_exc()
                for s in (main_server, single):
                    if s.proc is not None:
                        print(f"  server (--parallel {s.args[s.args.index('--parallel') + 1]}) stderr tail:")
                        print(s.tail(15), flush=True)
            else:
                passed += 1
                print(f"ok   {name} ({time.monotonic() - t:.1f} s)", flush=True)
            for s in (main_server, single):
                if s.proc is not None and s.proc.poll() is not None:
                    raise RuntimeError(f"the server exited with {s.proc.returncode}:\n{s.tail()}")
    except BaseException:
        traceback.print_exc()
        failed.append("(setup)")
    finally:
        stop_all()
        timer.cancel()
    print(f"({time.monotonic() - start:.1f} s)")
    print(f"openai_client_test: {passed} passed, {len(failed)} failed")
    if failed:
        print("failed: " + ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
