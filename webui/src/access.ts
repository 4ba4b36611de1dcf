// A file's access list: the people and groups who may retrieve it inside its knowledge base
// (both empty: everyone who may view the knowledge base). Viewed and edited in a dialog from
// the file table (PUT .../files/{file}/access), and given at upload as the `access` form field.
import { getJson, kbPath, sendJson } from "./api";
import { clear, h } from "./dom";
import { t } from "./i18n";
import { panel, toast } from "./modal";
import { knownGroups, knownPeople, userIdFor, userLabel, type Group } from "./people";
import type { User } from "./session";

export interface AccessList {
  users: string[];
  groups: string[];
}

export function accessPath(kb: string, file: string): string {
  return `${kbPath(kb)}/files/${encodeURIComponent(file)}/access`;
}

/** Comma- or space-separated text as a clean list (emails, ids or group names). */
export function splitList(text: string): string[] {
  return [...new Set(text.split(/[\s,;，]+/).map((part) => part.trim()).filter(Boolean))];
}

/** The upload form's `access` value from what was typed; null when nothing restricts. */
export function accessField(usersText: string, groupsText: string, users: User[]): string | null {
  const list: AccessList = { users: splitList(usersText).map((text) => userIdFor(text, users)), groups: splitList(groupsText) };
  return list.users.length || list.groups.length ? JSON.stringify(list) : null;
}

/** Open the access dialog of one file; `saved` runs after a successful change. */
export async function editAccess(kb: string, file: string, saved: () => void = () => undefined): Promise<void> {
  let access: AccessList;
  try {
    access = await getJson<AccessList>(accessPath(kb, file));
  } catch (error) {
    toast((error as Error).message, "error");
    return;
  }
  const [users, groups]: [User[], Group[]] = await Promise.all([knownPeople(kb), knownGroups()]);
  const draft: AccessList = { users: [...(access.users ?? [])], groups: [...(access.groups ?? [])] };
  const lists = h("div", { class: "access-lists" });
  const entry = (kind: keyof AccessList, value: string) =>
    h(
      "li",
      { "data-testid": "access-entry", "data-kind": kind === "users" ? "user" : "group", "data-id": value },
      h("span", { class: "name" }, kind === "users" ? userLabel(value, users) : value),
      h(
        "button",
        {
          type: "button",
          class: "small danger",
          "data-testid": "access-remove",
          onclick: () => {
            draft[kind] = draft[kind].filter((item) => item !== value);
            render();
          },
        },
        "×",
      ),
    );
  const render = () => {
    clear(lists);
    const open = !draft.users.length && !draft.groups.length;
    lists.append(
      h("p", { class: "muted", "data-testid": "access-summary" }, open ? t("access.open") : t("access.restricted")),
      h("h4", {}, t("access.users")),
      h("ul", { class: "access-list", "data-testid": "access-users" }, ...draft.users.map((id) => entry("users", id))),
      h("h4", {}, t("access.groups")),
      h("ul", { class: "access-list", "data-testid": "access-groups" }, ...draft.groups.map((name) => entry("groups", name))),
    );
  };
  render();
  const userInput = h("input", { list: "access-user-options", placeholder: t("access.addUser"), "data-testid": "access-user-input" });
  const groupInput = h("input", { list: "access-group-options", placeholder: t("access.addGroup"), "data-testid": "access-group-input" });
  const add = (kind: keyof AccessList, input: HTMLInputElement) => {
    for (const text of splitList(input.value)) {
      const value = kind === "users" ? userIdFor(text, users) : text;
      if (!draft[kind].includes(value)) draft[kind].push(value);
    }
    input.value = "";
    render();
  };
  const save = h(
    "button",
    {
      type: "button",
      class: "primary",
      "data-testid": "access-save",
      onclick: async () => {
        // What is still typed in the boxes counts too: nobody expects it dropped on save.
        if (userInput.value.trim()) add("users", userInput);
        if (groupInput.value.trim()) add("groups", groupInput);
        try {
          await sendJson("PUT", accessPath(kb, file), draft);
          toast(t("access.saved"));
          dialog.close();
          saved();
        } catch (error) {
          toast((error as Error).message, "error");
        }
      },
    },
    t("access.save"),
  );
  const content = h(
    "div",
    { class: "stack access-editor", "data-file": file },
    lists,
    h(
      "div",
      { class: "row wrap" },
      userInput,
      h("datalist", { id: "access-user-options" }, ...users.map((user) => h("option", { value: user.email }))),
      h("button", { type: "button", class: "small", "data-testid": "access-add-user", onclick: () => add("users", userInput) }, t("access.add")),
      groupInput,
      h("datalist", { id: "access-group-options" }, ...groups.map((group) => h("option", { value: group.name }))),
      h("button", { type: "button", class: "small", "data-testid": "access-add-group", onclick: () => add("groups", groupInput) }, t("access.add")),
    ),
    h("p", { class: "muted" }, t("access.help")),
    h("div", { class: "row end" }, save),
  );
  const dialog = panel(t("access.title", { file }), content, "access-dialog");
}
