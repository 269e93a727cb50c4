// The extension's service worker. Chrome stops it whenever it is idle (after about 30 s) and
// starts it again for the next event, so it holds no state: the model lives in the side panel's
// Web Worker (sidepanel.js), which Chrome keeps while the panel is open. Everything here is
// registered at the top level, as MV3 requires, and works the same in every new instance.
chrome.sidePanel.setPanelBehavior({ openPanelOnActionClick: true }).catch((e) => console.error(e));

// Which instance of the worker answers {type: "background"} (a fresh one after Chrome stopped it).
const instance = { id: crypto.randomUUID(), startedAt: Date.now() };
chrome.runtime.onMessage.addListener((message, _sender, reply) => {
  if (message?.type === "background") reply(instance);
});
