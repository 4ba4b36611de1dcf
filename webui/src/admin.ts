// Users & groups, for admins: create a person with a password (or none, for SSO-only people),
// make or unmake admin, disable or enable; create and delete groups and change who is in them.
// Every change goes to the gateway, then the lists are read back, so what shows is what holds.
import { request, sendJson } from "./api";
import { clear, formatTime, h } from "./dom";
import { onLangChange, t } from "./i18n";
import { confirmDialog, toast } from "./modal";
import { groupMembers, listGroups, listUsers, userIdFor, userLabel, type Group } from "./people";
import type { User } from "./session";

export class AdminPage {
  readonly root = h("section", { class: "page admin-page", "data-testid": "admin-page" });
  private users: User[] = [];
  private groups: Group[] = [];
  private body = h("div", { class: "kb-main" });
  private userTable = h("div", { class: "table-wrap" });
  private groupList = h("div", { class: "groups" });
  private forms: HTMLElement | null = null;

  constructor() {
    this.root.append(this.body);
    onLangChange(() => {
      this.forms = null;
      this.render();
    });
  }

  async start(): Promise<void> {
    await this.refresh();
  }

  async refresh(): Promise<void> {
    try {
      [this.users, this.groups] = await Promise.all([listUsers(), listGroups()]);
    } catch (error) {
      toast((error as Error).message, "error");
    }
    this.render();
  }

  private render(): void {
    clear(this.body);
    this.renderUsers();
    this.renderGroups();
    this.forms ??= h("div", { class: "admin-forms" }, this.userForm(), this.groupForm());
    this.body.append(
      h("h2", {}, t("admin.title")),
      h("h3", {}, t("admin.users")),
      this.userTable,
      h("h3", {}, t("admin.groups")),
      this.groupList,
      this.forms,
    );
  }

  private renderUsers(): void {
    clear(this.userTable);
    const body = h("tbody");
    for (const user of this.users) {
      body.append(
        h(
          "tr",
          {
            "data-testid": "user-row",
            "data-email": user.email,
            "data-id": user.id,
            "data-admin": String(user.admin),
            "data-disabled": String(user.disabled),
          },
          h("td", { "data-label": t("admin.col.email"), class: "name" }, user.email),
          h("td", { "data-label": t("admin.col.name") }, user.display_name),
          h("td", { "data-label": t("admin.col.role") }, user.admin ? t("admin.admin") : ""),
          h("td", { "data-label": t("admin.col.groups") }, (user.groups ?? []).join(", ")),
          h("td", { "data-label": t("admin.col.state") }, user.disabled ? t("admin.disabled") : user.sso ? "SSO" : ""),
          h("td", { "data-label": t("admin.col.created") }, formatTime(user.created_at)),
          h(
            "td",
            { class: "actions" },
            h(
              "button",
              { type: "button", class: "small", "data-testid": "user-toggle-admin", onclick: () => void this.patch(user, { admin: !user.admin }) },
              user.admin ? t("admin.unmakeAdmin") : t("admin.makeAdmin"),
            ),
            h(
              "button",
              {
                type: "button",
                class: user.disabled ? "small" : "small danger",
                "data-testid": "user-toggle-disabled",
                onclick: () => void this.patch(user, { disabled: !user.disabled }),
              },
              user.disabled ? t("admin.enable") : t("admin.disable"),
            ),
          ),
        ),
      );
    }
    const head = (["email", "name", "role", "groups", "state", "created"] as const).map((col) => h("th", {}, t(`admin.col.${col}`)));
    this.userTable.append(h("table", { class: "files", "data-testid": "user-table" }, h("thead", {}, h("tr", {}, ...head, h("th", {}))), body));
  }

  private renderGroups(): void {
    clear(this.groupList);
    if (!this.groups.length) {
      this.groupList.append(h("p", { class: "muted", "data-testid": "no-groups" }, t("admin.noGroups")));
      return;
    }
    for (const group of this.groups) {
      const members = groupMembers(group, this.users);
      const who = h("input", { list: "admin-user-options", placeholder: t("admin.memberEmail"), "data-testid": "group-member-input" });
      this.groupList.append(
        h(
          "article",
          { class: "group-card", "data-testid": "group-card", "data-name": group.name },
          h(
            "header",
            { class: "row between" },
            h("strong", {}, group.display_name && group.display_name !== group.name ? `${group.display_name} (${group.name})` : group.name),
            h("button", { type: "button", class: "small danger", "data-testid": "group-delete", onclick: () => void this.deleteGroup(group) }, t("common.delete")),
          ),
          h(
            "ul",
            { class: "access-list" },
            ...members.map((id) =>
              h(
                "li",
                { "data-testid": "group-member", "data-id": id },
                h("span", { class: "name" }, userLabel(id, this.users)),
                h(
                  "button",
                  { type: "button", class: "small danger", "data-testid": "group-member-remove", onclick: () => void this.membership("DELETE", group, id) },
                  "×",
                ),
              ),
            ),
          ),
          h(
            "form",
            {
              class: "row",
              onsubmit: (event: Event) => {
                event.preventDefault();
                if (who.value.trim()) void this.membership("PUT", group, userIdFor(who.value, this.users));
              },
            },
            who,
            h("button", { type: "submit", class: "small", "data-testid": "group-member-add" }, t("admin.addMember")),
          ),
        ),
      );
    }
    this.groupList.append(h("datalist", { id: "admin-user-options" }, ...this.users.map((user) => h("option", { value: user.email }))));
  }

  private userForm(): HTMLElement {
    const email = h("input", { type: "email", required: true, placeholder: t("signin.email"), "data-testid": "new-user-email" });
    const name = h("input", { placeholder: t("admin.col.name"), "data-testid": "new-user-name" });
    const password = h("input", { type: "password", autocomplete: "new-password", placeholder: t("admin.passwordOptional"), "data-testid": "new-user-password" });
    const admin = h("input", { type: "checkbox", "data-testid": "new-user-admin" });
    return h(
      "form",
      {
        class: "stack admin-form",
        "data-testid": "new-user-form",
        onsubmit: async (event: Event) => {
          event.preventDefault();
          const body: Record<string, unknown> = { email: email.value.trim(), display_name: name.value.trim() || email.value.trim() };
          if (password.value) body.password = password.value;
          if (admin.checked) body.admin = true;
          try {
            await sendJson("POST", "/v1/users", body);
            toast(t("admin.userCreated", { email: email.value.trim() }));
            for (const input of [email, name, password]) input.value = "";
            admin.checked = false;
          } catch (error) {
            toast((error as Error).message, "error");
          }
          await this.refresh();
        },
      },
      h("h4", {}, t("admin.newUser")),
      email,
      name,
      password,
      h("label", { class: "check" }, admin, t("admin.admin")),
      h("button", { type: "submit", class: "primary", "data-testid": "new-user-create" }, t("kb.create")),
    );
  }

  private groupForm(): HTMLElement {
    const name = h("input", { required: true, pattern: "[a-z0-9][a-z0-9_-]*", maxlength: 64, placeholder: t("admin.groupName"), "data-testid": "new-group-name" });
    const display = h("input", { placeholder: t("admin.groupDisplay"), "data-testid": "new-group-display" });
    return h(
      "form",
      {
        class: "stack admin-form",
        "data-testid": "new-group-form",
        onsubmit: async (event: Event) => {
          event.preventDefault();
          try {
            await sendJson("POST", "/v1/groups", { name: name.value.trim(), display_name: display.value.trim() || name.value.trim() });
            name.value = "";
            display.value = "";
          } catch (error) {
            toast((error as Error).message, "error");
          }
          await this.refresh();
        },
      },
      h("h4", {}, t("admin.newGroup")),
      name,
      display,
      h("button", { type: "submit", class: "primary", "data-testid": "new-group-create" }, t("kb.create")),
    );
  }

  private async patch(user: User, change: Partial<Pick<User, "admin" | "disabled">>): Promise<void> {
    try {
      await sendJson("PATCH", `/v1/users/${encodeURIComponent(user.id)}`, change);
    } catch (error) {
      toast((error as Error).message, "error");
    }
    await this.refresh();
  }

  private async membership(method: "PUT" | "DELETE", group: Group, userId: string): Promise<void> {
    try {
      await request(`/v1/groups/${encodeURIComponent(group.name)}/members/${encodeURIComponent(userId)}`, { method });
    } catch (error) {
      toast((error as Error).message, "error");
    }
    await this.refresh();
  }

  private async deleteGroup(group: Group): Promise<void> {
    if (!(await confirmDialog(t("admin.deleteGroupConfirm", { name: group.name })))) return;
    try {
      await request(`/v1/groups/${encodeURIComponent(group.name)}`, { method: "DELETE" });
    } catch (error) {
      toast((error as Error).message, "error");
    }
    await this.refresh();
  }
}
