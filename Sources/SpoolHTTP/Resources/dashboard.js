'use strict';
(() => {
  const TERMINAL = new Set(['succeeded', 'failed', 'canceled']);
  const S = {
    recent: [], queued: [], queuedTotal: 0, queue: null,
    jobs: new Map(),          // id -> latest job JSON we know
    outputs: new Map(),       // id -> outputs list (final once a job is terminal)
    outputsLoading: new Set(),
    outputsCut: new Set(),    // ids whose outputs list holds only some of their files ("truncated")
    selected: null, selectedJob: null, logOffset: 0, logDecoder: null,
    attempts: null,           // GET /v1/jobs/{selected}/attempts, once loaded
    // Job arrays: the tasks of one show as one line (its array) in the lists, expandable.
    recentLines: [],          // what "Recent jobs" shows: { job } or { array: id, job: its newest task }
    arrays: new Map(),        // array id -> latest GET /v1/arrays/{id}
    arrayTasks: new Map(),    // array id -> { tasks: [...], next: cursor or null } once expanded
    expanded: new Set(),      // arrays whose tasks are shown under their line
    es: null,
    loggedOut: false,        // the server wants a token and the page has no session
  };
  const $ = (id) => document.getElementById(id);
  const RECENT_LINES = 25;    // lines in "Recent jobs" (a job, or a job array)
  const RECENT_PAGE = 200;    // jobs per /v1/jobs page read for them…
  const RECENT_PAGES = 3;     // …and at most this many pages, when arrays' tasks fill them
  const TASK_PAGE = 100;      // tasks of an expanded array per page
  const OUTPUTS_SHOWN = 200;  // outputs shown in a job's details (a job may write thousands)

  // --- DOM helpers: data only ever goes in through textContent and setAttribute. ---
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === 'text') node.textContent = String(value);
      else if (key === 'class') node.className = value;
      else if (key === 'onclick') node.addEventListener('click', value);
      else node.setAttribute(key, value === true ? '' : String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }
  // Replaces a container's children, keeping keyboard focus on the same control if it survives.
  function render(container, ...children) {
    const active = document.activeElement;
    const key = active && container.contains(active) ? active.getAttribute('data-key') : null;
    container.replaceChildren(...children.filter((c) => c));
    if (key) {
      const again = container.querySelector('[data-key="' + CSS.escape(key) + '"]');
      if (again) again.focus();
    }
  }
  const shortID = (id) => (typeof id === 'string' && id.length > 12 ? id.slice(0, 12) + '…' : String(id));
  const safeURL = (url) => (typeof url === 'string' && url.startsWith('/v1/jobs/') ? url : null);
  const isPNG = (o) => o && (o.content_type === 'image/png' || /\.png$/i.test(o.name || ''));
  function ago(iso) {
    if (!iso) return '';
    const seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
    if (seconds < 60) return Math.round(seconds) + ' s ago';
    if (seconds < 3600) return Math.round(seconds / 60) + ' min ago';
    if (seconds < 86400) return Math.round(seconds / 3600) + ' h ago';
    return new Date(iso).toLocaleString();
  }
  // A time to come (or just gone): "18:04:05 (in 3 min)"; the date too when it is not today.
  function when(iso) {
    const t = Date.parse(iso);
    if (!iso || !Number.isFinite(t)) return '';
    const date = new Date(t);
    const clock = date.toDateString() === new Date().toDateString() ? date.toLocaleTimeString() : date.toLocaleString();
    const seconds = (t - Date.now()) / 1000;
    return clock + (seconds > 0 ? ' (in ' + duration(seconds) + ')' : '');
  }
  const clockTime = (iso) => (iso && Number.isFinite(Date.parse(iso)) ? new Date(iso).toLocaleTimeString() : '');
  const REASONS = {
    deadline: 'not started by its start_within_s deadline',
    exit_code: 'exited with a non-zero status', signal: 'killed by a signal', timeout: 'ran past its timeout',
    canceled: 'canceled on request', interrupted: 'the server stopped while it ran', spawn_failed: 'could not be started',
    error: 'the worker reported an error', worker_lost: 'its worker was lost', node_lost: 'its node was lost',
  };
  const reasonTitle = (reason) => REASONS[reason] || null;
  // For a queued job: why it waits besides the queue ("retry at …" after a failed attempt, else
  // "not before …" for run_at/delay_s) and its start deadline ("start by …"). [] otherwise.
  function scheduleNotes(job) {
    if (!job || job.state !== 'queued') return [];
    const notes = [];
    if (job.not_before && Date.parse(job.not_before) > Date.now() - 1000) {
      const retry = (job.attempts || 0) > 0;
      notes.push(el('span', { class: 'sched sched-' + (retry ? 'retry' : 'not-before'), 'data-job': job.id,
                              title: retry ? 'Attempt ' + job.attempts + ' failed; the retry waits out its back-off'
                                           : 'Held back by run_at or delay_s',
                              text: (retry ? 'retry at ' : 'not before ') + when(job.not_before) }));
    }
    if (job.start_by) {
      notes.push(el('span', { class: 'sched sched-start-by', 'data-job': job.id,
                              title: 'Canceled (reason deadline) if it has not started by then',
                              text: 'start by ' + when(job.start_by) }));
    }
    return notes;
  }
  function retryText(policy) {
    if (!policy || typeof policy.max_attempts !== 'number') return null;
    let text = 'up to ' + policy.max_attempts + ' attempt' + (policy.max_attempts === 1 ? '' : 's');
    // The wait before attempt n+1 is drawn from [0, min(max_backoff_s, backoff_s × 2^(n−1))].
    const b = policy.backoff_s, m = policy.max_backoff_s;
    if (typeof b === 'number') {
      text += ', back-off up to ' + b + ' s' + (typeof m === 'number' && m > b ? ', doubling to at most ' + m + ' s' : '');
    }
    if (Array.isArray(policy.on) && policy.on.length) text += ', on ' + policy.on.join(', ');
    return text;
  }
  function duration(seconds) {
    if (seconds < 1) return 'under 1 s';
    if (seconds < 90) return Math.round(seconds) + ' s';
    if (seconds < 5400) return Math.round(seconds / 60) + ' min';
    return (seconds / 3600).toFixed(1) + ' h';
  }
  function announce(text) { $('announcer').textContent = text; }
  function showError(text) {
    $('error').textContent = text || '';
  }

  async function api(path, options) {
    const response = await fetch(path, options);
    if (response.status === 401) { showLogin(); throw new Error('log in first'); }
    const type = response.headers.get('content-type') || '';
    const body = type.includes('json') ? await response.json().catch(() => null) : null;
    if (!response.ok) {
      throw new Error((body && (body.detail || body.title)) || (response.status + ' ' + response.statusText));
    }
    return body;
  }

  // --- Login: the token is traded for an HttpOnly session cookie and never kept by the page. ---
  function showLogin(message) {
    S.loggedOut = true;
    if (S.es) { S.es.close(); S.es = null; }
    $('main').hidden = true;
    $('who').hidden = true;
    $('login').hidden = false;
    setConnection('disconnected', 'Logged out');
    if (message) $('login-status').textContent = message;
    $('f-token').focus();
  }
  function showApp(name) {
    S.loggedOut = false;
    $('login').hidden = true;
    $('main').hidden = false;
    if (name) { $('who-name').textContent = name; $('who').hidden = false; }
  }
  function setupLogin() {
    $('login-form').addEventListener('submit', async (event) => {
      event.preventDefault();
      const field = $('f-token');
      const button = $('login-button');
      button.disabled = true;
      $('login-status').textContent = 'Logging in…';
      try {
        const response = await fetch('/v1/session', {
          method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ token: field.value.trim() }),
        });
        const body = await response.json().catch(() => null);
        if (!response.ok) throw new Error((body && body.detail) || ('login failed: ' + response.status));
        field.value = '';
        $('login-status').textContent = '';
        showApp(body && body.name ? body.name + (body.admin ? ' (admin)' : '') : null);
        connect();
        scheduleRefresh(0);
      } catch (error) {
        $('login-status').textContent = error.message;
      } finally {
        button.disabled = false;
      }
    });
    $('logout').addEventListener('click', async () => {
      await fetch('/v1/session', { method: 'DELETE' }).catch(() => null);
      showLogin('Logged out.');
    });
  }

  // --- Connection status and live events. ---
  function setConnection(kind, text) {
    const node = $('conn');
    node.className = 'conn conn-' + kind;
    node.textContent = text;
  }
  function connect() {
    if (S.loggedOut) return;
    const es = new EventSource('/v1/events');
    S.es = es;
    es.onopen = () => { setConnection('live', 'Live'); scheduleRefresh(0); };
    es.onerror = () => {
      if (es.readyState === EventSource.CLOSED) {
        setConnection('disconnected', 'Disconnected — retrying');
        // A closed stream may mean the session ended: a refresh finds out (and asks to log in).
        scheduleRefresh(0);
        setTimeout(() => { if (S.es === es) connect(); }, 3000);
      } else {
        setConnection('reconnecting', 'Reconnecting…');
      }
    };
    es.addEventListener('state', (event) => onEvent(event, onState));
    es.addEventListener('progress', (event) => onEvent(event, onProgress));
    es.addEventListener('log', (event) => onEvent(event, onLog));
    es.addEventListener('outputs', (event) => onEvent(event, onOutputs));
  }
  function onEvent(event, handler) {
    let data;
    try { data = JSON.parse(event.data); } catch (_) { return; }
    if (data && typeof data.job === 'string') handler(data);
  }
  function onState(d) {
    const job = S.jobs.get(d.job);
    if (job) {
      job.state = d.state; job.attempts = d.attempts; job.reason = d.reason ?? null;
      if (d.error !== undefined) job.error = d.error;
      if (d.state === 'queued') job.progress = null;
    }
    // A task of a job array is announced by its array when that finishes (not task by task).
    if (!(job && job.array)) {
      let text = 'Job ' + shortID(d.job) + ' (' + (d.type || 'job') + ') is ' + d.state;
      if (d.reason && d.reason !== d.state) text += ' (' + d.reason + ')';
      announce(text + '.');
    }
    // A big array's tasks change state many times a second: refresh for them at most once a second.
    scheduleRefresh(job && job.array ? 1000 : 300);
    if (d.job === S.selected) scheduleLog();
  }
  function onProgress(d) {
    const job = S.jobs.get(d.job);
    if (job) job.progress = { fraction: d.fraction, message: d.message ?? null };
    if (job && job.array) scheduleArrays([job.array.id]);
    for (const bar of document.querySelectorAll('progress[data-job]')) {
      if (bar.getAttribute('data-job') === d.job) setProgress(bar, d.fraction);
    }
    for (const note of document.querySelectorAll('.progress-msg[data-job]')) {
      if (note.getAttribute('data-job') === d.job) note.textContent = progressText(d);
    }
  }
  function onLog(d) { if (d.job === S.selected) scheduleLog(); }
  function onOutputs(d) {
    // An event lists up to 1,000 files; for more, the listing (up to 10,000) is read instead, for
    // a job the page shows (an array's tasks writing thousands of frames each must not make every
    // open page read every task's listing).
    if (d.truncated === true) {
      S.outputs.delete(d.job);
      if (d.job === S.selected || S.recentLines.some((line) => !line.array && line.job.id === d.job)) loadOutputs(d.job);
    } else if (Array.isArray(d.outputs)) {
      S.outputs.set(d.job, d.outputs.map((o) => ({ ...o, content_type: o.content_type || (isPNG(o) ? 'image/png' : '') })));
      S.outputsCut.delete(d.job);
    }
    renderRecent();
    if (d.job === S.selected) renderOutputs();
  }

  // --- Refresh: /v1/queue, recent jobs, queued jobs (with position and ETA), the selected job. ---
  let refreshTimer = null, refreshing = false, refreshAgain = false;
  function scheduleRefresh(delay = 300) {
    if (refreshTimer !== null) return;
    refreshTimer = setTimeout(() => { refreshTimer = null; refresh(); }, delay);
  }
  async function refresh() {
    if (refreshing) { refreshAgain = true; return; }
    refreshing = true;
    try {
      const [queue, recent, queued] = await Promise.all([
        api('/v1/queue'), loadRecent(), api('/v1/jobs?status=queued&limit=100'),
      ]);
      S.queue = queue;
      S.recent = recent;
      for (const job of S.recent) S.jobs.set(job.id, job);
      for (const slot of queue.slots || []) if (slot.job) S.jobs.set(slot.job.id, slot.job);
      S.recentLines = groupLines(S.recent, RECENT_LINES);
      // List pages carry no position; ask for the details (position, ETA) of the likely head
      // (an array's tasks count once: its first two stand for it, in case the first starts meanwhile).
      const head = groupLines((queued.jobs || []).slice().sort((a, b) => (b.priority - a.priority)
        || a.created_at.localeCompare(b.created_at) || taskIndex(a) - taskIndex(b)), 20, 2).flatMap((line) => line.tasks);
      const details = await Promise.all(head.map((job) => api('/v1/jobs/' + encodeURIComponent(job.id)).catch(() => null)));
      S.queued = details.filter((job) => job && job.state === 'queued').sort((a, b) => (a.position ?? 1e9) - (b.position ?? 1e9));
      S.queuedTotal = queue.queued;
      if (S.selected) {
        const id = S.selected;
        const [job, attempts] = await Promise.all([
          api('/v1/jobs/' + encodeURIComponent(id)).catch(() => S.selectedJob),
          api('/v1/jobs/' + encodeURIComponent(id) + '/attempts').catch(() => null),
        ]);
        if (id === S.selected) {
          S.selectedJob = job;
          if (attempts) S.attempts = attempts;
        }
        if (S.selectedJob) S.jobs.set(S.selectedJob.id, S.selectedJob);
      }
      const arrayIDs = new Set(S.expanded);
      for (const line of S.recentLines) if (line.array) arrayIDs.add(line.array);
      for (const job of S.queued) if (job.array) arrayIDs.add(job.array.id);
      for (const slot of queue.slots || []) if (slot.job && slot.job.array) arrayIDs.add(slot.job.array.id);
      if (S.selectedJob && S.selectedJob.array) arrayIDs.add(S.selectedJob.array.id);
      await loadArrays([...arrayIDs]);
      showError('');
      renderAll();
      loadMissingOutputs();
    } catch (error) {
      showError('Could not refresh: ' + error.message);
    } finally {
      refreshing = false;
      if (refreshAgain) { refreshAgain = false; scheduleRefresh(); }
    }
  }
  // The newest jobs, enough pages of them for RECENT_LINES lines once each array's tasks are one.
  async function loadRecent() {
    let jobs = [], cursor = null;
    for (let page = 0; page < RECENT_PAGES; page++) {
      const body = await api('/v1/jobs?limit=' + RECENT_PAGE + (cursor ? '&cursor=' + encodeURIComponent(cursor) : ''));
      jobs = jobs.concat(body.jobs || []);
      if (!body.next_cursor || body.next_cursor === cursor || groupLines(jobs, RECENT_LINES).length >= RECENT_LINES) break;
      cursor = body.next_cursor;
    }
    return jobs;
  }
  const taskIndex = (job) => (job.array && typeof job.array.index === 'number' ? job.array.index : 0);
  // Jobs as lines: a job of its own is one, the tasks of an array one for them all (at the
  // place of the first of them in `jobs`, which is `job`; `tasks` holds up to `perArray` of
  // them), up to `limit` lines.
  function groupLines(jobs, limit, perArray = 1) {
    const lines = [], byArray = new Map();
    for (const job of jobs) {
      if (job.array && job.array.id) {
        const line = byArray.get(job.array.id);
        if (line) {
          if (line.tasks.length < perArray) line.tasks.push(job);
          continue;
        }
        if (lines.length >= limit) continue;
        const fresh = { array: job.array.id, job, tasks: [job] };
        byArray.set(job.array.id, fresh);
        lines.push(fresh);
      } else if (lines.length < limit) {
        lines.push({ job, tasks: [job] });
      }
      if (lines.length >= limit && perArray === 1) break;
    }
    return lines;
  }
  // GET /v1/arrays/{id} of arrays not known to have finished, and the tasks of expanded ones.
  async function loadArrays(ids) {
    await Promise.all(ids.map(async (id) => {
      const before = S.arrays.get(id);
      if (!(before && TERMINAL.has(before.state))) {
        const array = await api('/v1/arrays/' + encodeURIComponent(id)).catch(() => null);
        if (array) {
          S.arrays.set(id, array);
          if (before && before.state !== array.state && TERMINAL.has(array.state)) {
            announce('Job array ' + shortID(id) + ' (' + array.type + ', ' + array.size + ' tasks) is ' + array.state + '.');
          }
        }
      }
      if (S.expanded.has(id)) await loadTasks(id, false);
    }));
  }
  // An expanded array's tasks: the pages loaded so far again (or one more with `more`).
  async function loadTasks(id, more) {
    const known = S.arrayTasks.get(id);
    const array = S.arrays.get(id);
    if (known && !more && known.final) return;
    let tasks = more && known ? known.tasks : [];
    let cursor = more && known ? known.next : null;
    const want = more || !known ? TASK_PAGE : Math.max(TASK_PAGE, known.tasks.length);
    let next = null;
    for (let got = 0; got < want;) {
      const body = await api('/v1/arrays/' + encodeURIComponent(id) + '/tasks?limit=' + Math.min(500, want - got)
                             + (cursor ? '&cursor=' + encodeURIComponent(cursor) : '')).catch(() => null);
      if (!body) return;
      const page = body.tasks || [];
      tasks = tasks.concat(page);
      got += page.length;
      next = body.next_cursor || null;
      if (!next || !page.length) break;
      cursor = next;
    }
    for (const task of tasks) S.jobs.set(task.id, task);
    S.arrayTasks.set(id, { tasks, next, final: !!(array && TERMINAL.has(array.state)) });
  }
  // Task progress events move their array's bar: read those arrays again, at most every 0.7 s.
  let arrayTimer = null;
  const arraysWanted = new Set();
  function scheduleArrays(ids) {
    for (const id of ids) arraysWanted.add(id);
    if (arrayTimer !== null) return;
    arrayTimer = setTimeout(async () => {
      arrayTimer = null;
      const wanted = [...arraysWanted];
      arraysWanted.clear();
      await loadArrays(wanted);
      renderQueue(); renderRecent();
    }, 700);
  }
  function loadMissingOutputs() {
    const wanted = S.recentLines.filter((line) => !line.array && line.job.state === 'succeeded').map((line) => line.job.id);
    if (S.selectedJob && TERMINAL.has(S.selectedJob.state)) wanted.push(S.selectedJob.id);
    for (const id of wanted) if (!S.outputs.has(id)) loadOutputs(id);
  }
  function loadOutputs(id) {
    if (S.outputsLoading.has(id)) return;
    S.outputsLoading.add(id);
    api('/v1/jobs/' + encodeURIComponent(id) + '/outputs')
      .then((body) => {
        S.outputs.set(id, body.outputs || []);
        if (body.truncated === true) S.outputsCut.add(id); else S.outputsCut.delete(id);
        renderRecent();
        if (id === S.selected) renderOutputs();
      })
      .catch(() => {})
      .finally(() => S.outputsLoading.delete(id));
  }

  // --- Rendering. ---
  function renderAll() {
    renderHeader(); renderSlots(); renderQueue(); renderRecent(); renderDetail(); renderOutputs();
  }
  function renderHeader() {
    const q = S.queue;
    if (!q) return;
    $('queued-count').textContent = String(q.queued);
    $('accepting').textContent = q.accepting ? 'accepting jobs' : 'draining: not accepting jobs';
  }
  function setProgress(bar, fraction) {
    if (typeof fraction === 'number' && isFinite(fraction)) {
      bar.value = Math.max(0, Math.min(1, fraction));
      bar.setAttribute('aria-valuetext', Math.round(bar.value * 100) + '%');
    }
  }
  function progressText(p) {
    if (!p || typeof p.fraction !== 'number') return 'starting';
    return Math.round(p.fraction * 100) + '%' + (p.message ? ' — ' + p.message : '');
  }
  function progressBar(job) {
    const bar = el('progress', { max: '1', 'data-job': job.id, 'aria-label': 'Progress of job ' + job.id });
    if (job.progress) setProgress(bar, job.progress.fraction);
    return el('div', { class: 'progress-cell' }, bar,
      el('span', { class: 'progress-msg', 'data-job': job.id, text: progressText(job.progress) }));
  }
  function stateBadge(state) { return el('span', { class: 'badge st-' + state, text: state }); }

  function jobActions(job, where) {
    const box = el('div', { class: 'actions' });
    if (where !== 'detail') {
      box.append(el('button', { type: 'button', 'data-key': where + ':details:' + job.id, 'aria-pressed': String(S.selected === job.id),
                                'aria-label': 'Details of job ' + job.id, text: 'Details', onclick: () => select(job.id) }));
    }
    if (!TERMINAL.has(job.state)) {
      box.append(el('button', { type: 'button', class: 'danger', 'data-key': where + ':cancel:' + job.id,
                                disabled: job.cancel_requested === true,
                                'aria-label': 'Cancel job ' + job.id, text: job.cancel_requested ? 'Stopping…' : 'Cancel',
                                onclick: () => cancelJob(job.id) }));
    }
    box.append(el('button', { type: 'button', 'data-key': where + ':resubmit:' + job.id, 'aria-label': 'Resubmit job ' + job.id,
                              text: 'Resubmit', onclick: () => resubmit(job) }));
    return box;
  }

  function renderSlots() {
    const slots = (S.queue && S.queue.slots) || [];
    if (!slots.length) { render($('slots'), el('p', { class: 'muted', text: 'No slots.' })); return; }
    render($('slots'), ...slots.map((slot) => {
      const title = 'Slot ' + slot.id + (slot.gpu ? ' · GPU ' + slot.gpu : ' · CPU');
      const box = el('article', { class: 'slot', 'aria-label': title },
        el('h3', null, el('span', { text: title }),
           el('span', { class: 'badge st-' + (slot.state === 'busy' ? 'running' : slot.state === 'quarantined' ? 'failed' : 'queued'), text: slot.state })));
      const job = slot.job;
      if (job) {
        box.append(el('p', null, el('span', { class: 'mono', title: job.id, text: shortID(job.id) }), ' ',
                      el('strong', { text: job.type }), ' · started ', ago(job.started_at)));
        if (job.array) {
          box.append(el('p', { class: 'small muted', 'data-task-of': job.array.id },
            'task ' + job.array.index + ' of array ', el('span', { class: 'mono', title: job.array.id, text: shortID(job.array.id) })));
        }
        box.append(progressBar(job), jobActions(job, 'slot'));
      } else if (!slot.quarantine) {
        box.append(el('p', { class: 'muted', text: 'Idle' }));
      }
      if (slot.quarantine) {
        box.append(el('p', { class: 'small warn', role: 'note', 'data-quarantine': String(slot.id),
          text: 'Quarantined since ' + ago(slot.quarantine.since) + ': ' + (slot.quarantine.reasons || []).join('; ') }));
        box.append(el('div', { class: 'actions' }, el('button', { type: 'button', 'data-key': 'slot:release:' + slot.id,
          'aria-label': 'Release slot ' + slot.id + ' from quarantine', text: 'Release', onclick: () => releaseSlot(slot.id) })));
      }
      const w = slot.worker;
      if (w) {
        const bits = ['worker ' + w.type + ' ' + w.phase];
        if (w.pid != null) bits.push('pid ' + w.pid);
        bits.push(w.jobs_run + ' jobs run');
        if (w.rss_mb != null) bits.push(w.rss_mb + ' MB RSS');
        if (w.vram_mb != null) bits.push(w.vram_mb + ' MB VRAM');
        box.append(el('p', { class: 'small muted', text: bits.join(' · ') }));
      }
      for (const h of slot.unhealthy || []) {
        if (!h.unhealthy && !h.failures) continue;
        box.append(el('p', { class: 'small warn', role: 'note',
          text: (h.unhealthy ? 'Unhealthy for ' : 'Setup failures for ') + h.type + ' (' + h.failures + '): ' + (h.last_error || '') }));
      }
      return box;
    }));
  }

  function renderQueue() {
    if (!S.queued.length) { render($('queue'), el('p', { class: 'muted', text: 'The queue is empty.' })); return; }
    const rows = groupLines(S.queued, S.queued.length).map((line) => {
      const job = line.job;
      if (line.array) return queuedArrayRow(line.array, job);
      let eta = 'learning run times…';
      if (job.eta && typeof job.eta.start_in_s === 'number') eta = 'in ~' + duration(job.eta.start_in_s);
      return el('tr', { 'data-job-id': job.id, class: S.selected === job.id ? 'selected' : null },
        el('td', { text: job.position ?? '?' }),
        el('td', null, el('span', { class: 'mono', title: job.id, text: shortID(job.id) })),
        el('td', { text: job.type }),
        el('td', { text: job.priority }),
        el('td', { title: job.eta && job.eta.start_at ? 'at ' + new Date(job.eta.start_at).toLocaleTimeString() + ' (' + job.eta.method + ')' : null },
          eta, ...scheduleNotes(job).map((note) => el('span', { class: 'small sched-line' }, note))),
        el('td', { text: ago(job.created_at) }),
        el('td', null, jobActions(job, 'queue')));
    });
    const table = el('table', null,
      el('caption', { class: 'visually-hidden', text: 'Queued jobs in the order they will start' }),
      el('thead', null, el('tr', null, ...['#', 'Job', 'Type', 'Priority', 'Starts', 'Submitted', 'Actions'].map((h) => el('th', { scope: 'col', text: h })))),
      el('tbody', null, ...rows));
    // An array's row stands for all its queued tasks.
    const shown = groupLines(S.queued, S.queued.length).reduce((n, line) => n + (line.array && S.arrays.get(line.array)
      ? S.arrays.get(line.array).counts.queued : line.array ? S.queued.filter((j) => j.array && j.array.id === line.array).length : 1), 0);
    const note = S.queuedTotal > shown
      ? el('p', { class: 'small muted', text: 'Showing the first ' + shown + ' of ' + S.queuedTotal + ' queued jobs.' }) : null;
    render($('queue'), el('div', { class: 'table-wrap' }, table), note);
  }
  // The queued tasks of an array as one row: where its first waits, how many wait, when the last starts.
  function queuedArrayRow(id, first) {
    const array = S.arrays.get(id);
    const waiting = array ? array.counts.queued : S.queued.filter((j) => j.array && j.array.id === id).length;
    let eta = first.eta && typeof first.eta.start_in_s === 'number' ? 'first in ~' + duration(first.eta.start_in_s) : 'learning run times…';
    if (array && array.eta && typeof array.eta.last_start_in_s === 'number') eta += ', last in ~' + duration(array.eta.last_start_in_s);
    return el('tr', { 'data-array-id': id, class: 'array-row' },
      el('td', { text: first.position ?? '?' }),
      el('td', null, el('span', { class: 'mono', title: id, text: shortID(id) }),
        el('span', { class: 'small muted array-size', text: ' ' + waiting + ' task' + (waiting === 1 ? '' : 's') + ' queued' })),
      el('td', { text: first.type }),
      el('td', { text: first.priority }),
      el('td', { title: array && array.eta ? array.eta.method : null, text: eta }),
      el('td', { text: ago(first.created_at) }),
      el('td', null, arrayActions(id, array, 'queue')));
  }

  function thumbnail(job) {
    const outputs = S.outputs.get(job.id) || [];
    const png = outputs.find(isPNG);
    const url = png && safeURL(png.url);
    if (!url) return null;
    return el('a', { href: url, 'aria-label': 'Open ' + png.name + ' of job ' + job.id },
      el('img', { class: 'thumb', src: url, alt: png.name + ' from job ' + job.id, 'data-job': job.id, width: '64', height: '48' }));
  }
  function renderRecent() {
    if (!S.recentLines.length) { render($('recent'), el('p', { class: 'muted', text: 'No jobs yet. Submit one above.' })); return; }
    const rows = S.recentLines.flatMap((line) => {
      if (line.array) return arrayRows(line.array, line.job);
      const job = S.jobs.get(line.job.id) || line.job;
      let status = stateBadge(job.state);
      const extra = job.reason && job.reason !== job.state
        ? el('span', { class: 'small muted reason reason-' + job.reason, title: reasonTitle(job.reason), text: ' ' + job.reason }) : null;
      const notes = scheduleNotes(job);
      let progressCell = job.state === 'running' ? progressBar(job)
        : notes.length ? el('span', { class: 'small' }, ...notes.map((note) => el('span', { class: 'sched-line' }, note)))
        : el('span', { class: 'small muted', text: job.state === 'succeeded' ? 'done' : job.error ? job.error : '' });
      return el('tr', { 'data-job-id': job.id, class: S.selected === job.id ? 'selected' : null },
        el('td', null, el('span', { class: 'mono', title: job.id, text: shortID(job.id) })),
        el('td', { text: job.type }),
        el('td', null, status, extra),
        el('td', { text: job.priority }),
        el('td', null, progressCell),
        el('td', { text: ago(job.created_at) }),
        el('td', null, thumbnail(job)),
        el('td', null, jobActions(job, 'recent')));
    });
    const table = el('table', null,
      el('caption', { class: 'visually-hidden', text: 'The ' + RECENT_LINES + ' most recent jobs and job arrays, newest first' }),
      el('thead', null, el('tr', null, ...['Job', 'Type', 'State', 'Priority', 'Progress', 'Submitted', 'Output', 'Actions'].map((h) => el('th', { scope: 'col', text: h })))),
      el('tbody', null, ...rows));
    render($('recent'), el('div', { class: 'table-wrap' }, table));
  }

  // --- Job arrays: one line each, with a progress bar, counts by state and an ETA. ---
  const COUNT_ORDER = ['succeeded', 'running', 'queued', 'failed', 'canceled'];
  function arrayProgress(array) {
    const bar = el('progress', { max: '1', 'data-array': array.id, 'aria-label': 'Progress of job array ' + array.id });
    setProgress(bar, array.progress);
    const c = array.counts || {};
    const finished = (c.succeeded || 0) + (c.failed || 0) + (c.canceled || 0);
    // (The spaces between the parts are for screen readers and copying; the flex gap spaces them on screen.)
    const counts = el('span', { class: 'array-counts small', 'data-array': array.id },
      el('span', { class: 'array-done', text: finished + '/' + array.size + ' · ' + Math.floor((array.progress || 0) * 100) + '%' }),
      ...COUNT_ORDER.filter((k) => c[k]).flatMap((k) => [' ', el('span', { class: 'count st-' + k, 'data-count': k, text: c[k] + ' ' + k })]));
    let eta = null;
    if (array.eta && !TERMINAL.has(array.state)) {
      const e = array.eta;
      const text = typeof e.done_in_s === 'number' ? 'done in ~' + duration(e.done_in_s)
        : typeof e.last_start_in_s === 'number' ? 'last task starts in ~' + duration(e.last_start_in_s) : null;
      if (text) eta = el('span', { class: 'array-eta small muted', title: (e.done_at ? 'at ' + new Date(e.done_at).toLocaleTimeString() + ' · ' : '') + (e.method || ''), text });
    }
    return el('div', { class: 'progress-cell' }, bar, counts, eta);
  }
  function arrayActions(id, array, where) {
    const box = el('div', { class: 'actions' });
    if (where === 'recent') {
      const open = S.expanded.has(id);
      box.append(el('button', { type: 'button', 'data-key': where + ':tasks:' + id, 'aria-expanded': String(open), 'aria-controls': 'tasks-' + id,
                                'aria-label': (open ? 'Hide the tasks of job array ' : 'Show the tasks of job array ') + id,
                                text: open ? 'Hide tasks' : 'Tasks', onclick: () => toggleArray(id) }));
    }
    if (!array || !TERMINAL.has(array.state)) {
      box.append(el('button', { type: 'button', class: 'danger', 'data-key': where + ':cancel-array:' + id,
                                'aria-label': 'Cancel every unfinished task of job array ' + id, text: 'Cancel array',
                                onclick: () => cancelArray(id) }));
    }
    const c = (array && array.counts) || {};
    if (array && TERMINAL.has(array.state) && (c.failed || 0) + (c.canceled || 0) > 0) {
      box.append(el('button', { type: 'button', 'data-key': where + ':retry-array:' + id,
                                'aria-label': 'Run the failed and canceled tasks of job array ' + id + ' again, as a new array',
                                text: 'Retry failed', onclick: () => retryArray(id) }));
    }
    return box;
  }
  // The array's line in "Recent jobs" and, when expanded, a row holding its tasks.
  function arrayRows(id, newest) {
    const array = S.arrays.get(id);
    const open = S.expanded.has(id);
    const progress = array ? arrayProgress(array) : el('span', { class: 'small muted', text: 'loading…' });
    const row = el('tr', { 'data-array-id': id, class: 'array-row' + (open ? ' open' : '') },
      el('td', null, el('span', { class: 'mono', title: id, text: shortID(id) }),
        el('span', { class: 'small muted array-size', text: array ? ' array of ' + array.size : ' array' })),
      el('td', { text: array ? array.type : newest.type }),
      el('td', null, stateBadge(array ? array.state : newest.state)),
      el('td', { text: newest.priority }),
      el('td', null, progress),
      el('td', { text: ago(array ? array.created_at : newest.created_at) }),
      el('td', null),
      el('td', null, arrayActions(id, array, 'recent')));
    if (!open) return [row];
    return [row, el('tr', { class: 'array-tasks-row' }, el('td', { colspan: '8', id: 'tasks-' + id }, taskTable(id)))];
  }
  function taskTable(id) {
    const loaded = S.arrayTasks.get(id);
    if (!loaded) return el('p', { class: 'small muted', text: 'Loading the tasks…' });
    const array = S.arrays.get(id);
    const rows = loaded.tasks.map((task0) => {
      const task = S.jobs.get(task0.id) || task0;
      const detail = task.state === 'running' ? progressBar(task)
        : el('span', { class: 'small muted', text: task.reason && task.reason !== task.state ? task.reason : task.error || '' });
      const actions = el('div', { class: 'actions' },
        el('button', { type: 'button', 'data-key': 'task:details:' + task.id, 'aria-pressed': String(S.selected === task.id),
                       'aria-label': 'Details of task ' + taskIndex(task) + ', job ' + task.id, text: 'Details', onclick: () => select(task.id) }));
      return el('tr', { 'data-task-id': task.id, 'data-index': taskIndex(task), class: S.selected === task.id ? 'selected' : null },
        el('td', { text: taskIndex(task) }),
        el('td', null, el('span', { class: 'mono', title: task.id, text: shortID(task.id) })),
        el('td', null, stateBadge(task.state)),
        el('td', null, detail),
        el('td', { text: task.finished_at ? clockTime(task.finished_at) : task.started_at ? 'started ' + clockTime(task.started_at) : '' }),
        el('td', null, actions));
    });
    const table = el('table', { class: 'tasks' },
      el('caption', { class: 'visually-hidden', text: 'Tasks of job array ' + id + ', in index order' }),
      el('thead', null, el('tr', null, ...['Index', 'Job', 'State', 'Progress', 'Time', 'Actions'].map((h) => el('th', { scope: 'col', text: h })))),
      el('tbody', null, ...rows));
    const total = array ? array.size : loaded.tasks.length;
    const foot = el('p', { class: 'small muted' }, 'Showing ' + loaded.tasks.length + ' of ' + total + ' tasks. ',
      loaded.next ? el('button', { type: 'button', 'data-key': 'array:more:' + id, text: 'Show more', onclick: () => moreTasks(id) }) : null);
    return el('div', { class: 'table-wrap tasks-wrap' }, table, foot);
  }

  function renderDetail() {
    const job = S.selectedJob;
    if (!S.selected || !job) return;
    const facts = el('dl', { class: 'facts' });
    const add = (name, value, cls) => {
      if (value === null || value === undefined || value === '') return;
      facts.append(el('dt', { text: name }), el('dd', { class: cls || null }, value));
    };
    add('Job', job.id, 'mono');
    if (job.array) {
      const array = S.arrays.get(job.array.id);
      add('Array', el('span', { 'data-array-of': job.id },
        el('span', { class: 'mono', title: job.array.id, text: job.array.id }),
        ' · index ', el('strong', { class: 'array-index', text: String(job.array.index) }),
        array ? ' of ' + array.size + ' tasks (' + array.state + ') ' : ' ',
        el('button', { type: 'button', 'data-key': 'detail:array:' + job.array.id, text: 'Show array',
                       'aria-label': 'Show job array ' + job.array.id + ' and its tasks', onclick: () => showArray(job.array.id) })));
    }
    add('Type', job.type);
    add('State', stateBadge(job.state));
    add('Reason', job.reason ? job.reason + (reasonTitle(job.reason) ? ' — ' + reasonTitle(job.reason) : '') : null);
    add('Priority', String(job.priority));
    add('Attempts', job.attempts + ' of ' + job.max_attempts);
    if (job.state === 'queued') {
      add('Position', job.position != null ? String(job.position) : null);
      add('Starts', job.eta && typeof job.eta.start_in_s === 'number' ? 'in ~' + duration(job.eta.start_in_s) : 'not estimated yet');
      if (job.not_before) add((job.attempts || 0) > 0 ? 'Retry at' : 'Not before', when(job.not_before));
      if (job.start_by) add('Start by', when(job.start_by));
    }
    add('Retries', retryText(job.retry));
    if (job.state === 'running') add('Progress', progressBar(job));
    add('Submitted', job.created_at ? new Date(job.created_at).toLocaleString() : null);
    add('Started', job.started_at ? new Date(job.started_at).toLocaleString() : null);
    add('Finished', job.finished_at ? new Date(job.finished_at).toLocaleString() : null);
    add('Exit code', job.exit_code != null ? String(job.exit_code) : null);
    add('Error', job.error);
    add('Input', JSON.stringify(job.input), 'mono');
    render($('detail'), facts, jobActions(job, 'detail'));
    $('detail-h').textContent = 'Job details — ' + shortID(job.id);
    renderAttempts();
  }

  // The selected job's attempts (GET /v1/jobs/{id}/attempts), oldest first.
  function renderAttempts() {
    const box = $('attempts');
    if (!S.selected) return;
    const list = S.attempts && S.attempts.job === S.selected ? S.attempts : null;
    if (!list) { render(box, el('p', { class: 'muted', text: 'Loading…' })); return; }
    const attempts = Array.isArray(list.attempts) ? list.attempts : [];
    if (!attempts.length) {
      render(box, el('p', { class: 'muted', text: list.state === 'queued' ? 'Not started yet.' : 'It never ran.' }));
      return;
    }
    const rows = attempts.map((a) => {
      const outcome = a.counted === false ? 'handed back' : a.state === 'queued' ? 'retried' : a.state;
      const exit = a.exit_code != null ? String(a.exit_code) : a.signal != null ? 'signal ' + a.signal : '';
      return el('tr', { 'data-attempt': a.attempt },
        el('td', { text: a.attempt }),
        el('td', null, el('span', { class: 'badge st-' + (a.state === 'queued' ? 'queued' : a.state), title: a.counted === false ? 'taken back by the server through no fault of the job; not counted against max_attempts' : a.state === 'queued' ? 'went round again' : null, text: outcome }),
          a.reason ? el('span', { class: 'small muted reason reason-' + a.reason, title: reasonTitle(a.reason), text: ' ' + a.reason }) : null,
          a.error ? el('span', { class: 'progress-msg', title: a.error, text: a.error }) : null),
        el('td', { text: exit }),
        el('td', { text: a.slot != null ? String(a.slot) + (a.node ? ' @ ' + a.node : '') : (a.node || '') }),
        el('td', { title: a.started_at || null, text: clockTime(a.started_at) }),
        el('td', { title: a.ended_at || null, text: a.state === 'running' ? progressText(a.progress) : clockTime(a.ended_at) }),
        el('td', { class: 'retry-at', title: a.retry_at || null, text: a.retry_at ? clockTime(a.retry_at) : '' }));
    });
    const table = el('table', { class: 'attempts' },
      el('caption', { class: 'visually-hidden', text: 'Attempts of job ' + list.job + ', oldest first' }),
      el('thead', null, el('tr', null, ...['#', 'Outcome', 'Exit', 'Slot', 'Started', 'Ended', 'Retry at'].map((h) => el('th', { scope: 'col', text: h })))),
      el('tbody', null, ...rows));
    const max = typeof list.max_attempts === 'number' ? list.max_attempts : null;
    const counted = attempts.filter((a) => a.counted !== false).length;   // a run handed back used no attempt
    const note = el('p', { class: 'small muted', text: counted + (max ? ' of at most ' + max : '') + ' attempt' + (counted === 1 && !max ? '' : 's')
      + (list.state === 'queued' && list.not_before ? '; next not before ' + when(list.not_before) : '') });
    render(box, el('div', { class: 'table-wrap' }, table), note);
  }

  function renderOutputs() {
    if (!S.selected) return;
    const job = S.jobs.get(S.selected) || S.selectedJob;
    const outputs = S.outputs.get(S.selected);
    if (!outputs) {
      render($('outputs'), el('p', { class: 'muted', text: job && !TERMINAL.has(job.state) ? 'Outputs appear when the job finishes.' : 'Loading…' }));
      return;
    }
    if (!outputs.length && !S.outputsCut.has(S.selected)) { render($('outputs'), el('p', { class: 'muted', text: 'This job wrote no outputs.' })); return; }
    // A listing that holds only some of the job's files says so, and the page shows the first
    // few hundred of it.
    const shown = outputs.slice(0, OUTPUTS_SHOWN);
    const cut = S.outputsCut.has(S.selected);
    const note = shown.length < outputs.length || cut
      ? el('p', { class: 'muted outputs-cut', text: 'Showing ' + (shown.length < outputs.length ? 'the first ' : '') + shown.length + ' of '
          + (cut ? 'more than ' + outputs.length + ' outputs: the listing holds only some of the job\'s files.' : outputs.length + ' outputs.') })
      : null;
    render($('outputs'), note, el('div', { class: 'outputs' }, ...shown.map((o) => {
      const url = safeURL(o.url);
      const caption = el('figcaption', { class: 'small' }, url ? el('a', { href: url, text: o.name }) : o.name,
        o.size != null ? ' (' + o.size + ' bytes)' : '');
      return el('figure', null, url && isPNG(o) ? el('img', { src: url, alt: o.name + ' from job ' + S.selected, 'data-output-of': S.selected }) : null, caption);
    })));
  }


  // --- The log viewer: fetch from the last offset; Spool-Next-Offset says where to go on. ---
  let logTimer = null, logBusy = false, logAgain = false;
  function scheduleLog(delay = 200) {
    if (logTimer !== null) return;
    logTimer = setTimeout(() => { logTimer = null; fetchLog(); }, delay);
  }
  async function fetchLog() {
    const id = S.selected;
    if (!id) return;
    if (logBusy) { logAgain = true; return; }
    logBusy = true;
    try {
      const response = await fetch('/v1/jobs/' + encodeURIComponent(id) + '/logs?offset=' + S.logOffset);
      if (response.status === 401) { showLogin(); return; }
      if (!response.ok) throw new Error('log: ' + response.status);
      const bytes = await response.arrayBuffer();
      if (id !== S.selected) return;
      const next = Number(response.headers.get('Spool-Next-Offset'));
      S.logOffset = Number.isFinite(next) && next >= S.logOffset ? next : S.logOffset + bytes.byteLength;
      const text = S.logDecoder.decode(bytes, { stream: true });
      if (text) {
        const log = $('log');
        const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 8;
        let all = (log.textContent === '(empty)' ? '' : log.textContent) + text;
        if (all.length > 400000) all = '…\n' + all.slice(-300000);
        log.textContent = all;
        if (atBottom) log.scrollTop = log.scrollHeight;
      } else if (!$('log').textContent) {
        $('log').textContent = '(empty)';
      }
    } catch (error) {
      showError('Could not read the log: ' + error.message);
    } finally {
      logBusy = false;
      if (logAgain) { logAgain = false; scheduleLog(); }
    }
  }

  // --- Actions. ---
  function select(id) {
    if (S.selected !== id) {
      S.selected = id;
      S.selectedJob = S.jobs.get(id) || null;
      S.attempts = null;
      S.logOffset = 0;
      S.logDecoder = new TextDecoder();
      $('log').textContent = '';
      $('log').setAttribute('aria-label', 'Log of job ' + id);
      history.replaceState(null, '', '#job=' + encodeURIComponent(id));
    }
    renderAll();
    fetchLog();
    scheduleRefresh(0);
  }
  async function releaseSlot(id) {
    try {
      const answer = await api('/v1/slots/' + encodeURIComponent(id) + '/release', { method: 'POST' });
      announce(answer.released ? 'Slot ' + id + ' released; it takes jobs again.' : 'Slot ' + id + ' was not quarantined.');
      scheduleRefresh(0);
    } catch (error) {
      showError('Could not release slot ' + id + ': ' + error.message);
    }
  }
  async function cancelJob(id) {
    try {
      const job = await api('/v1/jobs/' + encodeURIComponent(id) + '/cancel', { method: 'POST' });
      announce('Cancel requested for job ' + shortID(id) + '; it is ' + job.state + '.');
      S.jobs.set(job.id, job);
      scheduleRefresh(0);
    } catch (error) {
      showError('Could not cancel ' + id + ': ' + error.message);
    }
  }
  async function toggleArray(id) {
    if (S.expanded.has(id)) {
      S.expanded.delete(id);
      renderRecent();
      return;
    }
    S.expanded.add(id);
    renderRecent();
    await loadTasks(id, false);
    renderRecent();
  }
  async function moreTasks(id) {
    await loadTasks(id, true);
    renderRecent();
  }
  // From a task's details: expand its array's line and bring it into view.
  async function showArray(id) {
    if (!S.expanded.has(id)) await toggleArray(id);
    const row = document.querySelector('#recent tr[data-array-id="' + CSS.escape(id) + '"]');
    if (row) {
      row.scrollIntoView({ block: 'nearest' });
      const button = row.querySelector('button');
      if (button) button.focus();
    } else {
      announce('Job array ' + shortID(id) + ' is not among the recent jobs.');
    }
  }
  async function cancelArray(id) {
    try {
      const array = await api('/v1/arrays/' + encodeURIComponent(id) + '/cancel', { method: 'POST' });
      S.arrays.set(id, array);
      announce('Cancel requested for job array ' + shortID(id) + '; it is ' + array.state + '.');
      renderQueue(); renderRecent();
      scheduleRefresh(0);
    } catch (error) {
      showError('Could not cancel job array ' + id + ': ' + error.message);
    }
  }
  async function retryArray(id) {
    try {
      // An ended array never changes, so one key per array: a second click shows the same new array.
      const array = await api('/v1/arrays/' + encodeURIComponent(id) + '/retry', { method: 'POST', headers: { 'Idempotency-Key': 'dashboard-retry-' + id } });
      S.arrays.set(array.id, array);
      announce('Job array ' + shortID(id) + ': ' + array.size + ' task' + (array.size === 1 ? '' : 's') + ' run again as job array ' + shortID(array.id) + '.');
      scheduleRefresh(0);
    } catch (error) {
      showError('Could not retry job array ' + id + ': ' + error.message);
    }
  }
  async function submitJob(body, statusNode) {
    const job = await api('/v1/jobs', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
    S.jobs.set(job.id, job);
    if (!S.recent.some((j) => j.id === job.id)) { S.recent.unshift(job); S.recentLines = groupLines(S.recent, RECENT_LINES); }
    const text = 'Submitted job ' + job.id + (job.position ? ' at position ' + job.position : '') + '.';
    if (statusNode) statusNode.textContent = text; else announce(text);
    select(job.id);
    return job;
  }
  async function resubmit(job) {
    try {
      await submitJob({ type: job.type, input: job.input, priority: job.priority }, null);
    } catch (error) {
      showError('Could not resubmit ' + job.id + ': ' + error.message);
    }
  }
  function setupForm() {
    const form = $('submit-form');
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      const status = $('submit-status');
      const number = (id) => Number($(id).value);
      const input = { width: number('f-width'), height: number('f-height'), samples: number('f-samples') };
      if ($('f-seed').value !== '') input.seed = number('f-seed');
      const button = $('submit-button');
      button.disabled = true;
      status.textContent = 'Submitting…';
      try {
        await submitJob({ type: 'render', input, priority: Number($('f-priority').value || 0) }, status);
      } catch (error) {
        status.textContent = 'Not submitted: ' + error.message;
      } finally {
        button.disabled = false;
      }
    });
  }

  async function start() {
    setupForm();
    setupLogin();
    // Is a token needed, and does this browser have a session? It answers 401 if not, and
    // otherwise names the tenant the page acts as (shown after a reload too).
    const probe = await fetch('/v1/session').catch(() => null);
    if (probe && probe.status === 401) {
      showLogin();
    } else {
      const body = probe && probe.ok ? await probe.json().catch(() => null) : null;
      showApp(body && body.name ? body.name + (body.admin ? ' (admin)' : '') : null);
    }
    const match = /^#job=(.+)$/.exec(location.hash);
    if (match && !S.loggedOut) select(decodeURIComponent(match[1]));
    connect();
    if (!S.loggedOut) scheduleRefresh(0);
    // ETAs and "x s ago" drift without events; a slow background refresh keeps them honest.
    setInterval(() => { if (!document.hidden) scheduleRefresh(); }, 15000);
  }
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start); else start();
})();
