// The REST side of the public API (/api/v1) and the session that goes with it.
//
// The session (tokens and the user) lives in localStorage so a reload keeps
// it. Access tokens are refreshed in the background a minute before they
// expire and on any 401. Refresh tokens rotate and presenting a used one
// revokes the session, so tabs of the same browser refresh under a Web Lock
// and re-read storage first: a tab that finds a newer token than its own
// adopts it instead of spending the old one.

const KEY = 'natter.session';
const BASE = '/api/v1';

export class ApiError extends Error {
    constructor(status, code, message)
    {
        super(message || code || `HTTP ${status}`);
        this.status = status;
        this.code = code;
    }
    /** True when the endpoint does not exist (yet) on this server. */
    get missing()
    {
        return this.status === 404 && this.message === 'no such endpoint' || this.status === 405 ||
               this.status === 501;
    }
}

let session = readStored();
let refreshTimer = 0;
let refreshing = null;
const listeners = new Set();

function readStored()
{
    try {
        const s = JSON.parse(localStorage.getItem(KEY) || 'null');
        return s && s.access_token && s.refresh_token ? s : null;
    } catch {
        return null;
    }
}

function store(s)
{
    session = s;
    if (s)
        localStorage.setItem(KEY, JSON.stringify(s));
    else
        localStorage.removeItem(KEY);
    schedule();
    for (const fn of listeners)
        fn(session);
}

/** The current session {access_token, refresh_token, expires_at, user} or null. */
export function getSession()
{
    return session;
}

/** fn(session) runs whenever the session changes (sign in, refresh, sign out). */
export function onSession(fn)
{
    listeners.add(fn);
    return () => listeners.delete(fn);
}

/** Updates the stored user (after a profile edit). */
export function setSessionUser(user)
{
    if (session)
        store({...session, user});
}

window.addEventListener('storage', e => {
    if (e.key !== KEY)
        return;
    const s = readStored();
    if (!s && session) {
        store(null); /* signed out in another tab */
    } else if (s && (!session || s.refresh_token !== session.refresh_token)) {
        session = s;
        schedule();
        for (const fn of listeners)
            fn(session);
    }
});

function schedule()
{
    clearTimeout(refreshTimer);
    if (!session)
        return;
    const wait = Math.max(5000, session.expires_at - Date.now() - 60000);
    refreshTimer = setTimeout(() => {
        refresh().catch(() => {
            /* Offline or server down: try again soon; a 401 already signed us out. */
            if (session) {
                clearTimeout(refreshTimer);
                refreshTimer = setTimeout(schedule, 10000);
            }
        });
    }, Math.min(wait, 2 ** 31 - 1));
}

function fromAuthReply(j, user)
{
    return {
        access_token: j.access_token,
        refresh_token: j.refresh_token,
        expires_at: Date.now() + (Number(j.expires_in) || 900) * 1000,
        user: j.user || user,
    };
}

/** Gets a new access token with the refresh token; signs out on 401. */
export function refresh()
{
    if (refreshing)
        return refreshing;
    const run = async () => {
        const cur = readStored() || session;
        if (!cur)
            throw new ApiError(401, 'unauthorized', 'signed out');
        if (session && cur.refresh_token !== session.refresh_token && cur.expires_at - Date.now() > 30000) {
            session = cur; /* another tab already refreshed */
            schedule();
            for (const fn of listeners)
                fn(session);
            return cur;
        }
        const r = await fetch(BASE + '/auth/refresh', {
            method: 'POST',
            headers: {'Content-Type': 'application/json'},
            body: JSON.stringify({refresh_token: cur.refresh_token}),
        });
        if (r.status === 401) {
            store(null);
            throw new ApiError(401, 'unauthorized', 'session expired, please sign in again');
        }
        if (!r.ok)
            throw await errorOf(r);
        const s = fromAuthReply(await r.json(), cur.user);
        store(s);
        return s;
    };
    refreshing = (navigator.locks ? navigator.locks.request('natter-refresh', run) : run())
                     .finally(() => {
                         refreshing = null;
                     });
    return refreshing;
}

/** An access token valid for at least another 20 seconds. */
export async function freshToken()
{
    if (!session)
        throw new ApiError(401, 'unauthorized', 'signed out');
    if (session.expires_at - Date.now() < 20000)
        await refresh();
    return session.access_token;
}

async function errorOf(r)
{
    let code = '', message = '';
    try {
        const j = await r.json();
        code = j?.error?.code || '';
        message = j?.error?.message || '';
    } catch {
        /* not JSON */
    }
    if (!code)
        code = {400: 'bad_request', 401: 'unauthorized', 403: 'forbidden', 404: 'not_found', 405: 'method_not_allowed',
                409: 'conflict', 429: 'rate_limited', 503: 'unavailable'}[r.status] || 'internal';
    return new ApiError(r.status, code, message || r.statusText);
}

/**
 * Calls the API: method, path under /api/v1, optional JSON body. Resolves to
 * the parsed JSON (null for 204, text when opts.text). Throws ApiError.
 */
export async function api(method, path, body, opts = {})
{
    const auth = opts.auth !== false;
    const go = async () => {
        const headers = {};
        if (body !== undefined)
            headers['Content-Type'] = 'application/json';
        if (auth)
            headers.Authorization = 'Bearer ' + await freshToken();
        return fetch(BASE + path, {method, headers, body: body === undefined ? undefined : JSON.stringify(body)});
    };
    let r;
    try {
        r = await go();
        if (r.status === 401 && auth && session) {
            await refresh();
            r = await go();
        }
    } catch (e) {
        if (e instanceof ApiError)
            throw e;
        throw new ApiError(0, 'network', 'cannot reach the server');
    }
    if (!r.ok)
        throw await errorOf(r);
    if (r.status === 204)
        return null;
    if (opts.text)
        return r.text();
    const t = await r.text();
    return t ? JSON.parse(t) : null;
}

export async function register(fields)
{
    const j = await api('POST', '/auth/register', fields, {auth: false});
    store(fromAuthReply(j));
    return session;
}

export async function login(loginName, password)
{
    const j = await api('POST', '/auth/login', {login: loginName, password}, {auth: false});
    store(fromAuthReply(j));
    return session;
}

/** Ends the session on the server (best effort) and forgets it here. */
export async function logout()
{
    const s = session;
    store(null);
    if (s) {
        try {
            await api('POST', '/auth/logout', {refresh_token: s.refresh_token}, {auth: false});
        } catch {
            /* the tokens are gone locally either way */
        }
    }
}

schedule();
