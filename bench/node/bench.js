'use strict';
// hyco-ws (Microsoft's Node package) measured the way bench/ measures hyco, for baselines:
//
//   node bench.js tokens COUNT              createRelayToken calls per second
//   node bench.js listen                    a listener that counts bytes and answers "done"
//   node bench.js send COUNT SIZE ROUNDS    MiB/s of COUNT binary messages of SIZE bytes
//   node bench.js connect COUNT             seconds from relayedConnect until open, per connect
//
// Connection details come from the environment as for tests/interop/node (HYCO_RELAY_ADDRESS,
// HYCO_ENTITY, HYCO_KEY_NAME, HYCO_KEY); each mode prints one JSON line.

const sdk = require('hyco-ws');

const [mode, ...args] = process.argv.slice(2);
const relayAddress = process.env.HYCO_RELAY_ADDRESS;
const entity = process.env.HYCO_ENTITY;
const keyName = process.env.HYCO_KEY_NAME;
const key = process.env.HYCO_KEY;
const host = relayAddress.replace(/:\d+$/, '');

function local(sdkUri) {
  // The SDK always builds wss://host:443/...; the local relay serves ws:// on its own port.
  return 'ws://' + relayAddress + '/' + sdkUri.slice(('wss://' + host + ':443/').length);
}

function report(fields) {
  process.stdout.write(JSON.stringify(fields) + '\n');
}

function tokens(count) {
  const uri = sdk.createRelaySendUri(host, entity);
  const started = process.hrtime.bigint();
  for (let i = 0; i < count; i++) {
    sdk.createRelayToken(uri, keyName, key);
  }
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  report({ rate: count / seconds });
}

function listen() {
  const uri = local(sdk.createRelayListenUri(host, entity));
  const server = sdk.createRelayedServer(
    { server: uri, token: () => sdk.createRelayToken(uri, keyName, key) },
    (ws) => {
      let received = 0;
      ws.on('message', (data, flags) => {
        if (flags && flags.binary) {
          received += data.length;
        } else if (data === 'done') {
          ws.send(String(received));
          received = 0;
        } else {
          ws.send(data);
        }
      });
    }
  );
  let ready = false;
  server.on('listening', () => {
    if (!ready) {
      ready = true;
      report({});
    }
  });
  process.stdin.resume();
  process.stdin.on('end', () => process.exit(0));
}

function open() {
  const uri = local(sdk.createRelaySendUri(host, entity));
  return new Promise((resolve, reject) => {
    const ws = sdk.relayedConnect(uri, sdk.createRelayToken(uri, keyName, key));
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
  });
}

async function send(count, size, rounds) {
  const ws = await open();
  const payload = Buffer.alloc(size, 7);
  const rates = [];
  for (let r = 0; r < rounds; r++) {
    const answered = new Promise((resolve) => ws.once('message', resolve));
    const started = process.hrtime.bigint();
    for (let i = 0; i < count; i++) {
      ws.send(payload, { binary: true });
    }
    ws.send('done');
    const total = Number(await answered);
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    if (total !== count * size) {
      throw new Error('listener counted ' + total + ' bytes');
    }
    rates.push(total / seconds / 1048576);
  }
  ws.close();
  report({ rates: rates });
}

async function connect(count) {
  const latencies = [];
  const begun = process.hrtime.bigint();
  for (let i = 0; i < count; i++) {
    const started = process.hrtime.bigint();
    const ws = await open();
    latencies.push(Number(process.hrtime.bigint() - started) / 1e9);
    await new Promise((resolve) => {
      ws.once('close', resolve);
      ws.close();
    });
  }
  const seconds = Number(process.hrtime.bigint() - begun) / 1e9;
  report({ latencies: latencies, rate: count / seconds });
}

const run = {
  tokens: () => tokens(Number(args[0])),
  listen: listen,
  send: () => send(Number(args[0]), Number(args[1]), Number(args[2])),
  connect: () => connect(Number(args[0])),
}[mode];

Promise.resolve(run()).catch((error) => {
  report({ error: String(error && error.message) });
  process.exitCode = 1;
});
