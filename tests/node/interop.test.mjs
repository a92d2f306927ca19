// Interop test: the npm `ws` client, an implementation natterd's authors did
// not write, against natterd's WebSocket endpoint. It covers the handshake,
// the auth/ready exchange, messages between two users of a direct chat
// (with emoji and Cyrillic), client-side fragmentation, control frames, the
// close codes the server owes for bad input (1003, 1007, 1009, 4001), the
// close handshake, and the 1001 sent to open sockets on SIGTERM.
//
// Run: NATTERD=/path/to/natterd node interop.test.mjs   (exit code 0 = pass)

import assert from 'node:assert/strict';
import { Client, http, register, runCases, startServer, stopServer, WebSocket, withTimeout }
    from './lib.mjs';

const MAX_FRAME = 64 * 1024;
const TEXT_UNICODE = 'Привет, мир! 👋🏽 Съешь же ещё этих мягких французских булок 🇺🇦🎉 ünïcødé';

let srv;
let alice, bob;  // {user, access_token, ...}
let chat;        // the direct chat between them
let lastSeq = 0;

async function authed(who) {
    const c = await Client.open(srv.wsUrl);
    const ready = await c.auth(who.access_token);
    assert.equal(ready.type, 'ready', `auth answered ${JSON.stringify(ready)}`);
    return c;
}

// Sends `frame` (any string or Buffer, already built) and checks alice gets
// an ack and bob the message with `text`.
async function expectDelivered(a, b, id, text, sendFn) {
    sendFn();
    const ack = await a.next((f) => (f.type === 'ack' || f.type === 'error') && f.id === id);
    assert.equal(ack.type, 'ack', `send answered ${JSON.stringify(ack)}`);
    assert.equal(ack.chat_id, chat.id);
    assert.ok(Number.isInteger(ack.seq) && ack.seq > lastSeq,
        `ack seq ${ack.seq} must be above the previous ${lastSeq}`);
    assert.ok(Number.isInteger(ack.message_id) && ack.message_id > 0);
    assert.ok(Number.isInteger(ack.ts) && Math.abs(ack.ts - Date.now()) < 60_000, `ts ${ack.ts}`);
    const ev = await b.next((f) => f.type === 'message' && f.message && f.message.seq === ack.seq);
    assert.equal(ev.message.text, text);
    assert.equal(ev.message.chat_id, chat.id);
    assert.equal(ev.message.sender_id, alice.user.id);
    assert.equal(ev.message.id, ack.message_id);
    lastSeq = ack.seq;
    return ack;
}

const cases = [
    ['start natterd and register two users', async () => {
        srv = await startServer();
        alice = await register(srv, 'alice');
        bob = await register(srv, 'bob');
        assert.notEqual(alice.user.id, bob.user.id);
    }],

    ['handshake: ws opens /ws and the server answers 101 with a valid accept key', async () => {
        const c = new Client(srv.wsUrl);
        let upgradeHeaders = null;
        c.ws.once('upgrade', (res) => { upgradeHeaders = res.headers; });
        await withTimeout(c.opened, 5000, 'the handshake');
        // ws itself rejects a wrong Sec-WebSocket-Accept; check the rest.
        assert.equal(c.ws.readyState, WebSocket.OPEN);
        assert.ok(upgradeHeaders, 'no upgrade response seen');
        assert.equal(upgradeHeaders.upgrade.toLowerCase(), 'websocket');
        assert.match(upgradeHeaders.connection, /upgrade/i);
        assert.equal(c.ws.protocol, '');
        // ws offers permessage-deflate; natterd does not compress, so it must decline.
        assert.equal(c.ws.extensions, '');
        c.terminate();
    }],

    ['auth frame -> "ready" with the caller\'s own user', async () => {
        const c = await Client.open(srv.wsUrl);
        const ready = await c.auth(alice.access_token);
        assert.equal(ready.type, 'ready', JSON.stringify(ready));
        assert.equal(ready.user.id, alice.user.id);
        assert.equal(ready.user.nickname, alice.user.nickname);
        c.ws.close(1000);
        await c.waitClose();
    }],

    ['POST /api/v1/chats {"type":"direct"} creates the chat, then returns it again', async () => {
        const res = await http(srv, 'POST', '/api/v1/chats',
            { token: alice.access_token, body: { type: 'direct', user_id: bob.user.id } });
        assert.equal(res.status, 201, res.text);
        chat = res.json;
        assert.equal(chat.type, 'direct');
        assert.deepEqual(chat.members.map((m) => m.user_id).sort((x, y) => x - y),
            [alice.user.id, bob.user.id].sort((x, y) => x - y));
        const again = await http(srv, 'POST', '/api/v1/chats',
            { token: bob.access_token, body: { type: 'direct', user_id: alice.user.id } });
        assert.equal(again.status, 200, again.text);
        assert.equal(again.json.id, chat.id);
    }],

    ['send over ws -> ack with seq; the other user gets "message" (emoji, Cyrillic)', async () => {
        const a = await authed(alice);
        const a2 = await authed(alice); // a second device of the sender
        const b = await authed(bob);
        try {
            const ack1 = await expectDelivered(a, b, 's1', TEXT_UNICODE, () =>
                a.sendJson({ type: 'send', id: 's1', chat_id: chat.id, text: TEXT_UNICODE,
                    client_id: 'interop-1' }));
            const ack2 = await expectDelivered(a, b, 42, 'second: ещё 🙂', () =>
                a.sendJson({ type: 'send', id: 42, chat_id: chat.id, text: 'second: ещё 🙂' }));
            assert.equal(ack2.seq, ack1.seq + 1, 'seq numbers have no gaps');
            // The sender's other devices get the messages too, in seq order.
            const m1 = await a2.next((f) => f.type === 'message' && f.message.seq === ack1.seq);
            const m2 = await a2.next((f) => f.type === 'message' && f.message.seq === ack2.seq);
            assert.equal(m1.message.text, TEXT_UNICODE);
            assert.equal(m2.message.text, 'second: ещё 🙂');
            // What was stored is byte-for-byte what was sent.
            const hist = await http(srv, 'GET',
                `/api/v1/chats/${chat.id}/messages?after_seq=${ack1.seq - 1}`,
                { token: bob.access_token });
            assert.equal(hist.status, 200, hist.text);
            assert.deepEqual(hist.json.messages.map((m) => m.text), [TEXT_UNICODE, 'second: ещё 🙂']);
            assert.equal(hist.json.messages[0].client_id, 'interop-1');
        } finally {
            a.terminate();
            a2.terminate();
            b.terminate();
        }
    }],

    ['a text message fragmented by the client (split inside a UTF-8 sequence) is accepted', async () => {
        const a = await authed(alice);
        const b = await authed(bob);
        try {
            const text = 'фрагменты: Ж🚀Ж ' + 'x'.repeat(3000);
            const bytes = Buffer.from(JSON.stringify(
                { type: 'send', id: 'frag', chat_id: chat.id, text }), 'utf8');
            // Cut in the middle of the first 'Ж' (2 bytes) and of the rocket (4 bytes).
            const zhe = bytes.indexOf(Buffer.from('Ж'));
            const rocket = bytes.indexOf(Buffer.from('🚀'));
            assert.ok(zhe > 0 && rocket > zhe);
            const parts = [bytes.subarray(0, zhe + 1), bytes.subarray(zhe + 1, rocket + 2),
                bytes.subarray(rocket + 2)];
            await expectDelivered(a, b, 'frag', text, () => {
                a.ws.send(parts[0], { binary: false, fin: false });
                a.ws.send(parts[1], { binary: false, fin: false });
                a.ws.send(parts[2], { binary: false, fin: true });
            });
        } finally {
            a.terminate();
            b.terminate();
        }
    }],

    ['a ping control frame between fragments is answered and the message still arrives', async () => {
        const a = await authed(alice);
        const b = await authed(bob);
        try {
            const text = 'interleaved ping';
            const bytes = Buffer.from(JSON.stringify(
                { type: 'send', id: 'fragping', chat_id: chat.id, text }), 'utf8');
            const half = bytes.length >> 1;
            const pong = new Promise((resolve) => a.ws.once('pong', resolve));
            await expectDelivered(a, b, 'fragping', text, () => {
                a.ws.send(bytes.subarray(0, half), { binary: false, fin: false });
                a.ws.ping(Buffer.from('mid'));
                a.ws.send(bytes.subarray(half), { binary: false, fin: true });
            });
            const data = await withTimeout(pong, 5000, 'the pong');
            assert.equal(data.toString(), 'mid');
        } finally {
            a.terminate();
            b.terminate();
        }
    }],

    ['ping control frame from the client -> pong with the same payload', async () => {
        const a = await authed(alice);
        try {
            const pong = new Promise((resolve) => a.ws.once('pong', resolve));
            a.ws.ping(Buffer.from('hello natter'));
            const data = await withTimeout(pong, 5000, 'the pong');
            assert.equal(data.toString(), 'hello natter');
            // The JSON-level ping of API.md too.
            a.sendJson({ type: 'ping', id: 'p-7' });
            const p = await a.next('pong');
            assert.equal(p.id, 'p-7');
        } finally {
            a.terminate();
        }
    }],

    ['a binary frame -> close 1003', async () => {
        const a = await authed(alice);
        a.ws.send(Buffer.from([0x7b, 0x7d]), { binary: true });
        const { code } = await a.waitClose();
        assert.equal(code, 1003);
    }],

    ['invalid UTF-8 in a text frame -> close 1007', async () => {
        const a = await authed(alice);
        // {"type":"ping","x":"<C3 28>"}: 0xC3 followed by a non-continuation byte.
        const bad = Buffer.concat([Buffer.from('{"type":"ping","x":"'), Buffer.from([0xc3, 0x28]),
            Buffer.from('"}')]);
        a.ws.send(bad, { binary: false });
        const { code } = await a.waitClose();
        assert.equal(code, 1007);
    }],

    ['invalid UTF-8 split across fragments -> close 1007', async () => {
        const a = await authed(alice);
        a.ws.send(Buffer.from([0x22, 0xe2, 0x82]), { binary: false, fin: false });
        a.ws.send(Buffer.from([0x41, 0x22]), { binary: false, fin: true }); // 0x41 cannot continue
        const { code } = await a.waitClose();
        assert.equal(code, 1007);
    }],

    ['a frame of exactly 64 KiB is not a protocol error (the connection stays open)', async () => {
        const a = await authed(alice);
        try {
            const head = JSON.stringify({ type: 'send', id: 'big', chat_id: chat.id, text: '' });
            const frame = head.replace('"text":""', `"text":"${'y'.repeat(MAX_FRAME - head.length)}"`);
            assert.equal(Buffer.byteLength(frame), MAX_FRAME);
            a.ws.send(frame);
            // 65 KB of text is over the 4096 code point limit: an error, not a close.
            const err = await a.next((f) => f.id === 'big');
            assert.equal(err.type, 'error', JSON.stringify(err));
            assert.equal(err.code, 'bad_request');
            a.sendJson({ type: 'ping', id: 'after-big' });
            assert.equal((await a.next('pong')).id, 'after-big');
        } finally {
            a.terminate();
        }
    }],

    ['a frame over 64 KiB -> close 1009', async () => {
        const a = await authed(alice);
        a.ws.send('z'.repeat(MAX_FRAME + 1));
        const { code } = await a.waitClose();
        assert.equal(code, 1009);
    }],

    ['an unauthenticated frame other than auth -> close 4001', async () => {
        const a = await Client.open(srv.wsUrl);
        a.sendJson({ type: 'ping', id: 1 });
        const { code } = await a.waitClose();
        assert.equal(code, 4001);
        const b = await Client.open(srv.wsUrl);
        b.sendJson({ type: 'send', chat_id: chat.id, text: 'sneaky' });
        assert.equal((await b.waitClose()).code, 4001);
    }],

    ['a bad token -> close 4001 (garbage, and a JWT with a tampered signature)', async () => {
        const a = await Client.open(srv.wsUrl);
        a.sendJson({ type: 'auth', token: 'not-a-token' });
        assert.equal((await a.waitClose()).code, 4001);

        const [h, p, s] = alice.access_token.split('.');
        assert.ok(h && p && s, 'the access token is a JWT');
        const flipped = (s[0] === 'A' ? 'B' : 'A') + s.slice(1);
        const b = await Client.open(srv.wsUrl);
        b.sendJson({ type: 'auth', token: `${h}.${p}.${flipped}` });
        assert.equal((await b.waitClose()).code, 4001);
    }],

    ['logout closes the sockets of that session with 4001', async () => {
        const carol = await register(srv, 'carol');
        const c = await authed(carol);
        const res = await http(srv, 'POST', '/api/v1/auth/logout',
            { body: { refresh_token: carol.refresh_token } });
        assert.equal(res.status, 204, res.text);
        assert.equal((await c.waitClose()).code, 4001);
        const again = await Client.open(srv.wsUrl);
        again.sendJson({ type: 'auth', token: carol.access_token });
        assert.equal((await again.waitClose()).code, 4001, 'the access token stops working at once');
    }],

    ['close handshake: the client closes with 1000 and gets 1000 back', async () => {
        const a = await authed(alice);
        a.ws.close(1000, 'bye');
        const { code } = await a.waitClose();
        // ws reports the code of the server's close frame (1006 if there was none).
        assert.equal(code, 1000);
    }],

    ['SIGTERM: an open socket is closed with 1001 and natterd exits 0', async () => {
        const a = await authed(alice);
        const closed = a.waitClose(12_000);
        const stopped = stopServer(srv);
        const { code } = await closed;
        assert.equal(code, 1001);
        await stopped;  // throws unless the exit status is 0 within 10 s
        srv = null;
    }],
];

await runCases('interop: npm ws client against natterd', cases, {
    teardown: async () => {
        if (srv)
            await stopServer(srv);
    },
});
