// The resident's page of one zone (/residents/<zone>): turns Web Push on or off
// for the zone and says what is sent, when and how often at most, from the
// gateway's own figures (/api/residents/<zone>). No build step, no library.
"use strict";

// The page's own words; a zone language missing here shows them in English
// (the nudge text itself always comes in the zone's language, from its config).
const STRINGS = {
  en: {
    title: "Quiet nights in {zone}",
    intro: "When the sensors in this street measure loud noise at night, the street lights change to ask passers-by for quiet. With notifications on, this phone gets the same message.",
    subscribe: "Turn notifications on",
    unsubscribe: "Turn notifications off",
    checking: "Checking this browser…",
    on: "Notifications are on for this street.",
    off: "Notifications are off.",
    unsupported: "This browser cannot receive notifications from a web page. On an iPhone, add this page to the home screen first.",
    denied: "Notifications are blocked for this site in the browser's settings; allow them there, then try again.",
    push_off: "This street's service does not send notifications at the moment.",
    busy: "One moment…",
    too_often: "Too many attempts from this network; try again in {s} s.",
    full: "The service takes no new subscriptions for now; try again later.",
    failed: "That did not work: {e}",
    what_title: "What you will receive",
    what_message: "Only this message, in your language:",
    when: "Only during these hours ({tz}):",
    every_day: "every day",
    often: "How often, at most:",
    interval: "At most one notification every {m} minutes.",
    per_hour: "The street asks for quiet at most {n} times an hour.",
    controls: "About {p} % of loud moments send nothing, on purpose: they let the city measure whether asking helps.",
    ttl: "A notification that cannot reach this phone within {m} minutes is dropped, not sent late.",
    not_title: "What will not be sent or kept",
    not_sent: "No advertising, no news, nothing about other streets, nothing outside the hours above.",
    not_kept: "The service keeps only this browser's push address and keys and the streets you chose: no name, no e-mail address, no location. Turning notifications off deletes them.",
    last: "Last message: {t}",
    no_zone: "There is no street {zone} on this service.",
  },
  nl: {
    title: "Rustige nachten in {zone}",
    intro: "Als de sensoren in deze straat 's nachts veel lawaai meten, veranderen de straatlichten om voorbijgangers om stilte te vragen. Met meldingen aan krijgt deze telefoon dezelfde boodschap.",
    subscribe: "Meldingen aanzetten",
    unsubscribe: "Meldingen uitzetten",
    checking: "Deze browser wordt nagekeken…",
    on: "Meldingen staan aan voor deze straat.",
    off: "Meldingen staan uit.",
    unsupported: "Deze browser kan geen meldingen van een webpagina ontvangen. Zet deze pagina op een iPhone eerst op het beginscherm.",
    denied: "Meldingen zijn voor deze site geblokkeerd in de instellingen van de browser; sta ze daar toe en probeer opnieuw.",
    push_off: "De dienst van deze straat stuurt op dit moment geen meldingen.",
    busy: "Even geduld…",
    too_often: "Te veel pogingen vanaf dit netwerk; probeer opnieuw over {s} s.",
    full: "De dienst neemt voorlopig geen nieuwe inschrijvingen aan; probeer later opnieuw.",
    failed: "Dat is niet gelukt: {e}",
    what_title: "Wat u ontvangt",
    what_message: "Alleen deze boodschap, in uw taal:",
    when: "Alleen tijdens deze uren ({tz}):",
    every_day: "elke dag",
    often: "Hoe vaak, hoogstens:",
    interval: "Hoogstens één melding per {m} minuten.",
    per_hour: "De straat vraagt hoogstens {n} keer per uur om stilte.",
    controls: "Bij ongeveer {p} % van de lawaaierige momenten wordt bewust niets gestuurd: zo kan de stad meten of de vraag helpt.",
    ttl: "Een melding die deze telefoon niet binnen {m} minuten bereikt, vervalt en komt niet later nog.",
    not_title: "Wat niet wordt gestuurd of bewaard",
    not_sent: "Geen reclame, geen nieuws, niets over andere straten, niets buiten de uren hierboven.",
    not_kept: "De dienst bewaart alleen het pushadres en de sleutels van deze browser en de straten die u koos: geen naam, geen e-mailadres, geen locatie. Meldingen uitzetten wist ze.",
    last: "Laatste boodschap: {t}",
    no_zone: "Deze dienst kent geen straat {zone}.",
  },
  fr: {
    title: "Des nuits calmes à {zone}",
    intro: "Quand les capteurs de cette rue mesurent beaucoup de bruit la nuit, l'éclairage public change pour demander le calme aux passants. Avec les notifications activées, ce téléphone reçoit le même message.",
    subscribe: "Activer les notifications",
    unsubscribe: "Désactiver les notifications",
    checking: "Vérification du navigateur…",
    on: "Les notifications sont activées pour cette rue.",
    off: "Les notifications sont désactivées.",
    unsupported: "Ce navigateur ne peut pas recevoir de notifications d'une page web. Sur un iPhone, ajoutez d'abord cette page à l'écran d'accueil.",
    denied: "Les notifications de ce site sont bloquées dans les réglages du navigateur ; autorisez-les puis réessayez.",
    push_off: "Le service de cette rue n'envoie pas de notifications en ce moment.",
    busy: "Un instant…",
    too_often: "Trop de tentatives depuis ce réseau ; réessayez dans {s} s.",
    full: "Le service n'accepte plus de nouvelles inscriptions pour l'instant ; réessayez plus tard.",
    failed: "Cela n'a pas fonctionné : {e}",
    what_title: "Ce que vous recevrez",
    what_message: "Uniquement ce message, dans votre langue :",
    when: "Uniquement pendant ces heures ({tz}) :",
    every_day: "tous les jours",
    often: "À quelle fréquence, au plus :",
    interval: "Au plus une notification toutes les {m} minutes.",
    per_hour: "La rue demande le calme au plus {n} fois par heure.",
    controls: "Pour environ {p} % des moments bruyants, rien n'est envoyé, volontairement : la ville mesure ainsi si la demande aide.",
    ttl: "Une notification qui ne parvient pas à ce téléphone dans les {m} minutes est abandonnée, pas envoyée en retard.",
    not_title: "Ce qui ne sera ni envoyé ni conservé",
    not_sent: "Pas de publicité, pas d'actualités, rien sur d'autres rues, rien en dehors des heures ci-dessus.",
    not_kept: "Le service ne conserve que l'adresse push et les clés de ce navigateur et les rues choisies : ni nom, ni adresse e-mail, ni position. Désactiver les notifications les efface.",
    last: "Dernier message : {t}",
    no_zone: "Ce service ne connaît pas de rue {zone}.",
  },
  de: {
    title: "Ruhige Nächte in {zone}",
    intro: "Wenn die Sensoren in dieser Straße nachts viel Lärm messen, ändert sich die Straßenbeleuchtung, um Passanten um Ruhe zu bitten. Mit eingeschalteten Mitteilungen erhält dieses Telefon dieselbe Nachricht.",
    subscribe: "Mitteilungen einschalten",
    unsubscribe: "Mitteilungen ausschalten",
    checking: "Dieser Browser wird geprüft…",
    on: "Mitteilungen sind für diese Straße eingeschaltet.",
    off: "Mitteilungen sind ausgeschaltet.",
    unsupported: "Dieser Browser kann keine Mitteilungen einer Webseite empfangen. Auf einem iPhone diese Seite zuerst zum Home-Bildschirm hinzufügen.",
    denied: "Mitteilungen dieser Seite sind in den Browser-Einstellungen blockiert; dort erlauben und erneut versuchen.",
    push_off: "Der Dienst dieser Straße sendet zurzeit keine Mitteilungen.",
    busy: "Einen Moment…",
    too_often: "Zu viele Versuche aus diesem Netz; in {s} s erneut versuchen.",
    full: "Der Dienst nimmt vorerst keine neuen Anmeldungen an; später erneut versuchen.",
    failed: "Das hat nicht geklappt: {e}",
    what_title: "Was Sie erhalten",
    what_message: "Nur diese Nachricht, in Ihrer Sprache:",
    when: "Nur zu diesen Zeiten ({tz}):",
    every_day: "jeden Tag",
    often: "Wie oft, höchstens:",
    interval: "Höchstens eine Mitteilung alle {m} Minuten.",
    per_hour: "Die Straße bittet höchstens {n} Mal pro Stunde um Ruhe.",
    controls: "Bei etwa {p} % der lauten Momente wird absichtlich nichts gesendet: so misst die Stadt, ob die Bitte hilft.",
    ttl: "Eine Mitteilung, die dieses Telefon nicht innerhalb von {m} Minuten erreicht, verfällt und kommt nicht verspätet.",
    not_title: "Was nicht gesendet oder gespeichert wird",
    not_sent: "Keine Werbung, keine Nachrichten, nichts über andere Straßen, nichts außerhalb der obigen Zeiten.",
    not_kept: "Der Dienst speichert nur die Push-Adresse und Schlüssel dieses Browsers und die gewählten Straßen: keinen Namen, keine E-Mail-Adresse, keinen Standort. Ausschalten löscht sie.",
    last: "Letzte Nachricht: {t}",
    no_zone: "Dieser Dienst kennt keine Straße {zone}.",
  },
};

const ZONES_KEY = "hushlight.zones"; // the zones this browser's subscription is for
const LANG_KEY = "hushlight.lang";
const ZONES_CACHE = "hushlight-resident"; // as in sw.js
const ZONES_URL = "/residents/zones.json"; // a cache key only, never fetched
const zone = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop() || "");
const $ = (id) => document.getElementById(id);

let info = null;
let lang = "en";
let registration = null;
let statusKey = "checking";
let statusArgs = {};

function t(key, args) {
  const table = STRINGS[lang] || STRINGS.en;
  const text = table[key] !== undefined ? table[key] : STRINGS.en[key];
  return text.replace(/\{(\w+)\}/g, (_, name) => String((args || {})[name] ?? ""));
}

function pickLanguage(languages) {
  const asked = new URLSearchParams(location.search).get("lang") || localStorage.getItem(LANG_KEY);
  if (asked && languages.includes(asked)) return asked;
  for (const wanted of navigator.languages || [navigator.language]) {
    const base = String(wanted).toLowerCase().split("-")[0];
    const hit = languages.find((l) => l.toLowerCase() === String(wanted).toLowerCase())
      || languages.find((l) => l.toLowerCase().split("-")[0] === base);
    if (hit) return hit;
  }
  return languages[0];
}

function setStatus(key, args) {
  statusKey = key;
  statusArgs = args || {};
  $("status").textContent = t(key, statusArgs);
}

function storedZones() {
  try {
    const zones = JSON.parse(localStorage.getItem(ZONES_KEY) || "[]");
    return Array.isArray(zones) ? zones.filter((z) => typeof z === "string") : [];
  } catch (e) {
    return [];
  }
}

// Kept twice: the page reads localStorage; the worker, which has none, reads the
// same list from its cache when the browser renews the push subscription.
async function rememberZones(zones) {
  if (zones.length) localStorage.setItem(ZONES_KEY, JSON.stringify(zones));
  else localStorage.removeItem(ZONES_KEY);
  const cache = await caches.open(ZONES_CACHE);
  if (zones.length) await cache.put(ZONES_URL, new Response(JSON.stringify(zones)));
  else await cache.delete(ZONES_URL);
}

function dayNames(days) {
  if (days.length === 7) return t("every_day");
  // 2024-01-01 was a Monday, day 0 of the schedule
  const fmt = new Intl.DateTimeFormat(lang, { weekday: "short", timeZone: "UTC" });
  return days.map((d) => fmt.format(new Date(Date.UTC(2024, 0, 1 + d)))).join(", ");
}

function render() {
  document.documentElement.lang = lang;
  document.title = t("title", { zone });
  $("title").textContent = t("title", { zone });
  $("intro").textContent = t("intro");
  $("subscribe").textContent = t("subscribe");
  $("unsubscribe").textContent = t("unsubscribe");
  setStatus(statusKey, statusArgs);

  const nav = $("languages");
  nav.replaceChildren();
  if (info.languages.length > 1) {
    for (const l of info.languages) {
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = l;
      b.lang = l;
      b.setAttribute("aria-pressed", String(l === lang));
      b.addEventListener("click", () => chooseLanguage(l));
      nav.append(b);
    }
  }

  $("what-title").textContent = t("what_title");
  $("what-message").textContent = t("what_message");
  const message = info.messages[lang] || Object.values(info.messages)[0] || "";
  $("message").textContent = message;
  $("message").lang = lang;
  $("when").textContent = t("when", { tz: info.timezone });
  const windows = $("windows");
  windows.replaceChildren();
  for (const w of info.active_windows) {
    const li = document.createElement("li");
    li.textContent = `${dayNames(w.days)} ${w.start}–${w.end}`;
    windows.append(li);
  }
  $("often").textContent = t("often");
  const limits = $("limits");
  limits.replaceChildren();
  const lines = [];
  if (info.min_interval_s >= 60) lines.push(t("interval", { m: Math.round(info.min_interval_s / 60) }));
  lines.push(t("per_hour", { n: info.max_nudges_per_hour }));
  if (info.control_fraction > 0) lines.push(t("controls", { p: Math.round(info.control_fraction * 100) }));
  if (info.ttl_s >= 60) lines.push(t("ttl", { m: Math.round(info.ttl_s / 60) }));
  for (const line of lines) {
    const li = document.createElement("li");
    li.textContent = line;
    limits.append(li);
  }
  $("not-title").textContent = t("not_title");
  $("not-sent").textContent = t("not_sent");
  $("not-kept").textContent = t("not_kept");
  $("what").hidden = false;
  $("not").hidden = false;
}

async function chooseLanguage(l) {
  lang = l;
  localStorage.setItem(LANG_KEY, l);
  render();
  // the worker picks the notification's language from its own URL
  if (registration) registration = await registerWorker();
}

function registerWorker() {
  return navigator.serviceWorker.register(`/residents/sw.js?lang=${encodeURIComponent(lang)}`, {
    scope: "/residents/",
  });
}

function showButtons(subscribed) {
  $("subscribe").hidden = subscribed;
  $("unsubscribe").hidden = !subscribed;
}

function busy(on) {
  $("subscribe").disabled = on;
  $("unsubscribe").disabled = on;
}

function keyBytes(base64url) {
  const b64 = base64url.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((base64url.length + 3) % 4);
  return Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
}

function sameKey(subscription, key) {
  const current = subscription.options && subscription.options.applicationServerKey;
  if (!current) return true; // the browser does not say: keep it
  const a = new Uint8Array(current);
  return a.length === key.length && a.every((v, i) => v === key[i]);
}

// The reply of the subscription API as a status line; true if it was accepted.
async function answered(response) {
  if (response.ok) return true;
  let sentence = `HTTP ${response.status}`;
  try {
    sentence = (await response.json()).error || sentence;
  } catch (e) {
    // not JSON: the status says enough
  }
  if (response.status === 429) setStatus("too_often", { s: response.headers.get("Retry-After") || "60" });
  else if (response.status === 503 && /Web Push is off/.test(sentence)) setStatus("push_off");
  else if (response.status === 503) setStatus("full");
  else setStatus("failed", { e: sentence });
  return false;
}

function send(method, body) {
  return fetch("/api/subscriptions", {
    method,
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
}

async function subscribe() {
  busy(true);
  setStatus("busy");
  try {
    if ((await Notification.requestPermission()) !== "granted") {
      setStatus("denied");
      return;
    }
    const keyReply = await fetch("/api/push/key");
    if (keyReply.status === 503) {
      setStatus("push_off");
      return;
    }
    if (!keyReply.ok) {
      await answered(keyReply);
      return;
    }
    const key = keyBytes((await keyReply.json()).key);
    let subscription = await registration.pushManager.getSubscription();
    if (subscription && !sameKey(subscription, key)) {
      // made with a key the gateway no longer signs with: push services would refuse it
      await subscription.unsubscribe();
      subscription = null;
    }
    if (!subscription) {
      subscription = await registration.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: key });
    }
    // the API replaces a subscription's zones: send this browser's other streets too
    const zones = Array.from(new Set([...storedZones(), zone])).sort();
    let reply = await send("POST", { subscription: subscription.toJSON(), zones });
    if (reply.status === 400 && zones.length > 1) {
      // a street this browser chose earlier may have gone from the service
      reply = await send("POST", { subscription: subscription.toJSON(), zones: [zone] });
      if (reply.ok) zones.splice(0, zones.length, zone);
    }
    if (await answered(reply)) {
      await rememberZones(zones);
      setStatus("on");
      showButtons(true);
    }
  } catch (e) {
    setStatus("failed", { e: e && e.message ? e.message : String(e) });
  } finally {
    busy(false);
  }
}

async function unsubscribe() {
  busy(true);
  setStatus("busy");
  try {
    const subscription = await registration.pushManager.getSubscription();
    const others = storedZones().filter((z) => z !== zone);
    if (subscription && others.length) {
      if (!(await answered(await send("POST", { subscription: subscription.toJSON(), zones: others })))) return;
    } else if (subscription) {
      const reply = await send("DELETE", { endpoint: subscription.endpoint });
      // 404: the gateway had already forgotten it, which is what was asked
      if (reply.status !== 404 && !(await answered(reply))) return;
      await subscription.unsubscribe();
    }
    await rememberZones(others);
    setStatus("off");
    showButtons(false);
  } catch (e) {
    setStatus("failed", { e: e && e.message ? e.message : String(e) });
  } finally {
    busy(false);
  }
}

async function start() {
  const reply = await fetch(`/api/residents/${encodeURIComponent(zone)}`);
  if (!reply.ok) {
    $("status").textContent = t("no_zone", { zone });
    return;
  }
  info = await reply.json();
  lang = pickLanguage(info.languages);
  render();
  if (!("serviceWorker" in navigator) || !("PushManager" in window) || !("Notification" in window)) {
    setStatus("unsupported");
    return;
  }
  if (!info.push_enabled) setStatus("push_off");
  registration = await registerWorker();
  await navigator.serviceWorker.ready;
  navigator.serviceWorker.addEventListener("message", (event) => {
    if (event.data && event.data.type === "nudge") {
      $("last").textContent = t("last", { t: event.data.text });
      $("last").hidden = false;
    }
  });
  const subscription = await registration.pushManager.getSubscription();
  const subscribed = Boolean(subscription) && storedZones().includes(zone);
  if (info.push_enabled) setStatus(subscribed ? "on" : "off");
  showButtons(subscribed);
  $("subscribe").disabled = !info.push_enabled;
  $("subscribe").addEventListener("click", subscribe);
  $("unsubscribe").addEventListener("click", unsubscribe);
}

// Tests and the curious wait on this: the worker is registered and the buttons work.
window.hushlight = {
  ready: start().catch((e) => {
    setStatus("failed", { e: e && e.message ? e.message : String(e) });
    throw e;
  }),
};
