'use strict';
// A hyco-https listener (createRelayedServer) that describes each request in response headers.
//
//   node https_listener.js [keep-alive-milliseconds]
//
// Other methods: answer 201 with the request body reversed. GET ?size=N: answers 200 with N bytes.
// The keep-alive argument sets the SDK's keepAliveTimeout; each keep-alive frame the SDK sends
// on the control channel is reported as a "keep-alive" event.

const moment = require('moment');
const https = require('hyco-https');
const { listenUri, token, report, describe } = require('./common');

const keepAliveMs = Number(process.argv[2] || 0);
const uri = listenUri();

const options = { server: uri, token: () => token(uri) };
if (keepAliveMs > 0) {
  options.keepAliveTimeout = moment.duration(keepAliveMs, 'milliseconds');
}

const server = https.createRelayedServer(options, (req, res) => {
  const chunks = [];
  req.on('data', (chunk) => chunks.push(Buffer.from(chunk)));
  req.on('end', () => {
    const body = Buffer.concat(chunks);
    const seen = { method: req.method, url: req.url, headers: req.headers };
    report('request', Object.assign(seen, describe(body)));
    const size = Number(new URL(req.url, 'http://listener').searchParams.get('size') || 0);
    const answer = req.method === 'GET' ? Buffer.alloc(size, 'g') : Buffer.from(body).reverse();
    res.setHeader('Content-Type', 'application/octet-stream');
    res.setHeader('X-Request-Method', req.method);
    res.setHeader('X-Request-Url', req.url);
    res.setHeader('X-Request-Length', String(body.length));
    res.setHeader('X-Request-Custom', String(req.headers['x-custom'] || ''));
    res.setHeader('X-Multi', ['first', 'second']);
    res.writeHead(req.method === 'GET' ? 200 : 201, 'Made by hyco-https');
    // The SDK never sends a response ended with an empty Buffer (see README.md): end() instead.
    if (answer.length > 0) {
      res.end(answer);
    } else {
      res.end();
    }
  });
});

server.on('listening', () => {
  // The SDK replaces its control channel on every reconnect, and calls its keep-alive method
  // through the property each time: wrapping it here observes every keep-alive frame.
  const channel = server.controlChannel;
  const sendKeepAlive = channel.pong.bind(channel);
  channel.pong = (...args) => {
    report('keep-alive', { frame: 'pong' });
    return sendKeepAlive(...args);
  };
  process.stdout.write('READY\n');
});
server.on('error', (error) => report('error', { message: String(error && error.message) }));
server.listen();
