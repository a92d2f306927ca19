// The OpenAPI document served by a running natterd: it parses, is OpenAPI 3,
// is the same document as src/gateway/openapi.json (so the embedded copy is
// current), names every endpoint of API.md, keeps its internal references
// whole, and each path+method it names is one the server routes (not 404
// "no such endpoint" nor 405), and real answers have the shape the document
// gives them.
//
// Run: NATTERD=/path/to/natterd node openapi.test.mjs   (exit code 0 = pass)

import assert from 'node:assert/strict';
import fs from 'node:fs';
import { http, register, runCases, startServer, stopServer } from './lib.mjs';

// From /work/shared/API.md: Auth, Users, Friends, Chats and messages,
// Random chats, Operations. GET / is the web client, not part of the API
// document.
const API_MD_ENDPOINTS = [
    ['post', '/api/v1/auth/register'],
    ['post', '/api/v1/auth/login'],
    ['post', '/api/v1/auth/refresh'],
    ['post', '/api/v1/auth/logout'],
    ['get', '/api/v1/users/me'],
    ['patch', '/api/v1/users/me'],
    ['get', '/api/v1/users/{id}'],
    ['get', '/api/v1/users/by-nickname/{nickname}'],
    ['get', '/api/v1/users'],
    ['get', '/api/v1/friends'],
    ['post', '/api/v1/friends/requests'],
    ['post', '/api/v1/friends/requests/{user_id}/accept'],
    ['post', '/api/v1/friends/requests/{user_id}/reject'],
    ['delete', '/api/v1/friends/{user_id}'],
    ['post', '/api/v1/blocks/{user_id}'],
    ['delete', '/api/v1/blocks/{user_id}'],
    ['post', '/api/v1/chats'],
    ['get', '/api/v1/chats'],
    ['get', '/api/v1/chats/{id}'],
    ['post', '/api/v1/chats/{id}/members'],
    ['delete', '/api/v1/chats/{id}/members/{user_id}'],
    ['get', '/api/v1/chats/{id}/messages'],
    ['post', '/api/v1/chats/{id}/messages'],
    ['patch', '/api/v1/chats/{id}/messages/{seq}'],
    ['delete', '/api/v1/chats/{id}/messages/{seq}'],
    ['post', '/api/v1/chats/{id}/read'],
    ['get', '/api/v1/chats/{id}/export'],
    ['put', '/api/v1/match/preferences'],
    ['post', '/api/v1/match'],
    ['delete', '/api/v1/match'],
    ['post', '/api/v1/chats/{id}/reveal'],
    ['get', '/healthz'],
    ['get', '/readyz'],
    ['get', '/metrics'],
    ['get', '/api/v1/openapi.json'],
];
const METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'];
// Parameter names differ between documents; compare the shape only.
const shape = (p) => p.replace(/\{[^}]+\}/g, '{}');

let srv;
let doc;
let raw;

const cases = [
    ['start natterd', async () => {
        srv = await startServer();
    }],

    ['GET /api/v1/openapi.json answers 200 application/json that parses', async () => {
        const res = await http(srv, 'GET', '/api/v1/openapi.json');
        assert.equal(res.status, 200);
        assert.match(res.headers.get('content-type') || '', /^application\/json/);
        raw = res.text;
        doc = JSON.parse(raw);
        assert.equal(typeof doc, 'object');
    }],

    ['openapi is "3.x", with info.title, info.version and paths', async () => {
        assert.equal(typeof doc.openapi, 'string');
        assert.ok(doc.openapi.startsWith('3.'), `openapi is ${doc.openapi}`);
        assert.ok(doc.info && doc.info.title && doc.info.version);
        assert.equal(typeof doc.paths, 'object');
    }],

    ['the served document is src/gateway/openapi.json (the embedded copy is current)', async () => {
        const src = new URL('../../src/gateway/openapi.json', import.meta.url);
        assert.ok(fs.existsSync(src), `${src.pathname} is missing`);
        assert.deepEqual(doc, JSON.parse(fs.readFileSync(src, 'utf8')));
    }],

    ['every close code the server sends (src/net/ws.h) is in close_codes and the description table', async () => {
        const header = fs.readFileSync(new URL('../../src/net/ws.h', import.meta.url), 'utf8');
        const sent = [...header.matchAll(/NT_WS_CLOSE_\w+\s*=\s*(\d+)/g)].map((x) => x[1]);
        assert.ok(sent.includes('1013') && sent.includes('4001'), `ws.h gave ${sent}`);
        const listed = Object.keys(doc['x-websocket'].close_codes);
        const inTable = [...doc.info.description.matchAll(/^\| (\d{4}) \| /gm)].map((x) => x[1]);
        assert.deepEqual(sent.filter((c) => !listed.includes(c)), [], 'missing from close_codes');
        assert.deepEqual(inTable, listed, 'the description table and close_codes differ');
    }],

    ['every endpoint of API.md is in paths', async () => {
        const have = new Set();
        for (const [p, item] of Object.entries(doc.paths))
            for (const m of METHODS)
                if (item[m])
                    have.add(`${m.toUpperCase()} ${shape(p)}`);
        const missing = API_MD_ENDPOINTS.map(([m, p]) => `${m.toUpperCase()} ${shape(p)}`)
            .filter((k) => !have.has(k));
        assert.deepEqual(missing, [], `missing from the document: ${missing.join(', ')}`);
    }],

    ['every operation has responses, and path templates match their path parameters', async () => {
        for (const [p, item] of Object.entries(doc.paths)) {
            for (const m of METHODS) {
                const op = item[m];
                if (!op)
                    continue;
                assert.ok(op.responses && Object.keys(op.responses).length > 0,
                    `${m} ${p} has no responses`);
                const params = [...(item.parameters || []), ...(op.parameters || [])]
                    .map((x) => (x.$ref ? resolve(x.$ref) : x))
                    .filter((x) => x.in === 'path').map((x) => x.name).sort();
                const inTemplate = [...p.matchAll(/\{([^}]+)\}/g)].map((x) => x[1]).sort();
                assert.deepEqual(params, inTemplate, `${m} ${p}: path parameters`);
            }
        }
    }],

    ['components: bearerAuth is an HTTP bearer JWT; user, chat, member, message, error exist', async () => {
        const auth = doc.components.securitySchemes.bearerAuth;
        assert.equal(auth.type, 'http');
        assert.equal(auth.scheme.toLowerCase(), 'bearer');
        assert.equal(auth.bearerFormat, 'JWT');
        const names = Object.keys(doc.components.schemas).map((n) => n.toLowerCase());
        for (const want of ['user', 'chat', 'member', 'message', 'error'])
            assert.ok(names.includes(want), `schema ${want} is missing`);
        const nick = doc.components.schemas.User.properties.nickname;
        assert.equal(nick.pattern, '^[A-Za-z0-9_.-]{3,32}$');
        assert.deepEqual(doc.components.schemas.User.properties.gender.enum,
            ['male', 'female', 'other']);
    }],

    ['every $ref points inside the document', async () => {
        const refs = [];
        (function walk(node) {
            if (Array.isArray(node))
                node.forEach(walk);
            else if (node && typeof node === 'object')
                for (const [k, v] of Object.entries(node)) {
                    if (k === '$ref')
                        refs.push(v);
                    else
                        walk(v);
                }
        })(doc);
        assert.ok(refs.length > 0);
        const broken = [...new Set(refs)].filter((r) => resolve(r) === undefined);
        assert.deepEqual(broken, [], `unresolved: ${broken.join(', ')}`);
    }],

    ['every path+method in the document is routed by the server (no 404 route, no 405)', async () => {
        const sample = { id: '1', user_id: '1', seq: '1', nickname: 'nobody_here' };
        const wrong = [];
        for (const [p, item] of Object.entries(doc.paths)) {
            if (p === '/ws')
                continue; // an upgrade, not a REST call
            for (const m of METHODS) {
                if (!item[m])
                    continue;
                const url = p.replace(/\{([^}]+)\}/g, (_, n) => sample[n] ?? '1');
                // No token and an empty object: the answer may be 400 or 401,
                // but never "there is no such endpoint".
                const body = ['post', 'put', 'patch'].includes(m) ? {} : undefined;
                const res = await http(srv, m.toUpperCase(), url, { body });
                const err = (res.json && res.json.error) || {};
                if (res.status === 405 || err.code === 'method_not_allowed' ||
                    (res.status === 404 && err.message === 'no such endpoint'))
                    wrong.push(`${m.toUpperCase()} ${url} -> ${res.status} ${res.text.slice(0, 80)}`);
            }
        }
        assert.deepEqual(wrong, []);
    }],

    ['real answers match the documented schemas (no missing, extra or mistyped fields)', async () => {
        const problems = [];
        const check = (what, value, op, status) => {
            const resp = deref(doc.paths[op[1]][op[0]].responses[status]);
            assert.ok(resp, `${op.join(' ')} documents no ${status}`);
            const schema = resp.content['application/json'].schema;
            conform(value, schema, what, problems);
        };
        const reg = await http(srv, 'POST', '/api/v1/auth/register', { body: {
            email: 'shape@example.test', password: 'correct horse battery', nickname: 'shape_1',
            gender: 'other', birth_date: '1990-04-01' } });
        check('register', reg.json, ['post', '/api/v1/auth/register'], '201');
        const t = reg.json.access_token;
        const other = await register(srv, 'shape_other');
        check('GET /users/me', (await http(srv, 'GET', '/api/v1/users/me', { token: t })).json,
            ['get', '/api/v1/users/me'], '200');
        const byId = (await http(srv, 'GET', `/api/v1/users/${other.user.id}`, { token: t })).json;
        check('GET /users/{id}', byId, ['get', '/api/v1/users/{id}'], '200');
        assert.ok(!('email' in byId), 'email appears only on /users/me');
        check('GET /users?q=', (await http(srv, 'GET', '/api/v1/users?q=shape', { token: t })).json,
            ['get', '/api/v1/users'], '200');
        const group = await http(srv, 'POST', '/api/v1/chats', { token: t,
            body: { type: 'group', title: 'Shapes', member_ids: [other.user.id] } });
        assert.equal(group.status, 201, group.text);
        check('POST /chats', group.json, ['post', '/api/v1/chats'], '201');
        const msg = await http(srv, 'POST', `/api/v1/chats/${group.json.id}/messages`,
            { token: t, body: { text: 'hello', client_id: 'shape-1' } });
        assert.equal(msg.status, 201, msg.text);
        check('POST /messages', msg.json, ['post', '/api/v1/chats/{id}/messages'], '201');
        check('GET /chats', (await http(srv, 'GET', '/api/v1/chats', { token: t })).json,
            ['get', '/api/v1/chats'], '200');
        check('GET /messages', (await http(srv, 'GET', `/api/v1/chats/${group.json.id}/messages`,
            { token: t })).json, ['get', '/api/v1/chats/{id}/messages'], '200');
        const ref = await http(srv, 'POST', '/api/v1/auth/refresh',
            { body: { refresh_token: reg.json.refresh_token } });
        check('refresh', ref.json, ['post', '/api/v1/auth/refresh'], '200');
        const bad = await http(srv, 'POST', '/api/v1/auth/register', { body: { email: 1 } });
        assert.equal(bad.status, 400);
        check('an error', bad.json, ['post', '/api/v1/auth/register'], '400');
        assert.deepEqual(problems, []);
    }],

    ['GET /metrics is Prometheus text; /healthz and /readyz answer 200', async () => {
        const m = await http(srv, 'GET', '/metrics');
        assert.equal(m.status, 200);
        assert.match(m.headers.get('content-type') || '', /^text\/plain/);
        assert.match(m.text, /^# (HELP|TYPE) /m);
        for (const h of ['natter_send_to_ack_seconds', 'natter_store_commit_seconds',
            'natter_store_write_seconds'])
            assert.match(m.text, new RegExp(`^${h}_bucket\\{le="\\+Inf"\\} \\d+$`, 'm'));
        assert.equal((await http(srv, 'GET', '/healthz')).status, 200);
        assert.equal((await http(srv, 'GET', '/readyz')).status, 200);
    }],

    ['stop natterd: SIGTERM, exit status 0', async () => {
        await stopServer(srv);
        srv = null;
    }],
];

function deref(node) {
    while (node && node.$ref)
        node = resolve(node.$ref);
    return node;
}

/* A small OpenAPI 3.0 schema check: $ref, allOf, oneOf, nullable, type,
 * enum, pattern, minimum, required, and properties (an undocumented
 * property is reported: the document should name every field). */
function conform(value, schema, where, problems) {
    schema = deref(schema);
    if (schema.allOf) {
        const merged = { type: 'object', required: [], properties: {} };
        for (const part of schema.allOf.map(deref)) {
            if (part.type !== 'object' && !part.properties) {
                conform(value, part, where, problems);
                if (schema.allOf.length === 1 && schema.nullable && value === null)
                    return;
                continue;
            }
            merged.required.push(...(part.required || []));
            Object.assign(merged.properties, part.properties || {});
        }
        if (value === null && schema.nullable)
            return;
        if (Object.keys(merged.properties).length)
            conform(value, merged, where, problems);
        return;
    }
    if (schema.oneOf) {
        const fits = schema.oneOf.filter((alt) => {
            const p = [];
            conform(value, alt, where, p);
            return p.length === 0;
        });
        if (fits.length !== 1)
            problems.push(`${where}: fits ${fits.length} of oneOf`);
        return;
    }
    if (value === null) {
        if (!schema.nullable)
            problems.push(`${where}: null but not nullable`);
        return;
    }
    const t = schema.type;
    const actual = Array.isArray(value) ? 'array' : Number.isInteger(value) ? 'integer' : typeof value;
    if (t && !(t === actual || (t === 'number' && actual === 'integer'))) {
        problems.push(`${where}: ${actual}, documented ${t}`);
        return;
    }
    if (schema.enum && !schema.enum.includes(value))
        problems.push(`${where}: ${JSON.stringify(value)} not in ${schema.enum}`);
    if (schema.pattern && typeof value === 'string' && !new RegExp(schema.pattern, 'u').test(value))
        problems.push(`${where}: ${JSON.stringify(value)} does not match ${schema.pattern}`);
    if (schema.minimum !== undefined && typeof value === 'number' && value < schema.minimum)
        problems.push(`${where}: ${value} < ${schema.minimum}`);
    if (actual === 'array' && schema.items)
        value.forEach((v, i) => conform(v, schema.items, `${where}[${i}]`, problems));
    if (actual === 'object' && (schema.properties || schema.required)) {
        for (const k of schema.required || [])
            if (!(k in value))
                problems.push(`${where}: missing ${k}`);
        for (const [k, v] of Object.entries(value)) {
            if (schema.properties && schema.properties[k])
                conform(v, schema.properties[k], `${where}.${k}`, problems);
            else if (schema.properties)
                problems.push(`${where}: undocumented field ${k}`);
        }
    }
}

function resolve(ref) {
    if (!ref.startsWith('#/'))
        return undefined;
    let node = doc;
    for (const part of ref.slice(2).split('/')) {
        const key = part.replace(/~1/g, '/').replace(/~0/g, '~');
        if (node === null || typeof node !== 'object' || !(key in node))
            return undefined;
        node = node[key];
    }
    return node;
}

await runCases('openapi: the served document against API.md', cases, {
    teardown: async () => {
        if (srv)
            await stopServer(srv);
    },
});
