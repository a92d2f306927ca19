// The WebSocket connection to /ws: authenticates, keeps itself alive with
// pings, and after any drop reconnects with exponential backoff (0.5 s
// doubling to 15 s, with jitter). A `ready` frame starts each live period;
// the owner then catches up on what it missed.

import {freshToken, refresh} from './api.js';

const PING_EVERY = 25000;
const PONG_WAIT = 10000;
const BACKOFF_MAX = 15000;

export class Connection {
    /**
     * onFrame(frame) gets every server frame after `ready`; onReady(user)
     * starts a live period; onState(state, info) reports 'connecting',
     * 'online' or 'offline' (info.retryAt: when the next attempt is);
     * onAuthFailed() runs when the server refuses the session.
     */
    constructor({onFrame, onReady, onState, onAuthFailed})
    {
        this.onFrame = onFrame;
        this.onReady = onReady;
        this.onState = onState;
        this.onAuthFailed = onAuthFailed;
        this.ws = null;
        this.state = 'offline';
        this.attempt = 0;
        this.stopped = true;
        this.retryTimer = 0;
        this.pingTimer = 0;
        this.pongTimer = 0;
        this.pingSeq = 0;
        this.onOnline = () => this.reconnectNow();
        this.onVisible = () => {
            if (document.visibilityState === 'visible' && this.state === 'offline')
                this.reconnectNow();
        };
    }

    start()
    {
        if (!this.stopped)
            return;
        this.stopped = false;
        window.addEventListener('online', this.onOnline);
        document.addEventListener('visibilitychange', this.onVisible);
        this.open();
    }

    stop()
    {
        this.stopped = true;
        window.removeEventListener('online', this.onOnline);
        document.removeEventListener('visibilitychange', this.onVisible);
        clearTimeout(this.retryTimer);
        this.clearPing();
        if (this.ws) {
            this.ws.onclose = null;
            this.ws.close(1000);
            this.ws = null;
        }
        this.setState('offline');
    }

    /** Sends a frame if the connection is live; returns whether it went out. */
    send(frame)
    {
        if (this.state !== 'online' || !this.ws || this.ws.readyState !== WebSocket.OPEN)
            return false;
        this.ws.send(JSON.stringify(frame));
        return true;
    }

    reconnectNow()
    {
        if (this.stopped || this.state === 'online' || (this.ws && this.state === 'connecting'))
            return;
        clearTimeout(this.retryTimer);
        this.attempt = 0;
        this.open();
    }

    setState(state, info = {})
    {
        this.state = state;
        this.onState(state, info);
    }

    async open()
    {
        if (this.stopped)
            return;
        this.setState('connecting');
        let token;
        try {
            token = await freshToken();
        } catch (e) {
            if (e.status === 401) {
                this.stopped = true;
                this.onAuthFailed();
                return;
            }
            this.retry();
            return;
        }
        if (this.stopped)
            return;
        const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
        let ws;
        try {
            ws = new WebSocket(`${proto}//${location.host}/ws`);
        } catch {
            this.retry();
            return;
        }
        this.ws = ws;
        ws.onopen = () => ws.send(JSON.stringify({type: 'auth', token}));
        ws.onmessage = ev => {
            let f;
            try {
                f = JSON.parse(ev.data);
            } catch {
                return;
            }
            this.armPong();
            if (f.type === 'ready') {
                this.attempt = 0;
                this.setState('online');
                this.startPing();
                this.onReady(f.user);
            } else if (f.type !== 'pong') {
                this.onFrame(f);
            }
        };
        ws.onclose = ev => {
            if (this.ws !== ws)
                return;
            this.ws = null;
            this.clearPing();
            if (this.stopped)
                return;
            if (ev.code === 4001) {
                /* Token refused: refresh once; if the session is gone, sign out. */
                refresh().then(() => this.retry(), e => {
                    if (e.status === 401) {
                        this.stopped = true;
                        this.onAuthFailed();
                    } else {
                        this.retry();
                    }
                });
                return;
            }
            this.retry();
        };
        ws.onerror = () => {
            /* onclose follows */
        };
    }

    retry()
    {
        if (this.stopped)
            return;
        const base = Math.min(BACKOFF_MAX, 500 * 2 ** this.attempt);
        const wait = Math.round(base * (0.8 + Math.random() * 0.4));
        this.attempt++;
        this.setState('offline', {retryAt: Date.now() + wait});
        clearTimeout(this.retryTimer);
        this.retryTimer = setTimeout(() => this.open(), wait);
    }

    startPing()
    {
        this.clearPing();
        this.pingTimer = setInterval(() => {
            if (this.ws && this.ws.readyState === WebSocket.OPEN) {
                this.ws.send(JSON.stringify({type: 'ping', id: 'p' + ++this.pingSeq}));
                this.armPong(true);
            }
        }, PING_EVERY);
    }

    /* Any frame proves the link is alive; after a ping, silence means dead. */
    armPong(waiting)
    {
        clearTimeout(this.pongTimer);
        if (waiting)
            this.pongTimer = setTimeout(() => this.drop(), PONG_WAIT);
    }

    /* Gives up on a silent socket at once instead of waiting for TCP. */
    drop()
    {
        const ws = this.ws;
        if (!ws)
            return;
        this.ws = null;
        ws.onclose = null;
        ws.close(4000);
        this.clearPing();
        this.retry();
    }

    clearPing()
    {
        clearInterval(this.pingTimer);
        clearTimeout(this.pongTimer);
    }
}
