"""moe serve's page in headless Chromium, as a person would use it: type a question into the
box, press Enter, read the answer and its latency off the page, save a screenshot.

    scripts/page_check.sh [CKPT] [QUESTION] [PNG]   (starts the server, then runs this)
    /usr/bin/python3 scripts/page_check.py URL QUESTION EXPECTED PNG

Drives Chromium over the DevTools protocol (Debian's chromium and python3-websocket). Exits 1
unless the page shows EXPECTED (the answer `moe solve` gives) for QUESTION."""
import base64, json, os, shutil, subprocess, sys, tempfile, time, urllib.request

import websocket

url, question, expected, png = sys.argv[1:5]
prof = tempfile.mkdtemp(prefix="moe-chromium-")
chrome = subprocess.Popen(["chromium", "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           "--remote-debugging-port=0", f"--user-data-dir={prof}", "--window-size=900,760",
                           "--no-proxy-server", "about:blank"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
try:
    port = None
    for _ in range(200):   # Chromium writes its DevTools port to the profile directory
        p = os.path.join(prof, "DevToolsActivePort")
        if os.path.exists(p) and open(p).read().strip():
            port = int(open(p).read().split()[0])
            break
        time.sleep(0.05)
    if not port:
        sys.exit("page_check: Chromium did not start")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    targets = json.load(opener.open(f"http://127.0.0.1:{port}/json"))
    ws = websocket.create_connection(next(t for t in targets if t["type"] == "page")["webSocketDebuggerUrl"],
                                     timeout=30, http_proxy_host=None)
    seq = [0]

    def cdp(method, **params):
        seq[0] += 1
        ws.send(json.dumps({"id": seq[0], "method": method, "params": params}))
        while True:
            m = json.loads(ws.recv())
            if m.get("id") == seq[0]:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})

    def js(expr):
        return cdp("Runtime.evaluate", expression=expr, returnByValue=True)["result"].get("value")

    def wait(expr, secs=20):
        t0 = time.time()
        while time.time() - t0 < secs:
            v = js(expr)
            if v:
                return v
            time.sleep(0.05)
        return None

    cdp("Page.enable")
    cdp("Page.navigate", url=url)
    if not wait("document.readyState === 'complete' && document.getElementById('examples').rows.length > 0"):
        sys.exit("page_check: the page did not load")
    wait("document.getElementById('model').textContent.length > 0", 5)
    # one question first, so that the shown latency is a warm server's (the first answer of
    # a fresh process pays for its threads and the weights' first touch)
    js("fetch('/v1/solve', {method: 'POST', body: JSON.stringify({questions: ['What is 1 + 1?']})}).then(r => r.json()).then(j => window.__warm = 1)")
    wait("window.__warm === 1", 10)
    js("document.getElementById('q').focus()")
    cdp("Input.insertText", text=question)   # typed, as from a keyboard
    for kind in ("keyDown", "keyUp"):
        cdp("Input.dispatchKeyEvent", type=kind, key="Enter", code="Enter", windowsVirtualKeyCode=13,
            **({"text": "\r"} if kind == "keyDown" else {}))
    ans = wait("(() => { const a = document.getElementById('answer').textContent, m = document.getElementById('ms').textContent;"
               " return a && a !== '\u2026' && (m || a.startsWith('error')) ? [a, m] : null; })()")
    shot = cdp("Page.captureScreenshot", format="png")
    with open(png, "wb") as f:
        f.write(base64.b64decode(shot["data"]))
    ok = ans is not None and ans[0] == expected
    print(("PASS" if ok else "FAIL") + f" page: typed {question!r}, the page shows {ans[0] if ans else None!r}"
          f" ({ans[1] if ans else 'no latency'}); moe solve says {expected!r}; screenshot {png}")
    sys.exit(0 if ok else 1)
finally:
    chrome.kill()
    chrome.wait()
    shutil.rmtree(prof, ignore_errors=True)
