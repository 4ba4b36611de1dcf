// HTTP client of the gateway: a signed-in session (HttpOnly cookie, sent by the browser, plus
// the X-CSRF-Token header on unsafe requests) or an API key from localStorage; one retry after
// asking for credentials on 401, and errors turned into readable messages from the gateway's
// OpenAI-shaped bodies.

const KEY_STORAGE = "zhiku.apiKey";

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

type KeyPrompt = () => Promise<string | null>;
let promptForKey: KeyPrompt = async () => null;

/** The UI registers the dialog that asks for a key when the gateway answers 401. */
export function setKeyPrompt(prompt: KeyPrompt): void {
  promptForKey = prompt;
}

export function apiKey(): string {
  return localStorage.getItem(KEY_STORAGE) ?? "";
}

export function setApiKey(key: string): void {
  if (key) localStorage.setItem(KEY_STORAGE, key);
  else localStorage.removeItem(KEY_STORAGE);
}

// The session's CSRF token: the cookie itself is HttpOnly, so the token comes from the login
// answer or GET /v1/auth/me and lives in memory only (a reload asks /v1/auth/me again).
let sessionCsrf: string | null = null;
type CsrfLoader = () => Promise<void>;
let loadCsrf: CsrfLoader = async () => undefined;

export function csrfToken(): string | null {
  return sessionCsrf;
}

export function setCsrfToken(token: string | null): void {
  sessionCsrf = token || null;
}

/** The session module registers how to fetch the token when an unsafe request needs it. */
export function setCsrfLoader(loader: CsrfLoader): void {
  loadCsrf = loader;
}

const SAFE_METHODS = new Set(["GET", "HEAD", "OPTIONS"]);

function isUnsafe(init: RequestInit): boolean {
  return !SAFE_METHODS.has((init.method ?? "GET").toUpperCase());
}

function withKey(init: RequestInit): RequestInit {
  const headers = new Headers(init.headers);
  const key = apiKey();
  if (key) headers.set("Authorization", `Bearer ${key}`);
  else if (sessionCsrf && isUnsafe(init)) headers.set("X-CSRF-Token", sessionCsrf);
  return { ...init, headers, credentials: "same-origin" };
}

export async function errorMessage(response: Response): Promise<string> {
  const text = await response.text().catch(() => "");
  try {
    const body = JSON.parse(text);
    const error = body?.error ?? body;
    if (typeof error?.message === "string") return error.message;
    if (typeof body?.detail === "string") return body.detail;
    if (typeof body?.msg === "string") return body.msg;
  } catch {
    /* not JSON: fall through */
  }
  return text || `${response.status} ${response.statusText}`;
}

/** fetch with the key; on 401 ask for a key once and retry. Returns the response of any status. */
export async function raw(path: string, init: RequestInit = {}): Promise<Response> {
  if (!apiKey() && !sessionCsrf && isUnsafe(init)) await loadCsrf().catch(() => undefined);
  let response = await fetch(path, withKey(init));
  if (response.status === 401 && !(init.body instanceof ReadableStream)) {
    const key = await promptForKey();
    if (key !== null) {
      setApiKey(key);
      response = await fetch(path, withKey(init));
    }
  }
  return response;
}

/** fetch that throws ApiError unless the status is 2xx. */
export async function request(path: string, init: RequestInit = {}): Promise<Response> {
  const response = await raw(path, init);
  if (!response.ok) throw new ApiError(response.status, await errorMessage(response));
  return response;
}

export async function getJson<T>(path: string): Promise<T> {
  return (await request(path)).json() as Promise<T>;
}

export async function sendJson<T>(method: string, path: string, body?: unknown): Promise<T | null> {
  const response = await request(path, {
    method,
    headers: body === undefined ? {} : { "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 204) return null;
  const text = await response.text();
  return text ? (JSON.parse(text) as T) : null;
}

/** Whether a route exists (anything but 404/405/501): features of newer gateways are optional. */
export async function routeExists(path: string): Promise<boolean> {
  try {
    const response = await raw(path);
    return ![404, 405, 501].includes(response.status);
  } catch {
    return false;
  }
}

/** Server-sent events of a fetch response: yields each event's data string. */
export async function* sseData(response: Response, signal?: AbortSignal): AsyncGenerator<string> {
  if (!response.body) return;
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    while (!signal?.aborted) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value.replace(/\r\n/g, "\n");
      let end: number;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const frame = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = frame
          .split("\n")
          .filter((line) => line.startsWith("data:"))
          .map((line) => line.slice(5).replace(/^ /, ""))
          .join("\n");
        if (data) yield data;
      }
    }
  } finally {
    reader.cancel().catch(() => undefined);
  }
}

/** Opens an original file with the key (links cannot send headers); plain link when open. */
export async function openFile(url: string, download = false): Promise<void> {
  const target = download ? `${url}${url.includes("?") ? "&" : "?"}download=true` : url;
  if (!apiKey()) {
    window.open(target, "_blank", "noopener");
    return;
  }
  const response = await request(target);
  const blobUrl = URL.createObjectURL(await response.blob());
  if (download) {
    const name = decodeURIComponent(url.split("/").slice(-2, -1)[0] ?? "file");
    const link = document.createElement("a");
    link.href = blobUrl;
    link.download = name;
    link.click();
  } else {
    window.open(blobUrl, "_blank", "noopener");
  }
  setTimeout(() => URL.revokeObjectURL(blobUrl), 60_000);
}

export function kbPath(kb: string): string {
  return `/v1/knowledge_bases/${encodeURIComponent(kb)}`;
}

export function fileUrl(kb: string, file: string): string {
  return `${kbPath(kb)}/files/${encodeURIComponent(file)}/content`;
}
