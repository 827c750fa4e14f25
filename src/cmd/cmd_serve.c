#include <signal.h>
#include <stdio.h>
#include <string.h>
#include "../base/base.h"
#include "../io/checkpoint.h"
#include "../serve/server.h"
#include "cmd.h"

static const char *HELP =
    "usage: moe serve [--ckpt DIR] [--port P] [--host H] [options]\n"
    "  an HTTP server answering with the checkpoint's model (default: the shipped solver, models/solver)\n"
    "    GET  /                 a page: ask a question, see the answer and its latency\n"
    "    POST /v1/solve         {\"questions\": [\"...\", ...]} -> {\"answers\": [{\"answer\": \"...\", \"ms\": 1.2}, ...]}\n"
    "    POST /v1/completions   OpenAI's completions shape (prompt, max_tokens <= 64; greedy: temperature 0)\n"
    "    GET  /health           GET /metrics (Prometheus text)\n"
    "  --port P          TCP port (default 8080; 0: any free one, printed)\n"
    "  --host H          IPv4 address to listen on (default 127.0.0.1)\n"
    "  --slots N         sequences decoded together (default 64); requests join and leave between steps\n"
    "  --max-pending N   questions queued or decoding at most (default 1024); more: 503\n"
    "  --max-body BYTES  request body limit (default 1048576); larger: 413\n"
    "  --max-items N     questions or prompts in one request (default 256); more: 413\n"
    "  --timeout SEC     an idle connection is closed after SEC seconds (default 15)\n"
    "  --threads N       threads for the model (default OMP_NUM_THREADS or all cores)\n"
    "  SIGINT or SIGTERM stops it: what is in flight is answered 503\n";

int cmd_serve(int argc, char **argv) {
    Args a;
    args_init(&a, argc, argv, "serve");
    if (args_bool(&a, "--help")) { fputs(HELP, stdout); return 0; }
    const char *ckpt = cmd_ckpt_or_solver(&a);
    ServeOpts o = {.lim = {0}};
    o.host = args_str(&a, "--host", "127.0.0.1");
    int max_body;
    if (!ckpt || !o.host || cmd_threads(&a) || args_int(&a, "--port", 8080, &o.port) || args_int(&a, "--slots", 64, &o.slots) ||
        args_int(&a, "--max-pending", 1024, &o.max_pending) || args_int(&a, "--max-body", 1 << 20, &max_body) ||
        args_int(&a, "--max-items", 256, &o.lim.max_items) || args_int(&a, "--timeout", 15, &o.timeout_s) || args_finish(&a))
        return cmd_fail("serve");
    if (o.port < 0 || o.port > 65535) { moe_seterr("--port must be 0..65535, got %d", o.port); return cmd_fail("serve"); }
    if (o.slots < 1 || o.slots > 4096) { moe_seterr("--slots must be 1..4096, got %d", o.slots); return cmd_fail("serve"); }
    if (o.max_pending < 1) { moe_seterr("--max-pending must be positive, got %d", o.max_pending); return cmd_fail("serve"); }
    if (max_body < 2) { moe_seterr("--max-body must be at least 2, got %d", max_body); return cmd_fail("serve"); }
    if (o.lim.max_items < 1) { moe_seterr("--max-items must be positive, got %d", o.lim.max_items); return cmd_fail("serve"); }
    if (o.timeout_s < 1) { moe_seterr("--timeout must be positive, got %d", o.timeout_s); return cmd_fail("serve"); }
    o.lim.max_body = max_body;
    o.lim.max_text = 4096;
    o.model_name = ckpt;
    mem_keep_freed();   // each answer allocates its cache and activations afresh
    Model m;
    if (ckpt_load_model(ckpt, &m, false)) return cmd_fail("serve");
    infer_weights_bf16(&m);
    Tokenizer tk;
    if (tokenizer_for_dir(&tk, ckpt, m.cfg.vocab_size)) { model_free(&m); return cmd_fail("serve"); }
    // the server's threads inherit the blocked signals; this thread waits for them
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);
    Server *s;
    if (server_start(&s, &m, &tk, &o)) { tokenizer_free(&tk); model_free(&m); return cmd_fail("serve"); }
    printf("moe serve: http://%s:%d/ (%s, %.2fM params, %d slots)\n", o.host, server_port(s), ckpt, m.n_params / 1e6, o.slots);
    fflush(stdout);
    int sig;
    sigwait(&sigs, &sig);
    fprintf(stderr, "moe serve: %s, stopping\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
    server_stop(s);
    tokenizer_free(&tk);
    infer_weights_bf16_off();
    model_free(&m);
    return 0;
}
