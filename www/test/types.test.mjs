// The .d.ts files: `tsc --noEmit --strict` on test/types/usage.ts, which uses the whole public API
// through the package's own name (its `@ts-expect-error` lines are mistakes the types must
// reject), and the names they declare against what src/index.js and src/engine.js export at run
// time. TypeScript is a devDependency of www/ (pinned in package.json, installed by make setup).
import { test } from "node:test";
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";
import { createRequire } from "node:module";
import { spawnSync } from "node:child_process";

const WWW = join(dirname(fileURLToPath(import.meta.url)), "..");
const TSCONFIG = join(WWW, "test", "types", "tsconfig.json");
const require = createRequire(import.meta.url);

function typescript() {
  try {
    return { ts: require("typescript"), tsc: require.resolve("typescript/bin/tsc") };
  } catch (e) {
    assert.fail(`typescript is not installed: run \`npm ci\` in www/ (make setup) (${e.message})`);
  }
}

test("tsc --noEmit --strict accepts test/types/usage.ts, which uses the whole API", () => {
  const { ts, tsc } = typescript();
  assert.equal(ts.version, require("../package.json").devDependencies.typescript, "the installed typescript is not the pinned one: run npm ci in www/");
  const r = spawnSync(process.execPath, [tsc, "-p", TSCONFIG, "--noEmit", "--strict", "--listFiles"], { cwd: WWW, encoding: "utf8" });
  const checked = r.stdout.split("\n").filter((l) => l.includes("/www/src/") || l.includes("/www/test/types/"));
  assert.equal(r.status, 0, `tsc found errors:\n${r.stdout}${r.stderr}`);
  // The package's own declarations, reached through package.json's exports.
  for (const f of ["src/index.d.ts", "src/engine.d.ts", "test/types/usage.ts"]) {
    assert.ok(checked.some((l) => l.endsWith(`/www/${f}`)), `tsc did not check ${f}:\n${checked.join("\n")}`);
  }
});

/** The declarations tsc resolved for `pocketlm` and `pocketlm/engine` from usage.ts. */
function declarations() {
  const { ts } = typescript();
  const { config } = ts.readConfigFile(TSCONFIG, ts.sys.readFile);
  const { options, fileNames } = ts.parseJsonConfigFileContent(config, ts.sys, dirname(TSCONFIG));
  const program = ts.createProgram(fileNames, options);
  const checker = program.getTypeChecker();
  const unalias = (s) => (s.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(s) : s);
  const module = (file) => {
    const sf = program.getSourceFile(join(WWW, "src", file));
    assert.ok(sf, `${file} is not in the program`);
    const exports = checker.getExportsOfModule(checker.getSymbolAtLocation(sf)).map((s) => [s.name, unalias(s)]);
    return {
      // Names with a value at run time (not types and interfaces only).
      values: exports.filter(([, s]) => s.flags & ts.SymbolFlags.Value).map(([n]) => n).sort(),
      classMembers(name) {
        const [, cls] = exports.find(([n]) => n === name);
        const decl = cls.valueDeclaration;
        const own = (s) => s.declarations?.some((d) => d.parent === decl);
        const statics = checker.getTypeOfSymbolAtLocation(cls, decl).getProperties().filter(own).map((s) => s.name);
        const instance = checker.getDeclaredTypeOfSymbol(cls).getProperties().filter(own).map((s) => s.name);
        return { statics: statics.sort(), instance: instance.sort() };
      },
    };
  };
  return { index: module("index.d.ts"), engine: module("engine.d.ts") };
}

test("the .d.ts files declare exactly what src/index.js and src/engine.js export", async () => {
  const d = declarations();
  const index = await import("../src/index.js");
  const engine = await import("../src/engine.js");
  assert.deepEqual(d.index.values, Object.keys(index).sort(), "index.d.ts against src/index.js");
  assert.deepEqual(d.engine.values, Object.keys(engine).sort(), "engine.d.ts against src/engine.js");
  const statics = (cls) => Object.getOwnPropertyNames(cls).filter((n) => !["length", "name", "prototype"].includes(n)).sort();
  const methods = (cls) => Object.getOwnPropertyNames(cls.prototype).filter((n) => n !== "constructor");
  // PocketLM: its methods and getters, the EventTarget methods it declares again for its events, and
  // the three API objects its constructor sets on each instance.
  const lm = d.index.classMembers("PocketLM");
  assert.deepEqual(lm.statics, statics(index.PocketLM), "PocketLM's static members");
  const runtime = [...methods(index.PocketLM), ...Object.getOwnPropertyNames(EventTarget.prototype), "chat", "completions", "embeddings"];
  assert.deepEqual(lm.instance.filter((n) => !runtime.includes(n)), [], "PocketLM members declared but missing at run time");
  assert.deepEqual(methods(index.PocketLM).filter((n) => !lm.instance.includes(n)), [], "PocketLM members not declared");
  const e = d.engine.classMembers("Engine");
  assert.deepEqual(e.statics, statics(engine.Engine), "Engine's static members");
  assert.deepEqual(e.instance, methods(engine.Engine).sort(), "Engine's members");
});
