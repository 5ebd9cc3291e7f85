'use strict';
// What every interop script shares: connection details from the environment, addresses built
// with the SDK's own helpers, and results reported as one JSON object per stdout line.

const sdk = require('hyco-ws');

const relayAddress = requiredEnv('HYCO_RELAY_ADDRESS'); // host:port of the local relay
const scheme = process.env.HYCO_SCHEME || 'ws'; // 'wss' when the relay serves TLS
const entity = requiredEnv('HYCO_ENTITY');
const keyName = requiredEnv('HYCO_KEY_NAME');
const key = requiredEnv('HYCO_KEY');

function requiredEnv(name) {
  const value = process.env[name];
  if (!value) {
    throw new Error('environment variable ' + name + ' is required');
  }
  return value;
}

// The SDK's helpers always produce wss://{namespace}:443/$hc/...; the local relay listens on its
// own port, and on ws:// without TLS. Only that prefix is rewritten: the path and the query stay
// exactly as the SDK builds them.
function local(sdkUri) {
  const sdkPrefix = 'wss://' + hostOnly() + ':443/';
  if (!sdkUri.startsWith(sdkPrefix)) {
    throw new Error('unexpected SDK address: ' + sdkUri);
  }
  return scheme + '://' + relayAddress + '/' + sdkUri.slice(sdkPrefix.length);
}

function hostOnly() {
  return relayAddress.replace(/:\d+$/, '');
}

function listenUri() {
  return local(sdk.createRelayListenUri(hostOnly(), entity));
}

function sendUri() {
  return local(sdk.createRelaySendUri(hostOnly(), entity));
}

function token(uri, lifetimeSeconds) {
  return sdk.createRelayToken(uri, keyName, key, lifetimeSeconds);
}

function report(event, fields) {
  process.stdout.write(JSON.stringify(Object.assign({ event: event }, fields)) + '\n');
}

function describe(data) {
  const bytes = Buffer.isBuffer(data) ? data : Buffer.from(data);
  return {
    length: bytes.length,
    sha256: require('crypto').createHash('sha256').update(bytes).digest('hex'),
  };
}

module.exports = { listenUri, sendUri, token, report, describe, sdk };
