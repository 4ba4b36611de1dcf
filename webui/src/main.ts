// Zhiku web UI: a header (pages, language, API key) and two pages, chosen by the URL hash.
import "./style.css";
import { apiKey, setApiKey, setKeyPrompt } from "./api";
import { ChatPage } from "./chat";
import { h } from "./dom";
import { icon } from "./icons";
import { lang, onLangChange, setLang, t } from "./i18n";
import { KnowledgeBasePage } from "./kb";
import { promptDialog } from "./modal";

type PageName = "chat" | "kb";

// Several requests may hit 401 at once: they all wait for the one dialog.
let pendingKey: Promise<string | null> | null = null;
setKeyPrompt(() => {
  pendingKey ??= promptDialog(t("key.title"), apiKey(), {
    help: t("key.help"),
    placeholder: t("key.placeholder"),
    testid: "api-key-dialog",
    password: true,
  }).finally(() => (pendingKey = null));
  return pendingKey;
});

const chat = new ChatPage();
const kb = new KnowledgeBasePage();
const pages: Record<PageName, ChatPage | KnowledgeBasePage> = { chat, kb };
const started = new Set<PageName>();

const navChat = h("a", { href: "#/chat", "data-testid": "nav-chat" });
const navKb = h("a", { href: "#/kb", "data-testid": "nav-kb" });
const langButton = h("button", { type: "button", class: "small", "data-testid": "lang-toggle" });
const keyButton = h("button", { type: "button", class: "small", "data-testid": "api-key-button" });
const brand = h("span", { class: "brand" });

langButton.addEventListener("click", () => setLang(lang() === "zh" ? "en" : "zh"));
keyButton.addEventListener("click", async () => {
  const key = await promptDialog(t("key.title"), apiKey(), {
    help: t("key.help"),
    placeholder: t("key.placeholder"),
    testid: "api-key-dialog",
    password: true,
  });
  if (key !== null) {
    setApiKey(key);
    void pages[current()].refresh();
  }
});

function renderHeader(): void {
  brand.textContent = `${t("app.title")}`;
  navChat.textContent = t("nav.chat");
  navKb.textContent = t("nav.kb");
  langButton.textContent = t("nav.lang");
  keyButton.replaceChildren(icon("key"), ` ${t("nav.apiKey")}`);
  document.title = `Zhiku · ${t("app.title")}`;
}

function current(): PageName {
  return location.hash.startsWith("#/kb") ? "kb" : "chat";
}

const main = h("main", {});

function show(): void {
  const name = current();
  navChat.classList.toggle("active", name === "chat");
  navKb.classList.toggle("active", name === "kb");
  main.replaceChildren(pages[name].root);
  if (started.has(name)) void pages[name].refresh();
  else {
    started.add(name);
    void pages[name].start();
  }
}

document.documentElement.lang = lang() === "zh" ? "zh-CN" : "en";
document.getElementById("app")?.append(
  h("header", { class: "topbar" }, brand, h("nav", {}, navChat, navKb), h("span", { class: "spacer" }), langButton, keyButton),
  main,
);
renderHeader();
onLangChange(renderHeader);
window.addEventListener("hashchange", show);
show();
