'use strict';
// A minimal listener on the WebSocket class hyco-ws exports, that answers every accept message
// by opening the reject address built with the given query parameter names:
//
//   node reject_query.js statusCode statusDescription          (hyco-ws's abortConnection)
//   node reject_query.js sb-hc-statusCode sb-hc-statusDescription   (the protocol guide)
//
// hyco-ws's own reject path throws before it opens any socket (see README.md); this script
// shows what its address would do if it were sent.

const { listenUri, token, report, sdk } = require('./common');

const [statusName, descriptionName] = process.argv.slice(2);
const WebSocket = sdk; // hyco-ws exports the WebSocket class of the ws package it bundles
const uri = listenUri();

const control = new WebSocket(uri, null, { headers: { ServiceBusAuthorization: token(uri) } });
control.on('open', () => process.stdout.write('READY\n'));
control.on('message', (text) => {
  const message = JSON.parse(text);
  if (!message.accept) {
    return;
  }
  const address =
    message.accept.address +
    '&' + statusName + '=401' +
    '&' + descriptionName + '=' + encodeURIComponent('Unauthorized');
  const rejecting = new WebSocket(address);
  rejecting.on('open', () => report('reject-socket-open', {}));
  rejecting.on('message', (data) => report('message-on-reject-socket', { data: String(data) }));
  rejecting.on('error', (error) => report('reject-socket-error', { message: error.message }));
});
control.on('error', (error) => report('error', { message: String(error && error.message) }));
