// A model folder for browser tests that need a tokenizer able to write any JSON: the tiny random
// Llama's safetensors with a byte-level BPE tokenizer of its 128 ids.
import assert from "node:assert/strict";
import { copyFile, mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

/** The tiny Llama's safetensors folder with a byte-level BPE tokenizer of its 128 ids (as
 * tests/common/mod.rs makes for the native tests: the printable ASCII bytes, the newline and a
 * few JSON pieces), so that any JSON can be written, and a chat template without tools. */
export async function tinyByteFolder() {
  const dir = await mkdtemp(join(tmpdir(), "pocketlm-tiny-bytes-"));
  const src = join(ROOT, "tests", "fixtures", "models", "tiny-llama");
  for (const f of ["config.json", "model.safetensors"]) await copyFile(join(src, f), join(dir, f));
  const words = ["<unk>", "<s>", "</s>"];
  for (let b = 0x20; b < 0x7f; b++) words.push(b === 0x20 ? "\u0120" : String.fromCharCode(b));
  words.push("\u010a");
  words.push(...['{"', '":', '",', '"}', '\u0120"', ",\u0120", ":\u0120", "true", "false", "null", "ab", "er", "in"]);
  words.push(...["on", "an", "re", "12", "00", "ye", "no", "yes", '["', '"]', "},", "{}", "[]", "\u0120{", "red", "blue"]);
  assert.equal(words.length, 128);
  const special = (id, content) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
  const byteLevel = { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true };
  const tokenizer = {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: [special(0, "<unk>"), special(1, "<s>"), special(2, "</s>")],
    normalizer: null,
    pre_tokenizer: byteLevel,
    post_processor: null,
    decoder: byteLevel,
    model: { type: "BPE", dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, ignore_merges: false, vocab: Object.fromEntries(words.map((w, i) => [w, i])), merges: [] },
  };
  await writeFile(join(dir, "tokenizer.json"), JSON.stringify(tokenizer));
  const template = "{% for m in messages %}<s> {{ m['role'] }} {{ m['content'] }} </s> {% endfor %}{% if add_generation_prompt %}<s> assistant {% endif %}";
  await writeFile(join(dir, "tokenizer_config.json"), JSON.stringify({ chat_template: template, bos_token: "<s>", eos_token: "</s>" }));
  return dir;
}

