// A knowledge base's sources (directory, S3, web site): the list with each one's last sync, a
// small form per kind (S3 keys are write-only: sent, never shown or filled back), sync now,
// delete, and the latest sync report, polled while a sync is queued or running. Its own
// section, re-rendered on its own, so the knowledge-base page's refreshes keep what is typed.
import { ApiError, getJson, kbPath, request, sendJson } from "./api";
import { clear, formatTime, h } from "./dom";
import { onLangChange, stateLabel, t } from "./i18n";
import { confirmDialog, toast } from "./modal";

type Kind = "directory" | "s3" | "web";

interface SyncFailure {
  item: string;
  reason: string;
}

export interface SyncReport {
  id: string;
  source: string;
  state: string;
  trigger: string;
  added: string[];
  updated: string[];
  removed: string[];
  failed: SyncFailure[];
  unchanged: number;
  error: string | null;
  job_ids: string[];
  created_at: number;
  finished_at: number;
}

interface Source {
  name: string;
  kind: Kind;
  interval_s: number;
  path: string;
  bucket: string;
  prefix: string;
  endpoint_url: string;
  region: string;
  credentials_set: boolean;
  start_url: string;
  sitemap_url: string;
  max_depth: number;
  max_pages: number;
  last_sync: SyncReport | null;
}

const KINDS: Kind[] = ["directory", "s3", "web"];
// The form's fields per kind: [request field, label key, input type].
const FIELDS: Record<Kind, Array<[string, Parameters<typeof t>[0], string]>> = {
  directory: [["path", "sources.path", "text"]],
  s3: [
    ["bucket", "sources.bucket", "text"],
    ["prefix", "sources.prefix", "text"],
    ["endpoint_url", "sources.endpoint", "url"],
    ["region", "sources.region", "text"],
    ["access_key_id", "sources.accessKey", "password"],
    ["secret_access_key", "sources.secretKey", "password"],
  ],
  web: [
    ["start_url", "sources.startUrl", "url"],
    ["sitemap_url", "sources.sitemapUrl", "url"],
    ["max_depth", "sources.maxDepth", "number"],
    ["max_pages", "sources.maxPages", "number"],
  ],
};
const POLL_MS = 1000;

const inProgress = (report: SyncReport | null | undefined) =>
  report !== null && report !== undefined && (report.state === "queued" || report.state === "running");

export function sourceLocation(source: Source): string {
  if (source.kind === "directory") return source.path;
  if (source.kind === "s3") {
    const where = `s3://${source.bucket}/${source.prefix}`;
    return source.endpoint_url ? `${where} (${source.endpoint_url})` : where;
  }
  return source.sitemap_url || source.start_url;
}

export function formatInterval(seconds: number): string {
  if (!seconds) return t("sources.onDemand");
  const [value, unit] =
    seconds % 86400 === 0 ? [seconds / 86400, "d"] : seconds % 3600 === 0 ? [seconds / 3600, "h"] : seconds % 60 === 0 ? [seconds / 60, "min"] : [seconds, "s"];
  return t("sources.every", { n: value, unit: t(`sources.unit.${unit as "d" | "h" | "min" | "s"}`) });
}

/** "2 added · 1 removed" with only the counts that are not zero. */
export function reportCounts(report: SyncReport): string {
  const parts: string[] = [];
  const add = (n: number, key: Parameters<typeof t>[0]) => n && parts.push(t(key, { n }));
  add(report.added.length, "sources.nAdded");
  add(report.updated.length, "sources.nUpdated");
  add(report.removed.length, "sources.nRemoved");
  add(report.failed.length, "sources.nFailed");
  add(report.unchanged, "sources.nUnchanged");
  return parts.join(" · ") || t("sources.nothing");
}

export class SourcesPanel {
  readonly root = h("section", { class: "kb-sources", "data-testid": "kb-sources", hidden: true });
  private kb: string | null = null;
  private sources: Source[] = [];
  /** The source whose latest report is shown, and that report. */
  private shown: string | null = null;
  private report: SyncReport | null = null;
  /** Syncs seen queued or running (source name -> report id): their end refreshes the files. */
  private pending = new Map<string, string>();
  private timer: number | undefined;
  private generation = 0;
  private table = h("div", { class: "table-wrap" });
  private reportBox = h("div", { class: "sync-report-box" });
  private heading = h("h3");
  private formSlot = h("div");
  private form: HTMLElement | null = null;

  /** ``onSynced`` gets each finished sync's report: the page reloads its files and follows the jobs. */
  constructor(private readonly onSynced: (report: SyncReport) => void) {
    this.root.append(this.heading, this.table, this.reportBox, this.formSlot);
    onLangChange(() => {
      this.form = null;
      this.render();
    });
  }

  /** Show the sources of ``kb`` (null: none selected). */
  setKnowledgeBase(kb: string | null): void {
    if (kb === this.kb) return;
    this.kb = kb;
    this.generation += 1;
    window.clearTimeout(this.timer);
    this.sources = [];
    this.shown = null;
    this.report = null;
    this.pending.clear();
    // Nothing of the previous knowledge base stays on show (or takes input) until the new
    // one's sources arrive: its form would be swapped for a fresh one under the typing.
    this.root.hidden = true;
    clear(this.table);
    clear(this.reportBox);
    this.form = null;
    this.formSlot.replaceChildren();
    void this.load();
  }

  /** Reload the list (and the shown report): the page's refresh button and navigation. */
  refresh(): Promise<void> {
    return this.load();
  }

  private async load(): Promise<void> {
    const kb = this.kb;
    const generation = this.generation;
    if (!kb) {
      this.root.hidden = true;
      return;
    }
    try {
      const listed = (await getJson<{ data: Source[] }>(`${kbPath(kb)}/sources`)).data;
      const report = this.shown ? await this.latest(kb, this.shown) : null;
      if (generation !== this.generation) return;
      // The report was read after the list: where both are the same sync, it is the fresher.
      this.sources = listed.map((source) =>
        report && source.name === report.source && source.last_sync?.id === report.id ? { ...source, last_sync: report } : source,
      );
      if (this.shown) this.report = report;
      this.root.hidden = false;
    } catch (error) {
      if (generation !== this.generation) return;
      // A gateway without sources (404/405/501) keeps the section hidden; other errors show.
      if (error instanceof ApiError && [404, 405, 501].includes(error.status)) {
        this.root.hidden = true;
        return;
      }
      toast((error as Error).message, "error");
    }
    this.noticeFinished();
    this.render();
    this.schedulePoll();
  }

  private async latest(kb: string, name: string): Promise<SyncReport | null> {
    try {
      return await getJson<SyncReport>(`${kbPath(kb)}/sources/${encodeURIComponent(name)}/syncs/latest`);
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) return null; // never synced
      throw error;
    }
  }

  /** Reports that were queued or running and are now done: tell the page once per sync. */
  private noticeFinished(): void {
    const reports = [...this.sources.map((s) => s.last_sync), this.report];
    for (const report of reports) {
      if (!report) continue;
      if (inProgress(report)) {
        this.pending.set(report.source, report.id);
      } else if (this.pending.get(report.source) === report.id) {
        this.pending.delete(report.source);
        this.onSynced(report);
      }
    }
  }

  private schedulePoll(): void {
    window.clearTimeout(this.timer);
    const running = this.sources.some((source) => inProgress(source.last_sync)) || inProgress(this.report);
    if (!this.pending.size && !running) return;
    const generation = this.generation;
    this.timer = window.setTimeout(() => {
      if (generation === this.generation) void this.load();
    }, POLL_MS);
  }

  /** Table and report are rebuilt; the form stays in place (typed text, focus) unless gone. */
  private render(): void {
    this.heading.textContent = t("sources.title");
    this.renderTable();
    this.renderReport();
    if (!this.form) {
      this.form = this.createForm();
      this.formSlot.replaceChildren(this.form);
    }
  }

  private renderTable(): void {
    clear(this.table);
    if (!this.sources.length) {
      this.table.append(h("p", { class: "muted", "data-testid": "no-sources" }, t("sources.none")));
      return;
    }
    const head = ["name", "kind", "location", "interval", "credentials", "lastSync", "actions"] as const;
    const body = h("tbody");
    for (const source of this.sources) {
      const last = source.last_sync;
      const running = inProgress(last);
      body.append(
        h(
          "tr",
          { "data-testid": "kb-source-row", "data-name": source.name, "data-state": last?.state ?? "" },
          h("td", { "data-label": t("sources.col.name"), class: "name" }, source.name),
          h("td", { "data-label": t("sources.col.kind") }, t(`sources.kind.${source.kind}`)),
          h("td", { "data-label": t("sources.col.location"), class: "name" }, sourceLocation(source)),
          h("td", { "data-label": t("sources.col.interval") }, formatInterval(source.interval_s)),
          h(
            "td",
            { "data-label": t("sources.col.credentials"), "data-testid": "kb-source-credentials" },
            source.kind === "s3" ? t(source.credentials_set ? "sources.yes" : "sources.no") : "",
          ),
          h(
            "td",
            { "data-label": t("sources.col.lastSync"), "data-testid": "kb-source-last" },
            last
              ? h("span", { class: `state ${last.state}` }, stateLabel(last.state))
              : h("span", { class: "muted" }, t("sources.never")),
            last && !running ? ` ${reportCounts(last)}` : "",
          ),
          h(
            "td",
            { class: "actions" },
            h(
              "button",
              { type: "button", class: "small", "data-testid": "kb-source-sync", disabled: running, onclick: () => void this.sync(source.name) },
              t("sources.sync"),
            ),
            h(
              "button",
              { type: "button", class: "small", "data-testid": "kb-source-report", disabled: !last, onclick: () => void this.show(source.name) },
              t("sources.report"),
            ),
            h(
              "button",
              { type: "button", class: "small danger", "data-testid": "kb-source-delete", onclick: () => void this.remove(source.name) },
              t("common.delete"),
            ),
          ),
        ),
      );
    }
    this.table.append(
      h(
        "table",
        { class: "files", "data-testid": "kb-source-table" },
        h("thead", {}, h("tr", {}, ...head.map((col) => h("th", {}, t(`sources.col.${col}`))))),
        body,
      ),
    );
  }

  private renderReport(): void {
    clear(this.reportBox);
    const report = this.report;
    if (!this.shown || !report) return;
    const list = (key: Parameters<typeof t>[0], testid: string, items: Array<string | Node>) =>
      h(
        "div",
        { class: "report-part", "data-testid": testid, "data-count": items.length },
        h("strong", {}, t(key, { n: items.length })),
        items.length ? h("ul", {}, ...items.map((item) => h("li", {}, item))) : null,
      );
    this.reportBox.append(
      h(
        "div",
        { class: "sync-report", "data-testid": "sync-report", "data-state": report.state, "data-source": report.source },
        h(
          "div",
          { class: "row between" },
          h(
            "strong",
            {},
            t("sources.reportOf", { name: report.source }),
            " ",
            h("span", { class: `state ${report.state}`, "data-testid": "sync-report-state" }, stateLabel(report.state)),
          ),
          h(
            "span",
            { class: "muted" },
            `${t(`sources.trigger.${report.trigger === "schedule" ? "schedule" : "manual"}`)} · ${formatTime(report.finished_at || report.created_at)}`,
          ),
          h("button", { type: "button", class: "small", "data-testid": "sync-report-close", onclick: () => this.hideReport() }, "×"),
        ),
        report.error ? h("p", { class: "error-text", "data-testid": "sync-report-error" }, report.error) : null,
        inProgress(report)
          ? h("p", { class: "muted" }, t("sources.syncing"))
          : h(
              "div",
              { class: "report-parts" },
              list("sources.added", "sync-added", report.added),
              list("sources.updated", "sync-updated", report.updated),
              list("sources.removed", "sync-removed", report.removed),
              list(
                "sources.failed",
                "sync-failed",
                report.failed.map((f) => h("span", {}, h("span", { class: "name" }, f.item), " — ", h("span", { class: "error-text" }, f.reason))),
              ),
              h("div", { class: "report-part", "data-testid": "sync-unchanged", "data-count": report.unchanged }, h("strong", {}, t("sources.unchanged", { n: report.unchanged }))),
            ),
      ),
    );
  }

  private hideReport(): void {
    this.shown = null;
    this.report = null;
    this.renderReport();
  }

  private async show(name: string): Promise<void> {
    this.shown = name;
    await this.load();
  }

  private async sync(name: string): Promise<void> {
    const kb = this.kb;
    if (!kb) return;
    try {
      const queued = await sendJson<SyncReport>("POST", `${kbPath(kb)}/sources/${encodeURIComponent(name)}/sync`);
      if (queued && inProgress(queued)) this.pending.set(name, queued.id);
      this.shown = name;
      this.report = queued;
    } catch (error) {
      toast((error as Error).message, "error");
    }
    await this.load();
  }

  private async remove(name: string): Promise<void> {
    const kb = this.kb;
    if (!kb || !(await confirmDialog(t("sources.deleteConfirm", { name })))) return;
    try {
      await request(`${kbPath(kb)}/sources/${encodeURIComponent(name)}`, { method: "DELETE" });
      this.pending.delete(name);
      if (this.shown === name) this.hideReport();
    } catch (error) {
      toast((error as Error).message, "error");
    }
    await this.load();
  }

  // ---- the form --------------------------------------------------------------------------

  private createForm(): HTMLElement {
    const name = h("input", { required: true, maxlength: 64, "data-testid": "source-name" });
    const kind = h("select", { "data-testid": "source-kind" }, ...KINDS.map((k) => h("option", { value: k }, t(`sources.kind.${k}`))));
    const interval = h("input", { type: "number", min: "0", step: "1", placeholder: "0", "data-testid": "source-interval" });
    const inputs = new Map<string, HTMLInputElement>();
    const groups = KINDS.map((k) => {
      const fields = FIELDS[k].map(([field, label, type]) => {
        const input = h("input", {
          type,
          min: type === "number" ? "0" : undefined,
          autocomplete: type === "password" ? "new-password" : "off",
          "data-testid": `source-${field}`,
        });
        inputs.set(field, input);
        return h("label", { class: "field" }, h("span", {}, t(label)), input);
      });
      return h("div", { class: "row wrap", "data-kind": k, hidden: k !== kind.value }, ...fields);
    });
    const help = h("p", { class: "muted" });
    const showKind = () => {
      for (const group of groups) group.hidden = group.dataset.kind !== kind.value;
      help.textContent = t(`sources.help.${kind.value as Kind}`);
    };
    kind.addEventListener("change", showKind);
    showKind();
    const form = h(
      "form",
      {
        class: "stack source-form",
        "data-testid": "source-form",
        onsubmit: async (event: Event) => {
          event.preventDefault();
          const kb = this.kb;
          if (!kb) return;
          const selected = kind.value as Kind;
          const body: Record<string, string | number> = { name: name.value.trim(), kind: selected };
          if (interval.value) body.interval_s = Number(interval.value);
          for (const [field, , type] of FIELDS[selected]) {
            const value = inputs.get(field)?.value.trim() ?? "";
            if (value) body[field] = type === "number" ? Number(value) : value;
          }
          try {
            await sendJson("POST", `${kbPath(kb)}/sources`, body);
            form.reset();
            showKind();
            toast(t("sources.created", { name: body.name }));
          } catch (error) {
            toast((error as Error).message, "error");
          } finally {
            // Keys are write-only: never kept in the page once sent, whatever the answer.
            for (const [field, input] of inputs) if (field.endsWith("_key") || field === "access_key_id") input.value = "";
          }
          await this.load();
        },
      },
      h("h4", {}, t("sources.add")),
      h(
        "div",
        { class: "row wrap" },
        h("label", { class: "field" }, h("span", {}, t("sources.col.name")), name),
        h("label", { class: "field" }, h("span", {}, t("sources.col.kind")), kind),
        h("label", { class: "field small" }, h("span", {}, t("sources.intervalS")), interval),
      ),
      help,
      ...groups,
      h("div", {}, h("button", { type: "submit", class: "primary", "data-testid": "source-create" }, `+ ${t("sources.addButton")}`)),
    );
    return form;
  }
}
