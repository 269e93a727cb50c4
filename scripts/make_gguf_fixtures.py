#!/usr/bin/env python3
"""Small GGUF models quantized by llama.cpp's own quantizer into the presets people download, and
llama.cpp's output on them, for tests/gguf_presets.rs (tests/fixtures/gguf/).

A tiny random Llama (hidden 256 so every K-quant and IQ4 block fits, 2 layers, a 320-token
vocabulary without a tokenizer) is made with transformers, written as an f32 GGUF the way
llama.cpp's converter writes Llama checkpoints (q/k rows permuted for its interleaved RoPE), then
quantized with `llama_cpp.llama_model_quantize` into each preset. llama.cpp picks the mixture
itself (Q4_K_M keeps some attn_v / ffn_down in Q6_K, K-quants fall back where a row does not fit),
which is exactly what the tests must handle. For each file, llama.cpp (llama-cpp-python, CPU)
gives the logits at every position of a fixed prompt and 12 greedy tokens after it:

    <preset>.gguf   the quantized model (tens of KiB to 1 MiB each)
    <preset>.json   {"prompt": [...], "greedy": [...], "greedy_margins": [...] (llama.cpp's
                     top-2 logit margin at each greedy step), "logits": "<preset>.logits.f32",
                     "tensor_types": {...}}
    <preset>.logits.f32   llama.cpp's logits, [prompt tokens, vocab], little-endian f32
    <preset>.exact.f32    transformers' logits on the weights dequantized to f32 (gguf-py), the
                          exact computation; "exact_greedy" in the JSON is its greedy continuation

Run in a throwaway environment (llama-cpp-python builds llama.cpp from source, 5-10 minutes):

    python3 -m venv /tmp/fx && CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON \\
        -DGGML_F16C=ON" /tmp/fx/bin/pip install torch transformers numpy gguf \\
        llama-cpp-python==0.3.36 --no-binary llama-cpp-python
    /tmp/fx/bin/python scripts/make_gguf_fixtures.py
"""
import ctypes
import json
import pathlib
import sys

import numpy as np
import torch
import transformers

import gguf
import llama_cpp

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "gguf"
VOCAB = 320
PROMPT = 16
GREEDY = 12
PRESETS = {
    # name: llama_ftype
    "q2_k": llama_cpp.LLAMA_FTYPE_MOSTLY_Q2_K,
    "q3_k_m": llama_cpp.LLAMA_FTYPE_MOSTLY_Q3_K_M,
    "q4_k_m": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M,
    "q5_k_m": llama_cpp.LLAMA_FTYPE_MOSTLY_Q5_K_M,
    "q5_1": llama_cpp.LLAMA_FTYPE_MOSTLY_Q5_1,
    "q6_k": llama_cpp.LLAMA_FTYPE_MOSTLY_Q6_K,
    "q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0,
    "iq4_nl": llama_cpp.LLAMA_FTYPE_MOSTLY_IQ4_NL,
    "iq4_xs": llama_cpp.LLAMA_FTYPE_MOSTLY_IQ4_XS,
}


def tiny_llama():
    torch.manual_seed(4242)
    config = transformers.LlamaConfig(
        hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=VOCAB, max_position_embeddings=256,
        rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False)
    model = transformers.LlamaForCausalLM(config).eval().to(torch.float32)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(4.0)
            else:
                p.add_(torch.randn_like(p) * 0.2)
    return config, model


def permute(w, heads):
    """llama.cpp's converter: HF's half-split q/k rows to the interleaved RoPE layout."""
    rows, cols = w.shape
    return (w.reshape(heads, 2, rows // heads // 2, cols).swapaxes(1, 2).reshape(rows, cols))


def write_f32_gguf(config, model, path):
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("pocketlm tiny llama")
    w.add_context_length(config.max_position_embeddings)
    w.add_embedding_length(config.hidden_size)
    w.add_block_count(config.num_hidden_layers)
    w.add_feed_forward_length(config.intermediate_size)
    w.add_head_count(config.num_attention_heads)
    w.add_head_count_kv(config.num_key_value_heads)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(config.rms_norm_eps)
    w.add_vocab_size(VOCAB)
    w.add_rope_dimension_count(config.hidden_size // config.num_attention_heads)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    # A byte-level SentencePiece vocabulary, so llama.cpp's loader has one; the tests feed ids.
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)]
    tokens += [f"tok{i}" for i in range(VOCAB - len(tokens))]
    types = [2, 3, 3] + [6] * 256 + [1] * (VOCAB - 259)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * VOCAB)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    sd = {k: v.numpy() for k, v in model.state_dict().items()}
    heads, kv = config.num_attention_heads, config.num_key_value_heads
    w.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    w.add_tensor("output_norm.weight", sd["model.norm.weight"])
    w.add_tensor("output.weight", sd["lm_head.weight"])
    for i in range(config.num_hidden_layers):
        p = f"model.layers.{i}."
        b = f"blk.{i}."
        w.add_tensor(b + "attn_norm.weight", sd[p + "input_layernorm.weight"])
        w.add_tensor(b + "attn_q.weight", permute(sd[p + "self_attn.q_proj.weight"], heads))
        w.add_tensor(b + "attn_k.weight", permute(sd[p + "self_attn.k_proj.weight"], kv))
        w.add_tensor(b + "attn_v.weight", sd[p + "self_attn.v_proj.weight"])
        w.add_tensor(b + "attn_output.weight", sd[p + "self_attn.o_proj.weight"])
        w.add_tensor(b + "ffn_norm.weight", sd[p + "post_attention_layernorm.weight"])
        w.add_tensor(b + "ffn_gate.weight", sd[p + "mlp.gate_proj.weight"])
        w.add_tensor(b + "ffn_up.weight", sd[p + "mlp.up_proj.weight"])
        w.add_tensor(b + "ffn_down.weight", sd[p + "mlp.down_proj.weight"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def quantize(src, dst, ftype):
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.allow_requantize = True
    params.nthread = 2
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0:
        sys.exit(f"llama_model_quantize {dst.name}: {rc}")


def llama_cpp_run(path, prompt):
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=64, logits_all=True, n_threads=2,
                          verbose=False, seed=0)
    llm.eval(prompt)
    logits = np.array(llm.scores[: len(prompt)], dtype=np.float32)
    greedy, margins = [], []
    for _ in range(GREEDY):
        row = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float64)
        top = np.argsort(row)[::-1][:2]
        greedy.append(int(top[0]))
        margins.append(round(float(row[top[0]] - row[top[1]]), 5))
        llm.eval([int(top[0])])
    return logits, greedy, margins


def transformers_run(path, prompt):
    """transformers on the file's weights dequantized to f32 by gguf-py: the exact computation
    PocketLM does (f32 activations), so its logits and greedy tokens must be equal."""
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()
    model.config._attn_implementation = "eager"
    with torch.no_grad():
        logits = model(torch.tensor([prompt])).logits[0].numpy().astype(np.float32)
        g = model.generate(torch.tensor([prompt]), max_new_tokens=GREEDY,
                           min_new_tokens=GREEDY, do_sample=False, top_p=None, top_k=None,
                           temperature=None, eos_token_id=None, pad_token_id=0)
    return logits, g[0, len(prompt):].tolist()


def tensor_types(path):
    r = gguf.GGUFReader(str(path))
    out = {}
    for t in r.tensors:
        out[t.name] = t.tensor_type.name
    return out


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    config, model = tiny_llama()
    f32 = OUT / "tiny-llama-f32.gguf.tmp"
    write_f32_gguf(config, model, f32)
    rng = np.random.default_rng(7)
    prompt = [int(x) for x in rng.integers(3, VOCAB, size=PROMPT)]
    for name, ftype in PRESETS.items():
        path = OUT / f"{name}.gguf"
        quantize(f32, path, ftype)
        logits, greedy, margins = llama_cpp_run(path, prompt)
        logits.astype("<f4").tofile(OUT / f"{name}.logits.f32")
        exact, exact_greedy = transformers_run(path, prompt)
        exact.astype("<f4").tofile(OUT / f"{name}.exact.f32")
        (OUT / f"{name}.json").write_text(json.dumps({
            "generator": f"scripts/make_gguf_fixtures.py, llama-cpp-python {llama_cpp.__version__}, "
                         f"gguf {gguf.__version__ if hasattr(gguf, '__version__') else '?'}",
            "prompt": prompt,
            "greedy": greedy,
            "greedy_margins": margins,
            "logits": f"{name}.logits.f32",
            "exact_logits": f"{name}.exact.f32",
            "exact_greedy": exact_greedy,
            "shape": list(logits.shape),
            "tensor_types": tensor_types(path),
        }, indent=1) + "\n")
        print(name, path.stat().st_size, "bytes", sorted(set(tensor_types(path).values())))
    f32.unlink()


if __name__ == "__main__":
    main()
