// Scenarios for holdfast's Server-Sent Events (CHANNELS.md §4), run with the npm `eventsource`
// package (a WHATWG-compliant EventSource: it reconnects by itself and sends Last-Event-ID) and
// the `pusher` server SDK publishing through the HTTP API.
//
//   PORT=8080 node sse.js recovery|private|recovery_failed
//   PORT=8080 TLS_PORT=8443 node sse.js http2
//
// Output as in channels.js: `PASS`/`FAIL` lines, then `OK scenario: …` or `FAILED scenario: …`.
'use strict';

const crypto = require('crypto');
const net = require('net');
const { EventSource } = require('eventsource');
const { APP, HOST, PORT, n, check, checkEq, within, sleep, scenario, sdk } = require('./lib');

/**
 * A TCP proxy to the server whose connections the scenario can cut, as a load balancer or a
 * flaky network would: the client sees its stream end and reconnects on its own.
 */
function cuttableProxy() {
  const live = new Set();
  const server = net.createServer((client) => {
    const upstream = net.connect(PORT, HOST);
    live.add(client);
    live.add(upstream);
    client.pipe(upstream);
    upstream.pipe(client);
    const gone = () => {
      client.destroy();
      upstream.destroy();
      live.delete(client);
      live.delete(upstream);
    };
    client.on('error', gone);
    upstream.on('error', gone);
    client.on('close', gone);
    upstream.on('close', gone);
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      resolve({
        port: server.address().port,
        cut() {
          for (const s of live) s.destroy();
        },
        close() {
          this.cut();
          server.close();
        },
      });
    });
  });
}

/** Collects the `data` of every `name` event (parsed) and the stream's opens. */
function collect(es, name = 'ev') {
  const got = { events: [], ids: [], opens: 0, errors: 0, named: {} };
  es.addEventListener(name, (e) => {
    got.events.push(JSON.parse(e.data));
    got.ids.push(e.lastEventId);
  });
  es.addEventListener('open', () => got.opens++);
  es.addEventListener('error', (e) => {
    got.errors++;
    if (process.env.DEBUG) console.log('error', e.message, e.code);
  });
  for (const other of ['holdfast:recovery_failed', 'holdfast:reconnect']) {
    es.addEventListener(other, () => {
      got.named[other] = (got.named[other] || 0) + 1;
    });
  }
  return got;
}

async function until(what, cond, ms = 10000) {
  await within(
    what,
    (async () => {
      while (!cond()) await sleep(20);
    })(),
    ms,
  );
}

/** Publishes `count` events named `ev` on `channel`, data "0".."count-1" after `from`, in order. */
async function publishRange(api, channel, from, count) {
  for (let i = 0; i < count; i += 10) {
    const batch = [];
    for (let j = i; j < Math.min(count, i + 10); j++) {
      batch.push({ channel, name: 'ev', data: String(from + j) });
    }
    const res = await api.triggerBatch(batch);
    if (res.status !== 200) throw new Error(`batch answered ${res.status}`);
  }
}

const scenarios = {
  // Disconnected mid-stream, 500 events published meanwhile: the reconnect gets exactly those,
  // in order, then live ones.
  async recovery() {
    const api = sdk();
    const channel = n('storm');
    const proxy = await cuttableProxy();
    const es = new EventSource(
      `http://127.0.0.1:${proxy.port}/app/${APP.key}/events?channel=${channel}`,
    );
    const got = collect(es);
    await until('the stream opens', () => got.opens === 1);
    await publishRange(api, channel, 0, 3);
    await until('3 live events', () => got.events.length === 3);
    proxy.cut();
    await until('the client sees the stream end', () => got.errors >= 1);
    await publishRange(api, channel, 3, 500);
    // The client reconnects by itself after the server's retry (3 s) with Last-Event-ID.
    await until('the reconnect', () => got.opens === 2, 15000);
    await until('500 recovered events', () => got.events.length >= 503, 10000).catch((e) => {
      throw new Error(`${e.message}: ${got.events.length} events, ${got.opens} opens, ${JSON.stringify(got.named)}, last ${got.ids.slice(-2)}`);
    });
    await publishRange(api, channel, 503, 1);
    await until('the live event after them', () => got.events.length >= 504);
    await sleep(200);
    const data = got.events.map((e) => Number(e.data));
    checkEq('every event once, in order, across the reconnect', data, [...Array(504).keys()]);
    check(
      'each event names its channel',
      got.events.every((e) => e.channel === channel),
    );
    checkEq('no recovery_failed', got.named['holdfast:recovery_failed'] || 0, 0);
    const ids = got.ids;
    check('event IDs are distinct', new Set(ids).size === ids.length, ids.slice(0, 5).join(' '));
    es.close();
    proxy.close();
  },

  // A private channel needs auth over (channels, expires): signed, it streams; unsigned, the
  // client gets 403 and gives up (EventSource does not retry an HTTP error).
  async private() {
    const api = sdk();
    const channel = n('private-feed');
    const expires = Math.floor(Date.now() / 1000) + 60;
    const sig = crypto
      .createHmac('sha256', APP.secret)
      .update(`${channel}:${expires}`)
      .digest('hex');
    const base = `http://${HOST}:${PORT}/app/${APP.key}/events?channel=${channel}`;
    const es = new EventSource(`${base}&expires=${expires}&auth=${sig}`);
    const got = collect(es);
    await until('the signed stream opens', () => got.opens === 1);
    await publishRange(api, channel, 0, 1);
    await until('the event on the private channel', () => got.events.length === 1);
    checkEq('its data', got.events[0], { channel, data: '0' });
    es.close();

    const refused = new EventSource(base);
    const errors = [];
    refused.addEventListener('error', (e) => errors.push(e));
    await until('the unsigned stream is refused', () => errors.length >= 1);
    await sleep(300);
    checkEq('refused with 403', errors[0].code, 403);
    checkEq('and not retried', refused.readyState, EventSource.CLOSED);
    refused.close();
  },

  // Over HTTP/2: eventsource's fetch is undici's with HTTP/2 allowed (ALPN h2 on the TLS
  // port); two streams, and one reconnecting with Last-Event-ID recovers what it missed.
  async http2() {
    const { Agent, fetch } = require('undici');
    const agent = new Agent({ allowH2: true, connect: { rejectUnauthorized: false } });
    // (That the streams really were HTTP/2 the server says: tests/channels_clients.rs.)
    const h2fetch = (url, init) => fetch(url, { ...init, dispatcher: agent });
    const api = sdk();
    const a = n('h2-a');
    const b = n('h2-b');
    const url = (c) => `https://localhost:${process.env.TLS_PORT}/app/${APP.key}/events?channel=${c}`;
    const esA = new EventSource(url(a), { fetch: h2fetch });
    const esB = new EventSource(url(b), { fetch: h2fetch });
    const gotA = collect(esA);
    const gotB = collect(esB);
    await until('both streams open', () => gotA.opens === 1 && gotB.opens === 1);
    await publishRange(api, a, 0, 2);
    await publishRange(api, b, 0, 2);
    await until('events on both', () => gotA.events.length === 2 && gotB.events.length === 2);
    checkEq('stream a', gotA.events.map((e) => e.data), ['0', '1']);
    checkEq('stream b', gotB.events.map((e) => e.data), ['0', '1']);
    // A reconnect with the last ID seen, on the same HTTP/2 connection.
    const last = gotA.ids[gotA.ids.length - 1];
    esA.close();
    await publishRange(api, a, 2, 3);
    const again = new EventSource(url(a), {
      fetch: (u, init) =>
        h2fetch(u, { ...init, headers: { ...(init.headers || {}), 'last-event-id': last } }),
    });
    const gotAgain = collect(again);
    await until('the missed events', () => gotAgain.events.length === 3);
    checkEq('recovered in order', gotAgain.events.map((e) => e.data), ['2', '3', '4']);
    again.close();
    esB.close();
    await agent.close();
  },

  // A Last-Event-ID the history cannot reach: holdfast:recovery_failed first, then live.
  async recovery_failed() {
    const api = sdk();
    const channel = n('gone');
    const es = new EventSource(
      `http://${HOST}:${PORT}/app/${APP.key}/events?channel=${channel}&last_event_id=1-1`,
    );
    const got = collect(es);
    await until('recovery_failed', () => got.named['holdfast:recovery_failed'] === 1);
    await publishRange(api, channel, 0, 1);
    await until('then the live event', () => got.events.length === 1);
    checkEq('its data', got.events[0].data, '0');
    es.close();
  },
};

const name = process.argv[2];
if (!scenarios[name]) {
  console.log(`FAIL setup: unknown scenario ${name}`);
  process.exit(2);
}
scenario(name, scenarios[name], 60000);
