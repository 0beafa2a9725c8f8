// The skillbox dashboard: the task list, a task's page, the requests
// waiting for approval and the schedules, over the daemon's own API.
//
// Everything the API returns is untrusted: skills write their summaries,
// data, logs and progress messages, and whoever spawns a task writes its
// label. The DOM is built with createElement and textContent only; no
// string from the API is ever parsed as HTML, and links are built from
// task ids that were checked first.
//
// Live updates come from one EventSource on /v1/events (every task as it
// changes) and, on a task's page, one on that task's event stream. The
// session cookie authenticates both; requests that change something carry
// the X-Skillbox-Dashboard header the daemon requires.

const ID_RE = /^[0-9A-Z]{26}$/;
const STATES = [
  'queued',
  'running',
  'awaiting_approval',
  'succeeded',
  'failed',
  'timed_out',
  'cancelled',
  'interrupted',
];
const TERMINAL = new Set(['succeeded', 'failed', 'timed_out', 'cancelled']);
const STATE_LABEL = {
  awaiting_approval: 'awaiting approval',
  timed_out: 'timed out',
};
/** How many of the newest tasks the live list holds from the start. */
const SNAPSHOT = 200;
/** Most events a task's page keeps on screen. */
const MAX_EVENTS = 5000;

// ---------------------------------------------------------------------------
// DOM helpers: text only.

/**
 * An element. `props`: `class`, `text`, `on` ({event: handler}), `dataset`,
 * any other attribute (never an inline handler, never HTML).
 */
function h(tag, props, ...children) {
  const e = document.createElement(tag);
  if (props) {
    for (const [k, v] of Object.entries(props)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = String(v);
      else if (k === 'on') for (const [ev, fn] of Object.entries(v)) e.addEventListener(ev, fn);
      else if (k === 'dataset') Object.assign(e.dataset, v);
      else if (/^on/i.test(k) || k === 'style' || k === 'srcdoc') throw new Error(`refusing attribute ${k}`);
      else e.setAttribute(k, v === true ? '' : String(v));
    }
  }
  add(e, children);
  return e;
}

/** Appends children: nodes as they are, anything else as a text node. */
function add(parent, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    parent.append(c instanceof Node ? c : String(c));
  }
  return parent;
}

/** Replaces what `parent` shows by `children` (skipping empty ones). */
function show(parent, ...children) {
  parent.replaceChildren();
  return add(parent, children);
}

/** A link to a task's page, or plain text when `id` is not a task id. */
function taskLink(id, text, props = {}) {
  if (typeof id !== 'string' || !ID_RE.test(id)) return h('span', { text: text ?? String(id) });
  return h('a', { ...props, href: `#/task/${encodeURIComponent(id)}`, title: id }, text ?? shortId(id));
}

function shortId(id) {
  return `${id.slice(0, 8)}…${id.slice(-4)}`;
}

function stateLabel(state) {
  return STATE_LABEL[state] ?? String(state);
}

function badge(state) {
  const known = STATES.includes(state) ? state : 'unknown';
  return h('span', { class: `badge state-${known}`, text: stateLabel(state) });
}

/** A `<progress>` for a fraction (indeterminate when unknown and running). */
function progressBar(task) {
  const p = h('progress', { max: '1' });
  setProgress(p, task);
  return p;
}

function setProgress(p, task) {
  const f = typeof task.progress === 'number' && Number.isFinite(task.progress)
    ? Math.min(1, Math.max(0, task.progress))
    : null;
  if (f !== null) {
    p.value = f;
    p.setAttribute('aria-label', `progress ${Math.round(f * 100)}%`);
  } else {
    p.removeAttribute('value');
    p.setAttribute('aria-label', 'progress unknown');
  }
  // Nothing to show before a run, or after one that reported none.
  p.hidden = f === null && (task.state === 'queued' || TERMINAL.has(task.state));
}

function percent(task) {
  return typeof task.progress === 'number' && Number.isFinite(task.progress)
    ? `${Math.round(Math.min(1, Math.max(0, task.progress)) * 100)}%`
    : '';
}

const dateFmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });
const timeFmt = new Intl.DateTimeFormat(undefined, { timeStyle: 'medium' });

/** A `<time>` for Unix milliseconds (today: the time alone). */
function time(ms, withDate) {
  if (typeof ms !== 'number' || !Number.isFinite(ms)) return h('span', { class: 'muted', text: '—' });
  const d = new Date(ms);
  const today = new Date().toDateString() === d.toDateString();
  return h('time', {
    datetime: d.toISOString(),
    title: dateFmt.format(d),
    text: withDate || !today ? dateFmt.format(d) : timeFmt.format(d),
  });
}

function duration(ms) {
  if (typeof ms !== 'number' || !Number.isFinite(ms) || ms < 0) return '—';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.floor(s % 60)} s`;
  const hrs = Math.floor(m / 60);
  if (hrs < 48) return `${hrs} h ${m % 60} min`;
  return `${Math.floor(hrs / 24)} d ${hrs % 24} h`;
}

/** How long the task ran (or has run so far). */
function taskDuration(task) {
  if (typeof task.started_ms !== 'number') return null;
  const end = typeof task.ended_ms === 'number' ? task.ended_ms : TERMINAL.has(task.state) ? null : Date.now();
  if (end === null) return typeof task.outcome?.duration_ms === 'number' ? task.outcome.duration_ms : null;
  return Math.max(0, end - task.started_ms);
}

function pretty(value) {
  try {
    return JSON.stringify(value, null, 2);
  } catch {
    return String(value);
  }
}

/** A task's skill name and label, as strings. */
function skillName(task) {
  return typeof task.spec?.skill_name === 'string' ? task.spec.skill_name : '?';
}

function label(task) {
  return typeof task.spec?.label === 'string' ? task.spec.label : null;
}

/** A table in a horizontally scrolling region (keyboard reachable). */
function table(caption, headers, body) {
  const t = h(
    'table',
    null,
    h('caption', { text: caption }),
    h('thead', null, h('tr', null, headers.map((x) => h('th', { scope: 'col', text: x })))),
    body,
  );
  return h('div', { class: 'table-wrap', role: 'region', 'aria-label': caption, tabindex: '0' }, t);
}

function section(title, ...children) {
  const id = `s-${title.toLowerCase().replace(/[^a-z0-9]+/g, '-')}`;
  return h('section', { class: 'card', 'aria-labelledby': id }, h('h2', { id, text: title }), children);
}

/**
 * Runs `fn`, which replaces what `box` shows; when the focus was inside
 * `box` and went with it, moves it to `fallback` so keyboard users keep
 * their place.
 */
function keepingFocus(box, fallback, fn) {
  const active = document.activeElement;
  const inside = active && active !== document.body && box.contains(active);
  fn();
  if (inside && !box.contains(document.activeElement) && fallback) {
    fallback.tabIndex = -1;
    fallback.focus({ preventScroll: true });
  }
}

function empty(text) {
  return h('p', { class: 'empty', text });
}

// ---------------------------------------------------------------------------
// Messages: alerts (errors) and polite announcements (changes).

const alerts = document.getElementById('alerts');
const announcer = document.getElementById('announcer');

function showError(err, context) {
  const message = err instanceof ApiError ? `${err.message} (${err.code})` : String(err?.message ?? err);
  const box = h(
    'div',
    { class: 'alert', role: 'alert' },
    h('p', null, context ? h('strong', { text: `${context}: ` }) : null, message),
    h('button', { type: 'button', class: 'quiet', text: 'Dismiss', on: { click: () => box.remove() } }),
  );
  alerts.append(box);
  while (alerts.children.length > 4) alerts.firstElementChild.remove();
}

function clearErrors() {
  alerts.replaceChildren();
}

let announcements = [];
let announceTimer = null;

/** Says `text` to screen readers, a few at a time. */
function announce(text) {
  announcements.push(text);
  if (announceTimer) return;
  announceTimer = setTimeout(() => {
    const said = announcements.length > 3
      ? `${announcements.length} task updates; latest: ${announcements.at(-1)}`
      : announcements.join('. ');
    announcer.textContent = said;
    announcements = [];
    announceTimer = null;
  }, 800);
}

// ---------------------------------------------------------------------------
// The API.

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function toLogin() {
  location.assign('/ui/login');
}

/** A request to the API; its JSON answer, or an ApiError. 401: sign in. */
async function api(path, { method = 'GET', body } = {}) {
  const headers = { Accept: 'application/json', 'X-Skillbox-Dashboard': '1' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let res;
  try {
    res = await fetch(path, {
      method,
      headers,
      credentials: 'same-origin',
      cache: 'no-store',
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    throw new ApiError(0, 'unreachable', `the daemon did not answer (${e.message})`);
  }
  if (res.status === 401) {
    toLogin();
    throw new ApiError(401, 'unauthorized', 'signed out');
  }
  const text = await res.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  if (!res.ok) {
    const e = json?.error;
    throw new ApiError(
      res.status,
      typeof e?.code === 'string' ? e.code : `http-${res.status}`,
      typeof e?.message === 'string' ? e.message : `${res.status} ${res.statusText}`,
    );
  }
  return json;
}

function taskPath(id, rest = '') {
  return `/v1/tasks/${encodeURIComponent(id)}${rest}`;
}

// ---------------------------------------------------------------------------
// Live tasks: one EventSource on /v1/events for the whole page.

/** Every task known to the page, by id. */
const tasks = new Map();
let live = false;
let source = null;
let retryMs = 1000;
let changed = new Set();
let renderTimer = null;

const conn = document.getElementById('conn');

function setConn(state) {
  conn.dataset.conn = state;
  conn.textContent = { live: 'Live', connecting: 'Connecting…', reconnecting: 'Reconnecting…', offline: 'Offline' }[state];
  conn.title = state === 'live' ? 'Changes appear as they happen' : 'Changes are not arriving; the page retries';
}

function parse(data) {
  try {
    return JSON.parse(data);
  } catch {
    return null;
  }
}

function describe(task) {
  const l = label(task);
  return `Task ${shortId(task.id)} (${skillName(task)}${l ? `, ${l}` : ''})`;
}

/** Stores a task as the stream or an answer gives it. */
function upsert(task, { onlyNew = false } = {}) {
  if (!task || typeof task.id !== 'string' || !ID_RE.test(task.id)) return;
  const prev = tasks.get(task.id);
  if (onlyNew && prev) return;
  tasks.set(task.id, task);
  if (live && !onlyNew) {
    if (!prev) announce(`${describe(task)} is ${stateLabel(task.state)}`);
    else if (prev.state !== task.state) announce(`${describe(task)} is now ${stateLabel(task.state)}`);
  }
  changed.add(task.id);
  scheduleRender();
}

function scheduleRender() {
  if (renderTimer) return;
  renderTimer = setTimeout(() => {
    renderTimer = null;
    const ids = changed;
    changed = new Set();
    updateApprovalCount();
    view?.onTasks?.(ids);
  }, 40);
}

function connect() {
  setConn(tasks.size ? 'reconnecting' : 'connecting');
  const es = new EventSource(`/v1/events?limit=${SNAPSHOT}`);
  source = es;
  es.addEventListener('task', (e) => upsert(parse(e.data)));
  es.addEventListener('removed', (e) => {
    const id = parse(e.data)?.id;
    if (typeof id === 'string' && tasks.delete(id)) {
      changed.add(id);
      scheduleRender();
    }
  });
  es.addEventListener('ready', () => {
    live = true;
    retryMs = 1000;
    setConn('live');
    view?.onReady?.();
  });
  es.addEventListener('error', (e) => {
    if (e instanceof MessageEvent) {
      // The daemon's own `error` event: the stream goes on.
      showError(new Error(String(e.data)), 'The live list');
      return;
    }
    live = false;
    if (es.readyState === EventSource.CLOSED) {
      // Refused (e.g. 401): the browser does not retry by itself.
      setConn('offline');
      es.close();
      api('/v1/health')
        .catch(() => {})
        .finally(() => {
          if (source === es) setTimeout(connect, retryMs);
          retryMs = Math.min(retryMs * 2, 30000);
        });
    } else {
      setConn('reconnecting');
    }
  });
}

const approvalsCount = document.getElementById('approvals-count');

function updateApprovalCount() {
  let n = 0;
  for (const t of tasks.values()) if (t.state === 'awaiting_approval') n += 1;
  approvalsCount.hidden = n === 0;
  approvalsCount.textContent = n ? String(n) : '';
}

/** Tasks the snapshot may not hold (older ones), added without overwriting. */
async function merge(query) {
  const list = await api(`/v1/tasks?${query}`);
  if (Array.isArray(list)) for (const t of list) upsert(t, { onlyNew: true });
}

// ---------------------------------------------------------------------------
// Views. Each renders into <main> and may have onTasks(ids), onReady(),
// dispose().

const main = document.getElementById('main');
let view = null;
let firstRoute = true;

function parseRoute() {
  const hash = location.hash;
  if (hash === '' || hash === '#' || hash === '#/') return { name: 'tasks' };
  if (!hash.startsWith('#/')) return null; // an in-page anchor, not a route
  const [name, arg] = hash.slice(2).split('/');
  if (name === 'task') {
    let id = '';
    try {
      id = decodeURIComponent(arg ?? '');
    } catch {
      id = '';
    }
    return { name: 'task', id };
  }
  if (name === 'approvals' || name === 'schedules') return { name };
  return { name: 'missing' };
}

function route() {
  const r = parseRoute() ?? (view ? null : { name: 'tasks' });
  if (!r) return;
  view?.dispose?.();
  view = null;
  clearErrors();
  for (const a of document.querySelectorAll('nav a[data-nav]')) {
    if (a.dataset.nav === r.name) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  const make = { tasks: taskList, task: taskPage, approvals: approvalsPage, schedules: schedulesPage }[r.name] ?? missing;
  view = make(r);
  show(main, view.root);
  document.title = `${view.title} · skillbox`;
  if (!firstRoute) {
    const heading = main.querySelector('h1');
    if (heading) {
      heading.tabIndex = -1;
      heading.focus({ preventScroll: true });
    }
    window.scrollTo(0, 0);
  }
  firstRoute = false;
}

function missing() {
  return {
    title: 'Not found',
    root: h('div', null, h('h1', { text: 'Not found' }), h('p', null, 'No such page. ', h('a', { href: '#/', text: 'Back to the tasks' }))),
  };
}

// --- the task list -----------------------------------------------------------

let listFilter = '';

function taskList() {
  const select = h(
    'select',
    { id: 'state-filter' },
    h('option', { value: '', text: 'All states' }),
    STATES.map((s) => h('option', { value: s, text: stateLabel(s) })),
  );
  select.value = listFilter;
  const tbody = h('tbody');
  const wrap = table('Tasks, newest first', ['Task', 'Skill and label', 'State', 'Progress', 'Created', 'Duration'], tbody);
  const note = h('p', { class: 'muted small' });
  const emptyRow = h('tr', { class: 'empty-row' }, h('td', { colspan: '6' }));
  const rows = new Map();
  const root = h(
    'div',
    { class: 'task-list' },
    h('div', { class: 'heading-row' }, h('h1', { text: 'Tasks' }), h('div', { class: 'filters' }, h('label', { for: 'state-filter', text: 'State' }), select)),
    wrap,
    note,
  );

  function makeRow(task) {
    const cells = {
      id: h('td', { class: 'mono c-id' }, taskLink(task.id)),
      name: h('td', { class: 'name' }),
      state: h('td', { class: 'c-state' }),
      progress: h('td', { class: 'progress-cell' }),
      created: h('td', { class: 'nowrap c-created', dataset: { th: 'Created' } }),
      duration: h('td', { class: 'nowrap num c-duration', dataset: { th: 'Duration' } }),
    };
    const tr = h('tr', { dataset: { id: task.id } }, Object.values(cells));
    const row = { tr, cells, shown: null };
    rows.set(task.id, row);
    return row;
  }

  function fill(row, task) {
    const { cells } = row;
    const key = JSON.stringify([task.state, task.progress, task.progress_message, task.cancel_requested, task.spec?.label, task.attempt]);
    if (row.shown !== key) {
      row.shown = key;
      const l = label(task);
      show(cells.name, h('span', { class: 'skill', text: skillName(task) }), l ? h('span', { class: 'label', text: l }) : null);
      const stateParts = [badge(task.state)];
      if (task.cancel_requested && !TERMINAL.has(task.state)) stateParts.push(h('span', { class: 'muted small', text: ' cancelling' }));
      if (task.state === 'awaiting_approval') {
        stateParts.push(' ', taskLink(task.id, 'Review', { class: 'attention-link', 'aria-label': `Review the approval request of ${describe(task)}` }));
      }
      show(cells.state, ...stateParts);
      const pct = percent(task);
      show(cells.progress,
        h('div', { class: 'progress-line' }, progressBar(task), pct ? h('span', { class: 'num small', text: pct }) : null),
        task.progress_message ? h('div', { class: 'progress-message', title: task.progress_message, text: task.progress_message }) : null,
      );
      row.tr.classList.toggle('attention', task.state === 'awaiting_approval');
      if (cells.created.childElementCount === 0) cells.created.append(time(task.created_ms));
    }
    cells.duration.textContent = duration(taskDuration(task) ?? NaN);
  }

  function render() {
    const list = [...tasks.values()]
      .filter((t) => !listFilter || t.state === listFilter)
      .sort((a, b) => (b.created_ms - a.created_ms) || (a.id < b.id ? 1 : -1));
    const keep = new Set(list.map((t) => t.id));
    for (const [id, row] of rows) {
      if (!keep.has(id)) {
        row.tr.remove();
        rows.delete(id);
      }
    }
    list.forEach((t, i) => {
      const row = rows.get(t.id) ?? makeRow(t);
      fill(row, t);
      const at = tbody.children[i];
      if (at !== row.tr) tbody.insertBefore(row.tr, at ?? null);
    });
    if (list.length === 0) {
      emptyRow.firstChild.textContent = !live
        ? 'Loading…'
        : listFilter ? `No ${stateLabel(listFilter)} tasks.` : 'No tasks yet. Spawn one with skillbox spawn or POST /v1/tasks.';
      tbody.append(emptyRow);
    } else {
      emptyRow.remove();
    }
    note.textContent = `${list.length} shown. The list follows the daemon live: new tasks and every change appear without reloading.`;
  }

  select.addEventListener('change', () => {
    listFilter = select.value;
    if (listFilter) merge(`state=${encodeURIComponent(listFilter)}&limit=100`).catch((e) => showError(e, 'Listing tasks'));
    render();
  });
  if (listFilter) merge(`state=${encodeURIComponent(listFilter)}&limit=100`).catch((e) => showError(e, 'Listing tasks'));

  // Durations of running tasks move on without any request.
  const tick = setInterval(() => {
    for (const [id, row] of rows) {
      const t = tasks.get(id);
      if (t && !TERMINAL.has(t.state) && typeof t.started_ms === 'number') row.cells.duration.textContent = duration(taskDuration(t));
    }
  }, 1000);

  render();
  return {
    title: 'Tasks',
    root,
    onTasks: render,
    onReady: render,
    dispose: () => clearInterval(tick),
  };
}

// --- approvals: shared by the task page and the approvals page ------------------

/** A request for approval; pending ones have Approve and Deny. */
function approvalCard(task, a, after) {
  const pending = a.decision === null || a.decision === undefined;
  const req = a.request ?? {};
  const n = Number.isInteger(a.id) ? a.id : null;
  const noteId = `note-${task.id}-${n}`;
  const details = h(
    'dl',
    { class: 'pairs' },
    h('dt', { text: 'Call' }),
    h('dd', null, h('code', { class: 'call', text: `${req.capability ?? '?'}: ${req.detail ?? ''}` })),
    h('dt', { text: 'Rule' }),
    h('dd', { text: req.rule ?? '' }),
    req.reason ? [h('dt', { text: 'The skill says' }), h('dd', { class: 'quote', text: req.reason })] : null,
    h('dt', { text: 'Asked' }),
    h('dd', null, time(a.requested_ms)),
    pending ? [h('dt', { text: 'Denied unless decided by' }), h('dd', null, time(a.expires_ms))] : null,
  );
  const card = h(
    'article',
    { class: `approval ${pending ? 'pending' : 'decided'}`, 'aria-label': `Request ${n ?? '?'} of ${describe(task)}` },
    h('h3', null, `Request #${n ?? '?'} `, pending ? h('span', { class: 'badge state-awaiting_approval', text: 'pending' }) : null),
    details,
  );
  if (pending) {
    const note = h('input', { id: noteId, type: 'text', maxlength: '512', autocomplete: 'off' });
    const status = h('span', { class: 'muted small', role: 'status' });
    const decide = async (decision, button) => {
      for (const b of card.querySelectorAll('button')) b.disabled = true;
      status.textContent = decision === 'approve' ? 'Approving…' : 'Denying…';
      const body = { decision, as: 'dashboard' };
      if (n !== null) body.request = n;
      if (note.value.trim()) body.note = note.value.trim();
      try {
        await api(taskPath(task.id, '/approvals'), { method: 'POST', body });
        status.textContent = decision === 'approve' ? 'Approved.' : 'Denied.';
        announce(`Request ${n} of ${describe(task)} ${decision === 'approve' ? 'approved' : 'denied'}`);
        after?.();
      } catch (e) {
        status.textContent = '';
        for (const b of card.querySelectorAll('button')) b.disabled = false;
        button.focus();
        showError(e, decision === 'approve' ? 'Approving' : 'Denying');
      }
    };
    const approve = h('button', { type: 'button', class: 'primary', text: 'Approve' });
    const deny = h('button', { type: 'button', class: 'danger', text: 'Deny' });
    approve.addEventListener('click', () => decide('approve', approve));
    deny.addEventListener('click', () => decide('deny', deny));
    card.append(
      h('div', { class: 'field' }, h('label', { for: noteId, text: 'Note (optional, recorded with the decision)' }), note),
      h('div', { class: 'actions' }, approve, deny, status),
    );
  } else {
    const d = a.decision;
    card.append(
      h(
        'p',
        { class: 'decision' },
        h('span', { class: `verdict ${d.approved ? 'allowed' : 'refused'}`, text: d.approved ? 'Approved' : 'Denied' }),
        ` by ${d.by ?? '?'}`,
        typeof d.at_ms === 'number' ? [' at ', time(d.at_ms)] : null,
        d.always_for_task ? ' (and every later call of this rule in the task)' : null,
        d.note ? [' — ', h('q', { text: d.note })] : null,
      ),
    );
  }
  return card;
}

// --- a task's page -----------------------------------------------------------------

function taskPage({ id }) {
  if (!ID_RE.test(id)) {
    return {
      title: 'Not a task',
      root: h('div', null, h('h1', { text: 'Not a task id' }), h('p', null, 'Task ids are 26 letters and digits. ', h('a', { href: '#/', text: 'Back to the tasks' }))),
    };
  }
  const disposers = [];
  let task = tasks.get(id) ?? null;

  const title = h('h1', null, 'Task ', h('span', { class: 'mono', text: id }));
  const subtitle = h('p', { class: 'subtitle' });
  const stateBox = h('div', { class: 'state-line' });
  const facts = h('dl', { class: 'facts' });
  const actions = h('div', { class: 'actions' });
  const outcome = h('div');
  const approvalsBox = h('div');
  const eventsList = h('ol', { class: 'events', 'aria-label': 'Events, oldest first' });
  const eventsNote = h('p', { class: 'muted small' });
  const checkpointsBox = h('div');
  const auditBox = h('div');
  const deliveriesBox = h('div');
  const extraBox = h('div');

  const approvalsSection = section('Approvals', approvalsBox);
  approvalsSection.hidden = true;
  const root = h(
    'div',
    { class: 'task-page' },
    h('p', { class: 'crumbs' }, h('a', { href: '#/', text: '← Tasks' })),
    title,
    subtitle,
    h('section', { class: 'card summary', 'aria-label': 'Summary' }, stateBox, facts, actions),
    approvalsSection,
    section('Outcome', outcome),
    section('Events and logs', h('div', { class: 'events-wrap', role: 'region', 'aria-label': 'Events and logs', tabindex: '0' }, eventsList), eventsNote),
    section('Checkpoints', checkpointsBox),
    section('Audit records', auditBox),
    section('Deliveries', deliveriesBox),
    section('Input and policy', extraBox),
  );

  // The header, facts and buttons, from the task as the page knows it.
  let shownState = null;
  let deliveries = [];
  function renderTask() {
    if (!task) {
      show(stateBox, h('span', { class: 'muted', text: 'Loading…' }));
      return;
    }
    const l = label(task);
    show(subtitle, h('span', { class: 'skill', text: skillName(task) }), l ? h('span', { class: 'label', text: l }) : null);
    const pct = percent(task);
    show(stateBox,
      badge(task.state),
      task.cancel_requested && !TERMINAL.has(task.state) ? h('span', { class: 'muted', text: 'cancel requested' }) : null,
      h('span', { class: 'progress-line grow' }, progressBar(task), pct ? h('span', { class: 'num', text: pct }) : null),
      task.progress_message ? h('span', { class: 'progress-message', text: task.progress_message }) : null,
    );
    const spec = task.spec ?? {};
    const pairs = [
      ['Skill', spec.skill_name],
      ['Label', spec.label],
      ['Attempt', String(task.attempt ?? '')],
      ['Created', time(task.created_ms, true)],
      ['Started', time(task.started_ms, true)],
      ['Ended', typeof task.ended_ms === 'number' ? time(task.ended_ms, true) : null],
      ['Duration', duration(taskDuration(task) ?? NaN)],
      ['Host', task.owner],
      ['Parent session', spec.parent_session],
      ['Schedule', spec.schedule ? (typeof spec.schedule.name === 'string' ? spec.schedule.name : pretty(spec.schedule)) : null],
      ['Notify', spec.notify],
      ['Events dropped', task.events_dropped ? String(task.events_dropped) : null],
      ['Component', typeof spec.digest === 'string' ? h('code', { class: 'digest', text: spec.digest, title: 'sha256' }) : null],
    ];
    show(facts,
      ...pairs
        .filter(([, v]) => v !== null && v !== undefined && v !== '')
        .map(([k, v]) => h('div', { class: 'fact' }, h('dt', { text: k }), h('dd', { dataset: { fact: k.toLowerCase() } }, v))),
    );
    renderActions();
    if (shownState !== task.state) {
      const before = shownState;
      shownState = task.state;
      renderOutcome();
      if (before !== null) {
        loadApprovals();
        loadDeliveries();
        if (TERMINAL.has(task.state)) loadAudit();
      }
    }
  }

  function renderActions() {
    const parts = [];
    if (task && !TERMINAL.has(task.state)) {
      const cancel = h('button', { type: 'button', class: 'danger', text: task.cancel_requested ? 'Cancel requested' : 'Cancel task' });
      cancel.disabled = task.cancel_requested;
      cancel.addEventListener('click', async () => {
        cancel.disabled = true;
        try {
          // The answer may be older than what the stream already brought:
          // the stream alone updates the page.
          await api(taskPath(id, '/cancel'), { method: 'POST' });
          announce(`Cancel requested for ${describe(task)}`);
        } catch (e) {
          cancel.disabled = false;
          showError(e, 'Cancelling');
        }
      });
      parts.push(cancel);
    }
    if (deliveries.some((d) => d.state === 'failed')) {
      const again = h('button', { type: 'button', text: 'Redeliver failed notifications' });
      again.addEventListener('click', async () => {
        again.disabled = true;
        try {
          const r = await api(taskPath(id, '/redeliver'), { method: 'POST' });
          deliveries = Array.isArray(r?.deliveries) ? r.deliveries : deliveries;
          announce(`${r?.requeued ?? 0} notifications queued again`);
          renderDeliveries();
          renderActions();
        } catch (e) {
          again.disabled = false;
          showError(e, 'Redelivering');
        }
      });
      parts.push(again);
    }
    // Keep the focused button when nothing about it changed.
    const same = parts.length === actions.children.length
      && parts.every((p, i) => p.textContent === actions.children[i].textContent && p.disabled === actions.children[i].disabled);
    if (!same) show(actions, ...parts);
  }

  function renderOutcome() {
    const o = task?.outcome;
    if (!task || !TERMINAL.has(task.state) || !o || typeof o !== 'object') {
      show(outcome, empty(task ? 'Not ended yet.' : 'Loading…'));
      return;
    }
    const parts = [h('p', { class: 'outcome-line' }, badge(task.state), typeof o.outcome === 'string' && o.outcome.replace('-', '_') !== task.state ? h('span', { class: 'muted', text: o.outcome }) : null)];
    if (typeof o.text === 'string') {
      parts.push(h('h3', { text: 'Summary' }), h('pre', { class: 'summary-text', text: o.text }));
    }
    const err = [o.kind, o.message ?? o.reason].filter((x) => typeof x === 'string' && x);
    if (err.length) {
      parts.push(h('h3', { text: 'Error' }), h('pre', { class: 'error-text', text: err.join(': ') }));
    }
    if (typeof o.limit_ms === 'number') parts.push(h('p', { text: `The limit was ${duration(o.limit_ms)}.` }));
    if (o.limit !== undefined) parts.push(h('p', { text: `Limit: ${typeof o.limit === 'string' ? o.limit : pretty(o.limit)}` }));
    if (o.data !== undefined && o.data !== null) {
      parts.push(h('h3', { text: 'Data' }), h('pre', { class: 'data-json', text: pretty(o.data) }));
    }
    const notification = h('details', { class: 'notification' }, h('summary', { text: 'The notification its sinks get' }));
    notification.addEventListener('toggle', async () => {
      if (!notification.open || notification.dataset.loaded) return;
      notification.dataset.loaded = '1';
      try {
        const n = await api(taskPath(id, '/notification'));
        notification.append(h('pre', { class: 'notification-message', text: typeof n?.message === 'string' ? n.message : pretty(n) }));
      } catch (e) {
        delete notification.dataset.loaded;
        showError(e, 'Loading the notification');
      }
    }, { once: false });
    parts.push(notification);
    show(outcome, ...parts);
  }

  // Approvals: fetched when the page opens and when the state changes.
  let approvalsSeq = 0;
  async function loadApprovals() {
    const mine = ++approvalsSeq;
    try {
      const list = await api(taskPath(id, '/approvals'));
      if (mine !== approvalsSeq || !Array.isArray(list)) return;
      approvalsSection.hidden = list.length === 0;
      const pending = list.filter((a) => !a.decision);
      keepingFocus(approvalsBox, approvalsSection.querySelector('h2'), () => show(approvalsBox,
        pending.length ? h('p', { class: 'attention-text', text: `${pending.length} request${pending.length > 1 ? 's' : ''} waiting for a decision.` }) : null,
        ...list.map((a) => approvalCard(task ?? { id, spec: {} }, a, () => {
          loadApprovals();
          loadAudit();
        })),
      ));
    } catch (e) {
      if (e.status !== 404) showError(e, 'Loading approvals');
    }
  }

  // Events: the task's live stream, resumed by the browser, closed at the end.
  let lastSeq = 0;
  let eventCount = 0;
  const checkpoints = new Map();
  let events = null;
  function onEvent(e) {
    const ev = parse(e.data);
    if (!ev || typeof ev.seq !== 'number' || ev.seq <= lastSeq) return;
    lastSeq = ev.seq;
    const stick = nearBottom();
    eventsList.append(eventItem(ev));
    eventCount += 1;
    if (eventsList.children.length > MAX_EVENTS) eventsList.firstElementChild.remove();
    eventsNote.textContent = `${eventCount} events${eventCount > MAX_EVENTS ? `; the latest ${MAX_EVENTS} shown` : ''}.`;
    if (stick) eventsList.parentElement.scrollTop = eventsList.parentElement.scrollHeight;
    if (ev.kind === 'checkpoint') {
      const c = checkpoints.get(ev.key) ?? { saves: 0 };
      checkpoints.set(ev.key, { key: ev.key, bytes: ev.bytes, at_ms: ev.at_ms, saves: c.saves + 1 });
      renderCheckpoints();
    }
    if (ev.kind === 'audit') scheduleAudit();
    if (ev.kind === 'state') {
      if (ev.to === 'awaiting_approval' || ev.from === 'awaiting_approval') loadApprovals();
      if (TERMINAL.has(ev.to)) {
        // The stream ends with the task; the browser must not reopen it.
        events?.close();
        eventsNote.textContent = `${eventCount} events. The task has ended.`;
      }
    }
  }
  function nearBottom() {
    const box = eventsList.parentElement;
    return !box || box.scrollHeight - box.scrollTop - box.clientHeight < 40;
  }
  function openEvents() {
    events = new EventSource(taskPath(id, '/events'));
    for (const kind of ['state', 'progress', 'log', 'output', 'audit', 'checkpoint', 'truncated', 'message']) {
      events.addEventListener(kind, onEvent);
    }
    events.addEventListener('error', (e) => {
      if (e instanceof MessageEvent) {
        showError(new Error(String(e.data)), 'The task\'s events');
        return;
      }
      if (events.readyState === EventSource.CLOSED) {
        eventsNote.textContent = `${eventCount} events. The stream closed.`;
        api(taskPath(id)).catch((e) => showError(e, 'Following the events'));
      }
    });
    disposers.push(() => events.close());
  }

  function renderCheckpoints() {
    if (checkpoints.size === 0) {
      show(checkpointsBox, empty('No checkpoint saved. A skill that saves checkpoints resumes from the last one after a crash.'));
      return;
    }
    const body = h(
      'tbody',
      null,
      [...checkpoints.values()].map((c) =>
        h('tr', null, h('th', { scope: 'row', class: 'mono', text: c.key }), h('td', { class: 'num', text: `${c.bytes} bytes` }), h('td', { class: 'num', text: String(c.saves) }), h('td', null, time(c.at_ms))),
      ),
    );
    show(checkpointsBox,
      table('Checkpoints, by key', ['Key', 'Size', 'Saves', 'Last saved'], body),
      h('p', { class: 'muted small', text: 'The API reports each save (key and size); the saved bytes stay in the task store.' }),
    );
  }

  // Audit records of the task (the chain's own records, with who decided).
  let auditTimer = null;
  function scheduleAudit() {
    if (auditTimer) return;
    auditTimer = setTimeout(() => {
      auditTimer = null;
      loadAudit();
    }, 700);
  }
  disposers.push(() => clearTimeout(auditTimer));
  async function loadAudit() {
    try {
      const records = await api(`/v1/audit?task=${encodeURIComponent(id)}&limit=5000`);
      if (!Array.isArray(records) || records.length === 0) {
        show(auditBox, empty('No audit record yet: this task has met no capability check.'));
        return;
      }
      const body = h(
        'tbody',
        null,
        records.map((r) =>
          h(
            'tr',
            null,
            h('td', { class: 'num', text: String(r.seq) }),
            h('td', { class: 'nowrap' }, time(r.at_ms)),
            h('td', { text: `${r.capability ?? ''}${r.kind && r.kind !== 'call' ? ` (${r.kind})` : ''}` }),
            h('td', null, h('span', { class: `verdict ${r.allowed ? 'allowed' : 'refused'}`, text: r.allowed ? 'allowed' : 'refused' })),
            h('td', { class: 'detail' }, h('code', { text: r.detail ?? '' }), r.reason ? h('div', { class: 'muted small', text: r.reason }) : null, r.by ? h('div', { class: 'small', text: `by ${r.by}` }) : null),
          ),
        ),
      );
      show(auditBox, table('Audit records of this task, in chain order', ['Seq', 'Time', 'Capability', 'Verdict', 'Detail'], body));
    } catch (e) {
      showError(e, 'Loading audit records');
    }
  }

  // Deliveries: the notifications of the task to each sink, with attempts.
  async function loadDeliveries() {
    try {
      const list = await api(taskPath(id, '/deliveries'));
      deliveries = Array.isArray(list) ? list : [];
      renderDeliveries();
      renderActions();
    } catch (e) {
      if (e.status !== 404) showError(e, 'Loading deliveries');
    }
  }
  function renderDeliveries() {
    const refresh = h('button', { type: 'button', class: 'quiet', text: 'Refresh deliveries' });
    refresh.addEventListener('click', loadDeliveries);
    if (deliveries.length === 0) {
      show(deliveriesBox, empty('No notification: the task has no relay sink, or nothing was announced yet.'), refresh);
      return;
    }
    const body = h(
      'tbody',
      null,
      deliveries.map((d) =>
        h(
          'tr',
          null,
          h('th', { scope: 'row', text: d.sink ?? '' }),
          h('td', null, d.from ? `${stateLabel(d.from)} → ` : '', stateLabel(d.to ?? '')),
          h('td', null, h('span', { class: `badge delivery-${['pending', 'delivered', 'failed', 'skipped'].includes(d.state) ? d.state : 'unknown'}`, text: d.state ?? '?' })),
          h('td', { class: 'num', text: String(d.attempts ?? 0) }),
          h(
            'td',
            { class: 'detail' },
            d.last_error ? h('div', { class: 'error-text', text: d.last_error }) : null,
            typeof d.next_ms === 'number' && d.state === 'pending' ? h('div', { class: 'small' }, 'next try ', time(d.next_ms)) : null,
            Array.isArray(d.history) && d.history.length
              ? h(
                  'details',
                  null,
                  h('summary', { text: `${d.history.length} attempt${d.history.length > 1 ? 's' : ''}` }),
                  h(
                    'ol',
                    { class: 'attempts' },
                    d.history.map((a) =>
                      h('li', null, time(a.at_ms), ` ${a.ok ? 'ok' : 'failed'}`, typeof a.status === 'number' ? ` (HTTP ${a.status})` : '', ` in ${duration(a.duration_ms)}`, a.detail ? h('div', { class: 'small mono-wrap', text: a.detail }) : null),
                    ),
                  ),
                )
              : null,
          ),
        ),
      ),
    );
    show(deliveriesBox, table('Notifications of this task, one per sink and announced change', ['Sink', 'Change', 'State', 'Attempts', 'Detail'], body), refresh);
  }

  function renderExtra() {
    if (!task) return;
    const spec = task.spec ?? {};
    let input = spec.input;
    if (typeof input === 'string') {
      const parsed = parse(input);
      if (parsed !== null) input = parsed;
    }
    show(extraBox,
      h('details', null, h('summary', { text: 'Input' }), h('pre', { class: 'data-json', text: typeof input === 'string' ? input : pretty(input) })),
      h('details', null, h('summary', { text: 'Effective policy' }), h('pre', { class: 'data-json', text: pretty(spec.policy ?? null) })),
      h('p', { class: 'muted small' }, 'Skill: ', h('code', { class: 'mono-wrap', text: String(spec.skill ?? '') })),
    );
  }

  async function loadTask() {
    try {
      const t = await api(taskPath(id));
      // The stream has the latest when it already sent this task.
      upsert(t, { onlyNew: true });
      task = tasks.get(id);
      renderTask();
      renderExtra();
    } catch (e) {
      if (e.status === 404) {
        show(root, h('h1', { text: 'No such task' }), h('p', null, `Task ${id} does not exist, or was deleted. `, h('a', { href: '#/', text: 'Back to the tasks' })));
        disposers.forEach((d) => d());
      } else {
        showError(e, 'Loading the task');
      }
    }
  }

  renderTask();
  renderExtra();
  renderOutcome();
  renderCheckpoints();
  show(auditBox, empty('Loading…'));
  show(deliveriesBox, empty('Loading…'));
  loadTask();
  loadApprovals();
  loadAudit();
  loadDeliveries();
  openEvents();

  const tick = setInterval(() => {
    if (task && !TERMINAL.has(task.state)) {
      const d = facts.querySelector('[data-fact="duration"]');
      if (d) d.textContent = duration(taskDuration(task) ?? NaN);
    }
  }, 1000);
  disposers.push(() => clearInterval(tick));

  return {
    title: `Task ${shortId(id)}`,
    root,
    onTasks(ids) {
      if (!ids.has(id) || !tasks.has(id)) return;
      const first = !task;
      task = tasks.get(id);
      renderTask();
      if (first) renderExtra();
    },
    dispose: () => disposers.forEach((d) => d()),
  };
}

/** One event of a task's stream, as a list item (text only). */
function eventItem(ev) {
  const li = h('li', { class: `event kind-${/^[a-z-]+$/.test(ev.kind) ? ev.kind : 'other'}` });
  const at = h('span', { class: 'at' }, time(ev.at_ms));
  let kind = String(ev.kind);
  let text = '';
  switch (ev.kind) {
    case 'state':
      text = `${ev.from ? stateLabel(ev.from) : 'new'} → ${stateLabel(ev.to)}${ev.reason ? `: ${ev.reason}` : ''}`;
      break;
    case 'progress':
      text = `${typeof ev.fraction === 'number' ? `${Math.round(ev.fraction * 100)}% ` : ''}${ev.message ?? ''}`;
      break;
    case 'log':
      kind = String(ev.level ?? 'log');
      li.classList.add(`level-${/^[a-z]+$/.test(kind) ? kind : 'other'}`);
      text = String(ev.message ?? '');
      break;
    case 'output':
      kind = String(ev.stream ?? 'output');
      text = String(ev.text ?? '');
      break;
    case 'audit':
      li.classList.add(ev.allowed ? 'allowed' : 'refused');
      text = `${ev.capability ?? ''} ${ev.allowed ? 'allowed' : 'refused'}: ${ev.detail ?? ''}${ev.reason ? ` (${ev.reason})` : ''}`;
      break;
    case 'checkpoint':
      text = `saved ${ev.key ?? ''} (${ev.bytes ?? 0} bytes)`;
      break;
    case 'truncated':
      text = `dropped later ${ev.what ?? 'events'}`;
      break;
    default:
      text = pretty(ev);
  }
  return add(li, [at, h('span', { class: 'kind', text: kind }), h('span', { class: 'text', text })]);
}

// --- approvals page ------------------------------------------------------------------

function approvalsPage() {
  const list = h('div', { class: 'approvals-list' });
  const root = h(
    'div',
    null,
    h('h1', { text: 'Approvals' }),
    h('p', { class: 'muted', text: 'Calls that wait for an operator: approve to let the call go on, deny to refuse it as if it were not granted. Each decision is recorded in the audit trail as the dashboard\'s.' }),
    list,
  );
  const cards = new Map(); // task id -> {el, key}
  let loading = new Set();

  async function loadOne(t) {
    if (loading.has(t.id)) return;
    loading.add(t.id);
    try {
      const approvals = await api(taskPath(t.id, '/approvals'));
      const current = tasks.get(t.id) ?? t;
      const pending = Array.isArray(approvals) ? approvals.filter((a) => !a.decision) : [];
      const old = cards.get(t.id);
      if (current.state !== 'awaiting_approval') {
        keepingFocus(old?.el ?? list, root.querySelector('h1'), () => {
          old?.el.remove();
          cards.delete(t.id);
          render();
        });
        return;
      }
      const key = JSON.stringify(pending.map((a) => a.id));
      if (old && old.key === key) return;
      const el = h(
        'section',
        { class: 'card task-approvals', 'aria-label': describe(current), dataset: { id: t.id } },
        h('h2', null, taskLink(t.id, `Task ${shortId(t.id)}`), ' ', h('span', { class: 'skill', text: skillName(current) }), label(current) ? h('span', { class: 'label', text: label(current) }) : null),
        pending.length ? pending.map((a) => approvalCard(current, a, () => loadOne(tasks.get(t.id) ?? t))) : empty('No pending request: it was just decided.'),
      );
      keepingFocus(old?.el ?? list, root.querySelector('h1'), () => {
        if (old) old.el.replaceWith(el);
        cards.set(t.id, { el, key });
        render();
      });
    } catch (e) {
      if (e.status !== 404 && e.status !== 401) showError(e, `Loading the requests of ${shortId(t.id)}`);
    } finally {
      loading.delete(t.id);
    }
  }

  function render(ids) {
    keepingFocus(list, root.querySelector('h1'), () => update(ids));
  }

  function update(ids) {
    const waiting = [...tasks.values()].filter((t) => t.state === 'awaiting_approval').sort((a, b) => a.created_ms - b.created_ms);
    const wanted = new Set(waiting.map((t) => t.id));
    for (const [tid, c] of cards) {
      if (!wanted.has(tid)) {
        c.el.remove();
        cards.delete(tid);
      }
    }
    for (const t of waiting) {
      if (!cards.has(t.id) || ids?.has(t.id)) loadOne(t);
    }
    const els = waiting.map((t) => cards.get(t.id)?.el).filter(Boolean);
    if (els.length === 0) {
      show(list, empty(live ? 'Nothing waits for approval.' : 'Loading…'));
    } else if (els.length !== list.children.length || els.some((e, i) => list.children[i] !== e)) {
      show(list, ...els);
    }
  }

  merge('state=awaiting_approval&limit=500').catch((e) => showError(e, 'Listing tasks'));
  render();
  return { title: 'Approvals', root, onTasks: render, onReady: () => render() };
}

// --- schedules page ----------------------------------------------------------------

function schedulesPage() {
  const box = h('div');
  const refresh = h('button', { type: 'button', class: 'quiet', text: 'Refresh' });
  const root = h(
    'div',
    null,
    h('div', { class: 'heading-row' }, h('h1', { text: 'Schedules' }), refresh),
    h('p', { class: 'muted', text: 'Each schedule creates one ordinary task per slot of its cron expression; its tasks are labelled with its name.' }),
    box,
  );
  let seq = 0;
  /** The task each "Run now" created, by schedule. */
  const ran = new Map();

  async function load(focusName, focusAction) {
    const mine = ++seq;
    try {
      const list = await api('/v1/schedules');
      if (mine !== seq) return;
      render(Array.isArray(list) ? list : []);
      if (focusName) box.querySelector(`button[data-name="${CSS.escape(focusName)}"][data-action="${focusAction}"]`)?.focus();
    } catch (e) {
      showError(e, 'Listing schedules');
    }
  }

  function act(name, action, button) {
    return async () => {
      button.disabled = true;
      try {
        const r = await api(`/v1/schedules/${encodeURIComponent(name)}/${action}`, { method: 'POST' });
        if (action === 'run' && r && typeof r.id === 'string') {
          upsert(r, { onlyNew: true });
          announce(`Schedule ${name}: task ${shortId(r.id)} created`);
          ran.set(name, r.id);
        } else {
          announce(`Schedule ${name} ${action === 'pause' ? 'paused' : 'resumed'}`);
        }
        const next = action === 'pause' ? 'resume' : action === 'resume' ? 'pause' : 'run';
        await load(name, next);
      } catch (e) {
        button.disabled = false;
        showError(e, `${action} ${name}`);
      }
    };
  }

  function render(list) {
    if (list.length === 0) {
      show(box, empty('No schedule. Add one with skillbox schedule add or POST /v1/schedules.'));
      return;
    }
    const body = h(
      'tbody',
      null,
      list.map((s) => {
        const spec = s.spec ?? {};
        const name = String(spec.name ?? '');
        const toggle = h('button', { type: 'button', dataset: { name, action: s.paused ? 'resume' : 'pause' }, text: s.paused ? 'Resume' : 'Pause', 'aria-label': `${s.paused ? 'Resume' : 'Pause'} ${name}` });
        toggle.addEventListener('click', act(name, s.paused ? 'resume' : 'pause', toggle));
        const run = h('button', { type: 'button', dataset: { name, action: 'run' }, text: 'Run now', 'aria-label': `Run ${name} now` });
        run.addEventListener('click', act(name, 'run', run));
        return h(
          'tr',
          { dataset: { name } },
          h('th', { scope: 'row', text: name }),
          h('td', null, h('code', { text: String(spec.cron ?? '') }), h('div', { class: 'muted small', text: String(spec.tz ?? 'UTC') })),
          h('td', null, s.paused ? h('span', { class: 'badge state-paused', text: 'paused' }) : h('span', { class: 'badge state-active', text: 'active' })),
          h('td', { class: 'nowrap' }, s.paused ? h('span', { class: 'muted', text: '—' }) : time(s.next_ms, true)),
          h('td', null, s.last_task ? taskLink(s.last_task) : h('span', { class: 'muted', text: '—' })),
          h('td', { class: 'num', text: `${s.fired ?? 0} / ${s.skipped ?? 0}` }),
          h('td', null, h('div', { class: 'actions tight' }, toggle, run), h('div', { class: 'small', role: 'status', dataset: { ran: name } }, ran.has(name) ? ['Created ', taskLink(ran.get(name))] : null)),
        );
      }),
    );
    show(box, table('Schedules, by name', ['Name', 'Cron', 'State', 'Next slot', 'Last task', 'Fired / skipped', 'Actions'], body));
  }

  refresh.addEventListener('click', () => load());
  box.append(empty('Loading…'));
  load();
  return { title: 'Schedules', root };
}

// ---------------------------------------------------------------------------
// Start.

// The skip link moves the focus without touching the route in the hash.
document.querySelector('a.skip').addEventListener('click', (e) => {
  e.preventDefault();
  main.focus();
});

document.getElementById('sign-out').addEventListener('click', async () => {
  source?.close();
  source = null;
  try {
    await fetch('/ui/logout', { method: 'POST', credentials: 'same-origin', headers: { 'X-Skillbox-Dashboard': '1' } });
  } finally {
    toLogin();
  }
});

window.addEventListener('hashchange', route);
route();
connect();
updateApprovalCount();
api('/v1/health')
  .then((health) => {
    if (typeof health?.version === 'string') document.getElementById('version').textContent = `skillbox ${health.version}`;
  })
  .catch(() => {});
