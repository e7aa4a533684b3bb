// A small static file server for the built site (dist/), used by scripts/serve.sh and by the
// browser tests. Serves .wasm as application/wasm (needed for streaming compilation) and
// nothing outside the folder.
//
//   node scripts/static-server.mjs DIR [PORT]     (listens on 127.0.0.1)
import { createServer } from 'node:http';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const MIME = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript',
  '.mjs': 'text/javascript',
  '.wasm': 'application/wasm',
  '.css': 'text/css',
  '.json': 'application/json',
  '.png': 'image/png',
  '.md': 'text/markdown; charset=utf-8',
};

// `extra` maps a URL path to a body (or a function of the query string) served instead of a
// file; the browser tests use it for pages and files that must not ship.
export function createStaticServer(dir, extra = {}) {
  const root = path.resolve(dir);
  return createServer(async (req, res) => {
    const url = new URL(req.url, 'http://x');
    const more = extra[url.pathname];
    if (more) {
      const body = typeof more === 'function' ? more(url.searchParams) : more;
      res.writeHead(200, { 'content-type': url.pathname.endsWith('.html') ? MIME['.html'] : 'application/octet-stream' });
      return res.end(body);
    }
    let rel;
    try {
      rel = decodeURIComponent(url.pathname === '/' ? '/index.html' : url.pathname);
    } catch {
      res.writeHead(400);
      return res.end('bad path');
    }
    const file = path.join(root, path.normalize(rel));
    if (file !== root && !file.startsWith(root + path.sep)) {
      res.writeHead(403);
      return res.end();
    }
    try {
      const body = await readFile(file);
      res.writeHead(200, { 'content-type': MIME[path.extname(file)] || 'application/octet-stream', 'content-length': body.length });
      res.end(body);
    } catch {
      res.writeHead(404);
      res.end('not found');
    }
  });
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const [dir = 'dist', port = '8080'] = process.argv.slice(2);
  const server = createStaticServer(dir);
  server.on('error', (e) => {
    console.error(`cannot serve on 127.0.0.1:${port}: ${e.message}`);
    process.exit(1);
  });
  server.listen(Number(port), '127.0.0.1', () => {
    console.log(`serving ${path.resolve(dir)} on http://127.0.0.1:${server.address().port}/ (Ctrl-C stops)`);
  });
}
