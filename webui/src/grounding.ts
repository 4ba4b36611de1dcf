// Marks the sentences of an answer that no cited passage backs, in the rendered Markdown.
//
// The gateway gives each unsupported sentence as character offsets into the answer's raw
// Markdown text, but the page shows that text rendered: syntax gone, entities decoded, [n]
// turned into buttons. Searching the rendered text for the sentence would miss whenever
// Markdown changed it ("**30** days"), so instead two private-use characters are put into the
// raw text at the offsets before rendering. Markdown keeps them as ordinary text, wherever
// they land (inside bold, links, list items), and afterwards every stretch of text between an
// opening and a closing one is wrapped in a marking span, one span per text node, so a
// sentence that crosses inline elements is still marked in full. The characters are then
// removed. They are kept off the syntax a line starts or ends with ("- ", "# ", "**"), where
// a character of their own would change what the Markdown means.

import { h } from "./dom";

export interface UnsupportedSentence {
  text: string;
  start: number;
  end: number;
}

const OPEN = "\uE000";
const CLOSE = "\uE001";
const SENTINELS = /[\uE000\uE001]/g;
const SENTINEL_URL = /%EE%80%8[01]/gi;
// Block syntax a sentence at the start of a line may begin with: list bullets and numbers,
// headings, quotes, table pipes, then emphasis and code delimiters.
const LEADING_SYNTAX = /^(?:[ \t]*(?:[-*+][ \t]+|\d{1,9}[.)][ \t]+|#{1,6}[ \t]+|>[ \t]?|\|[ \t]*))*[*_~`]*/;
// What a sentence may end with that is left unmarked: emphasis and code delimiters, table
// pipes, and its final punctuation (so a bare URL before it still ends where it did).
const TRAILING_SYNTAX = /[*_~`|\s.!?;。！？；]*$/;
const FENCE = /^[ \t]*(?:```|~~~)/;
const WORDS = /[\p{L}\p{N}]/u;

/** UTF-16 index (JavaScript's) of each code point index (Python's, the gateway's) of ``text``. */
function utf16Indexes(text: string): number[] {
  const indexes: number[] = [];
  let position = 0;
  for (const char of text) {
    indexes.push(position);
    position += char.length;
  }
  indexes.push(position);
  return indexes;
}

/** The spans as [start, end) in JavaScript's string units, checked against their text;
 * a span whose offsets do not hold its text is looked up by its text instead (or left out). */
function locate(text: string, sentences: UnsupportedSentence[]): Array<[number, number]> {
  const indexes = utf16Indexes(text);
  const spans: Array<[number, number]> = [];
  let searchFrom = 0;
  for (const sentence of [...sentences].sort((a, b) => a.start - b.start)) {
    let start = indexes[sentence.start] ?? -1;
    let end = indexes[sentence.end] ?? -1;
    if (start < 0 || end <= start || text.slice(start, end) !== sentence.text) {
      start = sentence.text ? text.indexOf(sentence.text, searchFrom) : -1;
      if (start < 0) continue;
      end = start + sentence.text.length;
    }
    const lineStart = text.lastIndexOf("\n", start - 1) + 1;
    const lineEnd = text.indexOf("\n", start);
    const line = text.slice(lineStart, lineEnd < 0 ? text.length : lineEnd);
    if (FENCE.test(line)) continue; // a code fence line: nothing to mark
    if (!text.slice(lineStart, start).trim()) {
      start = Math.max(start, lineStart + (LEADING_SYNTAX.exec(line)?.[0].length ?? 0));
    }
    end = start + text.slice(start, end).replace(TRAILING_SYNTAX, "").length;
    // Nothing left but syntax ("1." of a list, a table's |---|): nothing to mark.
    if (end <= start || start < searchFrom || !WORDS.test(text.slice(start, end))) continue;
    spans.push([start, end]);
    searchFrom = end;
  }
  return spans;
}

/** ``text`` with the sentinels around each unsupported sentence (and none of its own). */
export function withSentinels(text: string, sentences: UnsupportedSentence[]): string {
  const clean = text.replace(SENTINELS, "\uFFFD"); // same length: offsets still hold
  const spans = locate(clean, sentences);
  let out = "";
  let at = 0;
  for (const [start, end] of spans) {
    out += clean.slice(at, start) + OPEN + clean.slice(start, end) + CLOSE;
    at = end;
  }
  return out + clean.slice(at);
}

/** Wraps the text between sentinels in ``root`` (rendered from {@link withSentinels}) in
 * marking spans titled ``title``, removes the sentinels, and returns how many sentences were
 * marked. Text in code is left unmarked. */
export function markSentinels(root: HTMLElement, title: string): number {
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
  const nodes: Text[] = [];
  while (walker.nextNode()) nodes.push(walker.currentNode as Text);
  let open = false;
  let sentence = -1;
  for (const node of nodes) {
    const value = node.data;
    if (!open && !value.includes(OPEN)) continue;
    const inCode = Boolean(node.parentElement?.closest("code, pre"));
    const fragment = document.createDocumentFragment();
    for (const part of value.split(/([\uE000\uE001])/)) {
      if (part === OPEN) {
        open = true;
        sentence += 1;
      } else if (part === CLOSE) {
        open = false;
      } else if (part) {
        fragment.append(
          open && !inCode && part.trim()
            ? h("span", { class: "unsupported", title, "data-testid": "unsupported", "data-sentence": sentence }, part)
            : part,
        );
      }
    }
    node.replaceWith(fragment);
  }
  // A sentinel can only reach an attribute through a bare URL the Markdown linked.
  for (const link of root.querySelectorAll("a[href]")) {
    const href = link.getAttribute("href") ?? "";
    link.setAttribute("href", href.replace(SENTINEL_URL, "").replace(SENTINELS, ""));
  }
  return sentence + 1;
}
