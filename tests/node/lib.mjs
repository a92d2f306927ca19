// Shared helpers for the Node.js tests: start natterd on a free port with a
// throw-away data folder, wait until it answers, stop it with SIGTERM and
// insist on a clean exit; a small fetch wrapper for the REST API; a
// WebSocket wrapper around the npm `ws` client that queues frames so a test
// can await "the next frame of type X" without racing the socket; and a
// tiny runner that prints each case and turns failures into exit code 1.
//
// The tests are run by CTest as `node <file>.test.mjs` with NATTERD (the
// binary) and NT_TEST_TMP (a scratch folder) in the environment.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import WebSocket from 'ws';

export { WebSocket };

const STOP_TIMEOUT_MS = 10_000;
const START_TIMEOUT_MS = 15_000;

// Every server started and not yet stopped, and every temp folder made:
// the exit hook kills and removes whatever a failed test left behind.
const liveServers = new Set();
const tempDirs = new Set();

process.on('exit', () => {
    for (const srv of liveServers) {
        try {
            process.kill(srv.pid, 'SIGKILL');
        } catch {
            /* already gone */
        }
    }
    for (const dir of tempDirs) {
        try {
            fs.rmSync(dir, { recursive: true, force: true });
        } catch {
            /* best effort */
        }
    }
});
for (const sig of ['SIGINT', 'SIGTERM']) {
    process.on(sig, () => process.exit(1)); // runs the exit hook
}

export function sleep(ms) {
    return new Promise((resolve) => setTimeout(resolve, ms));
}

/* Resolves to a TCP port that was free a moment ago (bound to port 0 and
 * released). */
export function freePort() {
    return new Promise((resolve, reject) => {
        const srv = net.createServer();
        srv.unref();
        srv.on('error', reject);
        srv.listen(0, '127.0.0.1', () => {
            const { port } = srv.address();
            srv.close(() => resolve(port));
        });
    });
}

function makeTempDir() {
    const root = process.env.NT_TEST_TMP || os.tmpdir();
    fs.mkdirSync(root, { recursive: true });
    const dir = fs.mkdtempSync(path.join(root, 'natter-node-'));
    tempDirs.add(dir);
    return dir;
}

/* Starts natterd and waits until GET /healthz answers 200. Returns
 * {pid, port, base, wsUrl, stop(), exited, stderr()}. `extraArgs` are
 * appended to the command line. */
export async function startServer(extraArgs = []) {
    const bin = process.env.NATTERD;
    assert.ok(bin, 'NATTERD must name the natterd binary');
    assert.ok(fs.existsSync(bin), `NATTERD=${bin} does not exist`);
    const dataDir = makeTempDir();
    const port = await freePort();
    const args = ['--listen', `127.0.0.1:${port}`, '--data', path.join(dataDir, 'data'),
        '--argon2-fast', '--log-level', 'warn', ...extraArgs];
    const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let log = '';
    const keep = (chunk) => {
        log += chunk.toString('utf8');
        if (log.length > 200_000)
            log = log.slice(-100_000);
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    const exited = new Promise((resolve) => {
        child.on('exit', (code, signal) => {
            liveServers.delete(srv);
            resolve({ code, signal });
        });
    });
    const srv = {
        pid: child.pid,
        port,
        base: `http://127.0.0.1:${port}`,
        wsUrl: `ws://127.0.0.1:${port}/ws`,
        exited,
        stderr: () => log,
        stop: () => stopServer(srv),
        signal: (sig) => process.kill(child.pid, sig),
    };
    liveServers.add(srv);

    const deadline = Date.now() + START_TIMEOUT_MS;
    let gone = null;
    exited.then((e) => { gone = e; });
    for (;;) {
        if (gone)
            throw new Error(`natterd exited during start-up (${JSON.stringify(gone)}):\n${log}`);
        try {
            const res = await fetch(`${srv.base}/healthz`, { signal: AbortSignal.timeout(1000) });
            await res.arrayBuffer();
            if (res.status === 200)
                return srv;
        } catch {
            /* not listening yet */
        }
        if (Date.now() > deadline) {
            await stopServer(srv).catch(() => {});
            throw new Error(`natterd did not answer /healthz within ${START_TIMEOUT_MS} ms:\n${log}`);
        }
        await sleep(50);
    }
}

/* SIGTERM by pid; the process must exit with status 0 within 10 s. Past
 * that it is killed with SIGKILL and the stop fails. */
export async function stopServer(srv) {
    try {
        process.kill(srv.pid, 'SIGTERM');
    } catch {
        /* already exited: the exit status below tells */
    }
    const timeout = sleep(STOP_TIMEOUT_MS).then(() => null);
    const result = await Promise.race([srv.exited, timeout]);
    if (result === null) {
        try {
            process.kill(srv.pid, 'SIGKILL');
        } catch {
            /* raced with the exit */
        }
        await srv.exited;
        throw new Error(`natterd did not exit within ${STOP_TIMEOUT_MS} ms of SIGTERM:\n${srv.stderr()}`);
    }
    if (result.code !== 0 || result.signal !== null) {
        throw new Error(`natterd exited with code ${result.code} signal ${result.signal}` +
            ` after SIGTERM:\n${srv.stderr()}`);
    }
    return result;
}

/* One HTTP request. `body` (an object) is sent as JSON. Resolves to
 * {status, headers, text, json} where json is the parsed body or null. */
export async function http(srv, method, urlPath, { body, token, headers = {} } = {}) {
    const h = { ...headers };
    let payload;
    if (body !== undefined) {
        h['content-type'] = 'application/json';
        payload = typeof body === 'string' ? body : JSON.stringify(body);
    }
    if (token)
        h.authorization = `Bearer ${token}`;
    const res = await fetch(srv.base + urlPath, {
        method, headers: h, body: payload, signal: AbortSignal.timeout(10_000),
    });
    const text = await res.text();
    let json = null;
    if (text && (res.headers.get('content-type') || '').includes('json')) {
        try {
            json = JSON.parse(text);
        } catch {
            json = null;
        }
    }
    return { status: res.status, headers: res.headers, text, json };
}

let registered = 0;

/* Registers a fresh user; resolves to {user, access_token, refresh_token,
 * expires_in}. The nickname gets a counter suffix unless `exact`. */
export async function register(srv, nickname, { exact = false, ...extra } = {}) {
    const nick = exact ? nickname : `${nickname}_${process.pid % 10000}_${++registered}`;
    const res = await http(srv, 'POST', '/api/v1/auth/register', {
        body: { email: `${nick.toLowerCase()}@example.test`, password: 'correct horse battery',
            nickname: nick, ...extra },
    });
    assert.equal(res.status, 201, `register ${nick}: ${res.status} ${res.text}`);
    assert.ok(res.json && res.json.user && typeof res.json.access_token === 'string',
        `register ${nick}: unexpected body ${res.text}`);
    assert.equal(res.json.user.nickname, nick);
    return res.json;
}

/* A WebSocket with a frame queue. `next(pred, ms)` resolves to the first
 * queued or future JSON frame that `pred` accepts (a type string or a
 * function), removing it from the queue. `closed` resolves to {code, reason}
 * when the connection ends. */
export class Client {
    constructor(url, options = {}) {
        this.ws = new WebSocket(url, options);
        this.frames = [];
        this.waiters = [];
        this.errors = [];
        this.ws.on('message', (data, isBinary) => {
            let frame;
            try {
                frame = JSON.parse(data.toString('utf8'));
            } catch {
                frame = { type: '<not json>', raw: data.toString('utf8'), isBinary };
            }
            this.frames.push(frame);
            this.flush();
        });
        this.ws.on('error', (err) => this.errors.push(err));
        this.closed = new Promise((resolve) => {
            this.ws.on('close', (code, reason) => {
                resolve({ code, reason: reason.toString('utf8') });
                this.flush();
            });
        });
        this.opened = new Promise((resolve, reject) => {
            this.ws.once('open', resolve);
            this.ws.once('error', reject);
            this.ws.once('unexpected-response', (req, res) =>
                reject(new Error(`handshake answered ${res.statusCode}`)));
        });
    }

    static async open(url, options) {
        const c = new Client(url, options);
        await withTimeout(c.opened, 5000, 'WebSocket handshake');
        return c;
    }

    flush() {
        for (let i = 0; i < this.waiters.length;) {
            const w = this.waiters[i];
            const at = this.frames.findIndex(w.pred);
            if (at >= 0) {
                const [frame] = this.frames.splice(at, 1);
                this.waiters.splice(i, 1);
                clearTimeout(w.timer);
                w.resolve(frame);
            } else if (this.ws.readyState === WebSocket.CLOSED) {
                this.waiters.splice(i, 1);
                clearTimeout(w.timer);
                w.reject(new Error(`connection closed while waiting for ${w.what}; ` +
                    `unclaimed frames: ${JSON.stringify(this.frames)}`));
            } else {
                i++;
            }
        }
    }

    next(pred, ms = 5000) {
        const what = typeof pred === 'string' ? `a "${pred}" frame` : 'a frame';
        const test = typeof pred === 'string' ? (f) => f.type === pred : pred;
        return new Promise((resolve, reject) => {
            const w = { pred: test, resolve, reject, what };
            w.timer = setTimeout(() => {
                this.waiters.splice(this.waiters.indexOf(w), 1);
                reject(new Error(`timed out after ${ms} ms waiting for ${what}; ` +
                    `unclaimed frames: ${JSON.stringify(this.frames)}`));
            }, ms);
            this.waiters.push(w);
            this.flush();
        });
    }

    sendJson(obj) {
        this.ws.send(JSON.stringify(obj));
    }

    /* Sends the auth frame and waits for "ready". */
    async auth(token) {
        this.sendJson({ type: 'auth', token });
        return this.next((f) => f.type === 'ready' || f.type === 'error');
    }

    /* Resolves to {code, reason}, failing after `ms`. */
    waitClose(ms = 5000) {
        return withTimeout(this.closed, ms, 'the connection to close');
    }

    terminate() {
        this.ws.terminate();
    }
}

export function withTimeout(promise, ms, what) {
    let timer;
    const t = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
    });
    return Promise.race([promise, t]).finally(() => clearTimeout(timer));
}

/* Runs `cases` ([name, async fn]) in order, printing each; a case that
 * throws is reported and the run goes on. `teardown` runs at the end and
 * may fail the run too. Exits the process: 0 only if everything passed. */
export async function runCases(title, cases, { caseTimeoutMs = 30_000, teardown } = {}) {
    let failed = 0;
    console.log(`# ${title}`);
    for (const [name, fn] of cases) {
        const t0 = Date.now();
        try {
            await withTimeout(Promise.resolve().then(fn), caseTimeoutMs, `case "${name}"`);
            console.log(`ok   ${name} (${Date.now() - t0} ms)`);
        } catch (err) {
            failed++;
            console.log(`FAIL ${name}\n     ${String(err && err.stack || err).replace(/\n/g, '\n     ')}`);
        }
    }
    if (teardown) {
        try {
            await teardown();
            console.log('ok   teardown');
        } catch (err) {
            failed++;
            console.log(`FAIL teardown\n     ${String(err && err.stack || err).replace(/\n/g, '\n     ')}`);
        }
    }
    console.log(failed ? `# ${failed} failed of ${cases.length}` : `# all ${cases.length} passed`);
    // Exit now: a failed case may have left sockets or a server behind that
    // would keep the event loop alive (the exit hook kills and cleans up).
    process.exit(failed ? 1 : 0);
}
