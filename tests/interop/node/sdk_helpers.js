'use strict';
// Prints, as one JSON line, what the SDKs' address and token helpers produce for the namespace,
// entity, key name and key given as arguments; no relay is involved.
//
//   node sdk_helpers.js NAMESPACE ENTITY KEY_NAME KEY TRACKING_ID

const ws = require('hyco-ws');
const https = require('hyco-https');

const [namespace, entity, keyName, key, trackingId] = process.argv.slice(2);
const listen = ws.createRelayListenUri(namespace, entity);
const bareWs = 'wss://' + namespace + '/$hc/' + entity;
const bareHttps = https.createRelayHttpsUri(namespace, entity);
const withId = { server: listen, token: 'TOKEN', id: trackingId };

function thrownBy(construct) {
  try {
    construct();
  } catch (error) {
    return String(error);
  }
  return null;
}

process.stdout.write(
  JSON.stringify({
    ws: {
      listenUri: listen,
      listenUriWithTokenAndId: ws.createRelayListenUri(namespace, entity, 'TOKEN', trackingId),
      sendUri: ws.createRelaySendUri(namespace, entity),
      sendUriWithTokenAndId: ws.createRelaySendUri(namespace, entity, 'TOKEN', trackingId),
      tokenForListenUri: ws.createRelayToken(listen, keyName, key),
      appendedToListenUri: ws.appendRelayToken(listen, keyName, key),
      appendedToUriWithoutQuery: ws.appendRelayToken(bareWs, keyName, key),
      listenerWithId: thrownBy(() => ws.createRelayedServer(withId)),
    },
    https: {
      httpsUri: https.createRelayHttpsUri(namespace, entity),
      httpsUriWithTokenAndId: https.createRelayHttpsUri(namespace, entity, 'TOKEN', trackingId),
      tokenForHttpsUri: https.createRelayToken(bareHttps, keyName, key),
      appendedToUriWithoutQuery: https.appendRelayToken(bareHttps, keyName, key),
      listenerWithId: thrownBy(() => https.createRelayedServer(withId)),
    },
    now: Math.floor(Date.now() / 1000),
  }) + '\n'
);
