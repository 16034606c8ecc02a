'use strict';
// Lambda-style handlers, run unchanged by Ignis and by serverless-offline.
// Through an invoke API (Ignis's /v1/.../invoke, serverless-offline's Lambda endpoint) the event
// is the request body; as an HTTP route (an Ignis web function, a serverless-offline httpApi
// route) it is an API Gateway 2.0 event whose `body` is the request body as a string.

const payloadOf = (event) =>
  event && event.requestContext && typeof event.body === 'string' ? JSON.parse(event.body) : event;

function summarize(order) {
  const items = order.items || [];
  let total = 0;
  let units = 0;
  let biggest = null;
  let biggestValue = -Infinity;
  for (const item of items) {
    const value = item.price * item.qty;
    total += value;
    units += item.qty;
    if (value > biggestValue) {
      biggestValue = value;
      biggest = item.name;
    }
  }
  return {
    order: order.id === undefined ? null : order.id,
    currency: order.currency || 'EUR',
    lines: items.length,
    units,
    total: Math.round(total * 100) / 100,
    skus: items.map((item) => item.sku.toUpperCase()).sort(),
    biggest,
  };
}

exports.noop = async () => ({ ok: true });
exports.transform = async (event) => summarize(payloadOf(event));
