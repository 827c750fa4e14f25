// moe serve: the HTTP server (libmicrohttpd) in front of the continuous-batching engine.
// Connections are handled by libmicrohttpd's polling thread (non-blocking: a slow or stalled
// client holds only its own connection, until its timeout); a POST's texts join one queue,
// a decoding thread moves them into the engine's free slots between forward passes, and a
// request is answered (its connection resumed) when its last text is done.
#pragma once
#include "../data/tokenizer.h"
#include "../model/model.h"
#include "api.h"

typedef struct {
    const char *host;      // address to listen on (default 127.0.0.1)
    int port;              // 0: any free port (Server.port says which)
    int slots;             // sequences decoded together
    int max_pending;       // texts queued or decoding at most; beyond: 503
    int timeout_s;         // idle connections closed after this many seconds
    ApiLimits lim;
    const char *model_name;   // reported by /health and completions
} ServeOpts;

typedef struct Server Server;

int server_start(Server **s, Model *m, const Tokenizer *tk, const ServeOpts *o);
int server_port(const Server *s);
// answers what is in flight with 503, stops the threads, frees everything
void server_stop(Server *s);
