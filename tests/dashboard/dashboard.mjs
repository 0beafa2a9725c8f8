// The dashboard in a real browser: headless Chromium driven by
// playwright-core against a running `skillbox serve`, with tasks spawned
// through the API while the page watches.
//
// Run by tests/integration/dashboard.rs, which starts the daemon and sets:
//   SKILLBOX_URL                 http://127.0.0.1:PORT (the daemon's --listen)
//   SKILLBOX_TOKEN               its --token
//   SKILLBOX_SKILL_PLAIN         the hostile test skill, requesting nothing
//   SKILLBOX_SKILL_ECHO          the hostile test skill, requesting `echo **`
//   SKILLBOX_SINK_DOWN           a relay sink of the daemon that nothing
//                                answers, with a short deadline
//   SCREENSHOT_DIR               where the screenshots go
//   SKILLBOX_DASHBOARD_MODULES   node_modules with playwright-core
//                                (tests/dashboard/browser.sh install prints it)
//
// Each check prints a line; the first failure exits non-zero, naming it.
// Waits are Playwright's polling (waitForFunction, locator.waitFor) or the
// API's long poll, with generous limits: nothing asserts on a fixed sleep.

import { createRequire } from 'node:module';
import { mkdirSync } from 'node:fs';
import path from 'node:path';

const started = Date.now();
const WAIT = 60_000;

function need(name) {
  const v = process.env[name];
  if (!v) {
    console.error(`dashboard test: ${name} is not set`);
    process.exit(2);
  }
  return v;
}

const BASE = need('SKILLBOX_URL').replace(/\/$/, '');
const TOKEN = need('SKILLBOX_TOKEN');
const PLAIN = need('SKILLBOX_SKILL_PLAIN');
const ECHO = need('SKILLBOX_SKILL_ECHO');
const SINK_DOWN = need('SKILLBOX_SINK_DOWN');
const SHOTS = need('SCREENSHOT_DIR');
const MODULES = need('SKILLBOX_DASHBOARD_MODULES');
mkdirSync(SHOTS, { recursive: true });

const require = createRequire(path.join(MODULES, 'skillbox-dashboard-test.js'));
const { chromium } = require('playwright-core');

const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
  + "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

// What a malicious skill or spawner writes where the page shows it.
const PAYLOADS = [
  '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=1">',
  '"><svg onload="window.__pwned=1"></svg>',
  '<iframe srcdoc="<script>parent.__pwned=1</script>"></iframe>',
  "'><a href=\"javascript:window.__pwned=1\">click</a>",
];
const HOSTILE = PAYLOADS.join(' | ');

// Overall watchdog: a hung browser or daemon fails, it does not hang CI.
const watchdog = setTimeout(() => {
  console.error(`FAILED: the dashboard test did not finish within 8 minutes (in: ${current})`);
  process.exit(3);
}, 8 * 60_000);

let current = 'start';

class Failure extends Error {}

function check(cond, message) {
  if (!cond) throw new Failure(message);
}

function ok(message) {
  const s = ((Date.now() - started) / 1000).toFixed(1).padStart(6);
  console.log(`${s}s  ok: ${message}`);
}

async function step(name, fn) {
  current = name;
  console.log(`==> ${name}`);
  await fn();
}

// --- the API, as a client with the token (or without) -------------------------

async function raw(pathname, { method = 'GET', headers = {}, body } = {}) {
  const ctl = new AbortController();
  const res = await fetch(BASE + pathname, { method, headers, body, redirect: 'manual', signal: ctl.signal });
  const type = res.headers.get('content-type') ?? '';
  // A stream (an event stream that should not have opened) is not read to its end.
  const text = type.startsWith('text/event-stream') ? '' : await res.text();
  ctl.abort();
  return { status: res.status, headers: res.headers, text, type };
}

async function api(method, pathname, body) {
  const headers = { Authorization: `Bearer ${TOKEN}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const r = await raw(pathname, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  let json = null;
  try {
    json = r.text ? JSON.parse(r.text) : null;
  } catch {
    json = null;
  }
  if (r.status >= 300) throw new Failure(`${method} ${pathname}: ${r.status} ${r.text}`);
  return json;
}

async function spawn(skill, input, extra = {}) {
  const t = await api('POST', '/v1/tasks', { skill, input, ...extra });
  check(typeof t?.id === 'string' && /^[0-9A-Z]{26}$/.test(t.id), `spawn answered ${JSON.stringify(t)}`);
  return t.id;
}

/** Polls the task (through the API) until `pred` holds. */
async function until(id, pred, what, ms = WAIT) {
  const end = Date.now() + ms;
  let t;
  for (;;) {
    t = await api('GET', `/v1/tasks/${id}`);
    if (pred(t)) return t;
    check(Date.now() < end, `task ${id} never ${what}; it is ${t.state}: ${JSON.stringify(t.outcome ?? null)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The task once ended (the API's long poll). */
async function ended(id) {
  for (let i = 0; i < 10; i += 1) {
    const t = await api('GET', `/v1/tasks/${id}/wait?timeout_ms=30000`);
    if (['succeeded', 'failed', 'timed_out', 'cancelled'].includes(t.state)) return t;
  }
  throw new Failure(`task ${id} did not end`);
}

// --- the browser -------------------------------------------------------------------

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  headless: true,
  // launch() gives the browser a fresh, temporary profile (user data dir).
  args: [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ],
});
const context = await browser.newContext({ viewport: { width: 1280, height: 860 }, colorScheme: 'light' });
const page = await context.newPage();
page.setDefaultTimeout(WAIT);

const pageErrors = [];
const cspViolations = [];
const dialogs = [];
const requests = [];
page.on('pageerror', (e) => pageErrors.push(String(e)));
page.on('console', (m) => {
  const text = m.text();
  if (/Content Security Policy|Refused to/i.test(text)) cspViolations.push(text);
  if (m.type() === 'error') console.log(`       (browser console: ${text.slice(0, 300)})`);
});
page.on('dialog', (d) => {
  dialogs.push(d.message());
  d.dismiss().catch(() => {});
});
page.on('request', (r) => requests.push({ method: r.method(), url: new URL(r.url()) }));

/** Waits until the text of `selector` (the first match) includes `text`. */
async function waitText(selector, text, what) {
  try {
    await page.waitForFunction(
      ([sel, want]) => [...document.querySelectorAll(sel)].some((e) => e.textContent.includes(want)),
      [selector, text],
      { timeout: WAIT },
    );
  } catch (e) {
    const seen = await page.evaluate((sel) => [...document.querySelectorAll(sel)].map((e) => e.textContent).join(' || ').slice(0, 800), selector);
    throw new Failure(`${what}: no ${selector} shows ${JSON.stringify(text)}; it shows ${JSON.stringify(seen)}`);
  }
}

async function shot(name) {
  const file = path.join(SHOTS, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  ok(`screenshot ${file}`);
}

function rowState(id) {
  return `tr[data-id="${id}"] td.c-state .badge`;
}

async function noDataMarkup(where) {
  const found = await page.evaluate(() => ({
    scripts: [...document.scripts].map((s) => s.getAttribute('src') ?? `inline: ${s.textContent.slice(0, 80)}`),
    markup: [...document.querySelectorAll('img, svg, iframe, object, embed, [onerror], [onload], [srcdoc], a[href^="javascript:" i]')].map((e) => e.outerHTML.slice(0, 120)),
    pwned: window.__pwned,
  }));
  check(found.scripts.length === 1 && found.scripts[0] === '/ui/app.js', `${where}: unexpected scripts ${JSON.stringify(found.scripts)}`);
  check(found.markup.length === 0, `${where}: elements made from data: ${JSON.stringify(found.markup)}`);
  check(found.pwned === undefined, `${where}: window.__pwned is ${found.pwned}: a payload ran`);
}

async function go(hash) {
  await page.evaluate((h) => {
    location.hash = h;
  }, hash);
}

try {
  // (1) Without a token nothing is served but the login page.
  await step('without a token', async () => {
    let r = await raw('/ui/');
    check(r.status === 401, `/ui/ without a token: ${r.status}`);
    check(r.text.includes('action="/ui/login"') && r.text.includes('name="token"'), `/ui/ without a token is not the login page: ${r.text.slice(0, 300)}`);
    check(r.headers.get('content-security-policy') === CSP, `/ui/ (401) CSP: ${r.headers.get('content-security-policy')}`);
    ok('/ui/ answers 401 with the login page and the CSP');
    r = await raw('/ui/app.js');
    check(r.status === 401 && !r.text.includes('EventSource'), `/ui/app.js without a token: ${r.status}`);
    ok('/ui/app.js answers 401');
    r = await raw('/ui/app.css');
    check(r.status === 401, `/ui/app.css without a token: ${r.status}`);
    r = await raw('/v1/tasks');
    check(r.status === 401 && JSON.parse(r.text)?.error?.code === 'unauthorized', `/v1/tasks without a token: ${r.status} ${r.text}`);
    ok('/v1/tasks answers 401');
    r = await raw('/v1/events');
    check(r.status === 401, `/v1/events without a token: ${r.status}`);
    ok('/v1/events answers 401');
    r = await raw('/v1/events', { headers: { Cookie: 'skillbox_session=0000' } });
    check(r.status === 401, `/v1/events with a made-up cookie: ${r.status}`);
    r = await raw('/ui/login');
    check(r.status === 200 && r.text.includes('<h1>skillbox</h1>') && !r.text.includes('<script'), `/ui/login: ${r.status}`);
    check(r.headers.get('x-content-type-options') === 'nosniff' && r.headers.get('referrer-policy') === 'no-referrer', '/ui/login lacks nosniff or no-referrer');
    ok('/ui/login is served, without any script, with nosniff and no-referrer');
    r = await raw('/ui/login.css');
    check(r.status === 200 && (r.headers.get('content-type') || '').startsWith('text/css'), `/ui/login.css: ${r.status}`);
    ok('the login page\'s stylesheet is served without a token (it holds no data)');

    const resp = await page.goto(`${BASE}/ui/`);
    check(resp.status() === 401, `the browser got ${resp.status()} for /ui/`);
    await page.getByLabel('API token').waitFor();
    await page.getByLabel('API token').fill('not-the-token-0123456789');
    const [answer] = await Promise.all([
      page.waitForResponse((x) => x.url() === `${BASE}/ui/login` && x.request().method() === 'POST'),
      page.getByRole('button', { name: 'Sign in' }).click(),
    ]);
    check(answer.status() === 401, `a wrong token got ${answer.status()}`);
    await page.getByRole('alert').waitFor();
    const said = await page.getByRole('alert').textContent();
    check(said.trim().length > 0, 'the wrong token shows no message');
    check(await page.getByLabel('API token').isVisible(), 'the form is gone after a wrong token');
    ok(`a wrong token is refused: "${said.trim()}"`);
    await shot('login');
  });

  // (2) Sign in through the form.
  await step('sign in', async () => {
    await page.getByLabel('API token').fill(TOKEN);
    await Promise.all([
      page.waitForURL(`${BASE}/ui/`),
      page.getByRole('button', { name: 'Sign in' }).click(),
    ]);
    await waitText('#conn', 'Live', 'the live stream');
    const cookie = (await context.cookies()).find((c) => c.name === 'skillbox_session');
    check(cookie, 'no skillbox_session cookie');
    check(cookie.httpOnly && cookie.sameSite === 'Strict' && cookie.path === '/', `cookie flags: ${JSON.stringify(cookie)}`);
    check(!cookie.value.includes(TOKEN), 'the cookie holds the token itself');
    check(await page.evaluate(() => document.cookie === ''), 'the session cookie is readable from JavaScript');
    ok('signed in: HttpOnly, SameSite=Strict session cookie, not the token');

    // (8) The page and its script come with the CSP and friends.
    const resp = await page.reload();
    check(resp.status() === 200, `/ui/ signed in: ${resp.status()}`);
    const hs = resp.headers();
    check(hs['content-security-policy'] === CSP, `/ui/ CSP: ${hs['content-security-policy']}`);
    check(hs['x-content-type-options'] === 'nosniff', '/ui/ lacks X-Content-Type-Options: nosniff');
    check(hs['referrer-policy'] === 'no-referrer', '/ui/ lacks Referrer-Policy: no-referrer');
    for (const asset of ['/ui/app.js', '/ui/app.css']) {
      const a = await context.request.get(BASE + asset);
      check(a.status() === 200, `${asset}: ${a.status()}`);
      check(a.headers()['content-security-policy'] === CSP, `${asset} lacks the CSP`);
      check(a.headers()['x-content-type-options'] === 'nosniff', `${asset} lacks nosniff`);
    }
    ok('/ui/, app.js and app.css carry the CSP, nosniff and no-referrer');
    await waitText('#conn', 'Live', 'the live stream');
  });

  // (3) The list follows the daemon live.
  let sleeper;
  let stepper;
  await step('the task list, live', async () => {
    await page.evaluate(() => {
      window.__sameDocument = true;
    });
    const before = requests.length;
    sleeper = await spawn(PLAIN, { case: 'sleep', ms: 4000 }, { label: 'dash-sleep' });
    await page.locator(`tr[data-id="${sleeper}"]`).waitFor();
    ok(`spawned ${sleeper} (sleep 4 s); its row appeared`);
    await waitText(rowState(sleeper), 'running', 'the sleeping task');
    ok('its row shows it running');
    stepper = await spawn(PLAIN, { case: 'progress', steps: 5 }, { label: 'dash-progress' });
    await waitText(rowState(stepper), 'succeeded', 'the progress task');
    await waitText(`tr[data-id="${stepper}"] .progress-message`, 'step 5/5', 'the progress message');
    await waitText(`tr[data-id="${stepper}"] .progress-cell`, '100%', 'the progress');
    ok('the progress task succeeded; its row shows step 5/5 at 100%');
    await waitText(rowState(sleeper), 'succeeded', 'the sleeping task');
    ok('the sleeping task succeeded, shown without a reload');
    const order = await page.$$eval('tbody tr[data-id]', (rows) => rows.map((r) => r.dataset.id));
    check(order.indexOf(stepper) < order.indexOf(sleeper), `not newest first: ${order}`);
    check(await page.evaluate(() => window.__sameDocument === true), 'the page was reloaded');
    const during = requests.slice(before);
    const listed = during.filter((r) => r.url.pathname === '/v1/tasks' || r.url.pathname === '/ui/');
    check(listed.length === 0, `the list polled: ${listed.map((r) => r.url.href)}`);
    const reopened = during.filter((r) => r.url.pathname === '/v1/events');
    check(reopened.length === 0, `/v1/events was opened again ${reopened.length} times`);
    ok('newest first; one EventSource and no polling');
  });

  // (4) A task's page shows its events and logs, its outcome and audit.
  await step("a task's page", async () => {
    await page.locator(`tr[data-id="${stepper}"] td.c-id a`).click();
    await page.waitForURL(`${BASE}/ui/#/task/${stepper}`);
    await waitText('.events', 'hostile case progress', 'the log');
    await waitText('.events', 'step 3 of 5', 'the log');
    await waitText('.events', 'running → succeeded', 'the state events');
    await waitText('.summary-text', '5 steps', 'the summary');
    await waitText('.data-json', '"steps": 5', 'the data');
    await waitText('.state-line .badge', 'succeeded', 'the state');
    check(await page.evaluate(() => document.activeElement?.tagName === 'H1'), 'the focus did not move to the new page heading');
    ok('logs, state changes, summary and data are shown; the focus is on the heading');
    await shot('task');
  });

  // (5) Approvals: one approved from the approvals page, one denied from its task page.
  let approved;
  let denied;
  await step('approvals', async () => {
    const ask = { ask: { exec: [{ program: 'echo', args: ['hello', '*'] }] } };
    approved = await spawn(ECHO, { case: 'exec', program: 'echo', args: ['hello', 'dashboard'] }, { grants: ask, label: 'dash-approve' });
    denied = await spawn(ECHO, { case: 'exec', program: 'echo', args: ['hello', 'denied'] }, { grants: ask, label: 'dash-deny' });
    await page.getByRole('link', { name: /^Tasks/ }).click();
    await waitText(rowState(approved), 'awaiting approval', 'the task that asks');
    await waitText(rowState(denied), 'awaiting approval', 'the task that asks');
    await page.locator(`tr.attention[data-id="${approved}"] a.attention-link`).waitFor();
    ok('both tasks await approval, highlighted in the list with a link');
    await waitText('#approvals-count', '2', 'the count in the menu');
    await shot('list');
    await page.getByRole('link', { name: /^Approvals/ }).click();
    await page.waitForURL(`${BASE}/ui/#/approvals`);
    const card = page.locator(`section[data-id="${approved}"]`);
    await waitText(`section[data-id="${approved}"] code.call`, 'exec: echo hello dashboard', 'the request');
    await waitText(`section[data-id="${denied}"] code.call`, 'exec: echo hello denied', 'the request');
    ok('the approvals page shows both requests with their calls');
    await shot('approvals');
    await card.getByRole('button', { name: 'Approve' }).click();
    const t = await ended(approved);
    check(t.state === 'succeeded', `approved task: ${t.state} ${JSON.stringify(t.outcome)}`);
    check(t.outcome?.data?.stdout === 'hello dashboard\n', `approved task output: ${JSON.stringify(t.outcome?.data)}`);
    const decided = await api('GET', `/v1/tasks/${approved}/approvals`);
    check(decided[0]?.decision?.approved === true && decided[0].decision.by === 'dashboard (through a dashboard session)', `decision: ${JSON.stringify(decided[0]?.decision)}`);
    await card.waitFor({ state: 'detached' });
    ok(`approved from the page; the task succeeded; recorded as "${decided[0].decision.by}"`);

    await page.locator(`section[data-id="${denied}"] h2 a`).click();
    await page.waitForURL(`${BASE}/ui/#/task/${denied}`);
    await waitText('article.approval.pending code.call', 'echo hello denied', 'the request on the task page');
    await page.getByLabel(/^Note/).fill('not from the dashboard test');
    await page.getByRole('button', { name: 'Deny' }).click();
    const d = await ended(denied);
    check(d.state === 'failed' && d.outcome?.kind === 'denied', `denied task: ${d.state} ${JSON.stringify(d.outcome)}`);
    await waitText('.state-line .badge', 'failed', 'the denied task');
    await waitText('.error-text', 'not from the dashboard test', 'the denial');
    await waitText('article.approval.decided', 'Denied', 'the decision');
    await waitText('.table-wrap[aria-label^="Audit"]', 'refused', 'the audit records');
    ok('denied from its task page, with a note; the page shows the failure, the decision and the audit records');
    const nav = await page.locator('#approvals-count').isHidden();
    check(nav, 'the menu still counts requests');
  });

  // (6) Cancel a long task from its page.
  await step('cancel', async () => {
    const id = await spawn(PLAIN, { case: 'sleep', ms: 120000 }, { label: 'dash-cancel' });
    await go(`#/task/${id}`);
    await waitText('.state-line .badge', 'running', 'the long task');
    // The cookie alone does not change anything: the header is required.
    const forged = await context.request.post(`${BASE}/v1/tasks/${id}/cancel`);
    check(forged.status() === 403, `a cookie-only POST was answered ${forged.status()}`);
    check((await api('GET', `/v1/tasks/${id}`)).cancel_requested === false, 'the cookie-only POST cancelled the task');
    ok('a POST with the cookie but without X-Skillbox-Dashboard is refused (403)');
    await page.getByRole('button', { name: 'Cancel task' }).click();
    await waitText('.state-line .badge', 'cancelled', 'the cancelled task');
    const t = await ended(id);
    check(t.state === 'cancelled', `cancelled task: ${t.state}`);
    ok('cancelled from its page; the page shows it live');
  });

  // (7) Markup in data stays text.
  await step('hostile text', async () => {
    const x1 = await spawn(PLAIN, { case: 'exfiltrate', known: HOSTILE }, { label: HOSTILE });
    const x2 = await spawn(PLAIN, { case: HOSTILE }, { label: HOSTILE });
    await page.getByRole('link', { name: /^Tasks/ }).click();
    await waitText(rowState(x1), 'succeeded', 'the exfiltrating task');
    await waitText(rowState(x2), 'failed', 'the task with a bad case');
    const label = await page.locator(`tr[data-id="${x1}"] .label`).textContent();
    check(label === HOSTILE, `the label is not shown as text: ${label}`);
    await waitText(`tr[data-id="${x1}"] .progress-message`, PAYLOADS[0], 'the progress message');
    await noDataMarkup('the task list');
    ok('the list shows labels and progress messages as text');
    await go(`#/task/${x1}`);
    await waitText('.summary-text', HOSTILE, 'the summary');
    await waitText('.data-json', JSON.stringify(HOSTILE).slice(1, -1), 'the data');
    await waitText('.events', `gathered: ${PAYLOADS[0]}`, 'the log');
    await waitText('.subtitle .label', HOSTILE, 'the label');
    await noDataMarkup("a task's page");
    ok('summary, data, logs and label are text on the task page');
    await go(`#/task/${x2}`);
    await waitText('.error-text', '<script>window.__pwned=1</script>', 'the error');
    await noDataMarkup("a failed task's page");
    await go(`#/task/${encodeURIComponent('<img src=x onerror=window.__pwned=1>')}`);
    await waitText('h1', 'Not a task id', 'a bad id');
    await noDataMarkup('a page for a bad id');
    ok('an error message and a made-up id stay text; no script ran');
  });

  // The list's filter by state.
  await step('filter', async () => {
    await page.getByRole('link', { name: /^Tasks/ }).click();
    await page.getByLabel('State').selectOption('cancelled');
    await page.waitForFunction(() => {
      const rows = [...document.querySelectorAll('tbody tr[data-id]')];
      return rows.length > 0 && rows.every((r) => r.querySelector('td.c-state .badge')?.textContent === 'cancelled');
    });
    await page.locator('tbody tr[data-id] .label', { hasText: 'dash-cancel' }).waitFor();
    ok('filtered by state: only the cancelled task is listed');
    await page.getByLabel('State').selectOption('');
    await page.locator(`tr[data-id="${stepper}"]`).waitFor();
  });

  // Deliveries: a notification nobody accepted, and Redeliver.
  await step('deliveries', async () => {
    const id = await spawn(PLAIN, { case: 'sleep', ms: 10 }, { label: 'dash-notify', notify_to: [SINK_DOWN] });
    await ended(id);
    const end = Date.now() + WAIT;
    let failed;
    while (!failed) {
      failed = (await api('GET', `/v1/tasks/${id}/deliveries`)).find((x) => x.state === 'failed');
      check(failed || Date.now() < end, 'the notification to the sink that is down never failed');
      if (!failed) await new Promise((r) => setTimeout(r, 200));
    }
    await go(`#/task/${id}`);
    await waitText('.table-wrap[aria-label^="Notifications"]', 'failed', 'the failed delivery');
    await waitText('.table-wrap[aria-label^="Notifications"]', SINK_DOWN, 'the sink');
    await page.locator('section[aria-labelledby="s-deliveries"]').screenshot({ path: path.join(SHOTS, 'deliveries.png') });
    ok(`screenshot ${path.join(SHOTS, 'deliveries.png')}`);
    await page.getByRole('button', { name: 'Redeliver failed notifications' }).click();
    await page.getByRole('button', { name: 'Redeliver failed notifications' }).waitFor({ state: 'detached' });
    const again = (await api('GET', `/v1/tasks/${id}/deliveries`)).find((x) => x.id === failed.id);
    check(again.window_ms > failed.window_ms, `Redeliver did not queue it again: ${JSON.stringify(again)}`);
    ok('a failed notification is listed with its attempts; Redeliver queued it again');
  });

  // (9) The keyboard reaches the menu, and the focus shows.
  await step('keyboard', async () => {
    await go('#/');
    await page.reload();
    await waitText('#conn', 'Live', 'the live stream');
    const reached = [];
    for (let i = 0; i < 12; i += 1) {
      await page.keyboard.press('Tab');
      reached.push(await page.evaluate(() => {
        const e = document.activeElement;
        const style = getComputedStyle(e);
        return { tag: e.tagName, text: e.textContent.trim(), outline: style.outlineStyle };
      }));
    }
    const names = reached.map((r) => `${r.tag}:${r.text}`);
    const at = (re) => reached.findIndex((r) => re.test(r.text));
    const order = [at(/^Tasks$/), at(/^Approvals/), at(/^Schedules$/), at(/^Sign out$/)];
    check(order.every((i) => i >= 0) && order.every((v, i) => i === 0 || v > order[i - 1]), `Tab order: ${names.join(', ')}`);
    check(reached.slice(0, order[3] + 1).every((r) => r.outline !== 'none'), `a focused control shows no outline: ${JSON.stringify(reached)}`);
    ok(`Tab reaches ${names.slice(0, order[3] + 1).join(', ')}, each with a visible focus ring`);
    await page.reload();
    await waitText('#conn', 'Live', 'the live stream');
    for (let i = 0; i <= order[2]; i += 1) await page.keyboard.press('Tab');
    await page.keyboard.press('Enter');
    await page.waitForURL(`${BASE}/ui/#/schedules`);
    await page.locator('h1', { hasText: 'Schedules' }).waitFor();
    ok('Enter on the focused Schedules link opens it');
  });

  // Schedules: pause, resume, run now.
  await step('schedules', async () => {
    await api('POST', '/v1/schedules', {
      name: 'dash-nightly',
      cron: '0 3 * * *',
      tz: 'Europe/Paris',
      task: { skill: PLAIN, input: { case: 'sleep', ms: 10 } },
    });
    await page.getByRole('button', { name: 'Refresh' }).click();
    const row = page.locator('tr[data-name="dash-nightly"]');
    await row.waitFor();
    await row.getByRole('button', { name: 'Pause dash-nightly' }).click();
    await row.getByRole('button', { name: 'Resume dash-nightly' }).waitFor();
    check((await api('GET', '/v1/schedules/dash-nightly')).schedule.paused === true, 'Pause did not pause');
    ok('paused from the page');
    await shot('schedules');
    await row.getByRole('button', { name: 'Run dash-nightly now' }).click();
    await page.locator('tr[data-name="dash-nightly"] [data-ran] a').waitFor();
    const ran = await page.locator('tr[data-name="dash-nightly"] [data-ran] a').getAttribute('title');
    const t = await ended(ran);
    check(t.spec?.label === 'dash-nightly' && t.state === 'succeeded', `the task run now: ${JSON.stringify(t.spec?.label)} ${t.state}`);
    ok(`run now created ${ran}, which succeeded`);
    await page.locator('tr[data-name="dash-nightly"]').getByRole('button', { name: 'Resume dash-nightly' }).click();
    await page.locator('tr[data-name="dash-nightly"]').getByRole('button', { name: 'Pause dash-nightly' }).waitFor();
    check((await api('GET', '/v1/schedules/dash-nightly')).schedule.paused === false, 'Resume did not resume');
    ok('resumed from the page');
  });

  // A phone's screen, and the dark scheme.
  await step('phone and dark', async () => {
    await page.setViewportSize({ width: 390, height: 844 });
    await page.getByRole('link', { name: /^Tasks/ }).click();
    await page.locator(`tr[data-id="${stepper}"]`).waitFor();
    const wide = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    check(wide <= 1, `the list is ${wide}px wider than a phone's screen`);
    await shot('list-phone');
    await go(`#/task/${approved}`);
    await waitText('.summary-text', 'echo exited with 0', 'the approved task');
    const wideTask = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    check(wideTask <= 1, `a task's page is ${wideTask}px wider than a phone's screen`);
    await shot('task-phone');
    ok('nothing is wider than a phone');
    await page.setViewportSize({ width: 1280, height: 860 });
    await page.emulateMedia({ colorScheme: 'dark' });
    await page.getByRole('link', { name: /^Tasks/ }).click();
    await page.locator(`tr[data-id="${stepper}"]`).waitFor();
    const bg = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
    check(bg !== 'rgb(246, 247, 249)', `the dark scheme keeps the light background: ${bg}`);
    await shot('list-dark');
    await page.emulateMedia({ colorScheme: 'light' });
  });

  // Sign out.
  await step('sign out', async () => {
    await Promise.all([page.waitForURL(`${BASE}/ui/login`), page.getByRole('button', { name: 'Sign out' }).click()]);
    const resp = await page.goto(`${BASE}/ui/`);
    check(resp.status() === 401, `/ui/ after signing out: ${resp.status()}`);
    await page.getByLabel('API token').waitFor();
    ok('signed out: /ui/ shows the login page again');
  });

  current = 'the page as a whole';
  check(pageErrors.length === 0, `uncaught errors in the page: ${pageErrors.join(' | ')}`);
  check(cspViolations.length === 0, `the page broke its own CSP: ${cspViolations.join(' | ')}`);
  check(dialogs.length === 0, `dialogs opened: ${dialogs.join(' | ')}`);
  ok('no uncaught error, no CSP violation, no dialog');
} catch (e) {
  console.error(`FAILED in "${current}": ${e instanceof Failure ? e.message : e.stack ?? e}`);
  try {
    await page.screenshot({ path: path.join(SHOTS, 'failure.png'), fullPage: true });
    console.error(`the page at the failure: ${path.join(SHOTS, 'failure.png')} (${page.url()})`);
  } catch {
    // The browser itself may be gone.
  }
  await browser.close().catch(() => {});
  process.exit(1);
}

await browser.close();
clearTimeout(watchdog);
console.log(`dashboard test passed in ${((Date.now() - started) / 1000).toFixed(1)} s`);
