'use strict';
// A scripted HTTP server on 127.0.0.1 for the client tests. Each request is
// recorded and answered by the next step of a script; the last step repeats.
// A step is a function (req, res, body) => void, so a test can answer with
// any status, header or body, or hold the request open to cause a timeout.

const http = require('node:http');

function json(status, body, headers = {}) {
  return (req, res) => {
    const text = body === undefined ? '' : JSON.stringify(body);
    res.writeHead(status, { 'Content-Type': 'application/json', ...headers });
    res.end(req.method === 'HEAD' ? undefined : text);
  };
}

function text(status, body, headers = {}) {
  return (req, res) => {
    res.writeHead(status, { 'Content-Type': 'text/plain', ...headers });
    res.end(body);
  };
}

/** Never answers (the server closes the socket when it stops). */
function hang() {
  return () => {};
}

function apiError(status, code, message, headers = {}) {
  return json(status, { success: false, error: http.STATUS_CODES[status], message, code }, headers);
}

/**
 * Starts a server answering with `steps`. Returns
 * { url, port, requests, setSteps(steps), close() }.
 */
async function startFaultServer(steps = [json(200, { success: true })], { port = 0 } = {}) {
  let script = steps.slice();
  const requests = [];
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      requests.push({ method: req.method, url: req.url, headers: req.headers, body, at: Date.now() });
      const step = script.length > 1 ? script.shift() : script[0];
      step(req, res, body);
    });
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', resolve);
  });
  const actualPort = server.address().port;
  return {
    url: `http://127.0.0.1:${actualPort}`,
    port: actualPort,
    requests,
    setSteps(next) { script = next.slice(); },
    close() {
      return new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      });
    },
  };
}

module.exports = { startFaultServer, json, text, hang, apiError };
