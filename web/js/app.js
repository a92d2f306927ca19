// Entry point of the Natter web client: shows the sign-in screen or the
// messenger depending on the session, wires the sidebar, the conversation
// and the sheets to the client state, and keeps the open chat in the URL
// hash (#/chat/ID) so the back button and a reload behave.

import {getSession, onSession, logout} from './api.js';
import {Client} from './client.js';
import {h, toast, popupMenu} from './dom.js';
import {renderAuth} from './auth_view.js';
import {Sidebar} from './sidebar.js';
import {ConversationView} from './conversation.js';
import {newDirectSheet, newGroupSheet, joinChannelSheet, profileSheet, friendsSheet, randomSheet,
        chatInfoSheet} from './panels.js';

const root = document.getElementById('app');
let client = null;
let teardown = null;

function chatFromHash()
{
    const m = location.hash.match(/^#\/chat\/(\d+)$/);
    return m ? Number(m[1]) : null;
}

function startMessenger(session)
{
    client = new Client(session, {onSignedOut: () => logout()});
    const cl = client;
    const open = id => {
        const want = id === null ? '' : `#/chat/${id}`;
        if (location.hash !== want) {
            if (id !== null && chatFromHash() === null)
                history.pushState(null, '', want);
            else
                history.replaceState(null, '', want || location.pathname);
        }
        apply();
    };
    const back = () => {
        if (chatFromHash() !== null && history.state === null && history.length > 1)
            history.back();
        else
            open(null);
    };
    const conv = new ConversationView(cl, {
        onBack: back,
        onInfo: c => chatInfoSheet(cl, c, open),
        onNewRandom: waiting => randomSheet(cl, open, waiting),
    });
    const mainMenu = anchor => popupMenu(anchor, [
        {label: cl.me.nickname, icon: 'user', testid: 'menu-profile', run: () => profileSheet(cl)},
        {label: 'Friends', icon: 'friends', testid: 'menu-friends', run: () => friendsSheet(cl, open)},
        {label: 'Random chat', icon: 'shuffle', testid: 'menu-random', run: () => randomSheet(cl, open)},
        {label: 'Sign out', icon: 'logout', danger: true, testid: 'menu-signout', run: () => logout()},
    ]);
    const compose = anchor => popupMenu(anchor, [
        {label: 'New message', icon: 'user', testid: 'new-direct', run: () => newDirectSheet(cl, open)},
        {label: 'New group', icon: 'group', testid: 'new-group', run: () => newGroupSheet(cl, open, 'group')},
        {label: 'New channel', icon: 'channel', testid: 'new-channel', run: () => newGroupSheet(cl, open, 'channel')},
        {label: 'Join a channel', icon: 'plus', testid: 'join-channel', run: () => joinChannelSheet(cl, open)},
    ]);
    const side = new Sidebar(cl, {
        onOpen: id => open(id),
        onMenu: mainMenu,
        onCompose: compose,
        onStartDirect: async u => {
            try {
                const c = await cl.openDirect(u.id);
                open(c.id);
            } catch (e) {
                toast(e.message, 'error');
            }
        },
    });
    const shell = h('div', {class: 'shell', 'data-testid': 'shell'}, side.el, conv.el);
    root.className = '';
    root.replaceChildren(shell);

    /* Render at most once a frame, whatever burst of events came in. */
    let dirtyList = false, dirtyConv = false, frame = 0;
    const flush = () => {
        frame = 0;
        if (dirtyList)
            side.render();
        if (dirtyConv)
            conv.render();
        dirtyList = dirtyConv = false;
        const n = cl.totalUnread();
        document.title = n ? `(${n}) Natter` : 'Natter';
    };
    const later = () => {
        if (!frame)
            frame = requestAnimationFrame(flush);
    };
    const apply = () => {
        const id = chatFromHash();
        const known = id !== null && cl.chats.has(id);
        if (id !== null && !known && cl.listLoaded) {
            /* A chat we are not in (a channel by link) or gone: try to fetch it. */
            cl.fetchChat(id).then(apply, () => open(null));
            return;
        }
        const target = known ? id : null;
        if (cl.openChatId !== target || conv.chatId !== target) {
            cl.openChat(target);
            conv.show(target);
        }
        shell.dataset.pane = target === null ? 'list' : 'chat';
        side.render();
    };
    const onChange = ev => {
        const {kind, chatId} = ev.detail;
        switch (kind) {
        case 'conn':
            side.renderBanner();
            break;
        case 'chats':
        case 'users':
            dirtyList = true;
            dirtyConv = true;
            if (kind === 'chats' && chatFromHash() !== null && conv.chatId !== chatFromHash())
                apply();
            break;
        case 'messages':
        case 'typing':
        case 'open':
            dirtyList = true;
            if (chatId === conv.chatId || kind === 'open')
                dirtyConv = true;
            break;
        case 'match':
            if (chatId)
                open(chatId);
            break;
        case 'error':
            toast(chatId?.message || 'Something went wrong', 'error');
            break;
        case 'notice':
            toast(chatId);
            break;
        default:
            break;
        }
        later();
    };
    /* 'error' and 'notice' carry their payload in the chatId slot. */
    cl.addEventListener('change', onChange);
    window.addEventListener('hashchange', apply);
    window.addEventListener('popstate', apply);
    const typingTick = setInterval(() => {
        dirtyConv = true;
        later();
    }, 30000);
    side.renderBanner();
    side.render();
    cl.start();
    apply();
    teardown = () => {
        clearInterval(typingTick);
        window.removeEventListener('hashchange', apply);
        window.removeEventListener('popstate', apply);
        cl.removeEventListener('change', onChange);
        cl.stop();
        document.querySelectorAll('.backdrop, .popup').forEach(e => e.remove());
    };
}

function route(session)
{
    if (teardown) {
        teardown();
        teardown = null;
    }
    client = null;
    if (session) {
        startMessenger(session);
    } else {
        document.title = 'Natter';
        document.body.dataset.conn = 'signed-out';
        root.className = '';
        renderAuth(root);
    }
}

let current = getSession();
onSession(s => {
    const was = current;
    current = s;
    /* Token refreshes keep the same user: nothing to redraw. */
    if (!!was !== !!s || (was && s && was.user?.id !== s.user?.id))
        route(s);
});
route(current);
