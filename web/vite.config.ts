import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vite';

const here = (p: string) => fileURLToPath(new URL(p, import.meta.url));

/**
 * The web pages served by s3up-server: /admin (dashboard) and /upload
 * (browser uploader), built into dist/web with hashed assets under /assets/.
 * JSX goes through Vite's own transform (Oxc) with Preact's automatic runtime:
 * no framework plugin is needed for a production build.
 */
export default defineConfig({
  root: here('.'),
  base: '/',
  publicDir: false,
  oxc: { jsx: { runtime: 'automatic', importSource: 'preact' } },
  build: {
    outDir: here('../dist/web'),
    emptyOutDir: true,
    assetsDir: 'assets',
    sourcemap: false,
    // No inline <script>/<style> and no data: URLs for modules: the pages' CSP allows 'self' only.
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    rolldownOptions: {
      input: { admin: here('admin/index.html'), upload: here('upload/index.html') },
    },
  },
});
