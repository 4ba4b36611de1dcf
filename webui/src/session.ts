// Who is using the UI: the gateway's sign-in options (GET /v1/auth/config), the signed-in user
// (GET /v1/auth/me), password sign-in and sign-out, and the sign-in page shown when the gateway
// answers 401. A gateway without these routes (older, or keys only) keeps the API-key dialog.
import { apiKey, ApiError, csrfToken, errorMessage, setApiKey, setCsrfLoader, setCsrfToken } from "./api";
import { h } from "./dom";
import { t } from "./i18n";
import { promptDialog } from "./modal";

export interface User {
  id: string;
  email: string;
  display_name: string;
  admin: boolean;
  groups: string[];
  disabled: boolean;
  sso: boolean;
  created_at?: string | number;
}

export interface AuthConfig {
  password: boolean;
  sso: boolean;
  sso_label: string;
}

interface Me {
  user: User | null;
  csrf_token?: string | null;
  auth?: "session" | "key" | "open" | string;
}

let config: AuthConfig | null = null;
let me: User | null = null;
let mode: string | null = null;
const listeners: Array<() => void> = [];

export function currentUser(): User | null {
  return me;
}

/** "session", "key" or "open" as the gateway last said; null before it was asked. */
export function authMode(): string | null {
  return mode;
}

export function authConfig(): AuthConfig | null {
  return config;
}

/** People can sign in here (password or SSO); otherwise only keys (or nothing) apply. */
export function signInAvailable(): boolean {
  return Boolean(config && (config.password || config.sso));
}

export function onSessionChange(listener: () => void): void {
  listeners.push(listener);
}

function changed(): void {
  for (const listener of listeners) listener();
}

async function loadConfig(): Promise<void> {
  try {
    const response = await fetch("/v1/auth/config");
    config = response.ok ? ((await response.json()) as AuthConfig) : null;
  } catch {
    config = null;
  }
}

/** Ask the gateway who we are (and the session's CSRF token); a key in use goes along. */
export async function loadMe(): Promise<void> {
  const headers: Record<string, string> = {};
  const key = apiKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  try {
    const response = await fetch("/v1/auth/me", { headers, credentials: "same-origin" });
    if (response.ok) {
      const body = (await response.json()) as Me;
      me = body.user ?? null;
      mode = body.auth ?? (me ? "session" : null);
      setCsrfToken(body.csrf_token ?? null);
    } else {
      me = null;
      mode = null;
    }
  } catch {
    me = null;
    mode = null;
  }
  changed();
}

setCsrfLoader(loadMe);

/** Config and identity, once at start-up. */
export async function initSession(): Promise<void> {
  await loadConfig();
  if (config) await loadMe();
}

export async function signIn(email: string, password: string): Promise<void> {
  const response = await fetch("/v1/auth/login", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    credentials: "same-origin",
    body: JSON.stringify({ email, password }),
  });
  if (!response.ok) throw new ApiError(response.status, await errorMessage(response));
  const body = (await response.json()) as { user: User; csrf_token: string };
  setApiKey("");
  me = body.user;
  mode = "session";
  setCsrfToken(body.csrf_token);
  changed();
}

export async function signOut(): Promise<void> {
  if (mode === "session") {
    await fetch("/v1/auth/logout", {
      method: "POST",
      credentials: "same-origin",
      headers: { "X-CSRF-Token": csrfToken() ?? "" },
    }).catch(() => undefined);
  }
  // A person signed in through a key of theirs signs out of it too: this browser forgets it.
  setApiKey("");
  setCsrfToken(null);
  me = null;
  mode = null;
  changed();
}

/** Where the SSO button goes: the provider, then back to this very page. */
export function ssoLoginUrl(): string {
  const next = `${location.pathname}${location.hash}`;
  return `/v1/auth/oidc/login?next=${encodeURIComponent(next)}`;
}

function askForKey(): Promise<string | null> {
  return promptDialog(t("key.title"), apiKey(), {
    help: t("key.help"),
    placeholder: t("key.placeholder"),
    testid: "api-key-dialog",
    password: true,
  });
}

/**
 * The sign-in page over the whole window. Resolves "" once signed in (the caller retries with
 * the cookie), a key when the person chose to paste one, null when they closed it.
 */
export function signInPage(): Promise<string | null> {
  return new Promise((resolve) => {
    const cfg = config ?? { password: false, sso: false, sso_label: "" };
    const error = h("p", { class: "error-text", "data-testid": "signin-error", hidden: true });
    const email = h("input", { type: "email", required: true, autocomplete: "username", placeholder: t("signin.email"), "data-testid": "signin-email" });
    const password = h("input", { type: "password", required: true, autocomplete: "current-password", placeholder: t("signin.password"), "data-testid": "signin-password" });
    const finish = (value: string | null) => {
      overlay.remove();
      resolve(value);
    };
    const form = h(
      "form",
      {
        class: "stack",
        "data-testid": "signin-form",
        onsubmit: async (event: Event) => {
          event.preventDefault();
          error.hidden = true;
          try {
            await signIn(email.value.trim(), password.value);
            finish("");
          } catch (failure) {
            error.textContent = (failure as Error).message;
            error.hidden = false;
            password.value = "";
            password.focus();
          }
        },
      },
      email,
      password,
      h("button", { type: "submit", class: "primary", "data-testid": "signin-submit" }, t("signin.submit")),
    );
    const sso = h(
      "a",
      { class: "button primary sso", href: ssoLoginUrl(), "data-testid": "signin-sso" },
      cfg.sso_label ? t("signin.ssoWith", { name: cfg.sso_label }) : t("signin.sso"),
    );
    const useKey = h(
      "button",
      {
        type: "button",
        class: "link muted",
        "data-testid": "signin-use-key",
        onclick: async () => {
          const key = await askForKey();
          if (key) finish(key);
        },
      },
      t("signin.useKey"),
    );
    const overlay = h(
      "section",
      { class: "signin-page", "data-testid": "signin-page" },
      h(
        "div",
        { class: "signin-card stack" },
        h("h2", {}, t("signin.title")),
        cfg.password ? form : null,
        cfg.password && cfg.sso ? h("p", { class: "muted or" }, t("signin.or")) : null,
        cfg.sso ? sso : null,
        error,
        useKey,
      ),
    );
    document.body.appendChild(overlay);
    (cfg.password ? email : sso).focus();
  });
}

/** On 401: the sign-in page (which also offers a key) where people can sign in, else the key dialog. */
export function askForCredentials(): Promise<string | null> {
  return signInAvailable() ? signInPage() : askForKey();
}
