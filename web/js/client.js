// The client's state and everything that changes it: chats, messages, users,
// the outbox, friends and matching. Views read this state and listen for
// `change` events (detail: {kind, chatId}); they never talk to the server
// themselves except through the methods here.
//
// Delivery rules that keep messages from being lost or doubled:
// - Every message typed goes first into the outbox (localStorage, per user)
//   with a client_id made here. It is sent over the WebSocket whenever the
//   connection is live and taken out only by its ack (or by the same message
//   coming back as an event or in history). After a reconnect the whole
//   outbox is sent again with the same client_ids; the server answers a
//   repeated client_id with the first message, so nothing is doubled.
// - After every `ready`, the chat list is reloaded and every chat whose
//   history is in memory is caught up with after_seq. A live message whose
//   seq leaves a gap triggers the same catch-up for its chat.

import {api, ApiError, setSessionUser} from './api.js';
import {Connection} from './conn.js';

const PAGE = 50;
const CATCHUP_PAGE = 200;
const TYPING_SHOWN = 6000;
const RETRY_CODES = new Set(['rate_limited', 'unavailable', 'internal']);

function randomId()
{
    const b = new Uint8Array(16);
    crypto.getRandomValues(b);
    return [...b].map(x => x.toString(16).padStart(2, '0')).join('');
}

function loadJSON(key, fallback)
{
    try {
        const v = JSON.parse(localStorage.getItem(key) || 'null');
        return v ?? fallback;
    } catch {
        return fallback;
    }
}

export class Client extends EventTarget {
    constructor(session, {onSignedOut})
    {
        super();
        this.me = session.user;
        this.onSignedOut = onSignedOut;
        this.chats = new Map();
        this.users = new Map([[this.me.id, this.me]]);
        this.userFetches = new Map();
        this.outboxKey = 'natter.outbox.' + this.me.id;
        this.partnersKey = 'natter.partners.' + this.me.id;
        this.outbox = loadJSON(this.outboxKey, []);
        this.partners = loadJSON(this.partnersKey, {});
        this.inflight = new Set();
        this.openChatId = null;
        this.listLoaded = false;
        this.connState = 'offline';
        this.connInfo = {};
        this.matchState = 'idle';
        this.catchingUp = null;
        this.viewing = () => false; /* set by the conversation view */
        this.conn = new Connection({
            onFrame: f => this.onFrame(f),
            onReady: user => this.onReady(user),
            onState: (s, info) => {
                this.connState = s;
                this.connInfo = info;
                if (s !== 'online')
                    this.inflight.clear();
                this.emit('conn');
            },
            onAuthFailed: () => this.onSignedOut(),
        });
    }

    emit(kind, chatId)
    {
        this.dispatchEvent(new CustomEvent('change', {detail: {kind, chatId}}));
    }

    start()
    {
        this.loadChatList().catch(() => {});
        this.conn.start();
    }

    stop()
    {
        this.conn.stop();
    }

    /* ---- users ----------------------------------------------------------------- */

    /** The cached user, fetching it in the background when unknown. */
    user(id)
    {
        const u = this.users.get(id);
        if (!u && id > 0 && !this.userFetches.has(id)) {
            const p = api('GET', `/users/${id}`).then(user => {
                this.users.set(id, user);
                this.emit('users');
            }, () => {}).finally(() => this.userFetches.delete(id));
            this.userFetches.set(id, p);
        }
        return u;
    }

    nameOf(id)
    {
        if (id === this.me.id)
            return this.me.nickname;
        return this.user(id)?.nickname || `user ${id}`;
    }

    rememberUsers(list)
    {
        for (const u of list || [])
            if (u && u.id)
                this.users.set(u.id, {...this.users.get(u.id), ...u});
    }

    async updateProfile(fields)
    {
        const u = await api('PATCH', '/users/me', fields);
        this.me = {...this.me, ...u};
        this.users.set(u.id, this.me);
        setSessionUser(this.me);
        this.emit('users');
        return this.me;
    }

    searchUsers(q)
    {
        return api('GET', `/users?q=${encodeURIComponent(q)}&limit=20`).then(r => {
            this.rememberUsers(r.users);
            return r.users;
        });
    }

    async userByNickname(nick)
    {
        const u = await api('GET', `/users/by-nickname/${encodeURIComponent(nick)}`);
        this.rememberUsers([u]);
        return u;
    }

    /* ---- chats ----------------------------------------------------------------- */

    /** The other member of a direct chat (its id), or 0. */
    peerId(c)
    {
        if (!c || (c.type !== 'direct' && c.type !== 'random'))
            return 0;
        const m = (c.members || []).find(m => m.user_id !== this.me.id);
        return m ? m.user_id : 0;
    }

    partnerOf(c)
    {
        return this.partners[c.id] || null;
    }

    chatTitle(c)
    {
        if (c.type === 'direct') {
            const pid = this.peerId(c);
            return pid ? this.nameOf(pid) : 'Saved messages';
        }
        if (c.type === 'random') {
            const m = (c.members || []).find(m => m.user_id !== this.me.id);
            if (m && m.alias)
                return m.alias;
            const p = this.partnerOf(c);
            if (p && p.alias && !c.revealed)
                return p.alias;
            return c.title || (m && this.users.get(m.user_id)?.nickname) || p?.alias || 'Stranger';
        }
        return c.title || `${c.type} ${c.id}`;
    }

    /** Chats, most recent activity first. */
    sortedChats()
    {
        const act = c => Math.max(c.last_message?.ts || 0, c.created_at || 0, c.localActivity || 0);
        return [...this.chats.values()].sort((a, b) => act(b) - act(a) || b.id - a.id);
    }

    totalUnread()
    {
        let n = 0;
        for (const c of this.chats.values())
            n += c.unread || 0;
        return n;
    }

    upsertChat(sc)
    {
        let c = this.chats.get(sc.id);
        if (!c) {
            c = {msgs: new Map(), loaded: false, hasOlder: true, loadingOlder: false, typing: new Map()};
            this.chats.set(sc.id, c);
        }
        const lm = c.last_message;
        /* Markers only move forward: a listing fetched before our own read
         * (or a receipt) landed must not move them back, nor bring back an
         * unread badge the user already cleared. */
        const known = new Map((c.members || []).map(m => [m.user_id, m]));
        Object.assign(c, sc);
        /* A live message newer than the listing wins. */
        if (lm && (!sc.last_message || lm.seq > sc.last_message.seq)) {
            c.last_message = lm;
            c.last_seq = Math.max(sc.last_seq || 0, lm.seq);
        }
        c.members = (sc.members || c.members || []).map(m => {
            const k = known.get(m.user_id);
            return k ? {...m, delivered_seq: Math.max(m.delivered_seq || 0, k.delivered_seq || 0),
                       read_seq: Math.max(m.read_seq || 0, k.read_seq || 0)}
                     : m;
        });
        const mine = this.myMember(c);
        if (mine && (mine.read_seq || 0) >= (c.last_seq || 0))
            c.unread = 0;
        for (const m of c.members)
            if (m.user_id !== this.me.id && (c.type === 'direct' || c.type === 'random'))
                this.user(m.user_id);
        if (c.last_message)
            this.user(c.last_message.sender_id);
        return c;
    }

    async loadChatList()
    {
        const {chats} = await api('GET', '/chats');
        const seen = new Set();
        for (const sc of chats) {
            seen.add(sc.id);
            this.upsertChat(sc);
        }
        for (const id of [...this.chats.keys()])
            if (!seen.has(id))
                this.chats.delete(id);
        this.listLoaded = true;
        this.emit('chats');
    }

    async fetchChat(id)
    {
        const sc = await api('GET', `/chats/${id}`);
        const c = this.upsertChat(sc);
        this.emit('chats');
        return c;
    }

    /** A chat as the server shows it, without joining it (channels are public). */
    fetchChatPublic(id)
    {
        return api('GET', `/chats/${id}`);
    }

    maxSeq(c)
    {
        let s = 0;
        for (const k of c.msgs.keys())
            if (k > s)
                s = k;
        return s;
    }

    minSeq(c)
    {
        let s = Infinity;
        for (const k of c.msgs.keys())
            if (k < s)
                s = k;
        return s === Infinity ? 0 : s;
    }

    /** Puts a message into its chat; returns true if its seq was new. */
    addMessage(m)
    {
        const c = this.chats.get(m.chat_id);
        if (!c)
            return false;
        const isNew = m.seq > (c.last_seq || 0) && !c.msgs.has(m.seq);
        const old = c.msgs.get(m.seq);
        c.msgs.set(m.seq, old ? {...old, ...m} : m);
        if (!c.last_message || m.seq >= c.last_message.seq)
            c.last_message = c.msgs.get(m.seq);
        if (m.seq > (c.last_seq || 0))
            c.last_seq = m.seq;
        if (m.sender_id === this.me.id && m.client_id)
            this.dropFromOutbox(m.client_id);
        else
            this.user(m.sender_id);
        return isNew;
    }

    openChat(id)
    {
        this.openChatId = id;
        const c = this.chats.get(id);
        if (c && !c.loaded)
            this.loadLatest(c);
        this.emit('open', id);
    }

    async loadLatest(c)
    {
        if (c.loadingLatest)
            return;
        c.loadingLatest = true;
        try {
            const {messages} = await api('GET', `/chats/${c.id}/messages?limit=${PAGE}`);
            const live = [...c.msgs.values()];
            c.msgs = new Map();
            for (const m of messages)
                c.msgs.set(m.seq, m);
            const top = messages.length ? messages[messages.length - 1].seq : 0;
            for (const m of live)
                if (m.seq > top)
                    c.msgs.set(m.seq, m);
            c.hasOlder = messages.length === PAGE && messages[0].seq > 1;
            c.loaded = true;
            for (const m of messages)
                this.user(m.sender_id);
            /* Live messages may have arrived with a gap above the page. */
            if (c.last_seq > this.maxSeq(c))
                await this.fetchAfter(c);
        } catch (e) {
            this.emit('error', e);
        } finally {
            c.loadingLatest = false;
        }
        this.emit('messages', c.id);
    }

    async loadOlder(c)
    {
        if (!c.loaded || !c.hasOlder || c.loadingOlder)
            return;
        c.loadingOlder = true;
        this.emit('messages', c.id);
        try {
            const before = this.minSeq(c);
            const {messages} = await api('GET', `/chats/${c.id}/messages?before_seq=${before}&limit=${PAGE}`);
            for (const m of messages) {
                c.msgs.set(m.seq, m);
                this.user(m.sender_id);
            }
            c.hasOlder = messages.length === PAGE && messages[0].seq > 1;
            c.olderLoadedAt = Date.now();
        } catch (e) {
            this.emit('error', e);
        } finally {
            c.loadingOlder = false;
        }
        this.emit('messages', c.id);
    }

    /** Reads everything after the newest message in memory. */
    async fetchAfter(c)
    {
        for (;;) {
            const after = this.maxSeq(c);
            const {messages} = await api('GET', `/chats/${c.id}/messages?after_seq=${after}&limit=${CATCHUP_PAGE}`);
            for (const m of messages)
                this.addMessage(m);
            if (messages.length < CATCHUP_PAGE)
                break;
        }
        this.emit('messages', c.id);
    }

    /**
     * Fetches the messages missing between those in memory. A gap appears
     * when an ack or a live message overtakes one this connection never
     * saw (it was stored while this device was reconnecting).
     */
    async fillGaps(c)
    {
        if (!c.loaded || c.fillingGaps)
            return;
        c.fillingGaps = true;
        let changed = false;
        try {
            const seqs = [...c.msgs.keys()].sort((x, y) => x - y);
            for (let i = 1; i < seqs.length; i++) {
                let after = seqs[i - 1];
                while (after < seqs[i] - 1) {
                    const {messages} = await api('GET', `/chats/${c.id}/messages?after_seq=${after}&before_seq=${seqs[i]}&limit=${CATCHUP_PAGE}`);
                    if (!messages.length)
                        break;
                    for (const m of messages)
                        this.addMessage(m);
                    changed = true;
                    after = messages[messages.length - 1].seq;
                }
            }
        } catch {
            /* the next catch-up tries again */
        } finally {
            c.fillingGaps = false;
        }
        if (changed)
            this.emit('messages', c.id);
    }

    /* ---- the live connection ------------------------------------------------------ */

    onReady(user)
    {
        if (user && user.id === this.me.id) {
            this.me = {...this.me, ...user};
            this.users.set(user.id, this.me);
        }
        this.flushOutbox();
        this.catchUp();
    }

    catchUp()
    {
        if (this.catchingUp)
            return this.catchingUp;
        this.catchingUp = (async () => {
            try {
                await this.loadChatList();
                for (const c of this.chats.values()) {
                    if (c.loaded && c.last_seq > this.maxSeq(c))
                        await this.fetchAfter(c);
                    await this.fillGaps(c);
                    this.ackDelivered(c);
                }
                const open = this.chats.get(this.openChatId);
                if (open && !open.loaded)
                    this.loadLatest(open);
                if (open && this.viewing(open))
                    this.markRead(open);
            } catch (e) {
                if (!(e instanceof ApiError && e.status === 0))
                    console.warn('catch-up failed', e);
            } finally {
                this.catchingUp = null;
                this.emit('chats');
            }
        })();
        return this.catchingUp;
    }

    async onFrame(f)
    {
        switch (f.type) {
        case 'ack':
            this.onAck(f);
            break;
        case 'error':
            this.onError(f);
            break;
        case 'message':
            await this.onMessage(f.message);
            break;
        case 'message_edited':
        case 'message_deleted': {
            const m = f.message;
            const c = this.chats.get(m.chat_id);
            if (!c)
                break;
            if (c.msgs.has(m.seq))
                c.msgs.set(m.seq, {...c.msgs.get(m.seq), ...m});
            if (c.last_message && c.last_message.seq === m.seq)
                c.last_message = {...c.last_message, ...m};
            this.emit('messages', c.id);
            this.emit('chats');
            break;
        }
        case 'receipt':
            this.onReceipt(f);
            break;
        case 'typing': {
            const c = this.chats.get(f.chat_id);
            if (!c || f.user_id === this.me.id)
                break;
            c.typing.set(f.user_id, Date.now() + TYPING_SHOWN);
            this.user(f.user_id);
            this.emit('typing', c.id);
            setTimeout(() => this.emit('typing', c.id), TYPING_SHOWN + 50);
            break;
        }
        case 'presence': {
            const u = this.users.get(f.user_id);
            if (u) {
                u.online = !!f.online;
                if (f.last_seen !== undefined)
                    u.last_seen = f.last_seen;
            } else {
                this.user(f.user_id);
            }
            this.emit('users');
            break;
        }
        case 'chat':
            if (f.chat) {
                const c = this.upsertChat(f.chat);
                if (c.type === 'random' && (c.members || []).every(m => !m.alias))
                    c.revealed = c.revealed || false;
                this.emit('chats');
                this.emit('messages', c.id);
            }
            break;
        case 'chat_closed': {
            const c = this.chats.get(f.chat_id);
            if (c) {
                c.closed = true;
                this.emit('chats');
                this.emit('messages', c.id);
            }
            break;
        }
        case 'friend_request':
            if (f.user)
                this.rememberUsers([f.user]);
            this.emit('friends');
            this.emit('notice', `${f.user?.nickname || 'Someone'} sent you a friend request`);
            break;
        case 'friend':
            if (f.user)
                this.rememberUsers([f.user]);
            this.emit('friends');
            break;
        case 'matched':
            if (f.chat) {
                this.partners[f.chat.id] = f.partner || {};
                localStorage.setItem(this.partnersKey, JSON.stringify(this.partners));
                const c = this.upsertChat(f.chat);
                c.localActivity = Date.now();
                this.matchState = 'idle';
                this.emit('chats');
                this.emit('match', c.id);
            }
            break;
        default:
            break;
        }
    }

    async onMessage(m)
    {
        let c = this.chats.get(m.chat_id);
        if (!c) {
            try {
                c = await this.fetchChat(m.chat_id);
            } catch {
                return;
            }
        }
        const isNew = this.addMessage(m);
        this.fillGaps(c);
        c.typing.delete(m.sender_id);
        if (m.sender_id !== this.me.id && isNew) {
            if (this.viewing(c))
                this.markRead(c);
            else
                c.unread = (c.unread || 0) + 1;
            if (c.type !== 'channel')
                this.conn.send({type: 'delivered', chat_id: c.id, seq: m.seq});
            this.emit('incoming', c.id);
        }
        this.emit('messages', c.id);
        this.emit('chats');
    }

    onReceipt(f)
    {
        const c = this.chats.get(f.chat_id);
        if (!c)
            return;
        let m = (c.members || []).find(x => x.user_id === f.user_id);
        if (!m) {
            m = {user_id: f.user_id, role: 'member', delivered_seq: 0, read_seq: 0};
            c.members = [...(c.members || []), m];
        }
        m.delivered_seq = Math.max(m.delivered_seq || 0, f.delivered_seq || 0);
        m.read_seq = Math.max(m.read_seq || 0, f.read_seq || 0);
        if (f.user_id === this.me.id && m.read_seq >= (c.last_seq || 0))
            c.unread = 0;
        this.emit('messages', c.id);
        this.emit('chats');
    }

    /** Message state of my message with this seq: sent, delivered or read. */
    stateOf(c, seq)
    {
        let st = 'sent';
        for (const m of c.members || []) {
            if (m.user_id === this.me.id)
                continue;
            if ((m.read_seq || 0) >= seq)
                return 'read';
            if ((m.delivered_seq || 0) >= seq)
                st = 'delivered';
        }
        return st;
    }

    myMember(c)
    {
        return (c.members || []).find(m => m.user_id === this.me.id);
    }

    ackDelivered(c)
    {
        if (c.type === 'channel' || !c.last_message || c.last_message.sender_id === this.me.id)
            return;
        const me = this.myMember(c);
        if (me && (me.delivered_seq || 0) < c.last_seq)
            if (this.conn.send({type: 'delivered', chat_id: c.id, seq: c.last_seq}))
                me.delivered_seq = c.last_seq;
    }

    /** Moves my read marker to the newest message of the chat. */
    markRead(c)
    {
        const seq = Math.max(c.last_seq || 0, this.maxSeq(c));
        const me = this.myMember(c);
        const had = c.unread;
        c.unread = 0;
        if (seq <= 0 || (me && (me.read_seq || 0) >= seq)) {
            if (had)
                this.emit('chats');
            return;
        }
        if (!this.conn.send({type: 'read', chat_id: c.id, seq}))
            api('POST', `/chats/${c.id}/read`, {seq}).catch(() => {});
        if (me)
            me.read_seq = seq;
        this.emit('chats');
    }

    sendTyping(chatId)
    {
        this.conn.send({type: 'typing', chat_id: chatId});
    }

    /* ---- sending and the outbox ----------------------------------------------------- */

    saveOutbox()
    {
        localStorage.setItem(this.outboxKey, JSON.stringify(this.outbox));
    }

    pendingFor(chatId)
    {
        return this.outbox.filter(e => e.chat_id === chatId);
    }

    send(chatId, text)
    {
        const e = {client_id: randomId(), chat_id: chatId, text, ts: Date.now()};
        this.outbox.push(e);
        this.saveOutbox();
        const c = this.chats.get(chatId);
        if (c)
            c.localActivity = e.ts;
        this.emit('messages', chatId);
        this.emit('chats');
        this.flushOutbox();
    }

    flushOutbox()
    {
        if (this.connState !== 'online')
            return;
        for (const e of this.outbox) {
            if (e.failed || this.inflight.has(e.client_id))
                continue;
            const frame = {type: 'send', id: 'c:' + e.client_id, chat_id: e.chat_id, text: e.text, client_id: e.client_id};
            if (!this.conn.send(frame))
                break;
            this.inflight.add(e.client_id);
        }
    }

    dropFromOutbox(clientId)
    {
        const i = this.outbox.findIndex(e => e.client_id === clientId);
        this.inflight.delete(clientId);
        if (i < 0)
            return null;
        const [e] = this.outbox.splice(i, 1);
        this.saveOutbox();
        return e;
    }

    onAck(f)
    {
        if (typeof f.id !== 'string' || !f.id.startsWith('c:'))
            return;
        const cid = f.id.slice(2);
        const e = this.dropFromOutbox(cid);
        const c = this.chats.get(f.chat_id);
        if (!c)
            return;
        if (e && !c.msgs.has(f.seq))
            this.addMessage({id: f.message_id, chat_id: f.chat_id, seq: f.seq, sender_id: this.me.id, text: e.text,
                             ts: f.ts, client_id: cid, edited_at: null, deleted: false});
        this.fillGaps(c);
        this.emit('messages', c.id);
        this.emit('chats');
    }

    onError(f)
    {
        if (typeof f.id !== 'string' || !f.id.startsWith('c:')) {
            if (f.code)
                console.warn('server error frame', f.code, f.message);
            return;
        }
        const cid = f.id.slice(2);
        this.inflight.delete(cid);
        const e = this.outbox.find(x => x.client_id === cid);
        if (!e)
            return;
        if (RETRY_CODES.has(f.code)) {
            setTimeout(() => this.flushOutbox(), 3000);
            return;
        }
        e.failed = f.message || f.code || 'not sent';
        this.saveOutbox();
        this.emit('messages', e.chat_id);
        this.emit('error', new ApiError(400, f.code, `Message not sent: ${e.failed}`));
    }

    retrySend(clientId)
    {
        const e = this.outbox.find(x => x.client_id === clientId);
        if (e) {
            delete e.failed;
            this.saveOutbox();
            this.emit('messages', e.chat_id);
            this.flushOutbox();
        }
    }

    discardSend(clientId)
    {
        const e = this.dropFromOutbox(clientId);
        if (e)
            this.emit('messages', e.chat_id);
    }

    async editMessage(c, seq, text)
    {
        const m = await api('PATCH', `/chats/${c.id}/messages/${seq}`, {text});
        if (m && m.seq)
            this.onFrame({type: 'message_edited', message: m});
    }

    async deleteMessage(c, seq)
    {
        await api('DELETE', `/chats/${c.id}/messages/${seq}`);
        const m = c.msgs.get(seq);
        if (m)
            this.onFrame({type: 'message_deleted', message: {...m, deleted: true, text: ''}});
    }

    async exportChat(c)
    {
        return api('GET', `/chats/${c.id}/export`, undefined, {text: true});
    }

    /* ---- creating and joining chats ---------------------------------------------------- */

    async openDirect(userId)
    {
        const sc = await api('POST', '/chats', {type: 'direct', user_id: userId});
        const c = this.upsertChat(sc);
        this.emit('chats');
        return c;
    }

    async createChat(type, title, memberIds)
    {
        const sc = await api('POST', '/chats', {type, title, member_ids: memberIds});
        const c = this.upsertChat(sc);
        c.localActivity = Date.now();
        this.emit('chats');
        return c;
    }

    async joinChannel(id)
    {
        const sc = await api('GET', `/chats/${id}`);
        if (sc.type !== 'channel')
            throw new ApiError(400, 'bad_request', 'that chat is not a channel');
        await api('POST', `/chats/${id}/members`, {user_id: this.me.id});
        return this.fetchChat(id);
    }

    async addMember(c, userId)
    {
        await api('POST', `/chats/${c.id}/members`, {user_id: userId});
        await this.fetchChat(c.id);
    }

    async removeMember(c, userId)
    {
        await api('DELETE', `/chats/${c.id}/members/${userId}`);
        if (userId === this.me.id) {
            this.chats.delete(c.id);
            if (this.openChatId === c.id)
                this.openChatId = null;
            this.emit('chats');
            this.emit('open', null);
        } else {
            await this.fetchChat(c.id);
        }
    }

    /* ---- friends ----------------------------------------------------------------------- */

    async friends()
    {
        const r = await api('GET', '/friends');
        this.rememberUsers([...(r.friends || []), ...(r.incoming || []), ...(r.outgoing || [])]);
        return r;
    }

    friendRequest(nickname)
    {
        return api('POST', '/friends/requests', {nickname}).then(r => (this.emit('friends'), r));
    }

    friendAccept(id)
    {
        return api('POST', `/friends/requests/${id}/accept`).then(r => (this.emit('friends'), r));
    }

    friendReject(id)
    {
        return api('POST', `/friends/requests/${id}/reject`).then(r => (this.emit('friends'), r));
    }

    friendRemove(id)
    {
        return api('DELETE', `/friends/${id}`).then(r => (this.emit('friends'), r));
    }

    block(id)
    {
        return api('POST', `/blocks/${id}`).then(r => (this.emit('friends'), r));
    }

    unblock(id)
    {
        return api('DELETE', `/blocks/${id}`).then(r => (this.emit('friends'), r));
    }

    /* ---- random chats ------------------------------------------------------------------ */

    setPreferences(p)
    {
        return api('PUT', '/match/preferences', p);
    }

    async findMatch()
    {
        this.matchState = 'waiting';
        this.emit('match');
        try {
            await api('POST', '/match');
        } catch (e) {
            this.matchState = 'idle';
            this.emit('match');
            throw e;
        }
    }

    async cancelMatch()
    {
        this.matchState = 'idle';
        this.emit('match');
        await api('DELETE', '/match');
    }

    reveal(c)
    {
        return api('POST', `/chats/${c.id}/reveal`).then(() => {
            c.iRevealed = true;
            this.emit('messages', c.id);
        });
    }

    async leaveRandom(c)
    {
        await this.removeMember(c, this.me.id);
    }

    async nextRandom(c)
    {
        await this.leaveRandom(c);
        await this.findMatch();
    }
}
