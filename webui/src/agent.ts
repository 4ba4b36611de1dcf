// Agent mode's tool steps: each tool call the agent made, folded under its answer as a
// <details> (tool and summary in its line, arguments and result inside, errors marked), shown as
// the steps stream in and rebuilt from a stored conversation's tool turns.
import { h } from "./dom";
import { icon } from "./icons";
import { t } from "./i18n";

/** A step as /v1/agent/completions streams it (``agent_step``): ``tool_call`` when it starts,
 * ``tool_result`` (same id) when it ends. */
export interface AgentStep {
  type: "tool_call" | "tool_result";
  id: string;
  tool: string;
  arguments: string;
  step?: number;
  result?: string;
  summary?: string;
  is_error?: boolean;
}

/** A stored conversation message's tool fields (GET /v1/conversations/{id}). */
export interface ToolTurn {
  role: string;
  content: string;
  tool_calls?: Array<{ id: string; function: { name: string; arguments: string } }> | null;
  tool_call_id?: string | null;
}

/** The steps of a stored run, in order: an assistant turn's calls, each filled in by the tool
 * turn answering it. Returns true when the message was a tool turn. */
export function collectStoredSteps(message: ToolTurn, steps: AgentStep[]): boolean {
  if (message.role === "assistant" && message.tool_calls?.length) {
    for (const call of message.tool_calls) {
      steps.push({ type: "tool_call", id: call.id, tool: call.function.name, arguments: call.function.arguments });
    }
    return true;
  }
  if (message.role !== "tool") return false;
  const step = steps.find((s) => s.id === message.tool_call_id);
  if (step) Object.assign(step, { type: "tool_result", result: message.content });
  return true;
}

/** JSON arguments indented; anything else as the model wrote it. */
function readable(text: string): string {
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return text;
  }
}

export class AgentSteps {
  readonly el = h("div", { class: "agent-steps", "data-testid": "agent-steps" });
  private items = new Map<string, HTMLDetailsElement>();

  /** Adds a step, or fills in the one it finishes (kept open if the user opened it). */
  show(step: AgentStep): void {
    const done = step.type === "tool_result";
    const summary = done ? step.summary || step.result || "" : t("agent.running");
    const item = h(
      "details",
      {
        class: `agent-step${step.is_error ? " error" : ""}`,
        "data-testid": "agent-step",
        "data-tool": step.tool,
        "data-state": done ? (step.is_error ? "failed" : "done") : "running",
      },
      h(
        "summary",
        {},
        step.is_error ? icon("warning") : null,
        h("strong", { class: "tool" }, step.tool),
        h("span", { class: "step-summary", "data-testid": "agent-step-summary" }, summary),
      ),
      h("div", { class: "step-label" }, t("agent.arguments")),
      h("pre", { "data-testid": "agent-step-arguments" }, readable(step.arguments)),
      done ? h("div", { class: "step-label" }, step.is_error ? t("agent.error") : t("agent.result")) : null,
      done ? h("pre", { "data-testid": "agent-step-result" }, step.result ?? "") : null,
    );
    const existing = this.items.get(step.id);
    if (existing) {
      item.open = existing.open;
      existing.replaceWith(item);
    } else {
      this.el.append(item);
    }
    this.items.set(step.id, item);
  }
}
