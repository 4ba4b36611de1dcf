// Inline SVG icons: they render the same everywhere (emoji fonts are missing on many servers).

const PATHS = {
  thumbUp:
    "M2 10h4v11H2zM8 21h9.2a2 2 0 0 0 2-1.6l1.7-8A2 2 0 0 0 19 9h-5.3l.8-3.8a1.8 1.8 0 0 0-3.2-1.5L8 9.3z",
  thumbDown:
    "M2 3h4v11H2zM8 3h9.2a2 2 0 0 1 2 1.6l1.7 8A2 2 0 0 1 19 15h-5.3l.8 3.8a1.8 1.8 0 0 1-3.2 1.5L8 14.7z",
  trash: "M4 6h16M9 6V4h6v2M6 6l1 14h10l1-14M10 10v7M14 10v7",
  pencil: "M4 20h4L19 9l-4-4L4 16zM13 7l4 4",
  key: "M14 10a4 4 0 1 0-3.9 4H11v2h2v2h2v2h4v-3l-5.1-5.1A4 4 0 0 0 14 10z",
  check: "M5 12.5l4.5 4.5L19 7.5",
  warning: "M12 3.5L2.5 20h19zM12 10v4.5M12 17.2v.1",
  info: "M12 3a9 9 0 1 0 0 18a9 9 0 1 0 0-18zM12 11v6M12 7.5v.1",
};

export type IconName = keyof typeof PATHS;

export function icon(name: IconName): SVGSVGElement {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("class", `icon-svg ${name}`);
  svg.setAttribute("aria-hidden", "true");
  const path = document.createElementNS(ns, "path");
  path.setAttribute("d", PATHS[name]);
  const filled = name === "thumbUp" || name === "thumbDown";
  path.setAttribute("fill", filled ? "currentColor" : "none");
  path.setAttribute("stroke", "currentColor");
  path.setAttribute("stroke-width", filled ? "0" : "2");
  path.setAttribute("stroke-linecap", "round");
  path.setAttribute("stroke-linejoin", "round");
  svg.append(path);
  return svg;
}
