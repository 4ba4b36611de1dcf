// Zhiku web UI: a header (pages, language, who is signed in or the API key) and the pages,
// chosen by the URL hash. Sign-in comes first where the gateway has people (session.ts).
import "./style.css";
import { AdminPage } from "./admin";
import { apiKey, setApiKey, setKeyPrompt } from "./api";
import { ChatPage } from "./chat";
import { CliLoginPage } from "./cli_login";
import { h } from "./dom";
import { icon } from "./icons";
import { lang, onLangChange, setLang, t } from "./i18n";
import { KnowledgeBasePage } from "./kb";
import { promptDialog } from "./modal";
import { askForCredentials, currentUser, initSession, onSessionChange, signInAvailable, signInPage, signOut } from "./session";

type PageName = "chat" | "kb" | "admin" | "cli";
type Page = { root: HTMLElement; start(): Promise<void>; refresh(): Promise<void> };

// Several requests may hit 401 at once: they all wait for the one sign-in page or dialog.
let pendingKey: Promise<string | null> | null = null;
setKeyPrompt(() => {
  pendingKey ??= askForCredentials().finally(() => (pendingKey = null));
  return pendingKey;
});

const chat = new ChatPage();
const kb = new KnowledgeBasePage();
const pages: Record<PageName, Page> = { chat, kb, admin: new AdminPage(), cli: new CliLoginPage() };
const started = new Set<PageName>();

const navChat = h("a", { href: "#/chat", "data-testid": "nav-chat" });
const navKb = h("a", { href: "#/kb", "data-testid": "nav-kb" });
const navAdmin = h("a", { href: "#/admin", "data-testid": "nav-admin", hidden: true });
const langButton = h("button", { type: "button", class: "small", "data-testid": "lang-toggle" });
const keyButton = h("button", { type: "button", class: "small", "data-testid": "api-key-button" });
const userBox = h("span", { class: "user-box", "data-testid": "user-box", hidden: true });
const signInButton = h("button", { type: "button", class: "small", "data-testid": "signin-button", hidden: true });
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
signInButton.addEventListener("click", async () => {
  const key = await signInPage();
  if (key) setApiKey(key);
  if (key !== null) void pages[current()].refresh();
});

async function leave(): Promise<void> {
  await signOut();
  const key = await signInPage();
  if (key) setApiKey(key);
  if (key !== null) void pages[current()].refresh();
}

function renderHeader(): void {
  brand.textContent = `${t("app.title")}`;
  navChat.textContent = t("nav.chat");
  navKb.textContent = t("nav.kb");
  navAdmin.textContent = t("nav.admin");
  langButton.textContent = t("nav.lang");
  keyButton.replaceChildren(icon("key"), ` ${t("nav.apiKey")}`);
  signInButton.textContent = t("signin.submit");
  const user = currentUser();
  navAdmin.hidden = !user?.admin;
  userBox.hidden = !user;
  // A signed-in person has no use for the key button; key users and open gateways keep it.
  keyButton.hidden = Boolean(user);
  signInButton.hidden = Boolean(user) || !signInAvailable() || Boolean(apiKey());
  userBox.replaceChildren();
  if (user) {
    userBox.append(
      h("span", { class: "who", "data-testid": "current-user", title: user.email }, user.display_name || user.email),
      h("button", { type: "button", class: "small", "data-testid": "signout", onclick: () => void leave() }, t("signin.signOut")),
    );
  }
  document.title = `Zhiku · ${t("app.title")}`;
}

function current(): PageName {
  if (location.hash.startsWith("#/kb")) return "kb";
  if (location.hash.startsWith("#/admin")) return "admin";
  if (location.hash.startsWith("#/cli-login")) return "cli";
  return "chat";
}

const main = h("main", {});

function show(): void {
  const name = current();
  navChat.classList.toggle("active", name === "chat");
  navKb.classList.toggle("active", name === "kb");
  navAdmin.classList.toggle("active", name === "admin");
  main.replaceChildren(pages[name].root);
  if (started.has(name)) void pages[name].refresh();
  else {
    started.add(name);
    void pages[name].start();
  }
}

document.documentElement.lang = lang() === "zh" ? "zh-CN" : "en";
document.getElementById("app")?.append(
  h(
    "header",
    { class: "topbar" },
    brand,
    h("nav", {}, navChat, navKb, navAdmin),
    h("span", { class: "spacer" }),
    langButton,
    userBox,
    signInButton,
    keyButton,
  ),
  main,
);
renderHeader();
onLangChange(renderHeader);
onSessionChange(renderHeader);
window.addEventListener("hashchange", show);
// Who is here decides the header (and whether a 401 shows the sign-in page): ask first.
void initSession().finally(show);
