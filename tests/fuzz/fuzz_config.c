// libFuzzer: the bytes are a config.json. config_parse either refuses it with one line
// naming the file or accepts a config that config_validate accepts and that survives
// config_to_json and config_parse again unchanged.
#include <stdint.h>
#include "../../src/config/config.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = malloc(size + 1);
    memcpy(text, data, size);
    text[size] = 0;
    MoeConfig c, back;
    int rc = config_parse(&c, text, "fuzz.json");
    free(text);
    if (rc != MOE_OK) { fuzz_check_message("fuzz.json"); return 0; }
    if (config_validate(&c, "fuzz.json") != MOE_OK) abort();
    char *js = config_to_json(&c);
    if (config_parse(&back, js, "again.json") != MOE_OK) {
        fprintf(stderr, "fuzz: config_to_json's output does not parse: %s\n%s\n", moe_errmsg(), js);
        abort();
    }
    free(js);
    if (memcmp(&c, &back, sizeof c)) { fprintf(stderr, "fuzz: the config changed on its round trip\n"); abort(); }
    config_active_params(&c);
    config_total_params(&c);
    config_flops_per_token(&c, 128);
    return 0;
}
