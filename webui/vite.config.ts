// Builds the web UI into the gateway package, which serves it at "/" (assets under /ui/).
import { defineConfig } from "vite";

export default defineConfig({
  base: "/ui/",
  build: {
    outDir: "../services/gateway/static",
    emptyOutDir: true,
    target: "es2022",
    // One small bundle: no source maps in the committed build.
    sourcemap: false,
  },
});
