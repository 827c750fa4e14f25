// libFuzzer: the bytes are a safetensors file. Open them (st_open_mem: the fuzzer's buffer is
// exactly the input, so AddressSanitizer sees any read past it), read every tensor as f32,
// look each up by name, read the metadata.
#include <stdint.h>
#include "../../src/io/safetensors.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    StFile f;
    if (st_open_mem(&f, data, size, "fuzz.safetensors") != MOE_OK) { fuzz_check_message("fuzz.safetensors"); return 0; }
    for (int i = 0; i < f.n; i++) {
        const StTensor *t = &f.t[i];
        if (st_find(&f, t->name) != t) abort();   // names are unique and found
        if (t->data < f.buf || t->data + t->nbytes > f.buf + f.size) abort();
        float *x = MOE_NEW(float, t->numel ? t->numel : 1);
        if (st_tensor_f32(&f, t, x) != MOE_OK) fuzz_check_message("fuzz.safetensors");
        if (t->ndim == 1 || t->ndim == 2)
            if (st_read_f32(&f, t->name, x, t->shape[0], t->ndim == 2 ? t->shape[1] : 0) != MOE_OK)
                fuzz_check_message("fuzz.safetensors");
        moe_free(x);
    }
    float one;
    if (st_read_f32(&f, "no such tensor\n", &one, 1, 0) == MOE_OK) abort();
    fuzz_check_message("fuzz.safetensors");
    char buf[64];
    st_meta(&f, "format", buf, sizeof buf);
    st_close(&f);
    return 0;
}
