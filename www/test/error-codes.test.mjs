// The error codes agree everywhere they are listed: the engine's `Error::code()` in src/error.rs
// (the truth for the engine's codes, parsed from the Rust source), the codes the JavaScript layer
// raises (found in src/*.js, and listed as JS_CODES in src/errors.js), the PocketLMErrorCode union
// in src/index.d.ts and the error table of README.md.
import { test } from "node:test";
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";
import { readFileSync, readdirSync } from "node:fs";
import { JS_CODES } from "../src/errors.js";

const WWW = join(dirname(fileURLToPath(import.meta.url)), "..");
const ROOT = join(WWW, "..");
const read = (...p) => readFileSync(join(...p), "utf8");

const sorted = (codes) => [...new Set(codes)].sort();
const all = (text, re) => [...text.matchAll(re)].map((m) => m[1]);

/** The string literals `Error::code()` returns, one per arm of its match. */
function rustCodes() {
  const src = read(ROOT, "src", "error.rs");
  const start = src.indexOf("pub fn code(&self) -> &'static str {");
  assert.notEqual(start, -1, "src/error.rs has no `pub fn code(&self) -> &'static str`");
  // The function's body: up to its closing brace at the same indentation as `pub fn`.
  const indent = src.slice(src.lastIndexOf("\n", start) + 1, start);
  const end = src.indexOf(`\n${indent}}`, start);
  const body = src.slice(start, end);
  const arms = body.split("\n").filter((l) => l.includes("=>"));
  const codes = all(body, /=>\s*"([^"]*)"/g);
  assert.equal(codes.length, arms.length, `every arm of Error::code() returns a literal:\n${arms.join("\n")}`);
  assert.ok(codes.length >= 30, `only ${codes.length} codes found in Error::code()`);
  return sorted(codes);
}

/** The codes src/*.js raises: `new PocketLMError("code", …)`, `toPocketLMError(e, "code")`, the
 * fallbacks of toPocketLMError and deserializeError, and `code: "…"` in serialized errors. */
function jsRaised() {
  const codes = [];
  for (const f of readdirSync(join(WWW, "src")).filter((f) => f.endsWith(".js"))) {
    const src = read(WWW, "src", f);
    codes.push(
      ...all(src, /new PocketLMError\(\s*"([^"]*)"/g),
      ...all(src, /toPocketLMError\([^()]*,\s*"([^"]*)"\s*\)/g),
      ...all(src, /fallbackCode = "([^"]*)"/g),
      ...all(src, /\bcode \?\? "([^"]*)"/g),
      ...all(src, /\bcode: "([^"]*)"/g),
    );
  }
  return sorted(codes);
}

/** The members of `export type PocketLMErrorCode = | "a" | "b" …;`. */
function declaredCodes() {
  const src = read(WWW, "src", "index.d.ts");
  const m = /export type PocketLMErrorCode =([^;]*);/.exec(src);
  assert.ok(m, "index.d.ts has no `export type PocketLMErrorCode = …;`");
  const body = m[1].replace(/\/\/.*$/gm, "");
  const members = body.split("|").map((s) => s.trim()).filter(Boolean);
  for (const s of members) assert.match(s, /^"[a-z_]+"$/, `PocketLMErrorCode has a member that is not a code literal: ${s}`);
  return sorted(members.map((s) => s.slice(1, -1)));
}

/** The codes in the first column of the table under "## Errors" in README.md. */
function readmeCodes() {
  const src = read(WWW, "README.md");
  const start = src.indexOf("\n## Errors\n");
  assert.notEqual(start, -1, "README.md has no ## Errors section");
  const end = src.indexOf("\n## ", start + 1);
  const rows = src.slice(start, end).split("\n").filter((l) => l.startsWith("| `"));
  assert.ok(rows.length > 10, "README.md's error table has no rows");
  return sorted(rows.flatMap((row) => all(row.split("|")[1], /`([^`]*)`/g)));
}

const diff = (a, b) => ({ missing: b.filter((c) => !a.includes(c)), extra: a.filter((c) => !b.includes(c)) });

test("the JavaScript layer's codes: JS_CODES lists exactly the codes src/*.js raises", () => {
  const raised = jsRaised();
  assert.ok(raised.includes("worker") && raised.includes("quota") && raised.includes("internal"), JSON.stringify(raised));
  assert.deepEqual(sorted(Object.values(JS_CODES)), raised, JSON.stringify(diff(sorted(Object.values(JS_CODES)), raised)));
});

test("index.d.ts's PocketLMErrorCode is exactly Error::code()'s codes and the JavaScript layer's", () => {
  const expected = sorted([...rustCodes(), ...Object.values(JS_CODES)]);
  const declared = declaredCodes();
  assert.deepEqual(declared, expected, `index.d.ts against the code: ${JSON.stringify(diff(declared, expected))}`);
});

test("README.md's error table lists exactly Error::code()'s codes and the JavaScript layer's", () => {
  const expected = sorted([...rustCodes(), ...Object.values(JS_CODES)]);
  const documented = readmeCodes();
  assert.deepEqual(documented, expected, `README.md against the code: ${JSON.stringify(diff(documented, expected))}`);
});
