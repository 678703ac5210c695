// The web view in a real browser: headless Chromium (Debian's package),
// driven through playwright-core, against a server that run.sh started.
//
// It checks what a person would: without a token the page shows only the
// sign-in form; after signing in, a key is created, found by prefix, edited
// (and an edit that lost a race is refused with a clear message), deleted;
// a stored `<script>alert(1)</script>` shows as text and fires no dialog; a
// token is created and revoked; sign-out forgets the token; a public
// project is marked. It saves
// screenshots in $SCREENSHOT_DIR.
//
// Environment: KVS_URL, KVS_ADMIN_TOKEN, SCREENSHOT_DIR, CHROMIUM (default
// /usr/bin/chromium).

import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const url = process.env.KVS_URL;
const admin = process.env.KVS_ADMIN_TOKEN;
const shots = process.env.SCREENSHOT_DIR || 'screenshots';
assert.ok(url && admin, 'KVS_URL and KVS_ADMIN_TOKEN must be set');
mkdirSync(shots, { recursive: true });

/** The API, as the test's own client (to prepare data and to race the page). */
async function api(method, path, body, headers = {}) {
  const response = await fetch(url + path, {
    method,
    headers: { Authorization: `Bearer ${admin}`, ...headers },
    body,
  });
  assert.ok(response.ok, `${method} ${path}: ${response.status} ${await response.clone().text()}`);
  return response;
}

const XSS = '<script>alert(1)</script>';
let passed = 0;

async function step(name, body) {
  const started = Date.now();
  try {
    await body();
    passed += 1;
    console.log(`ok   ${name} (${Date.now() - started} ms)`);
  } catch (error) {
    console.log(`FAIL ${name}`);
    await page.screenshot({ path: join(shots, 'failure.png') }).catch(() => {});
    throw error;
  }
}

const profile = mkdtempSync(join(tmpdir(), 'kvs-chromium-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  viewport: { width: 1280, height: 760 },
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const page = context.pages()[0] || await context.newPage();
page.setDefaultTimeout(10000);

// Alerts are failures (an injected script ran); confirms are the page asking
// before it deletes or revokes, and are accepted.
const alerts = [];
page.on('dialog', async (dialog) => {
  if (dialog.type() === 'confirm') return dialog.accept();
  alerts.push(`${dialog.type()}: ${dialog.message()}`);
  return dialog.dismiss();
});
const pageErrors = [];
page.on('pageerror', (error) => pageErrors.push(String(error)));
// Refused requests (the wrong token's 401, the lost race's 412) are logged by
// Chromium as errors too; they are expected. Anything else (a script error,
// a Content-Security-Policy violation) is not.
page.on('console', (message) => {
  if (message.type() === 'error' && !message.text().startsWith('Failed to load resource')) {
    pageErrors.push(message.text());
  }
});

const prefix = `web-${Date.now()}/`;

let failed = 0;
try {
  await step('seed a few keys and a script value through the API', async () => {
    await api('PUT', `/v1/projects/default/kv/${encodeURIComponent(`${prefix}xss`)}`, XSS,
      { 'Content-Type': 'text/html' });
    for (const [key, value, type] of [
      ['config/app.json', '{"theme": "light", "retries": 3}', 'application/json'],
      ['config/feature-flags', 'search=on\nexport=off', 'text/plain; charset=utf-8'],
      ['greeting', 'hello, world', 'text/plain; charset=utf-8'],
    ]) {
      await api('PUT', `/v1/projects/default/kv/${encodeURIComponent(key)}`, value, { 'Content-Type': type });
    }
  });

  await step('without a token the page shows only the sign-in form', async () => {
    for (const path of ['/', '/ui']) {
      await page.goto(url + path);
      await page.locator('#sign-in-form').waitFor();
      assert.equal(await page.locator('#sign-in-view').isVisible(), true);
      assert.equal(await page.locator('#app-view').isVisible(), false);
      const text = await page.locator('body').innerText();
      for (const secret of ['default', prefix, 'hello, world', 'config/']) {
        assert.ok(!text.includes(secret), `${path} shows ${secret} without a token`);
      }
    }
    await page.screenshot({ path: join(shots, 'sign-in.png') });
  });

  await step('a wrong token is refused with a message', async () => {
    await page.fill('#token', 'kvs_' + 'x'.repeat(43));
    await page.click('#sign-in-form button[type=submit]');
    await page.locator('#sign-in-error').waitFor();
    assert.match(await page.locator('#sign-in-error').innerText(), /not valid/);
    assert.equal(await page.evaluate(() => sessionStorage.getItem('kvs.token')), null);
  });

  await step('signing in keeps the token in sessionStorage and shows projects and status', async () => {
    await page.fill('#token', admin);
    await page.click('#sign-in-form button[type=submit]');
    await page.locator('#status dd').first().waitFor();
    assert.equal(await page.evaluate(() => sessionStorage.getItem('kvs.token')), admin);
    assert.equal(await page.evaluate(() => localStorage.length), 0);
    await page.locator('button[data-project="default"]').waitFor();
    assert.match(await page.locator('#status').innerText(), /Revision/);
  });

  await step('create a key', async () => {
    await page.click('button[data-project="default"]');
    await page.locator('#new-key').click();
    await page.fill('#edit-name', `${prefix}hello`);
    await page.fill('#edit-value', 'first words');
    await page.click('#save-key');
    await page.locator('#open-key').filter({ hasText: `${prefix}hello` }).waitFor();
    assert.equal(await page.locator('#value').textContent(), 'first words');
    assert.match(await page.locator('#key-meta').innerText(), /updated (just now|\d+ seconds? ago)/);
  });

  await step('find it by prefix', async () => {
    await page.fill('#prefix', prefix);
    await page.click('#prefix-form button[type=submit]');
    await page.locator(`#key-rows button[data-key="${prefix}hello"]`).waitFor();
    const keys = await page.locator('#key-rows button.key').allTextContents();
    assert.deepEqual(keys, [`${prefix}hello`, `${prefix}xss`]);
    await page.click(`#key-rows button[data-key="${prefix}hello"]`);
    await page.locator('#value').filter({ hasText: 'first words' }).waitFor();
  });

  await step('edit it', async () => {
    await page.click('#edit-key');
    await page.fill('#edit-value', 'second words');
    await page.click('#save-key');
    await page.locator('#value').filter({ hasText: 'second words' }).waitFor();
    const stored = await (await api('GET', `/v1/projects/default/kv/${encodeURIComponent(`${prefix}hello`)}`)).text();
    assert.equal(stored, 'second words');
  });

  await step('an edit that lost a race is refused with a clear message', async () => {
    await page.click('#edit-key');
    await api('PUT', `/v1/projects/default/kv/${encodeURIComponent(`${prefix}hello`)}`, 'changed elsewhere');
    await page.fill('#edit-value', 'my words');
    await page.click('#save-key');
    await page.locator('#editor-error').waitFor();
    assert.match(await page.locator('#editor-error').innerText(), /changed or deleted this key/);
    const stored = await (await api('GET', `/v1/projects/default/kv/${encodeURIComponent(`${prefix}hello`)}`)).text();
    assert.equal(stored, 'changed elsewhere');
    await page.click(`#key-rows button[data-key="${prefix}hello"]`);
    await page.locator('#value').filter({ hasText: 'changed elsewhere' }).waitFor();
  });

  await step('page through a prefix holding more keys than a page', async () => {
    for (let i = 0; i < 23; i += 1) {
      await api('PUT', `/v1/projects/default/kv/${encodeURIComponent(`${prefix}page/${String(i).padStart(2, '0')}`)}`, `value ${i}`);
    }
    await page.fill('#prefix', `${prefix}page/`);
    await page.click('#prefix-form button[type=submit]');
    await page.locator(`#key-rows button[data-key="${prefix}page/00"]`).waitFor();
    assert.equal(await page.locator('#key-rows tr').count(), 20);
    assert.equal(await page.locator('#prev-page').isDisabled(), true);
    await page.click('#next-page');
    await page.locator(`#key-rows button[data-key="${prefix}page/20"]`).waitFor();
    const second = await page.locator('#key-rows button.key').allTextContents();
    assert.deepEqual(second, [20, 21, 22].map((i) => `${prefix}page/${i}`));
    assert.equal(await page.locator('#next-page').isDisabled(), true);
    assert.equal(await page.locator('#page-label').textContent(), '21–23');
    await page.click('#prev-page');
    await page.locator(`#key-rows button[data-key="${prefix}page/00"]`).waitFor();
    await api('DELETE', `/v1/projects/default/kv?prefix=${encodeURIComponent(`${prefix}page/`)}`);
    await page.fill('#prefix', prefix);
    await page.click('#prefix-form button[type=submit]');
    await page.locator(`#key-rows button[data-key="${prefix}page/00"]`).waitFor({ state: 'detached' });
  });

  await step('a stored script shows as text and runs nothing', async () => {
    await page.click(`#key-rows button[data-key="${prefix}xss"]`);
    await page.locator('#open-key').filter({ hasText: `${prefix}xss` }).waitFor();
    assert.equal(await page.locator('#value').textContent(), XSS);
    assert.equal(await page.locator('#value script').count(), 0);
    assert.equal(await page.locator('#detail script').count(), 0);
    await page.waitForTimeout(300);
    assert.deepEqual(alerts, []);
  });

  await step('delete it', async () => {
    await page.click(`#key-rows button[data-key="${prefix}hello"]`);
    await page.locator('#open-key').filter({ hasText: `${prefix}hello` }).waitFor();
    await page.click('#delete-key');
    await page.locator('#notice').filter({ hasText: 'Deleted' }).waitFor();
    assert.equal(await page.locator(`#key-rows button[data-key="${prefix}hello"]`).count(), 0);
    const gone = await fetch(`${url}/v1/projects/default/kv/${encodeURIComponent(`${prefix}hello`)}`,
      { headers: { Authorization: `Bearer ${admin}` } });
    assert.equal(gone.status, 404);
    const keys = String((await (await api('GET', '/v1/projects/default')).json()).keys);
    await page.waitForFunction((n) => document.querySelector('button[data-project="default"] .count').textContent === n
      && document.querySelector('#project-summary').textContent.startsWith(`${n} keys`), keys);
  });

  await step('screenshot of a key with its metadata', async () => {
    await page.fill('#prefix', '');
    await page.click('#prefix-form button[type=submit]');
    await page.locator('#key-rows button[data-key="config/app.json"]').waitFor();
    await page.click('#key-rows button[data-key="config/app.json"]');
    await page.locator('#value').filter({ hasText: 'theme' }).waitFor();
    await page.screenshot({ path: join(shots, 'web-view.png') });
  });

  await step('create a token, see its secret once, and revoke it', async () => {
    await page.click('#tab-tokens');
    await page.locator('#token-form').waitFor();
    await page.selectOption('#token-role', 'read');
    await page.fill('#token-form [name=name]', 'browser-test');
    await page.fill('#token-form [name=prefix]', 'config/');
    await page.click('#create-token');
    await page.locator('#secret-value').waitFor();
    const secret = await page.locator('#secret-value').textContent();
    assert.match(secret, /^kvs_[A-Za-z0-9_-]{43}$/);
    const row = page.locator('tr', { hasText: 'browser-test' });
    await row.waitFor();
    const check = await fetch(`${url}/v1/whoami`, { headers: { Authorization: `Bearer ${secret}` } });
    assert.equal(check.status, 200);
    await page.screenshot({ path: join(shots, 'tokens.png') });
    await row.locator('button', { hasText: 'Revoke' }).click();
    await page.locator('#notice').filter({ hasText: 'Revoked' }).waitFor();
    // The notice comes before the list is read again: wait for the row to go.
    await page.locator('tr', { hasText: 'browser-test' }).waitFor({ state: 'detached', timeout: 5000 });
    assert.equal(await page.locator('tr', { hasText: 'browser-test' }).count(), 0);
    const after = await fetch(`${url}/v1/whoami`, { headers: { Authorization: `Bearer ${secret}` } });
    assert.equal(after.status, 401);
  });

  await step('signing out forgets the token and shows only the sign-in form', async () => {
    await page.click('#sign-out');
    await page.locator('#sign-in-form').waitFor();
    assert.equal(await page.evaluate(() => sessionStorage.getItem('kvs.token')), null);
    assert.equal(await page.locator('#app-view').isVisible(), false);
    assert.ok(!(await page.locator('body').innerText()).includes('config/app.json'));
  });

  await step('a read token sees its own project, no tokens and no server status', async () => {
    const minted = await (await api('POST', '/v1/projects/default/tokens',
      JSON.stringify({ role: 'read', prefix: 'config/', name: 'reader' }),
      { 'Content-Type': 'application/json' })).json();
    await page.fill('#token', minted.secret);
    await page.click('#sign-in-form button[type=submit]');
    await page.locator('#key-rows button[data-key="config/app.json"]').waitFor();
    const keys = await page.locator('#key-rows button.key').allTextContents();
    assert.deepEqual(keys, ['config/app.json', 'config/feature-flags']);
    assert.equal(await page.locator('#tab-tokens').count(), 0);
    assert.equal(await page.locator('#server-link').isVisible(), false);
    assert.match(await page.locator('#who').innerText(), /read on default/);
    await page.click('#sign-out');
    await page.locator('#sign-in-form').waitFor();
  });

  await step('a public project is marked in the side bar, in its view and in the server status', async () => {
    await api('POST', '/v1/projects', JSON.stringify({ id: 'open', public: 'read' }),
      { 'Content-Type': 'application/json' });
    await page.fill('#token', admin);
    await page.click('#sign-in-form button[type=submit]');
    await page.locator('#status dd').first().waitFor();
    assert.match(await page.locator('#status').innerText(), /open \(read\)/);
    assert.equal(await page.locator('button[data-project="open"] .badge').innerText(), 'public read');
    assert.equal(await page.locator('button[data-project="default"] .badge').count(), 0);
    await page.click('button[data-project="open"]');
    await page.locator('#project-public').waitFor();
    assert.match(await page.locator('#project-public').innerText(), /can read these keys without a token/);
    await page.screenshot({ path: join(shots, 'public-project.png') });
    await page.click('button[data-project="default"]');
    await page.locator('#project-summary').waitFor();
    assert.equal(await page.locator('#project-public').isVisible(), false);
    await page.click('#sign-out');
    await page.locator('#sign-in-form').waitFor();
  });

  await step('no dialog fired and the page logged no error', async () => {
    assert.deepEqual(alerts, []);
    assert.deepEqual(pageErrors, []);
  });
} catch (error) {
  failed = 1;
  console.log(error);
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}

console.log(`${passed} passed, ${failed} failed`);
process.exitCode = failed;
