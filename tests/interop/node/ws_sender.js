'use strict';
// A hyco-ws sender (relayedConnect) that runs a fixed conversation with an echoing listener:
// a text, a binary and a 256 KiB binary round trip, then "close-please" (the listener closes
// with 4321); then a second connection that the sender closes itself with 4001.

const { sendUri, token, report, describe, sdk } = require('./common');

const uri = sendUri();

function open() {
  return new Promise((resolve, reject) => {
    const ws = sdk.relayedConnect(uri, token(uri));
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
  });
}

function roundTrip(ws, data, binary) {
  return new Promise((resolve) => {
    ws.once('message', (echoed, flags) => {
      resolve(Object.assign({ binary: Boolean(flags && flags.binary) }, describe(echoed)));
    });
    ws.send(data, { binary: binary });
  });
}

async function main() {
  const first = await open();
  report('open', {
    protocol: first.protocol || null,
    extensions: Object.keys(first.extensions || {}),
  });
  const big = Buffer.alloc(256 * 1024);
  for (let i = 0; i < big.length; i++) {
    big[i] = i % 251;
  }
  const messages = [
    ['hello from hyco-ws', false],
    [Buffer.from([0, 1, 2, 253, 254, 255]), true],
    [big, true],
  ];
  for (const [data, binary] of messages) {
    const echoed = await roundTrip(first, data, binary);
    report('echo', { sent: Object.assign({ binary: binary }, describe(data)), received: echoed });
  }
  const closed = new Promise((resolve) => {
    first.once('close', (code, reason) => resolve({ code: code, reason: String(reason || '') }));
  });
  first.send('close-please');
  report('closed-by-listener', await closed);

  const second = await open();
  const done = new Promise((resolve) => second.once('close', resolve));
  second.close(4001, 'sender says bye');
  await done;
  report('done', {});
}

main().catch((error) => {
  report('failed', { message: String(error && error.message) });
  process.exitCode = 1;
});
