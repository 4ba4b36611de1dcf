// Following an ingestion job: server-sent events from /v1/jobs/{id}/events when the gateway
// has them (read with fetch so the API key header goes along), polling otherwise.
import { getJson, raw, sseData } from "./api";

export interface Job {
  id: string;
  file_name: string;
  state: string;
  stage?: string;
  progress?: number;
  chunks?: number;
  error?: string | null;
}

const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);

export function isTerminal(job: Pick<Job, "state">): boolean {
  return TERMINAL.has(job.state);
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export async function followJob(id: string, onUpdate: (job: Job) => void, signal?: AbortSignal): Promise<Job> {
  const path = `/v1/jobs/${encodeURIComponent(id)}`;
  try {
    const response = await raw(`${path}/events`, { headers: { Accept: "text/event-stream" }, signal });
    if (response.ok && (response.headers.get("content-type") ?? "").includes("text/event-stream")) {
      for await (const data of sseData(response, signal)) {
        const job = JSON.parse(data) as Job;
        onUpdate(job);
        if (isTerminal(job)) return job;
      }
    } else {
      await response.body?.cancel();
    }
  } catch (error) {
    if ((error as Error).name === "AbortError") throw error;
    // Events broke off: polling below picks the job up where it is.
  }
  for (;;) {
    const job = await getJson<Job>(path);
    onUpdate(job);
    if (isTerminal(job)) return job;
    if (signal?.aborted) throw new DOMException("aborted", "AbortError");
    await sleep(700);
  }
}
