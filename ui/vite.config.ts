/** The dashboard's build: plain TypeScript and CSS, served by the server at /ui (dist/ui). */
import { defineConfig } from 'vite';

export default defineConfig({
  root: 'ui',
  base: '/ui/',
  build: {
    outDir: '../dist/ui',
    emptyOutDir: true,
    // One small script and one stylesheet; no source maps in the package.
    sourcemap: false,
    target: 'es2022',
  },
});
