// The left pane: who I am, the connection state, search (chats by title and
// people by nickname prefix) and the chat list, most recent first, with last
// message, unread badge and presence dot.

import {h, icon, iconButton, avatar, shortStamp} from './dom.js';

export class Sidebar {
    constructor(client, {onOpen, onMenu, onCompose, onStartDirect})
    {
        this.client = client;
        this.onOpen = onOpen;
        this.onStartDirect = onStartDirect;
        this.query = '';
        this.people = [];
        this.searchSeq = 0;
        this.search = h('input', {class: 'search-input', type: 'search', placeholder: 'Search chats and people',
                                  'aria-label': 'Search', 'data-testid': 'search'});
        this.search.addEventListener('input', () => this.onSearch());
        this.search.addEventListener('keydown', e => {
            if (e.key === 'Escape') {
                this.search.value = '';
                this.onSearch();
            }
        });
        this.banner = h('div', {class: 'conn-banner', 'data-testid': 'conn-banner', hidden: true});
        this.list = h('div', {class: 'chat-list', role: 'list', 'data-testid': 'chat-list'});
        this.el = h('aside', {class: 'sidebar'},
                    h('header', {class: 'side-head'},
                      iconButton('menu', 'Menu', e => onMenu(e.currentTarget), 'main-menu-btn'),
                      h('div', {class: 'search-box'}, icon('search'), this.search),
                      iconButton('edit', 'New chat', e => onCompose(e.currentTarget), 'compose-btn')),
                    this.banner, this.list);
        this.bannerTimer = 0;
    }

    onSearch()
    {
        this.query = this.search.value.trim();
        const q = this.query.replace(/^@/, '');
        const seq = ++this.searchSeq;
        this.people = [];
        this.render();
        if (q.length >= 1 && /^[A-Za-z0-9_.-]+$/.test(q)) {
            clearTimeout(this.searchTimer);
            this.searchTimer = setTimeout(() => {
                this.client.searchUsers(q).then(users => {
                    if (seq !== this.searchSeq)
                        return;
                    this.people = users.filter(u => u.id !== this.client.me.id);
                    this.render();
                }, () => {});
            }, 150);
        }
    }

    renderBanner()
    {
        const cl = this.client;
        clearTimeout(this.bannerTimer);
        document.body.dataset.conn = cl.connState;
        if (cl.connState === 'online') {
            this.banner.hidden = true;
            return;
        }
        this.banner.hidden = false;
        this.banner.dataset.state = cl.connState;
        if (cl.connState === 'connecting') {
            this.banner.replaceChildren(h('span', {class: 'spinner small'}), 'Connecting…');
        } else {
            const left = Math.max(0, Math.ceil(((cl.connInfo.retryAt || 0) - Date.now()) / 1000));
            const pending = cl.outbox.length;
            this.banner.replaceChildren(icon('alert'), h('span', null,
                                                         `Offline. Reconnecting${left ? ` in ${left}s` : '…'}` +
                                                             (pending ? ` · ${pending} waiting to send` : '')),
                                        h('button', {class: 'link-btn', type: 'button',
                                                     onclick: () => cl.conn.reconnectNow()}, 'Retry now'));
            if (left > 0)
                this.bannerTimer = setTimeout(() => this.renderBanner(), 1000);
        }
    }

    render()
    {
        const cl = this.client;
        const q = this.query.toLowerCase();
        let chats = cl.sortedChats();
        if (q)
            chats = chats.filter(c => cl.chatTitle(c).toLowerCase().includes(q.replace(/^@/, '')));
        const rows = chats.map(c => this.row(c));
        if (q) {
            const directPeers = new Set(chats.map(c => c.type === 'direct' && cl.peerId(c)).filter(Boolean));
            const people = this.people.filter(u => !directPeers.has(u.id));
            if (people.length) {
                rows.push(h('div', {class: 'list-label'}, 'People'));
                for (const u of people)
                    rows.push(h('button', {class: 'chat-item', type: 'button', role: 'listitem', 'data-testid': 'person-item',
                                           'data-nickname': u.nickname,
                                           onclick: () => {
                                               this.search.value = '';
                                               this.onSearch();
                                               this.onStartDirect(u);
                                           }},
                                  avatar(u.nickname, u.id, u.avatar_url, 'md', !!u.online),
                                  h('div', {class: 'ci-main'}, h('div', {class: 'ci-top'}, h('span', {class: 'ci-title'}, u.nickname)),
                                    h('div', {class: 'ci-bottom'}, h('span', {class: 'ci-last'}, u.bio || '@' + u.nickname)))));
            }
            if (!rows.length)
                rows.push(h('div', {class: 'list-empty'}, 'Nothing found'));
        } else if (!rows.length && cl.listLoaded) {
            rows.push(h('div', {class: 'list-empty'}, 'No chats yet. Search for someone to start one.'));
        }
        this.list.replaceChildren(...rows);
    }

    row(c)
    {
        const cl = this.client;
        const title = cl.chatTitle(c);
        const pid = cl.peerId(c);
        const peer = pid ? cl.users.get(pid) : null;
        const lm = c.last_message;
        const pending = cl.pendingFor(c.id);
        const typing = [...c.typing.values()].some(t => t > Date.now());
        let last;
        if (typing) {
            last = h('span', {class: 'ci-last typing'}, 'typing…');
        } else if (pending.length) {
            last = h('span', {class: 'ci-last'}, h('span', {class: 'ci-you'}, 'You: '), pending[pending.length - 1].text);
        } else if (lm) {
            const who = lm.sender_id === cl.me.id ? 'You: '
                        : (c.type === 'group' || c.type === 'channel') ? cl.nameOf(lm.sender_id) + ': ' : '';
            last = h('span', {class: 'ci-last'}, who ? h('span', {class: 'ci-you'}, who) : null,
                     lm.deleted ? h('i', null, 'Message deleted') : firstLine(lm.text));
        } else {
            last = h('span', {class: 'ci-last muted'}, c.type === 'channel' ? 'Channel' : 'No messages yet');
        }
        let side = null;
        if (c.unread > 0)
            side = h('span', {class: 'badge' + (c.type === 'channel' ? ' muted-badge' : ''), 'data-testid': 'unread'},
                     c.unread > 999 ? '999+' : String(c.unread));
        else if (pending.length)
            side = icon('clock', 'ci-state');
        else if (lm && lm.sender_id === cl.me.id && !lm.deleted) {
            const st = cl.stateOf(c, lm.seq);
            side = icon(st === 'sent' ? 'check' : 'checks', 'ci-state ' + st);
        }
        const ts = pending.length ? pending[pending.length - 1].ts : lm ? lm.ts : null;
        const kindIcon = c.type === 'group' ? icon('group', 'ci-kind') : c.type === 'channel' ? icon('channel', 'ci-kind')
                       : c.type === 'random' ? icon('shuffle', 'ci-kind') : null;
        const showPeer = c.type === 'direct' || (c.type === 'random' && c.revealed);
        return h('button', {class: 'chat-item' + (c.id === cl.openChatId ? ' active' : '') + (c.closed ? ' closed' : ''),
                            type: 'button', role: 'listitem', 'data-testid': 'chat-item', 'data-chat-id': String(c.id),
                            'data-title': title, onclick: () => this.onOpen(c.id)},
                 avatar(title, c.type === 'direct' ? pid : c.id, showPeer ? peer?.avatar_url : null, 'md',
                        c.type === 'direct' && peer ? !!peer.online : undefined),
                 h('div', {class: 'ci-main'},
                   h('div', {class: 'ci-top'}, kindIcon, h('span', {class: 'ci-title'}, title),
                     ts ? h('span', {class: 'ci-time'}, shortStamp(ts)) : null),
                   h('div', {class: 'ci-bottom'}, last, side)));
    }
}

function firstLine(text)
{
    const t = (text || '').split('\n')[0];
    return t.length > 120 ? t.slice(0, 120) + '…' : t;
}
