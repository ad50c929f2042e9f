// The residents' service worker (scope /residents/): shows each nudge the
// gateway pushes, in the language the page was last viewed in (the `lang` of
// this script's URL), and tells any open resident page about it.
"use strict";

const LANG = new URL(self.location.href).searchParams.get("lang") || "";

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

// The gateway's nudge: {nudge_id, zone, at, laeq, kind, message: {lang: text}}.
function readNudge(data) {
  if (!data) return {};
  try {
    const nudge = data.json();
    return nudge && typeof nudge === "object" ? nudge : {};
  } catch (e) {
    return { text: data.text() };
  }
}

function textOf(nudge) {
  const messages = nudge.message && typeof nudge.message === "object" ? nudge.message : {};
  if (typeof messages[LANG] === "string") return messages[LANG];
  for (const wanted of self.navigator.languages || []) {
    const base = String(wanted).split("-")[0];
    if (typeof messages[wanted] === "string") return messages[wanted];
    if (typeof messages[base] === "string") return messages[base];
  }
  const first = Object.values(messages).find((v) => typeof v === "string");
  return first || nudge.text || "hushlight";
}

async function show(nudge) {
  const text = textOf(nudge);
  const zone = typeof nudge.zone === "string" ? nudge.zone : "";
  // one notification per street: a newer nudge replaces the older one
  await self.registration.showNotification(text, {
    body: zone,
    icon: "/residents/icon.svg",
    tag: `hushlight-${zone}`,
    lang: LANG || undefined,
    timestamp: typeof nudge.at === "number" ? nudge.at : Date.now(),
    data: { zone, nudge_id: nudge.nudge_id || null, url: zone ? `/residents/${zone}` : "/residents/" },
  });
  const pages = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
  for (const page of pages) page.postMessage({ type: "nudge", zone, text, nudge_id: nudge.nudge_id || null });
}

self.addEventListener("push", (event) => {
  event.waitUntil(show(readNudge(event.data)));
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const url = (event.notification.data && event.notification.data.url) || "/residents/";
  event.waitUntil(
    self.clients.matchAll({ type: "window", includeUncontrolled: true }).then((pages) => {
      const open = pages.find((p) => new URL(p.url).pathname === url);
      return open ? open.focus() : self.clients.openWindow(url);
    }),
  );
});
