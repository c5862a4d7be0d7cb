// English, German and Japanese. The language is the browser's unless the user picks another;
// a key missing in one language falls back to English, so a new text never shows blank.
const TEXTS = {
  en: {
    skip: "Skip to content", "nav.map": "Map", "nav.entities": "Entities", "nav.services": "Services",
    "nav.dataspace": "Data space", tenant: "Tenant", language: "Language", signin: "Sign in", live: "Live updates",
    "map.label": "Map of the entities with a location", "map.legend": "States", "map.types": "Types:",
    "state.on": "on", "state.dimmed": "dimmed", "state.off": "off", "state.faulty": "faulty",
    "state.congested": "congested", "state.flowing": "flowing", "state.co2high": "CO₂ over 1,000 ppm",
    "state.co2ok": "CO₂ fine", "state.riskhigh": "high risk", "state.riskmid": "medium risk",
    "state.risklow": "low risk", "state.other": "other",
    "entity.type": "Type", "entity.state": "State", "entity.attributes": "Attributes", "entity.attribute": "Attribute",
    "entity.history": "History", "entity.raw": "Raw JSON", "entity.format": "Representation",
    "chart.range": "Range", "chart.recent": "latest values", "chart.hour": "hourly averages",
    "chart.day": "daily averages", "chart.none": "No numeric attribute to chart.",
    types: "Types and counts", all: "all types", filter: "Filter", none: "None.",
    "context.core": "core @context", "context.help": "the @context your type and attribute names are in",
    "page.previous": "Previous", "page.next": "Next", "page.of": "{from}–{to} of {total}",
    "service.lighting": "Street lighting", "service.traffic": "Traffic", "service.wifi": "Wi-Fi",
    "service.classrooms": "Classrooms", "service.risk": "Road risk",
    "lighting.faults": "Faults now", "lighting.status": "Status", "lighting.energy": "Energy today by cabinet",
    "lighting.cabinet": "Cabinet", "traffic.segments": "segments", "traffic.segment": "Segment",
    "traffic.flow": "vehicles/min", "wifi.place": "Place", "wifi.clients": "Clients", "wifi.trams": "Per tram",
    "wifi.tram": "Tram", "classrooms.rooms": "rooms", "classrooms.over": "over {limit} ppm",
    "classrooms.mean": "mean ppm", "classrooms.room": "Room", "risk.rated": "segments rated",
    "risk.level": "Risk", "risk.map": "Show the risk map",
    "ds.datasets": "Datasets offered", "ds.negotiations": "Negotiations", "ds.transfers": "Transfers",
    "ds.agreements": "Agreements", "ds.audit": "Audit trail", "ds.dataset": "Dataset", "ds.title": "Title",
    "ds.policy": "Terms", "ds.role": "Role", "ds.counterparty": "Counterparty", "ds.state": "State",
    "ds.format": "Format", "ds.assignee": "Assignee", "ds.accesses": "Accesses used", "ds.at": "When",
    "ds.subject": "Who", "ds.operation": "What", "ds.target": "On", "ds.outcome": "Outcome",
    "ds.anonymous": "anonymous", "ds.terminate": "Terminate", "ds.forbidden": "Only node administrators may see this.",
    "odrl.permission": "May {action}", "odrl.prohibition": "Must not {action}", "odrl.obligation": "Must {action}",
    "odrl.action.use": "use", "odrl.action.distribute": "distribute", "odrl.action.read": "read",
    "odrl.purpose.eq": "for {value} only", "odrl.purpose.isAnyOf": "for {value} only",
    "odrl.spatial.eq": "in {value} only", "odrl.spatial.isAnyOf": "in {value} only",
    "odrl.elapsedTime.lteq": "within {value} of the agreement", "odrl.count.lteq": "at most {value} accesses",
    "odrl.count.lt": "fewer than {value} accesses", "odrl.dateTime.lteq": "until {value}",
    "odrl.dateTime.gteq": "from {value}", "odrl.dateTime.lt": "before {value}", "odrl.dateTime.gt": "after {value}",
  },
  de: {
    skip: "Zum Inhalt", "nav.map": "Karte", "nav.entities": "Entitäten", "nav.services": "Dienste",
    "nav.dataspace": "Datenraum", tenant: "Mandant", language: "Sprache", signin: "Anmelden", live: "Live-Aktualisierung",
    "map.label": "Karte der Entitäten mit Ort", "map.legend": "Zustände", "map.types": "Typen:",
    "state.on": "an", "state.dimmed": "gedimmt", "state.off": "aus", "state.faulty": "gestört",
    "state.congested": "Stau", "state.flowing": "fließend", "state.co2high": "CO₂ über 1.000 ppm",
    "state.co2ok": "CO₂ in Ordnung", "state.riskhigh": "hohes Risiko", "state.riskmid": "mittleres Risiko",
    "state.risklow": "geringes Risiko", "state.other": "sonstige",
    "entity.type": "Typ", "entity.state": "Zustand", "entity.attributes": "Attribute", "entity.attribute": "Attribut",
    "entity.history": "Verlauf", "entity.raw": "JSON", "entity.format": "Darstellung",
    "chart.range": "Zeitraum", "chart.recent": "letzte Werte", "chart.hour": "Stundenmittel",
    "chart.day": "Tagesmittel", "chart.none": "Kein numerisches Attribut.",
    types: "Typen und Anzahl", all: "alle Typen", filter: "Filtern", none: "Keine.",
    "context.core": "Kern-@context", "context.help": "der @context Ihrer Typ- und Attributnamen",
    "page.previous": "Zurück", "page.next": "Weiter", "page.of": "{from}–{to} von {total}",
    "service.lighting": "Straßenbeleuchtung", "service.traffic": "Verkehr", "service.wifi": "WLAN",
    "service.classrooms": "Klassenräume", "service.risk": "Straßenrisiko",
    "lighting.faults": "Aktuelle Störungen", "lighting.status": "Status", "lighting.energy": "Energie heute je Schaltschrank",
    "lighting.cabinet": "Schaltschrank", "traffic.segments": "Abschnitte", "traffic.segment": "Abschnitt",
    "traffic.flow": "Fahrzeuge/min", "wifi.place": "Ort", "wifi.clients": "Geräte", "wifi.trams": "Je Straßenbahn",
    "wifi.tram": "Straßenbahn", "classrooms.rooms": "Räume", "classrooms.over": "über {limit} ppm",
    "classrooms.mean": "Mittel ppm", "classrooms.room": "Raum", "risk.rated": "bewertete Abschnitte",
    "risk.level": "Risiko", "risk.map": "Risikokarte zeigen",
    "ds.datasets": "Angebotene Datensätze", "ds.negotiations": "Verhandlungen", "ds.transfers": "Übertragungen",
    "ds.agreements": "Vereinbarungen", "ds.audit": "Prüfprotokoll", "ds.dataset": "Datensatz", "ds.title": "Titel",
    "ds.policy": "Bedingungen", "ds.role": "Rolle", "ds.counterparty": "Gegenseite", "ds.state": "Zustand",
    "ds.format": "Format", "ds.assignee": "Berechtigter", "ds.accesses": "Genutzte Zugriffe", "ds.at": "Wann",
    "ds.subject": "Wer", "ds.operation": "Was", "ds.target": "Worauf", "ds.outcome": "Ergebnis",
    "ds.anonymous": "anonym", "ds.terminate": "Beenden", "ds.forbidden": "Nur Knotenadministratoren dürfen dies sehen.",
    "odrl.permission": "Darf {action}", "odrl.prohibition": "Darf nicht {action}", "odrl.obligation": "Muss {action}",
    "odrl.action.use": "nutzen", "odrl.action.distribute": "weitergeben", "odrl.action.read": "lesen",
    "odrl.purpose.eq": "nur für {value}", "odrl.purpose.isAnyOf": "nur für {value}",
    "odrl.spatial.eq": "nur in {value}", "odrl.spatial.isAnyOf": "nur in {value}",
    "odrl.elapsedTime.lteq": "innerhalb von {value} ab Vereinbarung", "odrl.count.lteq": "höchstens {value} Zugriffe",
    "odrl.count.lt": "weniger als {value} Zugriffe", "odrl.dateTime.lteq": "bis {value}",
    "odrl.dateTime.gteq": "ab {value}", "odrl.dateTime.lt": "vor {value}", "odrl.dateTime.gt": "nach {value}",
  },
  ja: {
    skip: "本文へ移動", "nav.map": "地図", "nav.entities": "エンティティ", "nav.services": "サービス",
    "nav.dataspace": "データスペース", tenant: "テナント", language: "言語", signin: "サインイン", live: "ライブ更新",
    "map.label": "位置を持つエンティティの地図", "map.legend": "状態", "map.types": "タイプ:",
    "state.on": "点灯", "state.dimmed": "減光", "state.off": "消灯", "state.faulty": "故障",
    "state.congested": "渋滞", "state.flowing": "順調", "state.co2high": "CO₂ 1,000 ppm 超",
    "state.co2ok": "CO₂ 正常", "state.riskhigh": "高リスク", "state.riskmid": "中リスク",
    "state.risklow": "低リスク", "state.other": "その他",
    "entity.type": "タイプ", "entity.state": "状態", "entity.attributes": "属性", "entity.attribute": "属性",
    "entity.history": "履歴", "entity.raw": "JSON", "entity.format": "表現形式",
    "chart.range": "期間", "chart.recent": "最新の値", "chart.hour": "1時間平均",
    "chart.day": "1日平均", "chart.none": "グラフにできる数値属性がありません。",
    types: "タイプと件数", all: "すべてのタイプ", filter: "絞り込み", none: "なし。",
    "context.core": "コア @context", "context.help": "タイプ名と属性名の @context",
    "page.previous": "前へ", "page.next": "次へ", "page.of": "{total} 件中 {from}–{to}",
    "service.lighting": "街路灯", "service.traffic": "交通", "service.wifi": "Wi-Fi",
    "service.classrooms": "教室", "service.risk": "道路リスク",
    "lighting.faults": "現在の故障", "lighting.status": "状態", "lighting.energy": "本日の分電盤別電力量",
    "lighting.cabinet": "分電盤", "traffic.segments": "区間", "traffic.segment": "区間",
    "traffic.flow": "台/分", "wifi.place": "場所", "wifi.clients": "接続数", "wifi.trams": "路面電車別",
    "wifi.tram": "路面電車", "classrooms.rooms": "教室", "classrooms.over": "{limit} ppm 超",
    "classrooms.mean": "平均 ppm", "classrooms.room": "教室", "risk.rated": "評価済み区間",
    "risk.level": "リスク", "risk.map": "リスク地図を表示",
    "ds.datasets": "提供データセット", "ds.negotiations": "契約交渉", "ds.transfers": "転送",
    "ds.agreements": "契約", "ds.audit": "監査ログ", "ds.dataset": "データセット", "ds.title": "名称",
    "ds.policy": "条件", "ds.role": "役割", "ds.counterparty": "相手方", "ds.state": "状態",
    "ds.format": "形式", "ds.assignee": "利用者", "ds.accesses": "利用回数", "ds.at": "日時",
    "ds.subject": "誰が", "ds.operation": "操作", "ds.target": "対象", "ds.outcome": "結果",
    "ds.anonymous": "匿名", "ds.terminate": "終了", "ds.forbidden": "ノード管理者のみ閲覧できます。",
    "odrl.permission": "{action}可", "odrl.prohibition": "{action}不可", "odrl.obligation": "{action}義務",
    "odrl.action.use": "利用", "odrl.action.distribute": "再配布", "odrl.action.read": "閲覧",
    "odrl.purpose.eq": "{value} 目的に限る", "odrl.purpose.isAnyOf": "{value} 目的に限る",
    "odrl.spatial.eq": "{value} 内に限る", "odrl.spatial.isAnyOf": "{value} 内に限る",
    "odrl.elapsedTime.lteq": "契約から {value} 以内", "odrl.count.lteq": "最大 {value} 回",
    "odrl.count.lt": "{value} 回未満", "odrl.dateTime.lteq": "{value} まで",
    "odrl.dateTime.gteq": "{value} から", "odrl.dateTime.lt": "{value} より前", "odrl.dateTime.gt": "{value} より後",
  },
};
const KEY = "kizuna-language";
let current = pick();

function pick() {
  const saved = localStorage.getItem(KEY);
  if (saved && TEXTS[saved]) return saved;
  const browser = (navigator.language || "en").slice(0, 2);
  return TEXTS[browser] ? browser : "en";
}

export function language() { return current; }

export function setLanguage(name) {
  if (!TEXTS[name]) return;
  current = name;
  localStorage.setItem(KEY, name);
}

export function t(key, values = {}) {
  const text = TEXTS[current][key] ?? TEXTS.en[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, name) => {
    const value = values[name];
    return typeof value === "number" ? value.toLocaleString(current) : String(value ?? "");
  });
}

// The static texts of the page: elements marked data-i18n (text) or data-i18n-title (title).
export function apply(root) {
  document.documentElement.lang = current;
  for (const node of root.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
  for (const node of root.querySelectorAll("[data-i18n-title]")) node.title = t(node.dataset.i18nTitle);
}
