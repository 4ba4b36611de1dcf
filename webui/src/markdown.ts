// Markdown to sanitized HTML: answers come from a model and passages from uploaded files, so
// everything goes through DOMPurify before it touches the page.
import DOMPurify from "dompurify";
import { marked } from "marked";

marked.setOptions({ gfm: true, breaks: true });

export function renderMarkdown(el: HTMLElement, text: string): void {
  const html = marked.parse(text, { async: false }) as string;
  el.innerHTML = DOMPurify.sanitize(html);
  for (const link of el.querySelectorAll("a")) {
    link.setAttribute("target", "_blank");
    link.setAttribute("rel", "noopener noreferrer");
  }
}
