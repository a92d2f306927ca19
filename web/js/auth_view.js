// The sign-in / sign-up screen.

import {login, register} from './api.js';
import {h, icon} from './dom.js';

/** Renders the auth screen into `root`; resolves nothing, the session listener takes over. */
export function renderAuth(root)
{
    let mode = 'signin';
    const err = h('div', {class: 'form-error', role: 'alert', 'data-testid': 'auth-error'});
    const loginInput = h('input', {name: 'login', autocomplete: 'username', placeholder: 'Email or nickname',
                                   required: true, 'data-testid': 'login'});
    const email = h('input', {name: 'email', type: 'email', autocomplete: 'email', placeholder: 'Email',
                              'data-testid': 'email'});
    const nick = h('input', {name: 'nickname', autocomplete: 'nickname', placeholder: 'Nickname',
                             pattern: '[A-Za-z0-9_.\\-]{3,32}', title: '3 to 32 letters, digits, _ . or -',
                             'data-testid': 'nickname'});
    const pass = h('input', {name: 'password', type: 'password', autocomplete: 'current-password',
                             placeholder: 'Password', minlength: 8, required: true, 'data-testid': 'password'});
    const submit = h('button', {class: 'btn primary block', type: 'submit', 'data-testid': 'auth-submit'}, 'Sign in');
    const switcher = h('button', {class: 'link-btn', type: 'button', 'data-testid': 'auth-switch'});
    const signupOnly = h('div', {class: 'signup-only'}, email, nick);
    const loginOnly = h('div', {class: 'signin-only'}, loginInput);

    const setMode = m => {
        mode = m;
        form.dataset.mode = m;
        submit.textContent = m === 'signin' ? 'Sign in' : 'Create account';
        switcher.textContent = m === 'signin' ? 'New here? Create an account' : 'Have an account? Sign in';
        title.textContent = m === 'signin' ? 'Welcome back' : 'Create your account';
        email.required = nick.required = m === 'signup';
        loginInput.required = m === 'signin';
        pass.autocomplete = m === 'signin' ? 'current-password' : 'new-password';
        err.textContent = '';
    };
    switcher.addEventListener('click', () => setMode(mode === 'signin' ? 'signup' : 'signin'));

    const title = h('h1', null);
    const form = h('form', {class: 'auth-card', novalidate: false}, h('div', {class: 'brand'},
                                                                       h('img', {src: '/icons/icon.svg', alt: '', class: 'brand-logo'}),
                                                                       h('span', null, 'Natter')),
                   title, h('p', {class: 'muted'}, 'Fast, simple conversations.'), loginOnly, signupOnly, pass, err,
                   submit, switcher);
    form.addEventListener('submit', async e => {
        e.preventDefault();
        err.textContent = '';
        submit.disabled = true;
        try {
            if (mode === 'signin')
                await login(loginInput.value.trim(), pass.value);
            else
                await register({email: email.value.trim(), nickname: nick.value.trim(), password: pass.value});
        } catch (ex) {
            err.textContent = ex.status === 401 ? 'Wrong login or password.'
                              : ex.status === 409 ? 'That email or nickname is already taken.'
                                                  : ex.message;
        } finally {
            submit.disabled = false;
        }
    });
    setMode('signin');
    root.replaceChildren(h('main', {class: 'auth-screen', 'data-testid': 'auth-screen'},
                           h('div', {class: 'auth-side'},
                             h('div', {class: 'auth-pitch'},
                               icon('shield', 'pitch-icon'),
                               h('h2', null, 'Messages that arrive.'),
                               h('p', null, 'Every message is stored before it is acknowledged, read receipts ' +
                                                'tell you when it landed, and nothing typed offline is lost.'))),
                           form));
}
