#!/usr/bin/env python3
"""Converts a sentence-transformers BERT folder (config.json, model.safetensors, tokenizer.json or
vocab.txt, modules.json, 1_Pooling/config.json) to llama.cpp's `bert` GGUF, without torch or
transformers: only the `gguf` package (gguf-py, 0.19) and numpy.

It writes what llama.cpp's own convert_hf_to_gguf.py (class BertModel, conversion/bert.py and
conversion/base.py) writes for the same folder: the same metadata keys, values and order
(general.* from gguf-py's Metadata heuristics, `bert.*` hyperparameters, causal attention false,
`bert.pooling_type` from the Pooling module of modules.json, `tokenizer.ggml.token_type_count`,
the phantom-space vocabulary: "##x" -> "x", any other non-control token -> "\u2581" + token, token
types, special token ids and add_*_token flags through gguf-py's SpecialVocab), the same tensor
names (gguf-py's tensor map; the pooler, `cls.*` heads and position_ids dropped), shapes, order
and bytes, with the same per-tensor type rules: `--outtype f32` writes everything as F32;
`--outtype f16` writes 2-D weights as F16 and keeps 1-D tensors, norms, biases, the position and
token-type embeddings in F32.

Checked against convert_hf_to_gguf.py on all-MiniLM-L6-v2 (f32 and f16): every metadata key and
value and every tensor's name, type, shape and bytes are identical. Differences by design: it
reads config.json directly where the real converter goes through transformers' AutoConfig (which
fills in BertConfig's defaults; the BERT defaults that matter are filled in here too), and it
computes `tokenizer.ggml.pre` from its own pure-Python BERT tokenizer (the same hash of the same
check text as the real converter, looked up in the WordPiece rows of its table), so a tokenizer
whose hash is not there is refused unless `--tokenizer-pre NAME` says what to write (llama.cpp
does not use the value for `bert` vocabularies). Added tokens that are not special (rare in BERT
folders) are written as USER_DEFINED without transformers' encode/decode round trip.
PyTorch `.bin` checkpoints are refused (they need torch).

Run (a venv with `pip install gguf==0.19.0 numpy` is enough; `make bench-browser` makes one):
    python3 scripts/st_to_gguf.py models/all-MiniLM-L6-v2 models/all-MiniLM-L6-v2.f32.gguf
    python3 scripts/st_to_gguf.py models/all-MiniLM-L6-v2 out.f16.gguf --outtype f16
The real converter, for comparison (needs torch and transformers):
    python convert_hf_to_gguf.py models/all-MiniLM-L6-v2 --outtype f32 --outfile ref.gguf
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import unicodedata
from pathlib import Path

import numpy as np

import gguf

logger = logging.getLogger("st-to-gguf")

# The check text of convert_hf_to_gguf.py's get_vocab_base_pre: its token ids (with [CLS] and
# [SEP]) are hashed to name the pre-tokenizer.
CHKTXT = '\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated) ✅ 🦙🦙 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ ------======= нещо на Български \'\'\'\'\'\'```````""""......!!!!!!?????? I\'ve been \'told he\'s there, \'RE you sure? \'M not sure I\'ll make it, \'D you like some tea? We\'Ve a\'lL'

# The rows of the real converter's hash table whose models are WordPiece (BERT) tokenizers. Where
# two rows share a hash, the later `if` wins there: bge-small-en-v1.5's "bert-bge" is overwritten
# by jina-embeddings-v2-base-en's "jina-v2-en" (the uncased BERT vocabulary of all-MiniLM-L6-v2).
WORDPIECE_PRE = {
    "0876d13b50744004aa9aeae05e7b0647eac9d801b5ba4668afc01e709c15e19f": "jina-v2-en",
    "8e62295832751ca1e8f92f2226f403dea30dc5165e448b5bfa05af5340c64ec7": "bert-bge-large",
    "c7699093ba4255a91e702aa38a596aa81669f3525dae06c2953267dde580f448": "jina-v1-en",
}

# transformers' BertConfig defaults, for keys a config.json leaves out (AutoConfig fills them in
# for the real converter).
BERT_DEFAULTS = {
    "vocab_size": 30522, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
    "intermediate_size": 3072, "max_position_embeddings": 512, "type_vocab_size": 2,
    "layer_norm_eps": 1e-12,
}

ARCHITECTURES = ("BertModel", "BertForMaskedLM", "BertForSequenceClassification")


# --- a pure-Python BERT tokenizer (HF tokenizers' BertNormalizer, BertPreTokenizer, WordPiece) ---

def _is_control(c: str) -> bool:
    if c in "\t\n\r":
        return False
    return unicodedata.category(c) in ("Cc", "Cf", "Cn", "Co", "Cs")


def _is_whitespace(c: str) -> bool:
    return c in "\t\n\r" or c.isspace()


def _is_chinese(cp: int) -> bool:
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
            or 0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F or 0x2B920 <= cp <= 0x2CEAF
            or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


def _is_punctuation(c: str) -> bool:
    return (c.isascii() and not c.isalnum() and c.isprintable() and not c.isspace()) \
        or unicodedata.category(c).startswith("P")


class WordPiece:
    def __init__(self, vocab: dict[str, int], *, clean_text=True, chinese=True, strip_accents=None,
                 lowercase=True, unk="[UNK]", prefix="##", max_chars=100, cls="[CLS]", sep="[SEP]"):
        self.vocab = vocab
        self.clean_text, self.chinese, self.lowercase = clean_text, chinese, lowercase
        self.strip_accents = lowercase if strip_accents is None else strip_accents
        self.unk, self.prefix, self.max_chars = unk, prefix, max_chars
        self.cls, self.sep = cls, sep

    def normalize(self, text: str) -> str:
        if self.clean_text:
            text = "".join(" " if _is_whitespace(c) else c for c in text
                           if not (c == "\0" or c == "\ufffd" or _is_control(c)))
        if self.chinese:
            text = "".join(f" {c} " if _is_chinese(ord(c)) else c for c in text)
        if self.strip_accents:
            text = "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")
        if self.lowercase:
            text = text.lower()
        return text

    def words(self, text: str) -> list[str]:
        out: list[str] = []
        current = ""
        for c in text:
            if _is_whitespace(c) or _is_punctuation(c):
                if current:
                    out.append(current)
                current = ""
                if _is_punctuation(c):
                    out.append(c)
            else:
                current += c
        if current:
            out.append(current)
        return out

    def word_ids(self, word: str) -> list[int]:
        if len(word) > self.max_chars:
            return [self.vocab[self.unk]]
        ids = []
        start = 0
        while start < len(word):
            end = len(word)
            found = None
            while start < end:
                piece = word[start:end] if start == 0 else self.prefix + word[start:end]
                if piece in self.vocab:
                    found = self.vocab[piece]
                    break
                end -= 1
            if found is None:
                return [self.vocab[self.unk]]
            ids.append(found)
            start = end
        return ids

    def encode(self, text: str) -> list[int]:
        ids = [self.vocab[self.cls]]
        for word in self.words(self.normalize(text)):
            ids.extend(self.word_ids(word))
        ids.append(self.vocab[self.sep])
        return ids


# --- the folder ---

def load_config(folder: Path) -> dict:
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    if config.get("model_type", "bert") != "bert":
        raise SystemExit(f"{folder}: model_type {config.get('model_type')!r}, not bert")
    archs = config.get("architectures") or ["BertModel"]
    if archs[0] not in ARCHITECTURES:
        raise SystemExit(f"{folder}: architecture {archs[0]} is not one of {', '.join(ARCHITECTURES)}")
    if config.get("position_embedding_type", "absolute") != "absolute":
        raise SystemExit(f"{folder}: position_embedding_type {config['position_embedding_type']!r} is not supported")
    return {**BERT_DEFAULTS, **config}


def load_tokenizer(folder: Path, vocab_size: int):
    """The vocabulary as transformers' fast tokenizer sees it: (tokens by id, added tokens by id
    with their `special` flag, a WordPiece tokenizer for the pre-tokenizer hash)."""
    special_names = {"unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]"}
    tj = folder / "tokenizer.json"
    config_path = folder / "tokenizer_config.json"
    tok_config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    if tj.is_file():
        t = json.loads(tj.read_text(encoding="utf-8"))
        model = t["model"]
        if model.get("type") != "WordPiece":
            raise SystemExit(f"{tj}: a {model.get('type')} tokenizer, not WordPiece")
        vocab = dict(model["vocab"])
        added = {a["id"]: (a["content"], bool(a.get("special"))) for a in t.get("added_tokens") or []}
        norm = t.get("normalizer") or {}
        if norm and norm.get("type") != "BertNormalizer":
            raise SystemExit(f"{tj}: normalizer {norm.get('type')}, not BertNormalizer")
        for i, (content, _) in added.items():
            vocab.setdefault(content, i)
        wp = WordPiece(vocab, clean_text=norm.get("clean_text", True), chinese=norm.get("handle_chinese_chars", True),
                       strip_accents=norm.get("strip_accents"), lowercase=norm.get("lowercase", True),
                       unk=model.get("unk_token", "[UNK]"), prefix=model.get("continuing_subword_prefix", "##"),
                       max_chars=model.get("max_input_chars_per_word", 100),
                       cls=tok_config.get("cls_token", special_names["cls"]), sep=tok_config.get("sep_token", special_names["sep"]))
    elif (folder / "vocab.txt").is_file():
        lines = (folder / "vocab.txt").read_text(encoding="utf-8").split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        vocab = {}
        for i, line in enumerate(lines):
            vocab.setdefault(line.rstrip("\r"), i)
        specials = {tok_config.get(f"{k}_token", d) for k, d in
                    (("unk", "[UNK]"), ("sep", "[SEP]"), ("pad", "[PAD]"), ("cls", "[CLS]"), ("mask", "[MASK]"))}
        added = {vocab[s]: (s, True) for s in specials if isinstance(s, str) and s in vocab}
        wp = WordPiece(vocab, chinese=tok_config.get("tokenize_chinese_chars", True),
                       strip_accents=tok_config.get("strip_accents"), lowercase=tok_config.get("do_lower_case", True),
                       unk=tok_config.get("unk_token", "[UNK]"), cls=tok_config.get("cls_token", "[CLS]"),
                       sep=tok_config.get("sep_token", "[SEP]"))
    else:
        raise SystemExit(f"{folder}: no tokenizer.json or vocab.txt")
    if max(vocab.values()) >= vocab_size:
        raise SystemExit(f"{folder}: token id {max(vocab.values())} is past vocab_size {vocab_size}")
    return vocab, added, wp


def does_token_look_special(token: str) -> bool:
    return (token in ("<pad>", "<mask>", "<2mass>", "[@BOS@]")
            or (token.startswith("<|") and token.endswith("|>"))
            or (token.startswith("<\uff5c") and token.endswith("\uff5c>"))
            or (token.startswith("<unused") and token.endswith(">")))


def vocab_base(vocab, added, vocab_size):
    reverse = {i: tok for tok, i in vocab.items()}
    tokens, toktypes = [], []
    for i in range(vocab_size):
        if i not in reverse:
            tokens.append(f"[PAD{i}]")
            toktypes.append(gguf.TokenType.UNUSED)
            continue
        token = reverse[i]
        if i in added:
            if added[i][1] or does_token_look_special(token):
                toktypes.append(gguf.TokenType.CONTROL)
            else:
                token = token.replace("\u2581", " ")
                toktypes.append(gguf.TokenType.USER_DEFINED)
        else:
            toktypes.append(gguf.TokenType.NORMAL)
        tokens.append(token)
    return tokens, toktypes


def normalizer_flags(folder: Path) -> dict[str, bool]:
    """gguf-py's SpecialVocab._parse_normalizer (llama.cpp's tree, newer than gguf 0.19.0)."""
    tj = folder / "tokenizer.json"
    flags: dict[str, bool | None] = {"lowercase": None, "strip_accents": None}

    def parse(n: dict) -> None:
        kind = n.get("type")
        if kind == "Lowercase":
            flags["lowercase"] = True
        elif kind == "StripAccents":
            flags["strip_accents"] = True
        elif kind == "BertNormalizer":
            for key in ("lowercase", "strip_accents"):
                if key in n:
                    flags[key] = n[key]
        elif kind == "Sequence":
            for inner in n.get("normalizers", []):
                parse(inner)

    if tj.is_file() and (normalizer := json.loads(tj.read_text(encoding="utf-8")).get("normalizer")):
        parse(normalizer)
    return {f"tokenizer.ggml.normalizer.{k}": v for k, v in flags.items() if v is not None}


def pooling_type(folder: Path):
    modules = folder / "modules.json"
    if not modules.is_file():
        return None
    path = next((m["path"] for m in json.loads(modules.read_text(encoding="utf-8")) if m["type"].endswith("Pooling")), None)
    if path is None:
        return None
    pooling = json.loads((folder / path / "config.json").read_text(encoding="utf-8"))
    mapping = {"mean": gguf.PoolingType.MEAN, "cls": gguf.PoolingType.CLS, "lasttoken": gguf.PoolingType.LAST}
    if pooling.get("pooling_mode_mean_tokens"):
        return gguf.PoolingType.MEAN
    if pooling.get("pooling_mode_cls_token"):
        return gguf.PoolingType.CLS
    if pooling.get("pooling_mode_lasttoken"):
        return gguf.PoolingType.LAST
    if pooling.get("pooling_mode") in mapping:
        return mapping[pooling["pooling_mode"]]
    raise SystemExit("Only MEAN, CLS, and LAST pooling types supported")


def tensor_sources(folder: Path):
    """(name, LocalTensor) in the real converter's order: each part's tensors sorted by name."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        parts = sorted(dict.fromkeys(weight_map.values()))
    else:
        parts = sorted(p.name for p in folder.iterdir() if p.name.startswith("model") and p.name.endswith(".safetensors"))
    if not parts:
        raise SystemExit(f"{folder}: no model*.safetensors (PyTorch .bin checkpoints need torch: not supported)")
    for part in parts:
        with gguf.utility.SafetensorsLocal(folder / part) as tensors:
            yield from tensors.items()


def to_numpy(t) -> np.ndarray:
    raw = t.mmap_bytes()
    if t.dtype == "F32":
        data = raw.view(np.float32)
    elif t.dtype == "F16":
        data = raw.view(np.float16)
    elif t.dtype == "BF16":
        data = (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    elif t.dtype == "F64":
        data = raw.view(np.float64).astype(np.float32)
    else:
        raise SystemExit(f"tensor dtype {t.dtype} is not supported")
    return data.reshape(t.shape)


def hf_name(name: str, labels) -> str | None:
    """BertModel.filter_tensors and TextModel's, or None for a tensor that is not written."""
    if name.startswith("bert."):
        name = name[5:]
    if name.endswith(".gamma"):
        name = name[:-6] + ".weight"
    if name.endswith(".beta"):
        name = name[:-5] + ".bias"
    if name in ("embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias"):
        return None
    if name.startswith(("cls.predictions", "cls.seq_relationship")):
        return None
    if name.endswith((".attention.masked_bias", ".attention.bias", ".rotary_emb.inv_freq")):
        return None
    if "language_model." in name:
        name = name.replace("language_model.", "")
    if labels and name in ("classifier.weight", "classifier.bias"):
        name = name.replace("classifier.", "classifier.out_proj.")
    return name


def convert(folder: Path, out: Path, outtype: str, tokenizer_pre: str | None) -> None:
    hparams = load_config(folder)
    ftype = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16}[outtype]
    arch = gguf.MODEL_ARCH.BERT
    block_count = hparams["num_hidden_layers"]
    tensor_map = gguf.get_tensor_name_map(arch, block_count)
    labels = hparams.get("id2label")
    if labels and len(labels) == 2 and str(labels.get("0", labels.get(0))) == "LABEL_0":
        labels = None
    writer = gguf.GGUFWriter(path=None, arch=gguf.MODEL_ARCH_NAMES[arch])

    def matches(name, key, bid):
        if key not in gguf.MODEL_TENSORS[arch]:
            return False
        key_name = gguf.TENSOR_NAMES[key]
        if "{bid}" in key_name:
            if bid is None:
                return False
            key_name = key_name.format(bid=bid)
        elif bid is not None:
            return False
        return name == key_name + ".weight"

    # Tensors first: the real converter adds them before the metadata, and the parameter count
    # (general.size_label) comes from them.
    for name, source in tensor_sources(folder):
        name = hf_name(name, labels)
        if name is None:
            continue
        data = to_numpy(source)
        bid = next((int(p) for p in name.split(".") if p.isdecimal()), None)
        new_name = tensor_map.get_name(key=name, try_suffixes=(".weight", ".bias"))
        if new_name is None:
            raise SystemExit(f"Can not map tensor {name!r}")
        if data.ndim <= 1 or new_name.endswith("_norm.weight"):
            qtype = gguf.GGMLQuantizationType.F32
        elif any(matches(new_name, k, bid) for k in (gguf.MODEL_TENSOR.POS_EMBD, gguf.MODEL_TENSOR.TOKEN_TYPES)) \
                or new_name[-7:] not in (".weight", ".lora_a", ".lora_b"):
            qtype = gguf.GGMLQuantizationType.F32
        elif ftype == gguf.LlamaFileType.ALL_F32:
            qtype = gguf.GGMLQuantizationType.F32
        else:
            qtype = gguf.GGMLQuantizationType.F16
        data = gguf.quants.quantize(data, qtype)
        logger.info("%-32s %s --> %s, shape = {%s}", new_name + ",", source.dtype, qtype.name, ", ".join(str(n) for n in reversed(data.shape)))
        writer.add_tensor(new_name, data, raw_dtype=qtype)

    # prepare_metadata: type, general.*, hyperparameters, quantization version, vocabulary.
    total_params, shared_params, expert_params, expert_count = writer.get_total_parameter_count()
    metadata = gguf.Metadata.load(None, folder, None, total_params)
    if metadata.name is None:
        metadata.name = folder.name
    if metadata.size_label is None and total_params > 0:
        metadata.size_label = gguf.size_label(total_params, shared_params, expert_params, expert_count)
    writer.add_type(gguf.GGUFType.MODEL)
    metadata.set_gguf_meta_model(writer)

    writer.add_block_count(block_count)
    writer.add_context_length(hparams["max_position_embeddings"])
    writer.add_embedding_length(hparams["hidden_size"])
    writer.add_feed_forward_length(hparams["intermediate_size"])
    writer.add_head_count(hparams["num_attention_heads"])
    writer.add_layer_norm_eps(hparams["layer_norm_eps"])
    writer.add_file_type(ftype)
    writer.add_causal_attention(False)
    if (pooling := pooling_type(folder)) is not None:
        writer.add_pooling_type(pooling)
    if labels:
        writer.add_classifier_output_labels([v for _, v in sorted((int(k), v) for k, v in labels.items())])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)

    vocab_size = hparams["vocab_size"]
    vocab, added, wp = load_tokenizer(folder, vocab_size)
    tokens, toktypes = vocab_base(vocab, added, vocab_size)
    if tokenizer_pre is None:
        chkhsh = hashlib.sha256(str(wp.encode(CHKTXT)).encode()).hexdigest()
        tokenizer_pre = WORDPIECE_PRE.get(chkhsh)
        if tokenizer_pre is None:
            raise SystemExit(f"the tokenizer's pre-tokenizer hash {chkhsh} is not a known WordPiece one: "
                             "pass --tokenizer-pre NAME (llama.cpp ignores it for bert vocabularies)")
    writer.add_token_type_count(hparams["type_vocab_size"])

    def phantom(tok, toktype):
        if toktype == gguf.TokenType.CONTROL:
            return tok
        if tok.startswith("##"):
            return tok[2:]
        return "\u2581" + tok

    tokens = list(map(phantom, tokens, toktypes))
    writer.add_tokenizer_model("bert")
    writer.add_tokenizer_pre(tokenizer_pre)
    writer.add_token_list(tokens)
    writer.add_token_types(toktypes)
    special_vocab = gguf.SpecialVocab(folder, n_vocab=len(tokens))
    special_vocab.add_to_gguf(writer)
    if not hasattr(special_vocab, "normalizer_lowercase"):
        # gguf 0.19.0 on PyPI predates the normalizer keys that llama.cpp's own gguf-py (and so
        # convert_hf_to_gguf.py) writes from tokenizer.json: write them the same way here.
        for key, value in normalizer_flags(folder).items():
            writer.add_bool(key, value)

    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    writer.write_header_to_file(path=partial)
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    partial.replace(out)
    logger.info("wrote %s (%s, %d tensors, %d parameters)", out, outtype, len(writer.tensors[0]) if writer.tensors else 0, total_params)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="the sentence-transformers folder")
    parser.add_argument("out", type=Path, help="the GGUF file to write")
    parser.add_argument("--outtype", choices=("f32", "f16"), default="f32")
    parser.add_argument("--tokenizer-pre", help="tokenizer.ggml.pre to write instead of the one the hash names")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(name)s: %(message)s")
    if not args.folder.is_dir():
        sys.exit(f"{args.folder} is not a folder")
    convert(args.folder, args.out, args.outtype, args.tokenizer_pre)


if __name__ == "__main__":
    main()
