'use strict';
// A hyco-ws listener (createRelayedServer) that echoes every message with its type, and closes
// with 4321 when asked to by the text message "close-please".
//
//   node ws_listener.js [echo|refuse] [token-lifetime-seconds]
//
// "refuse" answers every sender through the SDK's documented refusal hook (handleProtocols
// calling back false), to show what the SDK's reject path does. The token lifetime (default:
// the SDK's hour) is what each token the SDK asks for is signed for.

const { listenUri, token, report, describe, sdk } = require('./common');

const mode = process.argv[2] || 'echo';
const tokenSeconds = Number(process.argv[3] || 0) || undefined;
const uri = listenUri();

const options = { server: uri, token: () => token(uri, tokenSeconds) };
if (mode === 'refuse') {
  options.handleProtocols = (protocols, decide) => decide(false);
}

const server = sdk.createRelayedServer(options, (ws) => {
  // The SDK hands the rendezvous socket over before it has opened.
  report('connection', {});
  ws.on('open', () => report('open', { protocol: ws.protocol || null }));
  ws.on('message', (data, flags) => {
    const binary = Boolean(flags && flags.binary);
    report('message', Object.assign({ binary: binary }, describe(data)));
    if (!binary && data === 'close-please') {
      ws.close(4321, 'listener says bye');
    } else {
      ws.send(data, { binary: binary });
    }
  });
  ws.on('close', (code, reason) => report('close', { code: code, reason: String(reason || '') }));
});

let online = false;
server.on('listening', () => {
  // Each (re)connection has a new control channel; its close code is not passed on by the SDK.
  server.controlChannel.on('close', (code, reason) => {
    report('control-closed', { code: code, reason: String(reason || '') });
  });
  if (online) {
    report('listening', {});
  } else {
    online = true;
    process.stdout.write('READY\n');
  }
});
server.on('error', (error) => report('error', { message: String(error && error.message) }));
