#!/usr/bin/env python3
"""The tiny random models of scripts/make_fixtures.py converted to GGUF by llama.cpp's own
converter (convert_hf_to_gguf.py), for the GGUF path of every architecture: the tests load
tests/fixtures/models/<name>.gguf and compare with the same transformers logits as the
safetensors folder (the conversion is f32 to f32, so they must agree as closely); the
decoder-based embedder's GGUF, with the same hidden states and embeddings.

The converter does what PocketLM's GGUF reader must undo or follow: q/k rows permuted for
llama.cpp's interleaved RoPE (Llama, SmolLM3), Gemma's norm weights stored as 1 + w, Phi-3's
LongRoPE factors as tensors, per-architecture metadata keys. The tiny models have no tokenizer,
so the converter's vocabulary step is replaced by a byte-level placeholder of the model's
vocabulary size (the tests feed token ids).

llama.cpp's converter comes with the source archive of llama-cpp-python:

    pip download --no-deps --no-binary llama-cpp-python llama-cpp-python==0.3.36 -d /tmp/lc
    tar -xzf /tmp/lc/llama_cpp_python-0.3.36.tar.gz -C /tmp/lc
    /tmp/fx/bin/python scripts/convert_fixtures_to_gguf.py /tmp/lc/llama_cpp_python-0.3.36/vendor/llama.cpp [NAME…]
(/tmp/fx as in scripts/make_fixtures.py: torch, transformers, numpy.)
"""
import pathlib
import sys

LLAMA_CPP = pathlib.Path(sys.argv[1]).resolve()
sys.path.insert(0, str(LLAMA_CPP / "gguf-py"))
sys.path.insert(0, str(LLAMA_CPP))

import convert_hf_to_gguf  # noqa: E402
import conversion  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
MODELS = ROOT / "tests" / "fixtures" / "models"
# Not tiny-mistral: llama.cpp's Llama GGUF has no sliding window, so its logits would be another
# model's.
NAMES = ["tiny-llama", "tiny-qwen2", "tiny-qwen2-bf16", "tiny-qwen3", "tiny-gemma2",
         "tiny-gemma3", "tiny-phi3", "tiny-smollm3", "tiny-qwen3-yarn",
         "tiny-granite", "tiny-olmo2",
         # Qwen's vision-language models: their text model (the converter writes the vision
         # encoder to a separate mmproj file, which PocketLM does not read).
         "tiny-qwen2.5-vl", "tiny-qwen3-vl",
         # The decoder-based embedder of scripts/make_encoder_fixtures.py: its sentence-transformers
         # modules go along, so the converter records the pooling (`qwen3.pooling_type`).
         "tiny-qwen3-embedding",
         # EmbeddingGemma's (llama.cpp's `gemma-embedding`), its Dense modules converted too
         # (--sentence-transformers-dense-modules: `dense_2.weight`, `dense_3.weight`).
         "tiny-embeddinggemma"]


def placeholder_vocab(self):
    n = self.hparams["vocab_size"]
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(min(256, n - 3))]
    tokens += [f"tok{i}" for i in range(n - len(tokens))]
    types = [2, 3, 3] + [6] * (min(259, n) - 3) + [1] * (n - min(259, n))
    self.gguf_writer.add_tokenizer_model("llama")
    self.gguf_writer.add_token_list(tokens)
    self.gguf_writer.add_token_scores([0.0] * n)
    self.gguf_writer.add_token_types(types)


def all_subclasses(cls):
    for c in cls.__subclasses__():
        yield c
        yield from all_subclasses(c)


def main():
    # Model classes register as their modules are imported: import them all, then patch.
    import importlib
    import pkgutil
    for m in pkgutil.iter_modules(conversion.__path__):
        try:
            importlib.import_module(f"conversion.{m.name}")
        except ImportError:
            pass  # optional dependencies of architectures not converted here
    for cls in all_subclasses(conversion.ModelBase):
        if "set_vocab" in cls.__dict__ or cls is conversion.ModelBase:
            cls.set_vocab = placeholder_vocab
    conversion.ModelBase.set_vocab = placeholder_vocab
    import json
    import shutil
    import tempfile

    import torch
    from safetensors.torch import load_file, save_file
    # Names after the llama.cpp path convert only those.
    for name in sys.argv[2:] or NAMES:
        out = MODELS / f"{name}.gguf"
        with tempfile.TemporaryDirectory() as tmp:
            # The converter computes in the checkpoint's dtype (Gemma's 1 + w rounded to f16 or
            # bf16): give it the weights in f32, so the file holds exactly the reference's values.
            folder = pathlib.Path(tmp)
            shutil.copy(MODELS / name / "config.json", folder / "config.json")
            dense = sorted(p.parent.name for p in (MODELS / name).glob("*_Dense/config.json"))
            for extra in ["modules.json", "1_Pooling/config.json"] + [
                    f"{d}/{f}" for d in dense for f in ["config.json", "model.safetensors"]]:
                if (MODELS / name / extra).is_file():
                    (folder / extra).parent.mkdir(exist_ok=True)
                    shutil.copy(MODELS / name / extra, folder / extra)
            weights = load_file(str(MODELS / name / "model.safetensors"))
            save_file({k: v.to(torch.float32).contiguous() for k, v in weights.items()},
                      str(folder / "model.safetensors"), metadata={"format": "pt"})
            # Gemma's converter trims the embedding to the tokenizer's size: give the full size.
            config = json.loads((folder / "config.json").read_text())
            vocab = config.get("text_config", config)["vocab_size"]
            (folder / "tokenizer.json").write_text(json.dumps(
                {"model": {"vocab": {f"t{i}": i for i in range(vocab)}}, "added_tokens": []}))
            sys.argv = ["convert_hf_to_gguf.py", str(folder), "--outfile", str(out),
                        "--outtype", "f32"] + (["--sentence-transformers-dense-modules"]
                                               if dense else [])
            convert_hf_to_gguf.main()
        print(name, out.stat().st_size, "bytes")


if __name__ == "__main__":
    main()
