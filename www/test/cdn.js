// Imports the package from the origin given as ?pkg= (as a page would from a CDN): an external
// script, so that it also runs under a CSP that refuses inline scripts.
const pkg = new URL(location.href).searchParams.get("pkg");
try {
  globalThis.pocketlm = await import(`${pkg}/src/index.js`);
  document.getElementById("out").textContent = "ready";
} catch (e) {
  globalThis.importError = String(e?.message ?? e);
  document.getElementById("out").textContent = `import failed: ${globalThis.importError}`;
}
