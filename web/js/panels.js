// The sheets that open over the main screen: profile, friends, random chat,
// new direct chat / group / channel, joining a channel, and chat info.
// Features the server does not have yet answer 404/405; those show a short
// "not available" note instead of breaking.

import {h, icon, avatar, toast, openSheet, confirmSheet, lastSeenText} from './dom.js';

function unavailable(e)
{
    return e && (e.missing || e.status === 503 || e.code === 'unavailable');
}

function errText(e, what)
{
    if (unavailable(e))
        return `${what} is not available on this server yet.`;
    return e.message || String(e);
}

/* A user search field with results; onPick(user). */
function userPicker(client, onPick, {placeholder = 'Search by nickname', exclude = () => false} = {})
{
    const input = h('input', {type: 'search', placeholder, 'data-testid': 'user-search', autocomplete: 'off'});
    const results = h('div', {class: 'pick-results'});
    let seq = 0, timer = 0;
    input.addEventListener('input', () => {
        clearTimeout(timer);
        const q = input.value.trim().replace(/^@/, '');
        const my = ++seq;
        if (!q) {
            results.replaceChildren();
            return;
        }
        timer = setTimeout(async () => {
            try {
                const users = (await client.searchUsers(q)).filter(u => u.id !== client.me.id && !exclude(u));
                if (my !== seq)
                    return;
                results.replaceChildren(...(users.length ? users.map(u => h('button', {
                                                   class: 'pick-item', type: 'button', 'data-testid': 'pick-user',
                                                   'data-nickname': u.nickname, onclick: () => onPick(u)},
                                                   avatar(u.nickname, u.id, u.avatar_url, 'sm', !!u.online),
                                                   h('span', {class: 'pick-name'}, u.nickname),
                                                   h('span', {class: 'muted small'}, lastSeenText(u))))
                                                         : [h('div', {class: 'muted small pad'}, 'No one found')]));
            } catch (e) {
                results.replaceChildren(h('div', {class: 'form-error'}, e.message));
            }
        }, 150);
    });
    return {el: h('div', {class: 'picker'}, input, results), input};
}

export function newDirectSheet(client, open)
{
    const sheet = openSheet('New message', userPicker(client, async u => {
                                               try {
                                                   const c = await client.openDirect(u.id);
                                                   sheet.close();
                                                   open(c.id);
                                               } catch (e) {
                                                   toast(e.message, 'error');
                                               }
                                           }).el);
}

export function newGroupSheet(client, open, type = 'group')
{
    const chosen = new Map();
    const chips = h('div', {class: 'chips'});
    const drawChips = () => chips.replaceChildren(...[...chosen.values()].map(u => h('span', {class: 'chip'}, u.nickname,
                                                                                     h('button', {type: 'button', 'aria-label': 'Remove',
                                                                                                  onclick: () => {
                                                                                                      chosen.delete(u.id);
                                                                                                      drawChips();
                                                                                                  }},
                                                                                       icon('close')))));
    const title = h('input', {placeholder: type === 'group' ? 'Group name' : 'Channel name', required: true,
                              maxlength: 128, 'data-testid': 'chat-title'});
    const picker = userPicker(client, u => {
        chosen.set(u.id, u);
        drawChips();
        picker.input.value = '';
        picker.input.dispatchEvent(new Event('input'));
    }, {placeholder: 'Add members by nickname', exclude: u => chosen.has(u.id)});
    const err = h('div', {class: 'form-error'});
    const form = h('form', {class: 'form'}, h('label', null, 'Name', title),
                   h('label', null, 'Members'), chips, picker.el, err,
                   h('div', {class: 'row end'}, h('button', {class: 'btn primary', type: 'submit', 'data-testid': 'create-chat'},
                                                  type === 'group' ? 'Create group' : 'Create channel')));
    form.addEventListener('submit', async e => {
        e.preventDefault();
        if (!title.value.trim()) {
            err.textContent = 'Give it a name.';
            return;
        }
        try {
            const c = await client.createChat(type, title.value.trim(), [...chosen.keys()]);
            sheet.close();
            open(c.id);
        } catch (ex) {
            err.textContent = ex.message;
        }
    });
    const sheet = openSheet(type === 'group' ? 'New group' : 'New channel', form);
}

export async function joinChannelSheet(client, open)
{
    const idInput = h('input', {type: 'number', min: 1, placeholder: 'Channel id', 'data-testid': 'channel-id'});
    const err = h('div', {class: 'form-error'});
    const lobby = [...client.chats.values()].find(c => c.type === 'channel' && c.title === 'lobby');
    const join = async id => {
        err.textContent = '';
        try {
            const c = await client.joinChannel(id);
            sheet.close();
            open(c.id);
        } catch (e) {
            err.textContent = e.status === 404 ? 'No such channel.' : e.message;
        }
    };
    const findLobby = async () => {
        if (lobby) {
            sheet.close();
            open(lobby.id);
            return;
        }
        /* Not a member any more: the lobby is one of the first chats made. */
        for (let id = 1; id <= 5; id++) {
            try {
                const c = await client.fetchChatPublic(id);
                if (c.type === 'channel' && c.title === 'lobby')
                    return join(id);
            } catch {
                /* keep looking */
            }
        }
        err.textContent = 'Could not find the lobby.';
    };
    const form = h('form', {class: 'form'},
                   h('div', {class: 'lobby-card'}, icon('channel'),
                     h('div', null, h('b', null, 'lobby'), h('div', {class: 'muted small'}, 'The public channel everyone can join.')),
                     h('button', {class: 'btn primary small', type: 'button', 'data-testid': 'join-lobby', onclick: findLobby},
                       lobby ? 'Open' : 'Join')),
                   h('label', null, 'Or join a channel by its id', idInput), err,
                   h('div', {class: 'row end'}, h('button', {class: 'btn primary', type: 'submit'}, 'Join')));
    form.addEventListener('submit', e => {
        e.preventDefault();
        const id = Number(idInput.value);
        if (id > 0)
            join(id);
    });
    const sheet = openSheet('Join a channel', form);
}

export function profileSheet(client)
{
    const me = client.me;
    const nick = h('input', {value: me.nickname || '', required: true, pattern: '[A-Za-z0-9_.\\-]{3,32}', 'data-testid': 'p-nickname'});
    const bio = h('textarea', {rows: 3, maxlength: 500, 'data-testid': 'p-bio'});
    bio.value = me.bio || '';
    const url = h('input', {type: 'url', value: me.avatar_url || '', placeholder: 'https://…', 'data-testid': 'p-avatar'});
    const gender = h('select', {'data-testid': 'p-gender'},
                     [['', 'Not set'], ['female', 'Female'], ['male', 'Male'], ['other', 'Other']].map(
                         ([v, l]) => h('option', {value: v, selected: (me.gender || '') === v}, l)));
    const birth = h('input', {type: 'date', value: me.birth_date || '', max: new Date().toISOString().slice(0, 10),
                              'data-testid': 'p-birth'});
    const preview = h('div', {class: 'profile-preview'});
    const drawPreview = () => preview.replaceChildren(avatar(nick.value || me.nickname, me.id, url.value.trim(), 'xl'),
                                                      h('div', null, h('div', {class: 'big'}, nick.value || me.nickname),
                                                        h('div', {class: 'muted'}, me.email || '')));
    nick.addEventListener('input', drawPreview);
    url.addEventListener('change', drawPreview);
    url.addEventListener('input', drawPreview);
    drawPreview();
    const err = h('div', {class: 'form-error'});
    const form = h('form', {class: 'form'}, preview,
                   h('label', null, 'Nickname', nick),
                   h('label', null, 'Bio', bio),
                   h('label', null, 'Avatar URL', url),
                   h('div', {class: 'row2'}, h('label', null, 'Gender', gender), h('label', null, 'Birth date', birth)),
                   err,
                   h('div', {class: 'row end'}, h('button', {class: 'btn primary', type: 'submit', 'data-testid': 'p-save'}, 'Save')));
    form.addEventListener('submit', async e => {
        e.preventDefault();
        err.textContent = '';
        const fields = {};
        if (nick.value.trim() !== me.nickname)
            fields.nickname = nick.value.trim();
        if (bio.value !== (me.bio || ''))
            fields.bio = bio.value;
        if (url.value.trim() !== (me.avatar_url || ''))
            fields.avatar_url = url.value.trim();
        if (gender.value !== (me.gender || ''))
            fields.gender = gender.value || null;
        if (birth.value !== (me.birth_date || ''))
            fields.birth_date = birth.value || null;
        if (!Object.keys(fields).length) {
            sheet.close();
            return;
        }
        try {
            await client.updateProfile(fields);
            toast('Profile saved');
            sheet.close();
        } catch (ex) {
            err.textContent = ex.status === 409 ? 'That nickname is taken.' : ex.message;
        }
    });
    const sheet = openSheet('Your profile', form);
}

export function friendsSheet(client, open)
{
    const body = h('div', {class: 'friends'});
    const addInput = h('input', {placeholder: 'Nickname', 'data-testid': 'friend-nick', pattern: '[A-Za-z0-9_.\\-]{3,32}'});
    const addForm = h('form', {class: 'row'}, addInput, h('button', {class: 'btn primary', type: 'submit'}, 'Add friend'));
    addForm.addEventListener('submit', async e => {
        e.preventDefault();
        const n = addInput.value.trim().replace(/^@/, '');
        if (!n)
            return;
        try {
            await client.friendRequest(n);
            addInput.value = '';
            toast(`Friend request sent to ${n}`);
        } catch (ex) {
            toast(errText(ex, 'Friends'), 'error');
        }
    });
    const act = (label, fn, cls = '') => h('button', {class: 'btn small ' + cls, type: 'button', onclick: async () => {
                                                    try {
                                                        await fn();
                                                    } catch (ex) {
                                                        toast(errText(ex, 'Friends'), 'error');
                                                    }
                                                }}, label);
    const person = (u, ...actions) => h('div', {class: 'person'}, avatar(u.nickname, u.id, u.avatar_url, 'sm', !!u.online),
                                        h('div', {class: 'person-main'}, h('b', null, u.nickname),
                                          h('div', {class: 'muted small'}, lastSeenText(u))),
                                        h('div', {class: 'person-actions'}, actions));
    const section = (title, list, make) => list && list.length
        ? [h('h3', null, `${title} · ${list.length}`), ...list.map(make)]
        : [];
    const draw = async () => {
        try {
            const r = await client.friends();
            const blockFn = u => async () => {
                if (await confirmSheet('Block', `Block ${u.nickname}? They will not be able to message you or send requests.`,
                                       'Block', true)) {
                    await client.block(u.id);
                    toast(`${u.nickname} is blocked`);
                }
            };
            body.replaceChildren(addForm,
                                 ...section('Requests', r.incoming, u => person(u,
                                                                                act('Accept', () => client.friendAccept(u.id), 'primary'),
                                                                                act('Reject', () => client.friendReject(u.id)),
                                                                                act('Block', blockFn(u), 'danger'))),
                                 ...section('Sent', r.outgoing, u => person(u, act('Cancel', () => client.friendRemove(u.id)))),
                                 ...section('Friends', r.friends, u => person(u,
                                                                              act('Message', async () => {
                                                                                  const c = await client.openDirect(u.id);
                                                                                  sheet.close();
                                                                                  open(c.id);
                                                                              }, 'primary'),
                                                                              act('Remove', async () => {
                                                                                  if (await confirmSheet('Remove friend', `Remove ${u.nickname} from your friends?`, 'Remove', true))
                                                                                      await client.friendRemove(u.id);
                                                                              }),
                                                                              act('Block', blockFn(u), 'danger'))),
                                 !(r.friends?.length || r.incoming?.length || r.outgoing?.length)
                                     ? h('p', {class: 'muted pad'}, 'No friends yet. Add someone by nickname.')
                                     : null);
        } catch (e) {
            body.replaceChildren(h('div', {class: 'notice', 'data-testid': 'friends-unavailable'}, icon('info'),
                                   h('span', null, errText(e, 'Friends'))));
        }
    };
    const onChange = ev => {
        if (ev.detail.kind === 'friends' || ev.detail.kind === 'users')
            draw();
    };
    client.addEventListener('change', onChange);
    body.replaceChildren(h('div', {class: 'muted pad'}, 'Loading…'));
    draw();
    const sheet = openSheet('Friends', body, {onClose: () => client.removeEventListener('change', onChange)});
}

const PREFS_KEY = 'natter.match.prefs';

export function randomSheet(client, open)
{
    const saved = JSON.parse(localStorage.getItem(PREFS_KEY) || 'null') || {genders: ['female', 'male', 'other'], age_min: 18, age_max: 99, interests: []};
    const body = h('div', {class: 'random'});
    const boxes = ['female', 'male', 'other'].map(g => h('label', {class: 'check'},
                                                       h('input', {type: 'checkbox', value: g, checked: saved.genders.includes(g)}),
                                                       g[0].toUpperCase() + g.slice(1)));
    const ageMin = h('input', {type: 'number', min: 13, max: 120, value: saved.age_min});
    const ageMax = h('input', {type: 'number', min: 13, max: 120, value: saved.age_max});
    const interests = h('input', {placeholder: 'music, hiking, films', value: (saved.interests || []).join(', ')});
    const err = h('div', {class: 'form-error'});
    const needProfile = !client.me.gender || !client.me.birth_date;
    const findBtn = h('button', {class: 'btn primary block', type: 'submit', 'data-testid': 'find-someone'}, 'Find someone');
    const form = h('form', {class: 'form'},
                   h('p', {class: 'muted'}, 'Chat with a stranger who matches your preferences. You both stay anonymous until you both choose to reveal.'),
                   needProfile ? h('div', {class: 'notice'}, icon('info'), h('span', null, 'Set your gender and birth date in your profile first.')) : null,
                   h('label', null, 'Show me'), h('div', {class: 'row'}, boxes),
                   h('div', {class: 'row2'}, h('label', null, 'Age from', ageMin), h('label', null, 'to', ageMax)),
                   h('label', null, 'Interests', interests), err, findBtn);
    const waiting = h('div', {class: 'waiting', 'data-testid': 'match-waiting'},
                      h('div', {class: 'pulse'}, icon('shuffle')),
                      h('h3', null, 'Looking for someone…'),
                      h('p', {class: 'muted'}, 'We will open the chat as soon as someone matches.'),
                      h('button', {class: 'btn', type: 'button', 'data-testid': 'match-cancel', onclick: async () => {
                                       try {
                                           await client.cancelMatch();
                                       } catch (e) {
                                           toast(errText(e, 'Random chat'), 'error');
                                       }
                                   }}, 'Cancel'));
    const draw = () => body.replaceChildren(client.matchState === 'waiting' ? waiting : form);
    form.addEventListener('submit', async e => {
        e.preventDefault();
        err.textContent = '';
        const prefs = {
            genders: boxes.map(b => b.firstChild).filter(i => i.checked).map(i => i.value),
            age_min: Number(ageMin.value) || 18,
            age_max: Number(ageMax.value) || 99,
            interests: interests.value.split(',').map(s => s.trim()).filter(Boolean),
        };
        localStorage.setItem(PREFS_KEY, JSON.stringify(prefs));
        try {
            await client.setPreferences(prefs);
            await client.findMatch();
        } catch (ex) {
            err.textContent = errText(ex, 'Random chat');
        }
    });
    const onChange = ev => {
        if (ev.detail.kind === 'match') {
            if (ev.detail.chatId) {
                sheet.close();
                open(ev.detail.chatId);
            } else {
                draw();
            }
        }
    };
    client.addEventListener('change', onChange);
    draw();
    const sheet = openSheet('Random chat', body, {onClose: () => client.removeEventListener('change', onChange)});
}

export function chatInfoSheet(client, c, open)
{
    const body = h('div', {class: 'info'});
    const draw = () => {
        const cur = client.chats.get(c.id) || c;
        const me = client.myMember(cur);
        const owner = me && me.role === 'owner';
        const title = client.chatTitle(cur);
        const pid = client.peerId(cur);
        const peer = pid && (cur.type === 'direct' || cur.revealed) ? client.user(pid) : null;
        const head = h('div', {class: 'profile-preview'}, avatar(title, cur.type === 'direct' ? pid : cur.id, peer?.avatar_url, 'xl'),
                       h('div', null, h('div', {class: 'big'}, title),
                         h('div', {class: 'muted'}, peer ? lastSeenText(peer) : `${cur.type} · ${(cur.members || []).length} members`)));
        const parts = [head];
        if (peer) {
            if (peer.bio)
                parts.push(h('p', {class: 'bio'}, peer.bio));
            const facts = [peer.gender, peer.birth_date].filter(Boolean).join(' · ');
            if (facts)
                parts.push(h('p', {class: 'muted small'}, facts));
            parts.push(h('div', {class: 'row'},
                         h('button', {class: 'btn small', type: 'button', onclick: () => client.friendRequest(peer.nickname).then(
                                                                              () => toast('Friend request sent'), e => toast(errText(e, 'Friends'), 'error'))},
                           'Add friend'),
                         h('button', {class: 'btn small danger', type: 'button', onclick: async () => {
                                          if (await confirmSheet('Block', `Block ${peer.nickname}?`, 'Block', true))
                                              client.block(peer.id).then(() => toast('Blocked'), e => toast(errText(e, 'Blocking'), 'error'));
                                      }}, 'Block')));
        }
        if (cur.type === 'group' || cur.type === 'channel') {
            if (owner && cur.type === 'group')
                parts.push(h('h3', null, 'Add member'), userPicker(client, async u => {
                                                            try {
                                                                await client.addMember(cur, u.id);
                                                                toast(`${u.nickname} added`);
                                                                draw();
                                                            } catch (e) {
                                                                toast(e.message, 'error');
                                                            }
                                                        }, {exclude: u => (cur.members || []).some(m => m.user_id === u.id)}).el);
            const members = (cur.members || []).slice(0, 200);
            parts.push(h('h3', null, `Members · ${(cur.members || []).length}`));
            for (const m of members) {
                const u = client.user(m.user_id);
                const name = client.nameOf(m.user_id);
                parts.push(h('div', {class: 'person'}, avatar(name, m.user_id, u?.avatar_url, 'sm', u ? !!u.online : undefined),
                             h('div', {class: 'person-main'}, h('b', null, name),
                               h('div', {class: 'muted small'}, m.role === 'owner' ? 'owner' : u ? lastSeenText(u) : '')),
                             h('div', {class: 'person-actions'},
                               m.user_id !== client.me.id && cur.type !== 'channel'
                                   ? h('button', {class: 'btn small', type: 'button', onclick: async () => {
                                                      try {
                                                          const d = await client.openDirect(m.user_id);
                                                          sheet.close();
                                                          open(d.id);
                                                      } catch (e) {
                                                          toast(e.message, 'error');
                                                      }
                                                  }}, 'Message')
                                   : null,
                               owner && m.user_id !== client.me.id
                                   ? h('button', {class: 'btn small danger', type: 'button', onclick: () => client.removeMember(cur, m.user_id).then(draw, e => toast(e.message, 'error'))}, 'Remove')
                                   : null)));
            }
            parts.push(h('div', {class: 'row end'}, h('button', {class: 'btn danger', type: 'button', onclick: async () => {
                                                                if (await confirmSheet('Leave chat', `Leave “${title}”?`, 'Leave', true)) {
                                                                    await client.removeMember(cur, client.me.id).catch(e => toast(e.message, 'error'));
                                                                    sheet.close();
                                                                }
                                                            }}, 'Leave chat')));
        }
        if (cur.type === 'channel')
            parts.push(h('p', {class: 'muted small'}, `Channel id ${cur.id}: others can join with it.`));
        body.replaceChildren(...parts);
    };
    const onChange = ev => {
        if (ev.detail.kind === 'users' || ev.detail.kind === 'chats')
            draw();
    };
    client.addEventListener('change', onChange);
    draw();
    const sheet = openSheet('Chat info', body, {onClose: () => client.removeEventListener('change', onChange)});
}
