// The live connection: server-sent events from /api/stream. Every (re)connection starts with a
// `hello` event, on which the console re-fetches everything it shows; events in between say
// what changed. A stream the browser gave up on (the server answered with an error) is opened
// again after a pause, after checking that the session still holds.

import { loadSession } from "./api.js";

export function connectLive({ onHello, onEvent, onState, onSignedOut }) {
  let es = null;
  let retry = null;
  const names = ["request", "paged", "decided", "step", "run", "notification", "lagged"];

  function open() {
    onState("connecting");
    es = new EventSource("/api/stream");
    es.addEventListener("hello", () => { onState("live"); onHello(); });
    for (const n of names) {
      es.addEventListener(n, (e) => {
        let data = {};
        try { data = JSON.parse(e.data); } catch (_) { /* keep {} */ }
        onEvent(n, data);
      });
    }
    es.onerror = () => {
      onState("reconnecting");
      if (es.readyState === EventSource.CLOSED) {
        es.close();
        clearTimeout(retry);
        retry = setTimeout(async () => {
          const s = await loadSession().catch(() => undefined);
          if (s === null) onSignedOut();
          else open();
        }, 1500);
      }
    };
  }

  open();
  return { close() { clearTimeout(retry); if (es) es.close(); onState("off"); } };
}
