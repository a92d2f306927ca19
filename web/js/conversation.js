// The conversation pane: header with presence and typing, the message list
// (older pages load on scroll up, day separators, own message states, edit
// and delete, the bot's proof-of-work badge), the random-chat bar, and the
// composer (Enter sends, Shift+Enter is a new line).
//
// Message elements are cached by key and rebuilt only when what they show
// changed, so a live update does not repaint the whole history.

import {h, icon, iconButton, appendLinkified, avatar, timeOf, dayKey, dayLabel, lastSeenText, toast, popupMenu,
        confirmSheet} from './dom.js';
import {verifyPow} from './pow.js';

const TYPING_EVERY = 3000;

export class ConversationView {
    constructor(client, {onBack, onInfo, onNewRandom})
    {
        this.client = client;
        this.onBack = onBack;
        this.onInfo = onInfo;
        this.onNewRandom = onNewRandom;
        this.chatId = null;
        this.nodes = new Map(); /* key -> {sig, el} */
        this.drafts = new Map();
        this.editing = null; /* {seq, text} */
        this.lastTypingSent = 0;
        this.stickBottom = true;
        this.el = h('section', {class: 'conversation', 'data-testid': 'conversation'});
        this.buildEmpty();
        client.viewing = c => c.id === this.chatId && document.visibilityState === 'visible' && this.atBottom();
        document.addEventListener('visibilitychange', () => this.maybeRead());
        window.addEventListener('focus', () => this.maybeRead());
    }

    buildEmpty()
    {
        this.el.replaceChildren(h('div', {class: 'conv-empty'},
                                  h('div', {class: 'empty-bubble'}, icon('send')),
                                  h('h2', null, 'Select a chat'),
                                  h('p', {class: 'muted'}, 'Pick a conversation on the left, or start a new one.')));
    }

    /** Shows chat `id` (or the empty state for null). */
    show(id)
    {
        if (this.chatId !== null && this.chatId !== id && this.input)
            this.drafts.set(this.chatId, this.input.value);
        this.chatId = id;
        this.nodes.clear();
        this.editing = null;
        const c = id !== null ? this.client.chats.get(id) : null;
        if (!c) {
            this.buildEmpty();
            return;
        }
        this.build(c);
        this.stickBottom = true;
        this.render();
        setTimeout(() => {
            if (window.matchMedia('(pointer: fine)').matches)
                this.input?.focus();
        }, 0);
    }

    build(c)
    {
        this.titleEl = h('div', {class: 'conv-title', 'data-testid': 'conv-title'});
        this.subEl = h('div', {class: 'conv-sub', 'data-testid': 'conv-sub'});
        this.avatarBox = h('div', {class: 'conv-avatar'});
        const head = h('header', {class: 'conv-head'},
                       iconButton('back', 'Back to chats', () => this.onBack(), 'back-btn'),
                       h('button', {class: 'conv-who', type: 'button', onclick: () => this.onInfo(c)}, this.avatarBox,
                         h('div', {class: 'conv-names'}, this.titleEl, this.subEl)),
                       iconButton('more', 'Chat menu', e => this.chatMenu(e.currentTarget), 'chat-menu-btn'));
        this.randomBar = h('div', {class: 'random-bar', hidden: true});
        this.loader = h('div', {class: 'loader-top'}, h('span', {class: 'spinner'}));
        this.list = h('div', {class: 'msg-list', role: 'log', 'aria-live': 'polite', 'data-testid': 'messages'});
        this.scroller = h('div', {class: 'messages'}, this.loader, this.list);
        this.scroller.addEventListener('scroll', () => this.onScroll(), {passive: true});
        this.jump = h('button', {class: 'jump-down', type: 'button', hidden: true, title: 'Jump to latest',
                                 onclick: () => this.scrollToBottom(true)}, icon('back'));
        this.editBar = h('div', {class: 'edit-bar', hidden: true});
        this.input = h('textarea', {class: 'composer-input', rows: 1, placeholder: 'Message',
                                    'aria-label': 'Message', 'data-testid': 'composer', maxlength: 16384});
        this.input.value = this.drafts.get(c.id) || '';
        this.input.addEventListener('keydown', e => this.onKey(e));
        this.input.addEventListener('input', () => this.onInput());
        this.sendBtn = h('button', {class: 'send-btn', type: 'button', title: 'Send', 'aria-label': 'Send',
                                    'data-testid': 'send', onclick: () => this.submit()}, icon('send'));
        this.closedBar = h('div', {class: 'closed-bar', hidden: true});
        this.composer = h('footer', {class: 'composer'}, this.editBar,
                          h('div', {class: 'composer-row'}, this.input, this.sendBtn));
        this.el.replaceChildren(head, this.randomBar,
                                h('div', {class: 'messages-wrap'}, this.scroller, this.jump), this.closedBar,
                                this.composer);
        this.autosize();
    }

    atBottom()
    {
        if (!this.scroller)
            return false;
        const s = this.scroller;
        return s.scrollHeight - s.scrollTop - s.clientHeight < 80;
    }

    scrollToBottom(smooth)
    {
        this.scroller.scrollTo({top: this.scroller.scrollHeight, behavior: smooth ? 'smooth' : 'auto'});
        this.stickBottom = true;
    }

    onScroll()
    {
        const c = this.client.chats.get(this.chatId);
        if (!c)
            return;
        this.stickBottom = this.atBottom();
        this.jump.hidden = this.stickBottom;
        if (this.scroller.scrollTop < 240 && c.hasOlder && c.loaded)
            this.client.loadOlder(c);
        this.maybeRead();
    }

    maybeRead()
    {
        const c = this.client.chats.get(this.chatId);
        if (c && this.client.viewing(c) && c.loaded)
            this.client.markRead(c);
    }

    /* ---- rendering ------------------------------------------------------------------ */

    render()
    {
        const c = this.client.chats.get(this.chatId);
        if (!c) {
            if (this.chatId !== null)
                this.show(null);
            return;
        }
        this.renderHead(c);
        this.renderRandom(c);
        this.renderMessages(c);
    }

    renderHead(c)
    {
        const cl = this.client;
        const title = cl.chatTitle(c);
        this.titleEl.textContent = title;
        const pid = cl.peerId(c);
        const peer = pid ? cl.user(pid) : null;
        const showPeer = c.type === 'direct' || (c.type === 'random' && c.revealed);
        this.avatarBox.replaceChildren(avatar(title, c.type === 'direct' ? pid : c.id,
                                              showPeer ? peer?.avatar_url : null, 'md',
                                              c.type === 'direct' && peer ? !!peer.online : undefined));
        const typing = this.typingNames(c);
        let sub;
        if (typing)
            sub = typing;
        else if (c.type === 'direct')
            sub = peer ? lastSeenText(peer) : '';
        else if (c.type === 'random')
            sub = c.closed ? 'chat ended' : 'anonymous chat';
        else
            sub = `${(c.members || []).length} members` + (c.type === 'channel' ? ' · channel' : '');
        this.subEl.textContent = sub;
        this.subEl.classList.toggle('typing', !!typing);
        this.subEl.classList.toggle('online', !typing && !!peer?.online && c.type === 'direct');
        if (typing)
            this.subEl.dataset.testid = 'typing';
        else
            this.subEl.dataset.testid = 'conv-sub';
    }

    typingNames(c)
    {
        const now = Date.now();
        const names = [];
        for (const [uid, until] of c.typing)
            if (until > now)
                names.push(c.type === 'direct' || c.type === 'random' ? '' : this.client.nameOf(uid));
        if (!names.length)
            return '';
        if (names[0] === '')
            return 'typing…';
        return names.length === 1 ? `${names[0]} is typing…` : `${names.length} people are typing…`;
    }

    renderRandom(c)
    {
        const closed = !!c.closed;
        this.closedBar.hidden = !closed;
        this.composer.hidden = closed;
        if (closed)
            this.closedBar.replaceChildren(h('span', null, 'This chat has ended.'),
                                           c.type === 'random'
                                               ? h('button', {class: 'btn primary small', type: 'button',
                                                              onclick: () => this.onNewRandom()}, 'Find someone new')
                                               : null);
        if (c.type !== 'random') {
            this.randomBar.hidden = true;
            return;
        }
        const p = this.client.partnerOf(c) || {};
        const facts = [p.gender, p.age ? `${p.age}` : null].filter(Boolean).join(' · ');
        this.randomBar.hidden = false;
        this.randomBar.replaceChildren(
            h('div', {class: 'random-who'}, icon('shuffle'),
              h('span', null, 'Anonymous chat with ', h('b', null, this.client.chatTitle(c))),
              facts ? h('span', {class: 'muted'}, ' · ' + facts) : null),
            h('div', {class: 'random-actions'},
              h('button', {class: 'btn small', type: 'button', disabled: closed || c.iRevealed, 'data-testid': 'reveal',
                           onclick: () => this.client.reveal(c).then(
                               () => toast('You agreed to reveal your profile'), e => toast(e.message, 'error'))},
                c.iRevealed ? 'Reveal requested' : 'Reveal'),
              h('button', {class: 'btn small', type: 'button', disabled: closed, 'data-testid': 'next',
                           onclick: () => this.client.nextRandom(c).then(() => this.onNewRandom(true),
                                                                          e => toast(e.message, 'error'))},
                'Next'),
              h('button', {class: 'btn small danger', type: 'button', 'data-testid': 'leave',
                           onclick: () => this.client.leaveRandom(c).catch(e => toast(e.message, 'error'))},
                'Leave')));
    }

    renderMessages(c)
    {
        const cl = this.client;
        const s = this.scroller;
        const wasBottom = this.stickBottom || this.atBottom();
        const prevHeight = s.scrollHeight, prevTop = s.scrollTop;
        const prevFirst = this.list.firstElementChild?.dataset.key;

        this.loader.hidden = !(c.loadingOlder || (!c.loaded && c.loadingLatest !== false));
        if (!c.loaded && !c.loadingLatest)
            this.loader.hidden = true;

        const msgs = [...c.msgs.values()].sort((a, b) => a.seq - b.seq);
        const pending = cl.pendingFor(c.id);
        const items = [];
        let prevDay = null, prevSender = null, prevTs = 0;
        if (c.loaded && !c.hasOlder && msgs.length && msgs[0].seq <= 1)
            items.push(this.node('start', 'start', () => h('div', {class: 'chat-start'}, 'This is the beginning of the chat')));
        const add = (m, pendingEntry) => {
            const ts = m.ts || Date.now();
            const dk = dayKey(ts);
            if (dk !== prevDay) {
                items.push(this.node('d:' + dk, dayLabel(ts), () => h('div', {class: 'day-sep'}, h('span', null, dayLabel(ts)))));
                prevDay = dk;
                prevSender = null;
            }
            const grouped = prevSender === m.sender_id && ts - prevTs < 5 * 60000;
            prevSender = m.sender_id;
            prevTs = ts;
            items.push(pendingEntry ? this.pendingNode(c, pendingEntry, grouped) : this.messageNode(c, m, grouped));
        };
        for (const m of msgs)
            add(m, null);
        for (const e of pending)
            add({sender_id: cl.me.id, ts: e.ts, text: e.text}, e);
        if (c.loaded && !msgs.length && !pending.length)
            items.push(this.node('empty', 'empty', () => h('div', {class: 'chat-start'}, 'No messages yet. Say hello!')));

        this.list.replaceChildren(...items);

        if (wasBottom) {
            s.scrollTop = s.scrollHeight;
        } else if (prevFirst && this.list.firstElementChild?.dataset.key !== prevFirst) {
            s.scrollTop = prevTop + (s.scrollHeight - prevHeight);
        }
        this.jump.hidden = this.atBottom();
        /* A short history that does not fill the pane: fetch more. */
        if (c.loaded && c.hasOlder && s.scrollHeight <= s.clientHeight + 10)
            cl.loadOlder(c);
        this.maybeRead();
    }

    node(key, sig, build)
    {
        const old = this.nodes.get(key);
        if (old && old.sig === sig)
            return old.el;
        const el = build();
        el.dataset.key = key;
        this.nodes.set(key, {sig, el});
        return el;
    }

    messageNode(c, m, grouped)
    {
        const cl = this.client;
        const mine = m.sender_id === cl.me.id;
        const state = mine ? cl.stateOf(c, m.seq) : '';
        const showName = !mine && !grouped && c.type !== 'direct' && c.type !== 'random';
        const name = showName ? cl.nameOf(m.sender_id) : '';
        const sig = JSON.stringify([m.text, m.edited_at, m.deleted, state, showName, name, grouped, !!m.pow]);
        return this.node('s:' + m.seq, sig, () => {
            const text = h('div', {class: 'text', 'data-testid': 'msg-text'});
            if (m.deleted)
                text.append(h('i', {class: 'muted'}, 'Message deleted'));
            else
                appendLinkified(text, m.text || '');
            const meta = h('span', {class: 'meta'}, m.edited_at && !m.deleted ? h('span', {class: 'edited'}, 'edited') : null,
                           h('time', {datetime: new Date(m.ts).toISOString(), title: new Date(m.ts).toLocaleString()},
                             timeOf(m.ts)),
                           mine ? statusIcon(state) : null);
            const bubble = h('div', {class: 'bubble'},
                             showName ? h('div', {class: 'sender', 'data-hue': String(m.sender_id % 8)}, name) : null,
                             text, m.pow && !m.deleted ? this.powBox(m) : null, meta);
            const row = h('div', {class: `msg ${mine ? 'out' : 'in'}${grouped ? ' grouped' : ''}${m.deleted ? ' deleted' : ''}`,
                                  'data-testid': 'msg', 'data-seq': String(m.seq), 'data-state': state || 'in'},
                          bubble);
            if (!m.deleted) {
                const btn = iconButton('more', 'Message actions', () => this.messageMenu(btn, c, m), 'msg-menu');
                row.appendChild(btn);
                /* Right click, or a long press on touch screens. */
                bubble.addEventListener('contextmenu', e => {
                    if (window.getSelection()?.toString())
                        return;
                    e.preventDefault();
                    this.messageMenu(bubble, c, m);
                });
            }
            return row;
        });
    }

    pendingNode(c, e, grouped)
    {
        const failed = !!e.failed;
        const sig = JSON.stringify([e.text, failed, grouped]);
        return this.node('p:' + e.client_id, sig, () => {
            const text = h('div', {class: 'text', 'data-testid': 'msg-text'});
            appendLinkified(text, e.text);
            const meta = h('span', {class: 'meta'}, timeOf(e.ts), statusIcon(failed ? 'failed' : 'sending'));
            const row = h('div', {class: `msg out pending${grouped ? ' grouped' : ''}${failed ? ' failed' : ''}`,
                                  'data-testid': 'msg', 'data-state': failed ? 'failed' : 'sending'},
                          h('div', {class: 'bubble'}, text, meta));
            if (failed)
                row.appendChild(h('div', {class: 'failed-note'}, `Not sent: ${e.failed} `,
                                  h('button', {class: 'link-btn', type: 'button',
                                               onclick: () => this.client.retrySend(e.client_id)}, 'Retry'),
                                  ' · ',
                                  h('button', {class: 'link-btn', type: 'button',
                                               onclick: () => this.client.discardSend(e.client_id)}, 'Discard')));
            return row;
        });
    }

    powBox(m)
    {
        const p = m.pow;
        const status = h('span', {class: 'pow-status checking', 'data-testid': 'pow-status'}, 'verifying…');
        const box = h('div', {class: 'pow', 'data-testid': 'pow'},
                      h('div', {class: 'pow-head'}, icon('shield'), h('span', null, 'Proof of work'), status),
                      h('dl', null, h('dt', null, 'bits'), h('dd', null, String(p.bits)),
                        h('dt', null, 'nonce'), h('dd', null, String(p.nonce)),
                        h('dt', null, 'hash'), h('dd', {class: 'hash', title: String(p.hash)}, String(p.hash))));
        verifyPow(m).then(r => {
            status.classList.remove('checking');
            status.classList.add(r.ok ? 'ok' : 'bad');
            status.textContent = r.ok ? '✓ verified' : `✗ ${r.reason}`;
            box.dataset.verified = r.ok ? 'yes' : 'no';
        });
        return box;
    }

    /* ---- menus ------------------------------------------------------------------------ */

    messageMenu(anchor, c, m)
    {
        const mine = m.sender_id === this.client.me.id;
        const items = [{label: 'Copy text', icon: 'copy', run: () => navigator.clipboard?.writeText(m.text).then(
                                                                  () => toast('Copied'), () => toast('Copy failed', 'error'))}];
        if (mine) {
            items.push({label: 'Edit', icon: 'edit', testid: 'msg-edit', run: () => this.startEdit(m)});
            items.push({label: 'Delete', icon: 'trash', danger: true, testid: 'msg-delete', run: async () => {
                            if (await confirmSheet('Delete message', 'Delete this message for everyone?', 'Delete', true))
                                this.client.deleteMessage(c, m.seq).catch(e => toast(e.message, 'error'));
                        }});
        }
        popupMenu(anchor, items);
    }

    chatMenu(anchor)
    {
        const c = this.client.chats.get(this.chatId);
        if (!c)
            return;
        const items = [{label: 'Chat info', icon: 'info', run: () => this.onInfo(c)},
                       {label: 'Export history', icon: 'download', run: () => this.exportChat(c)}];
        if (c.type === 'group' || c.type === 'channel')
            items.push({label: 'Leave chat', icon: 'logout', danger: true, run: async () => {
                            if (await confirmSheet('Leave chat', `Leave “${this.client.chatTitle(c)}”?`, 'Leave', true))
                                this.client.removeMember(c, this.client.me.id).catch(e => toast(e.message, 'error'));
                        }});
        popupMenu(anchor, items);
    }

    async exportChat(c)
    {
        try {
            const text = await this.client.exportChat(c);
            const url = URL.createObjectURL(new Blob([text], {type: 'application/jsonl'}));
            const a = h('a', {href: url, download: `natter-chat-${c.id}.jsonl`});
            document.body.appendChild(a);
            a.click();
            a.remove();
            setTimeout(() => URL.revokeObjectURL(url), 5000);
        } catch (e) {
            toast(e.message, 'error');
        }
    }

    /* ---- composing ---------------------------------------------------------------------- */

    startEdit(m)
    {
        this.editing = {seq: m.seq, before: this.input.value};
        this.editBar.hidden = false;
        this.editBar.replaceChildren(icon('edit'), h('div', {class: 'edit-what'}, h('b', null, 'Edit message'),
                                                     h('span', {class: 'muted'}, m.text)),
                                     iconButton('close', 'Cancel edit', () => this.cancelEdit()));
        this.input.value = m.text;
        this.autosize();
        this.input.focus();
    }

    cancelEdit()
    {
        if (!this.editing)
            return;
        this.input.value = this.editing.before || '';
        this.editing = null;
        this.editBar.hidden = true;
        this.autosize();
    }

    onKey(e)
    {
        if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
            e.preventDefault();
            this.submit();
        } else if (e.key === 'Escape' && this.editing) {
            e.preventDefault();
            this.cancelEdit();
        }
    }

    onInput()
    {
        this.autosize();
        const now = Date.now();
        if (this.input.value && now - this.lastTypingSent > TYPING_EVERY && !this.editing) {
            this.lastTypingSent = now;
            this.client.sendTyping(this.chatId);
        }
    }

    autosize()
    {
        const t = this.input;
        t.style.height = 'auto';
        t.style.height = Math.min(t.scrollHeight, 180) + 'px';
        this.sendBtn.classList.toggle('ready', t.value.trim().length > 0);
    }

    submit()
    {
        const c = this.client.chats.get(this.chatId);
        const text = this.input.value.replace(/^\s*\n|\s+$/g, '');
        if (!c || !text.trim())
            return;
        if ([...text].length > 4096) {
            toast('A message can have at most 4096 characters', 'error');
            return;
        }
        if (this.editing) {
            const seq = this.editing.seq;
            const before = this.editing.before;
            this.editing = null;
            this.editBar.hidden = true;
            this.input.value = before || '';
            this.autosize();
            this.client.editMessage(c, seq, text).catch(e => toast(e.message, 'error'));
            return;
        }
        this.input.value = '';
        this.drafts.delete(c.id);
        this.autosize();
        this.lastTypingSent = 0;
        this.stickBottom = true;
        this.client.send(c.id, text);
        this.scrollToBottom(false);
    }
}

function statusIcon(state)
{
    const names = {sending: 'clock', sent: 'check', delivered: 'checks', read: 'checks', failed: 'alert'};
    const labels = {sending: 'Sending', sent: 'Sent', delivered: 'Delivered', read: 'Read', failed: 'Not sent'};
    const el = h('span', {class: `status status-${state}`, title: labels[state], 'aria-label': labels[state],
                          'data-testid': 'msg-status'}, icon(names[state] || 'check'));
    return el;
}
