// The knowledge-base page: create, describe, delete; drag-and-drop uploads with per-file
// progress from the job events; the file table with download, reindex and delete; the
// knowledge base's sources (sources.ts); search; each file's access list (access.ts) and the
// Members tab (members.ts), where people and groups get roles.
import { accessField, editAccess } from "./access";
import { ApiError, fileUrl, getJson, kbPath, openFile, request, sendJson } from "./api";
import { showPassage } from "./chat";
import { clear, formatBytes, formatTime, h } from "./dom";
import { onLangChange, stateLabel, t } from "./i18n";
import { followJob, type Job } from "./jobs";
import { MembersPanel } from "./members";
import { confirmDialog, toast } from "./modal";
import { knownUsers } from "./people";
import { SourcesPanel, type SyncReport } from "./sources";

interface KnowledgeBase {
  name: string;
  description: string;
  file_count?: number;
  chunk_count?: number;
  embed_model?: string;
}

interface FileRow {
  file_name?: string;
  name?: string;
  size: number;
  chunks: number;
  state: string;
  error?: string | null;
  uploaded_at?: number | string;
  created_at?: number | string;
}

interface Hit {
  id: string;
  text: string;
  score: number;
  file_name: string;
}

interface UploadRow {
  file: string;
  job?: Job;
  state: string;
  progress: number;
  error?: string | null;
  unchanged?: boolean;
}

const fileNameOf = (row: FileRow) => row.file_name ?? row.name ?? "";

export class KnowledgeBasePage {
  readonly root = h("section", { class: "page kb-page", "data-testid": "kb-page" });
  private list: KnowledgeBase[] = [];
  private selected: string | null = null;
  private files: FileRow[] = [];
  private uploads = new Map<string, UploadRow>();
  private hits: Hit[] | null = null;
  private refreshTimer: number | undefined;
  private options = {
    chunkSize: 0,
    chunkOverlap: 0,
    splitter: "recursive",
    titleEnhance: false,
    override: false,
    accessUsers: "",
    accessGroups: "",
  };
  private tab: "files" | "members" = "files";
  private members = new MembersPanel();

  private side = h("aside", { class: "sidebar" });
  private main = h("div", { class: "kb-main" });
  // The main pane in three parts. ``rebuilt`` (header, tabs, uploads, file table) is built
  // again on every render; ``kept`` (sources panel, search form) and ``membersSlot`` stay
  // attached: detaching them on each refresh (one after every finished job) dropped the
  // focus of whoever was typing there, and a click landing in that moment did nothing.
  private rebuilt = h("div");
  private kept = h("div");
  private membersSlot = h("div");
  private uploadList = h("ul", { class: "uploads", "data-testid": "uploads" });
  private fileTable = h("div", { class: "table-wrap" });
  private hitList = h("div", { class: "hits", "data-testid": "search-results" });
  private sources = new SourcesPanel((report) => this.afterSync(report));
  // Built once (and again on a language switch) so re-renders keep what was typed.
  private searchForm: HTMLElement | null = null;

  constructor() {
    this.root.append(this.side, this.main);
    this.membersSlot.append(this.members.root);
    onLangChange(() => {
      this.searchForm = null;
      this.members.relabel();
      this.render();
    });
  }

  async start(): Promise<void> {
    await this.loadList();
  }

  async refresh(): Promise<void> {
    await this.loadList();
    await this.sources.refresh();
    if (this.tab === "members") await this.members.refresh();
  }

  private current(): KnowledgeBase | undefined {
    return this.list.find((kb) => kb.name === this.selected);
  }

  private async loadList(): Promise<void> {
    try {
      this.list = (await getJson<{ data: KnowledgeBase[] }>("/v1/knowledge_bases")).data;
    } catch (error) {
      toast((error as Error).message, "error");
    }
    if (this.selected && !this.current()) this.selected = null;
    if (!this.selected && this.list.length) this.selected = this.list[0].name;
    this.sources.setKnowledgeBase(this.selected);
    this.members.setKnowledgeBase(this.selected);
    await this.loadFiles();
  }

  private async loadFiles(): Promise<void> {
    this.files = [];
    if (this.selected) {
      try {
        this.files = (await getJson<{ data: FileRow[] }>(`${kbPath(this.selected)}/files`)).data;
      } catch (error) {
        toast((error as Error).message, "error");
      }
    }
    this.render();
  }

  /** Many jobs finish close together: refresh the table and counts once after a short pause. */
  private scheduleRefresh(): void {
    window.clearTimeout(this.refreshTimer);
    this.refreshTimer = window.setTimeout(() => void this.loadList(), 300);
  }

  private select(name: string): void {
    this.selected = name;
    this.uploads.clear();
    this.hits = null;
    this.sources.setKnowledgeBase(name);
    this.members.setKnowledgeBase(name);
    void this.loadFiles();
    if (this.tab === "members") void this.members.refresh();
  }

  /** A sync changed the files: show them now, and again as each ingest job it queued ends. */
  private afterSync(report: SyncReport): void {
    this.scheduleRefresh();
    for (const id of report.job_ids) {
      void followJob(id, () => undefined)
        .then(() => this.scheduleRefresh())
        .catch(() => this.scheduleRefresh());
    }
  }

  private render(): void {
    this.renderSide();
    this.renderMain();
  }

  private renderSide(): void {
    clear(this.side);
    const name = h("input", { required: true, maxlength: 100, placeholder: t("kb.name"), "data-testid": "kb-name" });
    const description = h("input", { placeholder: t("kb.description"), "data-testid": "kb-description" });
    const form = h(
      "form",
      {
        class: "stack",
        onsubmit: async (event: Event) => {
          event.preventDefault();
          try {
            const created = await sendJson<KnowledgeBase>("POST", "/v1/knowledge_bases", {
              name: name.value.trim(),
              description: description.value.trim(),
            });
            this.selected = created?.name ?? name.value.trim();
            this.uploads.clear();
            this.hits = null;
            await this.loadList();
          } catch (error) {
            toast((error as Error).message, "error");
          }
        },
      },
      name,
      description,
      h("button", { type: "submit", class: "primary", "data-testid": "kb-create" }, `+ ${t("kb.create")}`),
    );
    const items = h("ul", { class: "kb-list", "data-testid": "kb-list" });
    for (const kb of this.list) {
      items.append(
        h(
          "li",
          { class: kb.name === this.selected ? "active" : "", "data-testid": "kb-item", "data-name": kb.name },
          h("button", { type: "button", class: "link title", onclick: () => this.select(kb.name) }, kb.name),
        ),
      );
    }
    this.side.append(h("h2", {}, t("kb.list")), form, this.list.length ? items : h("p", { class: "muted" }, t("kb.none")));
  }

  private renderMain(): void {
    const kb = this.current();
    if (!kb) {
      this.main.replaceChildren(h("p", { class: "muted empty" }, t("kb.pick")));
      return;
    }
    if (this.rebuilt.parentElement !== this.main) this.main.replaceChildren(this.rebuilt, this.kept, this.membersSlot);
    clear(this.rebuilt);
    this.rebuilt.append(
      h(
        "div",
        { class: "row between kb-header" },
        h(
          "div",
          {},
          h("h2", { "data-testid": "kb-title" }, kb.name),
          kb.description ? h("p", { "data-testid": "kb-desc" }, kb.description) : null,
          h(
            "p",
            { class: "muted", "data-testid": "kb-stats" },
            `${kb.file_count ?? this.files.length} ${t("kb.files")} · ${kb.chunk_count ?? 0} ${t("kb.chunks")}` +
              (kb.embed_model ? ` · ${t("kb.model")} ${kb.embed_model}` : ""),
          ),
        ),
        h(
          "div",
          { class: "row" },
          h("button", { type: "button", onclick: () => void this.refresh() }, t("kb.refresh")),
          h("button", { type: "button", class: "danger", "data-testid": "kb-delete", onclick: () => void this.deleteKb(kb) }, t("kb.deleteKb")),
        ),
      ),
      this.tabs(),
    );
    const members = this.tab === "members";
    this.membersSlot.hidden = !members;
    this.kept.hidden = members;
    if (members) return;
    this.rebuilt.append(this.dropZone(), this.optionsRow());
    this.renderUploads();
    if (this.uploads.size) this.rebuilt.append(h("h3", {}, t("kb.uploads")), this.uploadList);
    this.renderFiles();
    this.rebuilt.append(h("h3", {}, t("kb.fileTable")), this.fileTable);
    const search = (this.searchForm ??= this.searchBox());
    if (search.parentElement !== this.kept) this.kept.replaceChildren(this.sources.root, search);
    this.renderHits();
  }

  private tabs(): HTMLElement {
    const tab = (name: "files" | "members", label: string) =>
      h(
        "button",
        {
          type: "button",
          role: "tab",
          class: name === this.tab ? "tab active" : "tab",
          "aria-selected": name === this.tab ? "true" : "false",
          "data-testid": `kb-tab-${name}`,
          onclick: () => {
            this.tab = name;
            this.renderMain();
            if (name === "members") void this.members.refresh();
          },
        },
        label,
      );
    return h("div", { class: "tabs", role: "tablist" }, tab("files", t("kb.tab.files")), tab("members", t("kb.tab.members")));
  }

  private async deleteKb(kb: KnowledgeBase): Promise<void> {
    if (!(await confirmDialog(t("kb.deleteConfirm", { name: kb.name })))) return;
    try {
      await request(kbPath(kb.name), { method: "DELETE" });
      this.selected = null;
      this.uploads.clear();
      await this.loadList();
    } catch (error) {
      toast((error as Error).message, "error");
    }
  }

  // ---- uploads -------------------------------------------------------------------------

  private dropZone(): HTMLElement {
    const input = h("input", { type: "file", multiple: true, hidden: true, "data-testid": "upload-input" });
    input.addEventListener("change", () => {
      if (input.files?.length) void this.upload([...input.files]);
      input.value = "";
    });
    const zone = h(
      "div",
      {
        class: "dropzone",
        role: "button",
        tabindex: 0,
        "data-testid": "dropzone",
        onclick: () => input.click(),
        onkeydown: (event: Event) => {
          if ((event as KeyboardEvent).key === "Enter") input.click();
        },
        ondragover: (event: Event) => {
          event.preventDefault();
          zone.classList.add("over");
        },
        ondragleave: () => zone.classList.remove("over"),
        ondrop: (event: Event) => {
          event.preventDefault();
          zone.classList.remove("over");
          const files = (event as DragEvent).dataTransfer?.files;
          if (files?.length) void this.upload([...files]);
        },
      },
      h("span", {}, `⇪ ${t("kb.drop")}`),
      input,
    );
    return zone;
  }

  private optionsRow(): HTMLElement {
    const o = this.options;
    const num = (key: "chunkSize" | "chunkOverlap", label: string) =>
      h(
        "label",
        { class: "field small" },
        h("span", {}, label),
        h("input", {
          type: "number",
          min: "0",
          step: "50",
          value: String(o[key] || ""),
          placeholder: "auto",
          onchange: (event: Event) => (o[key] = Number((event.target as HTMLInputElement).value) || 0),
        }),
      );
    const check = (key: "titleEnhance" | "override", label: string) =>
      h(
        "label",
        { class: "check" },
        h("input", {
          type: "checkbox",
          checked: o[key],
          onchange: (event: Event) => (o[key] = (event.target as HTMLInputElement).checked),
        }),
        label,
      );
    const text = (key: "accessUsers" | "accessGroups", label: string, testid: string) =>
      h(
        "label",
        { class: "field access-field", title: t("kb.accessHelp") },
        h("span", {}, label),
        h("input", {
          value: o[key],
          placeholder: t("kb.accessPlaceholder"),
          "data-testid": testid,
          onchange: (event: Event) => (o[key] = (event.target as HTMLInputElement).value),
        }),
      );
    return h(
      "div",
      { class: "row wrap options" },
      num("chunkSize", t("kb.chunkSize")),
      num("chunkOverlap", t("kb.chunkOverlap")),
      h(
        "label",
        { class: "field small" },
        h("span", {}, t("kb.splitter")),
        h(
          "select",
          { onchange: (event: Event) => (o.splitter = (event.target as HTMLSelectElement).value) },
          ...["recursive", "markdown"].map((v) => h("option", { value: v, selected: v === o.splitter }, v)),
        ),
      ),
      check("titleEnhance", t("kb.titleEnhance")),
      check("override", t("kb.override")),
      text("accessUsers", t("kb.accessUsers"), "upload-access-users"),
      text("accessGroups", t("kb.accessGroups"), "upload-access-groups"),
    );
  }

  private splitFields(): Record<string, string | number | boolean> {
    const o = this.options;
    const fields: Record<string, string | number | boolean> = { splitter: o.splitter, title_enhance: o.titleEnhance };
    if (o.chunkSize) fields.chunk_size = o.chunkSize;
    if (o.chunkOverlap) fields.chunk_overlap = o.chunkOverlap;
    return fields;
  }

  private async upload(files: File[]): Promise<void> {
    const kb = this.selected;
    if (!kb) return;
    const form = new FormData();
    for (const file of files) {
      form.append("files", file, file.name);
      this.uploads.set(file.name, { file: file.name, state: "uploading", progress: 0 });
    }
    for (const [key, value] of Object.entries(this.splitFields())) form.append(key, String(value));
    if (this.options.override) form.append("override", "true");
    if (this.options.accessUsers.trim() || this.options.accessGroups.trim()) {
      const users = this.options.accessUsers.includes("@") ? await knownUsers() : [];
      const access = accessField(this.options.accessUsers, this.options.accessGroups, users);
      if (access) form.append("access", access);
    }
    this.renderMain();
    try {
      const response = await request(`${kbPath(kb)}/files`, { method: "POST", body: form });
      const accepted = (await response.json()) as { jobs: Array<Job & { unchanged?: boolean }> };
      this.trackJobs(accepted.jobs);
    } catch (error) {
      for (const file of files) {
        this.uploads.set(file.name, { file: file.name, state: "failed", progress: 0, error: (error as Error).message });
      }
      this.renderMain();
    }
  }

  private trackJobs(jobs: Array<Job & { unchanged?: boolean }>): void {
    for (const job of jobs) {
      const row: UploadRow = { file: job.file_name, job, state: job.state, progress: 0, unchanged: job.unchanged };
      this.uploads.set(job.file_name, row);
      if (job.unchanged) {
        row.state = "succeeded";
        row.progress = 1;
        continue;
      }
      void followJob(job.id, (update) => {
        row.job = update;
        row.state = update.state;
        row.progress = update.progress ?? 0;
        row.error = update.error;
        this.renderUploads();
      })
        .then(() => this.scheduleRefresh())
        .catch((error: Error) => {
          row.state = "failed";
          row.error = error.message;
          this.renderUploads();
        });
    }
    this.renderMain();
  }

  private renderUploads(): void {
    clear(this.uploadList);
    for (const row of this.uploads.values()) {
      const stage = row.job?.stage && row.state === "running" ? row.job.stage : row.state;
      const percent = Math.round((row.state === "succeeded" ? 1 : row.progress) * 100);
      this.uploadList.append(
        h(
          "li",
          { "data-testid": "upload-row", "data-file": row.file, "data-state": row.state, "data-job": row.job?.id },
          h("span", { class: "name" }, row.file),
          h("progress", { max: 100, value: percent }),
          h(
            "span",
            { class: `state ${row.state}`, "data-testid": "upload-state" },
            row.unchanged ? t("kb.unchanged") : `${stateLabel(stage)} ${percent}%`,
          ),
          row.error ? h("span", { class: "error-text" }, row.error) : null,
        ),
      );
    }
  }

  // ---- files ---------------------------------------------------------------------------

  private renderFiles(): void {
    clear(this.fileTable);
    const kb = this.selected;
    if (!kb) return;
    if (!this.files.length) {
      this.fileTable.append(h("p", { class: "muted", "data-testid": "no-files" }, t("kb.noFiles")));
      return;
    }
    const head = ["name", "size", "chunks", "state", "error", "uploaded", "actions"] as const;
    const table = h(
      "table",
      { class: "files", "data-testid": "file-table" },
      h("thead", {}, h("tr", {}, ...head.map((col) => h("th", {}, t(`kb.col.${col}`))))),
    );
    const body = h("tbody");
    for (const row of this.files) {
      const name = fileNameOf(row);
      body.append(
        h(
          "tr",
          { "data-testid": "file-row", "data-file": name, "data-state": row.state },
          h("td", { "data-label": t("kb.col.name"), class: "name" }, name),
          h("td", { "data-label": t("kb.col.size") }, formatBytes(row.size)),
          h("td", { "data-label": t("kb.col.chunks") }, String(row.chunks)),
          h("td", { "data-label": t("kb.col.state") }, h("span", { class: `state ${row.state}` }, stateLabel(row.state))),
          h("td", { "data-label": t("kb.col.error"), class: "error-text" }, row.error ?? ""),
          h("td", { "data-label": t("kb.col.uploaded") }, formatTime(row.uploaded_at ?? row.created_at)),
          h(
            "td",
            { class: "actions" },
            h(
              "button",
              {
                type: "button",
                class: "small",
                "data-testid": "file-download",
                onclick: () => openFile(fileUrl(kb, name), true).catch((e: Error) => toast(e.message, "error")),
              },
              t("kb.download"),
            ),
            h(
              "button",
              { type: "button", class: "small", "data-testid": "file-reindex", onclick: () => void this.reindex(kb, name) },
              t("kb.reindex"),
            ),
            h(
              "button",
              { type: "button", class: "small", "data-testid": "file-access", onclick: () => void editAccess(kb, name) },
              t("kb.access"),
            ),
            h(
              "button",
              { type: "button", class: "small danger", "data-testid": "file-delete", onclick: () => void this.deleteFile(kb, name) },
              t("kb.deleteFile"),
            ),
          ),
        ),
      );
    }
    table.append(body);
    this.fileTable.append(table);
  }

  private async reindex(kb: string, name: string): Promise<void> {
    try {
      const accepted = await sendJson<{ jobs: Job[] }>(
        "POST",
        `${kbPath(kb)}/files/${encodeURIComponent(name)}/reindex`,
        this.splitFields(),
      );
      this.trackJobs(accepted?.jobs ?? []);
    } catch (error) {
      const message = error instanceof ApiError && [404, 405].includes(error.status) ? `${error.status}: ${error.message}` : (error as Error).message;
      toast(message, "error");
    }
  }

  private async deleteFile(kb: string, name: string): Promise<void> {
    if (!(await confirmDialog(t("kb.deleteFileConfirm", { name })))) return;
    try {
      await request(`${kbPath(kb)}/files/${encodeURIComponent(name)}`, { method: "DELETE" });
      this.uploads.delete(name);
      await this.loadList();
    } catch (error) {
      toast((error as Error).message, "error");
    }
  }

  // ---- search --------------------------------------------------------------------------

  private searchBox(): HTMLElement {
    const query = h("input", { type: "search", required: true, placeholder: t("kb.searchPlaceholder"), "data-testid": "kb-search-input" });
    const topK = h("input", { type: "number", min: "1", max: "100", value: "5", class: "narrow", "aria-label": "top_k" });
    const threshold = h("input", { type: "number", min: "0", max: "1", step: "0.05", value: "0", class: "narrow", "aria-label": "score_threshold" });
    return h(
      "form",
      {
        class: "search",
        onsubmit: async (event: Event) => {
          event.preventDefault();
          const kb = this.selected;
          if (!kb) return;
          try {
            const result = await sendJson<{ data: Hit[] }>("POST", `${kbPath(kb)}/search`, {
              query: query.value,
              top_k: Number(topK.value) || 5,
              score_threshold: Number(threshold.value) || 0,
            });
            this.hits = result?.data ?? [];
          } catch (error) {
            toast((error as Error).message, "error");
          }
          this.renderHits();
        },
      },
      h("h3", {}, t("kb.search")),
      h(
        "div",
        { class: "row wrap" },
        query,
        h("label", { class: "field small" }, h("span", {}, t("chat.topK")), topK),
        h("label", { class: "field small" }, h("span", {}, t("chat.threshold")), threshold),
        h("button", { type: "submit", class: "primary", "data-testid": "kb-search-button" }, t("kb.searchButton")),
      ),
      this.hitList,
    );
  }

  private renderHits(): void {
    clear(this.hitList);
    const kb = this.selected;
    if (this.hits === null || !kb) return;
    if (!this.hits.length) {
      this.hitList.append(h("p", { class: "muted" }, t("kb.noHits")));
      return;
    }
    this.hits.forEach((hit, index) => {
      this.hitList.append(
        h(
          "article",
          {
            class: "hit",
            "data-testid": "search-hit",
            onclick: () => showPassage(index + 1, { ...hit, url: fileUrl(kb, hit.file_name) }),
          },
          h(
            "header",
            { class: "row between" },
            h("strong", {}, `[${index + 1}] ${hit.file_name}`),
            h("span", { class: "score", "data-testid": "hit-score" }, hit.score.toFixed(3)),
          ),
          h("p", {}, hit.text.length > 400 ? `${hit.text.slice(0, 400)}…` : hit.text),
        ),
      );
    });
  }
}
