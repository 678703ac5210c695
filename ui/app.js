// The kvs web view: a client of the public v1 API, nothing more. The token
// lives in sessionStorage (this tab only). Everything that comes from the
// server is put on the page as text (textContent, text nodes), never as
// HTML, so a stored value or key such as <script>…</script> shows as text.
'use strict';

const TOKEN = 'kvs.token';
const NOTICE = 'kvs.notice';
const PAGE_SIZE = 20;

const $ = (id) => document.getElementById(id);

/** An element with attributes, listeners (`onclick`) and text or element children. */
function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === 'class') node.className = value;
    else if (name.startsWith('on')) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined && child !== false) node.append(child);
  }
  return node;
}

/** An error answer of the API, with the code and message of its body. */
class ApiError extends Error {
  constructor(status, code, message, headers) {
    super(message);
    this.status = status;
    this.code = code;
    this.headers = headers;
  }
}

/** One request to the API with the session's token; throws ApiError unless 2xx. */
async function api(method, path, { json, body, headers = {} } = {}) {
  const h = new Headers(headers);
  const token = sessionStorage.getItem(TOKEN);
  if (token) h.set('Authorization', 'Bearer ' + token);
  if (json !== undefined) {
    h.set('Content-Type', 'application/json');
    body = JSON.stringify(json);
  }
  const response = await fetch(path, { method, headers: h, body, cache: 'no-store', credentials: 'omit' });
  if (!response.ok) {
    let code = 'http_' + response.status;
    let message = `the server answered ${response.status} ${response.statusText}`;
    try {
      const error = (await response.json()).error;
      if (error && error.message) {
        code = error.code;
        message = error.message;
      }
    } catch (_) { /* not the contract's error body */ }
    throw new ApiError(response.status, code, message, response.headers);
  }
  return response;
}

const projectPath = (id) => '/v1/projects/' + encodeURIComponent(id);
const kvPath = (project, key) => projectPath(project) + '/kv/' + encodeURIComponent(key);

// ---- formatting -----------------------------------------------------------

const rtf = new Intl.RelativeTimeFormat('en', { numeric: 'auto' });
const UNITS = [['year', 31536000], ['month', 2592000], ['week', 604800], ['day', 86400],
  ['hour', 3600], ['minute', 60], ['second', 1]];

/** "3 minutes ago", "in 2 hours". */
function relative(date) {
  const seconds = (date.getTime() - Date.now()) / 1000;
  if (Math.abs(seconds) < 10) return seconds <= 0 ? 'just now' : 'in a few seconds';
  for (const [unit, size] of UNITS) {
    if (Math.abs(seconds) >= size) return rtf.format(Math.trunc(seconds / size), unit);
  }
  return 'just now';
}

/** A <time> that reads "updated 3 minutes ago" and keeps itself current. */
function when(prefix, value) {
  if (!value) return el('span', { class: 'muted' }, 'never');
  const date = new Date(value);
  return el('time', { datetime: date.toISOString(), title: date.toLocaleString(), 'data-prefix': prefix },
    prefix + relative(date));
}

setInterval(() => {
  for (const t of document.querySelectorAll('time[datetime]')) {
    t.textContent = (t.dataset.prefix || '') + relative(new Date(t.dateTime));
  }
}, 20000);

function bytes(n) {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let value = n / 1024;
  let i = 0;
  while (value >= 1024 && i < units.length - 1) { value /= 1024; i += 1; }
  return `${value.toFixed(value < 10 ? 1 : 0)} ${units[i]}`;
}

function duration(seconds) {
  const s = Math.floor(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

function describe(token) {
  const parts = [token.role === 'admin' ? 'admin' : `${token.role} on ${token.project}`];
  if (token.prefix) parts.push(`keys under “${token.prefix}”`);
  if (token.name) parts.push(`“${token.name}”`);
  return parts.join(' · ');
}

// ---- notices ----------------------------------------------------------------

function notify(message, kind = 'ok') {
  const n = $('notice');
  n.textContent = message;
  n.className = 'notice ' + kind;
  n.hidden = false;
}

function clearNotice() {
  $('notice').hidden = true;
}

/** Shows an API error; a token that stopped working signs the tab out. */
function fail(error) {
  if (error instanceof ApiError && error.status === 401) {
    signOut('Your token is no longer accepted: ' + error.message);
    return;
  }
  notify(error.message || String(error), 'error');
}

// ---- signing in and out ---------------------------------------------------

// `shown` counts what the detail pane was asked to show, so that a slow read
// never replaces what was asked for after it (an editor, another key).
const state = { me: null, project: null, prefix: '', cursors: [null], page: 0, open: null, shown: 0 };

async function signIn(token) {
  sessionStorage.setItem(TOKEN, token);
  try {
    state.me = await (await api('GET', '/v1/whoami')).json();
  } catch (error) {
    sessionStorage.removeItem(TOKEN);
    showSignIn(error.status === 401 ? 'That token is not valid (unknown, expired or revoked).' : error.message);
    return;
  }
  $('sign-in-view').hidden = true;
  $('app-view').hidden = false;
  $('sign-out').hidden = false;
  $('who').textContent = describe(state.me);
  await loadProjects();
}

/** Forgets the token and reloads, so that nothing shown before stays on the page. */
function signOut(message) {
  sessionStorage.removeItem(TOKEN);
  if (message) sessionStorage.setItem(NOTICE, message);
  location.replace(location.pathname);
}

function showSignIn(message) {
  $('app-view').hidden = true;
  $('sign-in-view').hidden = false;
  const error = $('sign-in-error');
  error.textContent = message || '';
  error.hidden = !message;
  $('token').focus();
}

// ---- projects -----------------------------------------------------------------

async function loadProjects() {
  const list = $('project-list');
  const note = $('project-note');
  list.replaceChildren();
  note.hidden = true;
  const admin = state.me.role === 'admin';
  $('server-heading').hidden = !admin;
  $('server-link').hidden = !admin;
  let projects = [];
  try {
    projects = (await (await api('GET', '/v1/projects')).json()).projects;
  } catch (error) {
    if (error.code !== 'listing_disabled') return fail(error);
    note.textContent = 'This server does not list its projects; open one by its id:';
    note.hidden = false;
    list.append(el('li', {}, el('form', { id: 'open-project', onsubmit: (e) => {
      e.preventDefault();
      const id = e.target.querySelector('input').value.trim();
      if (id) openProject(id);
    } }, el('input', { placeholder: 'project id', 'aria-label': 'Project id', spellcheck: 'false' }))));
  }
  for (const p of projects) {
    list.append(el('li', {}, el('button', {
      type: 'button', class: 'link project', 'data-project': p.id, onclick: () => openProject(p.id),
    }, p.id, publicBadge(p), el('span', { class: 'count' }, String(p.keys)))));
  }
  if (!admin && state.me.project) return openProject(state.me.project);
  if (admin) return openServer();
  if (projects.length) return openProject(projects[0].id);
}

/** A badge for a project open to requests without a token; nothing otherwise. */
function publicBadge(p) {
  if (!p.public || p.public === 'none') return null;
  return el('span', { class: 'badge public', title: publicText(p) }, 'public ' + p.public);
}

function publicText(p) {
  return p.public === 'write'
    ? 'Public: anyone who reaches this server can read and write these keys without a token.'
    : 'Public: anyone who reaches this server can read these keys without a token.';
}

function highlight(selector) {
  for (const b of document.querySelectorAll('.side button')) b.classList.remove('current');
  const current = document.querySelector(selector);
  if (current) current.classList.add('current');
}

async function openProject(id) {
  clearNotice();
  Object.assign(state, { project: id, prefix: '', cursors: [null], page: 0, open: null });
  for (const b of document.querySelectorAll('.side button')) {
    b.classList.toggle('current', b.dataset.project === id);
  }
  $('server-view').hidden = true;
  $('server-view').replaceChildren();
  const view = $('project-view');
  view.hidden = false;
  const manages = state.me.role === 'admin' || state.me.role === 'manage';
  const summary = el('p', { class: 'muted', id: 'project-summary' });
  const tabs = el('div', { class: 'tabs', role: 'tablist' },
    el('button', { type: 'button', role: 'tab', id: 'tab-keys', 'aria-selected': 'true', onclick: () => tab('keys') }, 'Keys'),
    manages && el('button', { type: 'button', role: 'tab', id: 'tab-tokens', 'aria-selected': 'false', onclick: () => tab('tokens') }, 'Tokens'));
  view.replaceChildren(
    el('h1', {}, id), el('p', { class: 'warning', id: 'project-public', hidden: true }), summary, tabs,
    keysPane(), manages && el('div', { id: 'tokens-pane', hidden: true }));
  await refreshProject();
  await loadKeys();
}

/** The project's summary line and its count in the side bar, read again. */
async function refreshProject() {
  const id = state.project;
  let p;
  try {
    p = await (await api('GET', projectPath(id))).json();
  } catch (error) {
    if (error.status === 401) fail(error);
    return;
  }
  const summary = $('project-summary');
  if (!summary || id !== state.project) return;
  const open = $('project-public');
  open.hidden = !p.public || p.public === 'none';
  open.textContent = open.hidden ? '' : publicText(p);
  summary.textContent = `${p.keys} keys · ${bytes(p.bytes)} · ${p.storage} storage · values up to ${bytes(p.max_value_bytes)}`
    + (p.max_keys ? ` · at most ${p.max_keys} keys` : '');
  for (const count of document.querySelectorAll('.side button[data-project] .count')) {
    if (count.parentElement.dataset.project === id) count.textContent = String(p.keys);
  }
}

function tab(name) {
  for (const t of ['keys', 'tokens']) {
    const button = $('tab-' + t);
    const pane = $(t + '-pane');
    if (!button || !pane) continue;
    button.setAttribute('aria-selected', String(t === name));
    pane.hidden = t !== name;
  }
  clearNotice();
  if (name === 'tokens') {
    tokensPanel($('tokens-pane'), {
      list: projectPath(state.project) + '/tokens',
      roles: ['read', 'write', 'manage'],
    });
  }
}

// ---- keys -----------------------------------------------------------------------

function keysPane() {
  const filter = el('form', { id: 'prefix-form', class: 'row', onsubmit: (e) => {
    e.preventDefault();
    Object.assign(state, { prefix: $('prefix').value, cursors: [null], page: 0 });
    loadKeys();
  } },
  el('input', { id: 'prefix', type: 'search', placeholder: 'Filter by prefix, e.g. config/', 'aria-label': 'Key prefix', spellcheck: 'false' }),
  el('button', { type: 'submit' }, 'Filter'),
  el('button', { type: 'button', id: 'new-key', class: 'secondary', onclick: () => editor(null) }, 'New key'));
  return el('div', { id: 'keys-pane', class: 'split' },
    el('div', { class: 'list' }, filter,
      el('table', { class: 'keys' },
        el('thead', {}, el('tr', {}, el('th', {}, 'Key'), el('th', { class: 'num' }, 'Size'), el('th', {}, 'Updated'))),
        el('tbody', { id: 'key-rows' })),
      el('p', { id: 'keys-empty', class: 'muted', hidden: true }),
      el('div', { class: 'pager' },
        el('button', { type: 'button', id: 'prev-page', class: 'secondary', onclick: () => page(-1) }, '← Previous'),
        el('span', { id: 'page-label', class: 'muted' }),
        el('button', { type: 'button', id: 'next-page', class: 'secondary', onclick: () => page(1) }, 'Next →'))),
    el('div', { id: 'detail', class: 'detail' },
      el('p', { class: 'muted' }, 'Choose a key to see its value, or create one.')));
}

function page(step) {
  state.page = Math.max(0, state.page + step);
  loadKeys();
}

async function loadKeys() {
  const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
  if (state.prefix) params.set('prefix', state.prefix);
  const cursor = state.cursors[state.page];
  if (cursor) params.set('cursor', cursor);
  const rows = $('key-rows');
  const empty = $('keys-empty');
  let listing;
  try {
    listing = await (await api('GET', projectPath(state.project) + '/kv?' + params)).json();
  } catch (error) {
    rows.replaceChildren();
    empty.hidden = false;
    empty.textContent = error.code === 'listing_disabled'
      ? 'Listing keys is disabled in this project for this token.' : error.message;
    if (error.status === 401) fail(error);
    return;
  }
  state.cursors[state.page + 1] = listing.cursor;
  rows.replaceChildren(...listing.keys.map((meta) => el('tr', { class: meta.key === state.open ? 'current' : null },
    el('td', {}, el('button', { type: 'button', class: 'link key', 'data-key': meta.key, onclick: () => openKey(meta.key) }, meta.key)),
    el('td', { class: 'num' }, bytes(meta.size)),
    el('td', {}, when('', meta.updated_at)))));
  empty.hidden = listing.keys.length > 0;
  empty.textContent = state.page > 0 ? 'No more keys.'
    : state.prefix ? `No key starts with “${state.prefix}”.` : 'No keys yet.';
  const first = state.page * PAGE_SIZE + 1;
  $('page-label').textContent = listing.keys.length
    ? `${first}–${first + listing.keys.length - 1}` : '';
  $('prev-page').disabled = state.page === 0;
  $('next-page').disabled = !listing.cursor || listing.keys.length < PAGE_SIZE;
}

/** The value and metadata of a key, read from the raw GET and its headers. */
async function readKey(key) {
  const response = await api('GET', kvPath(state.project, key));
  const h = response.headers;
  const data = new Uint8Array(await response.arrayBuffer());
  let text = null;
  try { text = new TextDecoder('utf-8', { fatal: true }).decode(data); } catch (_) { /* binary */ }
  return {
    key,
    data,
    text,
    version: h.get('Kvs-Version'),
    contentType: h.get('Content-Type') || '',
    created: h.get('Kvs-Created-At'),
    updated: h.get('Last-Modified'),
    expires: h.get('Kvs-Expires-At'),
  };
}

async function openKey(key) {
  clearNotice();
  state.open = key;
  for (const row of document.querySelectorAll('#key-rows tr')) {
    row.classList.toggle('current', row.querySelector('button').dataset.key === key);
  }
  const detail = $('detail');
  const shown = ++state.shown;
  let entry;
  try {
    entry = await readKey(key);
    if (shown !== state.shown) return;
  } catch (error) {
    if (shown !== state.shown) return;
    if (error.code === 'key_not_found') {
      detail.replaceChildren(el('p', { class: 'muted' }, `The key “${key}” does not exist (any more).`));
      return;
    }
    return fail(error);
  }
  const hex = (d) => Array.from(d.slice(0, 256), (b) => b.toString(16).padStart(2, '0')).join(' ')
    + (d.length > 256 ? ' …' : '');
  const value = entry.text !== null
    ? el('pre', { id: 'value', class: 'value' }, entry.text)
    : el('div', {}, el('p', { class: 'muted' }, 'A binary value; its first bytes in hex:'),
      el('pre', { id: 'value', class: 'value' }, hex(entry.data)));
  detail.replaceChildren(
    el('h2', { class: 'key-name', id: 'open-key' }, key),
    el('p', { class: 'meta', id: 'key-meta' },
      when('updated ', entry.updated), ' · ', `version ${entry.version}`, ' · ', bytes(entry.data.length),
      ' · ', entry.contentType),
    el('dl', { class: 'facts' },
      el('dt', {}, 'Created'), el('dd', {}, when('', entry.created)),
      el('dt', {}, 'Expires'), el('dd', {}, entry.expires ? when('expires ', entry.expires) : 'never'),
      el('dt', {}, 'Version'), el('dd', {}, entry.version),
      el('dt', {}, 'Content type'), el('dd', {}, entry.contentType)),
    value,
    el('div', { class: 'row' },
      el('button', { type: 'button', id: 'edit-key', disabled: entry.text === null, title: entry.text === null ? 'Binary values are written through the API or the kvs command' : null, onclick: () => editor(entry) }, 'Edit'),
      el('button', { type: 'button', id: 'delete-key', class: 'danger', onclick: () => deleteKey(entry) }, 'Delete')));
}

/** The form to create a key (entry null) or edit one. */
function editor(entry) {
  clearNotice();
  state.shown += 1;
  const creating = entry === null;
  const remaining = entry && entry.expires
    ? Math.max(1, Math.ceil((new Date(entry.expires).getTime() - Date.now()) / 1000)) : null;
  const error = el('p', { class: 'error', id: 'editor-error', role: 'alert', hidden: true });
  const form = el('form', { id: 'editor', class: 'editor', onsubmit: (e) => { e.preventDefault(); save(entry, error); } },
    el('h2', {}, creating ? 'New key' : 'Edit key'),
    el('label', { for: 'edit-name' }, 'Key'),
    el('input', { id: 'edit-name', required: true, spellcheck: 'false', readonly: !creating, value: creating ? state.prefix : entry.key }),
    el('label', { for: 'edit-value' }, 'Value'),
    el('textarea', { id: 'edit-value', rows: 8, spellcheck: 'false' }),
    el('div', { class: 'pair' },
      el('div', {}, el('label', { for: 'edit-type' }, 'Content type'),
        el('input', { id: 'edit-type', value: creating ? 'text/plain; charset=utf-8' : entry.contentType })),
      el('div', {}, el('label', { for: 'edit-ttl' }, 'Expires after'),
        el('input', { id: 'edit-ttl', placeholder: 'never (or 90s, 10m, 1h, 30d)', value: remaining ? `${remaining}s` : null }))),
    error,
    el('div', { class: 'row' },
      el('button', { type: 'submit', id: 'save-key' }, creating ? 'Create' : 'Save'),
      el('button', { type: 'button', class: 'secondary', onclick: () => (creating ? $('detail').replaceChildren() : openKey(entry.key)) }, 'Cancel')));
  $('detail').replaceChildren(form);
  form.querySelector('#edit-value').value = creating ? '' : entry.text;
  form.querySelector(creating ? '#edit-name' : '#edit-value').focus();
}

/** PUT: If-None-Match: * when creating, If-Match the version read when editing. */
async function save(entry, error) {
  const key = $('edit-name').value;
  const ttl = $('edit-ttl').value.trim();
  const headers = { 'Content-Type': $('edit-type').value.trim() || 'application/octet-stream' };
  if (entry) headers['If-Match'] = `"${entry.version}"`;
  else headers['If-None-Match'] = '*';
  const query = ttl ? '?ttl=' + encodeURIComponent(ttl) : '';
  try {
    await api('PUT', kvPath(state.project, key) + query, { body: $('edit-value').value, headers });
  } catch (e) {
    if (e.status === 401) return fail(e);
    error.textContent = e.code === 'precondition_failed'
      ? (entry
        ? 'Not saved: someone changed or deleted this key since you opened it. Your text is still here; open the key again to see the current value.'
        : 'Not created: a key with this name already exists. Open it to edit it.')
      : e.message;
    error.hidden = false;
    return;
  }
  await loadKeys();
  await openKey(key);
  refreshProject();
  notify(entry ? `Saved “${key}”.` : `Created “${key}”.`);
}

async function deleteKey(entry) {
  if (!confirm(`Delete the key “${entry.key}”? This cannot be undone.`)) return;
  try {
    await api('DELETE', kvPath(state.project, entry.key), { headers: { 'If-Match': `"${entry.version}"` } });
  } catch (error) {
    if (error.code === 'precondition_failed') {
      return notify('Not deleted: someone changed this key since you opened it. Open it again and retry.', 'error');
    }
    if (error.code !== 'key_not_found') return fail(error);
  }
  state.open = null;
  state.shown += 1;
  $('detail').replaceChildren(el('p', { class: 'muted' }, 'Choose a key to see its value, or create one.'));
  await loadKeys();
  refreshProject();
  notify(`Deleted “${entry.key}”.`);
}

// ---- tokens -------------------------------------------------------------------

/** A token list with a form to mint one and a button to revoke each. */
async function tokensPanel(pane, { list, roles }) {
  const rows = el('tbody');
  const secret = el('div', { id: 'new-secret', class: 'secret', hidden: true });
  const error = el('p', { class: 'error', role: 'alert', hidden: true });
  const role = roles && el('select', { id: 'token-role', 'aria-label': 'Role' },
    roles.map((r) => el('option', { value: r, selected: r === 'read' }, r)));
  const form = el('form', { id: 'token-form', class: 'row wrap', onsubmit: async (e) => {
    e.preventDefault();
    error.hidden = true;
    const body = {};
    if (role) body.role = role.value;
    for (const field of ['name', 'prefix', 'expires_in']) {
      const input = form.querySelector(`[name=${field}]`);
      if (input && input.value.trim()) body[field] = input.value.trim();
    }
    try {
      const token = await (await api('POST', list, { json: body })).json();
      secret.replaceChildren(
        el('p', {}, 'Copy the new token’s secret now: it is not shown again.'),
        el('code', { id: 'secret-value' }, token.secret),
        el('button', { type: 'button', class: 'secondary', onclick: () => navigator.clipboard.writeText(token.secret).then(() => notify('Copied.'), () => notify('Select the secret and copy it by hand.', 'error')) }, 'Copy'));
      secret.hidden = false;
      form.reset();
      await fill();
    } catch (e2) {
      if (e2.status === 401) return fail(e2);
      error.textContent = e2.message;
      error.hidden = false;
    }
  } },
  role,
  el('input', { name: 'name', placeholder: 'Name', 'aria-label': 'Name' }),
  roles && el('input', { name: 'prefix', placeholder: 'Key prefix (optional)', 'aria-label': 'Key prefix' }),
  el('input', { name: 'expires_in', placeholder: 'Expires in (e.g. 30d)', 'aria-label': 'Expires in' }),
  el('button', { type: 'submit', id: 'create-token' }, 'Create token'));

  async function revoke(token) {
    if (!confirm(`Revoke the token ${token.name ? `“${token.name}” ` : ''}(${token.id})? Anything using it stops working.`)) return;
    try {
      await api('DELETE', list + '/' + encodeURIComponent(token.id));
    } catch (e) {
      return fail(e);
    }
    if (token.id === state.me.id) return signOut('You revoked the token you were signed in with.');
    notify(`Revoked ${token.id}.`);
    await fill();
  }

  async function fill() {
    let tokens;
    try {
      tokens = (await (await api('GET', list)).json()).tokens;
    } catch (e) {
      return fail(e);
    }
    rows.replaceChildren(...tokens.map((t) => el('tr', { 'data-token': t.id },
      el('td', {}, t.name || el('span', { class: 'muted' }, '—'), t.id === state.me.id ? el('span', { class: 'tag' }, 'you') : null),
      el('td', {}, el('code', {}, t.id)),
      el('td', {}, t.role),
      el('td', {}, t.prefix === null ? el('span', { class: 'muted' }, 'all keys') : el('code', {}, t.prefix)),
      el('td', {}, t.expires_at ? when('', t.expires_at) : el('span', { class: 'muted' }, 'never')),
      el('td', {}, t.source),
      el('td', {}, el('button', { type: 'button', class: 'danger small', onclick: () => revoke(t) }, 'Revoke')))));
  }

  pane.replaceChildren(
    form, error, secret,
    el('table', { class: 'tokens' },
      el('thead', {}, el('tr', {}, ['Name', 'Id', 'Role', 'Prefix', 'Expires', 'Source', ''].map((h) => el('th', {}, h)))),
      rows));
  await fill();
}

// ---- server (admin) -------------------------------------------------------------

async function openServer() {
  clearNotice();
  state.project = null;
  highlight('#server-link');
  $('project-view').hidden = true;
  $('project-view').replaceChildren();
  const view = $('server-view');
  view.hidden = false;
  const facts = el('dl', { class: 'facts status', id: 'status' });
  const tokens = el('div', { id: 'admin-tokens' });
  view.replaceChildren(el('h1', {}, 'Server'), facts, el('h2', {}, 'Admin tokens'), tokens);
  try {
    const s = await (await api('GET', '/v1/status')).json();
    const rows = [['Version', s.version], ['Uptime', duration(s.uptime_seconds)], ['Revision', s.revision],
      ['Projects', s.projects], ['Keys', s.keys], ['Storage', bytes(s.storage_bytes)], ['Memory', bytes(s.memory_bytes)]];
    const open = Object.entries(s.public_projects || {}).map(([id, access]) => `${id} (${access})`);
    rows.push(['Public projects', open.length ? open.join(', ') : 'none']);
    if (s.simple_pykv_open_admin) rows.push(['Simple-PyKV admin routes', 'open to requests without a token']);
    for (const [name, value] of Object.entries(s.limits || {})) rows.push([name.replaceAll('_', ' '), String(value)]);
    facts.replaceChildren(...rows.flatMap(([name, value]) => [el('dt', {}, name), el('dd', {}, String(value))]));
  } catch (error) {
    return fail(error);
  }
  await tokensPanel(tokens, { list: '/v1/tokens', roles: null });
}

// ---- start ------------------------------------------------------------------------

document.addEventListener('DOMContentLoaded', () => {
  $('sign-in-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const token = $('token').value.trim();
    $('token').value = '';
    if (token) signIn(token);
  });
  $('sign-out').addEventListener('click', () => signOut());
  $('server-link').addEventListener('click', () => openServer());
  const message = sessionStorage.getItem(NOTICE);
  sessionStorage.removeItem(NOTICE);
  const token = sessionStorage.getItem(TOKEN);
  if (token) signIn(token);
  else showSignIn(message);
});
