// DOM helpers for the Natter web client.
//
// Every piece of text that came from a user or the server goes into the page
// through text nodes (textContent), never through innerHTML, so a message can
// never become markup. Links are made clickable by building <a> elements whose
// href is checked to be http(s) and whose label is again plain text.

/** Builds an element: h('div', {class: 'x', onclick: fn}, 'text', child, ...). */
export function h(tag, attrs, ...children)
{
    const el = document.createElement(tag);
    if (attrs)
        setAttrs(el, attrs);
    append(el, children);
    return el;
}

function setAttrs(el, attrs)
{
    for (const [k, v] of Object.entries(attrs)) {
        if (v === undefined || v === null || v === false)
            continue;
        if (k === 'class')
            el.className = v;
        else if (k === 'text')
            el.textContent = v;
        else if (k === 'dataset')
            Object.assign(el.dataset, v);
        else if (k.startsWith('on') && typeof v === 'function')
            el.addEventListener(k.slice(2), v);
        else if (k === 'value' || k === 'checked' || k === 'disabled' || k === 'selected')
            el[k] = v;
        else
            el.setAttribute(k, v === true ? '' : String(v));
    }
}

function append(el, children)
{
    for (const c of children) {
        if (c === null || c === undefined || c === false)
            continue;
        if (Array.isArray(c))
            append(el, c);
        else if (c instanceof Node)
            el.appendChild(c);
        else
            el.appendChild(document.createTextNode(String(c)));
    }
}

/* Icon paths (24x24 viewBox); constants of this file, never user data. */
const ICONS = {
    send: 'M3.4 20.4 21 12 3.4 3.6 3.4 10l12.6 2-12.6 2z',
    back: 'M15.4 5.4 14 4l-8 8 8 8 1.4-1.4L8.8 12z',
    menu: 'M3 6h18v2H3zm0 5h18v2H3zm0 5h18v2H3z',
    more: 'M12 8a2 2 0 1 0 0-4 2 2 0 0 0 0 4zm0 2a2 2 0 1 0 0 4 2 2 0 0 0 0-4zm0 6a2 2 0 1 0 0 4 2 2 0 0 0 0-4z',
    edit: 'M3 17.2V21h3.8L17.8 10l-3.8-3.8zM20.7 7a1 1 0 0 0 0-1.4l-2.3-2.3a1 1 0 0 0-1.4 0l-1.8 1.8 3.8 3.8z',
    search: 'M9.5 3a6.5 6.5 0 0 1 5.2 10.4l5.4 5.4-1.4 1.4-5.4-5.4A6.5 6.5 0 1 1 9.5 3zm0 2a4.5 4.5 0 1 0 0 9 4.5 4.5 0 0 0 0-9z',
    close: 'M19 6.4 17.6 5 12 10.6 6.4 5 5 6.4 10.6 12 5 17.6 6.4 19 12 13.4 17.6 19 19 17.6 13.4 12z',
    check: 'M9 16.2 4.8 12l-1.4 1.4L9 19 21 7l-1.4-1.4z',
    checks: 'M18 7l-1.4-1.4-6.3 6.3 1.4 1.4zm4.2-1.4L11.7 16.2 7.5 12l-1.4 1.4 5.6 5.6 12-12zM.4 13.4 6 19l1.4-1.4L1.8 12z',
    clock: 'M12 2a10 10 0 1 0 0 20 10 10 0 0 0 0-20zm0 18a8 8 0 1 1 0-16 8 8 0 0 1 0 16zm.5-13H11v6l5.2 3.2.8-1.3-4.5-2.7z',
    alert: 'M1 21h22L12 2zm12-3h-2v-2h2zm0-4h-2v-4h2z',
    user: 'M12 12a4 4 0 1 0 0-8 4 4 0 0 0 0 8zm0 2c-2.7 0-8 1.3-8 4v2h16v-2c0-2.7-5.3-4-8-4z',
    group: 'M16 11a3 3 0 1 0 0-6 3 3 0 0 0 0 6zm-8 0a3 3 0 1 0 0-6 3 3 0 0 0 0 6zm0 2c-2.3 0-7 1.2-7 3.5V19h14v-2.5C15 14.2 10.3 13 8 13zm8 0c-.3 0-.6 0-1 .1 1.2.8 2 2 2 3.4V19h6v-2.5c0-2.3-4.7-3.5-7-3.5z',
    channel: 'M18 11v2h4v-2zm-2 6.6 3.2 2.4 1.2-1.6-3.2-2.4zm4.4-12.4L19.2 3.6 16 6l1.2 1.6zM4 9a2 2 0 0 0-2 2v2a2 2 0 0 0 2 2h1v4h2v-4h1l5 3V6L8 9zm11.5 3c0-1.3-.6-2.5-1.5-3.3v6.6c.9-.8 1.5-2 1.5-3.3z',
    friends: 'M15 12a4 4 0 1 0 0-8 4 4 0 0 0 0 8zm-9-2V7H4v3H1v2h3v3h2v-3h3v-2zm9 4c-2.7 0-8 1.3-8 4v2h16v-2c0-2.7-5.3-4-8-4z',
    shuffle: 'M10.6 9.2 5.4 4 4 5.4l5.2 5.2zM14.5 4l2 2L4 18.6 5.4 20 18 7.5l2 2V4zm.3 9.4-1.4 1.4 3.1 3.1-2 2H20v-5.5l-2 2z',
    logout: 'M10.1 15.6 11.5 17l5-5-5-5-1.4 1.4 2.6 2.6H3v2h9.7zM19 3H5a2 2 0 0 0-2 2v4h2V5h14v14H5v-4H3v4a2 2 0 0 0 2 2h14a2 2 0 0 0 2-2V5a2 2 0 0 0-2-2z',
    shield: 'M12 1 3 5v6c0 5.6 3.8 10.7 9 12 5.2-1.3 9-6.4 9-12V5zm-2 16-4-4 1.4-1.4 2.6 2.6 6.6-6.6L18 9z',
    plus: 'M19 13h-6v6h-2v-6H5v-2h6V5h2v6h6z',
    download: 'M5 20h14v-2H5zM19 9h-4V3H9v6H5l7 7z',
    info: 'M11 7h2v2h-2zm0 4h2v6h-2zm1-9a10 10 0 1 0 0 20 10 10 0 0 0 0-20zm0 18a8 8 0 1 1 0-16 8 8 0 0 1 0 16z',
    trash: 'M6 19a2 2 0 0 0 2 2h8a2 2 0 0 0 2-2V7H6zM19 4h-3.5l-1-1h-5l-1 1H5v2h14z',
    copy: 'M16 1H4a2 2 0 0 0-2 2v14h2V3h12zm3 4H8a2 2 0 0 0-2 2v14a2 2 0 0 0 2 2h11a2 2 0 0 0 2-2V7a2 2 0 0 0-2-2zm0 16H8V7h11z',
};

const SVGNS = 'http://www.w3.org/2000/svg';

/** An inline SVG icon by name. */
export function icon(name, cls)
{
    const svg = document.createElementNS(SVGNS, 'svg');
    svg.setAttribute('viewBox', '0 0 24 24');
    svg.setAttribute('aria-hidden', 'true');
    svg.setAttribute('class', 'icon' + (cls ? ' ' + cls : ''));
    const path = document.createElementNS(SVGNS, 'path');
    path.setAttribute('d', ICONS[name] || '');
    path.setAttribute('fill', 'currentColor');
    svg.appendChild(path);
    return svg;
}

/** A round icon button with an accessible label. */
export function iconButton(name, label, onclick, cls)
{
    return h('button', {class: 'icon-btn' + (cls ? ' ' + cls : ''), type: 'button', title: label,
                        'aria-label': label, onclick}, icon(name));
}

/* ---- links ---------------------------------------------------------------- */

const URL_RE = /\b(?:https?:\/\/|www\.)[^\s<>"']+/gi;

/**
 * Appends `text` to `el` as text nodes, with http(s) URLs turned into <a>
 * elements (label = the URL as text). Trailing punctuation stays outside.
 */
export function appendLinkified(el, text)
{
    let last = 0;
    for (const m of text.matchAll(URL_RE)) {
        let url = m[0];
        const trail = url.match(/[.,;:!?)\]]+$/);
        if (trail)
            url = url.slice(0, -trail[0].length);
        if (m.index > last)
            el.appendChild(document.createTextNode(text.slice(last, m.index)));
        const href = url.toLowerCase().startsWith('www.') ? 'https://' + url : url;
        let ok = false;
        try {
            const u = new URL(href);
            ok = u.protocol === 'http:' || u.protocol === 'https:';
        } catch {
            ok = false;
        }
        if (ok)
            el.appendChild(h('a', {href, target: '_blank', rel: 'noopener noreferrer nofollow'}, url));
        else
            el.appendChild(document.createTextNode(url));
        last = m.index + url.length;
    }
    if (last < text.length)
        el.appendChild(document.createTextNode(text.slice(last)));
}

/* ---- avatars ---------------------------------------------------------------- */

const HUES = [210, 265, 330, 20, 40, 150, 180, 290];

/** A round avatar: the image if the URL is http(s) and loads, else initials. */
export function avatar(name, id, url, size = 'md', online)
{
    const label = (name || '?').trim();
    const initials = [...label].filter(ch => /[\p{L}\p{N}]/u.test(ch)).slice(0, 2).join('').toUpperCase() || '?';
    const el = h('div', {class: `avatar avatar-${size}`, 'aria-hidden': 'true'});
    el.style.setProperty('--hue', String(HUES[Math.abs(Number(id) || hashStr(label)) % HUES.length]));
    const fallback = h('span', {class: 'initials'}, initials);
    el.appendChild(fallback);
    if (url && /^https?:\/\//i.test(url)) {
        const img = h('img', {alt: '', src: url, referrerpolicy: 'no-referrer', loading: 'lazy'});
        img.addEventListener('load', () => el.classList.add('has-img'));
        img.addEventListener('error', () => img.remove());
        el.appendChild(img);
    }
    if (online !== undefined)
        el.appendChild(h('span', {class: 'presence ' + (online ? 'on' : 'off'), title: online ? 'online' : 'offline'}));
    return el;
}

function hashStr(s)
{
    let x = 7;
    for (const ch of s)
        x = (x * 31 + ch.codePointAt(0)) >>> 0;
    return x;
}

/* ---- time ---------------------------------------------------------------- */

export function timeOf(ts)
{
    return new Date(ts).toLocaleTimeString([], {hour: '2-digit', minute: '2-digit'});
}

export function dayKey(ts)
{
    const d = new Date(ts);
    return `${d.getFullYear()}-${d.getMonth()}-${d.getDate()}`;
}

export function dayLabel(ts)
{
    const d = new Date(ts), now = new Date();
    const today = new Date(now.getFullYear(), now.getMonth(), now.getDate()).getTime();
    const that = new Date(d.getFullYear(), d.getMonth(), d.getDate()).getTime();
    const days = Math.round((today - that) / 86400000);
    if (days === 0)
        return 'Today';
    if (days === 1)
        return 'Yesterday';
    const opts = {weekday: 'long', month: 'long', day: 'numeric'};
    if (d.getFullYear() !== now.getFullYear())
        opts.year = 'numeric';
    return d.toLocaleDateString([], opts);
}

/** Short stamp for the chat list: time today, weekday this week, else date. */
export function shortStamp(ts)
{
    const d = new Date(ts), now = new Date();
    if (dayKey(ts) === dayKey(now.getTime()))
        return timeOf(ts);
    if (now - d < 6 * 86400000)
        return d.toLocaleDateString([], {weekday: 'short'});
    return d.toLocaleDateString([], {day: 'numeric', month: 'short'});
}

export function lastSeenText(user)
{
    if (!user)
        return '';
    if (user.online)
        return 'online';
    if (!user.last_seen)
        return 'offline';
    const ago = Date.now() - user.last_seen;
    if (ago < 60000)
        return 'last seen just now';
    if (ago < 3600000)
        return `last seen ${Math.floor(ago / 60000)} min ago`;
    if (dayKey(user.last_seen) === dayKey(Date.now()))
        return `last seen at ${timeOf(user.last_seen)}`;
    return `last seen ${shortStamp(user.last_seen)}`;
}

/* ---- toasts and dialogs ---------------------------------------------------- */

/** A short message at the bottom of the screen; kind 'error' or 'info'. */
export function toast(message, kind = 'info')
{
    const box = document.getElementById('toasts');
    if (!box)
        return;
    const t = h('div', {class: `toast toast-${kind}`, role: kind === 'error' ? 'alert' : 'status'}, message);
    box.appendChild(t);
    setTimeout(() => t.classList.add('leaving'), 4200);
    setTimeout(() => t.remove(), 4600);
}

/**
 * Opens a modal sheet with a title and body; returns {el, close}. Escape
 * and a click on the backdrop close it; onClose runs once.
 */
export function openSheet(title, body, {onClose, wide} = {})
{
    const prev = document.activeElement;
    let closed = false;
    const close = () => {
        if (closed)
            return;
        closed = true;
        backdrop.remove();
        document.removeEventListener('keydown', onKey);
        if (onClose)
            onClose();
        if (prev && prev.focus)
            prev.focus();
    };
    const onKey = e => {
        if (e.key === 'Escape')
            close();
    };
    const sheet = h('div', {class: 'sheet' + (wide ? ' wide' : ''), role: 'dialog', 'aria-modal': 'true', 'aria-label': title},
                    h('header', {class: 'sheet-head'}, h('h2', null, title), iconButton('close', 'Close', close)),
                    h('div', {class: 'sheet-body'}, body));
    const backdrop = h('div', {class: 'backdrop', onmousedown: e => {
                                   if (e.target === backdrop)
                                       close();
                               }}, sheet);
    document.body.appendChild(backdrop);
    document.addEventListener('keydown', onKey);
    const first = sheet.querySelector('input, textarea, select');
    if (first)
        setTimeout(() => first.focus(), 0);
    return {el: sheet, close};
}

/** A confirm dialog as a promise of true/false. */
export function confirmSheet(title, text, okLabel = 'OK', danger = false)
{
    return new Promise(resolve => {
        let answered = false;
        const done = v => {
            answered = true;
            sheet.close();
            resolve(v);
        };
        const body = h('div', {class: 'confirm'},
                       h('p', null, text),
                       h('div', {class: 'row end'},
                         h('button', {class: 'btn ghost', type: 'button', onclick: () => done(false)}, 'Cancel'),
                         h('button', {class: 'btn ' + (danger ? 'danger' : 'primary'), type: 'button',
                                      'data-testid': 'confirm-ok', onclick: () => done(true)}, okLabel)));
        const sheet = openSheet(title, body, {onClose: () => {
                                                  if (!answered)
                                                      resolve(false);
                                              }});
    });
}

/** A small popup menu next to `anchor`: items [{label, icon, danger, run}]. */
export function popupMenu(anchor, items)
{
    document.querySelectorAll('.popup').forEach(p => p.remove());
    const menu = h('div', {class: 'popup', role: 'menu'},
                   items.map(it => h('button', {class: 'popup-item' + (it.danger ? ' danger' : ''), type: 'button',
                                                role: 'menuitem', 'data-testid': it.testid,
                                                onclick: () => {
                                                    menu.remove();
                                                    it.run();
                                                }},
                                     it.icon ? icon(it.icon) : null, it.label)));
    document.body.appendChild(menu);
    const r = anchor.getBoundingClientRect();
    const mw = menu.offsetWidth, mh = menu.offsetHeight;
    let left = Math.min(r.right - mw, window.innerWidth - mw - 8);
    left = Math.max(8, left);
    let top = r.bottom + 4;
    if (top + mh > window.innerHeight - 8)
        top = Math.max(8, r.top - mh - 4);
    menu.style.left = left + 'px';
    menu.style.top = top + 'px';
    const away = e => {
        if (!menu.contains(e.target)) {
            menu.remove();
            document.removeEventListener('mousedown', away, true);
        }
    };
    setTimeout(() => document.addEventListener('mousedown', away, true), 0);
    return menu;
}
