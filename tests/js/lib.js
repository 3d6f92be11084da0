// Shared helpers for the channel scenarios: checks that print PASS/FAIL lines, waits with
// deadlines, pusher-js clients configured for a self-hosted server, the `pusher` server SDK,
// and the channel-authorization endpoint a real application would serve.
'use strict';

const crypto = require('crypto');
const http = require('http');
const PusherClient = require('pusher-js');
const PusherServer = require('pusher');

const HOST = process.env.HOST || '127.0.0.1';
const PORT = Number(process.env.PORT);
if (!PORT) {
  console.log('FAIL setup: PORT is not set');
  process.exit(2);
}

// The app under test (the built-in default app unless the environment names another), and a
// second one for the scenarios that need two.
const APP = {
  id: process.env.APP_ID || 'app-id',
  key: process.env.APP_KEY || 'app-key',
  secret: process.env.APP_SECRET || 'app-secret',
};
const APP2 = {
  id: process.env.APP2_ID || '',
  key: process.env.APP2_KEY || '',
  secret: process.env.APP2_SECRET || '',
};

// Channel names carry this run's tag, so that runs sharing a server (by hand, or scenarios in
// parallel) never see each other's channels, members or cached events.
const RUN = process.env.RUN || crypto.randomBytes(4).toString('hex');
const KINDS = ['private-encrypted-', 'private-cache-', 'presence-cache-', 'private-', 'presence-', 'cache-'];

/** This run's name for the channel `name`: the tag after the kind prefix, which it keeps. */
function n(name) {
  const kind = KINDS.find((k) => name.startsWith(k)) || '';
  return `${kind}${RUN}-${name.slice(kind.length)}`;
}

/** Whether a channel name is one of this run's. */
const ours = (name) => name.includes(`${RUN}-`);

// End-to-end encryption key of the SDKs in this process (publisher and auth endpoint alike), for
// private-encrypted- channels, whose payload the server relays without reading.
const MASTER_KEY = crypto.randomBytes(32).toString('base64');

let passed = 0;
let failed = 0;

/** Records one check: prints `PASS name` or `FAIL name: detail`. */
function check(name, ok, detail) {
  if (ok) {
    passed++;
    console.log(`PASS ${name}`);
  } else {
    failed++;
    console.log(`FAIL ${name}: ${detail === undefined ? 'condition false' : detail}`);
  }
  return ok;
}

/** `check` on deep equality (JSON order-insensitive for object keys). */
function checkEq(name, actual, expected) {
  const a = canonical(actual);
  const e = canonical(expected);
  return check(name, a === e, `got ${a}, want ${e}`);
}

function canonical(v) {
  if (v === undefined) return 'undefined';
  return JSON.stringify(v, (k, x) =>
    x && typeof x === 'object' && !Array.isArray(x)
      ? Object.fromEntries(Object.keys(x).sort().map((key) => [key, x[key]]))
      : x,
  );
}

/** Resolves with `promise`, or rejects naming `what` after `ms`. */
function within(what, promise, ms = 5000) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Runs `body` as the scenario `name` under a hard deadline, then exits: 0 when every check
 * passed, 1 when one failed or the body threw, 3 on the deadline.
 */
function scenario(name, body, deadlineMs = 30000) {
  const hard = setTimeout(() => {
    console.log(`FAIL ${name}: scenario still running after ${deadlineMs} ms`);
    process.exit(3);
  }, deadlineMs);
  body()
    .then(
      () => {},
      (e) => check(`${name} ran to the end`, false, e && e.stack ? e.stack : String(e)),
    )
    .finally(() => {
      clearTimeout(hard);
      for (const c of openClients) {
        try {
          c.disconnect();
        } catch (_) {
          // already gone
        }
      }
      const ok = failed === 0 && passed > 0;
      console.log(`${ok ? 'OK' : 'FAILED'} ${name}: ${passed} checks passed, ${failed} failed`);
      process.exit(ok ? 0 : 1);
    });
}

// ---- the server SDK ----

/** The `pusher` server SDK for `app` (secret overridable, to test signing failures). */
function sdk(app = APP, overrides = {}) {
  return new PusherServer({
    appId: app.id,
    key: app.key,
    secret: app.secret,
    host: HOST,
    port: String(PORT),
    useTLS: false,
    timeout: 5000,
    encryptionMasterKeyBase64: MASTER_KEY,
    ...overrides,
  });
}

/** The JSON body of an SDK response. */
async function json(responsePromise) {
  const res = await responsePromise;
  return res.json();
}

/** Runs an SDK call expected to fail: resolves with {status, body} of the RequestError. */
async function failure(promiseOrThunk) {
  try {
    const p = typeof promiseOrThunk === 'function' ? promiseOrThunk() : promiseOrThunk;
    const res = await p;
    return { status: res.status, body: await res.text(), unexpectedSuccess: true };
  } catch (e) {
    let body = e.body;
    try {
      body = JSON.parse(e.body);
    } catch (_) {
      // not JSON: keep the text, the check will say so
    }
    return { status: e.status, body, error: e };
  }
}

// ---- the authorization endpoint ----

/**
 * Serves POST /auth?app=1|2&mode=good|wrong-secret|other-socket the way an application does,
 * with the SDK's authorizeChannel; presence data from the form's user_id and user_name.
 * Resolves with {url, calls, close}.
 */
function startAuthServer() {
  const calls = [];
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (d) => (body += d));
    req.on('end', () => {
      const url = new URL(req.url, 'http://x');
      const form = new URLSearchParams(body);
      const socketId = form.get('socket_id');
      const channel = form.get('channel_name');
      const mode = url.searchParams.get('mode') || 'good';
      const app = url.searchParams.get('app') === '2' ? APP2 : APP;
      calls.push({ mode, socketId, channel, userId: form.get('user_id') });
      let signer = sdk(app);
      let signedSocket = socketId;
      if (mode === 'wrong-secret') signer = sdk(app, { secret: app.secret + '-wrong' });
      if (mode === 'other-socket') {
        // A valid signature, for a socket that is not the caller's.
        const [a, b] = socketId.split('.');
        signedSocket = `${a}.${(Number(b) + 1) % 1000000}`;
      }
      let presence;
      if (channel.startsWith('presence-')) {
        presence = {
          user_id: form.get('user_id'),
          user_info: { name: form.get('user_name') },
        };
      }
      const answer = signer.authorizeChannel(signedSocket, channel, presence);
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify(answer));
    });
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      resolve({
        url: `http://127.0.0.1:${port}/auth`,
        calls,
        close: () => server.close(),
      });
    });
  });
}

// ---- pusher-js ----

const openClients = [];

/**
 * A pusher-js client for `app`, connected. `auth`: the auth server; `mode`, `user`, `name`:
 * what it is asked for. Resolves once the connection is established.
 */
async function connect({ app = APP, auth, mode = 'good', user, name } = {}) {
  const params = {};
  if (user) params.user_id = user;
  if (name) params.user_name = name;
  const appNo = app === APP2 ? '2' : '1';
  const client = new PusherClient(app.key, {
    wsHost: HOST,
    wsPort: PORT,
    forceTLS: false,
    enabledTransports: ['ws'],
    disableStats: true,
    cluster: 'mt1',
    channelAuthorization: auth
      ? { endpoint: `${auth.url}?app=${appNo}&mode=${mode}`, transport: 'ajax', params }
      : undefined,
  });
  openClients.push(client);
  await within(
    `client ${user || app.key} to connect`,
    new Promise((resolve, reject) => {
      client.connection.bind('connected', resolve);
      client.connection.bind('failed', () => reject(new Error('connection failed')));
      client.connection.bind('error', (e) => reject(new Error(`connection error ${JSON.stringify(e)}`)));
    }),
  );
  return client;
}

/** Subscribes; resolves with the subscription_succeeded data, rejects on subscription_error. */
function subscribe(client, name, ms = 5000) {
  const channel = client.subscribe(name);
  return within(
    `subscription to ${name}`,
    new Promise((resolve, reject) => {
      channel.bind('pusher:subscription_succeeded', (data) => resolve({ channel, data }));
      channel.bind('pusher:subscription_error', (e) =>
        reject(new Error(`subscription_error on ${name}: ${JSON.stringify(e)}`)),
      );
    }),
    ms,
  );
}

/**
 * Records every `event` on `channel` as {data, metadata}; `.next(n)` waits until n have arrived.
 */
function record(channel, event) {
  const got = [];
  const waiters = [];
  channel.bind(event, (data, metadata) => {
    got.push({ data, metadata });
    for (const w of waiters.slice()) {
      if (got.length >= w.n) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(got);
      }
    }
  });
  return {
    got,
    count: (n, ms = 5000) =>
      within(
        `${n} ${event} on ${channel.name} (have ${got.length})`,
        got.length >= n ? Promise.resolve(got) : new Promise((resolve) => waiters.push({ n, resolve })),
        ms,
      ),
  };
}

/**
 * Publishes a marker event to `channelName` and waits until every one of `channels` (pusher-js
 * channel objects of that name) has it: a subscriber gets a channel's events in publish order,
 * so whatever reached it before the marker has arrived by then. For checks that something did
 * NOT arrive.
 */
async function barrier(api, channelName, channels) {
  const marker = `m${Math.random().toString(36).slice(2)}`;
  const seen = channels.map((ch) =>
    within(
      `barrier event on ${channelName}`,
      new Promise((resolve) => {
        const fn = (data) => {
          if (data && data.marker === marker) {
            ch.unbind('barrier', fn);
            resolve();
          }
        };
        ch.bind('barrier', fn);
      }),
    ),
  );
  await api.trigger(channelName, 'barrier', { marker });
  await Promise.all(seen);
}

module.exports = {
  n,
  ours,
  APP,
  APP2,
  HOST,
  PORT,
  check,
  checkEq,
  within,
  sleep,
  scenario,
  sdk,
  json,
  failure,
  startAuthServer,
  connect,
  subscribe,
  record,
  barrier,
};
