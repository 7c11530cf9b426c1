// Portico admin dashboard. No libraries: the page polls the admin API once a second and draws with the DOM and
// inline SVG. Every value from the API reaches the page through textContent or setAttribute, never innerHTML, so a
// route or server name cannot inject markup (the Content-Security-Policy forbids inline script as a second fence).
'use strict';

(() => {
  const TOKEN_KEY = 'portico.adminToken';
  const POLL_MS = 1000;
  const CHART_SECONDS = 120;   // the most history the charts show
  const CHART_MIN_SECONDS = 30; // the least: a fresh page shows 30 s, and widens to 2 min as history accumulates
  const WINDOW_SECONDS = 10;   // the window of the numbers at the top and in the tables
  const SVG_NS = 'http://www.w3.org/2000/svg';

  let token = sessionStorage.getItem(TOKEN_KEY);
  let samples = [];            // { t, requests, errors, cumulative, routes: Map(name -> {requests, errors}) }
  let bounds = [];
  let routes = null;
  let routesGeneration = -1;
  let upstreams = null;
  let stats = null;
  let timer = null;
  let paused = false;
  let busy = false;

  const $ = (id) => document.getElementById(id);

  /** Creates an element; strings among the children become text nodes (never parsed as HTML). */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) {
        continue;
      }
      if (key === 'class') {
        node.className = value;
      } else if (key === 'onclick') {
        node.addEventListener('click', value);
      } else {
        node.setAttribute(key, value === true ? '' : String(value));
      }
    }
    for (const child of children.flat()) {
      if (child !== null && child !== undefined && child !== false) {
        node.append(child instanceof Node ? child : String(child));
      }
    }
    return node;
  }

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      node.setAttribute(key, String(value));
    }
    if (text !== undefined) {
      node.textContent = text;
    }
    return node;
  }

  class AuthError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function api(path, method = 'GET') {
    const response = await fetch(path, {
      method,
      cache: 'no-store',
      headers: { Authorization: 'Bearer ' + token },
    });
    let body = null;
    try {
      body = await response.json();
    } catch {
      body = null;
    }
    if (response.status === 401 || response.status === 403) {
      throw new AuthError(response.status, (body && body.message) || 'HTTP ' + response.status);
    }
    return { status: response.status, body };
  }

  // ---- formatting ----

  function formatRate(value) {
    if (value === null || value === undefined || !isFinite(value)) {
      return '–';
    }
    if (value === 0) {
      return '0';
    }
    if (value < 10) {
      return value.toFixed(2);
    }
    if (value < 100) {
      return value.toFixed(1);
    }
    return Math.round(value).toLocaleString('en-US');
  }

  function formatSeconds(seconds) {
    if (seconds === null || seconds === undefined || !isFinite(seconds)) {
      return '–';
    }
    const ms = seconds * 1000;
    if (ms < 1) {
      return ms.toFixed(2) + ' ms';
    }
    if (ms < 10) {
      return ms.toFixed(1) + ' ms';
    }
    if (ms < 1000) {
      return Math.round(ms) + ' ms';
    }
    return (ms / 1000).toFixed(ms < 10000 ? 2 : 1) + ' s';
  }

  function formatCount(value) {
    return Number(value || 0).toLocaleString('en-US');
  }

  // ---- histogram maths ----

  /**
   * The q-quantile of the observations between two cumulative bucket snapshots, interpolated linearly inside the
   * bucket it falls in, as Prometheus' histogram_quantile does. Above the last finite bound it answers that bound.
   */
  function quantile(q, older, newer, bucketBounds = bounds) {
    const last = newer.length - 1;
    const total = newer[last] - older[last];
    if (!(total > 0)) {
      return null;
    }
    const rank = q * total;
    let below = 0;
    for (let i = 0; i <= last; i++) {
      const cumulative = newer[i] - older[i];
      if (cumulative >= rank) {
        if (i >= bucketBounds.length) {
          return bucketBounds[bucketBounds.length - 1];
        }
        const lower = i === 0 ? 0 : bucketBounds[i - 1];
        const high = bucketBounds[i];
        const inBucket = cumulative - below;
        return inBucket > 0 ? lower + (high - lower) * (rank - below) / inBucket : high;
      }
      below = cumulative;
    }
    return bucketBounds[bucketBounds.length - 1];
  }

  /** Rates and percentiles between two samples. */
  function between(older, newer) {
    const seconds = newer.t - older.t;
    if (!(seconds > 0)) {
      return null;
    }
    return {
      t: newer.t,
      rps: (newer.requests - older.requests) / seconds,
      eps: (newer.errors - older.errors) / seconds,
      requests: newer.requests - older.requests,
      errors: newer.errors - older.errors,
      p50: quantile(0.5, older.cumulative, newer.cumulative),
      p95: quantile(0.95, older.cumulative, newer.cumulative),
      p99: quantile(0.99, older.cumulative, newer.cumulative),
      seconds,
    };
  }

  /** The sample closest to WINDOW_SECONDS before the newest one (or the oldest there is). */
  function windowStart() {
    const newest = samples[samples.length - 1];
    for (let i = samples.length - 2; i >= 0; i--) {
      if (newest.t - samples[i].t >= WINDOW_SECONDS) {
        return samples[i];
      }
    }
    return samples.length > 1 ? samples[0] : null;
  }

  function addSample(data) {
    bounds = data.latency.bounds;
    const sample = {
      t: data.uptime_seconds,
      requests: data.requests_total,
      errors: data.errors_total,
      cumulative: data.latency.cumulative,
      routes: new Map(data.routes.map((r) => [r.name, r])),
    };
    const previous = samples[samples.length - 1];
    if (previous && (sample.t <= previous.t || sample.requests < previous.requests)) {
      // The gateway restarted (or a route set changed its counters): start the history again.
      samples = [];
    }
    samples.push(sample);
    while (samples.length > 2 && sample.t - samples[0].t > CHART_SECONDS + 2) {
      samples.shift();
    }
  }

  // ---- charts ----

  /** A round grid step (1, 2, 2.5 or 5 times a power of ten) for about four lines up to <max>. */
  function niceStep(max) {
    const raw = max / 4;
    const magnitude = Math.pow(10, Math.floor(Math.log10(raw)));
    for (const step of [1, 2, 2.5, 5, 10]) {
      if (raw <= step * magnitude) {
        return step * magnitude;
      }
    }
    return 10 * magnitude;
  }

  /** An axis number: no trailing zeros, at most three significant decimals. */
  function formatTick(value) {
    return String(Number(value.toPrecision(3)));
  }

  function formatTickSeconds(seconds) {
    const ms = seconds * 1000;
    return ms >= 1000 ? formatTick(ms / 1000) + ' s' : formatTick(ms) + ' ms';
  }

  /** Draws lines of series [{ values: [{t, v}], color, fill }] over the last CHART_SECONDS. */
  function drawChart(node, series, format, minimum) {
    const width = Math.max(200, Math.round(node.clientWidth || 400));
    const height = Math.max(120, Math.round(node.clientHeight || 190));
    const left = 58;
    const right = 8;
    const top = 8;
    const bottom = 22;
    const plotWidth = width - left - right;
    const plotHeight = height - top - bottom;
    node.setAttribute('viewBox', `0 0 ${width} ${height}`);
    node.replaceChildren();

    const newest = samples.length ? samples[samples.length - 1].t : 0;
    const history = samples.length ? newest - samples[0].t : 0;
    const span = Math.min(CHART_SECONDS, Math.max(CHART_MIN_SECONDS, Math.ceil(history / 30) * 30));
    let max = minimum;
    for (const s of series) {
      for (const p of s.values) {
        if (p.v !== null && p.v > max) {
          max = p.v;
        }
      }
    }
    const step = niceStep(max);
    const lines = Math.max(1, Math.ceil(max / step - 1e-9));
    max = step * lines;
    const x = (t) => left + plotWidth - (newest - t) / span * plotWidth;
    const y = (v) => top + plotHeight - v / max * plotHeight;

    for (let i = 0; i <= lines; i++) {
      const value = step * i;
      const yy = Math.round(y(value)) + 0.5;
      node.append(svg('line', { class: 'grid', x1: left, x2: width - right, y1: yy, y2: yy }));
      node.append(svg('text', { class: 'axis', x: left - 6, y: yy + 4, 'text-anchor': 'end' }, format(value)));
    }
    for (const seconds of [span, span / 2, 0]) {
      const label = seconds === 0 ? 'now' : seconds % 60 === 0 ? `-${seconds / 60} min` : `-${seconds} s`;
      node.append(svg('text', {
        class: 'axis', x: left + plotWidth - seconds / span * plotWidth, y: height - 6,
        'text-anchor': seconds === 0 ? 'end' : seconds === span ? 'start' : 'middle',
      }, label));
    }

    let drawn = false;
    for (const s of series) {
      // A null value (no request in that second, so no percentile) breaks the line.
      let d = '';
      let run = [];
      const runs = [];
      for (const p of s.values) {
        if (p.v === null || newest - p.t > span) {
          if (run.length) {
            runs.push(run);
          }
          run = [];
          continue;
        }
        run.push([x(p.t), y(p.v)]);
      }
      if (run.length) {
        runs.push(run);
      }
      for (const r of runs) {
        d += r.map((pt, i) => (i === 0 ? 'M' : 'L') + pt[0].toFixed(1) + ' ' + pt[1].toFixed(1)).join(' ') + ' ';
        if (s.fill && r.length > 1) {
          const area = `M${r[0][0].toFixed(1)} ${y(0)} ` + r.map((pt) => 'L' + pt[0].toFixed(1) + ' ' + pt[1].toFixed(1)).join(' ')
            + ` L${r[r.length - 1][0].toFixed(1)} ${y(0)} Z`;
          node.append(svg('path', { d: area, fill: s.color, 'fill-opacity': 0.12, stroke: 'none' }));
        }
      }
      if (d) {
        drawn = true;
        node.append(svg('path', {
          d, fill: 'none', stroke: s.color, 'stroke-width': 1.8, 'stroke-linejoin': 'round', 'stroke-linecap': 'round',
        }));
      }
    }
    if (!drawn) {
      node.append(svg('text', { class: 'empty', x: left + plotWidth / 2, y: top + plotHeight / 2, 'text-anchor': 'middle' },
        samples.length < 2 ? 'collecting…' : 'no requests'));
    }
  }

  function renderCharts() {
    const points = [];
    for (let i = 1; i < samples.length; i++) {
      const p = between(samples[i - 1], samples[i]);
      if (p) {
        points.push(p);
      }
    }
    const pick = (key) => points.map((p) => ({ t: p.t, v: p[key] }));
    const css = getComputedStyle(document.documentElement);
    const color = (name) => css.getPropertyValue(name).trim();
    drawChart($('chart-rps'), [{ values: pick('rps'), color: color('--accent'), fill: true }], formatTick, 1);
    drawChart($('chart-errors'), [{ values: pick('eps'), color: color('--bad'), fill: true }], formatTick, 1);
    drawChart($('chart-latency'), [
      { values: pick('p50'), color: color('--ok') },
      { values: pick('p95'), color: color('--warn') },
      { values: pick('p99'), color: color('--purple') },
    ], formatTickSeconds, 0.001);
  }

  // ---- tables and numbers ----

  function stateChip(server) {
    const kinds = { up: 'ok', down: 'bad', ejected: 'bad', circuit_open: 'bad', draining: 'warn' };
    const labels = { up: 'up', down: 'down', ejected: 'ejected', circuit_open: 'circuit open', draining: 'draining' };
    return el('span', { class: 'chip ' + (kinds[server.state] || ''), 'data-role': 'state' }, labels[server.state] || server.state);
  }

  function breakerChip(state) {
    const kinds = { closed: 'ok', open: 'bad', half_open: 'warn' };
    return el('span', { class: 'chip ' + (kinds[state] || '') }, state === 'half_open' ? 'half-open' : state);
  }

  // The tables are built once per shape (which upstreams, servers and routes there are) and then updated in place,
  // so a click on a button or a text selection is not lost to the next refresh.
  let upstreamsShape = '';
  let serverCells = new Map();
  let upstreamCells = new Map();
  let routesShape = '';
  let routeCells = new Map();

  function set(node, text) {
    if (node.textContent !== text) {
      node.textContent = text;
    }
  }

  function buildUpstreams() {
    serverCells = new Map();
    upstreamCells = new Map();
    const cards = upstreams.upstreams.map((u) => {
      const rows = u.servers.map((s) => {
        const cells = {
          zone: el('td', {}),
          weight: el('td', { class: 'num' }),
          state: el('td', {}),
          breaker: el('td', {}),
          inFlight: el('td', { class: 'num' }),
          rps: el('td', { class: 'num', 'data-role': 'rps' }),
          fps: el('td', { class: 'num' }),
          total: el('td', { class: 'num' }),
          action: el('td', { class: 'num' }),
          key: '',
        };
        cells.row = el('tr', { 'data-upstream': u.name, 'data-server': s.address },
          el('td', { class: 'addr' }, s.address), cells.zone, cells.weight, cells.state, cells.breaker, cells.inFlight,
          cells.rps, cells.fps, cells.total, cells.action);
        serverCells.set(u.name + '\n' + s.address, cells);
        return cells.row;
      });
      const head = { available: el('span', { class: 'chip' }), facts: el('span', { class: 'facts' }), rates: el('span', { class: 'rates' }) };
      upstreamCells.set(u.name, head);
      return el('div', { class: 'upstream', 'data-upstream': u.name },
        el('div', { class: 'upstream-head' }, el('span', { class: 'name' }, u.name), head.available, head.facts, head.rates),
        el('table', {},
          el('thead', {}, el('tr', {},
            el('th', {}, 'server'), el('th', {}, 'zone'), el('th', { class: 'num' }, 'weight'), el('th', {}, 'state'),
            el('th', {}, 'breaker'), el('th', { class: 'num' }, 'in flight'), el('th', { class: 'num' }, 'req/s'),
            el('th', { class: 'num' }, 'failures/s'), el('th', { class: 'num' }, 'requests'), el('th', { class: 'num' }, ''))),
          el('tbody', {}, rows)));
    });
    $('upstreams').replaceChildren(...cards);
  }

  function renderUpstreams() {
    if (!upstreams) {
      return;
    }
    const shape = JSON.stringify(upstreams.upstreams.map((u) => [u.name, u.servers.map((s) => s.address)]));
    if (shape !== upstreamsShape) {
      buildUpstreams();
      upstreamsShape = shape;
    }
    for (const u of upstreams.upstreams) {
      const head = upstreamCells.get(u.name);
      head.available.className = 'chip ' + (u.servers_available === 0 ? 'bad' : u.servers_available < u.servers_total ? 'warn' : 'ok');
      set(head.available, `${u.servers_available}/${u.servers_total} available`);
      const health = u.health_check ? `${u.health_check.type} check every ${u.health_check.interval_seconds} s` : 'passive health only';
      const facts = [u.strategy, u.protocol, health, u.circuit_breaker ? 'circuit breaker on' : 'no circuit breaker', `retries ${u.max_retries}`];
      if (head.facts.dataset.key !== facts.join('|')) {
        head.facts.dataset.key = facts.join('|');
        head.facts.replaceChildren(...facts.map((f) => el('span', {}, f)));
      }
      set(head.rates, `${formatRate(u.requests_per_second)} req/s · ${formatRate(u.failures_per_second)} failures/s`);
      for (const s of u.servers) {
        const cells = serverCells.get(u.name + '\n' + s.address);
        cells.row.dataset.state = s.state;
        set(cells.weight, String(s.weight));
        set(cells.inFlight, String(s.in_flight));
        set(cells.rps, formatRate(s.requests_per_second));
        set(cells.fps, formatRate(s.failures_per_second));
        set(cells.total, formatCount(s.requests_total));
        // Chips and the button change only with the state, so they are replaced only then.
        const key = [s.zone, s.backup, s.state, s.draining, s.circuit_breaker].join('|');
        if (cells.key === key) {
          continue;
        }
        cells.key = key;
        cells.zone.replaceChildren(s.zone || '–', s.backup ? el('span', { class: 'chip info spaced' }, 'backup') : '');
        cells.state.replaceChildren(stateChip(s), s.draining && s.state !== 'draining' ? el('span', { class: 'chip warn spaced' }, 'draining') : '');
        cells.breaker.replaceChildren(breakerChip(s.circuit_breaker));
        cells.action.replaceChildren(s.draining
          ? el('button', { type: 'button', class: 'small enable', onclick: () => serverAction(u.name, s.address, 'enable') }, 'Enable')
          : el('button', { type: 'button', class: 'small drain', onclick: () => serverAction(u.name, s.address, 'drain') }, 'Drain'));
      }
    }
  }

  function renderRoutes() {
    if (!routes) {
      return;
    }
    const shape = JSON.stringify(routes.routes);
    if (shape !== routesShape) {
      routesShape = shape;
      routeCells = new Map();
      const rows = routes.routes.map((r) => {
        const cells = { rps: el('td', { class: 'num' }), eps: el('td', { class: 'num' }), total: el('td', { class: 'num' }) };
        routeCells.set(r.name, cells);
        const match = [r.host, r.path, r.methods.length ? r.methods.join(',') : null].filter(Boolean).join('  ');
        return el('tr', { 'data-route': r.name },
          el('td', {}, r.name),
          el('td', { class: 'addr' }, match),
          el('td', {}, r.upstream !== null ? r.upstream : el('span', { class: 'muted' }, `respond ${r.respond_status}`)),
          el('td', {}, r.auth_required ? el('span', { class: 'chip info' }, 'jwt') : el('span', { class: 'muted' }, '–')),
          cells.rps, cells.eps, cells.total);
      });
      $('routes').tBodies[0].replaceChildren(...rows);
    }
    const start = samples.length > 1 ? windowStart() : null;
    const newest = samples[samples.length - 1];
    for (const r of routes.routes) {
      const cells = routeCells.get(r.name);
      const now = newest && newest.routes.get(r.name);
      const then = start && start.routes.get(r.name);
      const seconds = now && then ? newest.t - start.t : 0;
      set(cells.rps, formatRate(seconds > 0 ? (now.requests_total - then.requests_total) / seconds : null));
      set(cells.eps, formatRate(seconds > 0 ? (now.errors_total - then.errors_total) / seconds : null));
      set(cells.total, formatCount(now ? now.requests_total : r.requests_total));
    }
  }

  function renderNumbers() {
    const newest = samples[samples.length - 1];
    const start = windowStart();
    const w = start ? between(start, newest) : null;
    const rps = $('kpi-rps');
    rps.textContent = w ? formatRate(w.rps) : '–';
    rps.dataset.value = w ? String(w.rps) : '';
    $('kpi-requests').textContent = formatCount(stats.requests_total) + ' requests in total';
    const eps = $('kpi-eps');
    eps.textContent = w ? formatRate(w.eps) : '–';
    eps.classList.toggle('bad', !!w && w.eps > 0);
    $('kpi-error-ratio').textContent = w && w.requests > 0
      ? (100 * w.errors / w.requests).toFixed(w.errors ? 2 : 0) + ' % of requests · ' + formatCount(stats.errors_total) + ' in total'
      : formatCount(stats.errors_total) + ' in total';
    const latency = $('kpi-latency');
    if (w && w.p50 !== null) {
      latency.replaceChildren(...[['p50', w.p50], ['p95', w.p95], ['p99', w.p99]].map(([name, value]) =>
        el('span', { class: name }, el('small', {}, name), formatSeconds(value))));
    } else {
      latency.textContent = '–';
    }
    let inFlight = 0;
    for (const u of upstreams.upstreams) {
      for (const s of u.servers) {
        inFlight += s.in_flight;
      }
    }
    $('kpi-inflight').textContent = formatCount(inFlight);
    // Client connections are counted only where the host wires the counter onto its listeners.
    $('kpi-connections').textContent = stats.connections_total > 0
      ? `${formatCount(stats.connections_active)} client connections open`
      : 'requests being proxied now';
    let available = 0;
    let total = 0;
    for (const u of stats.upstreams) {
      available += u.servers_available;
      total += u.servers_total;
    }
    const servers = $('kpi-servers');
    servers.textContent = `${available} / ${total}`;
    servers.classList.toggle('bad', available < total);
    $('kpi-upstreams').textContent = `${stats.upstreams.length} upstream${stats.upstreams.length === 1 ? '' : 's'}, ${stats.routes.length} route${stats.routes.length === 1 ? '' : 's'}`;
    $('generation').textContent = String(stats.generation);
    $('updated').textContent = 'updated ' + new Date().toLocaleTimeString('en-GB');
  }

  function renderReady(ready) {
    const chip = $('ready');
    if (!ready) {
      chip.className = 'chip';
      chip.textContent = 'readiness unknown';
      return;
    }
    chip.className = 'chip ' + (ready.status === 'ready' ? 'ok' : 'bad');
    chip.textContent = ready.status === 'ready' ? 'ready' : 'not ready: ' + ready.reason;
  }

  let noticeTimer = null;

  /** A message above the numbers; a success fades after 8 s, a failure stays until the next message. */
  function showNotice(text, kind) {
    const notice = $('notice');
    notice.className = 'notice ' + (kind || '');
    notice.textContent = text;
    notice.hidden = !text;
    clearTimeout(noticeTimer);
    if (text && kind === 'ok') {
      noticeTimer = setTimeout(() => showNotice('', ''), 8000);
    }
  }

  // ---- polling ----

  async function refresh() {
    if (busy) {
      return;
    }
    busy = true;
    try {
      const [statsResponse, upstreamsResponse, ready] = await Promise.all([
        api('/api/stats'),
        api('/api/upstreams'),
        fetch('/ready', { cache: 'no-store' }).then((r) => r.json()).catch(() => null),
      ]);
      if (statsResponse.status !== 200 || upstreamsResponse.status !== 200) {
        throw new Error('the admin API answered ' + statsResponse.status);
      }
      stats = statsResponse.body;
      upstreams = upstreamsResponse.body;
      if (stats.generation !== routesGeneration) {
        const routesResponse = await api('/api/routes');
        routes = routesResponse.body;
        routesGeneration = stats.generation;
      }
      addSample(stats);
      showMain();
      renderReady(ready);
      renderNumbers();
      renderCharts();
      renderUpstreams();
      renderRoutes();
      if ($('notice').dataset.kind === 'offline') {
        showNotice('', '');
        delete $('notice').dataset.kind;
      }
      document.body.dataset.state = 'live';
    } catch (error) {
      if (error instanceof AuthError) {
        showLogin(error.message);
        return;
      }
      document.body.dataset.state = 'offline';
      showNotice('Cannot reach the admin API: ' + error.message + '. Retrying…', 'bad');
      $('notice').dataset.kind = 'offline';
    } finally {
      busy = false;
    }
  }

  function start() {
    stop();
    if (!paused) {
      refresh();
      timer = setInterval(refresh, POLL_MS);
    }
  }

  function stop() {
    if (timer !== null) {
      clearInterval(timer);
      timer = null;
    }
  }

  function showMain() {
    $('login').hidden = true;
    $('main').hidden = false;
    for (const id of ['pause', 'reload', 'signout']) {
      $(id).hidden = false;
    }
  }

  function showLogin(message) {
    stop();
    document.body.dataset.state = 'login';
    $('main').hidden = true;
    $('login').hidden = false;
    for (const id of ['pause', 'reload', 'signout']) {
      $(id).hidden = true;
    }
    $('login-error').textContent = message || '';
    $('token').focus();
  }

  // ---- actions ----

  async function serverAction(upstream, server, action) {
    try {
      const response = await api(`/api/upstreams/${encodeURIComponent(upstream)}/servers/${encodeURIComponent(server)}/${action}`, 'POST');
      if (response.status === 200) {
        showNotice(action === 'drain'
          ? `${upstream}/${server} drained: no new requests; ${response.body.in_flight} still in flight.`
          : `${upstream}/${server} enabled.`, 'ok');
      } else {
        showNotice(`${action} ${upstream}/${server} failed: ${(response.body && response.body.message) || response.status}`, 'bad');
      }
    } catch (error) {
      if (error instanceof AuthError) {
        showLogin(error.message);
        return;
      }
      showNotice(`${action} ${upstream}/${server} failed: ${error.message}`, 'bad');
    }
    refresh();
  }

  async function reloadConfig() {
    const button = $('reload');
    button.disabled = true;
    try {
      const response = await api('/api/reload', 'POST');
      const body = response.body || {};
      if (body.applied) {
        showNotice(`Config reloaded: generation ${body.generation}.`, 'ok');
      } else {
        const lines = (body.errors || []).map((e) => '  ' + e.text);
        showNotice(`Reload rejected, the running config keeps serving: ${body.message || response.status}` + (lines.length ? '\n' + lines.join('\n') : ''), 'bad');
      }
    } catch (error) {
      if (error instanceof AuthError) {
        showLogin(error.message);
        return;
      }
      showNotice('Reload failed: ' + error.message, 'bad');
    } finally {
      button.disabled = false;
    }
    refresh();
  }

  // For tests (DashboardTests): the percentile maths, callable with known buckets.
  window.porticoDashboard = Object.freeze({ quantile });

  document.addEventListener('DOMContentLoaded', () => {
    $('login-form').addEventListener('submit', (event) => {
      event.preventDefault();
      const value = $('token').value.trim();
      if (!value) {
        return;
      }
      token = value;
      sessionStorage.setItem(TOKEN_KEY, token);
      $('token').value = '';
      $('login-error').textContent = '';
      paused = false;
      start();
    });
    $('signout').addEventListener('click', () => {
      sessionStorage.removeItem(TOKEN_KEY);
      token = null;
      samples = [];
      showLogin('');
    });
    $('pause').addEventListener('click', () => {
      paused = !paused;
      $('pause').textContent = paused ? 'Resume' : 'Pause';
      if (paused) {
        stop();
      } else {
        start();
      }
    });
    $('reload').addEventListener('click', reloadConfig);
    window.addEventListener('resize', () => {
      if (samples.length) {
        renderCharts();
      }
    });
    if (token) {
      start();
    } else {
      showLogin('');
      // Asked without a token, the API says 401 when a token is configured and 403 admin_api_disabled when none is:
      // then say so at once instead of letting the operator type a token that cannot work.
      fetch('/api/stats', { cache: 'no-store' })
        .then((r) => r.json())
        .then((body) => {
          if (body && body.error === 'admin_api_disabled' && !token) {
            $('login-error').textContent = body.message;
          }
        })
        .catch(() => {});
    }
  });
})();
