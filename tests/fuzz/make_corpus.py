#!/usr/bin/env python3
"""Writes the fuzzers' seed corpora (tests/fuzz/corpus/<harness>/): small valid files and
near-valid ones, each broken in one way. Run from the repository root; the output is
committed, so this only needs running again when a seed is added."""
import json, os, struct, shutil

root = "tests/fuzz/corpus"

def st(tensors, meta=None, pad=True, hlen=None, tail=b""):
    """tensors: list of (name, dtype, shape, data bytes, offsets or None)"""
    h, data = {}, b""
    if meta is not None: h["__metadata__"] = meta
    for name, dt, shape, raw, offs in tensors:
        h[name] = {"dtype": dt, "shape": shape, "data_offsets": offs or [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(h, separators=(",", ":")).encode()
    if pad: text += b" " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text) if hlen is None else hlen) + text + data + tail

def f32(*v): return struct.pack(f"<{len(v)}f", *v)
def u16(*v): return struct.pack(f"<{len(v)}H", *v)

def write(harness, name, blob):
    d = os.path.join(root, harness); os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f: f.write(blob if isinstance(blob, bytes) else blob.encode())

S = "fuzz_safetensors"
shutil.rmtree(os.path.join(root, S), ignore_errors=True)
good = [("w", "F32", [2, 2], f32(1, -2, 3.5, 0), None), ("b", "BF16", [3], u16(0x3f80, 0xc000, 0x7fc0), None)]
write(S, "valid_f32_bf16", st(good, {"format": "pt"}))
# F16: 1, -2, the smallest subnormal, the largest subnormal, the largest normal, inf, -inf, nan
write(S, "valid_f16", st([("h", "F16", [2, 4], u16(0x3c00, 0xc000, 0x0001, 0x03ff, 0x7bff, 0x7c00, 0xfc00, 0x7e00), None)]))
write(S, "valid_shapes", st([("s", "F32", [], f32(7), None), ("z", "F32", [0, 5], b"", None),
                             ("c", "F16", [1, 2, 1, 2], u16(1, 2, 3, 4), None), ("i", "I64", [1], b"\x01" + b"\x00" * 7, None)]))
write(S, "valid_empty", st([]))
write(S, "truncated", st(good)[:-3])
write(S, "header_past_eof", st(good, hlen=4096))
write(S, "header_huge", st(good, hlen=1 << 40))
write(S, "offsets_past_eof", st([("w", "F32", [2], f32(1, 2), [0, 800])]))
write(S, "overlap", st([("a", "F32", [2], f32(1, 2), [0, 8]), ("b", "F32", [1], f32(3), [4, 8])], tail=b""))
write(S, "gap", st([("a", "F32", [1], f32(1), [0, 4]), ("b", "F32", [1], f32(2), [8, 12])], tail=b"\0" * 4))
write(S, "trailing_bytes", st(good, tail=b"\0" * 8))
write(S, "unknown_dtype", st([("w", "Q4_K", [4], b"\0" * 4, None)]))
write(S, "other_dtype_f64", st([("w", "F64", [1], struct.pack("<d", 1.5), None)]))
write(S, "shape_mismatch", st([("w", "F32", [3], f32(1, 2), None)]))
write(S, "negative_dim", st([("w", "F32", [-1], f32(1), [0, 4])]))
write(S, "float_offset", st([("w", "F32", [1], f32(1), [0, 4.5])]))
write(S, "overflow_shape", st([("w", "F32", [1 << 40, 1 << 40], b"", [0, 0])]))
write(S, "begin_after_end", st([("w", "F32", [0], b"", [8, 4])], tail=b"\0" * 8))
write(S, "five_dims", st([("w", "F32", [1, 1, 1, 1, 1], f32(1), None)]))
dup = b'{"a":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
write(S, "duplicate_name", struct.pack("<Q", len(dup)) + dup + f32(1))
write(S, "not_object", struct.pack("<Q", 8) + b"[1,2,3] ")
write(S, "text_after_object", struct.pack("<Q", 8) + b"{}  xyz ")
write(S, "metadata_list", struct.pack("<Q", 24) + b'{"__metadata__":[1,2]}  ')
write(S, "entry_not_object", struct.pack("<Q", 8) + b'{"a":1} ')
write(S, "control_chars_in_name", st([("a\nb\x01", "F32", [1], f32(1), None)]))
write(S, "short", b"\x10\x00\x00")

I = "fuzz_shard_index"
shutil.rmtree(os.path.join(root, I), ignore_errors=True)
A, B = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"
ok = {"metadata": {"total_size": 32}, "weight_map": {"a": A, "b": A, "c": B, "d": B}}
write(I, "valid", json.dumps(ok, indent=2))
write(I, "no_metadata", json.dumps({"weight_map": ok["weight_map"]}))
write(I, "missing_file", json.dumps({"weight_map": {"a": A, "b": A, "c": "model-00003-of-00003.safetensors", "d": B}}))
write(I, "wrong_file", json.dumps({"weight_map": {"a": B, "b": A, "c": B, "d": B}}))
write(I, "unlisted_tensor", json.dumps({"weight_map": {"a": A, "b": A, "c": B}}))
write(I, "in_two_files", json.dumps({"weight_map": {"a": "dup.safetensors", "b": A, "c": B, "d": B}}))
write(I, "path_escape", json.dumps({"weight_map": {"a": "../" + A, "b": A, "c": B, "d": B}}))
write(I, "absolute_path", json.dumps({"weight_map": {"a": "/etc/passwd"}}))
write(I, "junk_shard", json.dumps({"weight_map": {"x": "junk.safetensors"}}))
write(I, "not_string", json.dumps({"weight_map": {"a": 1}}))
write(I, "weight_map_list", json.dumps({"weight_map": [A, B]}))
write(I, "empty_map", json.dumps({"metadata": {}, "weight_map": {}}))
write(I, "duplicate_key", '{"weight_map": {"a": "%s", "a": "%s", "b": "%s", "c": "%s", "d": "%s"}}' % (A, A, A, B, B))
write(I, "malformed", '{"weight_map": {"a": "%s",' % A)
write(I, "metadata_string", json.dumps({"metadata": "x", "weight_map": ok["weight_map"]}))

C = "fuzz_config"
shutil.rmtree(os.path.join(root, C), ignore_errors=True)
os.makedirs(os.path.join(root, C))
for f in sorted(os.listdir("configs")):
    if f.endswith(".json"): shutil.copy(os.path.join("configs", f), os.path.join(root, C, f[:-5]))
tiny = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 48,
        "moe_intermediate_size": 16, "n_routed_experts": 4, "num_experts_per_tok": 2, "max_position_embeddings": 128,
        "scoring_func": "sigmoid", "topk_method": "group_limited", "n_group": 2, "topk_group": 1,
        "aux_scope": "sequence", "model_type": "moe_v1", "tie_word_embeddings": True}
write(C, "tiny", json.dumps(tiny))
write(C, "unknown_key", json.dumps(dict(tiny, hiden_size=3)))
write(C, "wrong_type", json.dumps(dict(tiny, hidden_size="32")))
write(C, "huge_float", json.dumps(dict(tiny, rope_theta=1e300)))
write(C, "huge_int", json.dumps(dict(tiny, hidden_size=2000000000)))
write(C, "malformed", '{"hidden_size": 32,, }')
# regressions found by fuzz_config: 4 * hidden_size past INT_MAX (the default intermediate
# size), an intermediate size over the old 2e9 integer bound, a 1.4e9-layer walk
write(C, "regress_hidden_4x_overflow", json.dumps({"hidden_size": 1649519544, "model_type": "moe_v1"}))
write(C, "regress_default_over_2e9", json.dumps({"hidden_size": 536870911}))
write(C, "regress_layers_1e9", '{"hidden_size": 32, "num_hidden_layers": 0000000001420835664, "model_type": "moe_v1"}')
write(C, "regress_hidden_negative_4x", json.dumps({"hidden_size": -1649519544, "model_type": "moe_v1"}))
# num_attention_heads * head_dim past INT_MAX in the parameter count (and text after the object)
write(C, "regress_heads_x_head_dim", b'{"head_dim": 74, "head_dim":666666666}6666666666666666666666666666)\0\0\0 73, "head_dim": 4,"tie_word_embeddi"dtype"ngs": true}')
write(C, "regress_heads_x_head_dim_strict", json.dumps({"head_dim": 666666666}))
write(C, "regress_head_dim_kv_overflow", '{"head_dim": 666666666}')

D = "fuzz_dataset"
shutil.rmtree(os.path.join(root, D), ignore_errors=True)
write(D, "qa", "What is 2 + 3?\n5\nWhat is 10 - 4?\n6\n")
write(D, "qa_crlf_no_final_newline", "Sort 3, 1, 2.\r\n1, 2, 3\r\nIs 7 prime?\r\nTrue")
write(D, "qa_odd_lines", "What is 2 + 3?\n5\nWhat is 1 + 1?\n")
write(D, "qa_blank_line", "What is 2 + 3?\n\n5\n")
write(D, "qa_too_long", "Q" * 200 + "\nA\nshort?\nyes\n")
write(D, "jsonl", '{"question": "What is 2 + 3?", "answer": "5"}\n\n{"question": "caf\\u00e9 \\"x\\"", "answer": "\\u0000nul"}\n')
write(D, "jsonl_not_object", '["question", "answer"]\n')
write(D, "jsonl_number_answer", '{"question": "q", "answer": 5}\n')
write(D, "text", "Once upon a time there was a mixture of experts. " * 5)
write(D, "binary", bytes(range(256)) + b"\n" + bytes(range(255, -1, -1)) + b"\n")
