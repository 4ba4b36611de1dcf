// A knowledge base's Members tab: who holds which role (people and groups), add one with a
// role, change a role in place, remove. Owners and admins may change it; the gateway says 403
// to anyone else, shown as the message it gives.
import { ApiError, getJson, kbPath, request, sendJson } from "./api";
import { clear, h } from "./dom";
import { t } from "./i18n";
import { confirmDialog, toast } from "./modal";
import { knownGroups, knownUsers, userIdFor, type Group } from "./people";
import type { User } from "./session";

export type Role = "viewer" | "editor" | "owner";
export const ROLES: Role[] = ["viewer", "editor", "owner"];

interface Member {
  kind: "user" | "group";
  id: string;
  name: string;
  role: Role;
}

export class MembersPanel {
  readonly root = h("section", { class: "kb-members", "data-testid": "kb-members" });
  private kb: string | null = null;
  private members: Member[] = [];
  private users: User[] = [];
  private groups: Group[] = [];
  private table = h("div", { class: "table-wrap" });
  private form: HTMLElement | null = null;
  private denied: string | null = null;

  setKnowledgeBase(kb: string | null): void {
    if (kb !== this.kb) this.form = null;
    this.kb = kb;
  }

  async refresh(): Promise<void> {
    const kb = this.kb;
    if (!kb) return;
    this.denied = null;
    try {
      const body = await getJson<{ members: Member[] }>(`${kbPath(kb)}/members`);
      this.members = body.members ?? [];
    } catch (error) {
      this.members = [];
      // Viewers and editors may not see who else is in: say so in place, not as an error.
      if (error instanceof ApiError && error.status === 403) this.denied = error.message;
      else toast((error as Error).message, "error");
    }
    [this.users, this.groups] = await Promise.all([knownUsers(), knownGroups()]);
    this.render();
  }

  /** Re-render (a language switch): the add form is rebuilt with the new words. */
  relabel(): void {
    this.form = null;
    this.render();
  }

  private render(): void {
    clear(this.root);
    if (this.denied !== null) {
      this.root.append(h("h3", {}, t("members.title")), h("p", { class: "muted", "data-testid": "members-denied" }, t("members.denied")));
      return;
    }
    this.renderTable();
    this.root.append(h("h3", {}, t("members.title")), this.table, (this.form ??= this.addForm()));
  }

  private renderTable(): void {
    clear(this.table);
    if (!this.members.length) {
      this.table.append(h("p", { class: "muted", "data-testid": "no-members" }, t("members.none")));
      return;
    }
    const body = h("tbody");
    for (const member of this.members) {
      const role = h(
        "select",
        {
          "data-testid": "member-role",
          "aria-label": t("members.role"),
          onchange: () => void this.put(member.kind, member.id, role.value as Role),
        },
        ...ROLES.map((value) => h("option", { value, selected: value === member.role }, t(`role.${value}`))),
      );
      body.append(
        h(
          "tr",
          { "data-testid": "member-row", "data-kind": member.kind, "data-id": member.id, "data-role": member.role },
          h("td", { "data-label": t("members.kind") }, t(`members.kind.${member.kind}`)),
          h("td", { "data-label": t("members.who"), class: "name", "data-testid": "member-name" }, member.name || member.id),
          h("td", { "data-label": t("members.role") }, role),
          h(
            "td",
            {},
            h("button", { type: "button", class: "small danger", "data-testid": "member-remove", onclick: () => void this.remove(member) }, t("members.remove")),
          ),
        ),
      );
    }
    this.table.append(
      h(
        "table",
        { class: "files", "data-testid": "member-table" },
        h("thead", {}, h("tr", {}, ...(["kind", "who", "role"] as const).map((col) => h("th", {}, t(`members.${col}`))), h("th", {}))),
        body,
      ),
    );
  }

  private addForm(): HTMLElement {
    const kind = h(
      "select",
      { "data-testid": "member-kind", "aria-label": t("members.kind") },
      h("option", { value: "user" }, t("members.kind.user")),
      h("option", { value: "group" }, t("members.kind.group")),
    );
    const who = h("input", { required: true, list: "member-suggestions", placeholder: t("members.whoPlaceholder"), "data-testid": "member-who" });
    const suggestions = h("datalist", { id: "member-suggestions" });
    const suggest = () => {
      clear(suggestions);
      const values = kind.value === "group" ? this.groups.map((group) => group.name) : this.users.map((user) => user.email);
      for (const value of values) suggestions.append(h("option", { value }));
    };
    kind.addEventListener("change", suggest);
    suggest();
    const role = h(
      "select",
      { "data-testid": "member-new-role", "aria-label": t("members.role") },
      ...ROLES.map((value) => h("option", { value }, t(`role.${value}`))),
    );
    return h(
      "form",
      {
        class: "row wrap member-form",
        "data-testid": "member-form",
        onsubmit: async (event: Event) => {
          event.preventDefault();
          const text = who.value.trim();
          if (!text) return;
          const id = kind.value === "user" ? userIdFor(text, this.users) : text;
          if (await this.put(kind.value as Member["kind"], id, role.value as Role)) who.value = "";
        },
      },
      kind,
      who,
      suggestions,
      role,
      h("button", { type: "submit", class: "primary", "data-testid": "member-add" }, t("members.add")),
    );
  }

  private async put(kind: Member["kind"], id: string, role: Role): Promise<boolean> {
    const kb = this.kb;
    if (!kb) return false;
    try {
      await sendJson("PUT", `${kbPath(kb)}/members`, { kind, id, role });
      await this.refresh();
      return true;
    } catch (error) {
      toast((error as Error).message, "error");
      await this.refresh();
      return false;
    }
  }

  private async remove(member: Member): Promise<void> {
    const kb = this.kb;
    if (!kb || !(await confirmDialog(t("members.removeConfirm", { name: member.name || member.id })))) return;
    try {
      await request(`${kbPath(kb)}/members/${member.kind}/${encodeURIComponent(member.id)}`, { method: "DELETE" });
    } catch (error) {
      toast((error as Error).message, "error");
    }
    await this.refresh();
  }
}
