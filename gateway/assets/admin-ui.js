// Skygate operator status page (/admin/ui): vanilla JS, no dependencies.
//
// Everything it shows comes from the admin API with the operator's token
// (`Authorization: Bearer <token>`): GET /admin/routes, GET /admin/backends,
// GET /metrics; its buttons call PUT/DELETE /admin/routes/{route}/weights and
// POST /admin/backends/{name}/drain|undrain. The token lives only in this
// tab's sessionStorage (never localStorage, a cookie or a URL). Server
// strings reach the page only through textContent and setAttribute.
'use strict';

(() => {
  const KEY = 'skygate.adminToken';
  const REFRESH_MS = 2000;
  const RATE_WINDOW_MS = 10000; // "recent" rates: the change over ~10 s
  const HISTORY_MS = 120000; // the sparkline's span
  const MAX_WEIGHT = 10000; // skygate_config::MAX_WEIGHT

  const $ = (id) => document.getElementById(id);

  // ---- small DOM helpers (text only: never innerHTML) ----------------------

  /** el('td', {class: 'num', testid: 'x', text: '1', attrs: {...}}, ...children) */
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    const p = props || {};
    if (p.class) node.className = p.class;
    if (p.testid) node.setAttribute('data-testid', p.testid);
    if (p.text !== undefined && p.text !== null) node.textContent = String(p.text);
    if (p.attrs) for (const [k, v] of Object.entries(p.attrs)) node.setAttribute(k, String(v));
    if (p.on) for (const [k, f] of Object.entries(p.on)) node.addEventListener(k, f);
    for (const c of children) if (c !== null && c !== undefined) node.append(c);
    return node;
  }

  function setText(node, text) {
    const t = text === null || text === undefined ? '' : String(text);
    if (node.textContent !== t) node.textContent = t;
  }

  function chip(node, text, tone) {
    setText(node, text);
    node.className = 'chip' + (tone ? ' ' + tone : '');
  }

  /**
   * Keeps `parent`'s children in step with `items`, reusing the element of
   * each key (so focus, typed input and button presses survive a refresh).
   */
  function reconcile(parent, items, keyOf, create, update) {
    const existing = new Map();
    for (const child of Array.from(parent.children)) existing.set(child.dataset.key, child);
    let i = 0;
    for (const item of items) {
      const k = keyOf(item);
      let node = existing.get(k);
      if (node) existing.delete(k);
      else {
        node = create(item, k);
        node.dataset.key = k;
      }
      update(node, item);
      if (parent.children[i] !== node) parent.insertBefore(node, parent.children[i] || null);
      i++;
    }
    for (const node of existing.values()) node.remove();
  }

  // ---- the token: this tab's session only ------------------------------------

  let memoryToken = null; // only if sessionStorage is unavailable
  function getToken() {
    try {
      return sessionStorage.getItem(KEY);
    } catch {
      return memoryToken;
    }
  }
  function setToken(t) {
    try {
      sessionStorage.setItem(KEY, t);
    } catch {
      memoryToken = t;
    }
  }
  function clearToken() {
    memoryToken = null;
    try {
      sessionStorage.removeItem(KEY);
    } catch {
      /* nothing stored */
    }
  }

  // ---- the admin API ---------------------------------------------------------

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function api(method, path, body, token) {
    const headers = { Authorization: 'Bearer ' + (token ?? getToken() ?? '') };
    const init = { method, headers, cache: 'no-store', credentials: 'omit', redirect: 'error' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(path, init);
    } catch (e) {
      throw new ApiError(0, `${method} ${path}: the admin API cannot be reached (${e.message})`);
    }
    const text = await res.text();
    if (!res.ok) {
      // Admin errors are OpenAI-shaped: {"error": {"message": ..., "errors"?: [...]}}
      let msg = text.trim().slice(0, 500) || res.statusText;
      try {
        const j = JSON.parse(text);
        if (j && j.error && typeof j.error.message === 'string') {
          msg = j.error.message;
          if (Array.isArray(j.error.errors)) msg += ': ' + j.error.errors.join('; ');
        }
      } catch {
        /* not JSON: the text itself */
      }
      throw new ApiError(res.status, `${method} ${path} → ${res.status}: ${msg}`);
    }
    return text;
  }

  const apiJson = async (method, path, body) => JSON.parse(await api(method, path, body));

  // ---- messages --------------------------------------------------------------

  let errorFrom = null; // 'refresh' or 'action'
  function showError(message, from) {
    errorFrom = from;
    setText($('error-text'), message);
    $('error').hidden = false;
  }
  function hideError(from) {
    if (from && errorFrom !== from) return;
    $('error').hidden = true;
    errorFrom = null;
  }
  let noticeTimer = null;
  // Where an admin change went (`shared` in the answer): every replica
  // (through Redis), this one only for now (Redis down), or this one.
  function reach(view) {
    switch (view && view.shared) {
      case 'redis': return ' Every replica has it.';
      case 'pending': return ' Redis is unreachable: only this replica has it until Redis returns.';
      case 'local': return ' (This replica only: no shared state configured.)';
      default: return '';
    }
  }

  function notice(message) {
    setText($('notice'), message);
    $('notice').hidden = false;
    clearTimeout(noticeTimer);
    noticeTimer = setTimeout(() => ($('notice').hidden = true), 5000);
  }

  // ---- formatting ------------------------------------------------------------

  function fmtRate(v) {
    if (v === null || v === undefined || !isFinite(v)) return '–';
    if (v === 0) return '0';
    if (v < 1) return v.toFixed(2);
    if (v < 100) return v.toFixed(1);
    return v.toFixed(0);
  }
  function fmtMs(ms) {
    if (ms === null || ms === undefined) return '–';
    if (ms < 10) return ms.toFixed(1) + ' ms';
    if (ms < 10000) return Math.round(ms) + ' ms';
    return (ms / 1000).toFixed(1) + ' s';
  }
  function fmtIn(iso) {
    if (!iso) return null;
    const dt = Date.parse(iso) - Date.now();
    if (!isFinite(dt)) return iso;
    if (dt <= 0) return 'now';
    const s = Math.round(dt / 1000);
    return s < 120 ? `in ${s} s` : `in ${Math.round(s / 60)} min`;
  }
  function fmtAgo(ms) {
    if (!ms) return null;
    const s = Math.round((Date.now() - ms) / 1000);
    if (s < 120) return `${Math.max(s, 0)} s ago`;
    if (s < 7200) return `${Math.round(s / 60)} min ago`;
    return new Date(ms).toLocaleString();
  }

  // ---- metrics: parse, sample, diff --------------------------------------------

  const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
  const LINE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/;

  function parseLabels(s) {
    const out = {};
    if (!s) return out;
    for (const m of s.matchAll(LABEL)) {
      out[m[1]] = m[2].replace(/\\(.)/g, (_, c) => (c === 'n' ? '\n' : c));
    }
    return out;
  }

  /** The series this page uses, from Prometheus text. */
  function parseMetrics(text) {
    const s = { requests: [], upstream: [], ttfb: [], inFlight: null };
    for (const line of text.split('\n')) {
      if (!line || line[0] === '#') continue;
      const m = LINE.exec(line);
      if (!m) continue;
      const name = m[1];
      const value = Number(m[3]);
      if (!isFinite(value) && m[3] !== '+Inf') continue;
      if (name === 'skygate_requests_total') {
        const l = parseLabels(m[2]);
        s.requests.push({ route: l.route || '', backend: l.backend || '', status: Number(l.status), value });
      } else if (name === 'skygate_upstream_errors_total') {
        const l = parseLabels(m[2]);
        s.upstream.push({ backend: l.backend || '', code: l.code || '', value });
      } else if (name === 'skygate_time_to_first_byte_seconds_bucket') {
        const l = parseLabels(m[2]);
        s.ttfb.push({ backend: l.backend || '', le: l.le === '+Inf' ? Infinity : Number(l.le), value });
      } else if (name === 'skygate_requests_in_flight') {
        s.inFlight = value;
      }
    }
    return s;
  }

  /** Counter series as key → value (summing series that share a key). */
  function counters(list, keyOf) {
    const m = new Map();
    for (const x of list) {
      const k = keyOf(x);
      m.set(k, (m.get(k) || 0) + x.value);
    }
    return m;
  }

  function makeSample(parsed) {
    return {
      t: Date.now(),
      inFlight: parsed.inFlight,
      requests: counters(parsed.requests, (x) => `${x.route}\u0000${x.backend}\u0000${x.status}`),
      upstream: counters(parsed.upstream, (x) => x.backend),
      ttfb: counters(parsed.ttfb, (x) => `${x.backend}\u0000${x.le}`),
    };
  }

  /** newer − older per key; a counter that went down was reset: its value counts. */
  function* deltas(newer, older) {
    for (const [k, v] of newer) {
      const o = older.get(k) || 0;
      yield [k, v >= o ? v - o : v];
    }
  }

  function quantile(buckets, q) {
    // buckets: [[le, cumulative count]] sorted by le, the last +Inf
    if (!buckets.length) return null;
    const total = buckets[buckets.length - 1][1];
    if (total <= 0) return null;
    const want = q * total;
    let prevLe = 0;
    let prevCount = 0;
    for (const [le, c] of buckets) {
      if (c >= want) {
        if (le === Infinity) return { seconds: prevLe, above: true };
        const span = c - prevCount;
        const f = span > 0 ? (want - prevCount) / span : 1;
        return { seconds: prevLe + (le - prevLe) * f, above: false };
      }
      prevLe = le;
      prevCount = c;
    }
    return null;
  }

  /** Rates between two samples. */
  function rates(older, newer) {
    const dt = (newer.t - older.t) / 1000;
    const r = {
      dt,
      total: 0,
      s5xx: 0,
      s4xx: 0,
      upstream: 0,
      byBackend: new Map(),
      byRoute: new Map(),
      ttfb: new Map(),
    };
    if (dt <= 0) return null;
    const bump = (map, k, req, err) => {
      const e = map.get(k) || { req: 0, err: 0, upstream: 0 };
      e.req += req;
      e.err += err;
      map.set(k, e);
    };
    for (const [k, d] of deltas(newer.requests, older.requests)) {
      const [route, backend, status] = k.split('\u0000');
      const st = Number(status);
      const err = st >= 500 ? d : 0;
      r.total += d;
      r.s5xx += err;
      if (st >= 400 && st < 500) r.s4xx += d;
      if (backend) bump(r.byBackend, backend, d, err);
      if (route) bump(r.byRoute, route, d, err);
    }
    for (const [backend, d] of deltas(newer.upstream, older.upstream)) {
      r.upstream += d;
      const e = r.byBackend.get(backend) || { req: 0, err: 0, upstream: 0 };
      e.upstream += d;
      r.byBackend.set(backend, e);
    }
    const perBackend = new Map();
    for (const [k, d] of deltas(newer.ttfb, older.ttfb)) {
      const [backend, le] = k.split('\u0000');
      if (!perBackend.has(backend)) perBackend.set(backend, []);
      perBackend.get(backend).push([Number(le), d]);
    }
    for (const [backend, list] of perBackend) {
      list.sort((a, b) => a[0] - b[0]);
      const count = list.length ? list[list.length - 1][1] : 0;
      if (count > 0) r.ttfb.set(backend, { count, p50: quantile(list, 0.5), p95: quantile(list, 0.95) });
    }
    for (const k of ['total', 's5xx', 's4xx', 'upstream']) r[k] /= dt;
    for (const map of [r.byBackend, r.byRoute]) {
      for (const e of map.values()) {
        e.req /= dt;
        e.err /= dt;
        e.upstream /= dt;
      }
    }
    return r;
  }

  let backendsByName = new Map(); // the last GET /admin/backends, for the routes' table
  let samples = [];
  let recent = null; // rates over the last ~10 s
  let metricsError = null;

  function addSample(sample) {
    samples.push(sample);
    const cutoff = sample.t - HISTORY_MS - RATE_WINDOW_MS;
    while (samples.length > 2 && samples[0].t < cutoff) samples.shift();
    // The oldest sample no older than the window (but not the newest).
    let older = null;
    for (const s of samples) {
      if (s === sample) break;
      if (sample.t - s.t <= RATE_WINDOW_MS + 1000) {
        older = s;
        break;
      }
    }
    if (!older && samples.length > 1) older = samples[samples.length - 2];
    recent = older ? rates(older, sample) : null;
  }

  function renderRates() {
    const set = (id, v, bad) => {
      setText($(id), v);
      $(id).classList.toggle('bad', !!bad);
    };
    if (metricsError) {
      for (const id of ['rate-req', 'rate-err', 'rate-err-pct', 'rate-4xx', 'rate-upstream', 'in-flight']) set(id, '–');
      setText($('rates-note'), `Metrics unavailable: ${metricsError}`);
      return;
    }
    const last = samples[samples.length - 1];
    set('in-flight', last && last.inFlight !== null ? String(last.inFlight) : '–');
    if (!recent) {
      for (const id of ['rate-req', 'rate-err', 'rate-err-pct', 'rate-4xx', 'rate-upstream']) set(id, '…');
    } else {
      set('rate-req', fmtRate(recent.total));
      set('rate-err', fmtRate(recent.s5xx), recent.s5xx > 0);
      set('rate-err-pct', recent.total > 0 ? ((100 * recent.s5xx) / recent.total).toFixed(1) + ' %' : '–', recent.s5xx > 0);
      set('rate-4xx', fmtRate(recent.s4xx));
      set('rate-upstream', fmtRate(recent.upstream), recent.upstream > 0);
    }
    setText(
      $('rates-note'),
      'Rates: the change in skygate_requests_total over the last 10 s, sampled every 2 s by this page ' +
        '(5xx: answers with status 500–599; failed attempts: skygate_upstream_errors_total, retried or not).',
    );
    renderSpark();
  }

  function renderSpark() {
    const svg = $('spark');
    const pts = [];
    for (let i = 1; i < samples.length; i++) {
      const r = rates(samples[i - 1], samples[i]);
      if (r) pts.push({ t: samples[i].t, req: r.total, err: r.s5xx });
    }
    const NS = 'http://www.w3.org/2000/svg';
    svg.replaceChildren();
    if (pts.length < 2) return;
    const now = pts[pts.length - 1].t;
    // The x axis spans what has been sampled, up to HISTORY_MS.
    const span = Math.min(HISTORY_MS, Math.max(20000, now - pts[0].t));
    const max = Math.max(1, ...pts.map((p) => p.req));
    const line = (key, cls) => {
      const poly = document.createElementNS(NS, 'polyline');
      const coords = pts
        .filter((p) => now - p.t <= span)
        .map((p) => {
          const x = 240 - ((now - p.t) / span) * 240;
          const y = 39 - (p[key] / max) * 37;
          return `${x.toFixed(1)},${y.toFixed(1)}`;
        });
      poly.setAttribute('points', coords.join(' '));
      if (cls) poly.setAttribute('class', cls);
      svg.append(poly);
    };
    line('req', '');
    line('err', 'err');
  }

  // ---- routes ------------------------------------------------------------------

  function createRoute(route) {
    const name = route.name;
    const node = el('section', { class: 'card route', testid: `route-${name}` });
    const r = {};
    r.strategy = el('span', { class: 'chip' });
    r.match = el('span', { class: 'mono muted' });
    r.models = el('span', { class: 'muted small' });
    r.overridden = el('span', { class: 'chip warn', testid: `overridden-${name}`, text: 'weights overridden' });
    r.rate = el('span', { class: 'muted small', testid: `route-rate-${name}` });
    const head = el('div', { class: 'route-head' }, el('h3', { text: name }), r.strategy, r.match, r.models, r.overridden, r.rate);
    r.tbody = el('tbody');
    const table = el(
      'table',
      null,
      el(
        'thead',
        null,
        el(
          'tr',
          null,
          el('th', { text: 'Backend' }),
          el('th', { class: 'num prio', text: 'Priority' }),
          el('th', { class: 'num', text: 'Configured weight' }),
          el('th', { class: 'num', text: 'Effective weight' }),
          el('th', { text: 'Available' }),
          el('th', { class: 'set-col', text: 'Set weight' }),
        ),
      ),
      r.tbody,
    );
    r.form = null;
    r.apply = el('button', { class: 'primary', testid: `apply-weights-${name}`, text: 'Apply weights', attrs: { type: 'submit' } });
    r.reset = el('button', { testid: `reset-weights-${name}`, text: 'Back to configured weights', attrs: { type: 'button' } });
    const hint = el('span', {
      class: 'muted small',
      text: `Only the weights you change are overridden (0–${MAX_WEIGHT}); the others keep following the config.`,
    });
    const form = el(
      'form',
      { testid: `weights-form-${name}`, attrs: { novalidate: '' } },
      el('div', { class: 'table-wrap' }, table),
      el('div', { class: 'route-actions' }, r.apply, r.reset, hint),
    );
    r.form = form;
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      applyWeights(node, name);
    });
    r.reset.addEventListener('click', () => resetWeights(node, name));
    node.append(head, form);
    node._r = r;
    return node;
  }

  function createTarget(routeName, t) {
    const b = t.backend;
    const row = el('tr', { testid: `target-${routeName}-${b}` });
    const r = {};
    r.priority = el('td', { class: 'num prio' });
    r.weight = el('span', { testid: `weight-${routeName}-${b}` });
    r.effective = el('span', { testid: `effective-${routeName}-${b}` });
    r.bar = el('span', { class: 'bar' });
    r.available = el('span', { class: 'chip' });
    r.input = el('input', {
      testid: `weight-input-${routeName}-${b}`,
      attrs: { type: 'number', min: 0, max: MAX_WEIGHT, step: 1, inputmode: 'numeric', 'aria-label': `weight of ${b} on ${routeName}` },
    });
    r.input.dataset.backend = b;
    r.input.addEventListener('input', () => r.input.classList.add('dirty'));
    row.append(
      el('td', { class: 'mono', text: b }),
      r.priority,
      el('td', { class: 'num' }, r.weight),
      el('td', { class: 'num' }, r.effective, r.bar),
      el('td', null, r.available),
      el('td', { class: 'set-col' }, r.input),
    );
    row._r = r;
    return row;
  }

  function updateTarget(row, t, maxWeight) {
    const r = row._r;
    setText(r.priority, t.priority ?? '');
    setText(r.weight, t.weight);
    setText(r.effective, t.effective_weight);
    r.effective.parentElement.classList.toggle('changed', t.effective_weight !== t.weight);
    r.bar.style.width = maxWeight > 0 ? `${Math.round((80 * t.effective_weight) / maxWeight)}px` : '0px';
    const b = backendsByName.get(t.backend);
    if (t.available) chip(r.available, 'yes', 'ok');
    else if (b && b.drained) chip(r.available, 'no: drained', 'warn');
    else chip(r.available, 'no', 'bad');
    if (!r.input.classList.contains('dirty') && document.activeElement !== r.input) {
      r.input.value = String(t.effective_weight);
    }
    r.input.dataset.effective = String(t.effective_weight);
  }

  function updateRoute(node, route) {
    const r = node._r;
    chip(r.strategy, route.strategy || '');
    const m = route.match || {};
    setText(r.match, m.path ? m.path : m.path_prefix ? m.path_prefix + '*' : '');
    setText(r.models, route.models && route.models.length ? 'models: ' + route.models.join(', ') : '');
    r.overridden.hidden = !route.weights_overridden;
    r.reset.disabled = !route.weights_overridden;
    const rr = recent && recent.byRoute.get(route.name);
    setText(r.rate, recent ? `${fmtRate(rr ? rr.req : 0)} req/s · ${fmtRate(rr ? rr.err : 0)} 5xx/s` : '');
    const targets = route.targets || [];
    // One target: nothing to weigh against (unless an override is to undo).
    r.form.classList.toggle('single', targets.length < 2 && !route.weights_overridden);
    const maxWeight = Math.max(0, ...targets.map((t) => t.effective_weight || 0));
    reconcile(
      r.tbody,
      targets,
      (t) => t.backend,
      (t) => createTarget(route.name, t),
      (row, t) => updateTarget(row, t, maxWeight),
    );
  }

  function renderRoutes(routes) {
    reconcile($('routes'), routes, (r) => r.name, createRoute, updateRoute);
  }

  async function applyWeights(node, routeName) {
    const r = node._r;
    const body = {};
    for (const input of r.tbody.querySelectorAll('input')) {
      const raw = input.value.trim();
      const v = Number(raw);
      if (raw === '' || !Number.isInteger(v) || v < 0 || v > MAX_WEIGHT) {
        showError(`The weight of ${input.dataset.backend} must be a whole number from 0 to ${MAX_WEIGHT}.`, 'action');
        input.focus();
        return;
      }
      if (String(v) !== input.dataset.effective) body[input.dataset.backend] = v;
    }
    if (!Object.keys(body).length) {
      notice(`Route ${routeName}: no weight changed.`);
      return;
    }
    r.apply.disabled = true;
    try {
      const view = await apiJson('PUT', `/admin/routes/${encodeURIComponent(routeName)}/weights`, body);
      for (const input of r.tbody.querySelectorAll('input')) input.classList.remove('dirty');
      hideError('action');
      updateRoute(node, view);
      notice(`Route ${routeName}: weights set (${Object.entries(body).map(([k, v]) => `${k} ${v}`).join(', ')}).${reach(view)}`);
      refresh();
    } catch (e) {
      handleActionError(e);
    } finally {
      r.apply.disabled = false;
    }
  }

  async function resetWeights(node, routeName) {
    const r = node._r;
    r.reset.disabled = true;
    try {
      const view = await apiJson('DELETE', `/admin/routes/${encodeURIComponent(routeName)}/weights`);
      for (const input of r.tbody.querySelectorAll('input')) input.classList.remove('dirty');
      hideError('action');
      updateRoute(node, view);
      notice(`Route ${routeName}: back to its configured weights.${reach(view)}`);
      refresh();
    } catch (e) {
      handleActionError(e);
      r.reset.disabled = false;
    }
  }

  // ---- backends ----------------------------------------------------------------

  const NO_CLOUD = '(no cloud)';
  const NO_REGION = '(no region)';

  function field(dl, label, testid) {
    const dd = el('dd', { testid });
    dl.append(el('dt', { text: label }), dd);
    return dd;
  }

  function createBackend(b) {
    const name = b.name;
    const node = el('article', { class: 'card backend', testid: `backend-${name}` });
    const r = {};
    r.kind = el('div', { class: 'muted small mono' });
    r.state = el('span', { class: 'chip', testid: `state-${name}` });
    const head = el('div', { class: 'backend-head' }, el('div', null, el('h4', { text: name }), r.kind), r.state);
    const dl = el('dl');
    r.health = field(dl, 'health', `health-${name}`);
    r.breaker = field(dl, 'breaker', `breaker-${name}`);
    r.drained = field(dl, 'drained', `drained-${name}`);
    r.inflight = field(dl, 'in flight', `inflight-${name}`);
    r.latency = field(dl, 'latency', `latency-${name}`);
    r.traffic = field(dl, 'traffic', `traffic-${name}`);
    r.warm = field(dl, 'warmth', `warm-${name}`);
    r.warmDetail = field(dl, 'prewarm', `prewarm-${name}`);
    r.cold = field(dl, 'cold starts', `cold-${name}`);
    r.routes = field(dl, 'routes', `routes-${name}`);
    r.drain = el('button', { class: 'danger', testid: `drain-${name}`, text: 'Drain', attrs: { type: 'button' } });
    r.undrain = el('button', { testid: `undrain-${name}`, text: 'Undrain', attrs: { type: 'button' } });
    r.drain.addEventListener('click', () => setDrained(node, name, true));
    r.undrain.addEventListener('click', () => setDrained(node, name, false));
    node.append(head, dl, el('div', { class: 'actions' }, r.drain, r.undrain));
    node._r = r;
    return node;
  }

  function backendState(b) {
    if (b.drained) return ['drained', 'warn'];
    if (b.breaker && b.breaker.state === 'open') return ['breaker open', 'bad'];
    if (b.health === 'unhealthy') return ['unhealthy', 'bad'];
    if (b.throttled_for_ms) return ['throttled', 'warn'];
    if (!b.available) return ['unavailable', 'bad'];
    if (b.breaker && b.breaker.state === 'half_open') return ['half-open', 'warn'];
    return ['serving', 'ok'];
  }

  function updateBackend(node, b) {
    const r = node._r;
    node.dataset.drained = String(!!b.drained);
    node.dataset.health = b.health || '';
    node.dataset.breaker = (b.breaker && b.breaker.state) || '';
    node.classList.toggle('drained', !!b.drained);
    setText(r.kind, `${b.kind || ''} · ${typeof b.address === 'string' ? b.address : ''}`);
    node.title = b.url || '';
    const [state, tone] = backendState(b);
    chip(r.state, state, tone);

    const healthTone = b.health === 'healthy' ? 'ok' : b.health === 'unhealthy' ? 'bad' : '';
    r.health.replaceChildren(el('span', { class: 'chip ' + healthTone, text: b.health || '?' }));
    if (!b.health_checked) r.health.append(' ', el('span', { class: 'muted small', text: 'no health check' }));

    const br = b.breaker || {};
    const brTone = br.state === 'closed' ? 'ok' : br.state === 'open' ? 'bad' : 'warn';
    r.breaker.replaceChildren(el('span', { class: 'chip ' + brTone, text: br.state || '?' }));
    const brBits = [];
    if (br.consecutive_failures) brBits.push(`${br.consecutive_failures} failures in a row`);
    if (br.opens) brBits.push(`opened ${br.opens}×`);
    if (b.throttled_for_ms) brBits.push(`throttled for ${fmtMs(b.throttled_for_ms)}`);
    if (brBits.length) r.breaker.append(' ', el('span', { class: 'muted small', text: brBits.join(' · ') }));

    setText(r.drained, b.drained ? 'yes: no new requests' : 'no');
    setText(r.inflight, b.max_in_flight ? `${b.in_flight} / ${b.max_in_flight}` : String(b.in_flight ?? 0));

    // latency_ms: the peak-EWMA time to first byte the router uses; p50/p95:
    // the TTFB histogram's change over the rate window.
    const lat = [b.latency_ms === null || b.latency_ms === undefined ? 'not measured yet' : `${fmtMs(b.latency_ms)} EWMA`];
    const tt = recent && recent.ttfb.get(b.name);
    if (tt && tt.p50 && tt.p95) {
      const q = (x) => (x.above ? '> ' : '') + fmtMs(x.seconds * 1000);
      lat.push(`p50 ${q(tt.p50)}`, `p95 ${q(tt.p95)}`);
    }
    setText(r.latency, lat.join(' · '));
    r.latency.title = 'EWMA: the time to first byte the router weighs; p50/p95: time to first byte over the last 10 s';

    const bt = (recent && recent.byBackend.get(b.name)) || { req: 0, err: 0, upstream: 0 };
    const traffic = [`${fmtRate(bt.req)} req/s`, `${fmtRate(bt.err)} 5xx/s`];
    if (bt.upstream > 0) traffic.push(`${fmtRate(bt.upstream)} failed attempts/s`);
    setText(r.traffic, recent ? traffic.join(' · ') : metricsError ? 'metrics unavailable' : 'measuring…');

    const w = b.warm;
    if (!w) {
      setText(r.warm, 'no warmth model');
      setText(r.warmDetail, '–');
    } else {
      const bits = [`${w.warm_instances} instance${w.warm_instances === 1 ? '' : 's'} warm, target ${w.target}`];
      const next = fmtIn(w.next_cold_at);
      if (next) bits.push(`next cold ${next}`);
      r.warm.replaceChildren(
        el('span', { class: 'chip ' + (w.likely_cold ? 'warn' : 'ok'), text: w.likely_cold ? 'likely cold' : 'warm' }),
        ' ' + bits.join(' · '),
      );
      const p = w.pings || {};
      const d = [`${w.mode}`];
      if (w.cold_start_ms !== null && w.cold_start_ms !== undefined) d.push(`cold start ${fmtMs(w.cold_start_ms)}`);
      if (w.warm_latency_ms !== null && w.warm_latency_ms !== undefined) d.push(`warm ${fmtMs(w.warm_latency_ms)}`);
      d.push(`pings today ${p.today ?? 0}${p.daily_budget ? ' / ' + p.daily_budget : ''}`);
      if (p.failed) d.push(`${p.failed} failed`);
      if (w.last_reason) d.push(`last: ${w.last_reason}`);
      setText(r.warmDetail, d.join(' · '));
    }

    const cold = [`${b.cold_starts ?? 0} reported`];
    const last = fmtAgo(b.last_cold_start_unix_ms);
    if (last) cold.push(`last ${last}`);
    if (w && w.user_cold_starts !== undefined) cold.push(`${w.user_cold_starts} of ${w.user_requests ?? 0} user requests cold (model)`);
    setText(r.cold, cold.join(' · '));

    const routes = Object.entries(b.routes || {}).map(([route, x]) =>
      x.effective_weight !== x.weight ? `${route} ${x.weight}→${x.effective_weight}` : `${route} ${x.weight}`,
    );
    setText(r.routes, routes.length ? routes.join(', ') : 'none');

    r.drain.hidden = !!b.drained;
    r.undrain.hidden = !b.drained;
  }

  function renderBackends(backends) {
    // cloud → region → backends, in name order; unnamed clouds/regions last
    const clouds = new Map();
    for (const b of backends) {
      const c = b.cloud || NO_CLOUD;
      const g = b.region || NO_REGION;
      if (!clouds.has(c)) clouds.set(c, new Map());
      const regions = clouds.get(c);
      if (!regions.has(g)) regions.set(g, []);
      regions.get(g).push(b);
    }
    const order = (a, b) => (a.startsWith('(') - b.startsWith('(')) || a.localeCompare(b);
    const cloudList = [...clouds.keys()].sort(order).map((c) => ({
      cloud: c,
      regions: [...clouds.get(c).keys()].sort(order).map((g) => ({
        region: g,
        backends: clouds.get(c).get(g).sort((x, y) => x.name.localeCompare(y.name)),
      })),
    }));
    reconcile(
      $('clouds'),
      cloudList,
      (c) => c.cloud,
      (c) => {
        const id = c.cloud === NO_CLOUD ? 'none' : c.cloud;
        const node = el('section', { class: 'cloud', testid: `cloud-${id}` });
        node._h = el('h3');
        node._summary = el('span', { class: 'muted small' });
        node._regions = el('div');
        node.append(node._h, node._regions);
        return node;
      },
      (node, c) => {
        const all = c.regions.flatMap((g) => g.backends);
        const drained = all.filter((b) => b.drained).length;
        const off = all.filter((b) => !b.drained && !b.available).length;
        node._h.replaceChildren(c.cloud + ' ', node._summary);
        const bits = [`${all.length} backend${all.length === 1 ? '' : 's'}`];
        if (drained) bits.push(`${drained} drained`);
        if (off) bits.push(`${off} unavailable`);
        setText(node._summary, bits.join(', '));
        reconcile(
          node._regions,
          c.regions,
          (g) => g.region,
          (g) => {
            const cid = c.cloud === NO_CLOUD ? 'none' : c.cloud;
            const rid = g.region === NO_REGION ? 'none' : g.region;
            const rn = el('div', { class: 'region', testid: `region-${cid}-${rid}` });
            rn._list = el('div', { class: 'backends' });
            rn.append(el('div', { class: 'region-name', text: `region ${g.region}` }), rn._list);
            return rn;
          },
          (rn, g) => reconcile(rn._list, g.backends, (b) => b.name, createBackend, updateBackend),
        );
      },
    );
  }

  function findBackendNode(name) {
    for (const n of document.querySelectorAll('article.backend')) if (n.dataset.key === name) return n;
    return null;
  }

  async function setDrained(node, name, drain) {
    const r = node._r;
    r.drain.disabled = r.undrain.disabled = true;
    try {
      const view = await apiJson('POST', `/admin/backends/${encodeURIComponent(name)}/${drain ? 'drain' : 'undrain'}`);
      hideError('action');
      const current = findBackendNode(name);
      if (current) updateBackend(current, view);
      notice((drain ? `Backend ${name} drained: no new requests; those in flight finish.` : `Backend ${name} undrained: it takes new requests again.`) + reach(view));
      refresh();
    } catch (e) {
      handleActionError(e);
    } finally {
      r.drain.disabled = r.undrain.disabled = false;
    }
  }

  function handleActionError(e) {
    if (e.status === 401) {
      logout('The admin token was refused (401): log in again.');
      return;
    }
    showError(e.message, 'action');
  }

  // ---- the refresh loop --------------------------------------------------------

  let timer = null;
  let inFlight = null;
  let generation = 0;
  let again = false;

  function refresh() {
    if (inFlight) {
      again = true; // once this one is done
      return inFlight;
    }
    const gen = generation;
    inFlight = (async () => {
      const [routes, backends, metrics] = await Promise.allSettled([
        apiJson('GET', '/admin/routes'),
        apiJson('GET', '/admin/backends'),
        api('GET', '/metrics'),
      ]);
      if (gen !== generation) return; // logged out meanwhile
      const failed = [routes, backends, metrics].find((x) => x.status === 'rejected' && x.reason.status === 401);
      if (failed) {
        logout('The admin token was refused (401): log in again.');
        return;
      }
      if (metrics.status === 'fulfilled') {
        metricsError = null;
        try {
          addSample(makeSample(parseMetrics(metrics.value)));
        } catch (e) {
          metricsError = `cannot read /metrics: ${e.message}`;
        }
      } else {
        metricsError = metrics.reason.message;
      }
      renderRates();
      if (backends.status === 'fulfilled') {
        const list = backends.value.backends || [];
        backendsByName = new Map(list.map((b) => [b.name, b]));
        renderBackends(list);
      }
      if (routes.status === 'fulfilled') renderRoutes(routes.value.routes || []);
      const errs = [routes, backends].filter((x) => x.status === 'rejected').map((x) => x.reason.message);
      if (errs.length) {
        showError(errs.join(' — '), 'refresh');
        setText($('updated'), `update failed at ${new Date().toLocaleTimeString()}; showing older data`);
      } else {
        hideError('refresh');
        setText($('updated'), `updated ${new Date().toLocaleTimeString()}`);
      }
    })()
      .catch((e) => {
        if (gen === generation) showError(`The page failed to update: ${e.message}`, 'refresh');
      })
      .finally(() => {
        inFlight = null;
        if (again && gen === generation) {
          again = false;
          refresh();
        }
      });
    return inFlight;
  }

  function tick() {
    if ($('auto').checked && !document.hidden) refresh();
  }

  // ---- log in, log out -----------------------------------------------------------

  function showDashboard() {
    $('login').hidden = true;
    $('dash').hidden = false;
    $('session-bar').hidden = false;
    generation++;
    refresh();
    clearInterval(timer);
    timer = setInterval(tick, REFRESH_MS);
  }

  function logout(message) {
    generation++;
    clearInterval(timer);
    timer = null;
    again = false;
    clearToken();
    samples = [];
    recent = null;
    backendsByName = new Map();
    metricsError = null;
    // Nothing the token fetched stays on the page.
    $('routes').replaceChildren();
    $('clouds').replaceChildren();
    $('spark').replaceChildren();
    $('dash').hidden = true;
    $('session-bar').hidden = true;
    hideError();
    $('notice').hidden = true;
    setText($('updated'), 'not loaded yet');
    showLogin(message);
  }

  function showLogin(message) {
    $('login').hidden = false;
    const le = $('login-error');
    setText(le, message || '');
    le.hidden = !message;
    $('token').value = '';
    $('token').focus();
  }

  async function onLogin(ev) {
    ev.preventDefault();
    const token = $('token').value.trim();
    const le = $('login-error');
    if (!token) {
      setText(le, 'Enter the admin token (admin.token in the config).');
      le.hidden = false;
      return;
    }
    $('login-submit').disabled = true;
    try {
      await api('GET', '/admin/backends', undefined, token);
      setToken(token);
      $('token').value = '';
      le.hidden = true;
      showDashboard();
    } catch (e) {
      setText(le, e.status === 401 ? `That token was refused: ${e.message}` : e.message);
      le.hidden = false;
      $('token').select();
    } finally {
      $('login-submit').disabled = false;
    }
  }

  function boot() {
    $('login').addEventListener('submit', onLogin);
    $('logout').addEventListener('click', () => logout());
    $('refresh').addEventListener('click', () => refresh());
    $('error-close').addEventListener('click', () => hideError());
    $('auto').addEventListener('change', () => {
      if ($('auto').checked) refresh();
    });
    document.addEventListener('visibilitychange', () => {
      if (!document.hidden && timer) tick();
    });
    if (getToken()) showDashboard();
    else showLogin();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', boot);
  else boot();
})();
