"""moe serve over loopback: good and bad requests, concurrency, a stalled client, overload,
shutdown. Runs with Debian's python3 only. One PASS/FAIL line per check.

The server's answers must be the ones `moe solve` gives one at a time (continuous batching
changes the batch, not the answer). MOE (default ./moe) is the binary; with SERVE_ASAN=1 the
binary is an AddressSanitizer build and a leak at exit fails the run."""
import http.client, json, os, re, shutil, signal, socket, subprocess, sys, tempfile, threading, time

MOE = os.environ.get("MOE", "./moe")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.chdir(ROOT)
fails = 0


def check(name, ok, detail=""):
    global fails
    fails += not ok
    print(("PASS " if ok else "FAIL ") + "serve: " + name + (f" ({detail})" if detail else ""), flush=True)


def start(ckpt, *flags, env=None):
    p = subprocess.Popen([MOE, "serve", "--ckpt", ckpt, "--port", "0", "--threads", "1", *flags],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    line = p.stdout.readline()
    m = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
    if not m:
        p.kill()
        raise SystemExit("FAIL serve: did not start: " + line + p.stderr.read())
    return p, int(m.group(1))


def req(port, method, path, body=None, timeout=30, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    h = dict(headers or {})
    if body is not None:
        h.setdefault("Content-Type", "application/json")
    try:
        c.request(method, path, body=body, headers=h, encode_chunked="Transfer-Encoding" in h)
    except (BrokenPipeError, ConnectionResetError):
        pass   # the server answered before reading the whole body (413): the answer is there
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, r.getheader("Content-Type", ""), data


def post(port, path, obj, **kw):
    s, ct, d = req(port, "POST", path, json.dumps(obj), **kw)
    try:
        return s, json.loads(d)
    except ValueError:
        return s, {"raw": d}


def utf8_clean(b):
    """the server's text of answer bytes b: each byte that starts no valid UTF-8 character is U+FFFD"""
    out, i = [], 0
    while i < len(b):
        c = b[i]
        k = 1 if c < 0x80 else 2 if 0xC2 <= c <= 0xDF else 3 if 0xE0 <= c <= 0xEF else 4 if 0xF0 <= c <= 0xF4 else 0
        try:
            out.append(b[i:i + k].decode("utf-8") if k else None)
        except UnicodeDecodeError:
            out.append(None)
        if out[-1] is None or len(b[i:i + k]) < k:
            out[-1] = "\ufffd"
            k = 1
        i += k
    return "".join(out)


def is_error(s, j, status, words):
    return s == status and isinstance(j.get("error"), dict) and j["error"].get("code") == status and \
        all(w in j["error"].get("message", "") for w in words)


tmp = tempfile.mkdtemp(prefix="moe-serve-")
try:
    ckpt = os.path.join(tmp, "m")
    # a small model trained a little: its answers are text (a fresh one's would be any bytes)
    with open(os.path.join(tmp, "small.json"), "w") as f:
        json.dump({"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                   "intermediate_size": 48, "moe_intermediate_size": 16, "n_routed_experts": 4, "num_experts_per_tok": 2,
                   "max_position_embeddings": 256}, f)
    subprocess.run([MOE, "gen-math", "--n", "400", "--seed", "5", "--out", os.path.join(tmp, "train.txt")], check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run([MOE, "train", "--model", os.path.join(tmp, "small.json"), "--data", os.path.join(tmp, "train.txt"),
                    "--out", ckpt, "--steps", "30", "--lr", "1e-2", "--batch", "16", "--quiet"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    questions = ["What is 32389 + 2?", "Which is smaller: 63460 or 42525?", "What is the hundreds digit of 5821347?",
                 "Solve 5*k - 12 = 3*k + 4 for k.", "Differentiate 3*x**4 - 2*x wrt x.", "Is 97 a prime number?",
                 "Sort -3, 17, 0, 5, -41 in increasing order.", "What is -31 times 2.4?", "Calculate 12 - (4 + 7) + -5.",
                 "Let f(y) = y**2 - 3*y + 1. Calculate f(4).", "Expand (2*t + 1)*(t - 3).", "x" * 100]
    out = subprocess.run([MOE, "solve", "--ckpt", ckpt, "--threads", "1"], input=("\n".join(questions) + "\n").encode(),
                         capture_output=True, check=True).stdout.split(b"\n")
    ref = [utf8_clean(a) for a in out[:len(questions)]]
    check("moe solve answered each question on one line", len(out) == len(questions) + 1 and out[-1] == b"", str(out[-2:]))
    env = dict(os.environ)
    if os.environ.get("SERVE_ASAN"):
        env["ASAN_OPTIONS"] = "detect_leaks=1:abort_on_error=0"
    srv, port = start(ckpt, "--slots", "8", "--max-pending", "64", "--max-items", "16", "--max-body", "8192",
                      "--timeout", "2", env=env)

    s, ct, d = req(port, "GET", "/health")
    h = json.loads(d) if s == 200 else {}
    check("GET /health is 200 JSON with status ok", s == 200 and "json" in ct and h.get("status") == "ok", d[:120])
    s, ct, d = req(port, "GET", "/")
    check("GET / is the page: a question box that POSTs to /v1/solve, examples per module",
          s == 200 and "text/html" in ct and b"/v1/solve" in d and b"<input" in d and b"EXAMPLES" in d, f"{s} {ct}")

    s, j = post(port, "/v1/solve", {"questions": questions[:3]})
    got = [a.get("answer") for a in j.get("answers", [])]
    check("POST /v1/solve: 3 answers, each with its ms, equal to moe solve's",
          s == 200 and got == ref[:3] and all(isinstance(a.get("ms"), (int, float)) for a in j["answers"]), f"{got} vs {ref[:3]}")

    # concurrency: 24 clients at once, 1-3 questions each, every answer as moe solve gives it
    results, barrier = {}, threading.Barrier(24)

    def client(i):
        qs = [questions[(i + k) % len(questions)] for k in range(1 + i % 3)]
        barrier.wait()
        results[i] = (qs, post(port, "/v1/solve", {"questions": qs}))
    ts = [threading.Thread(target=client, args=(i,)) for i in range(24)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    bad = [i for i, (qs, (s, j)) in results.items()
           if s != 200 or [a["answer"] for a in j["answers"]] != [ref[questions.index(q)] for q in qs]]
    check("24 concurrent clients: all 200, every answer equal to moe solve's", len(results) == 24 and not bad, f"bad {bad}")
    s, ct, d = req(port, "GET", "/metrics")
    text = d.decode()
    m = re.search(r"moe_batch_sequences_sum (\d+)\s+moe_batch_sequences_count (\d+)", text)
    seqs, passes = (int(m.group(1)), int(m.group(2))) if m else (0, 1)
    one = re.search(r'moe_batch_sequences_bucket\{le="1"\} (\d+)', text)
    check("continuous batching: forward passes carry several sequences (metrics)",
          m is not None and one is not None and int(one.group(1)) < passes and seqs > passes, f"{seqs} sequences in {passes} passes")
    check("GET /metrics: Prometheus text with requests, errors, latency histogram",
          s == 200 and "text/plain" in ct and 'moe_requests_total{path="/v1/solve",code="2xx"} 25' in text and
          "moe_request_duration_seconds_bucket" in text and "moe_errors_total 0" in text, text[:200])

    s, j = post(port, "/v1/completions", {"model": "x", "prompt": questions[0], "max_tokens": 5, "temperature": 0})
    ch = j.get("choices", [{}])
    check("POST /v1/completions: OpenAI's shape (choices[].text, finish_reason, usage)",
          s == 200 and j.get("object") == "text_completion" and isinstance(ch[0].get("text"), str) and
          ch[0].get("finish_reason") in ("stop", "length") and j["usage"]["completion_tokens"] <= 5 and
          j["usage"]["prompt_tokens"] == len(questions[0]) + 1, json.dumps(j)[:200])
    s, j = post(port, "/v1/completions", {"prompt": ["a", "b"], "max_tokens": 3})
    check("completions: a list of prompts gives one choice each", s == 200 and len(j.get("choices", [])) == 2, str(s))

    # a stalled client (headers sent, the body never) holds only its own connection
    stall = socket.create_connection(("127.0.0.1", port))
    stall.sendall(b"POST /v1/solve HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"questions\"")
    idle = socket.create_connection(("127.0.0.1", port))   # and one that sends nothing at all
    t0 = time.time()
    s, j = post(port, "/v1/solve", {"questions": questions[:2]})
    dt = time.time() - t0
    check("a stalled client does not block the others", s == 200 and dt < 2, f"{dt:.2f} s")
    stall.settimeout(10)
    try:
        closed = stall.recv(4096) == b""
    except (ConnectionResetError, socket.timeout):
        closed = True
    check("the stalled connection is closed after --timeout", closed and time.time() - t0 < 8, f"{time.time() - t0:.1f} s")
    stall.close()
    idle.close()

    # bad input: a JSON error with the right status, nothing else
    cases = [
        ("malformed JSON", lambda: req(port, "POST", "/v1/solve", '{"questions": ['), 400, ["malformed JSON"]),
        ("text after the JSON value", lambda: req(port, "POST", "/v1/solve", '{"questions": ["a"]} x'), 400, ["malformed"]),
        ("empty body", lambda: req(port, "POST", "/v1/solve", ""), 400, ["empty body"]),
        ("a body that is not an object", lambda: req(port, "POST", "/v1/solve", '["a"]'), 400, ["object"]),
        ("questions not a list", lambda: req(port, "POST", "/v1/solve", '{"questions": "a"}'), 400, ["questions"]),
        ("a question that is not a string", lambda: req(port, "POST", "/v1/solve", '{"questions": ["a", 3]}'), 400, ['[1]']),
        ("an empty question", lambda: req(port, "POST", "/v1/solve", '{"questions": [""]}'), 400, ["empty"]),
        ("no questions", lambda: req(port, "POST", "/v1/solve", '{"questions": []}'), 400, ["empty"]),
        ("an unknown key", lambda: req(port, "POST", "/v1/solve", '{"questions": ["a"], "qestions": 1}'), 400, ["qestions"]),
        ("a question longer than the model's positions", lambda: req(port, "POST", "/v1/solve",
                                                                     json.dumps({"questions": ["1+" * 200]})), 400, ["max_position_embeddings"]),
        ("too many questions", lambda: req(port, "POST", "/v1/solve", json.dumps({"questions": ["a"] * 17})), 413, ["at most 16"]),
        ("a body over --max-body (Content-Length)", lambda: req(port, "POST", "/v1/solve", "x" * 100000), 413, ["8192"]),
        ("a chunked body over --max-body", lambda: req(port, "POST", "/v1/solve", iter([b"x" * 5000] * 4),
                                                         headers={"Transfer-Encoding": "chunked"}), 413, ["8192"]),
        ("completions: sampling asked for", lambda: req(port, "POST", "/v1/completions", '{"prompt": "a", "temperature": 0.7}'), 400, ["temperature"]),
        ("completions: max_tokens over 64", lambda: req(port, "POST", "/v1/completions", '{"prompt": "a", "max_tokens": 65}'), 400, ["max_tokens"]),
        ("completions: streaming", lambda: req(port, "POST", "/v1/completions", '{"prompt": "a", "stream": true}'), 400, ["stream"]),
        ("completions: no prompt", lambda: req(port, "POST", "/v1/completions", '{"max_tokens": 3}'), 400, ["prompt"]),
        ("an unknown path", lambda: req(port, "GET", "/v2/nothing"), 404, ["/v2/nothing"]),
        ("POST to an unknown path", lambda: req(port, "POST", "/v1/solv", '{}'), 404, ["/v1/solv"]),
        ("GET on a POST path", lambda: req(port, "GET", "/v1/solve"), 405, ["GET"]),
    ]
    for name, f, status, words in cases:
        s, ct, d = f()
        try:
            j = json.loads(d)
        except ValueError:
            j = {}
        check(f"{name}: {status} with a JSON error", is_error(s, j, status, words) and "json" in ct, f"{s} {d[:150]}")
    s, ct, d = req(port, "GET", "/metrics")
    m = re.search(r"moe_errors_total (\d+)", d.decode())
    check("/metrics counts the errors", m is not None and int(m.group(1)) == len(cases), m.group(0) if m else "none")
    # garbage on the socket: whatever libmicrohttpd makes of it, the server stays up
    import random
    rnd = random.Random(3)
    seeds = [b"POST /v1/solve HTTP/1.1\r\nContent-Length: 12\r\n\r\n{\"questions\"", b"GET / HTTP/1.1\r\n\r\n",
             b"POST /v1/completions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nffffffff\r\n"]
    for k in range(60):
        blob = bytearray(rnd.choice(seeds))
        for _ in range(rnd.randrange(1, 8)):
            blob[rnd.randrange(len(blob))] = rnd.randrange(256)
        if k % 3 == 0:
            blob = bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 300)))
        g = socket.create_connection(("127.0.0.1", port))
        g.settimeout(5)
        try:
            g.sendall(bytes(blob) + b"\r\n\r\n")
            g.shutdown(socket.SHUT_WR)
            g.recv(4096)
        except OSError:
            pass
        g.close()
    s, j = post(port, "/v1/solve", {"questions": questions[:1]})
    check("still answering after the bad requests and 60 garbled ones", s == 200 and j["answers"][0]["answer"] == ref[0])

    srv.send_signal(signal.SIGTERM)
    try:
        rc = srv.wait(timeout=20)
    except subprocess.TimeoutExpired:
        srv.kill()
        rc = "hung"
    err = srv.stderr.read()
    check("SIGTERM stops it, exit 0" + (" and no leak (LeakSanitizer)" if os.environ.get("SERVE_ASAN") else ""),
          rc == 0 and "ERROR: " not in err, f"rc {rc} {err[-400:]}")

    # overload: one slot, at most 4 texts in flight; 6 requests of 4 questions at once
    srv, port = start(ckpt, "--slots", "1", "--max-pending", "4", env=env)
    out, barrier = [], threading.Barrier(6)

    def busy_client():
        barrier.wait()
        out.append(post(port, "/v1/completions", {"prompt": ["What is"] * 4, "max_tokens": 64}))
    ts = [threading.Thread(target=busy_client) for _ in range(6)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    codes = sorted(s for s, _ in out)
    check("too many pending: 503 with a JSON error, the rest answered",
          codes.count(200) >= 1 and codes.count(503) >= 1 and set(codes) <= {200, 503} and
          all(is_error(s, j, 503, ["busy"]) for s, j in out if s == 503), str(codes))
    srv.send_signal(signal.SIGINT)
    rc = srv.wait(timeout=20)
    check("SIGINT stops it, exit 0", rc == 0, f"rc {rc}")

    # the command line
    p = subprocess.run([MOE, "serve", "--ckpt", os.path.join(tmp, "none")], capture_output=True, text=True, timeout=20)
    check("a missing checkpoint: exit 1, one line naming it", p.returncode == 1 and "none" in p.stderr and
          p.stderr.count("\n") == 1, p.stderr.strip())
    p = subprocess.run([MOE, "serve", "--ckpt", ckpt, "--port", "70000"], capture_output=True, text=True, timeout=20)
    check("a bad --port: exit 1, one line", p.returncode == 1 and "--port" in p.stderr, p.stderr.strip())
    p = subprocess.run([MOE, "serve", "--ckpt", ckpt, "--host", "example"], capture_output=True, text=True, timeout=20)
    check("a bad --host: exit 1, one line", p.returncode == 1 and "--host" in p.stderr, p.stderr.strip())
    srv, port = start(ckpt)
    p = subprocess.run([MOE, "serve", "--ckpt", ckpt, "--port", str(port)], capture_output=True, text=True, timeout=20)
    check("a port in use: exit 1, one line naming it", p.returncode == 1 and str(port) in p.stderr, p.stderr.strip())
    srv.send_signal(signal.SIGTERM)
    srv.wait(timeout=20)
finally:
    shutil.rmtree(tmp, ignore_errors=True)
sys.exit(1 if fails else 0)
