// Modal dialogs on <dialog>: confirm, prompt for text, and a free-form panel.
import { h } from "./dom";
import { t } from "./i18n";

function show(dialog: HTMLDialogElement): void {
  document.body.appendChild(dialog);
  dialog.addEventListener("close", () => dialog.remove());
  dialog.showModal();
}

export function confirmDialog(message: string): Promise<boolean> {
  return new Promise((resolve) => {
    const dialog = h("dialog", { class: "modal", "data-testid": "confirm-dialog" });
    const finish = (value: boolean) => {
      resolve(value);
      dialog.close();
    };
    dialog.append(
      h("p", {}, message),
      h(
        "div",
        { class: "row end" },
        h("button", { type: "button", onclick: () => finish(false) }, t("common.cancel")),
        h(
          "button",
          { type: "button", class: "danger", "data-testid": "confirm-ok", onclick: () => finish(true) },
          t("common.confirm"),
        ),
      ),
    );
    dialog.addEventListener("cancel", () => resolve(false));
    show(dialog);
  });
}

export function promptDialog(
  title: string,
  initial = "",
  options: { help?: string; placeholder?: string; testid?: string; password?: boolean } = {},
): Promise<string | null> {
  return new Promise((resolve) => {
    const dialog = h("dialog", { class: "modal", "data-testid": options.testid ?? "prompt-dialog" });
    const input = h("input", {
      type: options.password ? "password" : "text",
      value: initial,
      placeholder: options.placeholder ?? "",
      "data-testid": "prompt-input",
      autocomplete: "off",
    });
    let settled = false;
    const finish = (value: string | null) => {
      if (!settled) resolve(value);
      settled = true;
      dialog.close();
    };
    const form = h(
      "form",
      {
        method: "dialog",
        onsubmit: (event: Event) => {
          event.preventDefault();
          finish(input.value.trim());
        },
      },
      h("h3", {}, title),
      options.help ? h("p", { class: "muted" }, options.help) : null,
      input,
      h(
        "div",
        { class: "row end" },
        h("button", { type: "button", onclick: () => finish(null) }, t("common.cancel")),
        h("button", { type: "submit", class: "primary", "data-testid": "prompt-ok" }, t("key.save")),
      ),
    );
    dialog.append(form);
    dialog.addEventListener("close", () => finish(null));
    show(dialog);
    input.focus();
  });
}

/** A panel with a title, any content and a close button. */
export function panel(title: string, content: Node, testid: string): HTMLDialogElement {
  const dialog = h("dialog", { class: "modal wide", "data-testid": testid });
  dialog.append(
    h(
      "div",
      { class: "row between" },
      h("h3", {}, title),
      h("button", { type: "button", "data-testid": "dialog-close", onclick: () => dialog.close() }, "×"),
    ),
    content,
  );
  show(dialog);
  return dialog;
}

/** A short message at the bottom of the screen (errors and confirmations). */
export function toast(message: string, kind: "error" | "info" = "info"): void {
  const el = h("div", { class: `toast ${kind}`, role: "status", "data-testid": `toast-${kind}` }, message);
  document.body.appendChild(el);
  setTimeout(() => el.remove(), kind === "error" ? 8000 : 3000);
}
