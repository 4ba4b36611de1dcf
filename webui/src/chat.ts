// The chat page: plain, knowledge-base or file chat with streamed Markdown answers, numbered
// sources that open their passage (each saying whether it backs the answer), unsupported
// sentences underlined, abstentions shown as a notice, conversations (when the gateway stores
// them), copy and feedback thumbs; in agent mode the model calls the gateway's tools and each
// step is shown folded above its answer.
import { type AgentStep, AgentSteps, collectStoredSteps, type ToolTurn } from "./agent";
import { ApiError, errorMessage, getJson, openFile, raw, request, routeExists, sendJson, sseData } from "./api";
import { append, clear, h } from "./dom";
import { markSentinels, type UnsupportedSentence, withSentinels } from "./grounding";
import { icon } from "./icons";
import { onLangChange, t } from "./i18n";
import { renderMarkdown } from "./markdown";
import { confirmDialog, panel, promptDialog, toast } from "./modal";

export interface Citation {
  file_name: string;
  chunk_id?: string;
  score?: number;
  text: string;
  url?: string;
  /** The n of [n] in the answer (agent answers: ``number``); with the checked citations
   * (answer complete) also: */
  index?: number;
  number?: number;
  cited?: boolean; // the answer cites it
  supported?: boolean; // it backs a sentence that cites it
}

/** What a knowledge-base answer says about itself; each field only where the gateway sent it. */
interface Grounding {
  abstained?: boolean | null;
  retrieval_query?: string | null;
  unsupported?: UnsupportedSentence[] | null;
}

interface Conversation {
  id: string;
  title: string;
  knowledge_base?: string | null;
  updated_at?: number | string;
}

interface StoredMessage extends Grounding, ToolTurn {
  id: string;
  citations?: Citation[];
  feedback?: { score: number; reason?: string } | null;
}

interface KnowledgeBase {
  name: string;
}

/** A served model as GET /v1/models lists it (its kb:<name> entries are knowledge bases). */
interface Model {
  id: string;
  knowledge_base?: string;
  default?: boolean;
  context_length?: number;
  capabilities?: { tools?: boolean };
}

type Mode = "plain" | "kb" | "files";

const SETTINGS_KEY = "zhiku.chatSettings";
// The model each conversation was held with (conversation id -> model id), and whether in
// agent mode (conversation id -> true): this browser's own.
const CONVERSATION_MODELS_KEY = "zhiku.conversationModels";
const CONVERSATION_AGENT_KEY = "zhiku.conversationAgent";

interface Settings {
  mode: Mode;
  kb: string;
  model: string; // "" or "default": the gateway's default model
  agent: boolean; // agent mode: /v1/agent/completions with the gateway's tools
  topK: number;
  threshold: number;
  temperature: number;
  history: number;
}

function loadSettings(): Settings {
  const defaults: Settings = {
    mode: "kb",
    kb: "",
    model: "",
    agent: false,
    topK: 5,
    threshold: 0,
    temperature: 0.7,
    history: 6,
  };
  try {
    return { ...defaults, ...JSON.parse(localStorage.getItem(SETTINGS_KEY) ?? "{}") };
  } catch {
    return defaults;
  }
}

function conversationChoices<T>(key: string): Record<string, T> {
  try {
    return JSON.parse(localStorage.getItem(key) ?? "{}") as Record<string, T>;
  } catch {
    return {};
  }
}

function rememberConversationChoice<T>(key: string, id: string, value: T): void {
  localStorage.setItem(key, JSON.stringify({ ...conversationChoices<T>(key), [id]: value }));
}

function labelled(label: string, control: HTMLElement, testid?: string): HTMLLabelElement {
  return h("label", { class: "field", "data-testid": testid }, h("span", {}, label), control);
}

export class ChatPage {
  readonly root = h("section", { class: "page chat-page", "data-testid": "chat-page" });
  private settings = loadSettings();
  private conversationsSupported = false;
  private agentSupported = false;
  private conversations: Conversation[] = [];
  private activeId: string | null = null;
  private history: Array<{ role: string; content: string }> = [];
  private fileChatId: string | null = null;
  private fileChatFiles: string[] = [];
  private fileChatStatus = h("span", { class: "muted", "data-testid": "file-chat-status" });
  private abort: AbortController | null = null;
  private knowledgeBases: KnowledgeBase[] = [];
  private models: Model[] = [];

  private convList = h("ul", { class: "conv-list", "data-testid": "conversation-list" });
  private convPane = h("aside", { class: "sidebar conversations", hidden: true });
  private messages = h("div", { class: "messages", "data-testid": "messages", "aria-live": "polite" });
  private controls = h("div", { class: "chat-controls" });
  private input = h("textarea", { rows: 2, "data-testid": "chat-input" });
  private sendButton = h("button", { type: "submit", class: "primary", "data-testid": "chat-send" });

  constructor() {
    this.root.append(this.convPane, h("div", { class: "chat-main" }, this.controls, this.messages, this.composer()));
    onLangChange(() => this.renderStatic());
  }

  async start(): Promise<void> {
    this.renderStatic();
    [this.conversationsSupported, this.agentSupported] = await Promise.all([
      routeExists("/v1/conversations"),
      routeExists("/v1/agent/tools"),
    ]);
    this.convPane.hidden = !this.conversationsSupported;
    await Promise.all([
      this.loadKnowledgeBases(),
      this.loadModels(),
      this.conversationsSupported ? this.loadConversations() : null,
    ]);
  }

  /** Called when the page is shown again: knowledge bases may have changed meanwhile. */
  async refresh(): Promise<void> {
    await Promise.all([this.loadKnowledgeBases(), this.loadModels()]);
  }

  /** The served models (knowledge bases listed as kb:<name> models aside); a gateway that
   * cannot list them gets no model choice and answers with its default. */
  private async loadModels(): Promise<void> {
    try {
      const listed = (await getJson<{ data: Model[] }>("/v1/models")).data;
      this.models = listed.filter((m) => !m.knowledge_base && !m.id.startsWith("kb:"));
    } catch {
      this.models = [];
    }
    if (!this.models.some((m) => m.id === this.settings.model)) this.settings.model = "";
    this.renderControls();
  }

  private save(): void {
    localStorage.setItem(SETTINGS_KEY, JSON.stringify(this.settings));
  }

  private renderStatic(): void {
    this.input.placeholder = t("chat.placeholder");
    this.sendButton.textContent = this.abort ? t("chat.stop") : t("chat.send");
    this.renderControls();
    this.renderConversations();
    if (!this.messages.children.length) this.renderEmpty();
  }

  private renderEmpty(): void {
    clear(this.messages);
    this.messages.append(h("p", { class: "muted empty" }, t("chat.empty")));
  }

  private async loadKnowledgeBases(): Promise<void> {
    try {
      this.knowledgeBases = (await getJson<{ data: KnowledgeBase[] }>("/v1/knowledge_bases")).data;
    } catch (error) {
      toast(String((error as Error).message), "error");
    }
    if (!this.knowledgeBases.some((kb) => kb.name === this.settings.kb)) {
      this.settings.kb = this.knowledgeBases[0]?.name ?? "";
    }
    this.renderControls();
  }

  private renderControls(): void {
    const s = this.settings;
    const mode = h(
      "select",
      {
        "data-testid": "chat-mode",
        onchange: (event: Event) => {
          s.mode = (event.target as HTMLSelectElement).value as Mode;
          this.save();
          this.renderControls();
        },
      },
      ...(["plain", "kb", "files"] as Mode[]).map((m) =>
        h("option", { value: m, selected: m === s.mode }, t(`chat.mode.${m}`)),
      ),
    );
    const kb = h(
      "select",
      {
        "data-testid": "chat-kb",
        onchange: (event: Event) => {
          s.kb = (event.target as HTMLSelectElement).value;
          this.save();
        },
      },
      ...(this.knowledgeBases.length
        ? this.knowledgeBases.map((k) => h("option", { value: k.name, selected: k.name === s.kb }, k.name))
        : [h("option", { value: "" }, t("chat.noKb"))]),
    );
    const model = h(
      "select",
      {
        "data-testid": "chat-model",
        onchange: (event: Event) => {
          s.model = (event.target as HTMLSelectElement).value;
          this.save();
          if (this.activeId) rememberConversationChoice(CONVERSATION_MODELS_KEY, this.activeId, s.model);
        },
      },
      ...this.models.map((m) =>
        h(
          "option",
          { value: m.default ? "" : m.id, selected: m.default ? !s.model : m.id === s.model },
          m.capabilities?.tools ? `${m.id} · ${t("chat.modelTools")}` : m.id,
        ),
      ),
    );
    const agent = h("input", {
      type: "checkbox",
      checked: s.agent,
      "data-testid": "chat-agent",
      title: t("chat.agentHelp"),
      onchange: (event: Event) => {
        s.agent = (event.target as HTMLInputElement).checked;
        this.save();
        if (this.activeId) rememberConversationChoice(CONVERSATION_AGENT_KEY, this.activeId, s.agent);
        this.renderControls();
      },
    });
    const number = (key: "topK" | "threshold" | "temperature" | "history", attrs: Record<string, string>) =>
      h("input", {
        type: "number",
        value: String(s[key]),
        "data-testid": `chat-${key}`,
        ...attrs,
        onchange: (event: Event) => {
          const value = Number((event.target as HTMLInputElement).value);
          if (!Number.isNaN(value)) s[key] = value;
          this.save();
        },
      });
    // Agent runs choose their own searches, and the gateway puts the conversation's history in.
    const agentOn = this.agentSupported && s.agent;
    clear(this.controls);
    append(
      this.controls,
      this.models.length > 1 ? labelled(t("chat.model"), model, "chat-model-field") : null,
      this.agentSupported ? labelled(t("chat.agent"), agent, "chat-agent-field") : null,
      labelled(t("chat.mode"), mode),
      s.mode === "kb" ? labelled(t("chat.kb"), kb) : null,
      s.mode === "files" ? this.fileChatControl() : null,
      s.mode !== "plain" && !agentOn
        ? labelled(t("chat.topK"), number("topK", { min: "1", max: "100", step: "1" }))
        : null,
      s.mode !== "plain" && !agentOn
        ? labelled(t("chat.threshold"), number("threshold", { min: "0", max: "1", step: "0.05" }))
        : null,
      labelled(t("chat.temperature"), number("temperature", { min: "0", max: "2", step: "0.1" })),
      agentOn && this.conversationsSupported
        ? null
        : labelled(t("chat.history"), number("history", { min: "0", max: "50", step: "1" })),
    );
  }

  private fileChatControl(): HTMLElement {
    // One status element for the page's life: controls re-render while an upload is running.
    const status = this.fileChatStatus;
    if (this.fileChatId) {
      status.textContent = `${t("chat.filesReady", { n: this.fileChatFiles.length })}: ${this.fileChatFiles.join(", ")}`;
    }
    const input = h("input", {
      type: "file",
      multiple: true,
      "data-testid": "file-chat-input",
      onchange: async () => {
        if (!input.files?.length) return;
        const form = new FormData();
        for (const file of input.files) form.append("files", file);
        status.textContent = t("chat.filesWorking");
        try {
          const response = await raw("/v1/file_chats", { method: "POST", body: form });
          if ([404, 405, 501].includes(response.status)) throw new Error(t("chat.filesUnavailable"));
          if (!response.ok) throw new ApiError(response.status, await errorMessage(response));
          const created = (await response.json()) as { id: string; files: Array<{ file_name: string; error?: string }> };
          this.fileChatId = created.id;
          this.fileChatFiles = created.files.map((f) => f.file_name);
          const failed = created.files.filter((f) => f.error);
          status.textContent = `${t("chat.filesReady", { n: this.fileChatFiles.length })}: ${this.fileChatFiles.join(", ")}`;
          if (failed.length) toast(failed.map((f) => `${f.file_name}: ${f.error}`).join("; "), "error");
        } catch (error) {
          status.textContent = (error as Error).message;
        }
      },
    });
    return labelled(t("chat.files"), h("span", { class: "row" }, input, status));
  }

  private composer(): HTMLFormElement {
    this.input.addEventListener("keydown", (event: KeyboardEvent) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        form.requestSubmit();
      }
    });
    const form = h(
      "form",
      {
        class: "composer",
        onsubmit: (event: Event) => {
          event.preventDefault();
          if (this.abort) {
            this.abort.abort();
            return;
          }
          const question = this.input.value.trim();
          if (question) {
            this.input.value = "";
            void this.ask(question);
          }
        },
      },
      this.input,
      this.sendButton,
    );
    return form;
  }

  // ---- conversations -------------------------------------------------------------------

  private async loadConversations(): Promise<void> {
    try {
      this.conversations = (await getJson<{ data: Conversation[] }>("/v1/conversations")).data;
    } catch (error) {
      toast((error as Error).message, "error");
    }
    this.renderConversations();
  }

  private renderConversations(): void {
    clear(this.convPane);
    if (!this.conversationsSupported) return;
    clear(this.convList);
    for (const conversation of this.conversations) {
      const title = conversation.title || t("chat.untitled");
      this.convList.append(
        h(
          "li",
          { class: conversation.id === this.activeId ? "active" : "", "data-testid": "conversation-item" },
          h(
            "button",
            { type: "button", class: "link title", title, onclick: () => void this.openConversation(conversation.id) },
            title,
          ),
          h(
            "button",
            {
              type: "button",
              class: "icon",
              title: t("chat.rename"),
              "aria-label": t("chat.rename"),
              "data-testid": "conversation-rename",
              onclick: () => void this.renameConversation(conversation),
            },
            icon("pencil"),
          ),
          h(
            "button",
            {
              type: "button",
              class: "icon",
              title: t("common.delete"),
              "aria-label": t("common.delete"),
              "data-testid": "conversation-delete",
              onclick: () => void this.deleteConversation(conversation),
            },
            icon("trash"),
          ),
        ),
      );
    }
    this.convPane.append(
      h("h2", {}, t("chat.conversations")),
      h("button", { type: "button", class: "primary", "data-testid": "conversation-new", onclick: () => this.newChat() }, `+ ${t("chat.new")}`),
      this.convList,
    );
  }

  private newChat(): void {
    this.abort?.abort();
    this.activeId = null;
    this.history = [];
    this.renderEmpty();
    this.renderConversations();
    this.input.focus();
  }

  private async openConversation(id: string): Promise<void> {
    try {
      const conversation = await getJson<Conversation & { messages: StoredMessage[] }>(
        `/v1/conversations/${encodeURIComponent(id)}`,
      );
      this.activeId = id;
      if (conversation.knowledge_base) {
        this.settings.mode = "kb";
        this.settings.kb = conversation.knowledge_base;
      }
      const held = conversationChoices<string>(CONVERSATION_MODELS_KEY)[id];
      if (held !== undefined && (held === "" || this.models.some((m) => m.id === held))) {
        this.settings.model = held;
      }
      this.settings.agent = conversationChoices<boolean>(CONVERSATION_AGENT_KEY)[id] ?? this.settings.agent;
      this.renderControls();
      clear(this.messages);
      this.history = [];
      let question = "";
      let steps: AgentStep[] = []; // an agent run's tool steps, shown with the answer after them
      for (const message of conversation.messages) {
        if (collectStoredSteps(message, steps)) continue;
        this.history.push({ role: message.role, content: message.content });
        if (message.role === "user") {
          question = message.content;
          this.userBubble(message.content);
        } else if (message.role === "assistant") {
          const bubble = this.assistantBubble(question);
          for (const step of steps) bubble.step(step);
          steps = [];
          bubble.setText(message.content);
          bubble.setCitations(message.citations ?? []);
          bubble.ground(message);
          bubble.finish(message.id, message.feedback ?? null);
        }
      }
      this.renderConversations();
    } catch (error) {
      toast((error as Error).message, "error");
    }
  }

  private async renameConversation(conversation: Conversation): Promise<void> {
    const title = await promptDialog(t("chat.renamePrompt"), conversation.title, { testid: "rename-dialog" });
    if (!title) return;
    try {
      await sendJson("PATCH", `/v1/conversations/${encodeURIComponent(conversation.id)}`, { title });
      await this.loadConversations();
    } catch (error) {
      toast((error as Error).message, "error");
    }
  }

  private async deleteConversation(conversation: Conversation): Promise<void> {
    if (!(await confirmDialog(t("chat.deleteConfirm", { name: conversation.title || t("chat.untitled") })))) return;
    try {
      await request(`/v1/conversations/${encodeURIComponent(conversation.id)}`, { method: "DELETE" });
      if (this.activeId === conversation.id) this.newChat();
      await this.loadConversations();
    } catch (error) {
      toast((error as Error).message, "error");
    }
  }

  // ---- asking --------------------------------------------------------------------------

  private setStreaming(controller: AbortController | null): void {
    this.abort = controller;
    this.sendButton.textContent = controller ? t("chat.stop") : t("chat.send");
    this.sendButton.classList.toggle("danger", controller !== null);
  }

  private async ask(question: string): Promise<void> {
    const s = this.settings;
    const agent = this.agentSupported && s.agent;
    if (this.messages.querySelector(".empty")) clear(this.messages);
    this.userBubble(question);
    const bubble = this.assistantBubble(question);
    const controller = new AbortController();
    this.setStreaming(controller);
    let answer = "";
    try {
      const body: Record<string, unknown> = {
        model: s.model || "default",
        stream: true,
        temperature: s.temperature,
      };
      if (s.mode === "kb") {
        if (!s.kb) throw new Error(t("chat.noKb"));
        if (agent) body.knowledge_bases = [s.kb];
        else body.knowledge_base = s.kb;
      }
      if (s.mode === "files") {
        if (agent) throw new Error(t("chat.agentNoFiles"));
        if (!this.fileChatId) throw new Error(t("chat.filesNeeded"));
        body.file_chat_id = this.fileChatId;
      }
      if (s.mode !== "plain" && !agent) {
        body.top_k = s.topK;
        body.score_threshold = s.threshold;
      }
      const user = { role: "user", content: question };
      if (this.conversationsSupported) {
        if (!this.activeId) {
          const created = await sendJson<Conversation>("POST", "/v1/conversations", {
            title: question.slice(0, 60),
            knowledge_base: s.mode === "kb" ? s.kb : undefined,
          });
          this.activeId = created?.id ?? null;
          if (this.activeId) {
            rememberConversationChoice(CONVERSATION_MODELS_KEY, this.activeId, s.model);
            rememberConversationChoice(CONVERSATION_AGENT_KEY, this.activeId, agent);
          }
        }
        body.conversation_id = this.activeId;
        if (!agent) body.history_length = s.history;
        body.messages = [user];
      } else {
        body.messages = [...(s.history > 0 ? this.history.slice(-s.history) : []), user];
      }
      const response = await request(agent ? "/v1/agent/completions" : "/v1/chat/completions", {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
        body: JSON.stringify(body),
        signal: controller.signal,
      });
      let messageId: string | null = null;
      for await (const data of sseData(response, controller.signal)) {
        if (data === "[DONE]") break;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(chunk.error.message ?? JSON.stringify(chunk.error));
        if (chunk.agent_step) bubble.step(chunk.agent_step as AgentStep);
        if (Array.isArray(chunk.citations)) bubble.setCitations(chunk.citations);
        bubble.ground(chunk);
        if (chunk.message_id) messageId = String(chunk.message_id);
        const delta = chunk.choices?.[0]?.delta?.content;
        if (delta) {
          answer += delta;
          bubble.setText(answer);
        }
      }
      this.history.push(user, { role: "assistant", content: answer });
      bubble.finish(messageId, null);
    } catch (error) {
      if ((error as Error).name === "AbortError") bubble.finish(null, null);
      else bubble.fail((error as Error).message);
    } finally {
      this.setStreaming(null);
      if (this.conversationsSupported) void this.loadConversations();
    }
  }

  private userBubble(text: string): void {
    this.messages.append(
      h("div", { class: "message user", "data-testid": "user-message" }, h("div", { class: "content" }, text)),
    );
    this.messages.scrollTop = this.messages.scrollHeight;
  }

  private assistantBubble(question: string): AssistantBubble {
    const bubble = new AssistantBubble(question);
    this.messages.append(bubble.el);
    return bubble;
  }
}

/** One answer: Markdown rendered as it streams, sources, copy and feedback; once complete,
 * its unsupported sentences underlined and each source saying whether it backs the answer. */
class AssistantBubble {
  readonly el = h("div", { class: "message assistant streaming", "data-testid": "assistant-message" });
  // An abstention's reply says itself that the knowledge base cannot answer: the bubble only
  // looks like a notice (muted, an info sign), with no second sentence saying the same.
  private notice = h("span", { class: "notice-sign", role: "img", "data-testid": "abstained-notice", hidden: true });
  private steps: AgentSteps | null = null; // agent mode's tool steps, above the answer
  private content = h("div", { class: "content markdown", "data-testid": "answer" });
  private note = h("p", { class: "grounding-note", "data-testid": "unsupported-note", hidden: true });
  private sources = h("ol", { class: "sources", "data-testid": "sources" });
  private actions = h("div", { class: "actions" });
  private text = "";
  private pending = false;
  private citations: Citation[] = [];
  private abstained = false;
  private retrievalQuery = "";
  private unsupported: UnsupportedSentence[] = [];
  private sourcesOpen = false;

  /** ``question``: what the user asked, to tell when the search used other words. */
  constructor(private readonly question: string) {
    this.el.append(this.notice, this.content, this.note, this.sources, this.actions);
  }

  /** An agent step as it starts or ends. */
  step(step: AgentStep): void {
    if (!this.steps) {
      this.steps = new AgentSteps();
      this.content.before(this.steps.el);
    }
    this.steps.show(step);
  }

  setText(text: string): void {
    this.text = text;
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      this.render();
      const list = this.el.parentElement;
      if (list) list.scrollTop = list.scrollHeight;
    });
  }

  /** The Markdown, with unsupported sentences underlined (grounding.ts says how) and the
   * answer's [n] markers turned into buttons that open source n. */
  private render(): void {
    const marking = this.unsupported.length > 0 && !this.abstained;
    renderMarkdown(this.content, marking ? withSentinels(this.text, this.unsupported) : this.text);
    const marked = marking ? markSentinels(this.content, t("chat.unsupported")) : 0;
    this.note.hidden = marked === 0;
    clear(this.note);
    const note = marked === 1 ? t("chat.unsupportedOne") : t("chat.unsupportedMany", { n: marked });
    if (marked) this.note.append(icon("warning"), " ", note);
    if (!this.citations.length) return;
    const walker = document.createTreeWalker(this.content, NodeFilter.SHOW_TEXT);
    const nodes: Text[] = [];
    while (walker.nextNode()) nodes.push(walker.currentNode as Text);
    for (const node of nodes) {
      const parts = (node.textContent ?? "").split(/(\[\d+\])/);
      if (parts.length < 2 || node.parentElement?.closest("code, pre")) continue;
      const fragment = document.createDocumentFragment();
      for (const part of parts) {
        const n = /^\[(\d+)\]$/.exec(part) ? Number(part.slice(1, -1)) : 0;
        const cited = n ? this.citation(n) : undefined;
        fragment.append(
          cited
            ? h("button", { type: "button", class: "cite", title: cited.file_name, onclick: () => showPassage(n, cited) }, String(n))
            : part,
        );
      }
      node.replaceWith(fragment);
    }
  }

  /** Source n: the citation numbered n (older gateways: the n-th). */
  private citation(n: number): Citation | undefined {
    return this.citations.find((c, position) => numberOf(c, position) === n);
  }

  setCitations(citations: Citation[]): void {
    this.citations = citations;
    this.renderSources();
  }

  /** Takes whatever grounding fields a chunk or stored message carries. */
  ground(grounding: Grounding): void {
    if (typeof grounding.abstained === "boolean") {
      this.abstained = grounding.abstained;
      this.el.classList.toggle("abstained", this.abstained);
      this.el.toggleAttribute("data-abstained", this.abstained);
      this.notice.hidden = !this.abstained;
      clear(this.notice);
      if (this.abstained) {
        this.notice.append(icon("info"));
        this.notice.setAttribute("aria-label", t("chat.abstained"));
        this.notice.title = t("chat.abstained");
      }
    }
    if (typeof grounding.retrieval_query === "string") this.retrievalQuery = grounding.retrieval_query;
    if (Array.isArray(grounding.unsupported)) this.unsupported = grounding.unsupported;
    this.renderSources();
  }

  private renderSources(): void {
    const citations = this.citations;
    clear(this.sources);
    this.sources.classList.toggle("unused", this.abstained);
    this.sources.classList.toggle("collapsed", this.abstained && !this.sourcesOpen);
    if (!citations.length) return;
    const words = (text: string) => text.trim().replace(/\s+/g, " ");
    const searched =
      this.retrievalQuery && words(this.retrievalQuery) !== words(this.question)
        ? h("span", { class: "searched", "data-testid": "retrieval-query" }, t("chat.searchedFor", { query: this.retrievalQuery }))
        : null;
    const title = this.abstained
      ? h(
          "button",
          {
            type: "button",
            class: "link",
            "aria-expanded": String(this.sourcesOpen),
            "data-testid": "sources-toggle",
            onclick: () => {
              this.sourcesOpen = !this.sourcesOpen;
              this.renderSources();
            },
          },
          `${this.sourcesOpen ? "▾" : "▸"} ${t("chat.closestPassages")} (${citations.length})`,
        )
      : t("chat.sources");
    this.sources.append(h("li", { class: "sources-title" }, title, searched ? " · " : null, searched));
    citations.forEach((citation, position) => {
      const n = numberOf(citation, position);
      const support = supportOf(citation);
      const label = support ? t(SUPPORT_LABELS[support]) : "";
      this.sources.append(
        h(
          "li",
          { class: "source-item" },
          h(
            "button",
            {
              type: "button",
              class: `source${support ? ` ${support}` : ""}`,
              "data-testid": "source",
              "data-support": support,
              title: label ? `${label}\n\n${citation.text.slice(0, 200)}` : citation.text.slice(0, 200),
              onclick: () => showPassage(n, citation),
            },
            `[${n}] ${citation.file_name}`,
            citation.score !== undefined ? h("span", { class: "score" }, citation.score.toFixed(3)) : null,
            support === "supported" || support === "unsupported"
              ? h(
                  "span",
                  { class: "support", role: "img", "aria-label": label, "data-testid": "source-support" },
                  icon(support === "supported" ? "check" : "warning"),
                )
              : null,
          ),
        ),
      );
    });
  }

  fail(message: string): void {
    this.el.classList.remove("streaming");
    this.el.classList.add("error");
    this.content.textContent = `${t("common.error")}: ${message}`;
    this.el.setAttribute("data-state", "failed");
  }

  finish(messageId: string | null, feedback: { score: number } | null): void {
    this.el.classList.remove("streaming");
    this.el.setAttribute("data-state", "done");
    this.render();
    clear(this.actions);
    const copy = h(
      "button",
      {
        type: "button",
        class: "small",
        "data-testid": "copy-answer",
        onclick: async () => {
          await copyText(this.text);
          copy.textContent = t("chat.copied");
          setTimeout(() => (copy.textContent = t("chat.copy")), 1500);
        },
      },
      t("chat.copy"),
    );
    this.actions.append(copy);
    if (!messageId) return;
    const thumbs = [
      { score: 100, label: "thumbUp" as const, title: t("chat.thumbUp"), testid: "thumb-up" },
      { score: 0, label: "thumbDown" as const, title: t("chat.thumbDown"), testid: "thumb-down" },
    ].map((thumb) => {
      const button = h(
        "button",
        {
          type: "button",
          class: `small thumb${feedback?.score === thumb.score ? " chosen" : ""}`,
          title: thumb.title,
          "aria-label": thumb.title,
          "data-testid": thumb.testid,
        },
        icon(thumb.label),
      );
      button.addEventListener("click", async () => {
        try {
          await sendJson("POST", `/v1/messages/${encodeURIComponent(messageId)}/feedback`, {
            score: thumb.score,
            reason: "",
          });
          for (const other of this.actions.querySelectorAll(".thumb")) other.classList.remove("chosen");
          button.classList.add("chosen");
          toast(t("chat.thanks"));
        } catch (error) {
          toast((error as Error).message, "error");
        }
      });
      return button;
    });
    this.actions.append(...thumbs);
  }
}

/** The n of a citation's [n]: its ``index`` (agent answers: ``number``); older gateways: its place. */
function numberOf(citation: Citation, position: number): number {
  return citation.index ?? citation.number ?? position + 1;
}

type Support = "supported" | "unsupported" | "uncited";

const SUPPORT_LABELS = {
  supported: "chat.sourceSupported",
  unsupported: "chat.sourceUnsupported",
  uncited: "chat.sourceUncited",
} as const;

/** Whether a checked citation backs the answer; null before the answer is complete (or from
 * a gateway that does not check). */
function supportOf(citation: Citation): Support | null {
  if (citation.cited === undefined) return null;
  if (!citation.cited) return "uncited";
  return citation.supported ? "supported" : "unsupported";
}

async function copyText(text: string): Promise<void> {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    const area = h("textarea", {}, text);
    document.body.appendChild(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
}

export function showPassage(n: number, citation: Citation): void {
  const link = citation.url
    ? h(
        "a",
        {
          href: citation.url,
          target: "_blank",
          rel: "noopener",
          "data-testid": "passage-open-file",
          onclick: (event: Event) => {
            event.preventDefault();
            openFile(citation.url ?? "").catch((error: Error) => toast(error.message, "error"));
          },
        },
        `${t("passage.open")}: ${citation.file_name}`,
      )
    : null;
  const content = h(
    "div",
    {},
    citation.score !== undefined ? h("p", { class: "muted" }, t("passage.score", { score: citation.score.toFixed(3) })) : null,
    h("blockquote", { class: "passage", "data-testid": "passage-text" }, citation.text),
    link,
  );
  panel(t("passage.title", { n, file: citation.file_name }), content, "passage-dialog");
}
