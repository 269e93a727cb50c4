#!/usr/bin/env python3
"""Tiny random sentence-embedding models and their reference outputs, made with Hugging Face
transformers, for the encoder tests (tests/fixtures/models/<name>/).

Each folder is laid out as a sentence-transformers model folder: config.json and
model.safetensors (f32) of the transformer, modules.json naming the Transformer, Pooling and
Normalize modules, 1_Pooling/config.json with the pooling mode, and a small lowercasing WordPiece
tokenizer (vocab.txt, tokenizer.json, tokenizer_config.json: specials, punctuation, letters and
continuation letters, a few words). reference.json holds token-id inputs of several lengths (with
token type 0, no padding), and for each the pooled, L2-normalised embedding; hidden.f32 holds
transformers' last hidden states of every input one after the other ([tokens, hidden] each,
little-endian f32); `texts` holds a few sentences with the tokenizer's ids ([CLS] ... [SEP]) and
their embeddings.

- tiny-bert: BERT (post-LayerNorm with biases, exact GELU, absolute position and token-type
  embeddings), mean pooling, as all-MiniLM-L6-v2 and bge/e5 are built.
- tiny-qwen3-embedding: Qwen3-Embedding's: the Qwen3 decoder (causal attention) without its LM
  head, last-token pooling of the final (RMS-normed) hidden states; its tokenizer appends an end
  token instead of wrapping the text.
- tiny-embeddinggemma: EmbeddingGemma's: the Gemma 3 decoder attending both ways
  (`use_bidirectional_attention`: full attention on the global layer, a symmetric window on the
  five local ones, shorter than the longer inputs), mean pooling, then two Dense modules
  (2_Dense: hidden → 2·hidden, 3_Dense: back, no bias, identity) before normalisation; the
  folder loads in sentence-transformers, whose embeddings of the texts are checked against the
  reference.
- tiny-nomic-bert: nomic-embed-text's architecture (post-LayerNorm, RoPE (NeoX layout, base
  1000) instead of position embeddings, no biases on q/k/v/o or the MLP, SwiGLU), mean pooling.
  Made with transformers' NomicBertModel and saved as the Hub's nomic-embed-text-v1.5 checkpoint
  is laid out (its remote-code names: `n_embd`, `encoder.layers.N.attn.Wqkv`, `mlp.fc11` (up),
  `fc12` (gate), `fc2`, `norm1`, `norm2`, `emb_ln`), which is what users download and what
  llama.cpp's converter reads.
1-D weights (norms, biases) are randomised so that they matter.

With a llama.cpp source tree as argument, each folder is also converted to
tests/fixtures/models/<name>.gguf (f32) by llama.cpp's own convert_hf_to_gguf.py, for the GGUF
encoder path (the same reference applies).

Run in a throwaway environment (torch is large; never install it in CI):
    python3 -m venv /tmp/fx && /tmp/fx/bin/pip install torch transformers safetensors numpy
    /tmp/fx/bin/python scripts/make_encoder_fixtures.py [LLAMA_CPP_SOURCE]
(LLAMA_CPP_SOURCE as in scripts/convert_fixtures_to_gguf.py.)
    /tmp/fx/bin/python scripts/make_encoder_fixtures.py - NAME…   (only these models, no GGUF)
"""
import json
import pathlib
import subprocess
import sys

import numpy as np
import torch
import transformers
from safetensors.torch import save_file

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "models"
LENGTHS = [1, 5, 16, 64]

# 128 WordPiece tokens: specials, punctuation, letters, continuation letters, words.
VOCAB = (["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list(".,!?'-")
         + [chr(c) for c in range(ord("a"), ord("z") + 1)]
         + ["##" + chr(c) for c in range(ord("a"), ord("z") + 1)]
         + ["中", "文", "##s", "##ed", "##ing", "##er", "##ly", "##es"]
         + "the quick brown fox jump over lazy dog where did i put my note search query "
           "document cafe au lait il vous plait find by meaning on device never leave it "
           "what is a an of to and in for with this that model text word sentence embedding "
           "private history page local small fast".split())
VOCAB = list(dict.fromkeys(VOCAB))[:128]
VOCAB += [f"w{i}" for i in range(128 - len(VOCAB))]
assert len(VOCAB) == 128 and len(set(VOCAB)) == 128, (len(VOCAB), len(set(VOCAB)))

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "search_query: Where did I put my notes?",
    "Café au lait, s'il vous plaît!",
    "中文 text   with\tspaces and UNKNOWN-ish words",
    "Embeddings never leave the device.",
]

COMMON = dict(vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
              intermediate_size=64, type_vocab_size=2, layer_norm_eps=1e-12)

MODELS = {
    "tiny-bert": (
        transformers.BertConfig,
        transformers.BertModel,
        dict(COMMON, max_position_embeddings=64, hidden_act="gelu"),
        "mean",
    ),
    "tiny-nomic-bert": (
        transformers.NomicBertConfig,
        transformers.NomicBertModel,
        dict(COMMON, max_position_embeddings=2048, hidden_act="silu",
             rope_parameters={"rope_type": "default", "rope_theta": 1000.0}),
        "mean",
    ),
    # Qwen3-Embedding's layout: the Qwen3 decoder (causal, q/k norm, GQA) without its LM head,
    # the last token's final hidden state, normalised; the tokenizer appends an end token.
    "tiny-qwen3-embedding": (
        transformers.Qwen3Config,
        transformers.Qwen3Model,
        dict(vocab_size=128, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, head_dim=16,
             max_position_embeddings=64, rms_norm_eps=1e-6, rope_theta=1000000.0,
             tie_word_embeddings=True),
        "lasttoken",
    ),
    # EmbeddingGemma's layout: six layers (five local, one global, as llama.cpp's default
    # pattern has them), sliding_window 10 (a token sees 5 positions each way).
    "tiny-embeddinggemma": (
        transformers.Gemma3TextConfig,
        transformers.Gemma3TextModel,
        dict(vocab_size=128, hidden_size=48, intermediate_size=96, num_hidden_layers=6,
             num_attention_heads=4, num_key_value_heads=2, head_dim=16,
             query_pre_attn_scalar=16, max_position_embeddings=128, rms_norm_eps=1e-6,
             sliding_window=10, use_bidirectional_attention=True,
             hidden_activation="gelu_pytorch_tanh", tie_word_embeddings=True),
        "mean",
    ),
}

# Dense modules after pooling: (folder, in, out) per module.
DENSE = {"tiny-embeddinggemma": [("2_Dense", 48, 96), ("3_Dense", 96, 48)]}

# Decoder-based embedders: no `add_pooling_layer`, the end token appended rather than
# [CLS] ... [SEP], and no GGUF conversion (llama.cpp's Qwen3 converter wants a BPE vocabulary).
DECODERS = {"tiny-qwen3-embedding", "tiny-embeddinggemma"}


def pool(hidden, mode):
    if mode == "mean":
        return hidden.mean(axis=0)
    if mode == "cls":
        return hidden[0]
    if mode == "lasttoken":
        return hidden[-1]
    raise ValueError(mode)


def save_tokenizer(folder, decoder=False):
    """BERT's uncased WordPiece pipeline (as all-MiniLM-L6-v2's tokenizer.json has it) over
    VOCAB, saved as tokenizer.json, vocab.txt and tokenizer_config.json; returns the tokenizer
    transformers loads back from the folder (what llama.cpp's converter reads too)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    tk = Tokenizer(models.WordPiece({t: i for i, t in enumerate(VOCAB)}, unk_token="[UNK]",
                                    max_input_chars_per_word=100))
    tk.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                               strip_accents=None, lowercase=True)
    tk.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    if decoder:
        tk.post_processor = processors.TemplateProcessing(
            single="$A [SEP]", pair="$A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[SEP]", VOCAB.index("[SEP]"))])
    else:
        tk.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", VOCAB.index("[CLS]")), ("[SEP]", VOCAB.index("[SEP]"))])
    tk.decoder = decoders.WordPiece(prefix="##")
    tk.add_special_tokens(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    tk.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        # A decoder's tokenizer.json is taken as it is (BertTokenizer would wrap the text in
        # [CLS] ... [SEP] whatever the file says).
        "tokenizer_class": "PreTrainedTokenizerFast" if decoder else "BertTokenizer",
        "do_lower_case": True, "model_max_length": 64,
        "cls_token": "[CLS]", "sep_token": "[SEP]", "unk_token": "[UNK]", "pad_token": "[PAD]",
        "mask_token": "[MASK]",
    }, indent=2) + "\n")
    back = transformers.AutoTokenizer.from_pretrained(folder)
    for text in TEXTS:
        assert back(text)["input_ids"] == tk.encode(text).ids, text
    return back


def save_nomic_hub_format(model, settings, folder):
    """The checkpoint as nomic-embed-text-v1.5 is on the Hub (its remote code's names)."""
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    out = {
        "embeddings.word_embeddings.weight": sd["embeddings.word_embeddings.weight"],
        "embeddings.token_type_embeddings.weight": sd["embeddings.token_type_embeddings.weight"],
        "emb_ln.weight": sd["embeddings.LayerNorm.weight"],
        "emb_ln.bias": sd["embeddings.LayerNorm.bias"],
    }
    for l in range(settings["num_hidden_layers"]):
        p, q = f"layers.{l}.", f"encoder.layers.{l}."
        out[q + "attn.Wqkv.weight"] = torch.cat(
            [sd[p + f"self_attn.{x}_proj.weight"] for x in "qkv"], dim=0).contiguous()
        out[q + "attn.out_proj.weight"] = sd[p + "self_attn.o_proj.weight"]
        out[q + "mlp.fc11.weight"] = sd[p + "mlp.up_proj.weight"]
        out[q + "mlp.fc12.weight"] = sd[p + "mlp.gate_proj.weight"]
        out[q + "mlp.fc2.weight"] = sd[p + "mlp.down_proj.weight"]
        for a, b in [("norm1", "post_attention_layernorm"), ("norm2", "post_mlp_layernorm")]:
            out[q + f"{a}.weight"] = sd[p + f"{b}.weight"]
            out[q + f"{a}.bias"] = sd[p + f"{b}.bias"]
    assert sum(v.numel() for v in out.values()) == sum(v.numel() for v in sd.values())
    save_file(out, folder / "model.safetensors", metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps({
        "architectures": ["NomicBertModel"],
        "model_type": "nomic_bert",
        "activation_function": "swiglu",
        "causal": False,
        "n_embd": settings["hidden_size"],
        "n_head": settings["num_attention_heads"],
        "n_inner": settings["intermediate_size"],
        "n_layer": settings["num_hidden_layers"],
        "n_positions": 8192,
        "max_trained_positions": 2048,
        "layer_norm_epsilon": settings["layer_norm_eps"],
        "rotary_emb_base": settings["rope_parameters"]["rope_theta"],
        "rotary_emb_fraction": 1.0,
        "rotary_emb_interleaved": False,
        "rotary_emb_scale_base": None,
        "rotary_scaling_factor": None,
        "qkv_proj_bias": False,
        "mlp_fc1_bias": False,
        "mlp_fc2_bias": False,
        "prenorm": False,
        "use_rms_norm": False,
        "parallel_block": False,
        "type_vocab_size": settings["type_vocab_size"],
        "vocab_size": settings["vocab_size"],
        "pad_vocab_size_multiple": 1,
        "torch_dtype": "float32",
    }, indent=2) + "\n")


def convert_to_gguf(llama_cpp, name):
    """llama.cpp's converter on the folder, f32. It names the pre-tokenizer by hashing how the
    tokenizer splits a test text, which only works for vocabularies it knows: the tiny one is
    told what all-MiniLM-L6-v2's (a lowercasing BERT WordPiece, like it) is called. And it reads
    the settings through transformers' AutoConfig, which (transformers 5 having a native
    nomic_bert) turns the Hub's `n_embd`-style config into the native class's defaults, right
    for the real nomic-embed-text sizes only: it is given config.json as it is, as it reads it
    when transformers does not know the model type."""
    out = OUT / f"{name}.gguf"
    code = f"""
import sys
sys.argv = ["convert_hf_to_gguf.py", {str(OUT / name)!r}, "--outtype", "f32", "--outfile", {str(out)!r}]
sys.path.insert(0, {str(llama_cpp / "gguf-py")!r})
sys.path.insert(0, {str(llama_cpp)!r})
import json, pathlib
import conversion.base
conversion.base.ModelBase.load_hparams = staticmethod(
    lambda d, mistral: json.loads((pathlib.Path(d) / "config.json").read_text()))
conversion.base.TextModel.get_vocab_base_pre = lambda self, tokenizer: "jina-v2-en"
import convert_hf_to_gguf
convert_hf_to_gguf.main()
"""
    subprocess.run([sys.executable, "-c", code], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    print("wrote", out)


def save_dense(folder, modules):
    """sentence-transformers Dense modules (no bias, identity), random; returns the torch
    layers."""
    layers = []
    for path, n_in, n_out in modules:
        layer = torch.nn.Linear(n_in, n_out, bias=False)
        with torch.no_grad():
            layer.weight.mul_(3.0)
        (folder / path).mkdir(exist_ok=True)
        save_file({"linear.weight": layer.weight.detach().contiguous()},
                  folder / path / "model.safetensors", metadata={"format": "pt"})
        (folder / path / "config.json").write_text(json.dumps({
            "in_features": n_in, "out_features": n_out, "bias": False,
            "activation_function": "torch.nn.modules.linear.Identity",
        }, indent=2) + "\n")
        layers.append(layer)
    return layers


def main():
    llama_cpp = (pathlib.Path(sys.argv[1]).resolve()
                 if len(sys.argv) > 1 and sys.argv[1] != "-" else None)
    only = set(sys.argv[2:])
    for i, (name, (config_cls, model_cls, settings, mode)) in enumerate(MODELS.items()):
        if only and name not in only:
            continue
        torch.manual_seed(4321 + i)
        config = config_cls(**settings)
        config._attn_implementation = "eager"
        decoder = name in DECODERS
        extra = {} if decoder else dict(add_pooling_layer=False)
        model = model_cls(config, **extra).eval().to(torch.float32)
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() == 2:
                    p.mul_(3.0)
                else:
                    p.add_(torch.randn_like(p) * 0.3)
        folder = OUT / name
        folder.mkdir(parents=True, exist_ok=True)
        if name == "tiny-nomic-bert":
            save_nomic_hub_format(model, settings, folder)
            # transformers reads the Hub's names back (its conversion mapping for nomic_bert),
            # given the sizes (it does not read `n_embd`): the renaming is the one it undoes.
            back = model_cls.from_pretrained(folder, config=config).eval()
            probe = torch.arange(12)[None] % settings["vocab_size"]
            with torch.no_grad():
                same = model(probe).last_hidden_state.equal(back(probe).last_hidden_state)
            assert same, "the Hub-format checkpoint does not load back as the same model"
        else:
            model.save_pretrained(folder, safe_serialization=True)
        tokenizer = save_tokenizer(folder, decoder)
        dense = save_dense(folder, DENSE.get(name, []))
        modules = [
            {"path": "", "type": "sentence_transformers.models.Transformer"},
            {"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        ] + [{"path": path, "type": "sentence_transformers.models.Dense"}
             for path, _, _ in DENSE.get(name, [])]
        modules.append({"path": f"{len(modules)}_Normalize",
                        "type": "sentence_transformers.models.Normalize"})
        (folder / "modules.json").write_text(json.dumps([
            {"idx": k, "name": str(k), **m} for k, m in enumerate(modules)
        ], indent=2) + "\n")
        (folder / "1_Pooling").mkdir(exist_ok=True)
        (folder / "1_Pooling" / "config.json").write_text(json.dumps({
            "word_embedding_dimension": settings["hidden_size"],
            "pooling_mode_cls_token": mode == "cls",
            "pooling_mode_mean_tokens": mode == "mean",
            "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False,
            "pooling_mode_weightedmean_tokens": False,
            "pooling_mode_lasttoken": mode == "lasttoken",
            "include_prompt": True,
        }, indent=2) + "\n")
        rng = np.random.default_rng(77 + i)
        inputs = [rng.integers(0, settings["vocab_size"], size=n).tolist() for n in LENGTHS]

        def embed(ids):
            with torch.no_grad():
                h = model(torch.tensor([ids])).last_hidden_state[0].to(torch.float32).numpy()
                e = pool(h.astype(np.float64), mode)
                for layer in dense:
                    e = layer.weight.double().numpy() @ e
            return h, (e / np.linalg.norm(e)).tolist()

        hidden_all, embeddings = [], []
        for ids in inputs:
            h, e = embed(ids)
            hidden_all.append(h)
            embeddings.append(e)
        texts = []
        for text in TEXTS:
            ids = tokenizer(text)["input_ids"]
            texts.append({"text": text, "ids": ids, "embedding": embed(ids)[1]})
        if dense:
            # The folder as sentence-transformers loads it gives the same embeddings.
            (folder / "sentence_bert_config.json").write_text(
                json.dumps({"max_seq_length": 64, "do_lower_case": False}, indent=2) + "\n")
            from sentence_transformers import SentenceTransformer
            st = SentenceTransformer(str(folder), device="cpu")
            got = st.encode([t["text"] for t in texts], convert_to_numpy=True)
            want = np.array([t["embedding"] for t in texts])
            assert np.abs(got - want).max() < 1e-4, np.abs(got - want).max()
        np.concatenate(hidden_all).astype("<f4").tofile(folder / "hidden.f32")
        (folder / "reference.json").write_text(json.dumps({
            "generator": f"scripts/make_encoder_fixtures.py, transformers {transformers.__version__}, torch {torch.__version__}",
            "inputs": inputs,
            "hidden": "hidden.f32",
            "pooling": mode,
            "embeddings": embeddings,
            "texts": texts,
        }, indent=2) + "\n")
        print(name, sorted(p.name for p in folder.iterdir()))
        if llama_cpp is not None and not decoder:
            convert_to_gguf(llama_cpp, name)


if __name__ == "__main__":
    main()
