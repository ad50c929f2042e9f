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

// The streets this browser subscribed to, written by the page (resident.js).
const ZONES_CACHE = "hushlight-resident";
const ZONES_URL = "/residents/zones.json";

async function storedZones() {
  const reply = await (await caches.open(ZONES_CACHE)).match(ZONES_URL);
  if (!reply) return [];
  const zones = await reply.json();
  return Array.isArray(zones) ? zones.filter((z) => typeof z === "string") : [];
}

function keyBytes(base64url) {
  const b64 = base64url.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((base64url.length + 3) % 4);
  return Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
}

function send(method, body) {
  return fetch("/api/subscriptions", {
    method,
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
}

// The push service replaced (or dropped) this browser's subscription: without
// telling the gateway, the resident would silently stop hearing of nudges.
async function renew(event) {
  const zones = await storedZones();
  if (!zones.length) return "no streets";
  let subscription = event.newSubscription || null;
  if (!subscription) {
    const reply = await fetch("/api/push/key");
    if (!reply.ok) return `no key (HTTP ${reply.status})`;
    const applicationServerKey = keyBytes((await reply.json()).key);
    subscription = await self.registration.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey });
  }
  const stored = await send("POST", { subscription: subscription.toJSON(), zones });
  const old = event.oldSubscription;
  if (old && old.endpoint !== subscription.endpoint) await send("DELETE", { endpoint: old.endpoint });
  return `HTTP ${stored.status}`;
}
self.renew = renew; // callable from DevTools and the tests, which cannot fire the event itself

self.addEventListener("pushsubscriptionchange", (event) => {
  event.waitUntil(renew(event));
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
