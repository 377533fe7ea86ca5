// Squall's web UI: plain JavaScript over the Storm-shaped REST API (/api/v1/...), compiled into
// the Nimbus binary. Pages: the cluster (#/), a topology (#/topology/NAME), a component
// (#/topology/NAME/component/ID). Every page refreshes every two seconds.
'use strict';

const REFRESH_MS = 2000;
const CHART_POINTS = 60;
const $ = (selector) => document.querySelector(selector);
const esc = (value) => String(value ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
const num = (n) => (n === null || n === undefined ? '–' : Number(n).toLocaleString('en-US', { maximumFractionDigits: 2 }));
const ms = (n) => (n === null || n === undefined ? '–' : `${Number(n).toFixed(2)} ms`);
const bytes = (n) => (n === null || n === undefined ? '–' : `${(n / 1048576).toFixed(1)} MB`);
const duration = (secs) => {
  const s = Number(secs) || 0;
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
};
const link = (hash, text) => `<a href="#${esc(hash)}">${esc(text)}</a>`;
const topologyHash = (name) => `/topology/${encodeURIComponent(name)}`;

async function api(path, options) {
  const response = await fetch(`/api/v1${path}`, options);
  const body = await response.json().catch(() => ({ error: `${response.status} ${response.statusText}` }));
  if (!response.ok) throw new Error(body.error || `${response.status} ${response.statusText}`);
  return body;
}

function table(columns, rows, empty) {
  if (rows.length === 0) return `<p class="muted">${esc(empty)}</p>`;
  const head = columns.map(([title, , cls]) => `<th class="${cls || ''}">${esc(title)}</th>`).join('');
  const body = rows
    .map((row) => `<tr>${columns.map(([, cell, cls]) => `<td class="${cls || ''}">${cell(row)}</td>`).join('')}</tr>`)
    .join('');
  return `<table><thead><tr>${head}</tr></thead><tbody>${body}</tbody></table>`;
}

function card(label, value, metric) {
  return `<div class="card"><div class="label">${esc(label)}</div><div class="value" data-metric="${esc(metric || label)}">${value}</div></div>`;
}

// Samples of the page's topology, for its charts: [{t, emitted, latency}].
let samples = [];
let timer = null;
let current = null;

function route() {
  clearInterval(timer);
  samples = [];
  const parts = (location.hash.slice(1) || '/').split('/').filter(Boolean).map(decodeURIComponent);
  if (parts[0] === 'topology' && parts.length === 2) current = () => topologyPage(parts[1]);
  else if (parts[0] === 'topology' && parts[2] === 'component' && parts.length === 4) current = () => componentPage(parts[1], parts[3]);
  else current = clusterPage;
  refresh();
  timer = setInterval(refresh, REFRESH_MS);
}

async function refresh() {
  try {
    await current();
    $('#error').textContent = '';
    $('#updated').textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (e) {
    $('#error').textContent = e.message;
  }
}

async function clusterPage() {
  const [cluster, nimbuses, supervisors, topologies] = await Promise.all([
    api('/cluster/summary'), api('/nimbus/summary'), api('/supervisor/summary'), api('/topology/summary'),
  ]);
  $('#crumbs').innerHTML = '';
  $('#main').innerHTML = `
    <h1>Cluster</h1>
    <div class="cards">
      ${card('Supervisors', num(cluster.supervisors), 'supervisors')}
      ${card('Slots used', `${num(cluster.slotsUsed)} / ${num(cluster.slotsTotal)}`, 'slots')}
      ${card('Topologies', num(cluster.topologies), 'topologies')}
      ${card('Executors', num(cluster.executorsTotal), 'executors')}
      ${card('Tasks', num(cluster.tasksTotal), 'tasks')}
    </div>
    <h2>Topologies</h2>
    <div id="topologies">${table([
      ['Name', (t) => link(topologyHash(t.name), t.name)],
      ['Status', (t) => `<span class="status ${esc(t.status)}">${esc(t.status)}</span>`],
      ['Uptime', (t) => duration(t.uptimeSeconds)],
      ['Workers', (t) => `${num(t.workersRunning)} / ${num(t.workersTotal)}`, 'num'],
      ['Tasks', (t) => num(t.tasksTotal), 'num'],
      ['Scheduler', (t) => esc(t.schedulerInfo || ''), 'wrap'],
    ], topologies.topologies, 'No topologies. Submit one with `squall submit`.')}</div>
    <h2>Supervisors</h2>
    <div id="supervisors">${table([
      ['Id', (s) => esc(s.id)],
      ['Host', (s) => esc(s.host)],
      ['Slots used', (s) => `${num(s.slotsUsed)} / ${num(s.slotsTotal)}`, 'num'],
      ['Uptime', (s) => duration(s.uptimeSeconds)],
      ['Version', (s) => esc(s.version)],
    ], supervisors.supervisors, 'No supervisors.')}</div>
    <h2>Nimbus</h2>
    ${table([
      ['Host', (n) => `${esc(n.host)}:${esc(n.port)}`],
      ['Status', (n) => esc(n.status)],
      ['Uptime', (n) => duration(n.nimbusUpTimeSeconds)],
    ], nimbuses.nimbuses, 'No Nimbus registered.')}`;
}

function componentTable(topology, rows, kind) {
  const chained = (c) => (c.chainedTo ? ` <span class="muted" title="runs inside the executors of ${esc(c.chainedTo)}, no queue between them">⤷ chained to ${esc(c.chainedTo)}</span>` : '');
  const name = (c) => link(`${topologyHash(topology)}/component/${encodeURIComponent(c.id)}`, c.id) + chained(c);
  const errors = (c) => (c.errorCount > 0 ? `<span class="bad">${num(c.errorCount)}</span>` : '0');
  const columns = [
    ['Id', name],
    ['Executors', (c) => num(c.executors), 'num'],
    ['Emitted', (c) => `<span data-metric="emitted-${esc(c.id)}">${num(c.emitted)}</span>`, 'num'],
    ['Transferred', (c) => num(c.transferred), 'num'],
  ];
  if (kind === 'spout') {
    columns.push(['Complete latency', (c) => ms(c.completeLatency), 'num']);
  } else {
    columns.push(['Executed', (c) => num(c.executed), 'num']);
    columns.push(['Execute latency', (c) => ms(c.executeLatency), 'num']);
    columns.push(['Capacity', (c) => `<span class="${c.capacity > 0.8 ? 'bad' : ''}">${c.capacity.toFixed(3)}</span>`, 'num']);
  }
  columns.push(['Acked', (c) => num(c.acked), 'num']);
  columns.push(['Failed', (c) => num(c.failed), 'num']);
  columns.push(['Errors', errors, 'num']);
  columns.push(['Stalled', (c) => (c.stalled > 0 ? `<span class="bad">${num(c.stalled)}</span>` : ''), 'num']);
  return table(columns, rows, `No ${kind}s.`);
}

// A line chart of `values` (numbers or nulls) on a canvas.
function drawChart(canvas, values, unit) {
  const context = canvas.getContext('2d');
  const [w, h, pad] = [canvas.width, canvas.height, 4];
  context.clearRect(0, 0, w, h);
  const known = values.filter((v) => v !== null && Number.isFinite(v));
  const max = Math.max(1e-9, ...known) * 1.1;
  context.strokeStyle = '#dde1e8';
  context.beginPath();
  context.moveTo(0, h - pad);
  context.lineTo(w, h - pad);
  context.stroke();
  context.strokeStyle = '#2f6fdf';
  context.lineWidth = 2;
  context.beginPath();
  let started = false;
  values.forEach((v, i) => {
    if (v === null || !Number.isFinite(v)) return;
    const x = (i / Math.max(1, CHART_POINTS - 1)) * w;
    const y = h - pad - (v / max) * (h - 2 * pad);
    if (started) context.lineTo(x, y);
    else context.moveTo(x, y);
    started = true;
  });
  context.stroke();
  // Each sample as a dot too, so a single one shows.
  context.fillStyle = '#2f6fdf';
  values.forEach((v, i) => {
    if (v === null || !Number.isFinite(v)) return;
    const x = (i / Math.max(1, CHART_POINTS - 1)) * w;
    const y = h - pad - (v / max) * (h - 2 * pad);
    context.fillRect(Math.min(w - 3, x - 1.5), y - 1.5, 3, 3);
  });
  context.fillStyle = '#6b7385';
  context.font = '11px system-ui, sans-serif';
  context.fillText(`max ${num(max / 1.1)} ${unit}`, 4, 12);
}

async function act(name, action) {
  let path = `/topology/${encodeURIComponent(name)}/${action}`;
  let options = { method: 'POST' };
  if (action === 'rebalance') {
    const workers = window.prompt(`Rebalance topology ${name} onto how many workers?`, '1');
    if (workers === null) return;
    path += '/0';
    options = { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ rebalanceOptions: { numWorkers: Number(workers) } }) };
  } else if (action === 'kill') {
    const wait = window.prompt(`Kill topology ${name}? Seconds to drain first:`, '30');
    if (wait === null) return;
    path += `/${Number(wait) || 0}`;
  } else if (!window.confirm(`${action[0].toUpperCase()}${action.slice(1)} topology ${name}?`)) {
    return;
  }
  try {
    await api(path, options);
    await refresh();
  } catch (e) {
    $('#error').textContent = e.message;
  }
}

async function topologyPage(name) {
  const t = await api(topologyHash(name));
  const emitted = t.spouts.reduce((sum, s) => sum + s.emitted, 0);
  const latencies = t.spouts.map((s) => s.completeLatency).filter((l) => l !== null);
  samples.push({ t: Date.now(), emitted, latency: latencies.length ? Math.max(...latencies) : null });
  if (samples.length > CHART_POINTS + 1) samples.shift();
  const rates = samples.slice(1).map((s, i) => (s.emitted - samples[i].emitted) / Math.max(0.001, (s.t - samples[i].t) / 1000));
  const errored = [...t.spouts, ...t.bolts].filter((c) => c.errorCount > 0);
  $('#crumbs').innerHTML = `${link('/', 'Cluster')} / ${esc(t.name)}`;
  $('#main').innerHTML = `
    <h1>${esc(t.name)} <span class="status ${esc(t.status)}" id="status">${esc(t.status)}</span></h1>
    <div class="actions">
      <button data-action="activate">Activate</button>
      <button data-action="deactivate">Deactivate</button>
      <button data-action="rebalance">Rebalance</button>
      <button data-action="kill" class="danger">Kill</button>
    </div>
    <div class="cards">
      ${card('Uptime', duration(t.uptimeSeconds), 'uptime')}
      ${card('Workers', `${num(t.workersRunning)} / ${num(t.workersTotal)}`, 'workers')}
      ${card('Tasks', num(t.tasksTotal), 'tasks')}
      ${card('Emitted', num(emitted), 'emitted')}
      ${card('Emitted / s', num(rates.length ? rates[rates.length - 1] : null), 'rate')}
    </div>
    ${t.schedulerInfo ? `<p class="bad">${esc(t.schedulerInfo)}</p>` : ''}
    <div class="charts">
      <div class="chart"><div class="label">Spout throughput (tuples/s)</div><canvas id="throughput" width="460" height="140"></canvas></div>
      <div class="chart"><div class="label">Complete latency, median (ms)</div><canvas id="latency" width="460" height="140"></canvas></div>
    </div>
    <h2>Spouts</h2>${componentTable(t.name, t.spouts, 'spout')}
    <h2>Bolts</h2>${componentTable(t.name, t.bolts, 'bolt')}
    <h2>Workers</h2>
    ${table([
      ['Worker', (w) => `${esc(w.host)}:${esc(w.port)}`],
      ['Supervisor', (w) => esc(w.supervisorId)],
      ['Log', (w) => (w.workerLogLink ? `<a href="${esc(w.workerLogLink)}" target="_blank" rel="noopener">log</a>` : '–')],
      ['Tasks', (w) => num(w.tasks), 'num'],
      ['Heartbeat', (w) => (w.heartbeatAgeMs === null ? 'never' : `${num(w.heartbeatAgeMs)} ms ago`), 'num'],
      ['Memory', (w) => bytes(w.rssBytes), 'num'],
      ['CPU', (w) => (w.cpuSeconds === null ? '–' : `${w.cpuSeconds.toFixed(1)} s`), 'num'],
      ['Sent', (w) => bytes(w.bytesSent), 'num'],
      ['Received', (w) => bytes(w.bytesReceived), 'num'],
      ['Reconnects', (w) => num(w.reconnects), 'num'],
      ['Lane depth', (w) => num(w.laneDepth), 'num'],
    ], t.workers, 'No workers yet.')}
    <h2>Recent errors</h2>
    <div id="errors">${table([
      ['Component', (c) => link(`${topologyHash(t.name)}/component/${encodeURIComponent(c.id)}`, c.id)],
      ['Errors', (c) => num(c.errorCount), 'num'],
      ['Last error', (c) => esc(c.lastError), 'wrap'],
    ], errored, 'No errors.')}</div>`;
  const padded = (values) => Array(Math.max(0, CHART_POINTS - values.length)).fill(null).concat(values);
  drawChart($('#throughput'), padded(rates), 'tuples/s');
  drawChart($('#latency'), padded(samples.map((s) => s.latency)), 'ms');
  document.querySelectorAll('button[data-action]').forEach((button) => {
    button.addEventListener('click', () => act(t.name, button.dataset.action));
  });
}

async function componentPage(topology, id) {
  const c = await api(`${topologyHash(topology)}/component/${encodeURIComponent(id)}`);
  $('#crumbs').innerHTML = `${link('/', 'Cluster')} / ${link(topologyHash(topology), topology)} / ${esc(c.id)}`;
  $('#main').innerHTML = `
    <h1>${esc(c.id)} <span class="muted">${esc(c.componentType)} of ${esc(c.topologyName)}</span></h1>
    <div class="cards">
      ${card('Executors', num(c.executors), 'executors')}
      ${card('Tasks', num(c.tasks), 'tasks')}
      ${card('Emitted', num(c.emitted), 'emitted')}
      ${card('Executed', num(c.executed), 'executed')}
      ${card('Acked', num(c.acked), 'acked')}
      ${card('Failed', num(c.failed), 'failed')}
      ${card('Capacity', c.capacity.toFixed(3), 'capacity')}
    </div>
    <h2>Executors</h2>
    <div id="executors">${table([
      ['Executor', (e) => esc(e.id)],
      ['Worker', (e) => `${esc(e.host)}:${esc(e.port)}`],
      ['Emitted', (e) => num(e.emitted), 'num'],
      ['Executed', (e) => num(e.executed), 'num'],
      ['Execute latency', (e) => ms(e.executeLatency), 'num'],
      ['Complete latency', (e) => ms(e.completeLatency), 'num'],
      ['Capacity', (e) => e.capacity.toFixed(3), 'num'],
      ['Acked', (e) => num(e.acked), 'num'],
      ['Failed', (e) => num(e.failed), 'num'],
      ['Stalled', (e) => (e.stalled ? '<span class="bad">stalled</span>' : ''), 'num'],
    ], c.executorStats, 'No executors report yet.')}</div>
    <h2>Errors</h2>
    <div id="component-errors">${table([
      ['Time', (e) => esc(new Date(e.time * 1000).toLocaleString())],
      ['Task', (e) => num(e.task), 'num'],
      ['Worker', (e) => `${esc(e.errorHost)}:${esc(e.errorPort)}`],
      ['Error', (e) => esc(e.error), 'wrap'],
    ], c.componentErrors, 'No errors.')}</div>`;
}

window.addEventListener('hashchange', route);
route();
