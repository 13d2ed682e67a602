import { defineConfig } from 'vite';

// A static site: relative asset URLs so dist/ can be hosted under any path (a GitHub Pages
// project page, a subfolder of a web server) or opened from any static file server.
export default defineConfig({
  base: './',
  build: { target: 'es2022', outDir: 'dist', emptyOutDir: true, chunkSizeWarningLimit: 2000 },
  server: { host: '127.0.0.1' },
  preview: { host: '127.0.0.1' },
});
