#include <stdlib.h>
#include <string.h>
#include <cjson/cJSON.h>
#include "../base/base.h"
#include "../base/fileio.h"
#include "../parallel/parallel.h"
#include "../train/train.h"
#include "cmd.h"

static const char *HELP =
    "usage: moe train --data PATH[,PATH...] --out DIR (--model CFG.json | --resume DIR | --init-from DIR) [options]\n"
    "  --data-weights W1,W2,...  sample the --data files as a mixture, file i with weight Wi\n"
    "                     (each file's examples in its own shuffled epochs; default: one set)\n"
    "  --recipe FILE.json the run's settings in one file (keys: the flags' names with _ for -, e.g.\n"
    "                     model, data (a list), batch, lr, warmup, decay_steps, time_budget, seed);\n"
    "                     flags given on the command line win\n"
    "  --init-from DIR    fine-tune a checkpoint (moe.c's or a Hugging Face directory): its weights,\n"
    "                     a fresh optimizer, step 0; --resume of a directory without a training state\n"
    "                     does the same\n"
    "  --steps N          total steps of the run (default 100; with --time-budget and no --steps,\n"
    "                     until the budget runs out); a resume continues to N\n"
    "  --time-budget SEC  stop (and checkpoint) when the next step would pass SEC seconds\n"
    "  --batch B          examples per optimizer step (default 32)\n"
    "  --micro-batch M    examples per forward/backward; B/M micro-batches are accumulated\n"
    "  --seq T            max input tokens per example (default 256 or max_position_embeddings); longer ones are skipped\n"
    "  --lr X             peak learning rate (default 1e-3)   --min-lr X (default 0)\n"
    "  --warmup N         linear warm-up steps (default 0)\n"
    "  --decay-steps N    cosine decay from the end of warm-up to step N (default 0: constant)\n"
    "  --weight-decay X   AdamW decoupled decay on matrices (default 0)\n"
    "  --beta1 X --beta2 X (0.9, 0.95)   --clip X global-norm clip (1.0; 0 = off)\n"
    "  --seed S           initialisation and data order (default 1234)\n"
    "  --no-shuffle       examples in file order (default: shuffled every epoch)\n"
    "  --format F         auto | qa | jsonl | text (auto: .jsonl/.json are JSON lines, else Q/A lines)\n"
    "  --ckpt-every N     periodic checkpoints every N steps (default 0: at the end only)\n"
    "  --eval-data FILE   held-out loss every --eval-every N steps (100) on its first\n"
    "                     --eval-limit M examples (500; 0 = all), logged as eval_loss\n"
    "  --threads N        threads (default OMP_NUM_THREADS or all cores)\n"
    "  --recompute R      none | selective (default): recompute norms, SwiGLU products and\n"
    "                     expert inputs in the backward pass instead of keeping them (same\n"
    "                     gradients) | full: also the attention output and the experts'\n"
    "                     gate/up projections\n"
    "  --act-dtype T      bf16 (default): store each layer's saved intermediates in bf16\n"
    "                     (arithmetic stays f32) | f32\n"
    "  --quiet            no progress line\n"
    "Distributed (mpirun -np P moe train ...): --batch is the global batch, B/P examples a rank\n"
    "  --pp S [--vpp V]   pipeline parallelism: the layers cut into S·V chunks, stage r (P/S\n"
    "                     consecutive ranks) holding chunks r, r+S, ...; interleaved 1F1B over the\n"
    "                     micro-batches (--micro-batch); EP and data parallelism inside each stage\n"
    "  --pp-layers N1,... the stack's layers in each chunk (default: as even as can be; the MTP\n"
    "                     modules always go with the last chunk)\n"
    "  --ep E             expert parallelism: the experts of each MoE layer spread over groups\n"
    "                     of E ranks (E divides P and n_routed_experts; default 1); the P/E\n"
    "                     groups are data-parallel replicas\n"
    "  --zero 0|1         1: each data-parallel rank keeps the AdamW moments of 1/P of the\n"
    "                     parameters and updates those, then the ranks exchange the updated\n"
    "                     parameters (ZeRO stage 1; needs --ep 1; default 0)\n"
    "  --overlap on|off   on (default): gradient sums start during the backward pass, and under\n"
    "                     --ep each micro-batch runs as two interleaved halves, one half's\n"
    "                     tokens in flight while the other computes; off: all blocking\n"
    "  --a2a MODE         auto (default) | flat | hierarchical: the EP all-to-all; hierarchical\n"
    "                     gathers each host's rows at one rank, makes one exchange per pair of\n"
    "                     hosts and scatters within the host; auto uses it when the EP group\n"
    "                     spans hosts with several of its ranks on some host\n"
    "  --replace-every N  dynamic expert placement: every N steps, place the experts again from\n"
    "                     the last N steps' loads (replicate the hottest, pack by predicted\n"
    "                     load) and move weights and optimizer state to their new ranks\n"
    "  --redundant-experts R  R extra expert slots in all for those replicas (default 0)\n"
    "  --replace-when W   paying (default): a layer's experts move only when the rows it takes\n"
    "                     off the busiest rank until the run ends (at the sgemm peak) outweigh\n"
    "                     the move's time (as the last migration measured it) | always:\n"
    "                     whenever it gains 2%\n";

// --recipe FILE.json: a run described by one file, its keys the flags' names with '_' for '-'
// ({"model": "configs/x.json", "data": ["a.txt", "b.txt"], "lr": 3e-3, "time_budget": 600, ...});
// they go before the command line's flags, so that a flag given there wins
static const char *const RECIPE_KEYS[] = {"model", "data", "eval_data", "out", "steps", "time_budget", "batch",
    "micro_batch", "seq", "lr", "min_lr", "warmup", "decay_steps", "weight_decay", "beta1", "beta2", "clip", "seed",
    "ckpt_every", "eval_every", "eval_limit", "format", "recompute", "act_dtype", "no_shuffle", "threads", "data_weights", "ep", "pp", "vpp", NULL};

static int recipe_args(const char *path, int argc, char **argv, int *out_argc, char ***out_argv) {
    size_t len;
    char *text = file_read_all(path, &len);
    if (!text) return MOE_FAIL;
    cJSON *root = cJSON_ParseWithOpts(text, NULL, 1);
    free(text);
    if (!cJSON_IsObject(root)) { cJSON_Delete(root); MOE_ERR("%s: not a JSON object", path); }
    char **av = MOE_NEW(char *, 2 * cJSON_GetArraySize(root) + argc + 1);
    int n = 0, rc = MOE_OK;
    char pk[128];
    for (const cJSON *it = root->child; it && rc == MOE_OK; it = it->next) {
        int k = 0;
        while (RECIPE_KEYS[k] && strcmp(RECIPE_KEYS[k], it->string)) k++;
        if (!RECIPE_KEYS[k]) { rc = MOE_FAIL; moe_seterr("%s: unknown key \"%s\"", path, moe_printable(pk, sizeof pk, it->string)); break; }
        char flag[64], val[8192] = "";
        snprintf(flag, sizeof flag, "--%s", it->string);
        for (char *c = flag; *c; c++) if (*c == '_') *c = '-';
        if (cJSON_IsBool(it) && !strcmp(it->string, "no_shuffle")) {
            if (cJSON_IsTrue(it)) av[n++] = moe_strdup(flag);
            continue;
        }
        if (cJSON_IsString(it)) snprintf(val, sizeof val, "%s", it->valuestring);
        else if (cJSON_IsNumber(it)) snprintf(val, sizeof val, "%.17g", it->valuedouble);
        else if (cJSON_IsArray(it) && !strcmp(it->string, "data")) {   // the files, as --data's comma list
            for (const cJSON *x = it->child; x; x = x->next) {
                if (!cJSON_IsString(x) || strchr(x->valuestring, ',')) { rc = MOE_FAIL; break; }
                if (strlen(val) + strlen(x->valuestring) + 2 > sizeof val) { rc = MOE_FAIL; break; }
                if (val[0]) strcat(val, ",");
                strcat(val, x->valuestring);
            }
            if (rc) { moe_seterr("%s: \"data\" must be a list of file names (without commas)", path); break; }
        } else if (cJSON_IsArray(it) && !strcmp(it->string, "data_weights")) {   // as --data-weights
            for (const cJSON *x = it->child; x; x = x->next) {
                if (!cJSON_IsNumber(x) || strlen(val) + 32 > sizeof val) { rc = MOE_FAIL; break; }
                snprintf(val + strlen(val), sizeof val - strlen(val), "%s%.17g", val[0] ? "," : "", x->valuedouble);
            }
            if (rc) { moe_seterr("%s: \"data_weights\" must be a list of numbers", path); break; }
        } else { rc = MOE_FAIL; moe_seterr("%s: key \"%s\" has a value of the wrong type", path, it->string); break; }
        av[n++] = moe_strdup(flag);
        av[n++] = moe_strdup(val);
    }
    cJSON_Delete(root);
    if (rc) { for (int i = 0; i < n; i++) moe_free(av[i]); moe_free(av); return rc; }
    for (int i = 0; i < argc; i++) av[n++] = moe_strdup(argv[i]);
    *out_argc = n;
    *out_argv = av;
    return MOE_OK;
}

// --pp-layers N1,N2,...: the stack's layers in each pipeline chunk
static int parse_pp_layers(const char *v, TrainConfig *tc) {
    return args_parse_counts(v, "--pp-layers", 1, tc->pp_layers, 64, &tc->n_pp_layers);
}

// --pp S, --vpp V, --pp-layers N1,...
static int pipeline_flags(Args *a, TrainConfig *tc) {
    MOE_TRY(args_int(a, "--pp", 1, &tc->pp));
    MOE_TRY(args_int(a, "--vpp", 1, &tc->vpp));
    if (tc->pp <= 0 || tc->vpp <= 0) MOE_ERR("--pp and --vpp must be positive, got %d and %d", tc->pp, tc->vpp);
    if (tc->vpp > 1 && tc->pp == 1) MOE_ERR("--vpp %d needs pipeline stages (--pp)", tc->vpp);
    const char *ppl = args_str(a, "--pp-layers", NULL);
    if (!ppl && args_has(a, "--pp-layers")) return MOE_FAIL;   // (no value: the error is set)
    return ppl ? parse_pp_layers(ppl, tc) : MOE_OK;
}

// --data-weights W1,W2,...: one positive weight per --data file
static int parse_data_weights(const char *dw, TrainConfig *tc) {
    char buf[1024], *end;
    snprintf(buf, sizeof buf, "%s", dw);
    for (char *p = strtok(buf, ","); p; p = strtok(NULL, ",")) {
        const double w = strtod(p, &end);
        if (end == p || *end || !(w > 0 && w < 1e30) || tc->n_weights == 32)
            MOE_ERR("--data-weights must be up to 32 positive numbers, one per --data file, got \"%s\"", dw);
        tc->data_weights[tc->n_weights++] = w;
    }
    if (tc->n_weights == 0) MOE_ERR("--data-weights needs one weight per --data file");
    return MOE_OK;
}

// the run's length, batch, optimizer, data and held-out evaluation
static int run_flags(Args *a, TrainConfig *tc) {
    MOE_TRY(args_int(a, "--steps", 100, &tc->steps));
    MOE_TRY(args_double(a, "--time-budget", 0, &tc->time_budget));
    // a time budget without --steps trains until the budget runs out
    if (tc->time_budget > 0 && !args_has(a, "--steps")) tc->steps = TRAIN_STEPS_UNBOUNDED;
    MOE_TRY(args_int(a, "--batch", 32, &tc->batch));
    MOE_TRY(args_int(a, "--micro-batch", tc->batch, &tc->micro_batch));
    MOE_TRY(args_int(a, "--seq", 0, &tc->seq));
    if (args_has(a, "--seq") && tc->seq <= 0) MOE_ERR("--seq must be positive, got %d", tc->seq);
    OptConfig *o = &tc->opt;
    MOE_TRY(args_float(a, "--lr", o->lr, &o->lr));
    MOE_TRY(args_float(a, "--min-lr", o->min_lr, &o->min_lr));
    MOE_TRY(args_int(a, "--warmup", 0, &o->warmup));
    MOE_TRY(args_int(a, "--decay-steps", 0, &o->decay_steps));
    MOE_TRY(args_float(a, "--weight-decay", o->weight_decay, &o->weight_decay));
    MOE_TRY(args_float(a, "--beta1", o->beta1, &o->beta1));
    MOE_TRY(args_float(a, "--beta2", o->beta2, &o->beta2));
    MOE_TRY(args_float(a, "--clip", o->clip, &o->clip));
    MOE_TRY(args_u64(a, "--seed", 1234, &tc->seed));
    MOE_TRY(args_int(a, "--ckpt-every", 0, &tc->ckpt_every));
    const char *dw = args_str(a, "--data-weights", NULL), *fmt = args_str(a, "--format", "auto");
    if (!fmt || (!dw && args_has(a, "--data-weights"))) return MOE_FAIL;   // (no value: the error is set)
    if (dw) MOE_TRY(parse_data_weights(dw, tc));
    MOE_TRY(data_format_parse(fmt, &tc->format));
    MOE_TRY(cmd_acts_mode(a, &tc->acts_mode, 0));
    MOE_TRY(args_int(a, "--eval-every", 100, &tc->eval_every));
    MOE_TRY(args_int(a, "--eval-limit", 500, &tc->eval_limit));
    if (tc->eval_every <= 0 || tc->eval_limit < 0) MOE_ERR("--eval-every must be positive and --eval-limit >= 0");
    tc->shuffle = !args_bool(a, "--no-shuffle");
    tc->quiet = args_bool(a, "--quiet");
    return MOE_OK;
}

// --ep, the pipeline's flags, --zero, --overlap, --a2a and dynamic expert placement
static int parallel_flags(Args *a, TrainConfig *tc) {
    MOE_TRY(args_int(a, "--ep", 1, &tc->ep));
    if (tc->ep <= 0) MOE_ERR("--ep must be positive, got %d", tc->ep);
    MOE_TRY(pipeline_flags(a, tc));
    MOE_TRY(args_int(a, "--zero", 0, &tc->zero));
    if (tc->zero != 0 && tc->zero != 1) MOE_ERR("--zero must be 0 or 1, got %d", tc->zero);
    if (tc->zero && tc->ep > 1) MOE_ERR("--zero 1 shards the optimizer over data-parallel ranks and needs --ep 1 (got --ep %d)", tc->ep);
    static const char *const ON_OFF[] = {"on", "off"}, *const A2A[] = {"auto", "flat", "hierarchical"}, *const WHEN[] = {"paying", "always"};
    static const DistA2A A2A_MODE[] = {DIST_A2A_AUTO, DIST_A2A_FLAT, DIST_A2A_HIER};
    int ov, mode;
    MOE_TRY(args_pick(a, "--overlap", ON_OFF, 2, "on", &ov));
    tc->overlap = ov == 0 ? -1 : 0;   // (-1: on where it applies)
    MOE_TRY(args_pick(a, "--a2a", A2A, 3, "auto", &mode));
    tc->a2a = A2A_MODE[mode];
    MOE_TRY(args_int(a, "--redundant-experts", 0, &tc->redundant));
    MOE_TRY(args_int(a, "--replace-every", 0, &tc->replace_every));
    if (tc->redundant < 0 || tc->replace_every < 0) MOE_ERR("--redundant-experts and --replace-every must be >= 0");
    MOE_TRY(args_pick(a, "--replace-when", WHEN, 2, "paying", &tc->replace_always));
    if (tc->redundant > 0 && tc->replace_every == 0) MOE_ERR("--redundant-experts needs --replace-every N");
    return MOE_OK;
}

int cmd_train(int argc, char **argv) {
    char **rargv = NULL;
    int rargc = 0;
    for (int i = 0; i < argc; i++) {   // --recipe FILE: its flags first
        const char *r = !strcmp(argv[i], "--recipe") && i + 1 < argc ? argv[i + 1] : !strncmp(argv[i], "--recipe=", 9) ? argv[i] + 9 : NULL;
        if (!r) continue;
        if (recipe_args(r, argc, argv, &rargc, &rargv)) return cmd_fail("train");
        argc = rargc; argv = rargv;
        break;
    }
    Args a;
    args_init(&a, argc, argv, "train");
    (void)args_str(&a, "--recipe", NULL);   // (read above)
    if (args_bool(&a, "--help")) { fputs(HELP, stdout); return 0; }
    TrainConfig tc;
    memset(&tc, 0, sizeof tc);
    opt_defaults(&tc.opt);
    TrainArgs ta = {0};
    if (!(ta.data = cmd_required(&a, "--data")) || !(ta.out = cmd_required(&a, "--out"))) return cmd_fail("train");
    ta.model_cfg = args_str(&a, "--model", NULL);
    ta.resume = args_str(&a, "--resume", NULL);
    ta.init_from = args_str(&a, "--init-from", NULL);
    ta.eval_data = args_str(&a, "--eval-data", NULL);
    if (!!ta.model_cfg + !!ta.resume + !!ta.init_from != 1) {
        moe_seterr("give exactly one of --model CFG.json (a new run), --resume DIR or --init-from DIR");
        return cmd_fail("train");
    }
    char st[4096];
    if (ta.resume) {   // a checkpoint without a training state (a Hugging Face directory, moe init's): its weights
        path_join(st, sizeof st, ta.resume, "train_state.safetensors");
        if (path_exists(ta.resume) && !path_exists(st)) {
            fprintf(stderr, "moe train: %s has no training state: starting from its weights with a fresh optimizer "
                            "(as --init-from)\n", ta.resume);
            ta.init_from = ta.resume;
            ta.resume = NULL;
        }
    }
    int rc = cmd_threads(&a);
    if (!rc) rc = run_flags(&a, &tc);
    if (!rc) rc = parallel_flags(&a, &tc);
    // what a resume keeps from the command line rather than the checkpoint
    static const struct { const char *flag; unsigned bit; } SET[] = {
        {"--lr", TRAIN_SET_LR}, {"--min-lr", TRAIN_SET_MIN_LR}, {"--weight-decay", TRAIN_SET_WEIGHT_DECAY},
        {"--beta1", TRAIN_SET_BETA1}, {"--beta2", TRAIN_SET_BETA2}, {"--clip", TRAIN_SET_CLIP},
        {"--warmup", TRAIN_SET_WARMUP}, {"--decay-steps", TRAIN_SET_DECAY_STEPS}, {"--batch", TRAIN_SET_BATCH},
        {"--micro-batch", TRAIN_SET_MICRO_BATCH}, {"--seq", TRAIN_SET_SEQ}, {"--seed", TRAIN_SET_SEED},
        {"--ckpt-every", TRAIN_SET_CKPT_EVERY}, {"--format", TRAIN_SET_FORMAT}, {"--no-shuffle", TRAIN_SET_SHUFFLE},
        {"--data-weights", TRAIN_SET_DATA_WEIGHTS}};
    for (size_t i = 0; i < sizeof SET / sizeof *SET; i++)
        if (args_has(&a, SET[i].flag)) tc.given |= SET[i].bit;
    if (!rc) rc = args_finish(&a);
    if (!rc) rc = train_run(&ta, &tc);
    if (rc) cmd_fail("train");
    for (int i = 0; i < rargc; i++) moe_free(rargv[i]);
    moe_free(rargv);
    return rc ? 1 : 0;
}
