// Scenarios for holdfast's Pusher Channels support, run with the real clients: pusher-js
// subscribing over WebSocket and the `pusher` server SDK publishing through the HTTP API.
//
//   PORT=8080 node channels.js public|api|private|presence|apps|listen
//
// Each check prints `PASS name` or `FAIL name: detail`; the last line is `OK scenario: …` or
// `FAILED scenario: …`, and the exit status is 0 only when every check passed. Every wait has a
// deadline and the whole scenario a hard one, so a script never hangs.
'use strict';

const PusherClient = require('pusher-js');
const {
  APP,
  APP2,
  HOST,
  n,
  ours,
  PORT,
  check,
  checkEq,
  within,
  sleep,
  scenario,
  sdk,
  failure,
  startAuthServer,
  connect,
  subscribe,
  record,
  barrier,
} = require('./lib');

/** Polls `/channels/{name}?info=subscription_count` until `want(count)` holds. */
async function waitSubscriptionCount(api, name, want, what) {
  let last;
  await within(
    what,
    (async () => {
      for (;;) {
        const body = await (
          await api.get({ path: `/channels/${name}`, params: { info: 'subscription_count' } })
        ).json();
        last = body.subscription_count || 0;
        if (want(last)) return;
        await sleep(50);
      }
    })(),
  );
  return last;
}

// ---- public channels, and every way the SDK publishes ----
async function publicChannels() {
  const api = sdk();
  const a = await connect();
  const b = await connect();
  const idA = a.connection.socket_id;
  check('socket_id has the form N.M', /^\d+\.\d+$/.test(idA), idA);
  check('two connections get different socket_ids', idA !== b.connection.socket_id, idA);

  const { channel: aNews } = await subscribe(a, n('news'));
  const { channel: bNews } = await subscribe(b, n('news'));
  check('subscription_succeeded on a public channel', aNews.subscribed && bNews.subscribed);

  // trigger to one channel: both subscribers get the data, JSON object round-tripped.
  const aGreet = record(aNews, 'greet');
  const bGreet = record(bNews, 'greet');
  const payload = { text: 'héllo ☃ "quoted"', n: 1, nested: { list: [1, 2, 3] } };
  const res = await api.trigger(n('news'), 'greet', payload);
  checkEq('trigger to one channel answers 200', res.status, 200);
  checkEq('trigger answers {}', await res.json(), {});
  await aGreet.count(1);
  await bGreet.count(1);
  checkEq('first subscriber gets the event data', aGreet.got[0].data, payload);
  checkEq('second subscriber gets the event data', bGreet.got[0].data, payload);

  // Data that is not JSON stays a string.
  await api.trigger(n('news'), 'greet', 'plain text, not JSON');
  await aGreet.count(2);
  checkEq('string data arrives as sent', aGreet.got[1].data, 'plain text, not JSON');

  // trigger to several channels: each subscriber gets it once per channel it is on.
  const multi = {};
  for (const [client, tag, names] of [
    [a, 'a', ['multi-1', 'multi-2']],
    [b, 'b', ['multi-2', 'multi-3']],
  ]) {
    for (const name of names) {
      const { channel } = await subscribe(client, n(name));
      multi[`${tag}:${name}`] = { channel, rec: record(channel, 'multi') };
    }
  }
  const multiRes = await api.trigger([n('multi-1'), n('multi-2'), n('multi-3')], 'multi', { to: 'three' });
  checkEq('trigger to three channels answers 200', multiRes.status, 200);
  for (const { rec } of Object.values(multi)) await rec.count(1);
  for (const name of ['multi-1', 'multi-2', 'multi-3']) {
    const here = Object.entries(multi).filter(([k]) => k.endsWith(`:${name}`));
    await barrier(
      api,
      n(name),
      here.map(([, v]) => v.channel),
    );
    for (const [k, v] of here) {
      checkEq(`multi-channel trigger reaches ${k} exactly once`, v.rec.got.map((g) => g.data), [
        { to: 'three' },
      ]);
    }
  }

  // triggerBatch: several events on several channels, each in order on its channel.
  const { channel: batch1 } = await subscribe(a, n('batch-1'));
  const { channel: batch2 } = await subscribe(a, n('batch-2'));
  const b1 = record(batch1, 'first');
  const b2 = record(batch2, 'second');
  const batchRes = await api.triggerBatch([
    { channel: n('batch-1'), name: 'first', data: { i: 1 } },
    { channel: n('batch-2'), name: 'second', data: { i: 2 } },
    { channel: n('batch-1'), name: 'first', data: { i: 3 } },
  ]);
  checkEq('triggerBatch answers 200', batchRes.status, 200);
  await b1.count(2);
  await b2.count(1);
  checkEq('triggerBatch: batch-1 gets its two events in order', b1.got.map((g) => g.data), [
    { i: 1 },
    { i: 3 },
  ]);
  checkEq('triggerBatch: batch-2 gets its event', b2.got.map((g) => g.data), [{ i: 2 }]);

  // socket_id: the publisher's own connection is left out.
  const before = aGreet.got.length;
  await api.trigger(n('news'), 'greet', { excluded: 'a' }, { socket_id: idA });
  await bGreet.count(3);
  await barrier(api, n('news'), [aNews, bNews]);
  checkEq('socket_id excludes that connection', aGreet.got.length, before);
  checkEq('socket_id does not exclude the others', bGreet.got[2].data, { excluded: 'a' });

  // Publish order is delivery order, for every subscriber.
  const aSeq = record(aNews, 'seq');
  const bSeq = record(bNews, 'seq');
  const N = 30;
  for (let i = 0; i < N; i++) await api.trigger(n('news'), 'seq', { i });
  await aSeq.count(N);
  await bSeq.count(N);
  const want = Array.from({ length: N }, (_, i) => i);
  checkEq('events arrive in publish order (first)', aSeq.got.map((g) => g.data.i), want);
  checkEq('events arrive in publish order (second)', bSeq.got.map((g) => g.data.i), want);

  // Unsubscribing is seen by the API (pusher-js drops events of channels it left itself, so
  // the server's side is read from the channel's subscription_count).
  b.unsubscribe(n('news'));
  const left = await waitSubscriptionCount(api, n('news'), (count) => count === 1, 'news to drop to one subscriber');
  checkEq('unsubscribe lowers subscription_count', left, 1);

  // Cache channels: nothing cached yet is a cache_miss; then the last event comes on subscribe.
  const c = await connect();
  const weather = c.subscribe(n('cache-weather'));
  const miss = record(weather, 'pusher:cache_miss');
  const forecast = record(weather, 'forecast');
  await subscribe(c, n('cache-weather'));
  await miss.count(1);
  check('cache channel with nothing cached sends pusher:cache_miss', miss.got.length === 1);
  await api.trigger(n('cache-weather'), 'forecast', { sky: 'grey' });
  await api.trigger(n('cache-weather'), 'forecast', { sky: 'clear' });
  await forecast.count(2);
  const d = await connect();
  const later = d.subscribe(n('cache-weather'));
  const laterMiss = record(later, 'pusher:cache_miss');
  const laterForecast = record(later, 'forecast');
  await subscribe(d, n('cache-weather'));
  await laterForecast.count(1);
  checkEq('a new cache subscriber gets the last event', laterForecast.got[0].data, { sky: 'clear' });
  await barrier(api, n('cache-weather'), [later]);
  checkEq('... and only the last one, without a cache_miss', [laterForecast.got.length, laterMiss.got.length], [
    1, 0,
  ]);
}

// ---- the HTTP API through the SDK: queries, info, and its errors ----
async function httpApi() {
  const api = sdk();
  const auth = await startAuthServer();
  const ann = await connect({ auth, user: 'ann', name: 'Ann' });
  const bob = await connect({ auth, user: 'bob', name: 'Bob' });
  await subscribe(ann, n('api-one'));
  await subscribe(ann, n('api-two'));
  await subscribe(ann, n('presence-api'));
  await subscribe(bob, n('api-one'));
  await subscribe(bob, n('presence-api'));

  // Only this run's channels are looked at, so that the scenario also runs against a server
  // other clients use.
  const all = await (await api.get({ path: '/channels' })).json();
  const names = Object.keys(all.channels || {}).filter(ours).sort();
  checkEq('GET /channels lists the occupied channels', names, [n('api-one'), n('api-two'), n('presence-api')].sort());

  const prefixed = await (
    await api.get({ path: '/channels', params: { filter_by_prefix: n('api-') } })
  ).json();
  checkEq('GET /channels?filter_by_prefix=api-', Object.keys(prefixed.channels || {}).sort(), [
    n('api-one'),
    n('api-two'),
  ]);

  const presenceList = await (
    await api.get({ path: '/channels', params: { filter_by_prefix: n('presence-'), info: 'user_count' } })
  ).json();
  checkEq(
    'GET /channels?filter_by_prefix=presence-&info=user_count',
    presenceList.channels,
    { [n('presence-api')]: { user_count: 2 } },
  );

  const one = await (
    await api.get({ path: `/channels/${n('api-one')}`, params: { info: 'subscription_count' } })
  ).json();
  checkEq('GET /channels/api-one?info=subscription_count', [one.occupied, one.subscription_count], [
    true,
    2,
  ]);

  const none = await (await api.get({ path: `/channels/${n('api-none')}` })).json();
  checkEq('GET /channels/{unoccupied}', none.occupied, false);

  const pres = await (
    await api.get({ path: `/channels/${n('presence-api')}`, params: { info: 'user_count' } })
  ).json();
  checkEq('GET /channels/presence-api?info=user_count', [pres.occupied, pres.user_count], [true, 2]);

  const users = await (await api.get({ path: `/channels/${n('presence-api')}/users` })).json();
  checkEq(
    'GET /channels/presence-api/users',
    (users.users || []).map((u) => u.id).sort(),
    ['ann', 'bob'],
  );

  const withInfo = await (
    await api.trigger(n('api-one'), 'ev', { x: 1 }, { info: 'subscription_count' })
  ).json();
  checkEq(
    'trigger with info=subscription_count',
    withInfo.channels && withInfo.channels[n('api-one')] && withInfo.channels[n('api-one')].subscription_count,
    2,
  );

  const batchInfo = await (
    await api.triggerBatch([
      { channel: n('api-one'), name: 'ev', data: {}, info: 'subscription_count' },
      { channel: n('presence-api'), name: 'ev', data: {}, info: 'user_count,subscription_count' },
    ])
  ).json();
  const batch = batchInfo.batch || [];
  checkEq(
    'triggerBatch with info',
    [batch.length, (batch[0] || {}).subscription_count, (batch[1] || {}).user_count, (batch[1] || {}).subscription_count],
    [2, 2, 2, 2],
  );

  // max_event_bytes (10 KiB by default): at the limit it is delivered, one byte over is 413.
  const { channel: annOne } = await subscribe(ann, n('api-big'));
  const big = record(annOne, 'big');
  const limit = 10 * 1024;
  const atLimit = await api.trigger(n('api-big'), 'big', 'x'.repeat(limit));
  checkEq('data of exactly max_event_bytes is accepted', atLimit.status, 200);
  await big.count(1);
  checkEq('... and delivered whole', big.got[0].data.length, limit);
  const over = await failure(() => api.trigger(n('api-big'), 'big', 'x'.repeat(limit + 1)));
  checkEq('data over max_event_bytes: 413', over.status, 413);
  check('413 body has an error string', over.body && typeof over.body.error === 'string', JSON.stringify(over.body));

  // Failures, each with a JSON body naming the error.
  const expectFailure = async (name, status, thunk) => {
    const r = await failure(thunk);
    checkEq(`${name}: ${status}`, r.status, status);
    check(
      `${name}: JSON body with an error string`,
      r.body && typeof r.body === 'object' && typeof r.body.error === 'string',
      JSON.stringify(r.body),
    );
  };
  const wrongSecret = sdk(APP, { secret: 'not-the-secret' });
  await expectFailure('trigger signed with the wrong secret', 401, () =>
    wrongSecret.trigger(n('api-one'), 'ev', {}),
  );
  await expectFailure('GET /channels signed with the wrong secret', 401, () =>
    wrongSecret.get({ path: '/channels' }),
  );
  await expectFailure('wrong key', 401, () =>
    sdk(APP, { key: 'not-the-key' }).trigger(n('api-one'), 'ev', {}),
  );
  await expectFailure('unknown app id', 404, () =>
    sdk({ ...APP, id: 'no-such-app' }).trigger(n('api-one'), 'ev', {}),
  );
  const realNow = Date.now;
  Date.now = () => realNow() - 700 * 1000;
  try {
    await expectFailure('timestamp 700 s old', 401, () => api.trigger(n('api-one'), 'ev', {}));
  } finally {
    Date.now = realNow;
  }
  await expectFailure('users of a public channel', 400, () =>
    api.get({ path: `/channels/${n('api-one')}/users` }),
  );
  await expectFailure('info=user_count without a presence- filter', 400, () =>
    api.get({ path: '/channels', params: { info: 'user_count' } }),
  );
  await expectFailure('bad channel name', 400, () =>
    api.post({ path: '/events', body: { name: 'ev', data: '{}', channels: ['bad name!'] } }),
  );
  await expectFailure('101 channels', 400, () =>
    api.post({
      path: '/events',
      body: { name: 'ev', data: '{}', channels: Array.from({ length: 101 }, (_, i) => `c${i}`) },
    }),
  );
  await expectFailure('11 batch events', 400, () =>
    api.triggerBatch(Array.from({ length: 11 }, (_, i) => ({ channel: n('api-one'), name: 'ev', data: { i } }))),
  );
  // After all of that, the API still works.
  checkEq('a good trigger after the failures', (await api.trigger(n('api-one'), 'ev', {})).status, 200);
}

// ---- private channels: authorization, client events, bad auth ----
async function privateChannels() {
  const api = sdk();
  const auth = await startAuthServer();
  const a = await connect({ auth });
  const b = await connect({ auth });
  const { channel: aChat } = await subscribe(a, n('private-chat'));
  const { channel: bChat } = await subscribe(b, n('private-chat'));
  check(
    'both subscriptions were authorized by the endpoint',
    auth.calls.filter((c) => c.channel === n('private-chat') && c.mode === 'good').length === 2,
    JSON.stringify(auth.calls),
  );

  // API events reach private subscribers.
  const aNote = record(aChat, 'note');
  const bNote = record(bChat, 'note');
  await api.trigger(n('private-chat'), 'note', { n: 1 });
  await aNote.count(1);
  await bNote.count(1);
  checkEq('an API event reaches a private subscriber', bNote.got[0].data, { n: 1 });

  // private-encrypted-: relayed as a private channel; the SDK encrypts, pusher-js decrypts with
  // the shared_secret the endpoint handed it.
  const { channel: aVault } = await subscribe(a, n('private-encrypted-vault'));
  const { channel: bVault } = await subscribe(b, n('private-encrypted-vault'));
  const aSealed = record(aVault, 'sealed');
  const bSealed = record(bVault, 'sealed');
  await api.trigger(n('private-encrypted-vault'), 'sealed', { code: 1234 });
  await aSealed.count(1);
  await bSealed.count(1);
  checkEq('an encrypted event is relayed and decrypts in pusher-js', [aSealed.got[0].data, bSealed.got[0].data], [
    { code: 1234 },
    { code: 1234 },
  ]);

  // Client events: to the other subscriber, never back to the sender.
  const aTyping = record(aChat, 'client-typing');
  const bTyping = record(bChat, 'client-typing');
  check('client event accepted by pusher-js', aChat.trigger('client-typing', { who: 'a' }));
  await bTyping.count(1);
  checkEq('client event reaches the other subscriber', bTyping.got[0].data, { who: 'a' });
  check('client event on a private channel has no user_id', !bTyping.got[0].metadata.user_id);
  bChat.trigger('client-typing', { who: 'b' });
  await aTyping.count(1);
  checkEq('client event the other way', aTyping.got[0].data, { who: 'b' });
  await barrier(api, n('private-chat'), [aChat, bChat]);
  checkEq('client events are not echoed to their senders', [aTyping.got.length, bTyping.got.length], [1, 1]);

  // A client event on a private channel the sender is not subscribed to is refused.
  const { channel: bOther } = await subscribe(b, n('private-other'));
  const bSneak = record(bOther, 'client-sneak');
  const sneakErrors = [];
  const onSneakError = (e) => sneakErrors.push(e);
  a.connection.bind('error', onSneakError);
  a.send_event('client-sneak', { no: 'not subscribed' }, n('private-other'));
  await within('pusher:error for a client event on a channel not subscribed to', (async () => {
    while (sneakErrors.length === 0) await sleep(20);
  })());
  a.connection.unbind('error', onSneakError);
  check(
    'client event on a channel the sender is not on gets pusher:error',
    sneakErrors[0] && sneakErrors[0].type === 'PusherError',
    JSON.stringify(sneakErrors),
  );
  await barrier(api, n('private-other'), [bOther]);
  checkEq('... and is not delivered', bSneak.got.length, 0);

  // A client event on a public channel is refused with pusher:error; the connection stays up.
  const { channel: aPub } = await subscribe(a, n('lobby'));
  const { channel: bPub } = await subscribe(b, n('lobby'));
  const bShout = record(bPub, 'client-shout');
  const errors = [];
  a.connection.bind('error', (e) => errors.push(e));
  aPub.trigger('client-shout', { no: 'public' });
  await within('pusher:error for a client event on a public channel', (async () => {
    while (errors.length === 0) await sleep(20);
  })());
  check(
    'client event on a public channel gets pusher:error',
    // Pusher's protocol makes the code optional (Pusher itself sends null for refused client
    // events), so only the message is required.
    errors[0] && errors[0].type === 'PusherError' && typeof errors[0].data.message === 'string',
    JSON.stringify(errors),
  );
  await barrier(api, n('lobby'), [aPub, bPub]);
  checkEq('... and is not delivered to the public channel', bShout.got.length, 0);
  checkEq('... and the connection stays up', a.connection.state, 'connected');

  // Bad auth: the endpoint answers 200 with a signature that is wrong (another secret) or for
  // another socket; the server refuses that subscription with 401 and keeps the connection.
  for (const mode of ['wrong-secret', 'other-socket']) {
    const c = await connect({ auth, mode });
    const id = c.connection.socket_id;
    const channel = c.subscribe(n(`private-${mode}`));
    const err = await within(
      `subscription_error for ${mode}`,
      new Promise((resolve, reject) => {
        channel.bind('pusher:subscription_error', resolve);
        channel.bind('pusher:subscription_succeeded', () =>
          reject(new Error(`subscription with a ${mode} signature succeeded`)),
        );
      }),
    );
    check(
      `${mode}: the endpoint answered, so the server made the refusal`,
      auth.calls.some((x) => x.mode === mode && x.socketId === id),
      JSON.stringify(auth.calls),
    );
    checkEq(`${mode}: subscription_error status 401`, err && err.status, 401);
    await sleep(200);
    checkEq(`${mode}: the connection stays up`, [c.connection.state, c.connection.socket_id], [
      'connected',
      id,
    ]);
    const { channel: ok } = await subscribe(c, n(`after-${mode}`));
    const rec = record(ok, 'alive');
    await api.trigger(n(`after-${mode}`), 'alive', { yes: true });
    await rec.count(1);
    check(`${mode}: the same connection still subscribes and receives`, rec.got.length === 1);
    const bad = await (
      await api.get({ path: `/channels/${n(`private-${mode}`)}` })
    ).json();
    checkEq(`${mode}: the refused channel is not occupied`, bad.occupied, false);
  }

  // At most 10 client events per second per connection; more get pusher:error 4301.
  const p = await connect({ auth });
  const q = await connect({ auth });
  const { channel: pFast } = await subscribe(p, n('private-fast'));
  const { channel: qFast } = await subscribe(q, n('private-fast'));
  const qBurst = record(qFast, 'client-burst');
  const pErrors = [];
  p.connection.bind('error', (e) => pErrors.push(e));
  for (let i = 0; i < 25; i++) pFast.trigger('client-burst', { i });
  await sleep(300);
  await barrier(api, n('private-fast'), [pFast, qFast]);
  const delivered = qBurst.got.length;
  // 25 sent within a few ms: whatever the window's phase, between 10 and 20 pass.
  check('a burst of 25 client events is limited', delivered >= 10 && delivered <= 20, `${delivered} delivered`);
  check(
    'the excess gets pusher:error 4301',
    pErrors.some((e) => e.data && e.data.code === 4301),
    JSON.stringify(pErrors),
  );
  checkEq('the limited connection stays up', p.connection.state, 'connected');
}

// ---- presence channels: members, joins and leaves, client events with user_id ----
async function presenceChannels() {
  const api = sdk();
  const auth = await startAuthServer();
  const alice = await connect({ auth, user: 'alice', name: 'Alice' });
  const { channel: aRoom, data: aMembers } = await subscribe(alice, n('presence-room'));
  checkEq('first member sees count 1', aMembers.count, 1);
  checkEq('me is alice', [aMembers.me && aMembers.me.id, aMembers.me && aMembers.me.info], [
    'alice',
    { name: 'Alice' },
  ]);
  const added = record(aRoom, 'pusher:member_added');
  const removed = record(aRoom, 'pusher:member_removed');

  const bob = await connect({ auth, user: 'bob', name: 'Bob' });
  const { channel: bRoom, data: bMembers } = await subscribe(bob, n('presence-room'));
  const list = [];
  bMembers.each((m) => list.push([m.id, m.info]));
  list.sort();
  checkEq('second member sees count 2', bMembers.count, 2);
  checkEq('member list with user_info', list, [
    ['alice', { name: 'Alice' }],
    ['bob', { name: 'Bob' }],
  ]);
  checkEq('second member\'s me is bob', bMembers.me && bMembers.me.id, 'bob');
  await added.count(1);
  checkEq('member_added to the first member', [added.got[0].data.id, added.got[0].data.info], [
    'bob',
    { name: 'Bob' },
  ]);
  checkEq('the first member\'s count follows', aRoom.members.count, 2);

  // Client events on presence carry the sender's user_id.
  const aWave = record(aRoom, 'client-wave');
  const bWave = record(bRoom, 'client-wave');
  aRoom.trigger('client-wave', { hi: 'bob' });
  await bWave.count(1);
  checkEq('presence client event data', bWave.got[0].data, { hi: 'bob' });
  checkEq('presence client event has the sender\'s user_id', bWave.got[0].metadata.user_id, 'alice');
  await barrier(api, n('presence-room'), [aRoom, bRoom]);
  checkEq('presence client event is not echoed', aWave.got.length, 0);

  // A second connection of the same user is not a new member.
  const bob2 = await connect({ auth, user: 'bob', name: 'Bob' });
  const { data: b2Members } = await subscribe(bob2, n('presence-room'));
  checkEq('a user\'s second connection sees count 2', b2Members.count, 2);
  await barrier(api, n('presence-room'), [aRoom]);
  await sleep(200);
  checkEq('no member_added for a user\'s second connection', added.got.length, 1);
  bob2.disconnect();
  await waitSubscriptionCount(api, n('presence-room'), (count) => count === 2, 'the second bob connection to leave');
  await barrier(api, n('presence-room'), [aRoom]);
  await sleep(200);
  checkEq('no member_removed while the user has another connection', removed.got.length, 0);

  // The user's last connection leaving removes the member.
  bob.disconnect();
  await removed.count(1);
  checkEq('member_removed when the last connection leaves', removed.got[0].data.id, 'bob');
  checkEq('the count follows', aRoom.members.count, 1);
  const users = await (await api.get({ path: `/channels/${n('presence-room')}/users` })).json();
  checkEq('API users after the leave', (users.users || []).map((u) => u.id), ['alice']);

  // Unsubscribing (not disconnecting) also removes the member.
  const carol = await connect({ auth, user: 'carol', name: 'Carol' });
  const { data: cMembers } = await subscribe(carol, n('presence-room'));
  checkEq('carol sees alice and herself', [cMembers.count, cMembers.me && cMembers.me.id], [2, 'carol']);
  await added.count(2);
  checkEq('member_added for carol', added.got[1].data.id, 'carol');
  carol.unsubscribe(n('presence-room'));
  await removed.count(2);
  checkEq('member_removed on unsubscribe', removed.got[1].data.id, 'carol');
  checkEq('alice is alone again', aRoom.members.count, 1);
}

// ---- two apps from a config file: isolation, and no built-in app beside them ----
async function twoApps() {
  if (!APP2.key) throw new Error('APP2_ID, APP2_KEY and APP2_SECRET must be set');
  const api1 = sdk(APP);
  const api2 = sdk(APP2);
  const auth = await startAuthServer();
  const one = await connect({ app: APP, auth });
  const two = await connect({ app: APP2, auth });
  const { channel: ch1 } = await subscribe(one, n('shared'));
  const { channel: ch2 } = await subscribe(two, n('shared'));
  const r1 = record(ch1, 'ev');
  const r2 = record(ch2, 'ev');
  await api1.trigger(n('shared'), 'ev', { from: 1 });
  await api2.trigger(n('shared'), 'ev', { from: 2 });
  await barrier(api1, n('shared'), [ch1]);
  await barrier(api2, n('shared'), [ch2]);
  checkEq('app 1 subscriber sees only app 1 events', r1.got.map((g) => g.data), [{ from: 1 }]);
  checkEq('app 2 subscriber sees only app 2 events', r2.got.map((g) => g.data), [{ from: 2 }]);
  const info1 = await (
    await api1.get({ path: `/channels/${n('shared')}`, params: { info: 'subscription_count' } })
  ).json();
  checkEq('channel counts are per app', info1.subscription_count, 1);

  // Private channels authorize with each app's own secret.
  const { channel: p2 } = await subscribe(two, n('private-two'));
  check('app 2 private channel authorized with its secret', p2.subscribed);
  const mixed = await failure(() =>
    sdk({ id: APP.id, key: APP2.key, secret: APP2.secret }).trigger(n('shared'), 'ev', {}),
  );
  checkEq('app 1 id signed with app 2 credentials: 401', mixed.status, 401);

  // An app at its max_connections: the next connection is refused with 4004 (CHANNELS.md §2;
  // §1 says 4100), and pusher-js does not retry; the one already in is untouched.
  if (process.env.CAPPED_KEY) {
    const capped = { id: 'capped', key: process.env.CAPPED_KEY, secret: 'unused' };
    const first = await connect({ app: capped });
    const extra = new PusherClient(capped.key, {
      wsHost: HOST,
      wsPort: PORT,
      forceTLS: false,
      enabledTransports: ['ws'],
      disableStats: true,
      cluster: 'mt1',
    });
    const over = await within(
      'an error for a connection over max_connections',
      new Promise((resolve) => extra.connection.bind('error', resolve)),
    );
    extra.disconnect();
    const overError = over && over.type === 'WebSocketError' ? over.error : over;
    checkEq('over max_connections: pusher:error 4004', overError && overError.data && overError.data.code, 4004);
    checkEq('over max_connections: the first connection stays', first.connection.state, 'connected');
  }

  // The built-in app-key exists only without [[apps]].
  const stranger = new PusherClient('app-key', {
    wsHost: HOST,
    wsPort: PORT,
    forceTLS: false,
    enabledTransports: ['ws'],
    disableStats: true,
    cluster: 'mt1',
  });
  const states = [];
  stranger.connection.bind('state_change', (s) => states.push(s.current));
  const err = await within(
    'an error for an unknown key',
    new Promise((resolve) => stranger.connection.bind('error', resolve)),
  );
  // pusher-js reports the handshake's pusher:error wrapped as a WebSocketError.
  const pusherError = err && err.type === 'WebSocketError' ? err.error : err;
  checkEq('unknown key: pusher:error 4001', pusherError && pusherError.data && pusherError.data.code, 4001);
  await sleep(300);
  check(
    'unknown key: pusher-js gives up instead of retrying',
    !states.includes('connected') && stranger.connection.state === 'disconnected',
    `states ${JSON.stringify(states)}`,
  );
  stranger.disconnect();
}

// ---- a listener for another publisher (tests/tools/pusher_sdk.py, the PyPI SDK) ----
// Subscribes to py-one and py-two, prints READY, and checks what arrives until `done`.
async function listen() {
  const c = await connect();
  const { channel: one } = await subscribe(c, 'py-one');
  const { channel: two } = await subscribe(c, 'py-two');
  const fromPython = record(one, 'from-python');
  const multiOne = record(one, 'multi');
  const multiTwo = record(two, 'multi');
  const batchOne = record(one, 'batch');
  const batchTwo = record(two, 'batch');
  const done = record(one, 'done');
  console.log('READY');
  await done.count(1, 25000);
  checkEq('trigger from Python', fromPython.got.map((g) => g.data), [{ lang: 'python', n: 1 }]);
  checkEq('Python trigger to two channels, first', multiOne.got.map((g) => g.data), [{ to: 'both' }]);
  checkEq('Python trigger to two channels, second', multiTwo.got.map((g) => g.data), [{ to: 'both' }]);
  checkEq('Python trigger_batch, first channel', batchOne.got.map((g) => g.data), [{ i: 1 }]);
  checkEq('Python trigger_batch, second channel', batchTwo.got.map((g) => g.data), [{ i: 2 }]);
}

const scenarios = {
  public: publicChannels,
  api: httpApi,
  private: privateChannels,
  presence: presenceChannels,
  apps: twoApps,
  listen,
};

const name = process.argv[2];
if (!scenarios[name]) {
  console.log(`FAIL usage: node channels.js ${Object.keys(scenarios).join('|')}`);
  process.exit(2);
}
scenario(name, scenarios[name]);
