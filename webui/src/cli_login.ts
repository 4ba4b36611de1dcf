// The browser half of `zhiku login --sso`: the CLI opens the gateway's SSO login with
// next=/#/cli-login?port=P&state=S; once signed in, this page mints an API key owned by the
// person (POST /v1/keys through the session, so it never exceeds their rights) and hands it to
// the CLI's loopback listener on 127.0.0.1:P with the CLI's state, or shows it to paste when no
// port was given. Nothing but the CLI on this machine can receive it.
import { sendJson } from "./api";
import { clear, h } from "./dom";
import { t } from "./i18n";

interface MintedKey {
  id: string;
  key: string;
}

function params(): URLSearchParams {
  const hash = location.hash;
  const query = hash.includes("?") ? hash.slice(hash.indexOf("?") + 1) : "";
  return new URLSearchParams(query);
}

export class CliLoginPage {
  readonly root = h("section", { class: "page cli-login-page", "data-testid": "cli-login-page" });
  private body = h("div", { class: "kb-main" });
  private done = false;

  constructor() {
    this.root.append(this.body);
  }

  async start(): Promise<void> {
    await this.refresh();
  }

  async refresh(): Promise<void> {
    if (this.done) return;
    clear(this.body);
    const query = params();
    const port = Number(query.get("port") ?? "");
    const state = query.get("state") ?? "";
    this.body.append(h("h2", {}, t("cli.title")), h("p", { class: "muted" }, t("cli.minting")));
    let minted: MintedKey | null;
    try {
      minted = await sendJson<MintedKey>("POST", "/v1/keys", { name: `zhiku CLI ${new Date().toISOString().slice(0, 10)}` });
    } catch (error) {
      clear(this.body);
      this.body.append(h("h2", {}, t("cli.title")), h("p", { class: "error-text", "data-testid": "cli-error" }, (error as Error).message));
      return;
    }
    this.done = true;
    clear(this.body);
    if (minted && Number.isInteger(port) && port > 1023 && port < 65536) {
      const target = new URL(`http://127.0.0.1:${port}/callback`);
      target.searchParams.set("key", minted.key);
      target.searchParams.set("id", minted.id);
      target.searchParams.set("state", state);
      this.body.append(h("h2", {}, t("cli.title")), h("p", { "data-testid": "cli-handoff" }, t("cli.handoff")));
      location.assign(target.toString());
      return;
    }
    this.body.append(
      h("h2", {}, t("cli.title")),
      h("p", {}, t("cli.paste")),
      h("pre", { class: "passage", "data-testid": "cli-key" }, minted?.key ?? ""),
    );
  }
}
